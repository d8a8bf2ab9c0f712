"""Controller.audit: children that kopf's caches still hold after a watch listed again, although the API server
deleted them meanwhile, are hidden from the decisions and their owners reconciled; a list that fails changes
nothing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from modeldeploy.config import OperatorConfig
from modeldeploy.controller import Controller, ObjectKey
from modeldeploy.kube import ApiError, KubeClient
from modeldeploy.kube.resources import Resource
from modeldeploy.labels import MODEL_DEPLOYMENT_LABEL
from modeldeploy.reconcile import Observed

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def child(kind: str, namespace: str, name: str, uid: str, rv: str = "5") -> dict[str, Any]:
    labels = {MODEL_DEPLOYMENT_LABEL: "iris"}
    return {"kind": kind, "metadata": {"namespace": namespace, "name": name, "uid": uid, "resourceVersion": rv,
                                       "labels": labels}}  # fmt: skip


class Caches:
    """The watch caches: ``iris`` in two namespaces, each with the given children."""

    def __init__(self, children: Mapping[str, Observed]) -> None:
        self.by_namespace = children

    def model_deployment(self, key: ObjectKey) -> Mapping[str, Any] | None:
        return {"metadata": {"namespace": key[0], "name": key[1]}}

    def model_deployments(self) -> Sequence[ObjectKey]:
        return [(namespace, "iris") for namespace in self.by_namespace]

    def children(self, key: ObjectKey) -> Observed:
        return self.by_namespace[key[0]]


class Cluster(KubeClient):
    """Lists what ``present`` holds, at resourceVersion 20; ``failing`` resources answer 503."""

    def __init__(self, present: list[dict[str, Any]], failing: frozenset[str] = frozenset()) -> None:
        self.present = present
        self.failing = failing
        self.lists: list[tuple[str, str | None, str | None]] = []

    async def list_with_version(
        self, resource: Resource, namespace: str | None = None, *, label_selector: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        self.lists.append((resource.plural, namespace, label_selector))
        if resource.plural in self.failing:
            raise ApiError(503, "ServiceUnavailable", "the server is currently unable to handle the request")
        kind = [o for o in self.present if o["kind"] == resource.kind]
        return [o for o in kind if namespace in (None, o["metadata"]["namespace"])], "20"


KEPT = child("Deployment", "ml", "iris-a", "d1")
GHOST = child("Deployment", "ml", "iris-b", "d2")
POD_GHOST = child("Pod", "ml", "iris-b-x", "p1")
SERVICE_GHOST = child("Service", "team", "iris", "s1")
CACHES = Caches({
    "ml": Observed(deployments=[KEPT, GHOST], pods=[POD_GHOST]),
    "team": Observed(services=[SERVICE_GHOST]),
})  # fmt: skip


async def audited(cluster: Cluster, namespaces: tuple[str, ...] = ()) -> tuple[Controller, int, list[ObjectKey]]:
    controller = Controller(config=OperatorConfig(), kube=cluster, clock=lambda: NOW, source=CACHES,
                            namespaces=namespaces)  # fmt: skip
    scheduled: list[ObjectKey] = []
    controller.schedule = lambda key, delay: scheduled.append(key)  # type: ignore[method-assign]
    try:
        return controller, await controller.audit(), scheduled
    finally:
        await controller.close()


async def test_gone_children_are_hidden_and_their_owners_reconciled() -> None:
    controller, found, scheduled = await audited(Cluster(present=[KEPT]))
    assert found == 3
    assert controller.fresh.gone == {(("Deployment", "ml", "iris-b"), "d2"), (("Pod", "ml", "iris-b-x"), "p1"),
                                     (("Service", "team", "iris"), "s1")}  # fmt: skip
    assert sorted(set(scheduled)) == [("ml", "iris"), ("team", "iris")]
    observed = controller._observe(("ml", "iris"))[1]
    assert observed.deployments == [KEPT] and observed.pods == []


async def test_an_operator_of_some_namespaces_lists_in_each_of_them_only() -> None:
    cluster = Cluster(present=[KEPT, SERVICE_GHOST])
    controller, found, _ = await audited(cluster, namespaces=("ml", "team"))
    assert {namespace for _, namespace, _ in cluster.lists} == {"ml", "team"}
    assert all(selector == "app.kubernetes.io/managed-by=modeldeploy" for *_, selector in cluster.lists)
    assert controller.fresh.gone == {(("Deployment", "ml", "iris-b"), "d2"), (("Pod", "ml", "iris-b-x"), "p1")}
    assert found == 2


async def test_a_list_that_fails_hides_nothing_of_its_kind() -> None:
    controller, found, _ = await audited(Cluster(present=[KEPT], failing=frozenset({"deployments"})))
    assert (("Deployment", "ml", "iris-b"), "d2") not in controller.fresh.gone
    assert found == 2  # the pod and the Service
