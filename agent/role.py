"""What a kiosk role is to the runtime: one small typed interface.

A role (the gate, the self-check, the desk, the exit gate; each a package beside this module)
is a supervised component that builds its flow when it starts, says whether it is ready for
the self-test and whether a reader is mid-transaction, takes gallery and card-key updates and
releases its hardware when the agent stops. The runtime holds a list of roles and never asks
one what it is: a new role is a new package and one line in :mod:`biblioedge.agent.roles`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from biblioedge.agent.supervisor import Component, Context
from biblioedge.cardtoken import load_public_key

if TYPE_CHECKING:
    import numpy as np
    from prometheus_client import CollectorRegistry

    from biblioedge.agent.config import AgentConfig
    from biblioedge.agent.gallery_sync import GallerySync
    from biblioedge.agent.store import AsyncStore
    from biblioedge.cardtoken import CardVerifier
    from biblioedge.models.gallery import Gallery
    from biblioedge.protocol import GalleryDelta

#: records one event durably (the runtime's ``emit``); raises NotRecorded when it cannot
Emit = Callable[..., Coroutine[Any, Any, Any]]

#: self-test findings of a role: check name ("role", "face engine") → None, or why not
Health = dict[str, str | None]

#: views in which no reader is mid-transaction (an update may restart the kiosk then)
IDLE_VIEWS = ("idle", "out_of_service")


class Closable(Protocol):
    def close(self) -> None: ...


@dataclass(frozen=True)
class GalleryNeeds:
    """Which slice of the site gallery a role keeps (consent purpose, what it may hold)."""

    purpose: str
    keep_citizen_ref: bool
    keep_name: bool = False


@dataclass
class RoleHost:
    """What the runtime lends a role: its configuration (which desired state may change),
    the store, the event outbox, the metrics registry and the synced gallery."""

    config: Callable[[], AgentConfig]
    store: AsyncStore
    emit: Emit
    registry: CollectorRegistry
    can_record: Callable[[], bool]
    gallery: Callable[[], GallerySync | None]
    #: called after central's answers arrive in an ack (the desk prints the card)
    answer_listeners: list[Callable[[], None]] = field(default_factory=list)


class Role(Component, Protocol):
    """A kiosk role under the runtime's supervisor (``run`` builds, then runs its flow)."""

    @property
    def gallery_needs(self) -> GalleryNeeds | None:
        """The gallery slice it keeps; None when it identifies no reader by face or card."""

    @property
    def flow(self) -> object | None:
        """The running flow once built (the screen shows its view), else None."""

    def stop(self) -> None:
        """Release the hardware the flow opened (camera, relay, reader, library connection)."""

    def health(self) -> Health:
        """Self-test findings beyond the supervisor's (which says whether it is up)."""

    def busy(self) -> bool:
        """A reader is mid-transaction: a passage, a loan, a registration."""

    def apply_gallery(self, delta: GalleryDelta, accepted: Mapping[str, np.ndarray]) -> None:
        """Swap a stored gallery delta (templates, card keys, revoked cards) into the flow."""


class Extras(Protocol):
    """What the tools hand the runtime beside the roles (the simulator, the demo's actors):
    called once the roles exist, with the configuration, the outbox and the roles."""

    def __call__(
        self, config: Callable[[], AgentConfig], emit: Emit, roles: list[Role]
    ) -> list[Component]: ...


def view_busy(view: object | None, where: str | None) -> bool:
    """A role's flow shows ``where`` (its step or mode): busy unless idle or out of service."""
    return view is not None and where is not None and where not in IDLE_VIEWS


def swap_templates(
    gallery: Gallery, model: str, delta: GalleryDelta, accepted: Mapping[str, np.ndarray]
) -> None:
    """Bring a live gallery in line with a stored delta: readers whose templates of this
    engine's model were accepted are replaced, everyone else in the delta leaves."""
    for reader in delta.upserts:
        templates = accepted.get(reader.patron_id)
        if templates is not None and reader.model == model:
            gallery.replace(reader.patron_id, templates)
        elif reader.patron_id in gallery:
            gallery.remove(reader.patron_id)
    for pid in delta.removes:
        if pid in gallery:
            gallery.remove(pid)


def update_verifier(verifier: CardVerifier, delta: GalleryDelta) -> None:
    """Revoked cards and new card keys from a delta, into a live card verifier."""
    verifier.revoked.update(delta.revoked_cards)
    if delta.card_keys:
        verifier.keys.update({kid: load_public_key(k) for kid, k in delta.card_keys.items()})


def close_all(closables: list[Closable]) -> None:
    """Close each, whatever the others do (the agent is stopping)."""
    for closable in closables:
        with contextlib.suppress(Exception):  # one failing close must not keep the rest open
            closable.close()


__all__ = [
    "Closable",
    "Context",
    "Emit",
    "Extras",
    "GalleryNeeds",
    "Health",
    "Role",
    "RoleHost",
    "close_all",
    "swap_templates",
    "update_verifier",
    "view_busy",
]
