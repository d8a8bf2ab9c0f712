"""A simulated kubelet that runs each model-server pod of the emulated cluster as a real ``modelserve`` process.

Hook it into :func:`modeldeploy.sim.cluster.run_cluster` (``on_pod_running=kubelet.on_pod_running``,
``on_pod_stopped=kubelet.on_pod_stopped``) and :meth:`SimKubelet.attach` it to the cluster's
``DeploymentController``. Then, for every pod:

- it starts the pod's server container (``command`` + ``args`` of the container named ``model-server``, its literal
  ``env`` values) as ``python -m modelserve ...`` on a free loopback port (``--host``/``--port`` are replaced);
- the model directory is the container's ``--model-dir`` for ``file://`` models; for models the pod would
  download (``s3://``, ``gs://``, ``http(s)://``) ``model_dir_for(storage_uri)`` names a local directory instead;
- the pod is Ready exactly while the process answers ``GET /v2/health/ready`` with 200 (polled, like a
  readinessProbe);
- deleting the pod sends SIGTERM (the runtime drains, then exits); a process still alive after its
  ``terminationGracePeriodSeconds`` is killed;
- a process that exits by itself is restarted after a back-off (:data:`RESTART_BACKOFF`, the kubelet's 10 s doubling
  scaled down), as ``restartPolicy: Always`` does: meanwhile its pod waits in ``CrashLoopBackOff`` with the
  restart count, and ``lastState.terminated`` holds the exit code and the termination message, read from the file
  the process was given as ``MODELSERVE_TERMINATION_LOG`` (created empty for each start, as the kubelet does
  ``/dev/termination-log``).

:meth:`SimKubelet.address` maps a pod to ``("127.0.0.1", port)``: pass it wherever a pod address resolver is
wanted (``Controller.pod_address``, :class:`modeldeploy.sim.proxy.ServiceProxy`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp

from modeldeploy.sim.controllers import DeploymentController, PodBehavior, PodState
from modeldeploy.sim.emulator import Obj

__all__ = ["KubeletError", "PodProcess", "SimKubelet", "free_port"]

logger = logging.getLogger(__name__)

RESTART_BACKOFF = (0.2, 0.4, 0.8, 1.6)
"""Seconds before each restart of a process that exited by itself; the last value repeats."""
TERMINATION_MESSAGE_BYTES = 4096
SERVER_CONTAINER = "model-server"
FETCH_CONTAINER = "fetch-model"
READY_PATH = "/v2/health/ready"


class KubeletError(RuntimeError):
    """A pod cannot be started as a process (no server container, no local model directory)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class PodProcess:
    """One pod's model-server process and what the kubelet knows about it."""

    namespace: str
    name: str
    uid: str
    port: int
    process: asyncio.subprocess.Process
    grace_seconds: float
    ready: bool = False
    exited: bool = False
    """No process runs now: it was stopped, or it exited by itself and waits for its restart."""
    poller: asyncio.Task[None] | None = None
    log: IO[bytes] | None = None
    started: float = field(default_factory=lambda: asyncio.get_running_loop().time())
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    termination_log: Path | None = None
    restarts: int = 0
    last_exit_code: int | None = None
    """The exit code of the last run that ended by itself (None until one has)."""
    last_message: str = ""
    """What that run left in its termination-message file."""


@dataclass(frozen=True)
class _LiveBehavior:
    """A pod whose container runs at once and is Ready while the kubelet's health polling says so."""

    kubelet: SimKubelet
    uid: str

    def state(self, age: float) -> PodState:
        pod = self.kubelet.processes.get(self.uid)
        if pod is None:
            return PodState("Running", ready=False, running=True)
        code, message = pod.last_exit_code or 0, pod.last_message
        if pod.exited:
            return PodState("Running", ready=False, running=False, restart_count=pod.restarts,
                            waiting_reason="CrashLoopBackOff", exit_code=code, termination_message=message)  # fmt: skip
        return PodState("Running", ready=pod.ready, running=True, restart_count=pod.restarts, exit_code=code,
                        termination_message=message)  # fmt: skip


class SimKubelet:
    """Starts, health-checks and stops one ``modelserve`` process per running pod (see the module docstring)."""

    def __init__(
        self,
        *,
        model_dir_for: Callable[[str], Path | None] | None = None,
        host: str = "127.0.0.1",
        python: str = sys.executable,
        env: Mapping[str, str] | None = None,
        log_dir: Path | None = None,
        poll_interval: float = 0.1,
    ) -> None:
        self.model_dir_for = model_dir_for
        self.host = host
        self.python = python
        self.env = dict(env or {})
        self.log_dir = log_dir
        self.poll_interval = poll_interval
        self.processes: dict[str, PodProcess] = {}  # pod uid -> process
        self._by_name: dict[tuple[str, str], PodProcess] = {}  # (namespace, name) -> process
        self._session: aiohttp.ClientSession | None = None
        self._stopping: set[asyncio.Task[None]] = set()
        self._files: tempfile.TemporaryDirectory[str] | None = None
        """Where each pod's termination-message file is (made with the first pod)."""
        self.errors: list[str] = []

    # --- wiring ----------------------------------------------------------------------------------------------

    def attach(self, controller: DeploymentController) -> None:
        """Make ``controller`` ask this kubelet whether each pod is Ready (call in the cluster's event loop).

        ``DeploymentController.behavior_for`` chooses per Deployment; readiness here is per pod, so the
        controller's ``behavior`` method is replaced on that one instance.
        """
        fallback = controller.behavior

        def behavior(deployment: Obj, pod: Obj) -> PodBehavior:
            if self._server_container(pod) is None:
                return fallback(deployment, pod)
            return _LiveBehavior(self, str(pod["metadata"].get("uid", "")))

        setattr(controller, "behavior", behavior)  # noqa: B010 (an instance attribute shadows the method)

    def address(self, pod: Mapping[str, Any]) -> tuple[str, int] | None:
        """Where the pod's server listens: (host, port), or None when the kubelet runs no process for it."""
        meta = pod.get("metadata") or {}
        name = meta.get("name")
        found = [p for (ns, n), p in list(self._by_name.items()) if n == name]
        namespace = meta.get("namespace")
        if namespace is not None:
            found = [p for p in found if p.namespace == namespace]
        if len(found) != 1 or found[0].exited:
            return None
        return self.host, found[0].port

    def is_ready(self, namespace: str, name: str) -> bool:
        pod = self._by_name.get((namespace, name))
        return pod is not None and pod.ready and not pod.exited

    # --- pod hooks -------------------------------------------------------------------------------------------

    @staticmethod
    def _server_container(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
        containers = (pod.get("spec") or {}).get("containers") or []
        return next((c for c in containers if c.get("name") == SERVER_CONTAINER), None)

    def command_for(self, pod: Mapping[str, Any], port: int) -> tuple[list[str], dict[str, str]]:
        """The argv and environment that run ``pod``'s server container here; KubeletError when it cannot."""
        name = (pod.get("metadata") or {}).get("name")
        container = self._server_container(pod)
        if container is None:
            raise KubeletError(f"pod {name} has no container named {SERVER_CONTAINER!r}")
        command = list(container.get("command") or [])
        if command != ["modelserve"]:
            raise KubeletError(f"pod {name}: only the modelserve command can run here, not {command}")
        args = [str(a) for a in container.get("args") or []]
        args = _drop_option(_drop_option(args, "--port"), "--host")
        fetch = next(
            (c for c in (pod.get("spec") or {}).get("initContainers") or [] if c.get("name") == FETCH_CONTAINER), None
        )
        if fetch is not None:
            uri = str((fetch.get("args") or ["", ""])[1])
            local = self.model_dir_for(uri) if self.model_dir_for is not None else None
            if local is None:
                raise KubeletError(f"pod {name}: no local directory for the model {uri!r} (model_dir_for)")
            args = [*_drop_option(args, "--model-dir"), "--model-dir", str(local)]
        env = dict(os.environ)
        for item in container.get("env") or []:
            if "value" in item:
                env[str(item["name"])] = str(item["value"])
        env.update(self.env)
        return [self.python, "-m", "modelserve", *args, "--host", self.host, "--port", str(port)], env

    async def on_pod_running(self, pod: Obj) -> None:
        meta = pod["metadata"]
        uid, namespace, name = str(meta["uid"]), str(meta["namespace"]), str(meta["name"])
        if uid in self.processes or self._server_container(pod) is None:
            return
        port = free_port(self.host)
        try:
            argv, env = self.command_for(pod, port)
        except KubeletError as error:
            logger.error("%s", error)
            self.errors.append(str(error))
            return
        log: IO[bytes] | None = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log = (self.log_dir / f"{namespace}_{name}.log").open("ab")
        if self._files is None:
            self._files = tempfile.TemporaryDirectory(prefix="modeldeploy-kubelet-")
        termination_log = Path(self._files.name) / f"{uid}.termination-log"
        env = {**env, "MODELSERVE_TERMINATION_LOG": str(termination_log)}  # as the kubelet always mounts one
        process = await self._start(argv, env, log, termination_log)
        grace = float((pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
        entry = PodProcess(namespace, name, uid, port, process, grace, log=log, argv=argv, env=env,
                           termination_log=termination_log)  # fmt: skip
        self.processes[uid] = entry
        self._by_name[(namespace, name)] = entry
        entry.poller = asyncio.create_task(self._poll(entry), name=f"kubelet-probe-{name}")
        logger.info("Started pod %s/%s as pid %s on port %s", namespace, name, process.pid, port)

    @staticmethod
    def _start(
        argv: list[str], env: dict[str, str], log: IO[bytes] | None, termination_log: Path | None
    ) -> Coroutine[Any, Any, asyncio.subprocess.Process]:
        """One start of the server container (await it): its termination-message file emptied first, as each start
        gets an empty one."""
        if termination_log is not None:
            termination_log.write_bytes(b"")
        return asyncio.create_subprocess_exec(
            *argv, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=log or asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip

    async def _poll(self, entry: PodProcess) -> None:
        """Probe readiness while the process runs; restart it after a back-off when it exits by itself."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0))
        url = f"http://{self.host}:{entry.port}{READY_PATH}"
        while True:
            while entry.process.returncode is None:
                try:
                    async with self._session.get(url) as response:
                        entry.ready = response.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    entry.ready = False
                await asyncio.sleep(self.poll_interval)
            entry.ready = False
            entry.exited = True
            if self.processes.get(entry.uid) is not entry:  # stopped by the kubelet: no restart
                return
            entry.last_exit_code = entry.process.returncode
            entry.last_message = self._termination_message(entry)
            entry.restarts += 1
            logger.info("Pod %s/%s exited with code %s; restart %d after a back-off", entry.namespace, entry.name,
                        entry.last_exit_code, entry.restarts)  # fmt: skip
            await asyncio.sleep(RESTART_BACKOFF[min(entry.restarts, len(RESTART_BACKOFF)) - 1])
            if self.processes.get(entry.uid) is not entry:
                return
            entry.process = await self._start(entry.argv, entry.env, entry.log, entry.termination_log)
            entry.exited = False

    @staticmethod
    def _termination_message(entry: PodProcess) -> str:
        if entry.termination_log is None:
            return ""
        try:
            data = entry.termination_log.read_bytes()[:TERMINATION_MESSAGE_BYTES]
        except OSError:
            return ""
        return data.decode("utf-8", "replace")

    async def on_pod_stopped(self, pod: Obj) -> None:
        entry = self.processes.pop(str(pod["metadata"].get("uid", "")), None)
        if entry is None:
            return
        self._by_name.pop((entry.namespace, entry.name), None)
        await self._terminate(entry)

    async def _terminate(self, entry: PodProcess) -> None:
        if entry.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                entry.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(entry.process.wait(), timeout=entry.grace_seconds)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    entry.process.kill()
                await entry.process.wait()
        if entry.poller is not None:
            entry.poller.cancel()
            await asyncio.gather(entry.poller, return_exceptions=True)
        entry.ready, entry.exited = False, True
        if entry.log is not None:
            entry.log.close()
        logger.info("Pod %s/%s stopped (exit code %s)", entry.namespace, entry.name, entry.process.returncode)

    async def close(self, grace_seconds: float = 5.0) -> None:
        """Stop every process (SIGTERM, then SIGKILL after ``grace_seconds``) and release the HTTP session."""
        entries = list(self.processes.values())
        self.processes.clear()
        self._by_name.clear()
        for entry in entries:
            entry.grace_seconds = min(entry.grace_seconds, grace_seconds)
        await asyncio.gather(*(self._terminate(e) for e in entries), return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._files is not None:
            self._files.cleanup()
            self._files = None


def _drop_option(args: list[str], option: str) -> list[str]:
    """``args`` without ``option VALUE`` and ``option=VALUE``."""
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg == option:
            skip = True
            continue
        if arg.startswith(option + "="):
            continue
        out.append(arg)
    return out
