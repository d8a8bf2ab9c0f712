"""The emulated API server's Kubernetes semantics, driven over HTTP with real clients."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import lightkube
import pytest
from lightkube import operators
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.core_v1 import ConfigMap, Namespace
from lightkube.types import PatchType

from modeldeploy.sim.cluster import Cluster
from modeldeploy.sim.emulator import ApiError, Fault
from modeldeploy.sim.resources import schema_admission

Widget = create_namespaced_resource("sim.example.com", "v1", "Widget", "widgets")
WIDGETS = "sim.example.com/v1/widgets"


@pytest.fixture
def cluster_crds(widget_crd: dict[str, Any]) -> list[Any]:
    return [widget_crd]


def widget(name: str, **spec: Any) -> Any:
    return Widget.from_dict(
        {"apiVersion": "sim.example.com/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec}
    )


def configmap(name: str, labels: dict[str, str] | None = None, owner: dict[str, Any] | None = None) -> ConfigMap:
    metadata: dict[str, Any] = {"name": name, "labels": labels or {}}
    if owner is not None:
        metadata["ownerReferences"] = [
            {
                "apiVersion": owner["apiVersion"],
                "kind": owner["kind"],
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
            }
        ]
    return ConfigMap.from_dict({"metadata": metadata, "data": {"k": "v"}})


async def raw(
    cluster: Cluster, method: str, path: str, body: Any = None, content_type: str = "application/json"
) -> tuple[int, Any]:
    """One HTTP request to the emulator: (status, decoded JSON body)."""
    data = None if body is None else body if isinstance(body, str) else json.dumps(body)
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, cluster.url + path, data=data, headers={"Content-Type": content_type}) as response,
    ):
        return response.status, await response.json(content_type=None)


WIDGET_PATH = "/apis/sim.example.com/v1/namespaces/default/widgets"


async def test_create_sets_server_fields_and_resource_versions_grow(kube: lightkube.AsyncClient) -> None:
    first = await kube.create(widget("a", size="s"), namespace="default")
    second = await kube.create(configmap("b"), namespace="default")
    assert first.metadata.uid and first.metadata.uid != second.metadata.uid
    assert first.metadata.creationTimestamp is not None
    assert first.metadata.generation == 1
    assert int(second.metadata.resourceVersion) > int(first.metadata.resourceVersion)
    fetched = await kube.get(Widget, "a", namespace="default")
    assert fetched.metadata.resourceVersion == first.metadata.resourceVersion


async def test_create_twice_is_already_exists(cluster: Cluster) -> None:
    body = {"apiVersion": "sim.example.com/v1", "kind": "Widget", "metadata": {"name": "a"}, "spec": {}}
    assert (await raw(cluster, "POST", WIDGET_PATH, body))[0] == 201
    code, status = await raw(cluster, "POST", WIDGET_PATH, body)
    assert code == 409
    assert status["kind"] == "Status" and status["reason"] == "AlreadyExists" and status["code"] == 409
    assert status["message"] == 'widgets.sim.example.com "a" already exists'


async def test_missing_object_and_namespace_and_resource_are_404(cluster: Cluster) -> None:
    code, status = await raw(cluster, "GET", WIDGET_PATH + "/nope")
    assert (code, status["reason"], status["details"]["name"]) == (404, "NotFound", "nope")
    code, status = await raw(cluster, "POST", "/api/v1/namespaces/ghost/configmaps", {"metadata": {"name": "x"}})
    assert (code, status["message"]) == (404, 'namespaces "ghost" not found')
    code, _ = await raw(cluster, "GET", "/apis/sim.example.com/v1/namespaces/default/gadgets")
    assert code == 404


async def test_stale_update_is_a_409_conflict(kube: lightkube.AsyncClient) -> None:
    created = await kube.create(widget("a", size="s"), namespace="default")
    created.spec["size"] = "m"
    await kube.replace(created)  # carries the current resourceVersion: accepted
    created.spec["size"] = "l"  # still carries the old resourceVersion
    with pytest.raises(lightkube.ApiError) as raised:
        await kube.replace(created)
    assert raised.value.status.code == 409 and raised.value.status.reason == "Conflict"
    stale_patch = {"metadata": {"resourceVersion": created.metadata.resourceVersion}, "spec": {"size": "xl"}}
    with pytest.raises(lightkube.ApiError) as raised:
        await kube.patch(Widget, "a", stale_patch, namespace="default", patch_type=PatchType.MERGE)
    assert raised.value.status.code == 409
    assert (await kube.get(Widget, "a", namespace="default")).spec["size"] == "m"


async def test_custom_resource_update_needs_a_resource_version(cluster: Cluster) -> None:
    body = {"apiVersion": "sim.example.com/v1", "kind": "Widget", "metadata": {"name": "a"}, "spec": {}}
    await raw(cluster, "POST", WIDGET_PATH, body)
    code, status = await raw(cluster, "PUT", WIDGET_PATH + "/a", body)
    assert (code, status["reason"]) == (422, "Invalid")


async def test_generation_bumps_only_on_spec_changes(kube: lightkube.AsyncClient) -> None:
    await kube.create(widget("a", size="s"), namespace="default")
    merge = PatchType.MERGE
    labelled = await kube.patch(
        Widget, "a", {"metadata": {"labels": {"x": "1"}}}, namespace="default", patch_type=merge
    )
    assert labelled.metadata.generation == 1
    status = await kube.patch(Widget.Status, "a", {"status": {"phase": "Ok"}}, namespace="default", patch_type=merge)
    assert status.metadata.generation == 1
    assert int(status.metadata.resourceVersion) > int(labelled.metadata.resourceVersion)
    spec = await kube.patch(Widget, "a", {"spec": {"size": "m"}}, namespace="default", patch_type=merge)
    assert spec.metadata.generation == 2
    same = await kube.patch(Widget, "a", {"spec": {"size": "m"}}, namespace="default", patch_type=merge)
    assert (same.metadata.generation, same.metadata.resourceVersion) == (2, spec.metadata.resourceVersion)


async def test_status_subresource_isolation(kube: lightkube.AsyncClient) -> None:
    await kube.create(widget("a", size="s"), namespace="default")
    merge = PatchType.MERGE
    main = await kube.patch(
        Widget, "a", {"spec": {"size": "m"}, "status": {"phase": "Ignored"}}, namespace="default", patch_type=merge
    )
    assert main.spec["size"] == "m" and "phase" not in (main.get("status") or {})
    status = await kube.patch(
        Widget.Status,
        "a",
        {"spec": {"size": "xl"}, "metadata": {"labels": {"l": "v"}}, "status": {"phase": "Ready"}},
        namespace="default",
        patch_type=merge,
    )
    assert status["status"]["phase"] == "Ready"
    assert status.spec["size"] == "m" and not status.metadata.labels


async def test_merge_patch_null_deletes_keys(kube: lightkube.AsyncClient) -> None:
    await kube.create(widget("a", size="s", extra={"keep": 1, "drop": 2}), namespace="default")
    patch = {"spec": {"size": None, "extra": {"drop": None}}}
    patched = await kube.patch(Widget, "a", patch, namespace="default", patch_type=PatchType.MERGE)
    assert patched.spec == {"extra": {"keep": 1}}


async def test_json_patch_and_failed_test_operation(cluster: Cluster, kube: lightkube.AsyncClient) -> None:
    await kube.create(widget("a", items=["x"]), namespace="default")
    ops = [{"op": "add", "path": "/spec/items/-", "value": "y"}, {"op": "replace", "path": "/spec/size", "value": "m"}]
    with pytest.raises(lightkube.ApiError):  # replace of a missing path fails
        await kube.patch(Widget, "a", ops, namespace="default", patch_type=PatchType.JSON)
    ops[1]["op"] = "add"
    patched = await kube.patch(Widget, "a", ops, namespace="default", patch_type=PatchType.JSON)
    assert patched.spec == {"items": ["x", "y"], "size": "m"}
    code, status = await raw(
        cluster,
        "PATCH",
        WIDGET_PATH + "/a",
        [{"op": "test", "path": "/spec/size", "value": "s"}],
        "application/json-patch+json",
    )
    assert (code, status["reason"]) == (422, "Invalid")


async def test_strategic_merge_patch(cluster: Cluster, kube: lightkube.AsyncClient) -> None:
    await kube.create(widget("a"), namespace="default")
    code, status = await raw(
        cluster, "PATCH", WIDGET_PATH + "/a", {"spec": {"size": "m"}}, "application/strategic-merge-patch+json"
    )
    assert (code, status["reason"]) == (415, "UnsupportedMediaType")  # as for real custom resources
    deployment = {
        "metadata": {"name": "d"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "main", "image": "one"}, {"name": "side", "image": "two"}]},
            },
        },
    }
    await raw(cluster, "POST", "/apis/apps/v1/namespaces/default/deployments", deployment)
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "side", "image": "three"}]}}}}
    code, body = await raw(
        cluster,
        "PATCH",
        "/apis/apps/v1/namespaces/default/deployments/d",
        patch,
        "application/strategic-merge-patch+json",
    )
    assert code == 200
    containers = body["spec"]["template"]["spec"]["containers"]
    assert containers == [{"name": "main", "image": "one"}, {"name": "side", "image": "three"}]


async def test_server_side_apply_lifecycle(cluster: Cluster, kube: lightkube.AsyncClient) -> None:
    config = widget("a", size="s", color="red")
    created = await kube.apply(config, namespace="default", field_manager="me")
    assert created.spec == {"size": "s", "color": "red"} and created.metadata.generation == 1
    entry = next(e for e in created.metadata.managedFields if e.manager == "me")
    assert entry.operation == "Apply" and "f:color" in entry.fieldsV1["f:spec"]

    # Another writer's field survives this manager's applies; a field this manager stops applying goes away.
    await kube.patch(Widget, "a", {"spec": {"owner": "them"}}, namespace="default", patch_type=PatchType.MERGE)
    updated = await kube.apply(widget("a", size="m"), namespace="default", field_manager="me")
    assert updated.spec == {"size": "m", "owner": "them"}
    assert updated.metadata.generation == 3

    # Re-applying the same configuration writes nothing: no new resourceVersion, no watch event.
    writes_before = cluster.emulator.resource_version
    again = await kube.apply(widget("a", size="m"), namespace="default", field_manager="me")
    assert again.metadata.resourceVersion == updated.metadata.resourceVersion
    assert cluster.emulator.resource_version == writes_before
    events = await _watch(
        cluster, f"{WIDGET_PATH}?watch=true&resourceVersion={updated.metadata.resourceVersion}&timeoutSeconds=1"
    )
    assert events == []


async def test_apply_conflicts_between_managers(kube: lightkube.AsyncClient) -> None:
    await kube.apply(widget("a", size="s"), namespace="default", field_manager="one")
    with pytest.raises(lightkube.ApiError) as raised:
        await kube.apply(widget("a", size="m"), namespace="default", field_manager="two")
    assert raised.value.status.code == 409 and "one" in raised.value.status.message
    forced = await kube.apply(widget("a", size="m"), namespace="default", field_manager="two", force=True)
    assert forced.spec["size"] == "m"
    # The field moved to "two": "one" no longer applying it does not remove it.
    after = await kube.apply(widget("a", other="x"), namespace="default", field_manager="one")
    assert after.spec == {"size": "m", "other": "x"}


async def test_a_field_two_appliers_share_stays_until_neither_applies_it(kube: lightkube.AsyncClient) -> None:
    """Server-side apply removes a field its manager stops applying only when no other manager owns it: two
    managers applying the same value share it (how a handover manager keeps a Deployment's replicas)."""
    await kube.apply(widget("a", size="s", color="red"), namespace="default", field_manager="one")
    await kube.apply(widget("a", size="s"), namespace="default", field_manager="two")  # same value: shared
    kept = await kube.apply(widget("a", color="red"), namespace="default", field_manager="one")
    assert kept.spec == {"size": "s", "color": "red"}, "still owned by two"
    gone = await kube.apply(widget("a", other=1), namespace="default", field_manager="two")
    assert gone.spec == {"color": "red", "other": 1}, "owned by nobody once two stops applying it"


async def test_apply_merges_lists_of_named_maps(kube: lightkube.AsyncClient) -> None:
    await kube.apply(widget("a", ports=[{"name": "http", "port": 80}]), namespace="default", field_manager="one")
    await kube.apply(widget("a", ports=[{"name": "metrics", "port": 9090}]), namespace="default", field_manager="two")
    both = await kube.get(Widget, "a", namespace="default")
    assert [p["name"] for p in both.spec["ports"]] == ["http", "metrics"]
    dropped = await kube.apply(widget("a", other=1), namespace="default", field_manager="one")
    assert dropped.spec["ports"] == [{"name": "metrics", "port": 9090}]


async def test_finalizers_hold_deletion(kube: lightkube.AsyncClient) -> None:
    created = widget("a").to_dict()
    created["metadata"]["finalizers"] = ["sim.example.com/hold"]
    await kube.create(Widget.from_dict(created), namespace="default")
    await kube.delete(Widget, "a", namespace="default")
    held = await kube.get(Widget, "a", namespace="default")
    assert held.metadata.deletionTimestamp is not None
    with pytest.raises(lightkube.ApiError) as raised:  # no new finalizers on a terminating object
        await kube.patch(
            Widget,
            "a",
            {"metadata": {"finalizers": ["sim.example.com/hold", "more"]}},
            namespace="default",
            patch_type=PatchType.MERGE,
        )
    assert raised.value.status.code == 422
    await kube.patch(Widget, "a", {"metadata": {"finalizers": None}}, namespace="default", patch_type=PatchType.MERGE)
    with pytest.raises(lightkube.ApiError) as raised:
        await kube.get(Widget, "a", namespace="default")
    assert raised.value.status.code == 404


async def test_owner_references_cascade(cluster: Cluster, kube: lightkube.AsyncClient, eventually: Any) -> None:
    owner = (await kube.create(widget("owner"), namespace="default")).to_dict()
    child = (await kube.create(configmap("child", owner=owner), namespace="default")).to_dict()
    child["apiVersion"], child["kind"] = "v1", "ConfigMap"
    await kube.create(configmap("grandchild", owner=child), namespace="default")
    await kube.create(configmap("bystander"), namespace="default")
    await kube.delete(Widget, "owner", namespace="default")

    def remaining() -> list[str]:
        return [c["metadata"]["name"] for c in cluster.emulator.list_objects("v1/configmaps", "default")]

    await eventually(lambda: remaining() == ["bystander"])


async def test_orphan_propagation_keeps_dependents(cluster: Cluster, kube: lightkube.AsyncClient) -> None:
    owner = (await kube.create(widget("owner"), namespace="default")).to_dict()
    await kube.create(configmap("child", owner=owner), namespace="default")
    code, _ = await raw(cluster, "DELETE", WIDGET_PATH + "/owner", {"propagationPolicy": "Orphan"})
    assert code == 200
    await asyncio.sleep(0.05)
    child = await kube.get(ConfigMap, "child", namespace="default")
    assert not child.metadata.ownerReferences


async def test_label_selectors_on_list(cluster: Cluster, kube: lightkube.AsyncClient) -> None:
    for name, labels in [("a", {"app": "x", "tier": "web"}), ("b", {"app": "y"}), ("c", {"tier": "db"})]:
        await kube.create(configmap(name, labels), namespace="default")

    async def names(labels: dict[str, Any]) -> list[str]:
        return [c.metadata.name async for c in kube.list(ConfigMap, namespace="default", labels=labels)]

    assert await names({"app": "x"}) == ["a"]
    assert await names({"app": operators.not_equal("x")}) == ["b", "c"]
    assert await names({"app": operators.in_(["x", "y"])}) == ["a", "b"]
    assert await names({"app": operators.not_in(["x"])}) == ["b", "c"]
    assert await names({"tier": operators.exists()}) == ["a", "c"]
    assert await names({"tier": operators.not_exists()}) == ["b"]
    assert await names({"app": operators.exists(), "tier": "web"}) == ["a"]
    code, body = await raw(cluster, "GET", "/api/v1/namespaces/default/configmaps?labelSelector=app%3D%3Dy")
    assert code == 200 and [i["metadata"]["name"] for i in body["items"]] == ["b"]


async def test_selectors_and_errors_over_http(cluster: Cluster, kube: lightkube.AsyncClient) -> None:
    for name, labels in [("a", {"app": "x"}), ("b", {"app": "y"})]:
        await kube.create(configmap(name, labels), namespace="default")
    code, body = await raw(cluster, "GET", "/api/v1/namespaces/default/configmaps?labelSelector=app%20in%20(y)")
    assert code == 200 and [i["metadata"]["name"] for i in body["items"]] == ["b"]
    assert body["kind"] == "ConfigMapList" and int(body["metadata"]["resourceVersion"]) > 0
    code, body = await raw(cluster, "GET", "/api/v1/configmaps?fieldSelector=metadata.name%3Da")
    assert [i["metadata"]["name"] for i in body["items"]] == ["a"]
    code, body = await raw(cluster, "GET", "/api/v1/configmaps?fieldSelector=metadata.namespace!%3Ddefault")
    assert body["items"] == []
    code, status = await raw(cluster, "GET", "/api/v1/configmaps?labelSelector=app%20in%20(x")
    assert (code, status["reason"]) == (400, "BadRequest")
    code, status = await raw(cluster, "GET", "/api/v1/configmaps?fieldSelector=spec.x%3D1")
    assert code == 400 and "not supported" in status["message"]


async def test_watch_filters_by_label_and_reports_leaving_objects(cluster: Cluster) -> None:
    emulator = cluster.emulator
    start = str(emulator.resource_version)
    emulator.create_object("v1/configmaps", {"metadata": {"name": "a", "labels": {"app": "x"}}}, namespace="default")
    emulator.create_object("v1/configmaps", {"metadata": {"name": "b", "labels": {"app": "y"}}}, namespace="default")
    emulator.patch_object("v1/configmaps", "default", "a", {"data": {"k": "1"}})
    emulator.patch_object("v1/configmaps", "default", "a", {"metadata": {"labels": {"app": "z"}}})
    emulator.patch_object("v1/configmaps", "default", "b", {"metadata": {"labels": {"app": "x"}}})
    events = await _watch(
        cluster,
        f"/api/v1/namespaces/default/configmaps?watch=true&labelSelector=app%3Dx"
        f"&resourceVersion={start}&timeoutSeconds=1",
    )
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "a"),
        ("MODIFIED", "a"),
        ("DELETED", "a"),
        ("ADDED", "b"),
    ]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs) and rvs[0] > int(start)


async def test_watch_resumes_and_streams_live_events(cluster: Cluster, kube: lightkube.AsyncClient) -> None:
    first = await kube.create(configmap("before"), namespace="default")
    await kube.create(configmap("after"), namespace="default")
    seen: list[tuple[str, str]] = []

    async def consume() -> None:
        async for event_type, obj in kube.watch(
            ConfigMap, namespace="default", resource_version=first.metadata.resourceVersion
        ):
            seen.append((event_type, obj.metadata.name))
            if len(seen) == 2:
                return

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.1)
    await kube.delete(ConfigMap, "before", namespace="default")
    await asyncio.wait_for(task, timeout=5)
    assert seen == [("ADDED", "after"), ("DELETED", "before")]


async def test_watch_without_version_lists_then_streams(cluster: Cluster, kube: lightkube.AsyncClient) -> None:
    await kube.create(configmap("existing"), namespace="default")
    seen: list[tuple[str, str]] = []

    async def consume() -> None:
        async for event_type, obj in kube.watch(ConfigMap, namespace="default"):
            seen.append((event_type, obj.metadata.name))
            if len(seen) == 2:
                return

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.1)
    await kube.create(configmap("live"), namespace="default")
    await asyncio.wait_for(task, timeout=5)
    assert seen == [("ADDED", "existing"), ("ADDED", "live")]


async def test_watch_from_a_compacted_version_is_410_gone(cluster: Cluster) -> None:
    cluster.emulator.history_limit = 2
    for index in range(4):
        cluster.emulator.create_object("v1/configmaps", {"metadata": {"name": f"c{index}"}}, namespace="default")
    events = await _watch(cluster, "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=2")
    assert events[0]["type"] == "ERROR" and events[0]["object"]["code"] == 410


async def _watch(cluster: Cluster, path: str) -> list[dict[str, Any]]:
    events = []
    async with aiohttp.ClientSession() as session, session.get(cluster.url + path) as response:
        assert response.status == 200
        async for line in response.content:
            if line.strip():
                events.append(json.loads(line))
    return events


async def test_scale_subresource(cluster: Cluster, kube: lightkube.AsyncClient) -> None:
    await kube.create(widget("a", replicas=2), namespace="default")
    await kube.patch(
        Widget.Status,
        "a",
        {"status": {"replicas": 1, "selector": "app=a"}},
        namespace="default",
        patch_type=PatchType.MERGE,
    )
    code, scale = await raw(cluster, "GET", WIDGET_PATH + "/a/scale")
    assert code == 200 and scale["kind"] == "Scale"
    assert (scale["spec"], scale["status"]) == ({"replicas": 2}, {"replicas": 1, "selector": "app=a"})
    code, scaled = await raw(
        cluster, "PATCH", WIDGET_PATH + "/a/scale", {"spec": {"replicas": 5}}, "application/merge-patch+json"
    )
    assert code == 200 and scaled["spec"]["replicas"] == 5
    after = await kube.get(Widget, "a", namespace="default")
    assert after.spec["replicas"] == 5 and after.metadata.generation == 2
    code, status = await raw(
        cluster, "PATCH", WIDGET_PATH + "/a/scale", {"spec": {"replicas": -1}}, "application/merge-patch+json"
    )
    assert (code, status["reason"]) == (422, "Invalid")


async def test_scale_of_a_custom_resource_without_replicas(cluster: Cluster, kube: lightkube.AsyncClient) -> None:
    """As the API server's: no Scale to read until the spec replicas path holds a value; a patch that gives it one
    is the way to set it, conditional on the resourceVersion it carries."""
    created = await kube.create(widget("b"), namespace="default")
    code, status = await raw(cluster, "GET", WIDGET_PATH + "/b/scale")
    assert (code, status["reason"]) == (500, "InternalError")
    assert "spec.replicas" in status["message"] and "does not exist" in status["message"]
    code, status = await raw(
        cluster, "PATCH", WIDGET_PATH + "/b/scale", {"metadata": {"labels": {"x": "y"}}}, "application/merge-patch+json"
    )
    assert (code, status["reason"]) == (400, "BadRequest") and "cannot be empty" in status["message"]
    stale = {"metadata": {"resourceVersion": f"{created.metadata.resourceVersion}9"}, "spec": {"replicas": 3}}
    code, status = await raw(cluster, "PATCH", WIDGET_PATH + "/b/scale", stale, "application/merge-patch+json")
    assert (code, status["reason"]) == (409, "Conflict")
    current = {"metadata": {"resourceVersion": created.metadata.resourceVersion}, "spec": {"replicas": 3}}
    code, scaled = await raw(cluster, "PATCH", WIDGET_PATH + "/b/scale", current, "application/merge-patch+json")
    assert code == 200 and scaled["spec"]["replicas"] == 3
    assert (await kube.get(Widget, "b", namespace="default")).spec["replicas"] == 3


async def test_admission_hook_rejects_with_422(cluster: Cluster, widget_crd: dict[str, Any]) -> None:
    cluster.emulator.set_admission(WIDGETS, schema_admission(widget_crd))
    body = {"apiVersion": "sim.example.com/v1", "kind": "Widget", "metadata": {"name": "a"}, "spec": {"replicas": -3}}
    code, status = await raw(cluster, "POST", WIDGET_PATH, body)
    assert (code, status["reason"], status["kind"]) == (422, "Invalid", "Status")
    assert status["message"].startswith('Widget.sim.example.com "a" is invalid: spec.replicas')
    body["spec"]["replicas"] = 1
    assert (await raw(cluster, "POST", WIDGET_PATH, body))[0] == 201


async def test_requests_are_logged(cluster: Cluster, kube: lightkube.AsyncClient) -> None:
    cluster.requests.clear()
    await kube.create(configmap("a"), namespace="default")
    await kube.get(ConfigMap, "a", namespace="default")
    [_ async for _ in kube.list(Namespace)]
    await kube.patch(ConfigMap, "a", {"data": {"x": "y"}}, namespace="default", patch_type=PatchType.MERGE)
    await kube.delete(ConfigMap, "a", namespace="default")
    log = [(r.verb, r.resource, r.namespace, r.name) for r in cluster.requests]
    assert log == [
        ("create", "configmaps", "default", None),
        ("get", "configmaps", "default", "a"),
        ("list", "namespaces", None, None),
        ("patch", "configmaps", "default", "a"),
        ("delete", "configmaps", "default", "a"),
    ]
    assert all(r.user_agent for r in cluster.requests)
    assert [r.is_write for r in cluster.requests] == [True, False, False, True, True]


async def test_crd_created_over_the_api_is_served(cluster: Cluster, widget_crd: dict[str, Any]) -> None:
    crd = json.loads(json.dumps(widget_crd).replace("widget", "gadget").replace("Widget", "Gadget"))
    code, stored = await raw(cluster, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    assert code == 201
    assert {c["type"] for c in stored["status"]["conditions"]} == {"Established", "NamesAccepted"}
    code, _ = await raw(cluster, "GET", "/apis/sim.example.com/v1/namespaces/default/gadgets")
    assert code == 200


async def test_a_fault_refuses_a_request_or_loses_the_reply_of_one_that_happened(cluster: Cluster) -> None:
    emulator = cluster.emulator
    overloaded = Fault(429, "TooManyRequests", "the server has received too many requests", retry_after=2)
    lost = Fault(504, "Timeout", "the server was unable to return a response in the time allotted", after=True)
    chosen = {"a": overloaded, "b": lost}
    emulator.set_faults(lambda record, body: chosen.get(json.loads(body)["metadata"]["name"]) if body else None)
    path = "/api/v1/namespaces/default/configmaps"
    async with aiohttp.ClientSession() as session:
        async with session.post(cluster.url + path, json={"metadata": {"name": "a"}}) as response:
            assert response.status == 429 and response.headers["Retry-After"] == "2"
            throttled = await response.json()
            assert throttled["reason"] == "TooManyRequests" and throttled["details"] == {"retryAfterSeconds": 2}
        async with session.post(cluster.url + path, json={"metadata": {"name": "b"}}) as response:
            assert response.status == 504 and (await response.json())["reason"] == "Timeout"
    assert emulator.get_object("v1/configmaps", "default", "a") is None, "refused: never written"
    assert emulator.get_object("v1/configmaps", "default", "b") is not None, "written, only the reply was lost"
    assert [(r.verb, r.code, r.fault) for r in emulator.requests_log[-2:]] == [
        ("create", 429, overloaded),
        ("create", 504, lost),
    ]

    emulator.set_faults(None)
    assert (await raw(cluster, "POST", path, {"metadata": {"name": "a"}}))[0] == 201
    assert emulator.requests_log[-1].fault is None


async def test_a_reset_closes_the_connection_without_an_answer_before_or_after_serving(cluster: Cluster) -> None:
    emulator = cluster.emulator
    chosen = {"a": Fault.reset(), "b": Fault.reset(after=True)}
    emulator.set_faults(lambda record, body: chosen.get(json.loads(body)["metadata"]["name"]) if body else None)
    path = "/api/v1/namespaces/default/configmaps"
    for name in ("a", "b"):
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ServerDisconnectedError):
                await session.post(cluster.url + path, json={"metadata": {"name": name}})
    assert emulator.get_object("v1/configmaps", "default", "a") is None, "dropped before it was served"
    assert emulator.get_object("v1/configmaps", "default", "b") is not None, "served, and only the reply dropped"
    assert [(r.code, r.fault) for r in emulator.requests_log[-2:]] == [(0, chosen["a"]), (0, chosen["b"])]
    emulator.set_faults(None)
    assert (await raw(cluster, "GET", path + "/b"))[0] == 200, "the server goes on serving"


async def test_a_slow_fault_answers_late_while_other_requests_are_served(cluster: Cluster) -> None:
    emulator = cluster.emulator
    webhook = Fault(500, "InternalError", 'failed calling webhook "policy.example.com": context deadline exceeded',
                    delay=0.5)  # fmt: skip
    emulator.set_faults(lambda record, body: webhook if body and json.loads(body)["metadata"]["name"] == "a" else None)
    path = "/api/v1/namespaces/default/configmaps"
    loop = asyncio.get_running_loop()
    started = loop.time()
    slow = asyncio.create_task(raw(cluster, "POST", path, {"metadata": {"name": "a"}}))
    await asyncio.sleep(0.05)
    assert (await raw(cluster, "POST", path, {"metadata": {"name": "b"}}))[0] == 201
    assert loop.time() - started < 0.4, "served while the slow request waited"
    assert not slow.done()
    status, body = await slow
    assert loop.time() - started >= 0.5
    assert (status, body["reason"]) == (500, "InternalError") and "failed calling webhook" in body["message"]
    assert emulator.get_object("v1/configmaps", "default", "a") is None


async def test_an_authorizer_refuses_what_it_does_not_allow_in_the_api_servers_words(cluster: Cluster) -> None:
    emulator = cluster.emulator
    emulator.create_object("v1/configmaps", {"metadata": {"name": "a"}}, namespace="default")
    emulator.set_authorizer(lambda record: record.verb != "get")
    path = "/api/v1/namespaces/default/configmaps"
    status, body = await raw(cluster, "GET", path + "/a")
    assert (status, body["reason"]) == (403, "Forbidden")
    assert body["message"].startswith('configmaps "a" is forbidden: ') and 'cannot get resource "configmaps"' in body[
        "message"
    ] and 'in the namespace "default"' in body["message"]  # fmt: skip
    assert emulator.requests_log[-1].code == 403
    assert (await raw(cluster, "GET", path))[0] == 200, "a list is allowed"
    emulator.set_authorizer(None)
    assert (await raw(cluster, "GET", path + "/a"))[0] == 200


async def test_a_watch_can_be_refused_but_not_answered_late(cluster: Cluster) -> None:
    emulator = cluster.emulator
    late = Fault(503, "ServiceUnavailable", "leader changed", after=True)
    emulator.set_faults(lambda record, _: late if record.verb == "watch" else None)
    emulator.create_object("v1/configmaps", {"metadata": {"name": "a"}}, namespace="default")
    events = await _watch(cluster, "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=1")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "a")]
    assert emulator.requests_log[-1].fault is None
    emulator.set_faults(lambda record, _: Fault(503, "ServiceUnavailable", "leader changed"))
    status, body = await raw(cluster, "GET", "/api/v1/namespaces/default/configmaps?watch=true")
    assert (status, body["reason"]) == (503, "ServiceUnavailable")


async def test_cut_watches_end_the_streams_and_a_watch_resumes_where_it_was(cluster: Cluster) -> None:
    emulator = cluster.emulator
    start = emulator.resource_version
    path = f"/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={start}"
    first = asyncio.create_task(_watch(cluster, path))
    await asyncio.sleep(0.2)
    emulator.create_object("v1/configmaps", {"metadata": {"name": "a"}}, namespace="default")
    await asyncio.sleep(0.1)
    emulator.cut_watches()
    events = await asyncio.wait_for(first, timeout=5)
    assert [e["object"]["metadata"]["name"] for e in events] == ["a"]
    emulator.create_object("v1/configmaps", {"metadata": {"name": "b"}}, namespace="default")
    resumed = events[-1]["object"]["metadata"]["resourceVersion"]
    again = await _watch(cluster, f"/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={resumed}"
                                  "&timeoutSeconds=1")  # fmt: skip
    assert [e["object"]["metadata"]["name"] for e in again] == ["b"]


async def test_cut_watches_of_one_resource_with_an_error_end_them_with_an_error_event(cluster: Cluster) -> None:
    emulator = cluster.emulator
    maps = asyncio.create_task(_watch(cluster, "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=2"))
    secrets = asyncio.create_task(_watch(cluster, "/api/v1/namespaces/default/secrets?watch=true&timeoutSeconds=2"))
    await asyncio.sleep(0.2)
    emulator.create_object("v1/configmaps", {"metadata": {"name": "a"}}, namespace="default")
    await asyncio.sleep(0.1)
    emulator.cut_watches("v1/configmaps", ApiError(500, "InternalError", "etcdserver: no leader"))
    events = await asyncio.wait_for(maps, timeout=1.5)  # at once, well before the stream's own timeout
    assert [e["type"] for e in events] == ["ADDED", "ERROR"]
    assert {k: events[-1]["object"][k] for k in ("kind", "code", "reason", "message")} == {
        "kind": "Status", "code": 500, "reason": "InternalError", "message": "etcdserver: no leader"
    }  # fmt: skip
    emulator.create_object("v1/secrets", {"metadata": {"name": "s"}}, namespace="default")
    others = await asyncio.wait_for(secrets, timeout=5)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in others] == [("ADDED", "s")], "other kinds run on"


async def test_compaction_makes_an_older_watch_410_gone_and_a_current_one_resume(cluster: Cluster) -> None:
    emulator = cluster.emulator
    emulator.create_object("v1/configmaps", {"metadata": {"name": "a"}}, namespace="default")
    old = emulator.resource_version
    emulator.create_object("v1/configmaps", {"metadata": {"name": "b"}}, namespace="default")
    emulator.compact()
    gone = await _watch(cluster, f"/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={old}")
    assert gone[0]["type"] == "ERROR" and gone[0]["object"]["code"] == 410
    current = emulator.resource_version
    emulator.create_object("v1/configmaps", {"metadata": {"name": "c"}}, namespace="default")
    events = await _watch(
        cluster, f"/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={current}&timeoutSeconds=1"
    )
    assert [e["object"]["metadata"]["name"] for e in events] == ["c"]


async def test_fields_of_a_disabled_feature_gate_are_dropped_unless_already_stored(
    cluster: Cluster, kube: lightkube.AsyncClient
) -> None:
    """As the API server's dropDisabledFields: a write drops the field, unless the object it replaces has it."""
    emulator = cluster.emulator
    emulator.disable_fields(WIDGETS, "spec.extra.gated")
    created = await kube.create(widget("a", size="s", extra={"gated": 1, "other": 2}), namespace="default")
    assert created.spec == {"size": "s", "extra": {"other": 2}}, "dropped on create"
    applied = emulator.patch_object(
        WIDGETS, "default", "a",
        {"apiVersion": "sim.example.com/v1", "kind": "Widget", "metadata": {"name": "a"},
         "spec": {"size": "m", "extra": {"gated": 3}}},
        patch_type="apply", manager="op",
    )  # fmt: skip
    assert applied["spec"] == {"size": "m", "extra": {"other": 2}}, "dropped on server-side apply"

    emulator.create_object(WIDGETS, {"metadata": {"name": "b", "namespace": "default"}, "spec": {"size": "s"}})
    emulator._store[emulator._key(emulator.resource_type(WIDGETS), "default", "b")]["spec"]["extra"] = {"gated": 1}
    patched = await kube.patch(Widget, "b", {"spec": {"extra": {"gated": 5}}}, namespace="default",
                               patch_type=PatchType.MERGE)  # fmt: skip
    assert patched.spec["extra"] == {"gated": 5}, "stored while the gate was on: kept and updatable"
