"""How a Gateway API implementation routes one request by an HTTPRoute (gateway.networking.k8s.io/v1). Pure.

Used by :class:`~modeldeploy.sim.proxy.RouteProxy`; the rules followed, from the HTTPRoute API reference:

- **Matches.** A rule without ``matches`` matches every request (``PathPrefix /``). A match holds when all its
  conditions hold: ``path`` (``PathPrefix`` by whole path elements, ``/v2`` matches ``/v2`` and ``/v2/models``
  but not ``/v20``; ``Exact``; ``RegularExpression``), ``method``, ``headers`` (names case-insensitive,
  ``Exact`` or ``RegularExpression``) and ``queryParams`` (the same two types).
- **Precedence.** Of all matching (rule, match) pairs the one ranked highest wins: an Exact path, then the
  longest prefix, then a method match, then the most header matches, then the most query matches; remaining
  ties go to the first rule in list order. (Regular expressions are implementation-specific; here they rank
  below every prefix.) No matching rule: 404.
- **Weights.** A backendRef's ``weight`` defaults to 1; weight 0 never receives a request. Each request goes
  to one backendRef in proportion to the weights, by smooth weighted round robin (deterministic: within any
  ``k`` consecutive picks each backend gets ``k * share`` picks give or take 2) or by seeded weighted random
  choice (what Envoy-based gateways do). A rule whose weights are all 0, or that has no backendRefs: 500.
- **Invalid backends.** A backendRef that is not a core Service, names another namespace (that needs a
  ReferenceGrant, not emulated), or a Service or port that does not exist is invalid: the requests that would
  have gone to it get 500 (the API: "the proportion of requests that would otherwise have been routed to an
  invalid backend MUST receive a 500 status code"). A valid Service without ready endpoints answers 503, which
  the API recommends ("implementations SHOULD return a 503 for requests to that backend instead").

- **Mirrors.** A rule's ``RequestMirror`` filters (``percent``, default 100; ``fraction``) copy that share of the
  requests the rule serves to their ``backendRef``, whose answer is discarded (``mirror_targets``; which requests
  are copied is decided by ``MirrorSampler``: evenly spread, deterministic).

``hostnames``, ``parentRefs`` (the route is served on the proxy's own port) and the other filters are not
evaluated.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "BackendRef",
    "MirrorSampler",
    "MirrorTarget",
    "RequestInfo",
    "WeightedPicker",
    "backend_refs",
    "invalid_backend_reason",
    "mirror_targets",
    "select_rule",
]

Balance = Literal["smooth", "random"]
_DEFAULT_MATCH: Mapping[str, Any] = {"path": {"type": "PathPrefix", "value": "/"}}


@dataclass(frozen=True)
class RequestInfo:
    """What route matching looks at; header names are compared case-insensitively."""

    method: str = "GET"
    path: str = "/"
    headers: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)


@dataclass(frozen=True)
class BackendRef:
    name: str
    namespace: str
    port: int | None
    weight: int
    kind: str = "Service"
    group: str = ""


def _path_matches(spec: Mapping[str, Any], path: str) -> bool:
    kind = spec.get("type", "PathPrefix")
    value = str(spec.get("value", "/"))
    if kind == "Exact":
        return path == value
    if kind == "RegularExpression":
        return re.fullmatch(value, path) is not None
    prefix = value.rstrip("/")
    return prefix == "" or path == prefix or path.startswith(prefix + "/")


def _value_matches(spec: Mapping[str, Any], actual: str | None) -> bool:
    if actual is None:
        return False
    if spec.get("type", "Exact") == "RegularExpression":
        return re.fullmatch(str(spec.get("value", "")), actual) is not None
    return actual == str(spec.get("value", ""))


def _matches(match: Mapping[str, Any], request: RequestInfo) -> bool:
    if not _path_matches(match.get("path") or _DEFAULT_MATCH["path"], request.path):
        return False
    method = match.get("method")
    if method and str(method).upper() != request.method.upper():
        return False
    if not all(_value_matches(h, request.header(str(h.get("name", "")))) for h in match.get("headers") or []):
        return False
    return all(_value_matches(q, request.query.get(str(q.get("name", "")))) for q in match.get("queryParams") or [])


def _rank(match: Mapping[str, Any]) -> tuple[int, int, int, int, int]:
    path = match.get("path") or _DEFAULT_MATCH["path"]
    kind = path.get("type", "PathPrefix")
    exact = 1 if kind == "Exact" else 0
    prefix_length = len(str(path.get("value", "/"))) if kind == "PathPrefix" else -1
    return (
        exact,
        prefix_length,
        1 if match.get("method") else 0,
        len(match.get("headers") or []),
        len(match.get("queryParams") or []),
    )


def select_rule(route: Mapping[str, Any], request: RequestInfo) -> tuple[int, Mapping[str, Any]] | None:
    """The rule of ``route`` that serves ``request`` (its index and the rule), or None when none matches."""
    best: tuple[tuple[int, int, int, int, int], int] | None = None
    rules = (route.get("spec") or {}).get("rules") or []
    for index, rule in enumerate(rules):
        for match in rule.get("matches") or [_DEFAULT_MATCH]:
            if not _matches(match, request):
                continue
            key = (_rank(match), -index)
            if best is None or key > best:
                best = key
    if best is None:
        return None
    index = -best[1]
    return index, rules[index]


def backend_refs(rule: Mapping[str, Any], namespace: str) -> list[BackendRef]:
    """The rule's backendRefs with defaults filled in (kind Service, the route's namespace, weight 1)."""
    out = []
    for ref in rule.get("backendRefs") or []:
        port = ref.get("port")
        out.append(
            BackendRef(
                name=str(ref.get("name", "")),
                namespace=str(ref.get("namespace") or namespace),
                port=int(port) if isinstance(port, int) else None,
                weight=max(0, int(ref.get("weight", 1))),
                kind=str(ref.get("kind", "Service")),
                group=str(ref.get("group", "")),
            )
        )
    return out


@dataclass(frozen=True)
class MirrorTarget:
    """A ``RequestMirror`` filter: copy ``share`` (0 to 1) of the requests to ``ref`` (its weight is unused)."""

    ref: BackendRef
    share: float


def mirror_targets(rule: Mapping[str, Any], namespace: str) -> list[MirrorTarget]:
    """The rule's ``RequestMirror`` filters, in order (``percent`` or ``fraction``; neither: every request)."""
    out = []
    for flt in rule.get("filters") or []:
        if flt.get("type") != "RequestMirror":
            continue
        mirror = flt.get("requestMirror") or {}
        ref = backend_refs({"backendRefs": [mirror.get("backendRef") or {}]}, namespace)[0]
        fraction = mirror.get("fraction")
        if "percent" in mirror:
            share = float(mirror["percent"]) / 100
        elif isinstance(fraction, Mapping):
            share = float(fraction.get("numerator", 0)) / float(fraction.get("denominator", 100) or 100)
        else:
            share = 1.0
        out.append(MirrorTarget(ref, min(1.0, max(0.0, share))))
    return out


class MirrorSampler:
    """Whether to copy the next request to one mirror: of any ``k`` consecutive requests of a (rule, target) it
    copies ``floor(k * share)`` or one more, spread evenly (the same rule as smooth weighted round robin)."""

    def __init__(self) -> None:
        self._seen: dict[object, int] = {}

    def copy(self, key: object, share: float) -> bool:
        seen = self._seen.get(key, 0)
        self._seen[key] = seen + 1
        return int((seen + 1) * share + 1e-9) > int(seen * share + 1e-9)


def invalid_backend_reason(ref: BackendRef, route_namespace: str, service: Mapping[str, Any] | None) -> str | None:
    """Why ``ref`` is an invalid backend (the Gateway API condition reason and a message), or None when valid."""
    if ref.kind != "Service" or ref.group not in ("", "core"):
        return f"InvalidKind: {ref.group or 'core'}/{ref.kind} {ref.name} is not a Service"
    if ref.namespace != route_namespace:
        return f"RefNotPermitted: Service {ref.namespace}/{ref.name} is in another namespace"
    if service is None:
        return f"BackendNotFound: Service {ref.namespace}/{ref.name} not found"
    ports = {p.get("port") for p in (service.get("spec") or {}).get("ports") or []}
    if ref.port is None or ref.port not in ports:
        return f"BackendNotFound: Service {ref.namespace}/{ref.name} has no port {ref.port}"
    return None


class WeightedPicker:
    """Chooses a backendRef index in proportion to the weights; state is kept per (rule, weights) key.

    ``smooth`` is nginx's smooth weighted round robin: every pick adds each weight to that entry's credit, the
    entry with the most credit wins and pays the total. A changed set of weights starts from zero credit.
    """

    def __init__(self, balance: Balance = "smooth", seed: int = 0) -> None:
        if balance not in ("smooth", "random"):
            raise ValueError(f"balance must be 'smooth' or 'random', not {balance!r}")
        self.balance = balance
        self._random = random.Random(seed)
        self._credit: dict[tuple[object, tuple[int, ...]], list[int]] = {}

    def pick(self, key: object, weights: Sequence[int]) -> int | None:
        """Index of the chosen entry; None when no weight is positive."""
        total = sum(w for w in weights if w > 0)
        if total <= 0:
            return None
        if self.balance == "random":
            return self._random.choices(range(len(weights)), weights=[max(0, w) for w in weights])[0]
        state_key = (key, tuple(weights))
        credit = self._credit.get(state_key)
        if credit is None:
            # Only the current weights of a rule are kept.
            for stale in [k for k in self._credit if k[0] == key]:
                del self._credit[stale]
            credit = self._credit[state_key] = [0] * len(weights)
        best = -1
        for i, weight in enumerate(weights):
            if weight <= 0:
                continue
            credit[i] += weight
            if best < 0 or credit[i] > credit[best]:
                best = i
        credit[best] -= total
        return best
