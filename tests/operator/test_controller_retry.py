"""When a pass fails, the object is tried again after a delay that doubles with each failure in a row, never under
the API server's Retry-After, and starts over once a pass goes through."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx2 as httpx
import pytest
from reconcile_kit import OneObject, Seconds, body

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
        self.status_failures: list[Exception] = []
        self.events: list[str] = []
        self.statuses: list[dict[str, Any]] = []

    async def read_object(self, resource: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        return None

    async def apply_object(self, manifest: Mapping[str, Any], *, field_manager: str | None = None) -> dict[str, Any]:
        if self.failures:
            raise self.failures.pop(0)
        return {**manifest, "metadata": {**manifest["metadata"], "resourceVersion": "9"}}

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any]:
        if self.status_failures:
            raise self.status_failures.pop(0)
        self.statuses.append(dict(status))
        return {**IRIS, "status": dict(status)}

    def reported(self, reason: str) -> list[str]:
        return [e.removeprefix(f"{reason}: ") for e in self.events if e.startswith(f"{reason}: ")]

    async def post_event(
        self, involved: Mapping[str, Any], *, type_: str, reason: str, message: str, now: datetime
    ) -> None:
        self.events.append(f"{reason}: {message}")


def controller(
    cluster: Cluster, draw: float = 1.0, seconds: Callable[[], float] = time.monotonic, **backoff: float
) -> Controller:
    return Controller(
        config=OperatorConfig(),
        kube=cluster,
        clock=lambda: NOW,
        source=OneObject(IRIS),
        backoff=Backoff(**backoff),
        draw=lambda: draw,
        monotonic=seconds,
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


WEBHOOK = ApiError(
    500,
    "InternalError",
    'Internal error occurred: failed calling webhook "validate.policy.example.com": failed to call webhook: Post '
    '"https://policy.example.svc:443/validate?timeout=10s": context deadline exceeded',
)


async def failed_at(subject: Controller, seconds: Seconds, *moments: float) -> None:
    """A failed pass at each of ``moments`` (seconds after 1000), as the object's retries would run them."""
    for moment in moments:
        seconds.now = 1000.0 + moment
        await fail(subject)
        subject._timers.pop(KEY).cancel()


async def three_failed_passes(cluster: Cluster) -> None:
    """Failed passes 0, 60 and 125 s after the first: a failure that lasts is reported at the third."""
    seconds = Seconds()
    subject = controller(cluster, seconds=seconds)
    try:
        await failed_at(subject, seconds, 0, 60, 125)
    finally:
        await subject.close()


def degraded(status: Mapping[str, Any]) -> dict[str, Any]:
    [condition] = [c for c in status["conditions"] if c["type"] == "Degraded"]
    return dict(condition)


async def test_a_write_the_api_server_keeps_failing_is_reported_once_the_failures_have_lasted() -> None:
    """A webhook that times out (a 500 after its timeoutSeconds) stalls the object as a refusal does; once its
    passes have failed for ``write_failure_seconds`` (120 s) in a row, the failing write is reported on the object,
    once, and a shorter run of failures (an API server restarting) is not."""
    cluster, seconds = Cluster(*[WEBHOOK] * 8), Seconds()
    subject = controller(cluster, seconds=seconds)
    try:
        await failed_at(subject, seconds, 0, 30, 90, 119.9)
        assert cluster.reported("WriteFailing") == [] and cluster.statuses == [], "not before 120 s of failures"
        await failed_at(subject, seconds, 120)
        [event] = cluster.reported("WriteFailing")
        first_write = "The API server failed to apply ControllerRevision ml/iris-"
        assert event.startswith(first_write), "the first write of the pass"
        assert f"(500 InternalError: {WEBHOOK.message}), and every reconcile of this ModelDeployment has failed " \
            "since 2026-11-24T12:00:00Z (5 in a row, this one included)" in event  # fmt: skip
        assert "retrying with backoff from 1s up to 60s" in event
        condition = degraded(cluster.statuses[-1])
        assert (condition["status"], condition["reason"]) == ("True", "WriteFailing")
        assert WEBHOOK.message in condition["message"] and "failed since 2026-11-24T12:00:00Z" in condition["message"]

        await failed_at(subject, seconds, 180, 240)
        assert len(cluster.reported("WriteFailing")) == 1, "once while it lasts (again after 10 min)"
        await failed_at(subject, seconds, 120 + 600)
        assert len(cluster.reported("WriteFailing")) == 2

        plan = await subject.reconcile(KEY)  # the webhook is back: the write goes through
        assert plan is not None and plan.status is not None
        assert degraded(plan.status)["status"] == "False"
        # A later failure starts a new run: nothing is reported until it has lasted too.
        cluster.failures.append(WEBHOOK)
        subject.source = OneObject(body(model={**IRIS["spec"]["model"], "version": "2"}))
        await failed_at(subject, seconds, 2000)
        assert len(cluster.reported("WriteFailing")) == 2
    finally:
        await subject.close()


@pytest.mark.parametrize(
    "error",
    [
        ApiUnreachableError("PATCH", "/apis/apps/v1/namespaces/ml/deployments/iris-1", httpx.ReadTimeout("timed out")),
        ApiError(429, "TooManyRequests", "Too many requests, please try again later."),
        ApiError(504, "Timeout", "the server was unable to return a response in the time allotted"),
    ],
    ids=["no-answer", "throttled", "timeout"],
)
async def test_every_kind_of_server_failure_is_reported_once_it_has_lasted(error: ApiError) -> None:
    cluster = Cluster(*[error] * 3)
    await three_failed_passes(cluster)
    [event] = cluster.reported("WriteFailing")
    assert str(error) in event if error.code == 0 else f"({error.code} {error.reason}: {error.message})" in event


async def test_a_status_write_the_api_server_keeps_failing_is_an_event() -> None:
    cluster = Cluster()
    cluster.status_failures = [WEBHOOK] * 3
    await three_failed_passes(cluster)
    [event] = cluster.reported("StatusWriteFailing")
    assert event.startswith(f"The API server failed the status update (500 InternalError: {WEBHOOK.message})")
    assert cluster.reported("WriteFailing") == [] and cluster.statuses == []


async def test_a_conflict_is_never_reported_as_failing() -> None:
    conflict = ApiError(409, "Conflict", "the object has been modified; please apply your changes to the latest")
    cluster = Cluster(*[conflict] * 3)
    await three_failed_passes(cluster)
    assert cluster.events == [] and cluster.statuses == []
