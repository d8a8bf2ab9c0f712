"""Caller authentication: bearer tokens read from a mounted Secret, as a pure ASGI wrapper.

Tokens come from a file holding one token per line (blank lines and lines starting with "#" ignored), or
from a directory whose regular files each hold one token, which is how a Kubernetes Secret volume mounts
its keys. Every token listed is valid at once, so a rotation can add the new token before removing the old.
The source is re-read when its identity changes (mtime, inode, size of the file or of the directory's
entries), checked at most once per `recheck_seconds`, so rotation needs no restart.

Health endpoints are always open (kubelet probes carry no token); `/metrics` is open unless `protect_metrics`.
Tokens are compared with `hmac.compare_digest` against every configured token, never short-circuiting, and
are never logged, also not in errors.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from modelserve.errors import ModelServeError

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})
METRICS_PATH = "/metrics"
_MAX_TOKEN_FILE_BYTES = 64 * 1024


class TokenSourceError(ModelServeError):
    """The token file or directory cannot be read, or holds no token (a usage error at start)."""

    exit_code = 2


def read_tokens(path: Path) -> tuple[bytes, ...]:
    """The tokens held by a file (one per line) or a directory (one per file, hidden entries skipped,
    except that Kubernetes' `..data` symlink is followed through the visible key names)."""
    try:
        if path.is_dir():
            tokens = [
                _read_small(entry).strip()
                for entry in sorted(path.iterdir())
                if not entry.name.startswith(".") and entry.is_file()
            ]
        else:
            lines = _read_small(path).splitlines()
            tokens = [line.strip() for line in lines if not line.strip().startswith(b"#")]
    except OSError as exc:
        raise TokenSourceError(f"cannot read tokens from {path}: {exc.strerror or type(exc).__name__}") from None
    found = tuple(t for t in tokens if t)
    if not found:
        raise TokenSourceError(f"no token found in {path}")
    for token in found:
        if any(c < 0x21 or c > 0x7E for c in token):
            # The message names the position only: the token itself must never reach a log.
            raise TokenSourceError(f"a token in {path} holds whitespace or non-printable characters")
    return found


def _read_small(path: Path) -> bytes:
    with path.open("rb") as fh:
        data = fh.read(_MAX_TOKEN_FILE_BYTES + 1)
    if len(data) > _MAX_TOKEN_FILE_BYTES:
        raise TokenSourceError(f"{path} is larger than {_MAX_TOKEN_FILE_BYTES} bytes; not a token file")
    return data


def _identity(path: Path) -> tuple[Any, ...]:
    """What changes when the Secret is rotated: the file's, or each entry's, (inode, mtime, size)."""
    st = path.stat()
    ident: list[Any] = [st.st_ino, st.st_mtime_ns, st.st_size]
    if path.is_dir():
        for entry in sorted(os.scandir(path), key=lambda e: e.name):
            try:
                s = entry.stat()  # follows the ..data symlinks a Secret volume uses
            except OSError:
                continue
            ident.append((entry.name, s.st_ino, s.st_mtime_ns, s.st_size))
    return tuple(ident)


class TokenStore:
    """The currently valid tokens, reloaded when the source changes. A failed reload keeps the last good
    set (a half-written rotation must not lock every caller out) and logs why, without token values."""

    def __init__(self, path: Path, recheck_seconds: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.path = path
        self._recheck = recheck_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = read_tokens(path)
        try:
            self._identity = _identity(path)
        except OSError as exc:
            raise TokenSourceError(f"cannot read tokens from {path}: {exc.strerror}") from None
        self._checked = clock()

    @property
    def tokens(self) -> tuple[bytes, ...]:
        now = self._clock()
        if now - self._checked >= self._recheck:
            self._checked = now
            self._maybe_reload()
        return self._tokens

    def _maybe_reload(self) -> None:
        with self._lock:
            try:
                ident = _identity(self.path)
                if ident == self._identity:
                    return
                tokens = read_tokens(self.path)
            except (OSError, TokenSourceError) as exc:
                log.warning("Keeping the previous auth tokens: %s", exc)
                return
            self._identity = ident
            self._tokens = tokens
            log.info("Reloaded %d auth token(s) from %s", len(tokens), self.path)

    def check(self, presented: bytes) -> bool:
        """Constant-time with respect to which token matched: every configured token is compared."""
        ok = False
        for token in self.tokens:
            ok |= hmac.compare_digest(presented, token)
        return ok


@dataclass(frozen=True, slots=True)
class Denial:
    """Why a request is refused: the status, the JSON error message and the WWW-Authenticate challenge."""

    status: int
    message: str

    @property
    def body(self) -> bytes:
        return orjson.dumps({"error": self.message})

    @property
    def challenge(self) -> bytes:
        if self.status == 401:
            return b'Bearer realm="modelserve"'
        return b'Bearer realm="modelserve", error="invalid_token"'


_MISSING = Denial(401, "missing or malformed Authorization header; expected 'Bearer <token>'")
_INVALID = Denial(403, "the bearer token is not valid for this server")


def authorize(store: TokenStore, authorization: bytes | None) -> Denial | None:
    """None when the `Authorization` header value carries a valid bearer token; the Denial otherwise."""
    token = _bearer(authorization)
    if token is None:
        return _MISSING
    if not store.check(token):
        return _INVALID
    return None


def _bearer(value: bytes | None) -> bytes | None:
    """The token of an `Authorization: Bearer <token>` header; None when absent or malformed."""
    if value is None:
        return None
    scheme, _, token = bytes(value).partition(b" ")
    token = token.strip()
    if scheme.lower() != b"bearer" or not token or b" " in token:
        return None
    return token


def _authorization(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return bytes(value)
    return None


async def _deny(send: Send, denial: Denial) -> None:
    body = denial.body
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"www-authenticate", denial.challenge),
    ]
    await send({"type": "http.response.start", "status": denial.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BearerAuth:
    """ASGI middleware: 401 without a well-formed bearer token, 403 with a wrong one, else the app."""

    def __init__(self, app: ASGIApp, store: TokenStore, protect_metrics: bool = False) -> None:
        self.app = app
        self.store = store
        self.open_paths = OPEN_PATHS if protect_metrics else OPEN_PATHS | {METRICS_PATH}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        denial = authorize(self.store, _authorization(scope))
        if denial is not None:
            await _deny(send, denial)
            return
        await self.app(scope, receive, send)
