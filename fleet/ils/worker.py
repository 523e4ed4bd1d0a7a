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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta

from biblioedge.fleet.authz import SecurityCase
from biblioedge.fleet.ils.connector import CardTaken, Connector, IlsError, IlsPatron, PatronData
from biblioedge.fleet.ils.mapping import map_reader
from biblioedge.fleet.ils.queue import Item, Queue
from biblioedge.fleet.ils.settings import IlsConfig
from biblioedge.fleet.readers import Readers
from biblioedge.fleet.repo import Repo
from biblioedge.protocol import utc_now

log = logging.getLogger("biblioedge.fleet.ils")

#: The attention cases' device: central's connector, not a kiosk.
CASE_DEVICE = "central-ils"
#: Changes asked for from a little before the last poll: the library system's clock and
#: central's differ, and a change made while the last answer was built must not fall between.
CLOCK_MARGIN = timedelta(minutes=2)
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
        self.queue = queue or Queue(repo, cfg.backoff_s, cfg.backoff_max_s)
        self.on_gallery = on_gallery
        self._poll_after = ""
        self._changed_since = utc_now()
        #: after a failure of the library system itself: wait this long before the next round
        self.pause_s = 0.0

    # -- reading central ------------------------------------------------------------------

    def reader_now(self, patron_id: str) -> ReaderNow | None:
        snap = self.queue.snapshot(self.readers, patron_id)
        if snap is None:
            return None
        # one card number everywhere: her barcode, else her patron number (docs/ils.md); with
        # "ils" and no barcode yet, None: the library system assigns it and _keep_card keeps it
        card = snap.barcode or (patron_id if self.cfg.card_numbers == "desk" else None)
        data = map_reader(
            self.cfg,
            cardnumber=card,
            site=snap.site,
            full_name=snap.name,
            citizen_ref=snap.citizen_ref,
            expires_at=snap.expires_at,
            profile=snap.profile,
            minor_until=snap.minor_until,
        )
        return ReaderNow(snap.site, snap.status, snap.expires_at, snap.barcode, data)

    # -- the push ---------------------------------------------------------------------------

    def _same_reader(self, found: IlsPatron, data: PatronData) -> bool:
        return found.citizen_ref in (None, "", data.citizen_ref)

    def _upsert(self, patron_id: str, data: PatronData) -> IlsPatron:
        """The reader in the library system, created once whatever happened before."""
        c = self.connector
        link = self.queue.link(patron_id)
        if link is not None and link.status == "deleted":
            raise IlsError(
                "deleted_in_ils",
                "the library system deleted this reader; erase her at central, or push her "
                "again with central ils resync --patron",
                retry=False,
                person=True,
            )
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
        # a new patron carries central's block; an update keeps what the library system has
        # (a block mirrored from it must not come back as one of central's)
        if item.op == "block" or (item.op == "create" and now.status == "blocked"):
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
        self.queue.set_reader(self.readers, patron_id, barcode=cardnumber)

    def step(self, limit: int = 50) -> int:
        """Send what is due; how many items were tried. Items of different readers go
        ``[ils] concurrency`` at a time (one reader's items never together: ``due`` gives each
        reader's first only), and those done are marked in one transaction per batch. A
        failure of the library system itself (down, timeout, 5xx, credentials) ends the
        round: the rest wait for the next one instead of each trying the same dead server."""
        items = self.queue.due(limit)
        self.pause_s = 0.0
        width = max(1, self.cfg.concurrency)
        tried = 0
        with ThreadPoolExecutor(width, thread_name_prefix="ils") as pool:
            for start in range(0, len(items), width):
                chunk = items[start : start + width]
                outcomes = list(pool.map(self._one, chunk))
                tried += len(chunk)
                self.queue.done_many(
                    [
                        (item, link)
                        for item, (ok, link, _) in zip(chunk, outcomes, strict=True)
                        if ok
                    ]
                )
                failed = [delay for _, _, delay in outcomes if delay is not None]
                if failed:
                    self.pause_s = min(failed)
                    break
        return tried

    def _one(self, item: Item) -> tuple[bool, IlsPatron | None, float | None]:
        """(sent, the link to keep, the backoff when the library system itself failed)."""
        try:
            link = self.send(item)
        except IlsError as exc:
            delay = self.queue.failed(item, exc.reason, exc.detail, retry=exc.retry)
            if exc.person:
                self._case(item, exc)
            if delay is None:
                log.warning("library system: %s %s held: %s", item.op, item.patron_id, exc)
                return False, None, None
            log.info(
                "library system: %s %s again in %.0f s: %s", item.op, item.patron_id, delay, exc
            )
            return False, None, delay if exc.reason in SYSTEM_WIDE else None
        except Exception as exc:  # a bug or a broken row costs that item a retry, not the loop
            log.exception("library system push %s failed", item.id)
            self.queue.failed(item, "internal", repr(exc)[:300], retry=True)
            return False, None, None
        return True, link, None

    def _case(self, item: Item, exc: IlsError) -> None:
        site = self.queue.site_of(item.patron_id)
        self.repo.raise_case(
            SecurityCase(CASE_DEVICE, site, f"ils_{exc.reason}", f"{item.patron_id}: {exc.detail}"),
            None,
        )

    # -- status back ------------------------------------------------------------------------

    def poll_status(self, batch: int = 200) -> list[str]:
        """Status back; the sites whose gates must hear of a change. First the patrons the
        library system changed since the last poll (its ``updated_on``: a restriction, a new
        expiry), whatever their number; then a sweep of the next ``batch`` linked readers
        (deletions leave no change behind, and a card expires by the date alone). A reader
        blocked, expired or deleted there is blocked or expired at central, so kiosks refuse
        her from their next gallery sync."""
        sites: set[str] = set()
        started = utc_now()
        since = (self._changed_since - CLOCK_MARGIN).strftime("%Y-%m-%dT%H:%M:%S+00:00")
        try:
            changed = self.connector.changed_since(since)
        except IlsError as exc:
            log.info("status back: the changes since %s: %s", since, exc)
        else:
            self._changed_since = started
            linked = self.queue.links_of([p.ils_id for p in changed])
            for p in changed:
                if p.ils_id in linked:
                    patron_id, last = linked[p.ils_id]
                    sites |= self._status_is(patron_id, last, p.status)
        links = self.queue.links(batch, self._poll_after)
        for patron_id, ils_id, last in links:
            try:
                found = self.connector.get(ils_id)
            except IlsError as exc:
                log.info("status back stopped at %s: %s", patron_id, exc)
                return sorted(sites)
            self._poll_after = patron_id
            sites |= self._status_is(patron_id, last, found.status if found else "deleted")
        if len(links) < batch:
            self._poll_after = ""  # the sweep went round: from the start next time
        return sorted(sites)

    def _status_is(self, patron_id: str, last: str, status: str) -> set[str]:
        if status == last:
            return set()
        self.queue.set_status(patron_id, status)
        site = self._mirror(patron_id, status)
        return {site} if site else set()

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
        site = self.queue.set_reader(
            self.readers, patron_id, status={"deleted": "blocked"}.get(status, status)
        )
        if site is not None:
            log.info("library system: %s is %s there; kiosks refuse her", patron_id, status)
        return site

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
