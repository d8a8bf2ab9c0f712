"""Analysis webhooks: what a webhook is sent, how its answer is judged, and the calls against local servers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from test_analysis_sources import serve

from modeldeploy.analysis import webhooks
from modeldeploy.analysis.sources import MetricSourceError, check_webhooks
from modeldeploy.analysis.webhooks import Target, WebhookResult
from modeldeploy.rollout.config import WebhookSpec

TARGET = Target(
    namespace="ml",
    name="iris",
    model="iris",
    revision="abcdef0123",
    stable_revision="0123456789",
    run_id="abcdef0123-step-0-1",
    measurement=2,
    pods=[("iris-abcdef0123-x", "10.0.0.7", 8080)],
)


def test_the_payload_names_the_deployment_the_revision_and_its_pods() -> None:
    hook = WebhookSpec("evals", "http://evals/check", metadata=(("suite", "smoke"),))
    assert webhooks.payload(hook, TARGET) == {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "AnalysisWebhook",
        "webhook": "evals",
        "modelDeployment": {"namespace": "ml", "name": "iris"},
        "model": "iris",
        "revision": "abcdef0123",
        "stableRevision": "0123456789",
        "analysisRun": "abcdef0123-step-0-1",
        "measurement": 2,
        "pods": [{"name": "iris-abcdef0123-x", "address": "10.0.0.7:8080"}],
        "metadata": {"suite": "smoke"},
    }


@pytest.mark.parametrize(
    ("status", "judgement"),
    [
        (200, "pass"),
        (201, "pass"),
        (204, "pass"),
        (299, "pass"),
        (301, "fail"),
        (302, "fail"),
        (400, "fail"),
        (401, "fail"),
        (403, "fail"),
        (404, "fail"),
        (412, "fail"),
        (422, "fail"),
        (408, "unavailable"),
        (429, "unavailable"),
        (500, "unavailable"),
        (502, "unavailable"),
        (503, "unavailable"),
        (504, "unavailable"),
    ],
)
def test_answers_are_judged_by_their_status(status: int, judgement: str) -> None:
    assert webhooks.judge(status) == judgement


def test_an_answer_is_described_on_one_bounded_line() -> None:
    hook = WebhookSpec("evals", "http://evals/check")
    assert webhooks.describe(hook, 412, b"") == "webhook 'evals' answered HTTP 412"
    text = webhooks.describe(hook, 412, b'{"accuracy": 0.71,\n\t"min":  0.9}\x1b[31m')
    assert text == 'webhook \'evals\' answered HTTP 412: {"accuracy": 0.71, "min": 0.9}?[31m'
    long = webhooks.describe(hook, 400, "é".encode() * 5000 + b"\xff")
    assert len(long) == webhooks.MAX_DETAIL_TEXT and "\n" not in long


@given(answer=st.binary(max_size=3000), status=st.integers(100, 599))
def test_any_answer_is_described_in_printable_text_within_the_limit(answer: bytes, status: int) -> None:
    text = webhooks.describe(WebhookSpec("h", "http://h/"), status, answer)
    assert len(text) <= webhooks.MAX_DETAIL_TEXT and text.isprintable()


def test_results_round_trip_and_malformed_ones_are_refused() -> None:
    result = webhooks.make_result(3, ["a no", "b no"], ["c down"])
    assert result == WebhookResult(3, 2, ("a no", "b no", "c down"))
    assert WebhookResult.from_dict(result.to_dict()) == result
    assert WebhookResult(2, 0).to_dict() == {"checks": 2, "failures": 0}
    assert webhooks.make_result(5, [f"n{i}" for i in range(5)]).detail == ("n0", "n1", "n2")
    for raw in ({"checks": 1, "failures": 2}, {"checks": 1, "failures": -1}, {"checks": 1}, {"checks": "x"}):
        with pytest.raises((KeyError, TypeError, ValueError)):
            WebhookResult.from_dict(raw)


def test_assess_names_the_first_webhook_that_said_no() -> None:
    assert webhooks.assess(WebhookResult(2, 0)) == (True, "webhooks: 2 of 2 passed")
    ok, note = webhooks.assess(WebhookResult(2, 1, ("webhook 'evals' answered HTTP 412: accuracy 0.71",)))
    assert not ok and note == "webhooks: 1 of 2 failed (first: webhook 'evals' answered HTTP 412: accuracy 0.71)"


class FakeWebhook:
    """A local webhook: answers ``status`` with ``body`` after ``delay`` seconds and keeps what it was sent."""

    def __init__(self, status: int = 200, body: str = "", delay: float = 0.0) -> None:
        self.status, self.body, self.delay = status, body, delay
        self.received: list[tuple[dict[str, Any], dict[str, str]]] = []

    def app(self) -> web.Application:
        async def check(request: web.Request) -> web.Response:
            self.received.append((await request.json(), dict(request.headers)))
            await asyncio.sleep(self.delay)
            headers = {"Location": "http://127.0.0.1:9/elsewhere"} if 300 <= self.status < 400 else None
            return web.Response(status=self.status, text=self.body, headers=headers)

        app = web.Application()
        app.router.add_post("/check", check)
        return app


@contextlib.asynccontextmanager
async def served(*fakes: FakeWebhook, seconds: int = 5) -> AsyncIterator[list[WebhookSpec]]:
    """Serve each fake on a local port; the webhooks that name them (``h0``, ``h1``, ...; ``seconds``: timeout)."""
    runners, hooks = [], []
    try:
        for i, fake in enumerate(fakes):
            runner, port = await serve(fake.app())
            runners.append(runner)
            hooks.append(WebhookSpec(f"h{i}", f"http://127.0.0.1:{port}/check", seconds, (("suite", "smoke"),)))
        yield hooks
    finally:
        for runner in runners:
            await runner.cleanup()


async def ask(session: aiohttp.ClientSession, *fakes: FakeWebhook, seconds: int = 5) -> WebhookResult:
    async with served(*fakes, seconds=seconds) as hooks:
        return await check_webhooks(session, hooks, TARGET)


async def test_every_webhook_is_posted_the_payload_and_2xx_passes(session: aiohttp.ClientSession) -> None:
    fakes = [FakeWebhook(200, "ok"), FakeWebhook(204)]
    assert await ask(session, *fakes) == WebhookResult(2, 0)
    for i, fake in enumerate(fakes):
        ((body, headers),) = fake.received
        assert body == webhooks.payload(WebhookSpec(f"h{i}", "", metadata=(("suite", "smoke"),)), TARGET)
        assert headers["Content-Type"] == "application/json" and headers["User-Agent"] == "modeldeploy-analysis"
        assert "Authorization" not in headers


async def test_each_webhook_gets_its_own_headers(session: aiohttp.ClientSession) -> None:
    """Headers (resolved by the controller) go to their own webhook only, beside the operator's User-Agent."""
    fakes = [FakeWebhook(200), FakeWebhook(200)]
    async with served(*fakes) as hooks:
        own = {"h0": {"Authorization": "Bearer t0k", "X-Team": "ml"}}
        assert await check_webhooks(session, hooks, TARGET, own) == WebhookResult(2, 0)
    ((_, first),), ((_, second),) = fakes[0].received, fakes[1].received
    assert first["Authorization"] == "Bearer t0k" and first["X-Team"] == "ml"
    assert first["User-Agent"] == "modeldeploy-analysis" and first["Content-Type"] == "application/json"
    assert "Authorization" not in second and "X-Team" not in second


@pytest.mark.parametrize(
    ("data", "value"),
    [
        ({"header": "QmVhcmVyIHQwaw=="}, "Bearer t0k"),
        ({"header": "QmVhcmVyIHQwaw==", "other": "eA=="}, "Bearer t0k"),
        ({"header": "QmVhcmVyIHQwawo="}, "Bearer t0k"),  # "Bearer t0k\n", as echo writes it
    ],
)
def test_a_header_value_from_a_secret_key(data: dict[str, str], value: str) -> None:
    assert webhooks.header_value(data, "header") == value


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"other": "eA=="}, "it has no key 'header'"),
        ({"header": "not base64!"}, "key 'header' is not valid base64"),
        ({"header": "QmVhcmVyCgpYLUV2aWw6IDE="}, "the value of key 'header' is not printable ASCII"),  # a line break
        ({"header": "cMOkc3M="}, "the value of key 'header' is not printable ASCII"),  # "päss"
    ],
)
def test_a_secret_key_that_cannot_be_a_header_says_why_without_its_value(data: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        webhooks.header_value(data, "header")
    assert "Bearer" not in str(info.value) and "päss" not in str(info.value)


@pytest.mark.parametrize("status", [400, 403, 404, 412, 302])
async def test_a_webhook_that_says_no_fails_the_measurement(session: aiohttp.ClientSession, status: int) -> None:
    result = await ask(session, FakeWebhook(200), FakeWebhook(status, "accuracy 0.71 < 0.9"))
    assert (result.checks, result.failures) == (2, 1)
    tail = ": accuracy 0.71 < 0.9"
    assert result.detail == (f"webhook 'h1' answered HTTP {status}{tail}",)


@pytest.mark.parametrize("status", [408, 429, 500, 503])
async def test_a_webhook_that_cannot_check_is_a_measurement_error(session: aiohttp.ClientSession, status: int) -> None:
    with pytest.raises(MetricSourceError, match=f"webhook 'h1' answered HTTP {status}: busy"):
        await ask(session, FakeWebhook(200), FakeWebhook(status, "busy"))


async def test_no_answer_in_time_or_no_connection_is_a_measurement_error(session: aiohttp.ClientSession) -> None:
    with pytest.raises(MetricSourceError, match="webhook 'h0' could not be asked: TimeoutError"):
        await ask(session, FakeWebhook(200, delay=3), seconds=1)
    gone = WebhookSpec("gone", "http://127.0.0.1:9/check")
    with pytest.raises(MetricSourceError, match="webhook 'gone' could not be asked"):
        await check_webhooks(session, [gone], TARGET)


async def test_a_no_wins_over_a_webhook_that_could_not_check(session: aiohttp.ClientSession) -> None:
    result = await ask(session, FakeWebhook(503, "down"), FakeWebhook(412, "no"))
    assert (result.checks, result.failures) == (2, 1)
    assert result.detail == ("webhook 'h1' answered HTTP 412: no", "webhook 'h0' answered HTTP 503: down")


async def test_webhooks_are_asked_at_once(session: aiohttp.ClientSession) -> None:
    """Two webhooks that each take 1.5 s to answer: asked one after the other they would take 3 s."""
    async with served(FakeWebhook(200, delay=1.5), FakeWebhook(200, delay=1.5), seconds=2) as hooks:
        async with asyncio.timeout(2.8):
            assert await check_webhooks(session, hooks, TARGET) == WebhookResult(2, 0)
