"""Rollout progress as data: ``RolloutStatus`` and its JSON form in ``status.rollout`` / ``status.history``.

Everything the state machine needs to resume after a restart lives here (step index, weight, revision hashes,
timestamps, analysis results, handled control tokens). ``to_status()`` / ``from_status()`` round-trip exactly;
``from_status`` is tolerant: a missing or malformed field falls back to its default instead of failing, so a
damaged status can never wedge the operator.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeAlias, cast

from modeldeploy.analysis.criteria import Outcome
from modeldeploy.analysis.golden import GoldenResult
from modeldeploy.analysis.sample import Sample
from modeldeploy.analysis.webhooks import WebhookResult
from modeldeploy.types import as_items

Phase: TypeAlias = Literal[
    "Idle", "Progressing", "Paused", "Analyzing", "Promoting", "RollingBack", "RolledBack", "Completed"
]
PHASES: tuple[Phase, ...] = (
    "Idle",
    "Progressing",
    "Paused",
    "Analyzing",
    "Promoting",
    "RollingBack",
    "RolledBack",
    "Completed",
)
RunPhase: TypeAlias = Literal["Running", "Successful", "Failed", "Inconclusive"]
RUN_PHASES: tuple[RunPhase, ...] = ("Running", "Successful", "Failed", "Inconclusive")

MAX_ANALYSIS_RUNS = 10
"""Analysis runs kept in status (oldest dropped first)."""
MAX_REJECTED = 10
MEASUREMENTS_KEPT = 10
"""Measurements of one run kept in status: the latest ones, and the latest failed one when it is older (its
message says what broke; the rejection quotes it). The run's counts cover every measurement taken, so a long run
(``count`` up to 100) does not grow the object towards the API server's size limit."""
MAX_MESSAGE = 4096
"""Longest message written to status.rollout (longer ones are cut, so a status write is never rejected for it)."""
MAX_PREFLIGHT_MESSAGE = 1024


def clip(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` cut to ``limit`` characters, marked with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix, second precision, like Kubernetes timestamps."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: object) -> datetime | None:
    """Inverse of ``format_time``; ``None`` for anything that is not an RFC 3339 timestamp."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _truncate(moment: datetime | None) -> datetime | None:
    return parse_time(format_time(moment)) if moment is not None else None


@dataclass(frozen=True)
class HistoryEntry:
    """One revision that ran: ``templateRef`` names where its exact pod template inputs are kept."""

    revision: str
    number: int
    model_version: str = ""
    template_ref: str = ""
    created_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "revision": self.revision,
            "number": self.number,
            "modelVersion": self.model_version,
            "templateRef": self.template_ref,
        }
        if self.created_at is not None:
            out["createdAt"] = format_time(self.created_at)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> HistoryEntry | None:
        revision, number = raw.get("revision"), raw.get("number")
        if not isinstance(revision, str) or not revision or not isinstance(number, int) or isinstance(number, bool):
            return None
        return cls(
            revision=revision,
            number=number,
            model_version=str(raw.get("modelVersion") or ""),
            template_ref=str(raw.get("templateRef") or ""),
            created_at=parse_time(raw.get("createdAt")),
        )


@dataclass(frozen=True)
class Rejection:
    """A revision the operator will not roll out again until the spec moves to another revision."""

    revision: str
    reason: str
    message: str = ""
    at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"revision": self.revision, "reason": self.reason, "message": clip(self.message)}
        if self.at is not None:
            out["at"] = format_time(self.at)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Rejection | None:
        revision = raw.get("revision")
        if not isinstance(revision, str) or not revision:
            return None
        return cls(
            revision,
            str(raw.get("reason") or "Rejected"),
            str(raw.get("message") or ""),
            parse_time(raw.get("at")),
        )


@dataclass(frozen=True)
class MeasurementRecord:
    taken_at: datetime
    outcome: Outcome
    message: str
    canary: Sample
    stable: Sample | None = None
    golden: GoldenResult | None = None
    number: int = 0
    """Its place in the run, from 1; 0 when unknown (an older status: the run's position gives it)."""
    webhooks: WebhookResult | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "number": self.number,
            "takenAt": format_time(self.taken_at),
            "verdict": self.outcome,
            "message": clip(self.message),
            "canary": self.canary.to_dict(),
        }
        if self.stable is not None:
            out["stable"] = self.stable.to_dict()
        if self.golden is not None:
            out["golden"] = self.golden.to_dict()
        if self.webhooks is not None:
            out["webhooks"] = self.webhooks.to_dict()
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> MeasurementRecord | None:
        taken = parse_time(raw.get("takenAt"))
        outcome = raw.get("verdict")
        canary = raw.get("canary")
        if taken is None or outcome not in ("Pass", "Fail", "Inconclusive") or not isinstance(canary, Mapping):
            return None
        try:
            stable_raw = raw.get("stable")
            stable = Sample.from_dict(stable_raw) if isinstance(stable_raw, Mapping) else None
            golden_raw = raw.get("golden")
            golden = GoldenResult.from_dict(golden_raw) if isinstance(golden_raw, Mapping) else None
            hooks_raw = raw.get("webhooks")
            hooks = WebhookResult.from_dict(hooks_raw) if isinstance(hooks_raw, Mapping) else None
            return cls(
                taken,
                cast(Outcome, outcome),
                str(raw.get("message") or ""),
                Sample.from_dict(canary),
                stable,
                golden,
                _count(raw.get("number")),
                hooks,
            )
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True)
class AnalysisRun:
    """One analysis run: ``count`` measurements of ``revision``; ``gate`` says what it gates.

    ``passed``, ``failed`` and ``inconclusive`` count every measurement taken; ``measurements`` keeps only the
    latest (``MEASUREMENTS_KEPT``, see ``kept``). A run built with records and no counts (an older status, which
    kept them all) gets its counts and numbers from the records.
    """

    id: str
    revision: str
    gate: str
    """``step-N`` (canary step N), ``first-deploy`` or ``pre-promotion`` (BlueGreen)."""
    started_at: datetime
    phase: RunPhase = "Running"
    measurements: tuple[MeasurementRecord, ...] = ()
    message: str = ""
    consecutive_errors: int = 0
    """Measurements in a row that could not be taken (the metric source failed) since the last one taken."""
    last_error: str = ""
    """The metric source's error of the latest of those attempts."""
    last_error_at: datetime | None = None
    """When that attempt failed: the next attempt is due a retry interval after it."""
    passed: int = 0
    failed: int = 0
    inconclusive: int = 0

    def __post_init__(self) -> None:
        records = tuple(
            m if m.number > 0 else dataclasses.replace(m, number=i) for i, m in enumerate(self.measurements, 1)
        )
        for name, outcome in (("passed", "Pass"), ("failed", "Fail"), ("inconclusive", "Inconclusive")):
            listed = sum(1 for m in records if m.outcome == outcome)
            object.__setattr__(self, name, max(getattr(self, name), listed))
        object.__setattr__(self, "measurements", kept(records))

    @property
    def taken(self) -> int:
        """Measurements taken (those that could not be taken are not counted: see ``consecutive_errors``); never
        less than the highest number recorded, so a damaged count cannot number two measurements alike."""
        return max(self.passed + self.failed + self.inconclusive, *(m.number for m in self.measurements), 0)

    def record(self, measurement: MeasurementRecord) -> AnalysisRun:
        """This run with ``measurement`` taken as its next one (numbered, counted, the oldest records dropped)."""
        numbered = dataclasses.replace(measurement, number=self.taken + 1)
        return dataclasses.replace(
            self,
            measurements=(*self.measurements, numbered),
            passed=self.passed + (measurement.outcome == "Pass"),
            failed=self.failed + (measurement.outcome == "Fail"),
            inconclusive=self.inconclusive + (measurement.outcome == "Inconclusive"),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "revision": self.revision,
            "gate": self.gate,
            "startedAt": format_time(self.started_at),
            "phase": self.phase,
            "passed": self.passed,
            "failed": self.failed,
            "inconclusive": self.inconclusive,
            "measurements": [m.to_dict() for m in self.measurements],
            "message": clip(self.message),
        }
        if self.consecutive_errors:
            out["consecutiveErrors"] = self.consecutive_errors
        if self.last_error:
            out["lastError"] = self.last_error
        if self.last_error_at is not None:
            out["lastErrorAt"] = format_time(self.last_error_at)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> AnalysisRun | None:
        run_id, revision, started = raw.get("id"), raw.get("revision"), parse_time(raw.get("startedAt"))
        if not isinstance(run_id, str) or not isinstance(revision, str) or started is None:
            return None
        phase = raw.get("phase") if raw.get("phase") in RUN_PHASES else "Running"
        measurements = [
            m for m in (MeasurementRecord.from_dict(x) for x in as_items(raw.get("measurements"))) if m is not None
        ]
        return cls(
            id=run_id,
            revision=revision,
            gate=str(raw.get("gate") or ""),
            started_at=started,
            phase=cast(RunPhase, phase),
            measurements=tuple(measurements),
            message=str(raw.get("message") or ""),
            consecutive_errors=max(0, _int(raw.get("consecutiveErrors"))),  # absent (an older operator): none
            last_error=_text(raw.get("lastError")),
            last_error_at=parse_time(raw.get("lastErrorAt")),
            passed=_count(raw.get("passed")),  # absent (an older operator): counted from the records
            failed=_count(raw.get("failed")),
            inconclusive=_count(raw.get("inconclusive")),
        )


def kept(records: tuple[MeasurementRecord, ...]) -> tuple[MeasurementRecord, ...]:
    """The records status keeps of a run's, oldest first: the latest ``MEASUREMENTS_KEPT`` and, when it is older,
    the latest failed one."""
    if len(records) <= MEASUREMENTS_KEPT:
        return records
    latest = records[-MEASUREMENTS_KEPT:]
    failed = next((m for m in reversed(records) if m.outcome == "Fail"), None)
    return latest if failed is None or any(m is failed for m in latest) else (failed, *latest)


@dataclass(frozen=True)
class RollbackPin:
    """A manual rollback in force: run ``revision`` while the spec still resolves to ``spec_revision``."""

    number: int
    revision: str
    template_ref: str
    spec_revision: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "revision": self.revision,
            "templateRef": self.template_ref,
            "specRevision": self.spec_revision,
        }

    @classmethod
    def from_dict(cls, raw: object) -> RollbackPin | None:
        if not isinstance(raw, Mapping):
            return None
        number, revision, spec_revision = raw.get("number"), raw.get("revision"), raw.get("specRevision")
        if not isinstance(number, int) or not isinstance(revision, str) or not isinstance(spec_revision, str):
            return None
        return cls(number, revision, str(raw.get("templateRef") or ""), spec_revision)


PreflightResult: TypeAlias = Literal["Unknown", "Sufficient", "Insufficient"]
PREFLIGHT_RESULTS: tuple[PreflightResult, ...] = ("Unknown", "Sufficient", "Insufficient")


@dataclass(frozen=True)
class GpuPreflight:
    """The GPU pre-flight of the rollout of ``revision``: ``status.rollout.gpuPreflight``.

    ``Unknown``: the cluster's free GPUs could not be read yet (the check is done as soon as they can be).
    Written once per rollout with every key, so a JSON merge patch of the status always replaces all of it.
    """

    revision: str
    result: PreflightResult
    gpus_per_pod: int = 0
    extra_pods: int = 0
    gpus_needed: int = 0
    gpus_free: int = 0
    message: str = ""
    checked_at: datetime | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "checked_at", _truncate(self.checked_at))

    def to_dict(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "result": self.result,
            "gpusPerPod": self.gpus_per_pod,
            "extraPods": self.extra_pods,
            "gpusNeeded": self.gpus_needed,
            "gpusFree": self.gpus_free,
            "message": clip(self.message, MAX_PREFLIGHT_MESSAGE),
            "checkedAt": format_time(self.checked_at) if self.checked_at is not None else "",
        }

    @classmethod
    def from_dict(cls, raw: object) -> GpuPreflight | None:
        if not isinstance(raw, Mapping):
            return None
        revision, result = raw.get("revision"), raw.get("result")
        if not isinstance(revision, str) or not revision or result not in PREFLIGHT_RESULTS:
            return None
        return cls(
            revision=revision,
            result=cast(PreflightResult, result),
            gpus_per_pod=max(0, _int(raw.get("gpusPerPod"))),
            extra_pods=max(0, _int(raw.get("extraPods"))),
            gpus_needed=max(0, _int(raw.get("gpusNeeded"))),
            gpus_free=max(0, _int(raw.get("gpusFree"))),
            message=_text(raw.get("message")),
            checked_at=parse_time(raw.get("checkedAt")),
        )


def _int(value: object, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _count(value: object) -> int:
    """A measurement count or number read back from status; 0 when absent, negative or absurd (a hand-edited
    status), so that counting on from it can never overflow what the API server stores."""
    number = _int(value)
    return number if 0 <= number < 2**31 else 0


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


@dataclass(frozen=True)
class RolloutStatus:
    """The rollout's progress. Timestamps are kept at second precision (what the JSON form holds)."""

    phase: Phase = "Idle"
    stable_revision: str = ""
    canary_revision: str = ""
    current_step_index: int = 0
    canary_weight: int = 0
    mirror_weight: int = 0
    """Percent of the requests copied to the canary (the last completed setMirror step), while it has no live
    traffic (``mirrorWeight``)."""
    step_started_at: datetime | None = None
    paused_at: datetime | None = None
    paused_phase: Phase | None = None
    """The phase spec.paused interrupted, kept while paused when resume cannot derive it from the steps: only
    ``Promoting`` (a promotion skips the steps, so on resume it must go on promoting) (``pausedPhase``)."""
    waiting_since: datetime | None = None
    """Since when the rollout waits for the canary's pods to become ready (progress deadline clock)."""
    analysis_runs: tuple[AnalysisRun, ...] = ()
    rejected_revisions: tuple[Rejection, ...] = ()
    previous_revision: str = ""
    warm_until: datetime | None = None
    last_promote_token: str = ""
    last_rollback_to: int = 0
    steps_hash: str = ""
    """Hash of the strategy and steps the step index counts in (``stepsHash``): an edit restarts the steps."""
    rollback: RollbackPin | None = None
    gpu_preflight: GpuPreflight | None = None
    """The GPU pre-flight of the latest rollout (kept after it ends; the next rollout replaces it)."""
    message: str = ""
    history: tuple[HistoryEntry, ...] = field(default=())
    """Newest first (highest number first)."""

    def __post_init__(self) -> None:
        for name in ("step_started_at", "paused_at", "waiting_since", "warm_until"):
            object.__setattr__(self, name, _truncate(getattr(self, name)))

    # -- queries

    def rejection(self, revision: str) -> Rejection | None:
        return next((r for r in self.rejected_revisions if r.revision == revision), None)

    def history_entry(self, revision: str) -> HistoryEntry | None:
        return next((h for h in self.history if h.revision == revision), None)

    def active_run(self, revision: str, gate: str) -> AnalysisRun | None:
        """The latest run for this revision and gate (any phase)."""
        return next((r for r in reversed(self.analysis_runs) if r.revision == revision and r.gate == gate), None)

    # -- JSON form

    def to_status(self) -> dict[str, Any]:
        """The JSON-able ``status.rollout`` mapping (history is separate: ``history_to_status``)."""
        out: dict[str, Any] = {
            "phase": self.phase,
            "stableRevision": self.stable_revision,
            "canaryRevision": self.canary_revision,
            "currentStepIndex": self.current_step_index,
            "canaryWeight": self.canary_weight,
            "analysisRuns": [r.to_dict() for r in self.analysis_runs],
            "rejectedRevisions": [r.to_dict() for r in self.rejected_revisions],
            "previousRevision": self.previous_revision,
            "lastPromoteToken": self.last_promote_token,
            "lastRollbackTo": self.last_rollback_to,
            "message": clip(self.message),
        }
        for key, moment in (
            ("stepStartedAt", self.step_started_at),
            ("pausedAt", self.paused_at),
            ("waitingSince", self.waiting_since),
            ("warmUntil", self.warm_until),
        ):
            if moment is not None:
                out[key] = format_time(moment)
        if self.mirror_weight:
            out["mirrorWeight"] = self.mirror_weight
        if self.paused_phase is not None:
            out["pausedPhase"] = self.paused_phase
        if self.steps_hash:
            out["stepsHash"] = self.steps_hash
        if self.rollback is not None:
            out["rollback"] = self.rollback.to_dict()
        if self.gpu_preflight is not None:
            out["gpuPreflight"] = self.gpu_preflight.to_dict()
        return out

    def history_to_status(self) -> list[dict[str, Any]]:
        """The JSON-able ``status.history`` list, newest first."""
        return [h.to_dict() for h in self.history]

    @classmethod
    def from_status(cls, raw: Mapping[str, Any] | None, history: object = None) -> RolloutStatus:
        """Rebuild from ``status.rollout`` and ``status.history``; tolerant of missing or malformed fields."""
        raw = raw if isinstance(raw, Mapping) else {}
        phase = raw.get("phase") if raw.get("phase") in PHASES else "Idle"
        entries = [h for h in (HistoryEntry.from_dict(x) for x in as_items(history)) if h is not None]
        runs = [r for r in (AnalysisRun.from_dict(x) for x in as_items(raw.get("analysisRuns"))) if r is not None]
        rejections = (Rejection.from_dict(x) for x in as_items(raw.get("rejectedRevisions")))
        rejected = [r for r in rejections if r is not None]
        weight = _int(raw.get("canaryWeight"))
        paused_phase = raw.get("pausedPhase") if raw.get("pausedPhase") in PHASES else None
        return cls(
            phase=cast(Phase, phase),
            stable_revision=_text(raw.get("stableRevision")),
            canary_revision=_text(raw.get("canaryRevision")),
            current_step_index=max(0, _int(raw.get("currentStepIndex"))),
            canary_weight=min(100, max(0, weight)),
            mirror_weight=min(100, max(0, _int(raw.get("mirrorWeight")))),
            step_started_at=parse_time(raw.get("stepStartedAt")),
            paused_at=parse_time(raw.get("pausedAt")),
            paused_phase=cast(Phase | None, paused_phase),
            waiting_since=parse_time(raw.get("waitingSince")),
            analysis_runs=tuple(runs[-MAX_ANALYSIS_RUNS:]),
            rejected_revisions=tuple(rejected[-MAX_REJECTED:]),
            previous_revision=_text(raw.get("previousRevision")),
            warm_until=parse_time(raw.get("warmUntil")),
            last_promote_token=_text(raw.get("lastPromoteToken")),
            last_rollback_to=max(0, _int(raw.get("lastRollbackTo"))),
            steps_hash=_text(raw.get("stepsHash")),
            rollback=RollbackPin.from_dict(raw.get("rollback")),
            gpu_preflight=GpuPreflight.from_dict(raw.get("gpuPreflight")),
            message=_text(raw.get("message")),
            history=tuple(sorted(entries, key=lambda h: -h.number)),
        )
