"""The metric sources against local aiohttp servers standing in for pods and Prometheus."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import promql_parser
import pytest
from aiohttp import web
from test_analysis_promparse import exposition

from modeldeploy.analysis.criteria import assess_measurement
from modeldeploy.analysis.sources import (
    DEFAULT_ERROR_RATIO_QUERY,
    DEFAULT_P99_QUERY,
    DEFAULT_REQUESTS_QUERY,
    MetricSourceError,
    PodTarget,
    PrometheusSource,
    ScrapeSource,
    check_golden,
    source_for,
)
from modeldeploy.rollout.config import (
    AnalysisSpec,
    GoldenCase,
    GoldenOutput,
    GoldenSpec,
    GoldenTensor,
    MetricSourceSpec,
    PrometheusSpec,
)


async def serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port


async def test_scrape_source_measures_deltas(session: aiohttp.ClientSession) -> None:
    texts = [
        exposition(100, 0, 0, {"0.1": 100, "+Inf": 100}),
        exposition(300, 10, 0, {"0.1": 290, "+Inf": 310}),
    ]
    calls = {"n": 0}

    async def metrics(request: web.Request) -> web.Response:
        text = texts[min(calls["n"], len(texts) - 1)]
        calls["n"] += 1
        return web.Response(text=text, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner, port = await serve(app)
    try:
        source = ScrapeSource(session, model="iris")
        pod = PodTarget("iris-abc-1", "127.0.0.1", port)
        first = await source.measure("abc", [pod])
        assert first.requests == 100 and first.errors == 0
        second = await source.measure("abc", [pod])
        assert second.requests == 210 and second.errors == 10 and second.pods == 1
        assert second.p99_seconds == pytest.approx(0.1)  # rank 207.9 falls in +Inf
    finally:
        await runner.cleanup()


async def test_scrape_source_errors(session: aiohttp.ClientSession) -> None:
    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500, text="boom")

    app = web.Application()
    app.router.add_get("/metrics", broken)
    runner, port = await serve(app)
    try:
        source = ScrapeSource(session, timeout_seconds=2)
        with pytest.raises(MetricSourceError, match="HTTP 500"):
            await source.measure("abc", [PodTarget("p", "127.0.0.1", port)])
        with pytest.raises(MetricSourceError, match="no ready pods"):
            await source.measure("abc", [])
        with pytest.raises(MetricSourceError, match="failed"):
            await source.measure("abc", [PodTarget("p", "127.0.0.1", 1)])
    finally:
        await runner.cleanup()


async def test_prometheus_source_queries(session: aiohttp.ClientSession) -> None:
    seen: list[str] = []

    async def query(request: web.Request) -> web.Response:
        promql = request.query["query"]
        seen.append(promql)
        if "histogram_quantile" in promql:
            value: Any = "250"
        elif "outcome=~" in promql:
            value = "0.02"
        else:
            value = "400"
        body = {
            "status": "success",
            "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, value]}]},
        }
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/api/v1/query", query)
    runner, port = await serve(app)
    try:
        spec = AnalysisSpec(
            interval_seconds=30,
            max_error_ratio=0.1,
            source=MetricSourceSpec("Prometheus", PrometheusSpec(url=f"http://127.0.0.1:{port}")),
        )
        source = source_for(spec, session, namespace="ml")
        assert isinstance(source, PrometheusSource)
        sample = await source.measure("abc123", [])
        assert (
            sample.requests == 400 and sample.errors == pytest.approx(8) and sample.p99_seconds == pytest.approx(0.25)
        )
        assert all('revision="abc123"' in q and 'namespace="ml"' in q and "[30s]" in q for q in seen)
    finally:
        await runner.cleanup()


async def test_prometheus_source_errors(session: aiohttp.ClientSession) -> None:
    async def query(request: web.Request) -> web.Response:
        if "histogram" in request.query["query"]:
            return web.json_response({"status": "error", "errorType": "bad_data", "error": "parse error"}, status=400)
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": []}})

    app = web.Application()
    app.router.add_get("/api/v1/query", query)
    runner, port = await serve(app)
    try:
        source = PrometheusSource(
            session, PrometheusSpec(url=f"http://127.0.0.1:{port}"), namespace="ml", interval_seconds=5
        )
        assert await source.query("up") is None
        with pytest.raises(MetricSourceError, match="parse error"):
            await source.measure("abc", [])
    finally:
        await runner.cleanup()


def test_factory_defaults_to_scrape() -> None:
    spec = AnalysisSpec(max_error_ratio=0.1)
    assert source_for(spec, None, namespace="ml").source_type == "Scrape"  # type: ignore[arg-type]


def prometheus_answering(values: dict[str, str | None]) -> web.Application:
    """A Prometheus whose instant queries answer by substring of the query; None: an empty vector (no data)."""

    async def query(request: web.Request) -> web.Response:
        promql = request.query["query"]
        value = next((v for k, v in values.items() if k in promql), None)
        result = [] if value is None else [{"metric": {}, "value": [0, value]}]
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": result}})

    app = web.Application()
    app.router.add_get("/api/v1/query", query)
    return app


async def test_a_custom_error_ratio_query_without_data_is_unknown(session: aiohttp.ClientSession) -> None:
    """No data is not zero errors: the error criterion is skipped, and a measurement that judged nothing else is
    Inconclusive rather than a pass."""
    runner, port = await serve(prometheus_answering({"my_errors": None, "histogram_quantile": "120", "": "400"}))
    try:
        prometheus = PrometheusSpec(url=f"http://127.0.0.1:{port}", error_ratio_query="sum(my_errors) / 1")
        source = PrometheusSource(session, prometheus, namespace="ml", interval_seconds=30)
        sample = await source.measure("abc123", [])
        assert sample.requests == 400 and sample.errors is None and sample.error_ratio is None
        verdict = assess_measurement(AnalysisSpec(min_requests=10, max_error_ratio=0.01), sample, None)
        assert verdict.outcome == "Inconclusive" and "maxErrorRatio skipped" in verdict.message
        judged = assess_measurement(AnalysisSpec(min_requests=10, max_error_ratio=0.01, max_p99_latency_ms=500),
                                    sample, None)  # fmt: skip
        assert judged.outcome == "Pass" and "maxErrorRatio skipped" in judged.message
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("custom", [False, True])
async def test_no_requests_means_no_errors(session: aiohttp.ClientSession, custom: bool) -> None:
    """Zero requests (the default ratio query divides by them, so it has no data): the error count is known to be
    zero, and the measurement is Inconclusive for having no requests, as before."""
    runner, port = await serve(prometheus_answering({"my_errors": None, "outcome=~": None, "histogram": None, "": "0"}))
    try:
        prometheus = PrometheusSpec(url=f"http://127.0.0.1:{port}", error_ratio_query="my_errors" if custom else "")
        source = PrometheusSource(session, prometheus, namespace="ml", interval_seconds=30)
        sample = await source.measure("abc123", [])
        assert (sample.requests, sample.errors, sample.p99_seconds) == (0, 0, None)
        verdict = assess_measurement(AnalysisSpec(min_requests=0, max_error_ratio=0.01), sample, None)
        assert verdict.outcome == "Inconclusive" and "served 0 requests" in verdict.message
    finally:
        await runner.cleanup()


async def test_the_default_error_ratio_query_without_data_is_unknown_too(session: aiohttp.ClientSession) -> None:
    """Requests counted but the default ratio query has no data (error series missing): unknown, not zero."""
    runner, port = await serve(prometheus_answering({"outcome=~": None, "histogram_quantile": None, "": "400"}))
    try:
        source = PrometheusSource(session, PrometheusSpec(url=f"http://127.0.0.1:{port}"), namespace="ml",
                                  interval_seconds=30)  # fmt: skip
        sample = await source.measure("abc123", [])
        assert sample.requests == 400 and sample.errors is None
        assert assess_measurement(AnalysisSpec(min_requests=10, max_error_ratio=0.01), sample, None).outcome == (
            "Inconclusive"
        )
    finally:
        await runner.cleanup()


# --- golden requests ---------------------------------------------------------------------------------------------

GOLDEN = GoldenSpec(
    cases=(
        GoldenCase("first", (GoldenTensor("input", "FP32", (1, 2), (1.0, 0.0)),), (GoldenOutput("y", argmax=(0,)),)),
        GoldenCase("second", (GoldenTensor("input", "FP32", (1, 2), (0.0, 1.0)),), (GoldenOutput("y", argmax=(1,)),)),
    )
)


class FakeModelPod:
    """A model server pod: /v2/models/iris/infer answers the identity (right for GOLDEN) or, ``wrong``, swapped; it
    counts its requests in /metrics like modelserve."""

    def __init__(self, *, wrong: bool = False, status: int = 200, token: str | None = None) -> None:
        self.wrong, self.status, self.requests, self.bodies = wrong, status, 0, []  # type: ignore[var-annotated]
        self.probe: list[str | None] = []  # each request's Modeldeploy-Probe header
        self.token = token  # with one, callers need it (modelserve with runtime.auth: 401 without, 403 wrong)

    async def infer(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.bodies.append(body)
        self.probe.append(request.headers.get("Modeldeploy-Probe"))
        self.requests += 1
        if self.token is not None:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if scheme != "Bearer" or not given:
                return web.json_response({"error": "missing or malformed Authorization header"}, status=401)
            if given != self.token:
                return web.json_response({"error": "the bearer token is not valid for this server"}, status=403)
        if self.status != 200:
            return web.json_response({"error": "input 'input': expected shape [-1, 3], got [1, 2]"}, status=self.status)
        data = body["inputs"][0]["data"]
        answer = data[::-1] if self.wrong else data
        return web.json_response({"outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 2], "data": answer}]})

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=exposition(self.requests, 0, 0, {"0.1": self.requests, "+Inf": self.requests}))

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v2/models/iris/infer", self.infer)
        app.router.add_get("/metrics", self.metrics)
        return app


@pytest.mark.parametrize(
    ("pods", "mismatches", "detail"),
    [
        ([FakeModelPod(), FakeModelPod()], 0, ""),
        (
            [FakeModelPod(), FakeModelPod(wrong=True)],
            2,
            "case 'first' on pod pod-1: output 'y': argmax [1], expected [0]",
        ),
        (
            [FakeModelPod(status=400)],
            2,
            "case 'first' on pod pod-0: HTTP 400: input 'input': expected shape [-1, 3], got [1, 2]",
        ),
    ],
)
async def test_golden_requests_go_to_every_pod_and_count_wrong_answers(
    session: aiohttp.ClientSession, pods: list[FakeModelPod], mismatches: int, detail: str
) -> None:
    runners, targets = [], []
    for i, pod in enumerate(pods):
        runner, port = await serve(pod.app())
        runners.append(runner)
        targets.append(PodTarget(f"pod-{i}", "127.0.0.1", port))
    try:
        result = await check_golden(session, GOLDEN, "iris", "abc", targets)
    finally:
        for runner in runners:
            await runner.cleanup()
    assert (result.checks, result.mismatches, result.pods) == (2 * len(pods), mismatches, len(pods))
    assert (result.detail[0] if result.detail else "") == detail
    assert all(pod.requests == 2 for pod in pods)
    # Marked as probes, so that modelserve counts them apart from the revision's traffic (its metrics).
    assert all(pod.probe == ["golden", "golden"] for pod in pods)
    assert pods[0].bodies[0] == {
        "id": "modeldeploy-golden-first",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 0.0]}],
    }


async def test_golden_requests_to_an_unreachable_pod_are_a_measurement_error(session: aiohttp.ClientSession) -> None:
    with pytest.raises(MetricSourceError, match="Golden request 'first' to pod gone failed"):
        await check_golden(session, GOLDEN, "iris", "abc", [PodTarget("gone", "127.0.0.1", 9)])
    with pytest.raises(MetricSourceError, match="no ready pods"):
        await check_golden(session, GOLDEN, "iris", "abc", [])


async def test_golden_requests_answered_with_something_else_than_json_are_a_measurement_error(
    session: aiohttp.ClientSession,
) -> None:
    async def html(request: web.Request) -> web.Response:
        return web.Response(text="<html>proxy error</html>")

    app = web.Application()
    app.router.add_post("/v2/models/iris/infer", html)
    runner, port = await serve(app)
    try:
        with pytest.raises(MetricSourceError, match="Golden request 'first' to pod p failed"):
            await check_golden(session, GOLDEN, "iris", "abc", [PodTarget("p", "127.0.0.1", port)])
    finally:
        await runner.cleanup()


async def test_the_scrape_source_does_not_count_golden_requests_as_traffic(session: aiohttp.ClientSession) -> None:
    pod = FakeModelPod()
    runner, port = await serve(pod.app())
    target = PodTarget("pod-0", "127.0.0.1", port)
    try:
        source = ScrapeSource(session, model="iris")
        assert (await source.measure("abc", [target])).requests == 0
        await check_golden(session, GOLDEN, "iris", "abc", [target])
        await source.rebase("abc", [target])
        assert (await source.measure("abc", [target])).requests == 0  # the 2 golden requests are not traffic
        pod.requests += 5  # clients' requests
        assert (await source.measure("abc", [target])).requests == 5
        # A pod that cannot be scraped when rebasing keeps its earlier scrape.
        await source.rebase("abc", [target, PodTarget("gone", "127.0.0.1", 9)])
        assert set(source._previous["abc"]) == {("pod-0", "127.0.0.1")}
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("s3cret", None),
        (None, "Golden request 'first' to pod p needs a caller token \\(HTTP 401\\): missing or malformed"),
        ("old", "Golden request 'first' to pod p refused the operator's token \\(HTTP 403\\): the bearer token is not"),
    ],
    ids=["accepted", "none", "wrong"],
)
async def test_golden_requests_carry_the_caller_token_and_a_refusal_is_a_measurement_error(
    session: aiohttp.ClientSession, token: str | None, message: str | None
) -> None:
    """A model server with caller authentication gets the token as a bearer token. One it refuses says nothing about
    the model (a Secret rotated before the pods reload it): the measurement could not be taken, not a wrong answer
    that would roll the revision back at once."""
    pod = FakeModelPod(token="s3cret")
    runner, port = await serve(pod.app())
    target = [PodTarget("p", "127.0.0.1", port)]
    try:
        if message is None:
            result = await check_golden(session, GOLDEN, "iris", "abc", target, token=token)
            assert (result.checks, result.mismatches) == (2, 0)
            assert pod.probe == ["golden", "golden"]  # still marked as probes
        else:
            with pytest.raises(MetricSourceError, match=message) as info:
                await check_golden(session, GOLDEN, "iris", "abc", target, token=token)
            assert "s3cret" not in str(info.value)
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("status", [429, 503])
async def test_golden_requests_refused_for_load_are_a_measurement_error_not_a_wrong_answer(
    session: aiohttp.ClientSession, status: int
) -> None:
    """A busy canary shedding load is not a wrong model (as for the traffic criteria): try again later."""
    pod = FakeModelPod(status=status)
    runner, port = await serve(pod.app())
    try:
        with pytest.raises(MetricSourceError, match=f"refused as overload \\(HTTP {status}\\)"):
            await check_golden(session, GOLDEN, "iris", "abc", [PodTarget("p", "127.0.0.1", port)])
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("query", [DEFAULT_REQUESTS_QUERY, DEFAULT_ERROR_RATIO_QUERY, DEFAULT_P99_QUERY])
def test_the_default_queries_are_promql_over_what_modelserve_exports(query: str) -> None:
    """Rendered as the source sends them, they parse, and they select only series modelserve exposes (by name):
    a renamed runtime metric fails here, not in a cluster's canary analysis."""
    from modelserve.metrics import Metrics

    exported = {line.split("{")[0].split(" ")[0] for line in Metrics("m", "1").render().decode().splitlines()
                if line and not line.startswith("#")}  # fmt: skip
    source = PrometheusSource(None, PrometheusSpec(url="http://prometheus:9090"), namespace="ml",  # type: ignore[arg-type]
                              interval_seconds=30)  # fmt: skip
    rendered = source.render(query, "5d41402abc")
    names: set[str] = set()

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)
            matchers = {m.name: m.value for m in node.matchers.matchers}
            assert (matchers["namespace"], matchers["revision"]) == ("ml", "5d41402abc")
        return True

    promql_parser.walk(promql_parser.parse(rendered), visit)
    assert names and names <= exported, names - exported
    assert "[30s]" in rendered


async def test_a_source_that_times_out_says_so(session: aiohttp.ClientSession) -> None:
    """A timeout's exception has no text of its own: the error names its type rather than ending in nothing."""

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.Response(text="")

    app = web.Application()
    app.router.add_get("/metrics", slow)
    app.router.add_post("/v2/models/iris/infer", slow)
    runner, port = await serve(app)
    target = PodTarget("p", "127.0.0.1", port)
    try:
        with pytest.raises(MetricSourceError, match=r"of pod p failed: TimeoutError$"):
            await ScrapeSource(session, timeout_seconds=0.2).measure("abc", [target])
        with pytest.raises(MetricSourceError, match=r"Golden request 'first' to pod p failed: TimeoutError$"):
            await check_golden(session, GOLDEN, "iris", "abc", [target], timeout_seconds=0.2)
    finally:
        await runner.cleanup()
