"""Where measurements come from: one Protocol, two sources, one factory; and the senders of the golden requests
and of the analysis webhooks.

This is the only module of ``modeldeploy.rollout`` / ``modeldeploy.analysis`` that does network I/O, and only
to the model-server pods, to Prometheus or to the webhooks the spec names, never to the API server.

- ``ScrapeSource`` GETs ``http://POD_IP:PORT/metrics`` of every pod of the revision and returns what happened
  since its previous call for that pod (the first call for a pod counts from the pod's start). No Prometheus
  needed. It keeps the previous scrape per pod in memory; after an operator restart the first measurement
  counts from the pods' start, which for a young canary is the same thing.
- ``PrometheusSource`` runs three instant queries against ``/api/v1/query``: request count, error ratio and
  p99 latency in milliseconds. A query without data (an empty vector, NaN) is unknown, never zero: an error ratio
  without data leaves ``Sample.errors`` None (unless there were no requests, hence no errors). ``{{revision}}``,
  ``{{namespace}}`` and ``{{interval}}`` are substituted. The
  defaults expect the pods' ``modeldeploy.io/revision`` label as ``revision`` and the namespace as
  ``namespace`` on the series (the usual pod relabeling); set the queries when your labels differ.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from modeldeploy.analysis import golden, webhooks
from modeldeploy.analysis.golden import GoldenResult
from modeldeploy.analysis.promparse import (
    MetricsParseError,
    PodScrape,
    parse_scrape,
    sample_from_deltas,
    scrape_delta,
)
from modeldeploy.analysis.sample import Sample
from modeldeploy.rollout.config import AnalysisSpec, GoldenCase, GoldenSpec, PrometheusSpec, WebhookSpec

DEFAULT_REQUESTS_QUERY = (
    'sum(increase(modelserve_requests_total{namespace="{{namespace}}",revision="{{revision}}"}[{{interval}}]))'
)
DEFAULT_ERROR_RATIO_QUERY = (
    'sum(increase(modelserve_requests_total{namespace="{{namespace}}",revision="{{revision}}",'
    'outcome=~"server_error|timeout"}[{{interval}}])) / '
    'sum(increase(modelserve_requests_total{namespace="{{namespace}}",revision="{{revision}}"}[{{interval}}]))'
)
DEFAULT_P99_QUERY = (
    "1000 * histogram_quantile(0.99, sum by (le) (rate(modelserve_request_duration_seconds_bucket"
    '{namespace="{{namespace}}",revision="{{revision}}"}[{{interval}}])))'
)


class MetricSourceError(RuntimeError):
    """A measurement could not be taken (unreachable pods or Prometheus, bad answers)."""


def _why(exc: BaseException) -> str:
    """What went wrong, in words: the exception's text, or its type's name when it has none (a timeout's
    ``TimeoutError()`` says nothing else)."""
    return str(exc) or type(exc).__name__


@dataclass(frozen=True)
class PodTarget:
    """A pod to scrape."""

    name: str
    ip: str
    port: int = 8080


class MetricSource(Protocol):
    source_type: str

    async def measure(self, revision: str, pods: Sequence[PodTarget]) -> Sample:
        """Traffic of ``revision`` since the previous measurement (``pods`` are its ready pods)."""
        ...

    async def rebase(self, revision: str, pods: Sequence[PodTarget]) -> None:
        """Count the next measurement from now: what ``revision`` served since ``measure`` (the operator's own
        golden requests) is not its traffic. A source that cannot tell them apart leaves its count as it is."""
        ...


class ScrapeSource:
    source_type = "Scrape"

    def __init__(
        self, session: aiohttp.ClientSession, *, model: str | None = None, timeout_seconds: float = 5.0
    ) -> None:
        self.session = session
        self.model = model
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._previous: dict[str, dict[tuple[str, str], PodScrape]] = {}
        """Last scrape per revision, per pod (name, IP)."""

    async def _scrape(self, pod: PodTarget) -> PodScrape:
        url = f"http://{pod.ip}:{pod.port}/metrics"
        try:
            async with self.session.get(url, timeout=self.timeout) as response:
                if response.status != 200:
                    raise MetricSourceError(f"GET {url} of pod {pod.name} answered HTTP {response.status}")
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise MetricSourceError(f"GET {url} of pod {pod.name} failed: {_why(exc)}") from exc
        try:
            return parse_scrape(text, model=self.model)
        except MetricsParseError as exc:
            raise MetricSourceError(f"Pod {pod.name} served invalid metrics: {exc}") from exc

    async def measure(self, revision: str, pods: Sequence[PodTarget]) -> Sample:
        if not pods:
            raise MetricSourceError(f"Revision {revision} has no ready pods to scrape")
        results = await asyncio.gather(*(self._scrape(p) for p in pods), return_exceptions=True)
        previous = self._previous.get(revision, {})
        kept: dict[tuple[str, str], PodScrape] = {}
        deltas: list[PodScrape] = []
        failures: list[str] = []
        for pod, result in zip(pods, results, strict=True):
            if isinstance(result, MetricSourceError):
                failures.append(str(result))
                continue
            if isinstance(result, BaseException):
                raise result
            key = (pod.name, pod.ip)
            deltas.append(scrape_delta(previous.get(key), result))
            kept[key] = result
        for key, scrape in previous.items():  # a pod that failed this time keeps its last good scrape
            if key not in kept and any((p.name, p.ip) == key for p in pods):
                kept[key] = scrape
        # Pods that are gone are forgotten, so the memory stays bounded.
        self._previous[revision] = kept
        if not deltas:
            raise MetricSourceError(f"No pod of revision {revision} could be scraped: {'; '.join(failures)}")
        return sample_from_deltas(deltas)

    async def rebase(self, revision: str, pods: Sequence[PodTarget]) -> None:
        """Scrape ``pods`` again and count the next measurement from here: requests the operator itself sent
        since ``measure`` (golden requests) never count as the revision's traffic. A pod that cannot be scraped
        keeps its earlier scrape."""
        results = await asyncio.gather(*(self._scrape(p) for p in pods), return_exceptions=True)
        kept = self._previous.setdefault(revision, {})
        for pod, result in zip(pods, results, strict=True):
            if isinstance(result, PodScrape):
                kept[(pod.name, pod.ip)] = result

    def forget(self, revision: str) -> None:
        """Drop the remembered scrapes of a revision that is gone."""
        self._previous.pop(revision, None)


class PrometheusSource:
    source_type = "Prometheus"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        spec: PrometheusSpec,
        *,
        namespace: str,
        interval_seconds: float,
        timeout_seconds: float = 10.0,
    ) -> None:
        self.session = session
        self.spec = spec
        self.namespace = namespace
        self.interval = f"{max(1, math.ceil(interval_seconds))}s"
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds)

    def render(self, query: str, revision: str) -> str:
        return (
            query.replace("{{revision}}", revision)
            .replace("{{namespace}}", self.namespace)
            .replace("{{interval}}", self.interval)
        )

    async def query(self, promql: str) -> float | None:
        """Value of an instant query returning one number (None: empty result or NaN)."""
        url = f"{self.spec.url}/api/v1/query"
        try:
            async with self.session.get(url, params={"query": promql}, timeout=self.timeout) as response:
                body: Any = await response.json(content_type=None)
                if response.status != 200:
                    raise MetricSourceError(f"Prometheus answered HTTP {response.status}: {_error_of(body)}")
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise MetricSourceError(f"Prometheus query at {url} failed: {_why(exc)}") from exc
        if not isinstance(body, dict) or body.get("status") != "success":
            raise MetricSourceError(f"Prometheus query failed: {_error_of(body)}")
        data: dict[str, Any] = body.get("data") or {}
        result: Any = data.get("result")
        try:
            if data.get("resultType") == "scalar":
                value = float(result[1])
            elif data.get("resultType") == "vector":
                if not result:
                    return None
                if len(result) > 1:
                    raise MetricSourceError(f"Query {promql!r} returned {len(result)} series; it must return one")
                value = float(result[0]["value"][1])
            else:
                raise MetricSourceError(f"Query {promql!r} returned {data.get('resultType')!r}, not a vector")
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise MetricSourceError(f"Unexpected Prometheus answer for {promql!r}: {exc}") from exc
        return value if math.isfinite(value) else None

    async def rebase(self, revision: str, pods: Sequence[PodTarget]) -> None:
        """Nothing: Prometheus windows cannot leave requests out. modelserve counts golden requests apart (they
        carry ``golden.PROBE_HEADERS``), so only a runtime older than that header counts them as traffic here
        (docs: then set minRequests above cases x pods)."""

    async def measure(self, revision: str, pods: Sequence[PodTarget]) -> Sample:
        requests = await self.query(self.render(DEFAULT_REQUESTS_QUERY, revision))
        ratio = await self.query(self.render(self.spec.error_ratio_query or DEFAULT_ERROR_RATIO_QUERY, revision))
        p99_ms = await self.query(self.render(self.spec.p99_latency_query or DEFAULT_P99_QUERY, revision))
        total = max(0.0, requests or 0.0)
        # No data for the ratio is not zero errors: unknown, so the error criteria are skipped. Without requests
        # there are no errors to know of (the default ratio query, which divides by the requests, has no data then).
        errors = 0.0 if total == 0 else None if ratio is None else min(total, max(0.0, ratio * total))
        return Sample(
            requests=total,
            errors=errors,
            p99_seconds=max(0.0, p99_ms) / 1000 if p99_ms is not None else None,
            pods=len(pods),
        )


OVERLOADED = frozenset({429, 503})
"""Answers that refuse a request for load (modelserve: a full queue, too many connections, draining)."""
REFUSED_CALLER = frozenset({401, 403})
"""Answers that refuse the caller (modelserve with ``runtime.auth``: 401 without a token, 403 with a wrong one)."""


async def check_golden(
    session: aiohttp.ClientSession,
    spec: GoldenSpec,
    model: str,
    revision: str,
    pods: Sequence[PodTarget],
    *,
    timeout_seconds: float = 10.0,
    token: str | None = None,
) -> GoldenResult:
    """Send every golden case to every pod of ``revision`` (Open Inference Protocol v2 JSON) and compare the
    answers; ``token``: the bearer token of a server with ``runtime.auth``. An answer that is wrong, or an HTTP
    error, is a mismatch; a pod that cannot be reached, answers something that is not JSON, refuses the request for
    load (429, 503) or refuses the caller (401, 403) raises ``MetricSourceError``: nothing was learnt about the
    model."""
    if not pods:
        raise MetricSourceError(f"Revision {revision} has no ready pods to send golden requests to")
    timeout = aiohttp.ClientTimeout(total=timeout_seconds)
    headers = golden.PROBE_HEADERS if token is None else {**golden.PROBE_HEADERS, "Authorization": f"Bearer {token}"}

    async def ask(pod: PodTarget, case: GoldenCase) -> str | None:
        url = f"http://{pod.ip}:{pod.port}/v2/models/{model}/infer"
        try:
            body = golden.request_body(case)
            async with session.post(url, json=body, headers=headers, timeout=timeout) as response:
                answer: Any = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise MetricSourceError(
                f"Golden request {case.name!r} to pod {pod.name} failed: {_why(exc)}"
            ) from exc
        if status in OVERLOADED:
            # Shed load says the pod is busy, not that the model is wrong (as for the traffic criteria): this
            # measurement could not be taken, and is tried again.
            raise MetricSourceError(
                f"Golden request {case.name!r} to pod {pod.name} was refused as overload (HTTP {status}); "
                "its answer could not be judged"
            )
        if status in REFUSED_CALLER:
            # Who may call is not what the model answers: a token the pod does not (yet) accept, or none sent.
            held = "refused the operator's token" if token is not None else "needs a caller token"
            raise MetricSourceError(
                f"Golden request {case.name!r} to pod {pod.name} {held} (HTTP {status}): {_error_of(answer)}"
            )
        problem = golden.compare(case, spec, status, answer)
        return None if problem is None else f"case {case.name!r} on pod {pod.name}: {problem}"

    # One pod at a time, its cases one after another: golden requests must not load a young canary.
    problems: list[str] = []
    for pod in pods:
        for case in spec.cases:
            problem = await ask(pod, case)
            if problem is not None:
                problems.append(problem)
    return GoldenResult(
        checks=len(pods) * len(spec.cases),
        mismatches=len(problems),
        pods=len(pods),
        detail=tuple(p[: golden.MAX_DETAIL_TEXT] for p in problems[: golden.MAX_DETAIL]),
    )


WEBHOOK_HEADERS = {"User-Agent": "modeldeploy-analysis"}
"""Sent with every webhook call, beside the ``Content-Type: application/json`` of its JSON body."""


async def check_webhooks(
    session: aiohttp.ClientSession,
    hooks: Sequence[WebhookSpec],
    target: webhooks.Target,
    headers: Mapping[str, Mapping[str, str]] | None = None,
) -> webhooks.WebhookResult:
    """POST ``target`` to every webhook at once (each within its ``timeoutSeconds``, with its ``headers`` by webhook
    name: their values resolved) and judge the answers (``webhooks.judge``). Redirects are not followed. A webhook
    that said no fails the measurement even when another could not be asked; when none said no and one could not
    be asked (no connection, a timeout, 408, 429, 5xx), ``MetricSourceError``: the measurement could not be taken,
    and is tried again."""

    own = headers or {}

    async def ask(hook: WebhookSpec) -> tuple[webhooks.Judgement, str]:
        timeout = aiohttp.ClientTimeout(total=hook.timeout_seconds)
        try:
            async with session.post(
                hook.url,
                json=webhooks.payload(hook, target),
                headers={**WEBHOOK_HEADERS, **own.get(hook.name, {})},
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                answer = await response.content.read(webhooks.MAX_ANSWER_BYTES)
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            return "unavailable", f"webhook {hook.name!r} could not be asked: {_why(exc)}"
        return webhooks.judge(status), webhooks.describe(hook, status, answer)

    answers = await asyncio.gather(*(ask(hook) for hook in hooks))
    failed = [line for verdict, line in answers if verdict == "fail"]
    unavailable = [line for verdict, line in answers if verdict == "unavailable"]
    if unavailable and not failed:
        raise MetricSourceError("; ".join(unavailable)[:1000])
    return webhooks.make_result(len(hooks), failed, unavailable)


def _error_of(body: object) -> str:
    if isinstance(body, dict):
        return str(body.get("error") or body.get("errorType") or body)
    return repr(body)[:200]


def source_for(
    spec: AnalysisSpec, session: aiohttp.ClientSession, *, namespace: str, model: str | None = None
) -> MetricSource:
    """The metric source ``spec.rollout.analysis.source`` asks for."""
    if spec.source.type == "Prometheus":
        if spec.source.prometheus is None:
            raise MetricSourceError("analysis source Prometheus needs the prometheus block")
        return PrometheusSource(
            session, spec.source.prometheus, namespace=namespace, interval_seconds=spec.interval_seconds
        )
    return ScrapeSource(session, model=model)
