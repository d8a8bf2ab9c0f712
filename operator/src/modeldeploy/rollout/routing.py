"""Traffic routers: one small Protocol, one class per routing mode, chosen by ``router_for``. Pure.

A router turns the decision's weights (revision -> percent, summing to 100) into the objects that carry them:

- ``ReplicaRatioRouter`` (``Replicas``): the Service ``NAME`` selects every revision's pods while more than
  one revision has traffic, so each ready pod gets an equal share and the canary weight is approximated by
  ``canary pods / all pods`` (granularity ``100 / pods``). With one revision at 100% the selector narrows to
  it (a rolled-back or zero-weight canary gets no traffic); with no weights (first-deploy gate) it matches no
  pod. BlueGreen uses it the same way: at 100/0 the main Service selects only the active revision, and the
  preview Service ``NAME-preview`` selects the preview revision.
- ``GatewayAPIRouter`` (``GatewayAPI``): exact weights on the backendRefs of an HTTPRoute
  (gateway.networking.k8s.io/v1) to per-revision Services ``NAME-REV`` (the Service ``NAME`` stays for in-cluster
  clients, with the ``Replicas`` selector: they get the replica-ratio split); either a route the operator creates
  (``NAME``) or an existing route of which only our backendRefs are edited. It can also copy a share of the
  requests to a revision (a canary's ``setMirror``): a ``RequestMirror`` filter with ``percent`` (Gateway API
  v1.3) on each rule that carries our weights, whose answers the gateway discards.

Routers return manifests; the I/O layer applies them (server-side apply for objects we own; for an existing
HTTPRoute, a replace carrying the read ``resourceVersion`` so a concurrent edit is not lost).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from modeldeploy.build import SERVICE_PORT, is_revision, service_manifest
from modeldeploy.labels import MODEL_DEPLOYMENT_LABEL, REVISION_LABEL, common_labels
from modeldeploy.rollout.config import GatewayAPISpec, RolloutSpec
from modeldeploy.types import Manifest

GATEWAY_API_VERSION = "gateway.networking.k8s.io/v1"
NO_REVISION = "none"
"""Revision label value no pod carries: the selector of a Service that must have no endpoints."""


@dataclass(frozen=True)
class Mirror:
    """Copy ``percent`` percent of the requests to ``revision`` (its answers are discarded)."""

    revision: str
    percent: int


class RoutingError(ValueError):
    """The traffic routing cannot be set up (for example an existing HTTPRoute that does not reference us)."""


def revision_service_name(name: str, revision: str) -> str:
    return f"{name}-{revision}"


def is_our_backend(name: str, service: str) -> bool:
    """Whether Service ``service`` is ModelDeployment ``name``'s in a route: ``NAME`` itself (how a shared route
    names us before the first rollout) or a per-revision ``NAME-REV``. Another ModelDeployment whose name starts
    with ``NAME-`` (``iris-large`` next to ``iris``) is not, nor is the preview Service."""
    if service == name:
        return True
    prefix = f"{name}-"
    return service.startswith(prefix) and is_revision(service[len(prefix) :])


def preview_service_name(name: str) -> str:
    return f"{name}-preview"


def _check_weights(weights: Mapping[str, int]) -> None:
    if weights and sum(weights.values()) != 100:
        raise RoutingError(f"weights must sum to 100, got {dict(weights)}")
    if any(w < 0 for w in weights.values()):
        raise RoutingError(f"weights must not be negative, got {dict(weights)}")


def _service(name: str, namespace: str, service_name: str, selector: dict[str, str]) -> Manifest:
    return service_manifest(name, namespace, service_name, selector)


def _preview_service(name: str, namespace: str, revision: str) -> Manifest:
    """Service ``NAME-preview`` selecting only ``revision`` (BlueGreen preview, first-deploy gate)."""
    selector = {MODEL_DEPLOYMENT_LABEL: name, REVISION_LABEL: revision}
    return _service(name, namespace, preview_service_name(name), selector)


class TrafficRouter(Protocol):
    """What every routing mode provides."""

    @property
    def router_type(self) -> str: ...

    def main_service_selector(self, weights: Mapping[str, int]) -> dict[str, str]:
        """Selector of the Service ``NAME`` for these weights."""
        ...

    def build_desired(
        self,
        weights: Mapping[str, int],
        *,
        preview: str | None = None,
        existing: Mapping[str, Any] | None = None,
        canary: str | None = None,
        mirror: Mirror | None = None,
    ) -> list[Manifest]:
        """Objects this router owns or edits, as they must be for ``weights``.

        ``preview``: revision behind Service ``NAME-preview``; ``existing``: the HTTPRoute as read (routers
        that edit an existing route); ``canary``: the revision header-matched requests go to; ``mirror``: the
        requests copied to a revision (a router that cannot copy requests raises ``RoutingError``).
        """
        ...

    def verify(self, observed_objects: Sequence[Mapping[str, Any]], weights: Mapping[str, int]) -> bool:
        """Do the objects in the cluster carry ``weights``?"""
        ...

    def managed_backends(self, route: Mapping[str, Any]) -> list[str]:
        """Names of the backends this router manages in ``route`` (empty for routers without routes)."""
        ...


class ReplicaRatioRouter:
    """Weights approximated by the ratio of ready pods behind the one Service."""

    router_type = "Replicas"

    def __init__(self, name: str, namespace: str) -> None:
        self.name = name
        self.namespace = namespace

    def main_service_selector(self, weights: Mapping[str, int]) -> dict[str, str]:
        _check_weights(weights)
        with_traffic = [rev for rev, w in weights.items() if w > 0]
        selector = {MODEL_DEPLOYMENT_LABEL: self.name}
        if len(with_traffic) == 1:
            selector[REVISION_LABEL] = with_traffic[0]
        elif not with_traffic:
            selector[REVISION_LABEL] = NO_REVISION
        return selector

    def build_desired(
        self,
        weights: Mapping[str, int],
        *,
        preview: str | None = None,
        existing: Mapping[str, Any] | None = None,
        canary: str | None = None,
        mirror: Mirror | None = None,
    ) -> list[Manifest]:
        if mirror is not None:
            raise RoutingError("requests can only be mirrored with trafficRouting type GatewayAPI")
        out = [_service(self.name, self.namespace, self.name, self.main_service_selector(weights))]
        if preview:
            out.append(_preview_service(self.name, self.namespace, preview))
        return out

    def verify(self, observed_objects: Sequence[Mapping[str, Any]], weights: Mapping[str, int]) -> bool:
        wanted = self.main_service_selector(weights)
        for obj in observed_objects:
            if obj.get("kind") == "Service" and obj.get("metadata", {}).get("name") == self.name:
                return bool(obj.get("spec", {}).get("selector") == wanted)
        return False

    def managed_backends(self, route: Mapping[str, Any]) -> list[str]:
        return []


class GatewayAPIRouter:
    """Exact weights on HTTPRoute backendRefs to per-revision Services."""

    router_type = "GatewayAPI"

    def __init__(self, name: str, namespace: str, gateway: GatewayAPISpec) -> None:
        self.name = name
        self.namespace = namespace
        self.gateway = gateway

    @property
    def route_name(self) -> str:
        return self.gateway.http_route or self.name

    @property
    def creates_route(self) -> bool:
        return not self.gateway.http_route

    def _ours(self, ref: Mapping[str, Any]) -> bool:
        name = ref.get("name")
        kind = ref.get("kind", "Service")
        group = ref.get("group", "")
        namespace = ref.get("namespace", self.namespace)
        return (
            isinstance(name, str)
            and kind == "Service"
            and group in ("", "core")
            and namespace == self.namespace
            and is_our_backend(self.name, name)
        )

    def _backend_refs(self, weights: Mapping[str, int], share: int = 100) -> list[dict[str, Any]]:
        """Our backendRefs splitting ``share`` by the weights (largest remainder keeps the sum exact)."""
        revisions = sorted(weights)
        exact = {rev: share * weights[rev] / 100 for rev in revisions}
        floors = {rev: int(exact[rev]) for rev in revisions}
        left = share - sum(floors.values())
        for rev in sorted(revisions, key=lambda r: (-(exact[r] - floors[r]), r))[:left]:
            floors[rev] += 1
        return [
            {"name": revision_service_name(self.name, rev), "port": SERVICE_PORT, "weight": floors[rev]}
            for rev in revisions
        ]

    def _header_rule(self, canary: str, base_matches: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        header = self.gateway.header
        assert header is not None
        header_match = {"type": "Exact", "name": header.name, "value": header.value}
        matches = [dict(m, headers=[*m.get("headers", []), header_match]) for m in base_matches] or [
            {"headers": [header_match]}
        ]
        return {
            "matches": matches,
            "backendRefs": [{"name": revision_service_name(self.name, canary), "port": SERVICE_PORT, "weight": 1}],
        }

    def _mirror_filter(self, mirror: Mirror) -> dict[str, Any]:
        return {
            "type": "RequestMirror",
            "requestMirror": {
                "backendRef": {"name": revision_service_name(self.name, mirror.revision), "port": SERVICE_PORT},
                "percent": mirror.percent,
            },
        }

    def _is_our_mirror(self, flt: Mapping[str, Any]) -> bool:
        ref = (flt.get("requestMirror") or {}).get("backendRef") if flt.get("type") == "RequestMirror" else None
        return isinstance(ref, Mapping) and self._ours(ref)

    def _with_mirror(self, rule: Mapping[str, Any], mirror: Mirror | None) -> dict[str, Any]:
        """``rule`` with our mirror filter replaced by ``mirror``'s (or removed); the owner's filters stay."""
        filters = [f for f in rule.get("filters") or [] if not self._is_our_mirror(f)]
        if mirror is not None:
            filters.append(self._mirror_filter(mirror))
        out = {k: v for k, v in rule.items() if k != "filters"}
        if filters:
            out["filters"] = filters
        return out

    def _header_target(self, weights: Mapping[str, int], canary: str | None) -> str | None:
        if self.gateway.header is None or canary is None or canary not in weights or len(weights) < 2:
            return None
        return canary

    def _is_our_header_rule(self, rule: Mapping[str, Any]) -> bool:
        header = self.gateway.header
        refs = rule.get("backendRefs") or []
        if header is None or not refs or not all(self._ours(r) for r in refs):
            return False
        return any(
            h.get("name") == header.name and h.get("value") == header.value
            for m in rule.get("matches") or []
            for h in m.get("headers") or []
        )

    def services(self, weights: Mapping[str, int]) -> list[Manifest]:
        return [
            _service(
                self.name,
                self.namespace,
                revision_service_name(self.name, rev),
                {MODEL_DEPLOYMENT_LABEL: self.name, REVISION_LABEL: rev},
            )
            for rev in sorted(weights)
        ]

    def main_service_selector(self, weights: Mapping[str, int]) -> dict[str, str]:
        # The Service NAME stays for in-cluster clients; the route carries the exact split.
        return ReplicaRatioRouter(self.name, self.namespace).main_service_selector(weights)

    def build_route(
        self,
        weights: Mapping[str, int],
        existing: Mapping[str, Any] | None = None,
        *,
        canary: str | None = None,
        mirror: Mirror | None = None,
    ) -> Manifest:
        """The HTTPRoute for ``weights``; with a header match, requests carrying it go 100% to ``canary``; with
        ``mirror``, its share of the requests the weighted rules take is also copied to its revision."""
        _check_weights(weights)
        if mirror is not None and not 0 < mirror.percent <= 100:
            raise RoutingError(f"a mirror's percent must be between 1 and 100, got {mirror.percent}")
        header_to = self._header_target(weights, canary)
        if not weights:
            raise RoutingError("an HTTPRoute needs at least one revision with traffic")
        if self.creates_route:
            rules: list[dict[str, Any]] = []
            if header_to is not None:
                rules.append(self._header_rule(header_to, []))
            rules.append(self._with_mirror({"backendRefs": self._backend_refs(weights)}, mirror))
            return {
                "apiVersion": GATEWAY_API_VERSION,
                "kind": "HTTPRoute",
                "metadata": {
                    "name": self.route_name,
                    "namespace": self.namespace,
                    "labels": common_labels(self.name),
                },
                "spec": {"parentRefs": [dict(ref) for ref in self.gateway.parent_refs], "rules": rules},
            }
        if existing is None:
            raise RoutingError(f"HTTPRoute {self.namespace}/{self.route_name} must be read before it can be edited")
        route: Manifest = copy.deepcopy(dict(existing))
        old_rules = route.get("spec", {}).get("rules") or []
        new_rules: list[dict[str, Any]] = []
        touched = False
        for rule in old_rules:
            if self._is_our_header_rule(rule):
                continue
            refs = rule.get("backendRefs") or []
            ours = [r for r in refs if self._ours(r)]
            if not ours:
                new_rules.append(rule)
                continue
            touched = True
            others = [r for r in refs if not self._ours(r)]
            share = 100 if not others else sum(int(r.get("weight", 1)) for r in ours)
            if header_to is not None:
                new_rules.append(self._header_rule(header_to, rule.get("matches") or []))
            new_rules.append(self._with_mirror(dict(rule, backendRefs=[*others, *self._backend_refs(weights, share)]),
                                               mirror))  # fmt: skip
        if not touched:
            raise RoutingError(
                f"HTTPRoute {self.namespace}/{self.route_name} has no rule with a backendRef to "
                f"Service {self.name}; "
                f"add one (backendRefs: [{{name: {self.name}, port: {SERVICE_PORT}}}]) "
                "for the operator to manage"
            )
        route.setdefault("spec", {})["rules"] = new_rules
        return route

    def build_desired(
        self,
        weights: Mapping[str, int],
        *,
        preview: str | None = None,
        existing: Mapping[str, Any] | None = None,
        canary: str | None = None,
        mirror: Mirror | None = None,
    ) -> list[Manifest]:
        if mirror is not None and mirror.revision not in weights:
            raise RoutingError(f"revision {mirror.revision} has no Service to mirror to: it is not in {dict(weights)}")
        # The Service NAME stays for in-cluster clients (status.url) next to the per-revision ones the route uses.
        out = [_service(self.name, self.namespace, self.name, self.main_service_selector(weights))]
        out.extend(self.services(weights))
        if preview:
            out.append(_preview_service(self.name, self.namespace, preview))
        if weights:
            out.append(self.build_route(weights, existing, canary=canary, mirror=mirror))
        return out

    def route_weights(self, route: Mapping[str, Any]) -> dict[str, int]:
        """Weights (percent) our backendRefs carry in ``route``'s weighted rules (header rules skipped)."""
        totals: dict[str, int] = {}
        for rule in route.get("spec", {}).get("rules") or []:
            if self._is_our_header_rule(rule):
                continue
            ours = [r for r in rule.get("backendRefs") or [] if self._ours(r)]
            share = sum(int(r.get("weight", 1)) for r in ours)
            for ref in ours:
                rev = str(ref["name"])[len(self.name) + 1 :]
                totals[rev] = round(100 * int(ref.get("weight", 1)) / share) if share else 0
        return totals

    def _our_mirrors(self, route: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
        """(revision, ``requestMirror``) of each of our mirror filters in ``route``."""
        for rule in route.get("spec", {}).get("rules") or []:
            for flt in rule.get("filters") or []:
                if self._is_our_mirror(flt):
                    mirror = flt["requestMirror"]
                    yield str(mirror["backendRef"]["name"])[len(self.name) + 1 :], mirror

    def route_mirrors(self, route: Mapping[str, Any]) -> dict[str, int]:
        """Revision -> percent of our mirror filters in ``route`` (a filter without ``percent`` copies every
        request, which is also what a Gateway API older than v1.3 makes of ours: it drops the field)."""
        out: dict[str, int] = {}
        for revision, mirror in self._our_mirrors(route):
            percent = mirror.get("percent", 100)
            out[revision] = percent if isinstance(percent, int) and not isinstance(percent, bool) else 100
        return out

    def mirror_lost_percent(self, route: Mapping[str, Any], revision: str) -> bool:
        """Whether ``route`` holds our mirror filter to ``revision`` without its ``percent``: an HTTPRoute CRD older
        than Gateway API v1.3 prunes the field, and the gateway then copies every request."""
        return any(
            rev == revision and "percent" not in mirror and "fraction" not in mirror
            for rev, mirror in self._our_mirrors(route)
        )

    def verify(
        self, observed_objects: Sequence[Mapping[str, Any]], weights: Mapping[str, int], mirror: Mirror | None = None
    ) -> bool:
        for obj in observed_objects:
            meta = obj.get("metadata", {})
            if obj.get("kind") == "HTTPRoute" and meta.get("name") == self.route_name:
                got = self.route_weights(obj)
                mirrors = {mirror.revision: mirror.percent} if mirror is not None else {}
                return (
                    all(abs(got.get(rev, 0) - w) <= 1 for rev, w in weights.items())
                    and set(got) == set(weights)
                    and self.route_mirrors(obj) == mirrors
                )
        return False

    def managed_backends(self, route: Mapping[str, Any]) -> list[str]:
        return sorted(
            {
                str(ref["name"])
                for rule in route.get("spec", {}).get("rules") or []
                for ref in rule.get("backendRefs") or []
                if self._ours(ref)
            }
        )


def router_for(spec: RolloutSpec, name: str, namespace: str) -> TrafficRouter:
    """The router for ``spec.rollout`` (Gateway API only applies to the Canary strategy)."""
    routing = spec.routing
    if spec.strategy == "Canary" and routing.type == "GatewayAPI":
        if routing.gateway_api is None:
            raise RoutingError("trafficRouting type GatewayAPI needs the gatewayAPI block")
        return GatewayAPIRouter(name, namespace, routing.gateway_api)
    return ReplicaRatioRouter(name, namespace)
