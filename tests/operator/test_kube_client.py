"""The API client's errors: the Status's reason and message, the wait the API server asks for, and which failed
calls it tries again by itself."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx2 as httpx
import pytest

from modeldeploy.kube import ApiError, ApiUnreachableError, KubeClient
from modeldeploy.kube.client import retry_after_of
from modeldeploy.kube.resources import DEPLOYMENTS

THROTTLED = {
    "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 429, "reason": "TooManyRequests",
    "message": "Too many requests, please try again later.", "details": {"retryAfterSeconds": 4},
}  # fmt: skip


async def error_of(status_code: int, content: bytes, headers: dict[str, str] | None = None) -> ApiError:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status_code, content=content, headers=headers or {})

    http = httpx.AsyncClient(transport=httpx.MockTransport(answer), base_url="https://kube.test")
    client = KubeClient(http, field_manager="modeldeploy", attempts=1)
    try:
        with pytest.raises(ApiError) as raised:
            await client.read_object(DEPLOYMENTS, "ml", "iris-1")
    finally:
        await client.close()
    return raised.value


async def test_a_throttled_request_carries_the_wait_from_the_header() -> None:
    error = await error_of(429, json.dumps(THROTTLED).encode(), {"Retry-After": "7"})
    assert (error.code, error.reason, error.retry_after) == (429, "TooManyRequests", 7.0)
    assert error.message == "Too many requests, please try again later."


async def test_without_the_header_the_wait_comes_from_the_status_details() -> None:
    error = await error_of(429, json.dumps(THROTTLED).encode())
    assert error.retry_after == 4.0


async def test_a_failure_that_names_no_wait_has_none() -> None:
    status = {**THROTTLED, "code": 500, "reason": "InternalError", "message": "etcdserver: request timed out"}
    del status["details"]
    error = await error_of(500, json.dumps(status).encode())
    assert (error.code, error.reason, error.retry_after) == (500, "InternalError", None)


async def test_a_body_that_is_not_a_status_keeps_the_header_and_the_text() -> None:
    error = await error_of(503, b"upstream connect error", {"Retry-After": "2"})
    assert (error.code, error.reason, error.message, error.retry_after) == (
        503, "Service Unavailable", "upstream connect error", 2.0,
    )  # fmt: skip
    error = await error_of(503, b"[1, 2]", {"Retry-After": "2"})
    assert (error.reason, error.retry_after) == ("Service Unavailable", 2.0)


@pytest.mark.parametrize(
    ("header", "status", "expected"),
    [
        ("3", {}, 3.0),
        (" 3 ", {}, 3.0),
        ("0", {}, 0.0),
        ("soon", {"details": {"retryAfterSeconds": 2}}, 2.0),  # an unreadable header: the details
        ("-5", {}, None),
        ("1.5", {}, None),  # the header is whole seconds or a date
        (None, {"details": {"retryAfterSeconds": -1}}, None),
        (None, {"details": {"retryAfterSeconds": "2"}}, None),
        (None, {"details": {"retryAfterSeconds": True}}, None),
        (None, {"details": "x"}, None),
        (None, {}, None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", {}, 0.0),  # a date gone by: no wait
        ("Wed, 21 Oct 2015 07:28:00", {}, None),  # a date without a zone is not one
    ],
)
def test_retry_after_of(header: str | None, status: dict[str, Any], expected: float | None) -> None:
    assert retry_after_of(header, status) == expected


def test_a_retry_after_date_is_the_seconds_until_it() -> None:
    when = datetime.now(UTC) + timedelta(seconds=30)
    waited = retry_after_of(format_datetime(when, usegmt=True), {})
    assert waited is not None and 27.0 <= waited <= 30.0


@pytest.mark.parametrize(
    ("raised", "reason"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), "ConnectError"),
        (httpx.ReadTimeout("timed out"), "ReadTimeout"),
        (httpx.RemoteProtocolError("Server disconnected without sending a response."), "RemoteProtocolError"),
        (httpx.ReadError(""), "ReadError"),
    ],
)
async def test_no_answer_at_all_is_an_api_error_that_says_so(raised: Exception, reason: str) -> None:
    """A restarting API server (refused, reset) or a partition (timeout): the callers, which handle ApiError
    everywhere, see one, and can tell it from an answer by its class and its code 0."""

    def answer(request: httpx.Request) -> httpx.Response:
        raise raised

    http = httpx.AsyncClient(transport=httpx.MockTransport(answer), base_url="https://kube.test")
    client = KubeClient(http, field_manager="modeldeploy", attempts=1)
    try:
        with pytest.raises(ApiUnreachableError) as caught:
            await client.apply_object(
                {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "iris-1", "namespace": "ml"}}
            )
    finally:
        await client.close()
    error = caught.value
    assert isinstance(error, ApiError) and error.__cause__ is raised
    assert (error.code, error.reason, error.retry_after) == (0, reason, None)
    assert str(error).startswith(
        f"the API server did not answer PATCH /apis/apps/v1/namespaces/ml/deployments/iris-1 ({reason}: "
    )


# --- calls tried again --------------------------------------------------------------------------------------------

BUSY = (503, {"Retry-After": "1"}, b'{"kind":"Status","code":503,"reason":"ServiceUnavailable","message":"busy"}')
THROTTLED_ANSWER = (429, {"Retry-After": "1"}, json.dumps(THROTTLED).encode())
CONFLICT = (409, {}, b'{"kind":"Status","code":409,"reason":"Conflict","message":"the object has been modified"}')
OK = (200, {}, b'{"kind":"Deployment","metadata":{"name":"iris-1"}}')
RESET = httpx.RemoteProtocolError("Server disconnected without sending a response.")
REFUSED = httpx.ConnectError("[Errno 111] Connection refused")
DEPLOYMENT = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "iris-1", "namespace": "ml"}}


class Script:
    """Answers the client's requests in turn from ``answers`` ((code, headers, body) or an exception to raise);
    records each request's method and the pauses the client took between tries."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *answers: tuple[int, dict[str, str], bytes] | Exception):
        self.answers = list(answers)
        self.methods: list[str] = []
        self.pauses: list[float] = []

        async def pause(seconds: float) -> None:
            self.pauses.append(seconds)

        monkeypatch.setattr("modeldeploy.kube.client.asyncio.sleep", pause)

    def client(self) -> KubeClient:
        def answer(request: httpx.Request) -> httpx.Response:
            self.methods.append(request.method)
            next_answer = self.answers.pop(0)
            if isinstance(next_answer, Exception):
                raise next_answer
            code, headers, content = next_answer
            return httpx.Response(code, headers=headers, content=content)

        http = httpx.AsyncClient(transport=httpx.MockTransport(answer), base_url="https://kube.test")
        return KubeClient(http, field_manager="modeldeploy")


async def test_a_read_is_tried_again_through_a_failover_and_honours_retry_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    script = Script(monkeypatch, BUSY, RESET, OK)
    client = script.client()
    assert (await client.read_object(DEPLOYMENTS, "ml", "iris-1") or {})["metadata"]["name"] == "iris-1"
    assert script.methods == ["GET"] * 3
    assert script.pauses == [1.0, 0.4], "Retry-After over the first pause (0.2 s); then the doubled pause"


async def test_an_apply_whose_reply_was_lost_is_sent_again(monkeypatch: pytest.MonkeyPatch) -> None:
    script = Script(monkeypatch, RESET, (504, {}, b"{}"), OK)
    assert (await script.client().apply_object(DEPLOYMENT))["metadata"]["name"] == "iris-1"
    assert script.methods == ["PATCH"] * 3 and script.pauses == [0.2, 0.4]


async def test_the_last_failure_is_raised_after_the_last_try(monkeypatch: pytest.MonkeyPatch) -> None:
    script = Script(monkeypatch, BUSY, BUSY, THROTTLED_ANSWER)
    with pytest.raises(ApiError) as raised:
        await script.client().apply_object(DEPLOYMENT)
    assert (raised.value.code, len(script.methods)) == (429, 3)


@pytest.mark.parametrize(
    ("answers", "tries"),
    [
        ([BUSY, OK], 1),  # a create may have been served: a 503 is not tried again ...
        ([RESET, OK], 1),  # ... nor a dropped connection
        ([THROTTLED_ANSWER, OK], 2),  # 429: API Priority and Fairness refused it before serving it
        ([REFUSED, OK], 2),  # the connection never opened
    ],
)
async def test_a_create_is_tried_again_only_when_it_was_not_served(
    monkeypatch: pytest.MonkeyPatch, answers: list[Any], tries: int
) -> None:
    script = Script(monkeypatch, *answers)
    client = script.client()
    if tries == 1:
        with pytest.raises(ApiError):
            await client.create_object(DEPLOYMENT)
    else:
        await client.create_object(DEPLOYMENT)
    assert script.methods == ["POST"] * tries


@pytest.mark.parametrize(
    "answer",
    [
        CONFLICT,
        (422, {}, b'{"kind":"Status","code":422,"reason":"Invalid","message":"denied"}'),
        (403, {}, b'{"kind":"Status","code":403,"reason":"Forbidden","message":"no"}'),
        (429, {"Retry-After": "30"}, json.dumps(THROTTLED).encode()),  # a long wait is the pass's, not the call's
    ],
)
async def test_answers_and_long_waits_are_not_tried_again(
    monkeypatch: pytest.MonkeyPatch, answer: tuple[int, dict[str, str], bytes]
) -> None:
    script = Script(monkeypatch, answer, OK)
    with pytest.raises(ApiError) as raised:
        await script.client().apply_object(DEPLOYMENT)
    assert raised.value.code == answer[0] and script.methods == ["PATCH"] and script.pauses == []


@pytest.mark.parametrize(
    ("raised", "tries"),
    [
        (httpx.ReadTimeout("timed out"), 1),  # too slow already: the pass fails, and the backoff waits
        (httpx.WriteTimeout("timed out"), 1),
        (httpx.ConnectTimeout("timed out"), 2),  # the connection never opened
    ],
)
async def test_a_call_that_timed_out_is_tried_again_only_when_it_never_connected(
    monkeypatch: pytest.MonkeyPatch, raised: Exception, tries: int
) -> None:
    script = Script(monkeypatch, raised, OK)
    client = script.client()
    if tries == 1:
        with pytest.raises(ApiUnreachableError):
            await client.read_object(DEPLOYMENTS, "ml", "iris-1")
    else:
        await client.read_object(DEPLOYMENTS, "ml", "iris-1")
    assert script.methods == ["GET"] * tries


async def test_a_delete_whose_reply_was_lost_finds_the_object_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    gone = (404, {}, b'{"kind":"Status","code":404,"reason":"NotFound","message":"not found"}')
    script = Script(monkeypatch, RESET, gone)
    assert await script.client().delete_object(DEPLOYMENTS, "ml", "iris-1", uid="u") is False
    assert script.methods == ["DELETE", "DELETE"]
