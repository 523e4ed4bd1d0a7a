"""Central's side of the library system: sends the queue (exactly once per change), and asks
the library system back whether its readers are still allowed (status back).

Exactly once: before creating a patron the push looks it up by card number and by the keyed
hash of the ID number, and updates what it finds. A reply lost after Koha stored the patron (a
timeout, a 5xx, central killed mid-request) leaves the item pending; its retry finds the patron
and updates it. A 409 on the card number is looked up the same way: the same reader (same
keyed hash, or none recorded) is updated; another person's is held for a librarian, with an
attention case.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date

import orjson
from sqlalchemy import select

from biblioedge.fleet.authz import SecurityCase
from biblioedge.fleet.db import reader_profiles, readers
from biblioedge.fleet.ils.connector import CardTaken, Connector, IlsError, IlsPatron, PatronData
from biblioedge.fleet.ils.mapping import map_reader
from biblioedge.fleet.ils.queue import Item, Queue
from biblioedge.fleet.ils.settings import IlsConfig
from biblioedge.fleet.readers import Readers, UnknownReader, open_name
from biblioedge.fleet.repo import Repo

log = logging.getLogger("biblioedge.fleet.ils")

#: The attention cases' device: central's connector, not a kiosk.
CASE_DEVICE = "central-ils"
#: How often an idle worker looks for new items (one indexed query): a registration reaches
#: the library system within about this long plus the requests.
IDLE_S = 0.25
#: Failures of the library system as a whole, not of one reader's data.
SYSTEM_WIDE = frozenset(
    {"timeout", "unreachable", "server_error", "auth_refused", "redirected", "not_json"}
)


@dataclass(frozen=True)
class ReaderNow:
    """A reader as central holds it when the push is sent."""

    site: str
    status: str
    expires_at: str
    barcode: str
    data: PatronData


class IlsWorker:
    def __init__(
        self,
        cfg: IlsConfig,
        repo: Repo,
        registry: Readers,
        connector: Connector,
        queue: Queue | None = None,
        on_gallery: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.cfg = cfg
        self.repo = repo
        self.readers = registry
        self.connector = connector
        self.queue = queue or Queue(repo.engine, cfg.backoff_s, cfg.backoff_max_s)
        self.on_gallery = on_gallery
        self._poll_after = ""
        #: after a failure of the library system itself: wait this long before the next round
        self.pause_s = 0.0

    # -- reading central ------------------------------------------------------------------

    def reader_now(self, patron_id: str) -> ReaderNow | None:
        with self.repo.engine.connect() as conn:
            row = conn.execute(select(readers).where(readers.c.patron_id == patron_id)).first()
            prof = conn.execute(
                select(reader_profiles).where(reader_profiles.c.patron_id == patron_id)
            ).first()
        if row is None or prof is None:
            return None
        aead = self.readers.aead
        name = open_name(aead, patron_id, row.name_nonce, row.name_sealed)
        profile = orjson.loads(aead.decrypt(prof.nonce, prof.sealed, patron_id.encode()))
        card = patron_id if self.cfg.card_numbers == "desk" else (row.barcode or None)
        data = map_reader(
            self.cfg,
            cardnumber=card,
            site=row.site,
            full_name=name,
            citizen_ref=prof.citizen_ref,
            expires_at=row.expires_at,
            profile={str(k): str(v) for k, v in dict(profile).items()},
        )
        return ReaderNow(row.site, row.status, row.expires_at, row.barcode or "", data)

    # -- the push ---------------------------------------------------------------------------

    def _same_reader(self, found: IlsPatron, data: PatronData) -> bool:
        return found.citizen_ref in (None, "", data.citizen_ref)

    def _upsert(self, patron_id: str, data: PatronData) -> IlsPatron:
        """The reader in the library system, created once whatever happened before."""
        c = self.connector
        link = self.queue.link(patron_id)
        if link is not None:
            try:
                return c.update(link.ils_id, data)
            except IlsError as exc:
                if exc.reason != "gone":
                    raise
        found = c.find_by_card(data.cardnumber) if data.cardnumber else None
        if found is not None and not self._same_reader(found, data):
            raise CardTaken(data.cardnumber or "")
        found = found or c.find_by_ref(data.citizen_ref)
        if found is not None:
            return c.update(found.ils_id, data)
        try:
            return c.create(data)
        except CardTaken:
            found = c.find_by_card(data.cardnumber or "")
            if found is None or not self._same_reader(found, data):
                raise
            return c.update(found.ils_id, data)

    def send(self, item: Item) -> IlsPatron | None:
        """Do one item; the patron as the library system now holds it (None: gone there)."""
        c = self.connector
        if item.op == "erase":
            link = self.queue.link(item.patron_id)
            found = None
            if link is not None:
                found = c.get(link.ils_id)
            if found is None and item.data.get("cardnumber"):
                found = c.find_by_card(item.data["cardnumber"])
                if found is not None and found.citizen_ref not in (
                    None,
                    "",
                    item.data.get("citizen_ref", found.citizen_ref),
                ):
                    found = None  # someone else's now: not ours to erase
            if found is None and item.data.get("citizen_ref"):
                found = c.find_by_ref(item.data["citizen_ref"])
            if found is not None:
                c.erase(found.ils_id, self.cfg.anonymise)
            return None
        now = self.reader_now(item.patron_id)
        if now is None:  # erased at central before this was sent: the erase item follows
            return self.queue.link(item.patron_id)
        patron = self._upsert(item.patron_id, now.data)
        if (
            self.cfg.card_numbers == "ils"
            and patron.cardnumber
            and patron.cardnumber != now.barcode
        ):
            self._keep_card(item.patron_id, patron.cardnumber)
        if item.op == "block" or (item.op in ("create", "update") and now.status == "blocked"):
            c.set_blocked(patron.ils_id, True)
        elif item.op == "unblock":
            c.set_blocked(patron.ils_id, False)
        elif item.op in ("renew", "expire"):
            expiry = now.expires_at
            if item.op == "expire":
                expiry = date.today().isoformat()
            c.set_expiry(patron.ils_id, expiry)
        else:
            return patron  # as the create or update answered it
        return c.get(patron.ils_id) or patron

    def _keep_card(self, patron_id: str, cardnumber: str) -> None:
        """The library system issued the number: it becomes the reader's barcode at central
        (what kiosks accept and SIP2 asks about)."""
        with self.repo.engine.begin() as conn:
            try:
                name = self.readers.name_of(conn, patron_id)
            except UnknownReader:
                return
            row = conn.execute(select(readers).where(readers.c.patron_id == patron_id)).one()
            self.readers.upsert_in(
                conn, patron_id, row.site, name, row.status, row.expires_at, cardnumber
            )

    def step(self, limit: int = 50) -> int:
        """Send what is due; how many items were tried. Stops at the first failure that is
        the library system's rather than the reader's (down, timeout, 5xx, credentials): the
        rest wait for the next round instead of each trying the same dead server now."""
        items = self.queue.due(limit)
        for n, item in enumerate(items, 1):
            delay = self._one(item)
            if delay is not None:
                self.pause_s = delay
                return n
        self.pause_s = 0.0
        return len(items)

    def _one(self, item: Item) -> float | None:
        """None, or the backoff when the library system itself failed."""
        try:
            link = self.send(item)
        except IlsError as exc:
            delay = self.queue.failed(item, exc.reason, exc.detail, retry=exc.retry)
            if exc.person:
                self._case(item, exc)
            if delay is None:
                log.warning("library system: %s %s held: %s", item.op, item.patron_id, exc)
                return None
            log.info(
                "library system: %s %s again in %.0f s: %s", item.op, item.patron_id, delay, exc
            )
            return delay if exc.reason in SYSTEM_WIDE else None
        except Exception as exc:  # a bug or a broken row costs that item a retry, not the loop
            log.exception("library system push %s failed", item.id)
            self.queue.failed(item, "internal", repr(exc)[:300], retry=True)
            return None
        self.queue.done(item, link)
        return None

    def _case(self, item: Item, exc: IlsError) -> None:
        site = ""
        with self.repo.engine.connect() as conn:
            try:
                site = Readers.site_of(conn, item.patron_id)
            except UnknownReader:
                pass
        self.repo.raise_case(
            SecurityCase(CASE_DEVICE, site, f"ils_{exc.reason}", f"{item.patron_id}: {exc.detail}"),
            None,
        )

    # -- status back ------------------------------------------------------------------------

    def poll_status(self, batch: int = 200) -> list[str]:
        """Ask about the next ``batch`` linked readers; the sites whose gates must hear of a
        change. A reader blocked, expired or deleted in the library system is blocked or
        expired at central, so kiosks refuse her from their next gallery sync."""
        links = self.queue.links(batch, self._poll_after)
        self._poll_after = links[-1][0] if len(links) == batch else ""
        sites: list[str] = []
        for patron_id, ils_id, last in links:
            try:
                found = self.connector.get(ils_id)
            except IlsError as exc:
                log.info("status back stopped at %s: %s", patron_id, exc)
                break
            status = found.status if found is not None else "deleted"
            if status == last:
                continue
            self.queue.set_status(patron_id, status)
            site = self._mirror(patron_id, status)
            if site:
                sites.append(site)
        return sorted(set(sites))

    def check_one(self, patron_id: str) -> tuple[str, str | None] | None:
        """Ask about one linked reader now (the library system's hook): (its status there,
        the site whose gates must hear of a change); None when she is not linked."""
        link = self.queue.link(patron_id)
        if link is None:
            return None
        found = self.connector.get(link.ils_id)
        status = found.status if found is not None else "deleted"
        site = None
        if status != link.status:
            self.queue.set_status(patron_id, status)
            site = self._mirror(patron_id, status)
        return status, site

    def _mirror(self, patron_id: str, status: str) -> str | None:
        kiosk_status = {"deleted": "blocked"}.get(status, status)
        with self.repo.engine.begin() as conn:
            row = conn.execute(select(readers).where(readers.c.patron_id == patron_id)).first()
            if row is None or row.status == kiosk_status:
                return None
            name = self.readers.name_of(conn, patron_id)
            self.readers.upsert_in(
                conn, patron_id, row.site, name, kiosk_status, row.expires_at, row.barcode
            )
        log.info("library system says %s is %s: kiosks refuse from next sync", patron_id, status)
        return str(row.site)

    # -- the loop ---------------------------------------------------------------------------

    async def run(self, idle_s: float = IDLE_S) -> None:
        """Drain the queue, poll status every ``status_poll_s``; never raises."""
        loop = asyncio.get_running_loop()
        next_poll = loop.time() + self.cfg.status_poll_s
        while True:
            try:
                n = await asyncio.to_thread(self.step)
                if self.cfg.status_poll_s and loop.time() >= next_poll:
                    next_poll = loop.time() + self.cfg.status_poll_s
                    for site in await asyncio.to_thread(self.poll_status):
                        if self.on_gallery is not None:
                            await self.on_gallery(site)
            except Exception:  # the database is down, say: the next round tries again
                log.exception("library system round failed")
                n = 0
            if self.pause_s:
                await asyncio.sleep(min(self.pause_s, self.cfg.backoff_max_s))
            elif not n:
                await asyncio.sleep(idle_s)


def open_connector(cfg: IlsConfig) -> Connector:
    from biblioedge.fleet.ils.koha import KohaConnector

    return KohaConnector(cfg.endpoint(), ref_attribute=cfg.ref_attribute, timeout_s=cfg.timeout_s)
