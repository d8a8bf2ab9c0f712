"""Whether this operator process may reconcile now: with kopf peering, only while it is the active peer.

kopf stops its watch streams while another peer outranks this process, but the controller's own timers
(``Controller.schedule``, the periodic resync) keep running. ``PeeringGate`` reads the peering objects kopf keeps
(``ClusterKopfPeering`` when serving all namespaces, a ``KopfPeering`` per namespace otherwise) and applies kopf's
rule (``modeldeploy.peering``). Reads are cached for ``ttl`` seconds, so a busy controller reads them at most that
often; a pause is therefore seen within ``ttl`` seconds of kopf's own.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from modeldeploy.kube import ApiError, KubeClient
from modeldeploy.kube.resources import CLUSTER_PEERINGS, PEERINGS
from modeldeploy.peering import Decision, combine, decide

logger = logging.getLogger("modeldeploy")


@dataclass
class PeeringGate:
    kube: KubeClient
    name: str
    """The peering object's name (``--peering``)."""
    identity: str
    """This process's identity in the peering (kopf's, passed to it by ``modeldeploy.runner``)."""
    priority: int
    namespaces: Sequence[str] = ()
    """The namespaces served (one KopfPeering each); empty: cluster-wide (one ClusterKopfPeering)."""
    ttl: float = 1.0
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    monotonic: Callable[[], float] = time.monotonic
    decision: Decision = field(default_factory=lambda: Decision(True, ""))
    _checked: float = -math.inf
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _unreadable: str = ""

    async def active(self) -> bool:
        if self.monotonic() - self._checked < self.ttl:
            return self.decision.active
        async with self._lock:
            if self.monotonic() - self._checked >= self.ttl:
                self._update(await self._read())
                self._checked = self.monotonic()
        return self.decision.active

    async def _read(self) -> Decision | None:
        """kopf's decision from the peering objects as they are now; None when they cannot be read."""
        targets: Sequence[str | None] = list(self.namespaces) or [None]
        decisions: list[Decision] = []
        try:
            for namespace in targets:
                resource = PEERINGS if namespace is not None else CLUSTER_PEERINGS
                body = await self.kube.read_object(resource, namespace, self.name)
                status = (body or {}).get("status")
                decisions.append(decide(status if isinstance(status, dict) else None, identity=self.identity,
                                        priority=self.priority, now=self.clock()))  # fmt: skip
        except (ApiError, OSError) as error:  # ApiUnreachableError too: no answer at all
            message = str(error) or type(error).__name__
            if message != self._unreadable:
                logger.warning("Cannot read the peering object %s (%s); going on as %s", self.name, message,
                               "active" if self.decision.active else "paused")  # fmt: skip
                self._unreadable = message
            return None
        self._unreadable = ""
        return combine(decisions)

    def _update(self, decision: Decision | None) -> None:
        """Keep the last decision when the peering cannot be read: a passing API server error must neither
        start a second writer nor stop the only one."""
        if decision is None:
            return
        if decision.active != self.decision.active:
            if decision.active:
                logger.info("Resuming reconciles: no peer outranks this operator (%s)", self.identity)
            else:
                logger.info("Pausing reconciles and the resync: %s", decision.reason)
        self.decision = decision
