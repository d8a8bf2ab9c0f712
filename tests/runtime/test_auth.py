"""Bearer-token authentication: token sources, rotation, status codes, exempt paths, no token in logs."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from modelserve.auth import BearerAuth, TokenSourceError, TokenStore, read_tokens

from .conftest import ClientFactory, v2_body

TOKEN_A = "tok-alpha-7f3c9e1b2d"
TOKEN_B = "tok-bravo-0a4d8c6e5f"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_tokens_from_a_file_one_per_line(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"# rotated 2026-11\n{TOKEN_A}\n\n  {TOKEN_B}  \n")
    assert read_tokens(path) == (TOKEN_A.encode(), TOKEN_B.encode())


def test_tokens_from_a_secret_volume_directory(tmp_path: Path) -> None:
    # The layout kubelet writes: keys are symlinks into ..data, which points at a timestamped directory.
    data = tmp_path / "..2026_11_22_06_00_00.1"
    data.mkdir()
    (data / "primary").write_text(TOKEN_A + "\n")
    (data / "secondary").write_text(TOKEN_B)
    (tmp_path / "..data").symlink_to(data.name)
    (tmp_path / "primary").symlink_to("..data/primary")
    (tmp_path / "secondary").symlink_to("..data/secondary")
    assert read_tokens(tmp_path) == (TOKEN_A.encode(), TOKEN_B.encode())


@pytest.mark.parametrize(
    ("content", "message"),
    [("", "no token"), ("# only a comment\n\n", "no token"), ("two words\n", "whitespace or non-printable")],
)
def test_bad_token_sources_are_refused_without_echoing_them(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "tokens"
    path.write_text(content)
    with pytest.raises(TokenSourceError, match=message) as exc:
        read_tokens(path)
    assert "two" not in str(exc.value) and exc.value.exit_code == 2
    with pytest.raises(TokenSourceError, match="cannot read"):
        read_tokens(tmp_path / "missing")


def test_rotation_is_picked_up_without_restart_and_checked_at_most_once_per_interval(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(TOKEN_A)
    now = [100.0]
    store = TokenStore(path, recheck_seconds=1.0, clock=lambda: now[0])
    assert store.check(TOKEN_A.encode()) and not store.check(TOKEN_B.encode())
    # Rotate through a rename, as kubelet does (new inode), keeping both tokens valid for a while.
    tmp = tmp_path / "tokens.new"
    tmp.write_text(f"{TOKEN_A}\n{TOKEN_B}\n")
    tmp.replace(path)
    now[0] += 0.5
    assert not store.check(TOKEN_B.encode())  # not re-checked yet: within the interval
    now[0] += 0.6
    assert store.check(TOKEN_B.encode()) and store.check(TOKEN_A.encode())
    path.write_text(TOKEN_B)  # in-place rewrite: mtime/size change
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    now[0] += 1.0
    assert store.check(TOKEN_B.encode()) and not store.check(TOKEN_A.encode())


def test_a_broken_rotation_keeps_the_last_good_tokens(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "tokens"
    path.write_text(TOKEN_A)
    now = [0.0]
    store = TokenStore(path, clock=lambda: now[0])
    path.write_text("")
    now[0] += 2
    with caplog.at_level(logging.WARNING, logger="modelserve.auth"):
        assert store.check(TOKEN_A.encode())
    assert "Keeping the previous auth tokens" in caplog.text
    path.unlink()
    now[0] += 2
    assert store.check(TOKEN_A.encode())


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(f"{TOKEN_A}\n{TOKEN_B}\n")
    return path


@pytest.fixture
def secured(models: dict[str, Path], make_client: ClientFactory, token_file: Path) -> TestClient:
    client = make_client(models["mlp"], auth_tokens_file=token_file, ready=False)
    deadline = time.monotonic() + 30
    while client.get("/v2/health/ready").status_code != 200:  # health needs no token
        assert time.monotonic() < deadline, "server never became ready"
        time.sleep(0.01)
    return client


def test_requests_without_a_valid_token_are_refused(secured: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    url = "/v2/models/mlp/infer"
    with caplog.at_level(logging.DEBUG):
        missing = secured.post(url, json=v2_body())
        malformed = secured.post(url, json=v2_body(), headers={"Authorization": f"Basic {TOKEN_A}"})
        wrong = secured.post(url, json=v2_body(), headers=bearer(TOKEN_A + "x"))
        near = secured.post(url, json=v2_body(), headers=bearer(TOKEN_A[:-1]))
    for response in (missing, malformed):
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "Authorization" in response.json()["error"]
    for response in (wrong, near):
        assert response.status_code == 403 and "not valid" in response.json()["error"]
        assert response.headers["content-type"] == "application/json"
    for response in (missing, malformed, wrong, near):
        assert TOKEN_A not in response.text and TOKEN_A[:-1] not in response.text
    assert TOKEN_A[:-1] not in caplog.text and TOKEN_B not in caplog.text


def test_every_configured_token_is_accepted(secured: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        for token in (TOKEN_A, TOKEN_B):
            response = secured.post("/v2/models/mlp/infer", json=v2_body(), headers=bearer(token))
            assert response.status_code == 200, response.text
        v1 = secured.post("/v1/models/mlp:predict", json={"instances": [[0.5] * 16]}, headers=bearer(TOKEN_B))
        assert v1.status_code == 200
        assert secured.get("/v2/models/mlp").status_code == 401
        assert secured.get("/v2/models/mlp", headers=bearer(TOKEN_A)).status_code == 200
    assert TOKEN_A not in caplog.text and TOKEN_B not in caplog.text


def test_health_is_always_open_and_metrics_open_by_default(secured: TestClient) -> None:
    assert secured.get("/v2/health/live").status_code == 200
    assert secured.get("/v2/health/ready").status_code == 200
    assert secured.get("/metrics").status_code == 200
    assert secured.get("/openapi.json").status_code == 401


def test_metrics_can_be_protected(models: dict[str, Path], make_client: ClientFactory, token_file: Path) -> None:
    client = make_client(models["mlp"], auth_tokens_file=token_file, auth_metrics=True, ready=False)
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=bearer("not-a-token")).status_code == 403
    response = client.get("/metrics", headers=bearer(TOKEN_B))
    assert response.status_code == 200 and b"modelserve_requests_total" in response.content


def test_a_missing_token_file_stops_the_server_at_start(tmp_path: Path, models: dict[str, Path]) -> None:
    from modelserve import cli

    code = cli.main(["serve", "--model-dir", str(models["mlp"]), "--model-name", "mlp",
                     "--auth-tokens-file", str(tmp_path / "absent")])  # fmt: skip
    assert code == 2


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def test_authentication_overhead_is_microseconds(token_file: Path) -> None:
    """Per-request cost of the middleware on an accepted request, against the bare app (printed with -s)."""
    store = TokenStore(token_file)
    wrapped = BearerAuth(_ok, store)
    headers = [
        (b"host", b"x"),
        (b"content-type", b"application/json"),
        (b"authorization", f"Bearer {TOKEN_B}".encode()),
    ]
    scope = {"type": "http", "path": "/v2/models/mlp/infer", "headers": headers}
    statuses: list[int] = []

    async def receive() -> Any:
        return {"type": "http.request"}

    async def send(message: Any) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def timed(app: Any, n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            await app(scope, receive, send)
        return (time.perf_counter() - start) / n

    async def run() -> tuple[float, float]:
        n = 20_000
        await timed(wrapped, 1000)
        return min([await timed(_ok, n) for _ in range(3)]), min([await timed(wrapped, n) for _ in range(3)])

    bare, authed = asyncio.run(run())
    overhead_us = (authed - bare) * 1e6
    print(f"\nauth overhead: {overhead_us:.2f} us/request (bare {bare * 1e6:.2f} us, with auth {authed * 1e6:.2f} us)")
    assert set(statuses) == {200}
    assert overhead_us < 50  # generous bound on a shared CPU; measured at a few microseconds
