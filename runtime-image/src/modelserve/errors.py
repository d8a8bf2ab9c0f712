"""Error types of the runtime: each carries the HTTP status it maps to, or the exit code of a command."""

# Names say what happened (SourceNotFound, Overloaded), as the errors of an HTTP API do, not "...Error".
# ruff: noqa: N818

from __future__ import annotations


class ModelServeError(Exception):
    """Base class of every error the runtime raises on purpose."""

    status: int = 500
    exit_code: int = 1


# ---- fetching a model: distinct exit codes so an init container's failure says what went wrong ----


class FetchError(ModelServeError):
    """A model artifact could not be fetched (I/O or transport failure)."""

    exit_code = 7


class SourceNotFound(FetchError):
    exit_code = 3


class SourceForbidden(FetchError):
    exit_code = 4


class DigestMismatch(FetchError):
    exit_code = 5


class UnsupportedScheme(FetchError):
    exit_code = 6


class MissingDependency(FetchError):
    """An optional package needed for this source is not installed."""

    exit_code = 8


class SignatureInvalid(FetchError):
    """The artifact's Sigstore signature is missing, malformed or does not satisfy the policy."""

    exit_code = 9


# ---- loading a model ----


class ModelLoadError(ModelServeError):
    """The model directory does not hold a model this runtime can load."""

    exit_code = 10


class UnsafeFormat(ModelLoadError):
    """The artifact needs pickle to load; refused because unpickling can run arbitrary code."""

    exit_code = 11


# ---- serving: every error here becomes a JSON body {"error": "..."} with this status ----


class RequestError(ModelServeError):
    """The client sent something wrong (4xx)."""

    status = 400


class ModelNotFound(RequestError):
    status = 404


class MethodNotAllowed(RequestError):
    status = 405


class PayloadTooLarge(RequestError):
    status = 413


class BodyTimeout(RequestError):
    """The request body stopped arriving: no byte of it for `--body-timeout-seconds`."""

    status = 408


class Overloaded(ModelServeError):
    """The queue is full: the client should retry later (503 with Retry-After)."""

    status = 503


class NotReady(ModelServeError):
    status = 503


class DeadlineExceeded(ModelServeError):
    """The request's deadline passed before a result was ready."""

    status = 504


class InferenceFailed(ModelServeError):
    """The model raised while running a batch."""

    status = 500


class DeviceFailed(InferenceFailed):
    """The accelerator reported an error that leaves it unusable; readiness fails from now on."""
