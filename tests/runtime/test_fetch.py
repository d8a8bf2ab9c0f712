from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from modelserve.errors import (
    DigestMismatch,
    MissingDependency,
    SourceForbidden,
    SourceNotFound,
    UnsupportedScheme,
)
from modelserve.fetch import FetchUsageError, fetch

PAYLOAD = b"model-bytes" * 1000
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/models/model.pt":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)
        elif self.path == "/secret/model.pt":
            self.send_response(403)
            self.end_headers()
        else:
            self.send_response(404)
            self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def http_base() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    mp = pytest.MonkeyPatch()
    for key, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        mp.setenv(key, value)
    client = boto3.client("s3")
    client.create_bucket(Bucket="models")
    client.put_object(Bucket="models", Key="iris/1/model.pt", Body=PAYLOAD)
    client.put_object(Bucket="models", Key="iris/1/modelserve.json", Body=b"{}")
    client.put_object(Bucket="models", Key="iris/1/sub/extra.txt", Body=b"x")
    yield endpoint
    mp.undo()
    server.stop()


def test_local_file_and_file_uri(tmp_path: Path) -> None:
    src = tmp_path / "src" / "model.pt"
    src.parent.mkdir()
    src.write_bytes(PAYLOAD)
    (fetched,) = fetch(str(src), tmp_path / "a", DIGEST)
    assert fetched.path.read_bytes() == PAYLOAD and fetched.sha256 == DIGEST
    (fetched,) = fetch(f"file://{src}", tmp_path / "b")
    assert fetched.path == tmp_path / "b" / "model.pt"


def test_local_directory_copies_the_tree(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "model.pt").write_bytes(PAYLOAD)
    (src / "sub" / "x.txt").write_text("x")
    fetch(str(src), tmp_path / "dest")
    assert (tmp_path / "dest" / "sub" / "x.txt").read_text() == "x"
    with pytest.raises(FetchUsageError, match="single file"):
        fetch(str(src), tmp_path / "dest2", DIGEST)


def test_local_errors_are_specific(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFound) as not_found:
        fetch(str(tmp_path / "missing.pt"), tmp_path / "d")
    assert not_found.value.exit_code == 3
    with pytest.raises(UnsupportedScheme, match="ftp") as scheme:
        fetch("ftp://host/model.pt", tmp_path / "d")
    assert scheme.value.exit_code == 6
    with pytest.raises(FetchUsageError, match="64 hex"):
        fetch(str(tmp_path), tmp_path / "d", "abc")


def test_digest_mismatch_leaves_nothing_behind(tmp_path: Path) -> None:
    src = tmp_path / "model.pt"
    src.write_bytes(PAYLOAD)
    dest = tmp_path / "dest"
    with pytest.raises(DigestMismatch, match="expected 000") as err:
        fetch(str(src), dest, "0" * 64)
    assert err.value.exit_code == 5
    assert list(dest.iterdir()) == []


def test_http_streams_and_verifies(tmp_path: Path, http_base: str) -> None:
    (fetched,) = fetch(f"{http_base}/models/model.pt", tmp_path, DIGEST)
    assert fetched.path.read_bytes() == PAYLOAD and fetched.size == len(PAYLOAD)
    with pytest.raises(SourceNotFound, match="404"):
        fetch(f"{http_base}/models/none.pt", tmp_path)
    with pytest.raises(SourceForbidden, match="403") as forbidden:
        fetch(f"{http_base}/secret/model.pt", tmp_path)
    assert forbidden.value.exit_code == 4
    with pytest.raises(DigestMismatch):
        fetch(f"{http_base}/models/model.pt", tmp_path / "other", "f" * 64)
    assert not (tmp_path / "other" / "model.pt").exists()


def test_s3_object_and_prefix(tmp_path: Path, s3: str) -> None:
    (fetched,) = fetch("s3://models/iris/1/model.pt", tmp_path / "one", DIGEST)
    assert fetched.path.read_bytes() == PAYLOAD
    fetch("s3://models/iris/1/", tmp_path / "all")
    assert sorted(str(p.relative_to(tmp_path / "all")) for p in (tmp_path / "all").rglob("*") if p.is_file()) == [
        "model.pt",
        "modelserve.json",
        "sub/extra.txt",
    ]
    fetch("s3://models/iris/1", tmp_path / "noslash")  # a prefix without the trailing slash
    assert (tmp_path / "noslash" / "model.pt").exists()


def test_s3_errors(tmp_path: Path, s3: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SourceNotFound):
        fetch("s3://models/iris/9/model.pt", tmp_path)
    with pytest.raises(SourceNotFound):
        fetch("s3://no-such-bucket/model.pt", tmp_path)
    with pytest.raises(DigestMismatch):
        fetch("s3://models/iris/1/model.pt", tmp_path, "0" * 64)


def test_gcs_without_the_library_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "google.cloud", None)
    with pytest.raises(MissingDependency, match="google-cloud-storage") as err:
        fetch("gs://bucket/model.pt", tmp_path)
    assert err.value.exit_code == 8
