"""Analysis webhooks: checks of the user's own (an evaluation suite, a load test, a business metric), asked at every
measurement of an analysis run. Pure functions; ``modeldeploy.analysis.sources.check_webhooks`` makes the calls.

Each webhook gets a JSON ``POST`` (``payload``) naming the ModelDeployment, the revision being measured and its
ready pods, and answers with its status code (``judge``):

- 2xx passes;
- 408, 429 and 5xx say the check could not be made (the webhook is down, overloaded or timed out): the
  measurement could not be taken, as when a metric source is down, and counts against ``consecutiveErrorLimit``;
- anything else (3xx, which are not followed, and the other 4xx) fails: the webhook said no, or its URL is wrong.
  Either way the revision has not been shown to be good, and the stable keeps serving.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from modeldeploy.analysis import secretdata
from modeldeploy.rollout.config import WebhookSpec

PAYLOAD_VERSION = "modeldeploy.io/v1alpha1"
"""``apiVersion`` of the JSON a webhook receives; a field is only ever added to it within one version."""
MAX_DETAIL = 3
"""Failed webhooks described in a result; ``failures`` counts them all."""
MAX_DETAIL_TEXT = 300
"""Characters kept of each description (a status holds the latest measurements of its last 10 runs)."""
MAX_ANSWER_BYTES = 1024
"""Bytes of a webhook's answer read for the description; the rest is not read."""
UNAVAILABLE = frozenset({408, 429})
"""4xx answers that say the check was not made (a timeout, too many requests), like a 5xx."""

Judgement: TypeAlias = Literal["pass", "fail", "unavailable"]


@dataclass(frozen=True)
class WebhookResult:
    """The webhooks of one measurement: ``checks`` webhooks asked, ``failures`` of them said no; ``detail``
    describes the first few failures (name, status and the start of the answer)."""

    checks: int
    failures: int
    detail: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"checks": self.checks, "failures": self.failures}
        if self.detail:
            out["detail"] = list(self.detail)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> WebhookResult:
        """Inverse of ``to_dict``; raises ``ValueError`` (or ``KeyError``, ``TypeError``) on malformed data."""
        checks, failures = int(raw["checks"]), int(raw["failures"])
        if not 0 <= failures <= checks:
            raise ValueError(f"inconsistent webhook result {dict(raw)!r}")
        return cls(checks, failures, tuple(str(d) for d in raw.get("detail") or ()))


@dataclass(frozen=True)
class Target:
    """What a measurement checks: the revision and where its ready pods answer."""

    namespace: str
    name: str
    model: str
    revision: str
    stable_revision: str | None
    run_id: str
    measurement: int
    pods: Sequence[tuple[str, str, int]] = ()
    """Ready pods of the revision: (name, IP, port)."""


def payload(hook: WebhookSpec, target: Target) -> dict[str, Any]:
    """The JSON body ``hook`` is sent for ``target``."""
    return {
        "apiVersion": PAYLOAD_VERSION,
        "kind": "AnalysisWebhook",
        "webhook": hook.name,
        "modelDeployment": {"namespace": target.namespace, "name": target.name},
        "model": target.model,
        "revision": target.revision,
        "stableRevision": target.stable_revision,
        "analysisRun": target.run_id,
        "measurement": target.measurement,
        "pods": [{"name": name, "address": f"{ip}:{port}"} for name, ip, port in target.pods],
        "metadata": dict(hook.metadata),
    }


def judge(status: int) -> Judgement:
    """What an answer with HTTP ``status`` says about the revision (see the module's docstring)."""
    if 200 <= status < 300:
        return "pass"
    if status >= 500 or status in UNAVAILABLE:
        return "unavailable"
    return "fail"


_SPACE = re.compile(r"\s+")


def describe(hook: WebhookSpec, status: int, answer: bytes) -> str:
    """One line for a webhook's answer: its name, status and the start of what it said (control characters and
    runs of white space folded into one space)."""
    text = _SPACE.sub(" ", answer[:MAX_ANSWER_BYTES].decode("utf-8", errors="replace")).strip()
    text = "".join(c if c.isprintable() else "?" for c in text)
    line = f"webhook {hook.name!r} answered HTTP {status}" + (f": {text}" if text else "")
    return line[:MAX_DETAIL_TEXT]


def make_result(checks: int, failed: Sequence[str], unavailable: Sequence[str] = ()) -> WebhookResult:
    """The result of ``checks`` webhooks of which those described in ``failed`` said no; the description of those
    that could not be asked (``unavailable``) follows theirs in ``detail``."""
    return WebhookResult(checks, len(failed), tuple([*failed, *unavailable][:MAX_DETAIL]))


def assess(result: WebhookResult) -> tuple[bool, str]:
    """Whether the webhooks passed the measurement, and a note for its message."""
    if result.failures == 0:
        return True, f"webhooks: {result.checks} of {result.checks} passed"
    first = f" (first: {result.detail[0]})" if result.detail else ""
    return False, f"webhooks: {result.failures} of {result.checks} failed{first}"


def header_value(data: Mapping[str, object], key: str) -> str:
    """A webhook header's value from a Secret's ``data`` (base64 values): the key's value without surrounding
    whitespace (a trailing newline, as ``echo`` writes it). ``ValueError`` when the key is missing, or its value
    cannot be a header (not printable ASCII: a line break would end the header); messages never show the value."""
    if key not in data:
        raise ValueError(f"it has no key {key!r}")
    value = secretdata.decoded(data, key)
    if any(c < 0x20 or c > 0x7E for c in value) or len(value) > 4096:
        raise ValueError(f"the value of key {key!r} is not printable ASCII of at most 4096 characters")
    return value.decode("ascii")
