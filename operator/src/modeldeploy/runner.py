"""Start the operator process (``modeldeploy run``): kopf with the project's handlers."""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import kopf

from modeldeploy.handlers import RunOptions


@dataclass(frozen=True)
class OperatorProcess:
    """How to run the operator: which namespaces, HA peering, endpoints."""

    namespaces: Sequence[str] = ()
    health_port: int | None = 8080
    metrics_port: int | None = 9090
    standalone: bool = True
    peering_name: str = "modeldeploy"
    priority: int = 0
    resync_period: float = 300.0
    peering_lifetime: int = 60
    """Seconds this replica's peering keep-alive stays valid (kopf's ``settings.peering.lifetime``)."""
    log_level: str = "INFO"
    """DEBUG, INFO, WARNING or ERROR."""
    extra: dict[str, object] = field(default_factory=dict)
    identity: str = field(default_factory=lambda: own_identity())
    """This process's identity in the peering: given to kopf, and to the handlers' peering gate, which must
    recognise its own keep-alive."""

    @property
    def verbose(self) -> bool:
        return self.log_level == "DEBUG"

    def kopf_kwargs(self) -> dict[str, object]:
        from modeldeploy.handlers import REGISTRY

        options = RunOptions(
            metrics_port=self.metrics_port,
            resync_period=self.resync_period,
            peering=None if self.standalone else self.peering_name,
            identity=self.identity,
            priority=self.priority,
            namespaces=tuple(self.namespaces),
            peering_lifetime=self.peering_lifetime,
        )
        kwargs: dict[str, object] = {
            "registry": REGISTRY,
            "clusterwide": not self.namespaces,
            "namespaces": list(self.namespaces),
            "standalone": self.standalone,
            "memo": kopf.Memo(options=options),
        }
        if not self.standalone:
            kwargs["peering_name"] = self.peering_name
            kwargs["priority"] = self.priority
            kwargs["identity"] = self.identity
        if self.health_port is not None:
            kwargs["liveness_endpoint"] = f"http://0.0.0.0:{self.health_port}/healthz"
        kwargs.update(self.extra)
        return kwargs


def own_identity() -> str:
    """kopf's own choice (``detect_own_id``): the pod's name from ``POD_ID`` in a cluster, else user, host, start
    time and a random part, so that two processes on one machine never share one."""
    pod = os.environ.get("POD_ID")
    if pod:
        return pod
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    now = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    return f"{user}@{socket.gethostname()}/{now}/{secrets.token_hex(3)}"


def run(process: OperatorProcess) -> bool:
    """Run the operator until it is signalled to stop (``True``) or stops on an error (``False``).

    kopf stops the operator when one of its watches fails in a way it does not retry: a watch stream that ends with
    an ERROR event other than 410 Gone (the API server's storage failed under it), or an error of a bug. kopf has
    logged the error by then; the last line says what comes next. A restart lists everything again and resumes
    every rollout from its status."""
    kopf.configure(verbose=process.verbose, log_format=kopf.LogFormat.PLAIN)
    if not process.verbose:
        # One line per handled watch event is noise at scale; the operator logs and posts what matters.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if process.log_level in ("WARNING", "ERROR"):
        logging.getLogger().setLevel(process.log_level)  # kopf configures the root logger for INFO
    try:
        kopf.run(**process.kopf_kwargs())  # type: ignore[arg-type]
    except Exception as error:
        logging.getLogger("modeldeploy").critical(
            "The operator stopped on an error it does not recover from in-process (%s: %s); once restarted (by "
            "the kubelet, in a cluster) it lists everything again and resumes every rollout from its status",
            type(error).__name__,
            error,
        )
        return False
    return True


async def serve(process: OperatorProcess, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
    """Run the operator inside an existing event loop until ``stop`` is set (demo, benchmark)."""
    logging.getLogger("kopf").setLevel(logging.WARNING if not process.verbose else logging.DEBUG)
    await kopf.operator(stop_flag=stop, ready_flag=ready, **process.kopf_kwargs())  # type: ignore[arg-type]
