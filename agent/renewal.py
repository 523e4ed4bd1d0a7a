"""The kiosk's identity at run time: checked at start, its certificate renewed and recovered."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from biblioedge.agent.config import AgentConfig
from biblioedge.agent.supervisor import Context
from biblioedge.agent.sync import Sync
from biblioedge.provisioning.enroll import EnrollError, IdentityFiles, due_for_renewal, renew
from biblioedge.retry import Backoff
from biblioedge.settings import ConfigError

log = logging.getLogger("biblioedge.agent")


def check_identity(cfg: AgentConfig) -> None:
    """With ``security.require``: an enrolled kiosk on a TLS broker, or a clear refusal."""
    if not cfg.security.require:
        log.warning(
            "security.require is off: this kiosk does not prove who it is and does not check "
            "what central sends (demo without mosquitto only)"
        )
        return
    problems = []
    if not cfg.broker.tls:
        problems.append(f"broker {cfg.broker.url} is not mqtts://")
    if not IdentityFiles(cfg.identity_dir).present():
        problems.append(f"no identity in {cfg.identity_dir}")
    if not cfg.security.control_keys:
        problems.append("no security.control_keys")
    if problems:
        raise ConfigError(
            "security.require: " + "; ".join(problems) + " (enroll the kiosk first: "
            "biblioedge enroll --central URL --token T)"
        )


class Renewal:
    """Renews the kiosk's certificate (same key) when two thirds of its life have passed, or
    fetches the one IT approved for a re-key, then makes sync reconnect with the new one. A
    failed attempt is logged and retried next check.

    When the broker refuses the certificate (someone renewed it with a stolen key and central
    revoked ours after the grace), it asks central again with the certificate it has: central
    answers with the newest certificate for this same key, or ``revoked`` if IT revoked the
    kiosk; then it stops asking and says so once. Those asks are rate-limited by a backoff
    (``RECOVERY_BACKOFF``: the first at once, then minutes apart)."""

    name = "renewal"

    #: (base, cap) in seconds of the backoff between asks after a refused certificate
    RECOVERY_BACKOFF = (240.0, 1800.0)

    def __init__(self, config: Callable[[], AgentConfig], sync: Sync) -> None:
        self._config = config
        self.sync = sync
        self._recovery = Backoff(*self.RECOVERY_BACKOFF)
        self._next_recovery = 0.0
        #: the certificate central said is revoked: no more asks until it changes
        self._revoked_cert: bytes | None = None

    async def run(self, ctx: Context) -> None:
        files = IdentityFiles(self._config().identity_dir)
        while True:
            ctx.heartbeat()
            sec = self._config().security
            present = sec.central_url and files.present()
            # a new key asked for (biblioedge rekey): fetch the certificate once IT approved
            # it; then the plain renewal of the key in use, which never waits for IT
            for rekey in (True, False):
                if not present or not (
                    files.pending_key.exists() if rekey else due_for_renewal(files, sec.renew_after)
                ):
                    continue
                try:
                    until = await asyncio.to_thread(renew, str(sec.central_url), files, 10.0, rekey)
                except (EnrollError, OSError, ValueError) as exc:
                    log.warning("certificate renewal failed (will retry): %s", exc)
                else:
                    log.info("certificate renewed, valid until %s", until)
                    self.sync.reconnect()
            if present and self._recovery_due(files.cert.read_bytes()):
                await self._recover(str(sec.central_url), files)
            end = time.monotonic() + sec.renew_check_s
            while (left := end - time.monotonic()) > 0 and not self._recovery_waiting():
                ctx.heartbeat()
                await asyncio.sleep(min(left, 1.0))

    def _recovery_waiting(self) -> bool:
        return self.sync.cert_refused.is_set() and time.monotonic() >= self._next_recovery

    def _recovery_due(self, cert: bytes) -> bool:
        if not self._recovery_waiting():
            return False
        self.sync.cert_refused.clear()
        return cert != self._revoked_cert

    async def _recover(self, central: str, files: IdentityFiles) -> None:
        """Ask central for the certificate that replaced ours (same key) after the broker
        refused it."""
        self._next_recovery = time.monotonic() + self._recovery.next_delay()
        log.warning("the broker refused this kiosk's certificate: asking central for its newest")
        try:
            until = await asyncio.to_thread(renew, central, files, 10.0, False)
        except (EnrollError, OSError, ValueError) as exc:
            if str(exc).startswith("central refused: revoked:"):
                self._revoked_cert = files.cert.read_bytes()
                log.error(
                    "this kiosk's certificate is revoked by IT: staying off the fleet until it "
                    "is enrolled again (biblioedge enroll --central URL --token T)"
                )
            else:
                log.warning("asking central for a certificate failed (will retry): %s", exc)
            return
        log.info("central issued this kiosk's key a certificate valid until %s", until)
        self._recovery.reset()
        self._next_recovery = time.monotonic() + self._recovery.next_delay()
        self.sync.reconnect()
