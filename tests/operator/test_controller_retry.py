"""When a pass fails, the object is tried again after a delay that doubles with each failure in a row, never under
the API server's Retry-After, and starts over once a pass goes through."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx2 as httpx
import pytest
from reconcile_kit import OneObject, body

from modeldeploy.backoff import Backoff
from modeldeploy.config import OperatorConfig
from modeldeploy.controller import Controller
from modeldeploy.kube import ApiError, ApiUnreachableError, KubeClient
from modeldeploy.kube.resources import Resource

KEY = ("ml", "iris")
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
IRIS = body()
BUSY = ApiError(503, "ServiceUnavailable", "the server is currently unable to handle the request")


class Cluster(KubeClient):
    """Each apply fails with the next of ``failures`` (an exception) while there are any, then succeeds."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.events: list[str] = []

    async def read_object(self, resource: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        return None

    async def apply_object(self, manifest: Mapping[str, Any], *, field_manager: str | None = None) -> dict[str, Any]:
        if self.failures:
            raise self.failures.pop(0)
        return {**manifest, "metadata": {**manifest["metadata"], "resourceVersion": "9"}}

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any]:
        return {**IRIS, "status": dict(status)}

    async def post_event(
        self, involved: Mapping[str, Any], *, type_: str, reason: str, message: str, now: datetime
    ) -> None:
        self.events.append(f"{reason}: {message}")


def controller(cluster: Cluster, draw: float = 1.0, **backoff: float) -> Controller:
    return Controller(
        config=OperatorConfig(),
        kube=cluster,
        clock=lambda: NOW,
        source=OneObject(IRIS),
        backoff=Backoff(**backoff),
        draw=lambda: draw,
    )


def retry_in(controller: Controller) -> float:
    """Seconds until the object's scheduled reconcile."""
    return controller._timers[KEY].when() - asyncio.get_running_loop().time()


async def fail(controller: Controller) -> None:
    with pytest.raises(ApiError):
        await controller.reconcile(KEY)


async def test_each_failure_in_a_row_doubles_the_delay_up_to_the_cap() -> None:
    subject = controller(Cluster(*[BUSY] * 5), first=1.0, cap=5.0)
    try:
        delays = []
        for _ in range(5):
            await fail(subject)
            delays.append(retry_in(subject))
            subject._timers.pop(KEY).cancel()  # as if it fired: the next failure schedules anew
        assert delays == pytest.approx([1.0, 2.0, 4.0, 5.0, 5.0], abs=0.05)
    finally:
        await subject.close()


async def test_a_pass_that_goes_through_starts_the_count_over() -> None:
    cluster = Cluster(BUSY, BUSY)
    subject = controller(cluster, draw=0.0)
    try:
        await fail(subject)
        subject._timers.pop(KEY).cancel()
        await fail(subject)
        assert retry_in(subject) == pytest.approx(1.0, abs=0.05), "second failure: half of 2 s"
        subject._timers.pop(KEY).cancel()
        assert await subject.reconcile(KEY) is not None
        cluster.failures.append(BUSY)
        # A new version: the next pass has a Deployment to apply, and fails there.
        subject.source = OneObject(body(model={**IRIS["spec"]["model"], "version": "2"}))
        await fail(subject)
        assert retry_in(subject) == pytest.approx(0.5, abs=0.05), "first failure again: half of 1 s"
    finally:
        await subject.close()


async def test_the_api_servers_retry_after_is_the_least_delay() -> None:
    throttled = ApiError(429, "TooManyRequests", "Too many requests, please try again later.", retry_after=7)
    subject = controller(Cluster(throttled, throttled), draw=0.0)
    try:
        await fail(subject)
        assert retry_in(subject) == pytest.approx(7.0, abs=0.05)
    finally:
        await subject.close()
    capped = controller(Cluster(ApiError(429, "TooManyRequests", "busy", retry_after=3600)), cap=30.0)
    try:
        await fail(capped)
        assert retry_in(capped) == pytest.approx(30.0, abs=0.05), "at most the cap, whatever it asks"
    finally:
        await capped.close()


async def test_a_crashed_pass_backs_off_too() -> None:
    subject = controller(Cluster(RuntimeError("a bug"), RuntimeError("a bug")), draw=1.0)
    try:
        await subject.reconcile_quietly(KEY)
        assert retry_in(subject) == pytest.approx(1.0, abs=0.05)
        subject._timers.pop(KEY).cancel()
        await subject.reconcile_quietly(KEY)
        assert retry_in(subject) == pytest.approx(2.0, abs=0.05)
    finally:
        await subject.close()


async def test_a_refusal_says_how_it_is_retried() -> None:
    cluster = Cluster(ApiError(422, "Invalid", 'admission webhook "validate.kyverno.svc" denied the request'))
    subject = controller(cluster)
    try:
        await fail(subject)
    finally:
        await subject.close()
    [event] = [e for e in cluster.events if e.startswith("WriteRejected")]
    assert "retrying with backoff from 1s up to 60s" in event


async def test_an_api_server_that_does_not_answer_is_a_failed_pass_not_a_crash(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A connection refused or reset while the API server restarts (a control-plane upgrade) is counted by its
    kind, logged as one line and retried with backoff, as an error answer is; not a crash with a traceback."""
    reset = ApiUnreachableError("PATCH", "/apis/apps/v1/namespaces/ml/deployments/iris-1",
                           httpx.RemoteProtocolError("Server disconnected without sending a response."))  # fmt: skip
    subject = controller(Cluster(reset), draw=1.0)
    try:
        await subject.reconcile_quietly(KEY)
        assert retry_in(subject) == pytest.approx(1.0, abs=0.05)
        errors = subject.metrics.registry.get_sample_value
        assert errors("modeldeploy_reconcile_errors_total", {"reason": "RemoteProtocolError"}) == 1
        assert errors("modeldeploy_reconcile_errors_total", {"reason": "Crash"}) is None
    finally:
        await subject.close()
    assert "crashed" not in caplog.text and "Traceback" not in caplog.text
    assert "the API server did not answer PATCH" in caplog.text and "retrying in 1.0s" in caplog.text
