"""Fetching a model artifact into the model directory (the operator's init container runs this).

Sources: plain paths and file://, http(s):// (streamed), s3:// (boto3, standard credential chain including
web identity; AWS_ENDPOINT_URL for S3-compatible stores), gs:// (google-cloud-storage, optional).
A URI ending in "/" (or a local directory) is a prefix: every object below it is fetched, keeping relative
paths. Every file is written to a temporary name in the destination and renamed into place atomically,
after its sha256 (when given) has been verified.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

import httpx

from modelserve.errors import (
    DigestMismatch,
    FetchError,
    MissingDependency,
    SignatureInvalid,
    SourceForbidden,
    SourceNotFound,
    UnsupportedScheme,
)
from modelserve.provenance import SignaturePolicy, verify_artifact

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
SCHEMES = ("file", "http", "https", "s3", "gs")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


class FetchUsageError(FetchError):
    exit_code = 2


@dataclass(frozen=True, slots=True)
class Fetched:
    path: Path
    sha256: str
    size: int


def fetch(
    uri: str,
    dest: Path,
    sha256: str | None = None,
    timeout: float = 300.0,
    signature: SignaturePolicy | None = None,
) -> list[Fetched]:
    """Fetch `uri` into directory `dest`; returns what was written. Raises a FetchError subclass.
    With `signature`, the artifact (a single file) and its Sigstore bundle are fetched into a hidden
    staging directory inside `dest`, verified, and only then renamed into place."""
    if sha256 is not None and not _HEX64.match(sha256):
        raise FetchUsageError(f"--sha256 must be 64 hex characters, got {sha256!r}")
    if signature is not None:
        return _fetch_verified(uri, dest, sha256, timeout, signature)
    return _fetch(uri, dest, sha256, timeout)


def _fetch_verified(uri: str, dest: Path, sha256: str | None, timeout: float, policy: SignaturePolicy) -> list[Fetched]:
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".verify-", dir=dest))
    try:
        fetched = _fetch(uri, staging / "artifact", sha256, timeout)
        if len(fetched) != 1:
            raise FetchUsageError(
                f"signature verification applies to a single file, but {uri} is a directory or prefix"
            )
        artifact = fetched[0]
        bundle_uri = policy.bundle_uri(uri)
        try:
            bundles = _fetch(bundle_uri, staging / "bundle", None, timeout)
        except SourceNotFound:
            raise SignatureInvalid(f"no signature bundle at {bundle_uri}") from None
        if len(bundles) != 1:
            raise SignatureInvalid(f"signature bundle {bundle_uri} must be a single file")
        verify_artifact(artifact.sha256, bundles[0].path, policy, artifact.path.name)
        target = dest / artifact.path.name
        artifact.path.replace(target)
        return [Fetched(target, artifact.sha256, artifact.size)]
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _fetch(uri: str, dest: Path, sha256: str | None, timeout: float) -> list[Fetched]:
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if len(scheme) == 1:  # a Windows drive letter is not a scheme; treat as a path
        scheme = ""
    dest.mkdir(parents=True, exist_ok=True)
    if scheme in ("", "file"):
        path = Path(unquote(parts.path) if scheme == "file" else uri)
        return _fetch_local(path, dest, sha256)
    if scheme in ("http", "https"):
        return [_fetch_http(uri, dest, sha256, timeout)]
    if scheme == "s3":
        return _fetch_s3(parts.netloc, parts.path.lstrip("/"), dest, sha256, timeout)
    if scheme == "gs":
        return _fetch_gcs(parts.netloc, parts.path.lstrip("/"), dest, sha256)
    raise UnsupportedScheme(f"unsupported URI scheme {scheme!r} in {uri!r}; supported: {', '.join(SCHEMES)}")


# ---- writing ----


def write_atomically(chunks: Iterable[bytes], target: Path, sha256: str | None) -> Fetched:
    """Stream chunks to a temporary file next to `target`, verify, fsync, then rename into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if sha256 is not None and actual != sha256.lower():
            raise DigestMismatch(f"sha256 of {target.name} is {actual}, expected {sha256.lower()}")
        tmp.chmod(0o644)
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.info("Fetched %s (%d bytes, sha256 %s)", target, size, actual)
    return Fetched(target, actual, size)


def _read_chunks(fh: BinaryIO) -> Iterator[bytes]:
    while chunk := fh.read(CHUNK):
        yield chunk


def _single_only(sha256: str | None, uri: str) -> None:
    if sha256 is not None:
        raise FetchUsageError(f"--sha256 applies to a single file, but {uri} is a directory or prefix")


def _safe_relative(key: str, prefix: str) -> PurePosixPath:
    rel = PurePosixPath(key[len(prefix) :].lstrip("/"))
    if not rel.parts or ".." in rel.parts or rel.is_absolute():
        raise FetchError(f"refusing object key {key!r}: it would be written outside the destination")
    return rel


# ---- local paths (also PVC mounts) ----


def _fetch_local(path: Path, dest: Path, sha256: str | None) -> list[Fetched]:
    try:
        if path.is_dir():
            _single_only(sha256, str(path))
            files = sorted(p for p in path.rglob("*") if p.is_file())
            results = []
            for f in files:
                rel = f.relative_to(path)
                with f.open("rb") as fh:
                    results.append(write_atomically(_read_chunks(fh), dest / rel, None))
            return results
        with path.open("rb") as fh:
            return [write_atomically(_read_chunks(fh), dest / path.name, sha256)]
    except FileNotFoundError:
        raise SourceNotFound(f"{path} does not exist") from None
    except PermissionError as exc:
        raise SourceForbidden(f"permission denied reading {exc.filename or path}") from None
    except IsADirectoryError:
        raise FetchError(f"{path} is a directory") from None


# ---- http(s) ----


def _fetch_http(uri: str, dest: Path, sha256: str | None, timeout: float) -> Fetched:
    name = PurePosixPath(unquote(urlsplit(uri).path)).name or "model"
    try:
        with (
            httpx.Client(follow_redirects=True, timeout=timeout) as client,
            client.stream("GET", uri) as response,
        ):
            if response.status_code == 404:
                raise SourceNotFound(f"{uri}: HTTP 404 not found")
            if response.status_code in (401, 403):
                raise SourceForbidden(f"{uri}: HTTP {response.status_code}: access denied")
            if response.status_code >= 400:
                raise FetchError(f"{uri}: HTTP {response.status_code}")
            return write_atomically(response.iter_bytes(CHUNK), dest / name, sha256)
    except httpx.HTTPError as exc:
        raise FetchError(f"{uri}: {type(exc).__name__}: {exc}") from None


# ---- s3 ----


def _s3_client(timeout: float) -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise MissingDependency("s3:// needs boto3: install modelserve[s3] (pip install 'modelserve[s3]')") from None
    return boto3.client(
        "s3", config=Config(connect_timeout=timeout, read_timeout=timeout, retries={"mode": "standard"})
    )


def _s3_error(exc: Exception, what: str) -> FetchError:
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    if code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound"):
        return SourceNotFound(f"{what}: not found ({code})")
    if code in ("403", "AccessDenied", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return SourceForbidden(f"{what}: access denied ({code})")
    return FetchError(f"{what}: {exc}")


def _fetch_s3(bucket: str, key: str, dest: Path, sha256: str | None, timeout: float) -> list[Fetched]:
    from botocore.exceptions import BotoCoreError, ClientError

    if not bucket:
        raise FetchUsageError("s3:// URI needs a bucket: s3://BUCKET/KEY")
    client = _s3_client(timeout)
    uri = f"s3://{bucket}/{key}"
    try:
        if key and not key.endswith("/"):
            try:
                return [_s3_get(client, bucket, key, dest / PurePosixPath(key).name, sha256)]
            except SourceNotFound:
                if not _s3_keys(client, bucket, key + "/"):
                    raise
                key += "/"
        keys = _s3_keys(client, bucket, key)
        if not keys:
            raise SourceNotFound(f"{uri}: no objects under this prefix")
        _single_only(sha256, uri)
        return [_s3_get(client, bucket, k, dest / _safe_relative(k, key), None) for k in keys]
    except ClientError as exc:
        raise _s3_error(exc, uri) from None
    except BotoCoreError as exc:
        raise FetchError(f"{uri}: {exc}") from None


def _s3_keys(client: Any, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", []) if not o["Key"].endswith("/"))
    return keys


def _s3_get(client: Any, bucket: str, key: str, target: Path, sha256: str | None) -> Fetched:
    from botocore.exceptions import ClientError

    try:
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
    except ClientError as exc:
        raise _s3_error(exc, f"s3://{bucket}/{key}") from None
    try:
        return write_atomically(body.iter_chunks(CHUNK), target, sha256)
    finally:
        body.close()


# ---- gcs ----


def _fetch_gcs(bucket_name: str, key: str, dest: Path, sha256: str | None) -> list[Fetched]:
    try:
        from google.api_core import exceptions as gexc
        from google.cloud import storage
    except ImportError:
        raise MissingDependency(
            "gs:// needs google-cloud-storage, which is not installed: pip install 'modelserve[gcs]'"
        ) from None
    uri = f"gs://{bucket_name}/{key}"
    try:
        bucket = storage.Client().bucket(bucket_name)
        blob = bucket.blob(key) if key and not key.endswith("/") else None
        if blob is not None and blob.exists():
            with blob.open("rb") as fh:
                return [write_atomically(_read_chunks(fh), dest / PurePosixPath(key).name, sha256)]
        prefix = key if not key or key.endswith("/") else key + "/"
        blobs = [b for b in bucket.list_blobs(prefix=prefix) if not b.name.endswith("/")]
        if not blobs:
            raise SourceNotFound(f"{uri}: not found")
        _single_only(sha256, uri)
        results = []
        for b in blobs:
            with b.open("rb") as fh:
                results.append(write_atomically(_read_chunks(fh), dest / _safe_relative(b.name, prefix), None))
        return results
    except gexc.NotFound:
        raise SourceNotFound(f"{uri}: not found") from None
    except gexc.Forbidden:
        raise SourceForbidden(f"{uri}: access denied") from None
    except gexc.GoogleAPIError as exc:
        raise FetchError(f"{uri}: {exc}") from None
