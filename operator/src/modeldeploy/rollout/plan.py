"""The rollout state machine: ``next_rollout`` is one pure step from (spec, status, observed, now, controls)
to a ``Decision``. The operator calls it on every reconcile, applies the decision and stores its status.

Ordering contract for the I/O layer applying a ``Decision``: (1) scale up every revision whose replicas grow,
(2) apply the traffic weights, (3) scale down (or delete) the rest. With that order the stable revision is
never asked to serve more than its ready pods can, and a rollback moves traffic back before the canary goes.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from modeldeploy.analysis.criteria import assess_errors, assess_measurement, judge_counts, wants_stable
from modeldeploy.analysis.golden import GoldenResult
from modeldeploy.analysis.sample import Sample
from modeldeploy.analysis.webhooks import WebhookResult
from modeldeploy.rollout import replicas as rmath
from modeldeploy.rollout.config import AnalysisSpec, AnalysisStep, MirrorStep, PauseStep, RolloutSpec, SetWeightStep
from modeldeploy.rollout.routing import Mirror
from modeldeploy.rollout.state import (
    MAX_ANALYSIS_RUNS,
    MAX_REJECTED,
    AnalysisRun,
    GpuPreflight,
    HistoryEntry,
    MeasurementRecord,
    Phase,
    Rejection,
    RollbackPin,
    RolloutStatus,
    format_time,
)

WAIT_REQUEUE_SECONDS = 10.0
"""How soon to look again while waiting for pods (child events usually come sooner)."""
MEASUREMENT_RETRY_SECONDS = 30.0
"""A measurement that could not be taken is tried again after ``min(interval, MEASUREMENT_RETRY_SECONDS)``."""
MAX_ERROR_TEXT = 500
"""Characters of a metric source's error kept in status and events."""


# --- inputs -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RevisionInfo:
    """The revision the spec resolves to now, and where its pod template inputs are kept."""

    revision: str
    model_version: str = ""
    template_ref: str = ""


@dataclass(frozen=True)
class RevisionObservation:
    """What the cluster shows for one revision's Deployment."""

    desired: int = 0
    ready: int = 0
    updated: int = 0
    crash_looping: bool = False
    progress_deadline_exceeded: bool = False
    was_stable: bool = False
    """The Deployment carries the stable marker: the last decision applied to it had this revision as the stable
    (``Decision.status.stable_revision``; verified by its gates, all traffic once ready). The I/O layer renders
    the marker on the stable's Deployment only, so it survives a lost ``status.rollout``."""
    trouble: str = ""
    """Why pods of this revision are not ready, in the cluster's words (``podhealth.revision_trouble``); empty when
    all are, or nothing says. Only ever added to messages: no decision reads it."""


@dataclass(frozen=True)
class Measurement:
    """The answer to an ``AnalysisRequest``: echo its ``run_id``, ``seq`` and ``attempt``.

    A measurement that could not be taken (the metric source failed) carries the source's ``error`` and empty
    samples: the state machine counts it against ``consecutiveErrorLimit`` (``Measurement.failed``).
    """

    run_id: str
    seq: int
    taken_at: datetime
    canary: Sample
    stable: Sample | None = None
    error: str = ""
    """Why the measurement could not be taken; empty when it was."""
    attempt: int = 0
    """The request's ``attempt``: errors of this measurement recorded before it was asked for."""
    golden: GoldenResult | None = None
    """The canary's answers to ``goldenRequests`` (when configured)."""
    webhooks: WebhookResult | None = None
    """The answers of ``analysis.webhooks`` (when configured)."""

    @classmethod
    def failed(cls, request: AnalysisRequest, taken_at: datetime, error: str) -> Measurement:
        """The answer to ``request`` when the metric source failed with ``error``."""
        return cls(
            request.run_id, request.seq, taken_at, Sample(), error=error or "unknown error", attempt=request.attempt
        )


@dataclass(frozen=True)
class Observed:
    target: RevisionInfo | None
    """The revision the current spec resolves to; None when there is nothing to run."""
    replicas: int
    """Desired pods for 100% of the traffic (spec.replicas or the autoscaler's current choice)."""
    revisions: Mapping[str, RevisionObservation] = field(default_factory=dict)
    measurement: Measurement | None = None
    gpus_per_pod: int = 0
    gpus_free: int | None = None
    """Free GPUs for the new pods (``modeldeploy.scheduling.free_gpus``: whole pods on the nodes they fit, GPUs
    of this ModelDeployment's canary counted as free); None when not read (the pre-flight waits for it)."""


@dataclass(frozen=True)
class Controls:
    """Manual controls, from ``spec.rollout`` / ``spec.paused`` or the ``modeldeploy.io/*`` annotations."""

    promote_token: str = ""
    abort: bool = False
    rollback_to: int = 0
    paused: bool = False

    @classmethod
    def from_spec(
        cls, spec: RolloutSpec, annotations: Mapping[str, str] | None = None, *, paused: bool = False
    ) -> Controls:
        """Combine the declarative fields with the annotations; an annotation wins when it is set."""
        annotations = annotations or {}
        promote = annotations.get("modeldeploy.io/promote", "") or spec.promote
        abort_text = annotations.get("modeldeploy.io/abort", "")
        abort = spec.abort or abort_text.strip().lower() in ("true", "1", "yes")
        rollback_to = spec.rollback_to
        rollback_text = annotations.get("modeldeploy.io/rollback-to", "").strip()
        number = _revision_number(rollback_text)
        if number is not None:
            rollback_to = number
        return cls(promote_token=promote, abort=abort, rollback_to=rollback_to, paused=paused)


# --- outputs ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class AnalysisRequest:
    """Take a measurement now and pass it back as ``Observed.measurement`` (same ``run_id``, ``seq``, ``attempt``)."""

    run_id: str
    seq: int
    revision: str
    stable_revision: str | None
    """The stable to measure beside the canary, only when a relative criterion compares with it; a stable that
    cannot be measured is answered as no stable sample (``Measurement.stable`` None), never as an error."""
    attempt: int = 0
    """Errors recorded in a row for measurement ``seq`` so far (the run's ``consecutiveErrors``)."""


@dataclass(frozen=True)
class Decision:
    status: RolloutStatus
    replicas: dict[str, int]
    """Replicas per revision Deployment; 0 scales to zero; a revision absent here is deleted."""
    weights: dict[str, int]
    """Traffic percent per revision, summing to 100; empty while nothing may take traffic yet."""
    templates: dict[str, str]
    """Template reference of every revision in ``replicas`` (what to build its Deployment from)."""
    preview_revision: str | None = None
    """Revision behind the preview Service (BlueGreen, first-deploy gate); None: no preview Service."""
    mirror: Mirror | None = None
    """Requests the route copies to a revision besides the weights (a canary's ``setMirror``); None: none."""
    analysis: AnalysisRequest | None = None
    events: tuple[Event, ...] = ()
    requeue_after: float | None = None


def keep_measurement(
    measurement: Measurement, requested: AnalysisRequest | None, status: Mapping[str, object] | None
) -> bool:
    """Whether a measurement taken for the analysis should be kept for the next step, after a reconcile.

    ``requested`` is what that reconcile's decision asks for; ``status`` is the ModelDeployment's ``.status`` as
    the reconcile leaves it. A request for another measurement (or another attempt at it) makes this one useless.
    With no request (an invalid spec, a pause, a timer that fired early), it is kept exactly while
    ``next_rollout`` would still record it: its run is the current canary's, still Running, and waits for
    measurement number ``seq`` after ``attempt`` errors. So it goes once recorded (the run has more measurements,
    or one more error), when the run ended, or when the run is gone (trimmed, or the rollout moved on to another
    revision or none).
    """
    if requested is not None:
        return (requested.run_id, requested.seq, requested.attempt) == (
            measurement.run_id,
            measurement.seq,
            measurement.attempt,
        )
    raw = status.get("rollout") if status is not None else None
    rollout = RolloutStatus.from_status(raw if isinstance(raw, Mapping) else None)
    run = next((r for r in rollout.analysis_runs if r.id == measurement.run_id), None)
    return (
        run is not None
        and run.phase == "Running"
        and run.revision == rollout.canary_revision
        and run.taken == measurement.seq
        and run.consecutive_errors == measurement.attempt
    )


# --- the step function ------------------------------------------------------------------------------------


_LATEST = datetime.max.replace(tzinfo=UTC)


def _after(moment: datetime, seconds: float) -> datetime:
    """``moment`` plus ``seconds``; the latest representable time where that lies beyond it.

    The spec's durations are bounded (``parse_rollout``), so this only keeps a wrong one from crashing a step.
    """
    try:
        return moment + timedelta(seconds=seconds)
    except OverflowError:
        return _LATEST


def _sec(moment: datetime) -> datetime:
    """UTC, whole seconds: the precision status keeps, so a restart sees exactly the same times."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(microsecond=0)


class _Step:
    """Mutable scratch state of one ``next_rollout`` call."""

    def __init__(self, spec: RolloutSpec, status: RolloutStatus, observed: Observed, now: datetime) -> None:
        self.spec = spec
        self.status = status
        self.observed = observed
        self.now = now
        self.total = max(0, observed.replicas)
        self.events: list[Event] = []
        self.replicas: dict[str, int] = {}
        self.weights: dict[str, int] = {}
        self.preview: str | None = None
        self.mirror: Mirror | None = None
        self.analysis: AnalysisRequest | None = None
        self.timers: list[float] = []
        self.templates: dict[str, str] = {}

    def set(self, **changes: object) -> None:
        self.status = dataclasses.replace(self.status, **changes)  # type: ignore[arg-type]

    def event(self, kind: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.events.append(Event(kind, reason, message))

    def wake_in(self, seconds: float) -> None:
        self.timers.append(max(0.0, seconds))

    def obs(self, revision: str) -> RevisionObservation:
        return self.observed.revisions.get(revision, RevisionObservation())

    def since(self, moment: datetime | None) -> float:
        return (self.now - moment).total_seconds() if moment is not None else 0.0

    def phase(self, phase: Phase, message: str) -> None:
        self.set(phase=phase, message=message)


def next_rollout(
    spec: RolloutSpec, status: RolloutStatus, observed: Observed, now: datetime, controls: Controls
) -> Decision:
    """One step of the rollout state machine. Pure: same inputs, same decision."""
    s = _Step(spec, status, observed, _sec(now))
    target = observed.target
    if target is None:
        s.phase("Idle", "Nothing to run")
        return _finish(s)
    _record_history(s, target)
    _handle_rollback_control(s, controls, target)
    effective, template_ref = _effective_target(s, target)
    s.templates[effective] = template_ref
    _forget_rejections(s, effective, controls)
    _handle_promote_token(s, controls, effective)

    stable = s.status.stable_revision or _adopt_serving(s, effective)
    if not stable:
        _first_deploy(s, effective, controls)
    elif effective == stable:
        _steady(s, stable)
    elif s.status.rejection(effective) is not None:
        _hold_rejected(s, stable, effective)
    else:
        _rollout(s, stable, effective, controls)
    return _finish(s)


def _finish(s: _Step) -> Decision:
    # Revisions no longer live: scale to zero while they have pods, then delete.
    for revision, obs in s.observed.revisions.items():
        if revision not in s.replicas and (obs.desired > 0 or obs.ready > 0):
            s.replicas[revision] = 0
    warm = s.status.previous_revision
    if warm and s.status.warm_until is not None and warm in s.replicas:
        s.templates.setdefault(warm, _template_of(s, warm))
    for revision in s.replicas:
        s.templates.setdefault(revision, _template_of(s, revision))
    templates = {r: s.templates[r] for r in s.replicas}
    s.set(history=_trim_history(s, s.status.history))
    requeue = min(s.timers) if s.timers else None
    mirror = s.mirror
    if mirror is not None and s.weights.get(mirror.revision, 1) != 0:
        mirror = None  # only a revision without live traffic is shadowed (and one that has a Service)
    return Decision(
        status=s.status,
        replicas=dict(s.replicas),
        weights={r: w for r, w in s.weights.items()},
        templates=templates,
        preview_revision=s.preview,
        mirror=mirror,
        analysis=s.analysis,
        events=tuple(s.events),
        requeue_after=requeue,
    )


def _adopt_serving(s: _Step, effective: str) -> str:
    """The revision to keep as stable when the status names none but the cluster shows one that serves.

    ``status.rollout`` lost or damaged (edited with kubectl, restored without its status, written by an older
    operator) must never make the first-deploy path scale the serving revision down, send all traffic to an
    unverified revision, or put the serving revision back behind a first-deploy gate.

    1. A revision whose Deployment carries the stable marker (``RevisionObservation.was_stable``) was the stable
       when the cluster was last written: it is the stable again, also when it is the revision the spec resolves
       to (a first deploy whose gate had passed, a completed rollout), with or without ready pods (the status
       would have kept it stable through an outage too). Should several carry it (an operator stopped between
       two writes of a promotion), the effective revision wins, then the one with the most ready pods.
    2. Without a marker (Deployments written by an older operator): the revision with the most ready pods, never
       the effective one nor the canary, since without a marker they may be a first deploy still behind its
       gate or a canary that never passed its steps.

    A rejected revision is never adopted.
    """
    marked = [
        (revision == effective, obs.ready, revision)
        for revision, obs in s.observed.revisions.items()
        if obs.was_stable and s.status.rejection(revision) is None
    ]
    if marked:
        _, ready, revision = max(marked)
        why = f"its Deployment carries the stable marker ({ready} ready pods)"
    else:
        candidates = [
            (obs.ready, revision)
            for revision, obs in s.observed.revisions.items()
            if revision not in (effective, s.status.canary_revision)
            and obs.desired > 0
            and obs.ready > 0
            and s.status.rejection(revision) is None
        ]
        if not candidates:
            return ""
        ready, revision = max(candidates)
        why = f"it serves ({ready} ready pods)"
    if revision == s.status.canary_revision:
        # A status older than the cluster (restored from a backup taken while this revision was the canary or
        # behind its first-deploy gate): the gate or steps it names were passed since.
        s.set(canary_revision="", canary_weight=0, mirror_weight=0, current_step_index=0, waiting_since=None)
    s.set(stable_revision=revision, phase="Completed", message=f"Revision {revision} is stable")
    s.event(
        "Warning",
        "StableAdopted",
        f"status.rollout names no stable revision; revision {revision} is kept as the stable: {why}",
    )
    return revision


def _template_of(s: _Step, revision: str) -> str:
    entry = s.status.history_entry(revision)
    return entry.template_ref if entry is not None else ""


# --- history and controls ---------------------------------------------------------------------------------


def _record_history(s: _Step, target: RevisionInfo) -> None:
    history = list(s.status.history)
    if not any(h.revision == target.revision for h in history):
        number = max((h.number for h in history), default=0) + 1
        history.insert(0, HistoryEntry(target.revision, number, target.model_version, target.template_ref, s.now))
    s.set(history=_trim_history(s, tuple(history)))


def _trim_history(s: _Step, history: tuple[HistoryEntry, ...]) -> tuple[HistoryEntry, ...]:
    """Keep the newest ``revisionHistoryLimit`` old revisions plus every revision still live."""
    live = {s.status.stable_revision, s.status.canary_revision, s.status.previous_revision}
    if s.observed.target is not None:
        live.add(s.observed.target.revision)
    if s.status.rollback is not None:
        live.add(s.status.rollback.revision)
    kept: list[HistoryEntry] = []
    old = 0
    for entry in sorted(history, key=lambda h: -h.number):
        if entry.revision in live:
            kept.append(entry)
        elif old < s.spec.revision_history_limit:
            kept.append(entry)
            old += 1
    return tuple(kept)


def _handle_rollback_control(s: _Step, controls: Controls, target: RevisionInfo) -> None:
    wanted = controls.rollback_to
    if wanted == 0:
        if s.status.last_rollback_to:
            s.set(last_rollback_to=0)
        return
    if wanted == s.status.last_rollback_to:
        return
    s.set(last_rollback_to=wanted)
    entry = next((h for h in s.status.history if h.number == wanted), None)
    if entry is None:
        numbers = ", ".join(str(h.number) for h in s.status.history) or "none"
        s.event(
            "Warning",
            "RollbackTargetNotFound",
            f"Revision number {wanted} is not in history (have {numbers})",
        )
        return
    s.set(rollback=RollbackPin(entry.number, entry.revision, entry.template_ref, target.revision))
    s.event(
        "Normal",
        "RollbackRequested",
        f"Rolling back to revision {entry.number} ({entry.revision}, "
        f"model version {entry.model_version or '-'}) "
        f"while the spec resolves to {target.revision}",
    )


def _effective_target(s: _Step, target: RevisionInfo) -> tuple[str, str]:
    pin = s.status.rollback
    if pin is not None:
        if pin.spec_revision == target.revision:
            return pin.revision, pin.template_ref
        s.set(rollback=None)
        s.event("Normal", "RollbackReleased", f"The spec changed to {target.revision}; the manual rollback ends")
    return target.revision, target.template_ref


def _forget_rejections(s: _Step, effective: str, controls: Controls) -> None:
    kept = tuple(
        r
        for r in s.status.rejected_revisions
        if r.revision == effective and not (r.reason == "Aborted" and not controls.abort)
    )
    if kept != s.status.rejected_revisions:
        s.set(rejected_revisions=kept)


def _handle_promote_token(s: _Step, controls: Controls, effective: str) -> None:
    token = controls.promote_token
    if not token or token == s.status.last_promote_token:
        return
    s.set(last_promote_token=token)
    # Also a first deploy behind its gate (no stable yet); never one that waits for spec.paused to clear before it
    # starts (no canary yet): that promote would carry over to whatever revision the spec names by then.
    in_rollout = s.status.canary_revision == effective and effective != s.status.stable_revision
    if s.status.rejection(effective) is not None:
        s.event(
            "Warning",
            "PromoteIgnored",
            f"Revision {effective} is rejected; change the spec to roll out again",
        )
    elif in_rollout:
        # The promotion's pods get the whole progress deadline: the clock of the step it interrupts (pods that
        # were coming up for a weight) is not its own.
        s.set(phase="Promoting", waiting_since=None)
        held = "; it starts when spec.paused is cleared" if controls.paused else ""
        s.event("Normal", "PromoteRequested", f"Promoting revision {effective}, skipping the remaining steps{held}")
    else:
        s.event("Normal", "PromoteIgnored", "No rollout in progress to promote")


# --- first deploy -----------------------------------------------------------------------------------------


def _first_deploy(s: _Step, revision: str, controls: Controls) -> None:
    n = s.total
    if controls.paused and s.status.canary_revision != revision:
        # The rollout is paused: the first deploy waits for spec.paused to clear, and whatever runs (pods of a
        # revision the status lost track of) is left as it is.
        for running, obs in s.observed.revisions.items():
            s.replicas[running] = obs.desired
        s.phase("Paused", f"First deploy of revision {revision} waits: paused by spec.paused")
        return
    if s.status.rejection(revision) is not None:
        s.replicas[revision] = 0
        s.set(canary_revision="", canary_weight=0, mirror_weight=0)
        return
    if s.status.canary_revision != revision:
        s.set(
            canary_revision=revision,
            current_step_index=0,
            canary_weight=0,
            mirror_weight=0,
            step_started_at=s.now,
            waiting_since=s.now,
            paused_at=None,
            paused_phase=None,
            phase="Progressing",
            message=f"First deploy of revision {revision}",
        )
        s.event("Normal", "FirstDeploy", f"Deploying revision {revision} with {n} replicas")
    # A promotion skips the gate, except while spec.paused holds it (``_paused_first_deploy``). Decided after a
    # new revision's start above, which drops a promotion held for the revision it replaces.
    gate = s.spec.first_deploy_analysis and s.spec.analysis is not None and (controls.paused or not _promoting(s))
    s.replicas[revision] = n
    if not gate:
        # Without a gate the revision is stable at once: end in exactly the state the next step keeps
        # (a fixed point), so an unchanged cluster never sees a second status write.
        if s.status.paused_at is not None:
            s.event("Normal", "Resumed", f"First deploy of revision {revision} resumed; the promotion goes on")
        _make_stable(s, revision, previous="")
        _steady(s, revision)
        return
    # Gate: the revision runs behind the preview Service only, until its analysis passes.
    s.preview = revision
    if controls.abort:
        _reject(s, revision, "Aborted", "The first deploy was aborted")
        s.replicas[revision] = 0
        s.set(canary_revision="", phase="RolledBack")
        return
    obs = s.obs(revision)
    broken = _canary_broken(s, revision, n)
    if broken is not None:
        reason, message = broken
        _reject(s, revision, reason, message)
        s.replicas[revision] = 0
        s.set(canary_revision="", phase="RolledBack", message=f"First deploy failed: {message}")
        return
    if controls.paused:
        _paused_first_deploy(s, revision)
        return
    if s.status.paused_at is not None:
        # As a rollout's resume (``_resume``): the paused time does not count against the progress deadline.
        s.set(paused_at=None, waiting_since=s.now if s.status.waiting_since is not None else None)
        s.event("Normal", "Resumed", f"First deploy of revision {revision} resumed; its analysis goes on")
    if obs.ready < n:
        _waiting(s)
        s.phase("Progressing", f"Waiting for revision {revision}: {obs.ready}/{n} pods ready before its analysis")
        return
    s.set(waiting_since=None)
    run = _run_analysis(s, revision, None, "first-deploy")
    result = "Successful" if run is None else run.phase
    if result == "Successful":
        _make_stable(s, revision, previous="")
        s.weights[revision] = 100
        s.preview = None
        s.event(
            "Normal",
            "FirstDeployPassed",
            f"Revision {revision} passed its first-deploy analysis and takes traffic",
        )
    elif run is not None and result == "Failed":
        _reject(s, revision, *_analysis_failure(run, "The first-deploy analysis"))
        s.replicas[revision] = 0
        s.set(canary_revision="", phase="RolledBack", message="First deploy failed its analysis")


def _paused_first_deploy(s: _Step, revision: str) -> None:
    """spec.paused while a first deploy runs behind its gate: its pods stay, it stays behind the preview Service
    only, and its analysis takes no measurement until resume (a run under way goes on from where it was, as a
    rollout's analysis step does). A promote given while paused (or a promotion the pause interrupted) is kept
    in ``pausedPhase`` and takes effect on resume, never while paused. The progress deadline does not run
    (``_canary_broken``); crash-looping pods and an abort still reject the revision."""
    if _enter_pause(s, f"First deploy of revision {revision}"):
        held = "its promotion goes on after resume"
    else:
        held = "its first-deploy analysis takes no measurement until resume"
    s.phase(
        "Paused",
        f"First deploy of revision {revision} paused by spec.paused; it stays behind the preview Service, {held}",
    )


# --- steady state and rejected revisions ------------------------------------------------------------------


def _steady(s: _Step, stable: str) -> None:
    """All traffic on the stable. A canary that still has traffic when the spec resolves to the stable again
    (a cancelled rollout) is removed the way a replaced one is (``_withdraw``) when the stable cannot
    take its share at once; otherwise, and in the pass after the one that moved the last of it, it goes now
    (``RolloutCancelled``, once: in the pass that clears ``canaryRevision``)."""
    canary = s.status.canary_revision
    if canary and _hands_back(s, stable, canary):
        _withdraw(s, stable, canary, f"the spec resolves to revision {stable} again")
        return
    if canary:
        s.event(
            "Normal",
            "RolloutCancelled",
            f"The spec resolves to the stable revision {stable} again; revision {s.status.canary_revision} is removed",
        )
    s.set(
        canary_revision="",
        canary_weight=0,
        mirror_weight=0,
        current_step_index=0,
        waiting_since=None,
        paused_at=None,
        paused_phase=None,
    )
    s.replicas[stable] = s.total
    s.weights[stable] = 100
    ready = s.obs(stable).ready
    if ready < s.total:
        s.phase("Completed", f"Waiting for revision {stable}: {ready}/{s.total} pods ready")
        s.wake_in(WAIT_REQUEUE_SECONDS)
    else:
        s.phase("Completed", f"Revision {stable} is stable")
    _keep_warm(s)


def _keep_warm(s: _Step) -> None:
    previous, until = s.status.previous_revision, s.status.warm_until
    if not previous or until is None or previous in s.replicas:
        return
    if s.now < until and s.spec.keep_previous_warm is not None:
        s.replicas[previous] = min(s.spec.keep_previous_warm.replicas, s.total) or 0
        s.wake_in((until - s.now).total_seconds())
    else:
        s.set(warm_until=None)
        s.event("Normal", "PreviousScaledDown", f"The warm period of revision {previous} ended")


def _hold_rejected(s: _Step, stable: str, rejected: str) -> None:
    """Traffic back to the stable first (RollingBack, ``_hand_back``), then the rejected canary scales down
    (RolledBack). ``canaryWeight`` 0 in RollingBack says the traffic has moved. A canary that is not rolling back
    (the spec moved on to a revision rejected earlier while it served) is handed back the same way when the
    stable cannot take its share at once (``_hands_back``), and dropped in this pass when it can."""
    canary = s.status.canary_revision
    if canary and _hands_back(s, stable, canary):
        if s.status.phase != "RollingBack":
            s.set(phase="RollingBack", waiting_since=s.now)
        _hand_back(s, stable, canary)
        if canary != rejected:
            s.set(message=f"{s.status.message}; revision {rejected} is rejected and is not rolled out")
        return
    s.weights.clear()
    s.weights[stable] = 100
    s.replicas[stable] = s.total
    s.set(canary_weight=0, mirror_weight=0, current_step_index=0, waiting_since=None, paused_at=None, paused_phase=None)
    if canary:
        s.event("Warning", "RolledBack", f"Traffic is on revision {stable}; revision {canary} scaled down")
    rejection = s.status.rejection(rejected)
    reason = rejection.reason if rejection is not None else "Rejected"
    s.set(
        canary_revision="",
        phase="RolledBack",
        message=f"Revision {rejected} was rejected ({reason}); revision {stable} serves. Change the spec to retry",
    )
    _keep_warm(s)


def _hand_back(s: _Step, stable: str, canary: str) -> None:
    """One pass of a rollback's traffic move. The stable scales back to N (within the Neutral budget, for which
    the canary gives up the pods its remaining share no longer needs: ``_hand_back_plan``) and the canary keeps
    the rest of its pods. The canary also keeps the traffic the stable's ready pods cannot serve yet
    (``replicas.rollback_canary_weight``), so capacity never drops below what was serving; the canary is not
    waited for when it has no ready pods or is crash-looping, nor for longer than ``progressDeadlineSeconds``
    after the rollback started (``waitingSince``; Warning ``StableNotReady``). Once the traffic is all on the
    stable, the next pass scales the canary down."""
    spec = s.spec
    target, kept, weight = _hand_back_plan(s, stable, canary)
    s.replicas[canary] = kept
    s.replicas[stable] = target
    s.mirror = None  # the pass may have kept it before deciding to roll back
    s.set(current_step_index=0, mirror_weight=0, paused_at=None, paused_phase=None)
    stable_obs = s.obs(stable)
    started = s.status.waiting_since or s.now
    waited = s.since(started)
    deadline = spec.progress_deadline_seconds
    ready = f"{stable_obs.ready}/{target}"
    s.weights.clear()
    if weight > 0 and waited <= deadline:
        s.weights.update({stable: 100 - weight, canary: weight})
        s.set(
            canary_weight=weight,
            waiting_since=started,
            message=(
                f"Rolling back revision {canary}: revision {stable} has {ready} ready pods; {canary} keeps its pods "
                f"and {weight}% of the traffic until they are ready "
                f"(at most until {format_time(_after(started, deadline))})"
            ),
        )
        s.wake_in(min(WAIT_REQUEUE_SECONDS, deadline - waited + 1))
        return
    if weight > 0:
        s.event(
            "Warning",
            "StableNotReady",
            f"Revision {stable} has {ready} ready pods {deadline}s (progressDeadlineSeconds) after the rollback of "
            f"revision {canary} started; all traffic moves to it now and {canary} is removed",
        )
    s.weights[stable] = 100
    s.set(
        canary_weight=0,
        waiting_since=None,
        message=f"Rolled back traffic to {stable}; revision {canary} scales down next",
    )
    s.wake_in(0)


def _hands_back(s: _Step, stable: str, canary: str) -> bool:
    """Whether ``canary``, about to leave (replaced, cancelled, rejected), gives its traffic back through
    ``_hand_back`` rather than at once: it has traffic and is rolling back already, or the stable's ready pods
    cannot take its share yet (``_hand_back_plan``). Derived from status and the cluster: restart-safe."""
    return s.status.canary_weight > 0 and (s.status.phase == "RollingBack" or _hand_back_plan(s, stable, canary)[2] > 0)


def _hand_back_plan(s: _Step, stable: str, canary: str) -> tuple[int, int, int]:
    """(stable replicas, canary replicas, canary weight) of one ``_hand_back`` pass: the stable scales back to N,
    and the canary keeps the traffic share the stable's ready pods cannot serve yet
    (``replicas.rollback_canary_weight``; 0: the stable can take it all now) and its pods.

    With Neutral capacity the stable gets what ``N + maxSurgePods`` leaves beside the canary's pods, so the canary
    gives back the pods its remaining share no longer needs (it needs ``N`` minus the stable's ready pods with
    replica-ratio routing, the pods for its weight with exact routing) where the stable's ``N`` needs them, as
    the stable's pods become ready: the stable grows to ``N`` while ``N`` pods stay ready in all. Only when the
    budget leaves the stable no pod beyond those it has ready (``maxSurgePods`` 0, or rounding of whole percents)
    does the traffic move at once to the pods the stable has."""
    n = s.total
    spec = s.spec
    stable_obs, canary_obs = s.obs(stable), s.obs(canary)
    exact = spec.strategy == "Canary" and spec.routing.type == "GatewayAPI"

    def weight(stable_target: int) -> int:
        return rmath.rollback_canary_weight(
            n,
            applied_weight=s.status.canary_weight,
            stable_ready=stable_obs.ready,
            stable_target=stable_target,
            canary_ready=0 if canary_obs.crash_looping else canary_obs.ready,
            exact_routing=exact,
        )

    kept = canary_obs.desired
    if not (spec.strategy == "Canary" and spec.capacity.mode == "Neutral"):
        return n, kept, weight(n)
    surge = spec.capacity.max_surge_pods
    share = weight(n)
    if share > 0:  # pods beyond its share's need, as far as the stable's N needs them (N + surge - N)
        kept = min(kept, max(rmath.pods_for_weight(n, share) if exact else n - stable_obs.ready, surge))
    target = min(n, max(stable_obs.desired, n + surge - kept))
    return target, kept, weight(target)


def _reject(s: _Step, revision: str, reason: str, message: str) -> None:
    rejected = tuple(r for r in s.status.rejected_revisions if r.revision != revision)
    rejected = (*rejected, Rejection(revision, reason, message, s.now))[-MAX_REJECTED:]
    s.set(rejected_revisions=rejected)
    s.event("Warning", reason, f"Revision {revision} rejected: {message}")


def _start_rollback(s: _Step, stable: str, canary: str, reason: str, message: str) -> None:
    _reject(s, canary, reason, message)
    s.set(phase="RollingBack", message=f"Rolling back revision {canary}: {message}", waiting_since=s.now)
    s.event(
        "Warning",
        "RollingBack",
        f"Sending all traffic back to revision {stable} as its pods become ready, then removing {canary}",
    )
    _hand_back(s, stable, canary)


# --- rollouts ---------------------------------------------------------------------------------------------


def _rollout(s: _Step, stable: str, canary: str, controls: Controls) -> None:
    n = s.total
    starting = s.status.canary_revision != canary
    if starting:
        old = s.status.canary_revision
        if old and s.status.phase != "RollingBack" and s.obs(stable).ready == 0 and s.obs(old).ready > 0:
            # The stable serves nothing and the replaced revision does: it is what users reach, so it becomes
            # the base of the next rollout rather than being removed before its successor is ready. Never a
            # canary that is rolling back: it was rejected, and its rejection must not be laundered into stable.
            _make_stable(s, old, previous=stable)
            s.event(
                "Normal",
                "RolloutReplaced",
                f"Revision {canary} replaces revision {old} mid-rollout; {old} serves (revision {stable} has no "
                "ready pods) and stays until its successor is ready",
            )
            stable = old
        elif old and controls.paused and s.status.canary_weight > 0:
            _withdraw(
                s, stable, old, f"revision {canary} waits for spec.paused to clear",
                f"Revision {canary} replaces revision {old} while the rollout is paused: {old} hands its traffic "
                f"back to revision {stable} as {stable}'s pods become ready and is removed; {canary} waits for "
                "spec.paused to clear",
            )  # fmt: skip
            return
        elif old and _hands_back(s, stable, old):
            _withdraw(
                s, stable, old, f"revision {canary} rolls out next",
                f"Revision {canary} replaces revision {old} mid-rollout: {old} hands its traffic back to revision "
                f"{stable} as {stable}'s pods become ready and is removed; then {canary} rolls out",
            )  # fmt: skip
            return
        elif old:
            s.event("Normal", "RolloutReplaced", f"Revision {canary} replaces revision {old} mid-rollout")
        pinned = s.status.rollback is not None and s.status.rollback.revision == canary
        _start_rollout(s, canary, 0, "Promoting" if pinned else "Progressing")
        s.event("Normal", "RolloutStarted", f"Rolling out revision {canary} over revision {stable} ({s.spec.strategy})")
    elif s.status.phase == "RollingBack":
        # The canary being removed (withdrawn by a cancel or a replacement, or rolled back by an abort since
        # cleared) is the target again and not rejected: it starts again with the traffic it still has (a first
        # step below that waits for the stable's pods, ``_lowered``), and the hand-back's clock is not its own.
        weight = s.status.canary_weight
        _start_rollout(s, canary, weight, "Progressing")
        s.event(
            "Normal",
            "RolloutStarted",
            f"Rolling out revision {canary} over revision {stable} again, from the first step: it is no longer being "
            f"removed (it keeps its {weight}% of the traffic meanwhile)",
        )
    else:
        _restart_edited_steps(s, canary)
    _gpu_preflight(s, canary, starting=starting)
    if controls.abort:
        _start_rollback(s, stable, canary, "Aborted", "The rollout was aborted; clear abort to roll out again")
        return
    broken = _canary_broken(s, canary, n)
    if broken is not None:
        _start_rollback(s, stable, canary, *broken)
        return
    if controls.paused:
        _paused(s, stable, canary)
        return
    if s.status.paused_at is not None:
        _resume(s, canary)
    _keep_warm(s)
    if s.status.phase == "Promoting":
        _promote(s, stable, canary)
    elif s.spec.strategy == "Canary":
        _canary(s, stable, canary)
    elif s.spec.strategy == "BlueGreen":
        _blue_green(s, stable, canary)
    else:
        _rolling_update(s, stable, canary)


def _start_rollout(s: _Step, canary: str, weight: int, phase: Phase) -> None:
    """``canary``'s rollout starts from the first step with ``weight`` (``canaryWeight``) on it; its progress
    deadline counts from now (``waitingSince``)."""
    s.set(
        canary_revision=canary,
        current_step_index=0,
        canary_weight=weight,
        mirror_weight=0,
        step_started_at=s.now,
        waiting_since=s.now,
        paused_at=None,
        paused_phase=None,
        phase=phase,
        message=f"Rolling out revision {canary} ({s.spec.strategy})",
        steps_hash=_steps_hash(s.spec),
    )


def _withdraw(s: _Step, stable: str, leaving: str, note: str, announcement: str = "") -> None:
    """``leaving``, a canary that still has traffic, is removed without being rejected: replaced by a new
    revision (while paused, or when the stable's ready pods cannot take its share at once, ``_hands_back``) or
    cancelled (the spec resolves to the stable again). It is removed as a rolled-back canary is: phase
    ``RollingBack``, ``_hand_back`` moves its traffic to the stable as the stable's pods become ready, within
    ``progressDeadlineSeconds`` (``waitingSince``, set on the first pass, when ``announcement`` is posted as
    ``RolloutReplaced``). ``leaving`` stays ``canaryRevision`` meanwhile; the pass after the one that moved the last
    of its traffic goes on (``_rollout`` starts the new revision from its first step, paused if spec.paused holds;
    ``_steady`` clears the canary). ``note``, what comes next, is added to the message."""
    if s.status.phase != "RollingBack":
        s.set(phase="RollingBack", waiting_since=s.now)
        if announcement:
            s.event("Normal", "RolloutReplaced", announcement)
    _hand_back(s, stable, leaving)
    s.set(message=f"{s.status.message}; {note}")
    _keep_warm(s)


def _steps_hash(spec: RolloutSpec) -> str:
    return hashlib.sha256(repr((spec.strategy, spec.steps)).encode()).hexdigest()[:16]


def _restart_edited_steps(s: _Step, canary: str) -> None:
    """The strategy or steps changed under a rollout (the revision did not): the step index counted in the old
    steps, so the new ones start again from the first and no analysis is skipped. A status without the hash
    (an older operator) takes the current steps as its own; a promotion already under way goes on, also one
    held by spec.paused."""
    current = _steps_hash(s.spec)
    if s.status.steps_hash == current:
        return
    if s.status.steps_hash and not _promoting(s):
        s.set(current_step_index=0, mirror_weight=0, step_started_at=s.now, phase="Progressing")
        s.event("Normal", "StepsChanged", f"The rollout steps changed; revision {canary} starts them again")
    s.set(steps_hash=current)


def _gpu_preflight(s: _Step, canary: str, *, starting: bool) -> None:
    """Check once per rollout that the cluster has the GPUs for the pods it adds; a Warning event if not.

    The result is kept in ``status.rollout.gpuPreflight``. A rollout that starts replaces the record of an earlier
    one (even of the same revision); later passes leave a ``Sufficient`` / ``Insufficient`` record alone, so the
    event is posted once, on the transition. Without ``Observed.gpus_free`` (the operator could not read the
    cluster) the record says ``Unknown`` and the check is done on the first pass that has the number. The check
    never holds the rollout back: pods that find no GPU stay Pending and the progress deadline decides.
    """
    gpus_per_pod = s.observed.gpus_per_pod
    if gpus_per_pod <= 0:
        return
    record = s.status.gpu_preflight
    if not starting and record is not None and record.revision == canary and record.result != "Unknown":
        return
    spec = s.spec
    # A mirror's pods are counted as a weight's: in Surge mode as many, in Neutral at most maxSurgePods either way.
    weights = tuple(step.weight if isinstance(step, SetWeightStep) else step.percent
                    for step in spec.steps if isinstance(step, SetWeightStep | MirrorStep))  # fmt: skip
    extra = rmath.max_extra_pods(
        s.total,
        strategy=spec.strategy,
        weights=weights,
        mode=spec.capacity.mode,
        surge=spec.capacity.max_surge_pods,
        exact_routing=spec.routing.type == "GatewayAPI",
        rolling_max_surge=spec.rolling_update.max_surge.resolve(s.total, round_up=True),
    )
    free = s.observed.gpus_free
    if free is None:
        if starting or record is None or record.revision != canary:
            s.set(
                gpu_preflight=GpuPreflight(
                    canary,
                    "Unknown",
                    gpus_per_pod=gpus_per_pod,
                    extra_pods=extra,
                    gpus_needed=gpus_per_pod * extra,
                    message="The cluster's free GPUs could not be read yet; checked as soon as they can be",
                    checked_at=s.now,
                )
            )
        return
    plan = rmath.plan_gpu_capacity(gpus_per_pod=gpus_per_pod, extra_pods=extra, gpus_free=free)
    s.set(
        gpu_preflight=GpuPreflight(
            canary,
            "Sufficient" if plan.ok else "Insufficient",
            gpus_per_pod=gpus_per_pod,
            extra_pods=plan.extra_pods,
            gpus_needed=plan.gpus_needed,
            gpus_free=plan.gpus_free,
            message=plan.message,
            checked_at=s.now,
        )
    )
    if not plan.ok:
        s.event("Warning", "InsufficientGPUs", f"Rollout of revision {canary}: {plan.message}")


def revision_failure(revision: str, obs: RevisionObservation) -> tuple[str, str] | None:
    """(reason, message) when what the cluster shows of ``revision`` says it cannot come up by itself: its pods
    crash-loop, or its Deployment reports its progress deadline exceeded; None otherwise."""
    if obs.crash_looping:
        return "CrashLoop", because(f"Pods of revision {revision} are crash-looping", obs.trouble)
    if obs.progress_deadline_exceeded:
        stalled = f"Revision {revision} made no progress within its deadline"
        return "ProgressDeadlineExceeded", because(stalled, obs.trouble)
    return None


def _canary_broken(s: _Step, canary: str, desired: int) -> tuple[str, str] | None:
    obs = s.obs(canary)
    failure = revision_failure(canary, obs)
    if failure is not None:
        return failure
    waiting = s.status.waiting_since
    # While spec.paused holds the rollout (and in the pass that resumes it, which restarts the clock) the
    # progress deadline does not run: the time before the pause counted, the paused time does not.
    paused = s.status.paused_at is not None
    if waiting is not None and not paused and s.since(waiting) > s.spec.progress_deadline_seconds:
        return (
            "ProgressDeadlineExceeded",
            because(
                f"Revision {canary} pods not ready within progressDeadlineSeconds "
                f"{s.spec.progress_deadline_seconds} ({obs.ready}/{desired} ready)",
                obs.trouble,
            ),
        )
    return None


def because(message: str, trouble: str) -> str:
    """``message``, followed by why the pods are not ready when the cluster says (``RevisionObservation.trouble``)."""
    return f"{message.rstrip('.')}: {trouble}" if trouble else message


def _waiting(s: _Step) -> None:
    if s.status.waiting_since is None:
        s.set(waiting_since=s.now)
    assert s.status.waiting_since is not None
    remaining = s.spec.progress_deadline_seconds - s.since(s.status.waiting_since)
    s.wake_in(min(WAIT_REQUEUE_SECONDS, remaining + 1))


def _timed_wait(s: _Step) -> tuple[str, float] | None:
    """The timed wait the rollout is in, if any: what it is and how long it lasts, counted from
    ``stepStartedAt`` (a canary ``pause: {duration}`` step, or BlueGreen's ``autoPromotionSeconds``). None during
    a promotion: it skips the steps, so the step index no longer names a wait."""
    if _promoting(s):
        return None
    index = s.status.current_step_index
    if s.spec.strategy == "Canary" and index < len(s.spec.steps):
        step = s.spec.steps[index]
        if isinstance(step, PauseStep) and step.seconds is not None:
            return f"pause step {index}", step.seconds
    bg = s.spec.blue_green
    if s.spec.strategy == "BlueGreen" and bg.auto_promotion_enabled and index == 2:
        return "auto-promotion", float(bg.auto_promotion_seconds)
    return None


def _wait_left(s: _Step, duration: float, at: datetime) -> float:
    """Seconds of a timed wait left at ``at`` (the moment spec.paused stopped its clock)."""
    started = s.status.step_started_at
    if started is None or started >= at:
        return duration
    return max(0.0, duration - (at - started).total_seconds())


def _promoting(s: _Step) -> bool:
    """Whether the rollout is promoting, or spec.paused holds a promotion (``pausedPhase``)."""
    return s.status.phase == "Promoting" or s.status.paused_phase == "Promoting"


def _enter_pause(s: _Step, what: str) -> bool:
    """The pass's part of spec.paused that a rollout and a first deploy share: ``pausedAt`` and the ``Paused``
    event (``what`` paused) on the first paused pass, and a promotion under way kept in ``pausedPhase``. Whether
    a promotion is held."""
    if s.status.phase == "Promoting":
        s.set(paused_phase="Promoting")
    promoting = s.status.paused_phase == "Promoting"
    if s.status.paused_at is None:
        s.set(paused_at=s.now)
        during = " during its promotion" if promoting else ""
        s.event("Normal", "Paused", f"{what} paused{during}")
    return promoting


def _paused(s: _Step, stable: str, canary: str) -> None:
    """spec.paused: pods, weights and the preview Service are left as they are (no pod is scaled down; a revision
    whose traffic needs more pods gets them, ``_paused_scale``). A promotion under way (or
    requested while paused) is kept in ``pausedPhase``, since resume cannot derive it from the step index."""
    if _enter_pause(s, f"Rollout of revision {canary}"):
        message = (
            f"Promotion of revision {canary} paused by spec.paused; pods are left as they are, the promotion goes "
            "on after resume"
        )
    else:
        message = f"Rollout of revision {canary} paused by spec.paused; pods are left as they are"
    wait = _timed_wait(s)
    if wait is not None and s.status.paused_at is not None:
        left = _wait_left(s, wait[1], s.status.paused_at)
        message += f"; {wait[0]} has {left:.0f}s left, counted again from resume"
    s.phase("Paused", message)
    weight = s.status.canary_weight
    s.weights.update({stable: 100 - weight, canary: weight})
    s.replicas[stable], s.replicas[canary] = _paused_scale(s, stable, canary)
    if s.spec.strategy == "Canary":
        _mirror(s, canary)  # the canary keeps its pods, so the copy of the traffic stays too
    if s.spec.strategy == "BlueGreen" and s.spec.blue_green.preview_service:
        s.preview = canary


def _paused_scale(s: _Step, stable: str, canary: str) -> tuple[int, int]:
    """(stable, canary) replicas while spec.paused holds a rollout: what they have, never fewer than the pods
    their traffic (``canaryWeight``) needs. A paused rollout scales nothing down; it scales a revision up when
    its share has too few pods: a rollout that starts paused after a spec change (the stable gets the traffic
    of a replaced canary, or a replaced canary became the stable), or ``N`` that grew. Neutral capacity gives
    the stable only what ``N + maxSurgePods`` leaves beside the canary's pods (a promotion held by the pause
    keeps the budget it took)."""
    n, spec = s.total, s.spec
    weight = s.status.canary_weight
    stable_have, canary_have = s.obs(stable).desired, s.obs(canary).desired
    if spec.strategy == "Canary":
        mode, surge = spec.capacity.mode, spec.capacity.max_surge_pods
        need = rmath.plan_canary_scale(
            n, weight, mode=mode, surge=surge, exact_routing=spec.routing.type == "GatewayAPI"
        )
        canary_need = need.canary if weight > 0 else 0
        stable_need = need.stable
        if mode == "Neutral":
            stable_need = min(stable_need, n + surge - max(canary_have, canary_need))
    elif spec.strategy == "BlueGreen":
        stable_need, canary_need = n, n if weight > 0 else 0
    else:
        # A rolling update trades old pods for new ones within maxUnavailable; one that has no new pods yet
        # has the old revision at full size.
        stable_need, canary_need = (n if canary_have == 0 else 0), 0
    return max(stable_have, stable_need), max(canary_have, canary_need)


def _resume(s: _Step, canary: str) -> None:
    """spec.paused was cleared. The time spent paused counts neither against the progress deadline (its clock
    restarts) nor against a timed wait: ``stepStartedAt`` moves forward by the paused time, so a pause step or a
    BlueGreen auto-promotion goes on with what was left of it. A promotion held by the pause (``pausedPhase``)
    goes on promoting. Derived from ``pausedAt`` and ``pausedPhase`` alone: restart-safe."""
    paused_at = s.status.paused_at
    changes: dict[str, object] = {
        "paused_at": None,
        "waiting_since": s.now if s.status.waiting_since is not None else None,
    }
    note = ""
    if s.status.paused_phase == "Promoting":
        changes.update(phase="Promoting", paused_phase=None)
        note = "; the promotion goes on"
    wait = _timed_wait(s)
    started = s.status.step_started_at
    if wait is not None and paused_at is not None and started is not None:
        stopped = max(paused_at, started)  # a step that started while paused (steps edited) counts from now
        changes["step_started_at"] = started + (s.now - stopped)
        note = f"; {wait[0]} goes on with {_wait_left(s, wait[1], paused_at):.0f}s left"
    s.set(**changes)
    s.event("Normal", "Resumed", f"Rollout of revision {canary} resumed{note}")


def _make_stable(s: _Step, revision: str, *, previous: str) -> None:
    warm = s.spec.keep_previous_warm
    changes: dict[str, object] = {
        "stable_revision": revision,
        "canary_revision": "",
        "canary_weight": 0,
        "mirror_weight": 0,
        "current_step_index": 0,
        "waiting_since": None,
        "paused_at": None,
        "paused_phase": None,
        "steps_hash": "",
        "phase": "Completed",
        "message": f"Revision {revision} is stable",
    }
    if previous:
        changes["previous_revision"] = previous
        changes["warm_until"] = (
            _after(s.now, warm.seconds)
            if warm is not None and warm.seconds > 0 and warm.replicas > 0
            else None
        )
    s.set(**changes)


def _promote(s: _Step, stable: str, canary: str) -> None:
    """Scale the canary to full size, then send it all traffic and retire the old stable."""
    n = s.total
    spec = s.spec
    exact = spec.routing.type == "GatewayAPI" or spec.strategy == "BlueGreen"
    target = rmath.CanaryScale(canary=n, stable=0, weight=100)
    obs = s.obs(canary)
    s.set(mirror_weight=0)  # clients are about to get the canary's answers: nothing to copy any more
    if obs.ready < n and spec.strategy == "Canary" and spec.capacity.mode == "Neutral":
        # The budget has no room for all N canary pods beside the stable's: the canary grows as the stable
        # shrinks, and its weight follows its ready pods. Each weight gained is progress: the deadline restarts.
        scale = rmath.neutral_promotion_scale(
            n, surge=spec.capacity.max_surge_pods, weight=s.status.canary_weight, canary_ready=obs.ready
        )
        if scale.weight > s.status.canary_weight:
            s.set(canary_weight=scale.weight, waiting_since=None)
        s.replicas[canary], s.replicas[stable] = scale.canary, scale.stable
        s.weights.update({stable: 100 - s.status.canary_weight, canary: s.status.canary_weight})
        _waiting(s)
        s.phase(
            "Promoting",
            f"Promoting revision {canary} within capacity Neutral (maxSurgePods {spec.capacity.max_surge_pods}): "
            f"{obs.ready}/{n} pods ready, weight {s.status.canary_weight}",
        )
        return
    if obs.ready < n:
        weight = s.status.canary_weight
        s.replicas[canary] = n
        s.replicas[stable] = n
        if spec.strategy == "Canary":
            s.replicas[stable] = rmath.transition_stable(
                n,
                mode=spec.capacity.mode,
                surge=spec.capacity.max_surge_pods,
                exact_routing=exact,
                applied_weight=weight,
                target=target,
            )
        s.weights.update({stable: 100 - weight, canary: weight})
        if spec.strategy == "BlueGreen":
            s.preview = canary if spec.blue_green.preview_service else None
        _waiting(s)
        s.phase("Promoting", f"Promoting revision {canary}: {obs.ready}/{n} pods ready")
        return
    s.replicas[canary] = n
    # Earlier steps of this same pass may have set the split; all traffic now goes to the canary.
    s.weights.clear()
    s.weights[canary] = 100
    _make_stable(s, canary, previous=stable)
    pin = s.status.rollback
    if pin is not None and pin.revision == canary:
        s.event("Normal", "RolledBackToRevision", f"Revision {pin.number} ({canary}) serves all traffic again")
    s.event("Normal", "Promoted", f"Revision {canary} is now stable; revision {stable} retires")
    _keep_warm(s)


def _canary(s: _Step, stable: str, canary: str) -> None:
    spec = s.spec
    n = s.total
    exact = spec.routing.type == "GatewayAPI"
    mode, surge = spec.capacity.mode, spec.capacity.max_surge_pods
    steps = spec.steps
    for _ in range(len(steps) + 1):
        index = s.status.current_step_index
        weight = s.status.canary_weight
        if index >= len(steps):
            s.set(phase="Promoting", waiting_since=None)
            s.event("Normal", "StepsCompleted", f"All {len(steps)} steps done; promoting revision {canary}")
            _promote(s, stable, canary)
            return
        step = steps[index]
        current = rmath.plan_canary_scale(n, weight, mode=mode, surge=surge, exact_routing=exact)
        mirror_pods = _mirror(s, canary)
        if isinstance(step, MirrorStep):
            if not _mirror_step(s, stable, canary, index, step, mirror_pods):
                return
            continue
        if isinstance(step, SetWeightStep):
            target = rmath.plan_canary_scale(n, step.weight, mode=mode, surge=surge, exact_routing=exact)
            if target.weight < weight and not _lowered(s, stable, canary, index, target):
                return
            ready = s.obs(canary).ready
            if ready >= target.canary:
                if target.weight != step.weight:
                    s.event(
                        "Warning",
                        "WeightLimited",
                        f"Step {index}: capacity allows weight {target.weight} instead of {step.weight} "
                        f"({target.canary} canary pods, {n} desired, capacity {mode})",
                    )
                # Live traffic ends the mirror: a request the canary answers would otherwise reach it twice.
                ended = {"mirror_weight": 0} if target.weight > 0 else {}
                _advance(s, index, f"weight {target.weight}", canary_weight=target.weight, waiting_since=None, **ended)
                continue
            s.replicas[canary] = max(target.canary, mirror_pods)
            s.replicas[stable] = rmath.transition_stable(
                n, mode=mode, surge=surge, exact_routing=exact, applied_weight=weight, target=target
            )
            s.weights.update({stable: 100 - weight, canary: weight})
            _waiting(s)
            s.phase("Progressing", f"Step {index}: waiting for {target.canary} canary pods ({ready} ready)")
            return
        gate = _probe_gate_pods(s, current.canary, mirror_pods) if isinstance(step, AnalysisStep) else 0
        s.replicas[canary] = max(current.canary, mirror_pods, gate)
        s.replicas[stable] = current.stable
        s.weights.update({stable: 100 - weight, canary: weight})
        ready = s.obs(canary).ready
        if ready < gate:
            _waiting(s)
            s.phase("Progressing", f"Step {index}: waiting for a canary pod for the analysis checks ({ready} ready)")
            return
        s.set(waiting_since=None)
        if isinstance(step, PauseStep):
            if step.seconds is None:
                s.phase("Paused", f"Step {index}: paused until promoted (weight {weight})")
                return
            started = s.status.step_started_at or s.now
            remaining = step.seconds - s.since(started)
            if remaining > 0:
                s.phase("Paused", f"Step {index}: paused for {remaining:.0f}s more (weight {weight})")
                s.wake_in(remaining)
                return
            _advance(s, index, f"paused {step.seconds:g}s")
            continue
        assert isinstance(step, AnalysisStep)
        run = _run_analysis(s, canary, stable, f"step-{index}")
        if run is None or run.phase == "Successful":
            _advance(s, index, "analysis passed")
            continue
        if run.phase == "Failed":
            _start_rollback(s, stable, canary, *_analysis_failure(run, f"Analysis at step {index}"))
        return


def _probe_gate_pods(s: _Step, canary_pods: int, mirror_pods: int) -> int:
    """Pods an analysis step gives a canary that has none (no traffic, no mirror) when the analysis checks the
    canary itself (golden requests, webhooks): one, beside the stable's, so that the checks have a pod to go to
    before any client does. None with Neutral capacity and maxSurgePods 0 (``parse_rollout`` refuses such a step)."""
    analysis = s.spec.analysis
    if analysis is None or not analysis.probes_canary or canary_pods > 0 or mirror_pods > 0:
        return 0
    return 1 if s.spec.capacity.room_beside_stable else 0


def _mirror(s: _Step, canary: str) -> int:
    """Keep the mirror of the last completed ``setMirror`` step (``mirrorWeight``) on the route while the canary has
    no live traffic; the canary pods it needs (0 without one)."""
    spec = s.spec
    s.mirror = None
    if s.status.mirror_weight <= 0 or s.status.canary_weight > 0 or spec.routing.type != "GatewayAPI":
        return 0
    # Sized again each pass: N may have changed (autoscaling). In Neutral mode the share shrinks with it to what
    # maxSurgePods pods serve rather than the canary growing past the budget.
    scale = rmath.plan_mirror_scale(s.total, s.status.mirror_weight, mode=spec.capacity.mode,
                                    surge=spec.capacity.max_surge_pods)  # fmt: skip
    if scale.weight > 0:
        s.mirror = Mirror(canary, scale.weight)
    return scale.canary


def _mirror_step(s: _Step, stable: str, canary: str, index: int, step: MirrorStep, mirror_pods: int) -> bool:
    """A ``setMirror`` step: the canary gets the pods for its copy of the traffic, and once they are ready the route
    copies ``percent`` of the requests to it (``mirrorWeight``); meanwhile the copy in force (``_mirror``, which
    needs ``mirror_pods``) goes on. Whether the step is done."""
    spec = s.spec
    n = s.total
    if step.percent == 0:
        _advance(s, index, "mirror ended", mirror_weight=0)
        return True
    if s.status.canary_weight > 0 or spec.routing.type != "GatewayAPI":
        # The steps were edited under a canary that already has live traffic (or the routing cannot copy
        # requests; the spec check refuses that): there is nothing left to shadow.
        s.event("Warning", "MirrorSkipped",
                f"Step {index}: revision {canary} already has {s.status.canary_weight}% of the traffic, or the "
                f"routing is not GatewayAPI; requests are not mirrored")  # fmt: skip
        _advance(s, index, "mirror skipped")
        return True
    target = rmath.plan_mirror_scale(n, step.percent, mode=spec.capacity.mode, surge=spec.capacity.max_surge_pods)
    ready = s.obs(canary).ready
    if ready >= target.canary:
        if target.weight != step.percent:
            s.event(
                "Warning",
                "MirrorLimited",
                f"Step {index}: capacity allows mirroring {target.weight}% instead of {step.percent}% "
                f"({target.canary} canary pods, {n} desired, capacity {spec.capacity.mode})",
            )
        _advance(s, index, f"mirror {target.weight}%", mirror_weight=target.weight, waiting_since=None)
        return True
    s.replicas[canary] = max(target.canary, mirror_pods)
    s.replicas[stable] = n
    s.weights.update({stable: 100, canary: 0})
    _waiting(s)
    s.phase("Progressing", f"Step {index}: waiting for {target.canary} canary pods ({ready} ready) to mirror "
                           f"{target.weight}% of the requests")  # fmt: skip
    return False


def _lowered(s: _Step, stable: str, canary: str, index: int, target: rmath.CanaryScale) -> bool:
    """Whether a step that lowers the canary's weight (below the applied ``canaryWeight``: steps that go down,
    or a rollout that starts again from its first step with traffic on the canary) is done: the stable, which
    gains the traffic, has the ready pods for its new share. Until then the stable scales up to its target and
    takes back what its ready pods serve, while the canary keeps the rest and the pods for it
    (``replicas.lowering_scale``); the mirror of a step that raises the weight, which waits for the canary's pods.
    No deadline: the canary is not at fault, and moving traffic to pods that are not ready would only shrink what
    serves it."""
    spec = s.spec
    weight = s.status.canary_weight
    ready = s.obs(stable).ready
    if ready >= target.stable:
        return True
    now = rmath.lowering_scale(
        s.total,
        mode=spec.capacity.mode,
        surge=spec.capacity.max_surge_pods,
        exact_routing=spec.routing.type == "GatewayAPI",
        applied_weight=weight,
        target=target,
        stable_ready=ready,
        canary_desired=s.obs(canary).desired,
    )
    s.replicas[stable], s.replicas[canary] = now.stable, now.canary
    s.weights.update({stable: 100 - now.weight, canary: now.weight})
    s.set(canary_weight=now.weight, waiting_since=None)
    s.wake_in(WAIT_REQUEUE_SECONDS)
    s.phase(
        "Progressing",
        f"Step {index}: waiting for {target.stable} ready pods of revision {stable} ({ready} ready) to lower the "
        f"canary's weight to {target.weight} (now {now.weight})",
    )
    return False


def _advance(s: _Step, index: int, what: str, **changes: object) -> None:
    s.set(current_step_index=index + 1, step_started_at=s.now, **changes)
    s.event("Normal", "StepCompleted", f"Step {index} done ({what}), revision {s.status.canary_revision}")


def _blue_green(s: _Step, stable: str, canary: str) -> None:
    n = s.total
    bg = s.spec.blue_green
    s.replicas[stable] = n
    s.replicas[canary] = n
    s.weights.update({stable: 100, canary: 0})
    s.preview = canary if bg.preview_service else None
    ready = s.obs(canary).ready
    if ready < n:
        _waiting(s)
        s.phase("Progressing", f"Waiting for the preview revision {canary}: {ready}/{n} pods ready")
        return
    if s.status.current_step_index == 0:
        s.set(waiting_since=None, current_step_index=1, step_started_at=s.now)
        s.event("Normal", "PreviewReady", f"Revision {canary} is ready behind the preview Service")
    if s.status.current_step_index == 1:
        run = _run_analysis(s, canary, stable, "pre-promotion")
        if run is not None and run.phase == "Failed":
            _start_rollback(s, stable, canary, *_analysis_failure(run, "Pre-promotion analysis"))
            return
        if run is not None and run.phase != "Successful":
            return
        s.set(current_step_index=2, step_started_at=s.now)
    if not bg.auto_promotion_enabled:
        s.phase("Paused", f"Revision {canary} is ready; waiting for promotion")
        return
    remaining = bg.auto_promotion_seconds - s.since(s.status.step_started_at)
    if remaining > 0:
        s.phase("Paused", f"Revision {canary} is ready; auto-promotion in {remaining:.0f}s")
        s.wake_in(remaining)
        return
    s.set(phase="Promoting")
    _promote(s, stable, canary)


def _rolling_update(s: _Step, stable: str, canary: str) -> None:
    n = s.total
    ru = s.spec.rolling_update
    new_obs, old_obs = s.obs(canary), s.obs(stable)
    new, old = rmath.rolling_update_step(
        n,
        max_surge=ru.max_surge.resolve(n, round_up=True),
        max_unavailable=ru.max_unavailable.resolve(n, round_up=False),
        new_desired=new_obs.desired,
        new_ready=min(new_obs.ready, new_obs.desired),
        old_desired=old_obs.desired if stable in s.observed.revisions else n,
        old_ready=min(old_obs.ready, old_obs.desired),
    )
    if new_obs.ready >= n and old == 0:
        s.replicas[canary] = n
        s.weights[canary] = 100
        _make_stable(s, canary, previous=stable)
        s.event("Normal", "Promoted", f"Revision {canary} replaced revision {stable}")
        _keep_warm(s)
        return
    s.replicas[canary] = new
    s.replicas[stable] = old
    weight = rmath.ratio_weight(new_obs.ready, min(old_obs.ready, old)) if new_obs.ready else 0
    s.weights.update({stable: 100 - weight, canary: weight})
    s.set(canary_weight=weight)
    if new_obs.ready < new:
        _waiting(s)
    else:
        s.set(waiting_since=None)
        s.wake_in(WAIT_REQUEUE_SECONDS)
    s.phase("Progressing", f"Rolling update to {canary}: {new_obs.ready}/{n} new pods ready, {old} old pods")


# --- analysis ---------------------------------------------------------------------------------------------


def _run_analysis(s: _Step, revision: str, stable: str | None, gate: str) -> AnalysisRun | None:
    """Advance the analysis run gating ``revision`` at ``gate``; returns the run (None: no analysis configured).

    The caller acts on ``run.phase``; a Failed run's reason and message come from ``_analysis_failure``.
    """
    criteria = s.spec.analysis
    if criteria is None:
        return None
    run = s.status.active_run(revision, gate)
    # A run belongs to the current attempt only if it started after this rollout (re)started.
    attempt_start = s.status.step_started_at
    if run is None or (attempt_start is not None and run.started_at < attempt_start):
        number = 1 + max((_run_number(r.id) for r in s.status.analysis_runs), default=0)
        run = AnalysisRun(id=f"{revision}-{gate}-{number}", revision=revision, gate=gate, started_at=s.now)
        _store_run(s, run)
        s.event("Normal", "AnalysisStarted", f"Analysis {run.id} of revision {revision} started ({gate})")
    if run.phase == "Running":
        measurement = s.observed.measurement
        if (
            measurement is not None
            and measurement.run_id == run.id
            and measurement.seq == run.taken
            and measurement.attempt == run.consecutive_errors
        ):
            if measurement.error:
                run = _record_error(s, criteria, run, measurement)
            else:
                run = _record_measurement(s, criteria, run, measurement)
            if run.phase != "Running":
                s.event(
                    "Normal" if run.phase == "Successful" else "Warning",
                    f"Analysis{run.phase}",
                    f"Analysis {run.id} of revision {revision}: {run.phase} ({run.message})",
                )
    if run.phase == "Running":
        if run.last_error_at is not None:
            due = _after(run.last_error_at, min(criteria.interval_seconds, MEASUREMENT_RETRY_SECONDS))
        else:
            last = run.measurements[-1].taken_at if run.measurements else run.started_at
            due = _after(last, criteria.interval_seconds)
        if s.now >= due:
            # The stable is measured only for the relative criteria: without them a stable that cannot be
            # measured (no ready pods at 3 a.m., scaled to zero at weight 100) must not hold up the canary.
            compare = stable if wants_stable(criteria) else None
            s.analysis = AnalysisRequest(run.id, run.taken, revision, compare, run.consecutive_errors)
        else:
            s.wake_in((due - s.now).total_seconds())
        s.phase("Analyzing", f"Analysis {run.id}: {run.message or 'waiting for the first measurement'}")
    elif run.phase == "Inconclusive":
        s.phase("Paused", f"Analysis {run.id} inconclusive ({run.message}); promote or abort")
    return run


def _record_measurement(s: _Step, criteria: AnalysisSpec, run: AnalysisRun, measurement: Measurement) -> AnalysisRun:
    """Judge a measurement that was taken and add it to the run; it ends any streak of errors."""
    verdict = assess_measurement(
        criteria, measurement.canary, measurement.stable, measurement.golden, measurement.webhooks
    )
    record = MeasurementRecord(
        _sec(measurement.taken_at),
        verdict.outcome,
        verdict.message,
        measurement.canary,
        measurement.stable,
        measurement.golden,
        webhooks=measurement.webhooks,
    )
    run = run.record(record)
    outcome = judge_counts(criteria, run.passed, run.failed, run.inconclusive)
    run = dataclasses.replace(
        run,
        phase=outcome.phase,
        message=outcome.message,
        consecutive_errors=0,
        last_error="",
        last_error_at=None,
    )
    _store_run(s, run)
    s.event(
        "Normal" if verdict.outcome != "Fail" else "Warning",
        f"Analysis{verdict.outcome}",
        f"Analysis {run.id} measurement {run.taken}: {verdict.message}",
    )
    return run


def _record_error(s: _Step, criteria: AnalysisSpec, run: AnalysisRun, measurement: Measurement) -> AnalysisRun:
    """Count a measurement that could not be taken; past ``consecutiveErrorLimit`` in a row the run fails."""
    error = measurement.error[:MAX_ERROR_TEXT]
    errors = run.consecutive_errors + 1
    failed = assess_errors(criteria, errors, error)
    limit = criteria.consecutive_error_limit
    if failed is not None:
        phase, message = failed.phase, failed.message
    else:
        phase = "Running"
        message = (
            f"{errors} consecutive measurement errors (consecutiveErrorLimit {limit}); "
            f"{run.taken} of {criteria.count} measurements taken; last error: {error}"
        )
    run = dataclasses.replace(
        run,
        phase=phase,
        message=message,
        consecutive_errors=errors,
        last_error=error,
        last_error_at=_sec(measurement.taken_at),
    )
    _store_run(s, run)
    s.event(
        "Warning",
        "MeasurementFailed",
        f"Analysis {run.id} measurement {run.taken + 1} could not be taken "
        f"({errors} in a row, consecutiveErrorLimit {limit}): {error}",
    )
    return run


def _analysis_failure(run: AnalysisRun, what: str) -> tuple[str, str]:
    """Rejection reason and message for a Failed run: ``MeasurementErrors`` when the metric source kept failing
    (the run ended on an error streak), ``AnalysisFailed`` when measurements broke the thresholds."""
    if run.consecutive_errors > 0:
        return "MeasurementErrors", f"{what}: measurements could not be taken ({run.message})"
    message = f"{what} failed ({run.message})" if run.message else f"{what} failed"
    # What went wrong, not only how often: the last failed measurement's criteria and numbers.
    last = next((m for m in reversed(run.measurements) if m.outcome == "Fail"), None)
    return "AnalysisFailed", f"{message}: {last.message}" if last is not None else message


def _run_number(run_id: str) -> int:
    return _revision_number(run_id.rsplit("-", 1)[-1]) or 0


def _revision_number(text: str) -> int | None:
    """A count written as ASCII digits that fits a status integer (int64); None otherwise. ``str.isdigit`` alone
    takes "²" (which ``int`` refuses) and numbers the API server would refuse to store."""
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        return None
    number = int(text)
    return number if number < 2**63 else None


def _store_run(s: _Step, run: AnalysisRun) -> None:
    runs = [r for r in s.status.analysis_runs if r.id != run.id]
    runs.append(run)
    s.set(analysis_runs=tuple(runs[-MAX_ANALYSIS_RUNS:]))
