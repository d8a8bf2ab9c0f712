"""The RouteProxy end to end over HTTP: an emulated HTTPRoute, Services and pods, and two tiny upstream servers."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import aiohttp.web
import pytest

from modeldeploy.sim.emulator import ClusterEmulator
from modeldeploy.sim.proxy import BACKEND_HEADER, POD_HEADER, REVISION_HEADER, RouteProxy
from modeldeploy.sim.resources import standard_resources

ROUTES = "gateway.networking.k8s.io/v1/httproutes"


def pod(name: str, revision: str, *, ready: bool = True) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ml",
                     "labels": {"modeldeploy.io/model-deployment": "iris", "modeldeploy.io/revision": revision}},
        "spec": {"containers": [{"name": "model-server"}]},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }  # fmt: skip


def service(name: str, revision: str) -> dict[str, Any]:
    selector = {"modeldeploy.io/model-deployment": "iris", "modeldeploy.io/revision": revision}
    return {"metadata": {"name": name, "namespace": "ml"}, "spec": {"selector": selector, "ports": [{"port": 80}]}}


def http_route(rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"metadata": {"name": "iris", "namespace": "ml"}, "spec": {"parentRefs": [{"name": "gw"}], "rules": rules}}


def refs(*pairs: tuple[str, int]) -> list[dict[str, Any]]:
    return [{"name": name, "port": 80, "weight": weight} for name, weight in pairs]


@pytest.fixture
async def upstreams() -> AsyncIterator[dict[str, int]]:
    """Two servers answering their own name: pod name -> port."""
    runners, ports = [], {}
    for name in ("a-1", "b-1"):

        async def answer(request: aiohttp.web.Request, who: str = name) -> aiohttp.web.Response:
            return aiohttp.web.Response(text=f"{who} {request.headers.get('X-Canary', '-')}")

        app = aiohttp.web.Application()
        app.router.add_route("*", "/{tail:.*}", answer)
        runner = aiohttp.web.AppRunner(app, access_log=None)
        await runner.setup()
        site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        ports[name] = runner.addresses[0][1]
    yield ports
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
def emulator() -> ClusterEmulator:
    emulator = ClusterEmulator()
    emulator.register(*standard_resources())
    emulator.create_object("v1/namespaces", {"metadata": {"name": "ml"}})
    for name, revision in (("iris-a", "a"), ("iris-b", "b")):
        emulator.create_object("v1/services", service(name, revision))
    for body in (pod("a-1", "a"), pod("b-1", "b"), pod("b-2", "b", ready=False)):
        created = emulator.create_object("v1/pods", {k: v for k, v in body.items() if k != "status"})
        emulator.update_object("v1/pods", {**created, "status": body["status"]}, subresource="status")
    return emulator


async def send(url: str, count: int, headers: dict[str, str] | None = None) -> list[tuple[int, str, str, str]]:
    out = []
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            async with session.post(f"{url}/v2/models/iris/infer", data=b"{}", headers=headers) as response:
                out.append((response.status, response.headers.get(REVISION_HEADER, ""),
                            response.headers.get(BACKEND_HEADER, ""), await response.text()))  # fmt: skip
    return out


async def test_weights_header_matches_and_failures_follow_the_route(
    emulator: ClusterEmulator, upstreams: dict[str, int]
) -> None:
    proxy = RouteProxy(emulator, "ml", "iris", lambda p: ("127.0.0.1", upstreams[p["metadata"]["name"]]))
    url = await proxy.start()
    try:
        # No route yet: 404, like a Gateway with nothing attached for this host.
        assert {r[0] for r in await send(url, 2)} == {404}
        header_rule = {"matches": [{"headers": [{"name": "X-Canary", "value": "always"}]}],
                       "backendRefs": refs(("iris-b", 1))}  # fmt: skip
        emulator.create_object(ROUTES, http_route([header_rule, {"backendRefs": refs(("iris-a", 75), ("iris-b", 25))}]))
        answers = await send(url, 40)
        assert Counter(r[1] for r in answers) == {"a": 30, "b": 10}
        assert all(r[0] == 200 and r[2] == f"iris-{r[1]}" for r in answers)
        assert {r[3] for r in answers} == {"a-1 -", "b-1 -"}, "the unready pod b-2 gets nothing"
        tagged = await send(url, 10, {"X-Canary": "always"})
        assert {(r[1], r[3]) for r in tagged} == {("b", "b-1 always")}, "headers are forwarded upstream"

        # A backend Service that does not exist: its share (and only its share) answers 500.
        emulator.patch_object(ROUTES, "ml", "iris", {"spec": {"rules": [
            {"backendRefs": refs(("iris-a", 50), ("iris-gone", 50))}]}})  # fmt: skip
        answers = await send(url, 20)
        assert Counter(r[0] for r in answers) == {200: 10, 500: 10}
        assert proxy.invalid_backend == 10

        # A valid Service without ready endpoints: 503 for its share. Weight 0: never chosen.
        unready = {"status": {"conditions": [{"type": "Ready", "status": "False"}]}}
        emulator.patch_object("v1/pods", "ml", "b-1", unready, subresource="status")
        emulator.patch_object(ROUTES, "ml", "iris", {"spec": {"rules": [
            {"backendRefs": refs(("iris-a", 1), ("iris-b", 1))}]}})  # fmt: skip
        assert Counter(r[0] for r in await send(url, 10)) == {200: 5, 503: 5}
        emulator.patch_object(ROUTES, "ml", "iris", {"spec": {"rules": [
            {"backendRefs": refs(("iris-a", 100), ("iris-b", 0))}]}})  # fmt: skip
        assert {r[0] for r in await send(url, 10)} == {200}
        emulator.patch_object(ROUTES, "ml", "iris", {"spec": {"rules": [{"backendRefs": refs(("iris-a", 0))}]}})
        assert {r[0] for r in await send(url, 2)} == {500}

        # A malformed route is answered with a clear 500, not a crash.
        emulator.patch_object(ROUTES, "ml", "iris", {"spec": {"rules": [{"backendRefs": [{"name": "iris-a",
                              "port": 80, "weight": "lots"}]}]}})  # fmt: skip
        status, _, _, text = (await send(url, 1))[0]
        assert status == 500 and "malformed" in text
        assert proxy.served == Counter({"iris-a": 30 + 10 + 5 + 10, "iris-b": 10 + 10})
    finally:
        await proxy.close()


async def test_responses_name_the_pod(emulator: ClusterEmulator, upstreams: dict[str, int]) -> None:
    emulator.create_object(ROUTES, http_route([{"backendRefs": refs(("iris-a", 1))}]))
    proxy = RouteProxy(emulator, "ml", "iris", lambda p: ("127.0.0.1", upstreams[p["metadata"]["name"]]))
    url = await proxy.start()
    try:
        async with aiohttp.ClientSession() as session, session.get(f"{url}/v2/health/ready") as response:
            assert response.status == 200
            assert response.headers[POD_HEADER] == "a-1" and response.headers[REVISION_HEADER] == "a"
    finally:
        await proxy.close()


async def test_a_request_mirror_copies_its_share_and_drops_the_answers(
    emulator: ClusterEmulator, upstreams: dict[str, int]
) -> None:
    proxy = RouteProxy(emulator, "ml", "iris", lambda p: ("127.0.0.1", upstreams[p["metadata"]["name"]]))
    url = await proxy.start()
    mirror = {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "iris-b", "port": 80}, "percent": 25}}
    try:
        emulator.create_object(ROUTES, http_route([{"filters": [mirror],
                                                    "backendRefs": refs(("iris-a", 100), ("iris-b", 0))}]))  # fmt: skip
        answers = await send(url, 40)
        assert {(r[0], r[3]) for r in answers} == {(200, "a-1 -")}, "clients only ever get the served backend's answer"
        await proxy.close()  # waits for the copies still in flight
        assert proxy.served == {"iris-a": 40} and proxy.mirrored == {"iris-b": 10} and not proxy.mirror_failed

        # A copy that cannot be delivered (no such Service) costs the client nothing; without percent: every request.
        gone = {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "iris-gone", "port": 80}}}
        emulator.patch_object(ROUTES, "ml", "iris", {"spec": {"rules": [
            {"filters": [gone], "backendRefs": refs(("iris-a", 1))}]}})  # fmt: skip
        url = await proxy.start()
        assert {r[0] for r in await send(url, 8)} == {200}
        await proxy.close()
        assert proxy.mirror_failed == {"iris-gone": 8}
    finally:
        await proxy.close()
