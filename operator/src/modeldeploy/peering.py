"""Whether this operator process is the active peer, from a kopf peering object's status.

kopf pauses a process's watch streams while a live peer with a higher priority (or the same priority) writes its
keep-alive into the peering object, but the operator's own timers (delayed re-reconciles, the periodic resync) are
not kopf's: without a check of their own they would go on reconciling from caches that no longer update, and write
over what the active peer decided. This is kopf's rule (``kopf._core.engines.peering.process_peering_event``),
decided from the same status, so that the timers pause and resume with kopf.

The status maps each peer's identity to ``{priority, lifetime, lastseen}``; a peer is dead once ``lastseen +
lifetime`` has passed (kopf's default lifetime is 60 s; a missing ``lastseen`` counts as now).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

DEFAULT_LIFETIME_SECONDS = 60


@dataclass(frozen=True)
class Peer:
    identity: str
    priority: int
    deadline: datetime


@dataclass(frozen=True)
class Decision:
    active: bool
    reason: str
    """Why paused (names the peer), or empty."""


def _parse_time(raw: object, now: datetime) -> datetime | None:
    if raw is None:
        return now
    if not isinstance(raw, str):
        return None
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def peers(status: Mapping[str, Any] | None, now: datetime) -> list[Peer]:
    """The peers a peering status lists. Entries kopf could not have written (not a mapping, a priority or
    lifetime that is not an integer, an unreadable time) are left out."""
    found: list[Peer] = []
    for identity, info in (status or {}).items():
        if not isinstance(info, Mapping):
            continue
        priority, lifetime = info.get("priority", 0), info.get("lifetime", DEFAULT_LIFETIME_SECONDS)
        if isinstance(priority, bool) or not isinstance(priority, int):
            continue
        if isinstance(lifetime, bool) or not isinstance(lifetime, int):
            continue
        lastseen = _parse_time(info.get("lastseen"), now)
        if lastseen is None:
            continue
        found.append(Peer(str(identity), priority, lastseen + timedelta(seconds=lifetime)))
    return found


def decide(status: Mapping[str, Any] | None, *, identity: str, priority: int, now: datetime) -> Decision:
    """Active unless another live peer has a higher priority, or the same one (kopf then pauses every peer of
    that priority, itself included)."""
    live = [p for p in peers(status, now) if p.deadline > now and p.identity != identity]
    higher = sorted((p for p in live if p.priority > priority), key=lambda p: (-p.priority, p.identity))
    if higher:
        peer = higher[0]
        return Decision(False, f"peer {peer.identity} has a higher priority ({peer.priority} > {priority})")
    same = sorted(p.identity for p in live if p.priority == priority)
    if same:
        return Decision(False, f"peer {same[0]} has the same priority ({priority}); kopf pauses both")
    return Decision(True, "")


def combine(decisions: list[Decision]) -> Decision:
    """One decision for several peering objects (a KopfPeering per namespace served): kopf pauses the whole
    process when any of them says so."""
    for decision in decisions:
        if not decision.active:
            return decision
    return Decision(True, "")
