"""The runtime's desired state: what central wants this kiosk to run, applied or refused."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from biblioedge.agent.config import AgentConfig, apply_tunables
from biblioedge.agent.metrics import AgentMetrics
from biblioedge.agent.store import AsyncStore
from biblioedge.protocol import DesiredState
from biblioedge.settings import ConfigError

if TYPE_CHECKING:
    from biblioedge.agent.update_loop import Note
    from biblioedge.agent.updates import Updates

log = logging.getLogger("biblioedge.agent")


class Desired:
    """Applies newer desired-state documents over the configuration (and the configuration
    release in force on top), keeps them for the next start, refuses the invalid with why."""

    def __init__(
        self,
        config: Callable[[], AgentConfig],
        set_config: Callable[[AgentConfig], None],
        store: AsyncStore,
        metrics: AgentMetrics,
        updates: Callable[[], Updates | None],
        note: Note,
        changed: Callable[[], None],
    ) -> None:
        self._config = config
        self._set_config = set_config
        self.store = store
        self.metrics = metrics
        self._updates = updates
        self._note = note
        self._changed = changed
        self.version = 0
        self.error: str | None = None

    async def apply(self, desired: DesiredState, *, from_store: bool = False) -> None:
        """Apply a newer desired-state document; keep the old config if it does not validate."""
        if desired.version < self.version and not from_store:
            # An older document than the one applied: a restored broker or a central restored
            # from backup. Keep what we have and say so once per message.
            self.metrics.bad_messages.labels("stale_desired").inc()
            log.warning(
                "ignoring desired state %d older than applied %d", desired.version, self.version
            )
            return
        if desired.version == self.version and not from_store:
            return  # the retained copy of what we already run
        updates = self._updates()
        try:
            new_config = apply_tunables(self._config(), desired.config)
            if updates is not None:
                new_config = updates.with_config_release(new_config)
        except ConfigError as exc:
            self.error = f"version {desired.version}: {exc}"
            log.warning("refused desired state %d: %s", desired.version, exc)
            if not from_store:
                await self._note(
                    "device.desired_rejected", {"version": desired.version, "error": str(exc)}
                )
                self._changed()
            return
        self._set_config(new_config)
        self.version = desired.version
        self.error = None
        if updates is not None:
            updates.want(desired)
        logging.getLogger().setLevel(new_config.log.level)
        self.metrics.desired_version.set(desired.version)
        if from_store:
            return
        await self.store.call(
            self.store.store.save_desired, desired.version, desired.model_dump(mode="json")
        )
        log.info("applied desired state %d", desired.version)
        await self._note("device.desired_applied", {"version": desired.version})
        self._changed()

    async def restore(self) -> None:
        """The document applied before the last stop, so a restart runs what central wanted."""
        saved = await self.store.call(self.store.store.load_desired)
        if saved is None:
            return
        version, doc = saved
        try:
            await self.apply(DesiredState.model_validate(doc), from_store=True)
        except ValueError as exc:
            log.warning("ignoring stored desired state %d: %s", version, exc)
