"""The ``kubectl-modeldeploy`` command (``kubectl modeldeploy ...`` when on ``PATH``).

Subcommands: ``status``, ``history``, ``list`` to look at ModelDeployments; ``promote``, ``abort``, ``retry``,
``pause``, ``resume`` and ``rollback`` to drive a rollout. The controls set exactly what the Argo CD actions
(``integrations/argocd``) set, so both drive the operator the same way: the annotations
``modeldeploy.io/promote`` (a fresh token), ``modeldeploy.io/abort: "true"`` and ``modeldeploy.io/rollback-to: N``,
and ``spec.paused``. ``retry`` removes the abort annotation again.

Layout: pure functions turn an object (a dict as read from the API server) into a summary, text or a patch;
the ``_cmd_*`` coroutines do the little I/O there is through ``modeldeploy.kube``. Exit status: 0 on success,
1 for an error (not found, API error, bad revision), 2 for bad usage. Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import yaml
from lightkube.core.exceptions import ConfigError

from modeldeploy import __version__
from modeldeploy.kube.client import ApiError, ApiUnreachableError, KubeClient, load_config
from modeldeploy.kube.resources import DEPLOYMENTS, EVENTS, MODEL_DEPLOYMENTS
from modeldeploy.labels import (
    ABORT_ANNOTATION,
    MODEL_DEPLOYMENT_LABEL,
    PROMOTE_ANNOTATION,
    REVISION_LABEL,
    ROLLBACK_TO_ANNOTATION,
    VERSION_LABEL,
)
from modeldeploy.rollout.state import RolloutStatus, clip, format_time, parse_time
from modeldeploy.schema import crd_manifest
from modeldeploy.types import as_items, as_map

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2

FIELD_MANAGER = "kubectl-modeldeploy"
PROG = "kubectl modeldeploy"

Obj = Mapping[str, Any]


class PluginError(Exception):
    """A problem to report to the user as ``Error: <message>`` (exit status 1)."""


# --- reading an object -------------------------------------------------------------------------------------


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def rollout_of(obj: Obj) -> RolloutStatus:
    """``status.rollout`` and ``status.history`` as a ``RolloutStatus`` (tolerant of damaged fields)."""
    status = as_map(obj.get("status"))
    return RolloutStatus.from_status(as_map(status.get("rollout")), status.get("history"))


def _name(obj: Obj) -> str:
    return _str(as_map(obj.get("metadata")).get("name"))


def _namespace(obj: Obj) -> str:
    return _str(as_map(obj.get("metadata")).get("namespace"))


def _annotations(obj: Obj) -> Mapping[str, Any]:
    return as_map(as_map(obj.get("metadata")).get("annotations"))


def stable_revision(obj: Obj) -> str:
    status = as_map(obj.get("status"))
    return rollout_of(obj).stable_revision or _str(status.get("stableRevision"))


def canary_revision(obj: Obj) -> str:
    status = as_map(obj.get("status"))
    return rollout_of(obj).canary_revision or _str(status.get("canaryRevision"))


def revision_roles(obj: Obj) -> dict[str, list[str]]:
    """Revision -> what it is now: ``stable``, ``canary``, ``previous``, ``rollback target``, ``rejected (REASON)``."""
    rollout = rollout_of(obj)
    roles: dict[str, list[str]] = {}

    def add(revision: str, role: str) -> None:
        if revision:
            roles.setdefault(revision, []).append(role)

    add(stable_revision(obj), "stable")
    add(canary_revision(obj), "canary")
    add(rollout.previous_revision, "previous")
    if rollout.rollback is not None:
        add(rollout.rollback.revision, "rollback target")
    for rejection in rollout.rejected_revisions:
        add(rejection.revision, f"rejected ({rejection.reason})")
    return roles


# --- plain text helpers ------------------------------------------------------------------------------------


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "") -> str:
    """Columns padded to their widest cell, three spaces apart, like ``kubectl get``; no trailing spaces."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in (headers, *rows):
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append((indent + "   ".join(cells)).rstrip())
    return "\n".join(lines) + "\n"


def human_duration(seconds: float) -> str:
    """An age the way kubectl prints it (``45s``, ``5m30s``, ``3h``, ``2d4h``, ``400d``, ``3y20d``)."""
    if seconds < -1:
        return "<invalid>"
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    years = days // 365
    if days < 365 * 8:
        return f"{years}y{days % 365}d" if days % 365 else f"{years}y"
    return f"{years}y"


def age(timestamp: object, now: datetime) -> str:
    moment = parse_time(timestamp)
    return human_duration((now - moment).total_seconds()) if moment is not None else "<unknown>"


def _or_dash(text: object) -> str:
    return str(text) if text not in (None, "") else "-"


def _number(value: float) -> str:
    return f"{value:g}" if math.isfinite(value) else "-"


# --- status ------------------------------------------------------------------------------------------------


def describe_step(step: Mapping[str, Any]) -> str:
    """``setWeight 10``, ``setMirror 50``, ``pause 2m``, ``pause (until promoted)``, ``analysis``."""
    if "setWeight" in step:
        return f"setWeight {step['setWeight']}"
    if "setMirror" in step:
        return f"setMirror {step['setMirror']}"
    if "pause" in step:
        duration = _str(as_map(step.get("pause")).get("duration"))
        return f"pause {duration}" if duration else "pause (until promoted)"
    if "analysis" in step:
        return "analysis"
    return "(unknown step)"


def step_states(obj: Obj) -> list[dict[str, Any]]:
    """The canary steps of the spec with where the rollout in progress stands on each.

    ``Done`` before the current step, ``Current`` at it, ``Pending`` after it; ``Skipped`` for the steps a
    promotion skips; ``-`` for all when no canary rollout is in progress.
    """
    spec = as_map(obj.get("spec"))
    rollout_spec = as_map(spec.get("rollout"))
    steps = as_items(as_map(rollout_spec.get("canary")).get("steps"))
    rollout = rollout_of(obj)
    in_progress = bool(rollout.canary_revision) and rollout.phase not in ("Completed", "RolledBack", "Idle")
    index = rollout.current_step_index
    out = []
    for i, step in enumerate(steps):
        if not in_progress:
            state = "-"
        elif i < index:
            state = "Done"
        elif rollout.phase == "Promoting" or rollout.paused_phase == "Promoting":  # held by spec.paused
            state = "Skipped"
        elif i == index:
            state = "Current"
        else:
            state = "Pending"
        out.append({"index": i, "step": describe_step(step), "state": state})
    return out


def _revision_ref(obj: Obj, revision: str) -> dict[str, Any] | None:
    if not revision:
        return None
    entry = rollout_of(obj).history_entry(revision)
    out: dict[str, Any] = {"revision": revision}
    if entry is not None:
        out["number"] = entry.number
        out["modelVersion"] = entry.model_version
    return out


def _deployment_summary(deployment: Obj, roles: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    meta = as_map(deployment.get("metadata"))
    labels = as_map(meta.get("labels"))
    spec, status = as_map(deployment.get("spec")), as_map(deployment.get("status"))
    revision = _str(labels.get(REVISION_LABEL))
    desired = _int(spec.get("replicas"))
    return {
        "name": _str(meta.get("name")),
        "revision": revision,
        "modelVersion": _str(labels.get(VERSION_LABEL)),
        "roles": list(roles.get(revision, ())) or ["old"],
        "desired": 1 if desired is None else desired,
        "ready": _int(status.get("readyReplicas")) or 0,
        "updated": _int(status.get("updatedReplicas")) or 0,
        "available": _int(status.get("availableReplicas")) or 0,
        "createdAt": _str(meta.get("creationTimestamp")),
    }


MAX_WARNINGS = 5
"""Warning events ``status`` shows (the latest)."""


def _event_time(event: Obj) -> str:
    """When an event was last seen: ``series.lastObservedTime``, ``lastTimestamp``, ``eventTime``, creation."""
    series = as_map(event.get("series"))
    for value in (
        series.get("lastObservedTime"),
        event.get("lastTimestamp"),
        event.get("eventTime"),
        as_map(event.get("metadata")).get("creationTimestamp"),
    ):
        moment = parse_time(value)
        if moment is not None:
            return format_time(moment)
    return ""


def recent_warnings(events: Sequence[Obj], limit: int = MAX_WARNINGS) -> list[dict[str, Any]]:
    """The latest ``limit`` Warning events of the object, newest first: what went wrong lately, in the operator's
    words, also when the status cannot say it (a status write the API server refuses: ``StatusWriteRejected``)."""
    warnings = [
        {
            "reason": _str(e.get("reason")),
            "count": _int(as_map(e.get("series")).get("count")) or _int(e.get("count")) or 1,
            "lastSeen": _event_time(e),
            "message": _str(e.get("message")),
        }
        for e in events
        if e.get("type") == "Warning"
    ]
    warnings.sort(key=lambda w: str(w["lastSeen"]), reverse=True)
    return warnings[:limit]


def status_summary(
    obj: Obj, deployments: Sequence[Obj] = (), warnings: Sequence[Mapping[str, Any]] | str = ()
) -> dict[str, Any]:
    """Everything ``status`` shows, as data (the ``-o json|yaml`` form; the text view renders this).

    ``warnings``: ``recent_warnings`` of the object's events, or why they could not be read."""
    meta, spec, status = as_map(obj.get("metadata")), as_map(obj.get("spec")), as_map(obj.get("status"))
    model, rollout_spec = as_map(spec.get("model")), as_map(spec.get("rollout"))
    canary_spec = as_map(rollout_spec.get("canary"))
    rollout = rollout_of(obj)
    rollout_raw = rollout.to_status()
    roles = revision_roles(obj)
    canary = _revision_ref(obj, canary_revision(obj))
    if canary is not None:
        canary["weight"] = rollout.canary_weight or _int(status.get("canaryWeight")) or 0
        canary["mirror"] = _int(status.get("mirrorWeight")) or 0
    previous = _revision_ref(obj, rollout.previous_revision)
    if previous is not None and rollout.warm_until is not None:
        previous["warmUntil"] = format_time(rollout.warm_until)
    summary: dict[str, Any] = {
        "name": _str(meta.get("name")),
        "namespace": _str(meta.get("namespace")),
        "model": {
            "name": _str(status.get("modelName")) or _str(model.get("name")) or _str(meta.get("name")),
            "version": _str(model.get("version")),
            "format": _str(model.get("format")) or "TorchScript",
        },
        "strategy": _str(rollout_spec.get("strategy")) or "RollingUpdate",
        "trafficRouting": _str(as_map(canary_spec.get("trafficRouting")).get("type")) or "Replicas",
        "paused": spec.get("paused") is True,
        "generation": _int(meta.get("generation")),
        "observedGeneration": _int(status.get("observedGeneration")),
        "phase": _str(status.get("phase")),
        "url": _str(status.get("url")),
        "replicas": {
            "ready": _int(status.get("readyReplicas")) or 0,
            "current": _int(status.get("replicas")) or 0,
            "desired": _int(status.get("desiredReplicas")),
        },
        "currentRevision": _str(status.get("currentRevision")),
        "stable": _revision_ref(obj, stable_revision(obj)),
        "canary": canary,
        "previous": previous,
        "rollout": {"phase": rollout.phase if status.get("rollout") else "", "message": rollout.message},
        "rollback": rollout.rollback.to_dict() if rollout.rollback is not None else None,
        "steps": step_states(obj),
        "analysisRuns": rollout_raw["analysisRuns"],
        "rejectedRevisions": rollout_raw["rejectedRevisions"],
        "conditions": [dict(c) for c in as_items(status.get("conditions"))],
        "deployments": [_deployment_summary(d, roles) for d in deployments],
        "warnings": warnings if isinstance(warnings, str) else [dict(w) for w in warnings],
    }
    return summary


def _describe_revision(ref: Mapping[str, Any] | None) -> str:
    if not ref:
        return "-"
    parts = [str(ref["revision"])]
    details = []
    if ref.get("number") is not None:
        details.append(f"#{ref['number']}")
    if ref.get("modelVersion"):
        details.append(f"model version {ref['modelVersion']}")
    if details:
        parts.append(f"({', '.join(details)})")
    return " ".join(parts)


def _sample_cells(sample: object) -> list[str]:
    raw = as_map(sample)
    if not raw:
        return ["-", "-", "-"]
    requests = raw.get("requests")
    ratio, p99 = raw.get("errorRatio"), raw.get("p99Seconds")
    return [
        _number(float(requests)) if isinstance(requests, int | float) else "-",
        f"{float(ratio) * 100:.2f}%" if isinstance(ratio, int | float) else "-",
        f"{float(p99) * 1000:.1f}ms" if isinstance(p99, int | float) else "-",
    ]


def format_analysis_run(run: Mapping[str, Any]) -> str:
    """One analysis run: a header line, its message and a table of its measurements."""
    head = (
        f"  {run.get('id')}  revision {run.get('revision')}  gate {_or_dash(run.get('gate'))}  "
        f"{run.get('phase')}  started {run.get('startedAt')}\n"
    )
    if run.get("message"):
        head += f"    {run['message']}\n"
    measurements = as_items(run.get("measurements"))
    if not measurements:
        return head + "    (no measurements yet)\n"
    rows = [
        [
            str(_int(m.get("number")) or i),
            _str(m.get("takenAt")),
            _str(m.get("verdict")),
            *_sample_cells(m.get("canary")),
            *_sample_cells(m.get("stable")),
            _str(m.get("message")),
        ]
        for i, m in enumerate(measurements, start=1)
    ]
    passed, failed, inconclusive = (_int(run.get(key)) or 0 for key in ("passed", "failed", "inconclusive"))
    if passed + failed + inconclusive > len(measurements):
        # Status keeps a run's latest measurements (and its latest failed one); the counts cover them all.
        head += (
            f"    {passed + failed + inconclusive} measurements: {passed} passed, {failed} failed, "
            f"{inconclusive} inconclusive; {len(measurements)} kept (the latest)\n"
        )
    headers = ["#", "TAKEN", "VERDICT", "REQUESTS", "ERRORS", "P99", "STABLE REQ", "STABLE ERR", "STABLE P99"]
    if any(isinstance(m.get("golden"), Mapping) for m in measurements):
        # Golden requests: wrong answers of those compared (cases x pods).
        headers.append("GOLDEN WRONG")
        for row, m in zip(rows, measurements, strict=True):
            golden = as_map(m.get("golden"))
            row.insert(-1, f"{golden.get('mismatches')}/{golden.get('checks')}" if golden else "-")
    if any(isinstance(m.get("webhooks"), Mapping) for m in measurements):
        # Webhooks: those that said no, of those asked.
        headers.append("WEBHOOKS NO")
        for row, m in zip(rows, measurements, strict=True):
            hooks = as_map(m.get("webhooks"))
            row.insert(-1, f"{hooks.get('failures')}/{hooks.get('checks')}" if hooks else "-")
    return head + render_table([*headers, "MESSAGE"], rows, indent="    ")


def format_status(summary: Mapping[str, Any], now: datetime) -> str:
    """The readable ``status`` view of a ``status_summary``."""
    model = as_map(summary.get("model"))
    replicas = as_map(summary.get("replicas"))
    rollout = as_map(summary.get("rollout"))
    fields: list[tuple[str, str]] = [
        ("Name", str(summary.get("name"))),
        ("Namespace", str(summary.get("namespace"))),
        ("Model", f"{model.get('name')} version {_or_dash(model.get('version'))} ({model.get('format')})"),
        ("Strategy", str(summary.get("strategy"))),
    ]
    if summary.get("strategy") == "Canary":
        fields.append(("Traffic routing", str(summary.get("trafficRouting"))))
    fields.append(("Phase", _or_dash(summary.get("phase"))))
    if rollout.get("phase"):
        message = f": {rollout['message']}" if rollout.get("message") else ""
        fields.append(("Rollout", f"{rollout['phase']}{message}"))
    if summary.get("paused"):
        fields.append(("Paused", "yes (spec.paused); run `kubectl modeldeploy resume` to continue"))
    generation, observed = summary.get("generation"), summary.get("observedGeneration")
    if isinstance(generation, int) and isinstance(observed, int) and observed < generation:
        fields.append(("Generation", f"{generation} (operator has observed {observed} so far)"))
    fields.append(("Stable", _describe_revision(as_map(summary.get("stable")))))
    canary = as_map(summary.get("canary"))
    if canary:
        fields.append(("Canary", _describe_revision(canary)))
        fields.append(("Weights", f"stable {100 - int(canary.get('weight') or 0)}%, canary {canary.get('weight', 0)}%"))
        if canary.get("mirror"):
            fields.append(("Mirror", f"{canary['mirror']}% of the requests copied to the canary (answers discarded)"))
    else:
        fields.append(("Weights", "stable 100%"))
    previous = as_map(summary.get("previous"))
    if previous:
        warm = f", kept warm until {previous['warmUntil']}" if previous.get("warmUntil") else ""
        fields.append(("Previous", f"{_describe_revision(previous)}{warm}"))
    rollback = as_map(summary.get("rollback"))
    if rollback:
        fields.append(
            (
                "Rollback",
                f"revision #{rollback.get('number')} ({rollback.get('revision')}) runs while the spec "
                f"resolves to {rollback.get('specRevision')}",
            )
        )
    desired = replicas.get("desired")
    fields.append(
        ("Replicas", f"{replicas.get('ready')} ready, {replicas.get('current')} total, {_or_dash(desired)} desired")
    )
    fields.append(("URL", _or_dash(summary.get("url"))))
    width = max(len(label) for label, _ in fields) + 2
    text = "".join(f"{(label + ':').ljust(width)}{value}\n" for label, value in fields)

    steps = as_items(summary.get("steps"))
    if steps:
        rows = [[f"{'>' if s['state'] == 'Current' else ' '} {s['index']}", s["step"], s["state"]] for s in steps]
        text += "\nSteps:\n" + render_table(["  STEP", "ACTION", "STATE"], rows, indent="  ")
    runs = as_items(summary.get("analysisRuns"))
    if runs:
        text += "\nAnalysis runs:\n" + "".join(format_analysis_run(run) for run in runs)
    rejected = as_items(summary.get("rejectedRevisions"))
    if rejected:
        rows = [
            [_str(r.get("revision")), _str(r.get("reason")), _or_dash(r.get("at")), _str(r.get("message"))]
            for r in rejected
        ]
        text += "\nRejected revisions:\n" + render_table(["REVISION", "REASON", "AT", "MESSAGE"], rows, indent="  ")
    conditions = as_items(summary.get("conditions"))
    if conditions:
        rows = [
            [
                _str(c.get("type")),
                _str(c.get("status")),
                _or_dash(c.get("reason")),
                age(c.get("lastTransitionTime"), now),
                _str(c.get("message")),
            ]
            for c in conditions
        ]
        text += "\nConditions:\n" + render_table(["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"], rows, indent="  ")
    deployments = as_items(summary.get("deployments"))
    if deployments:
        rows = [
            [
                _str(d.get("name")),
                _or_dash(d.get("revision")),
                _or_dash(d.get("modelVersion")),
                ",".join(d.get("roles") or ()),
                f"{d.get('ready')}/{d.get('desired')}",
                str(d.get("updated")),
                str(d.get("available")),
                age(d.get("createdAt"), now),
            ]
            for d in deployments
        ]
        headers = ["NAME", "REVISION", "VERSION", "ROLE", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
        text += "\nDeployments:\n" + render_table(headers, rows, indent="  ")
    else:
        text += "\nDeployments: none\n"
    warnings = summary.get("warnings")
    if isinstance(warnings, str):
        text += f"\nRecent warnings: {warnings}\n"
    elif warnings:
        rows = [
            [_str(w.get("reason")), str(w.get("count")), age(w.get("lastSeen"), now), clip(_str(w.get("message")), 400)]
            for w in as_items(warnings)
        ]
        text += "\nRecent warnings:\n" + render_table(["REASON", "COUNT", "LAST SEEN", "MESSAGE"], rows, indent="  ")
    return text


# --- history -----------------------------------------------------------------------------------------------


def history_records(obj: Obj) -> list[dict[str, Any]]:
    """``status.history``, newest first, each entry with the ``roles`` its revision has now."""
    roles = revision_roles(obj)
    return [{**entry.to_dict(), "roles": roles.get(entry.revision, [])} for entry in rollout_of(obj).history]


def format_history(records: Sequence[Mapping[str, Any]]) -> str:
    if not records:
        return "No revisions in status.history yet.\n"
    rows = [
        [
            str(r.get("number")),
            _str(r.get("revision")),
            _or_dash(r.get("modelVersion")),
            _or_dash(r.get("createdAt")),
            ", ".join(r.get("roles") or ()),
        ]
        for r in records
    ]
    return render_table(["NUMBER", "REVISION", "MODEL VERSION", "CREATED", "STATUS"], rows)


# --- list --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    name: str
    json_path: str
    type: str
    priority: int = 0


def printer_columns() -> list[Column]:
    """The CRD's additionalPrinterColumns, so ``list`` shows what ``kubectl get modeldeployments`` shows."""
    crd = crd_manifest()
    version = next(v for v in crd["spec"]["versions"] if v.get("served"))
    return [
        Column(str(c["name"]), str(c["jsonPath"]), str(c.get("type", "string")), int(c.get("priority", 0)))
        for c in version.get("additionalPrinterColumns") or []
    ]


def _lookup(obj: Obj, json_path: str) -> object:
    value: object = obj
    for part in json_path.lstrip(".").split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def format_list(objects: Sequence[Obj], now: datetime, *, wide: bool = False, all_namespaces: bool = False) -> str:
    columns = [c for c in printer_columns() if wide or c.priority == 0]
    headers = (["NAMESPACE"] if all_namespaces else []) + ["NAME"] + [c.name.upper() for c in columns]
    rows = []
    for obj in sorted(objects, key=lambda o: (_namespace(o), _name(o))):
        cells = [_namespace(obj)] if all_namespaces else []
        cells.append(_name(obj))
        for column in columns:
            value = _lookup(obj, column.json_path)
            if column.type == "date":
                cells.append(age(value, now) if value is not None else "")
            else:
                cells.append("" if value is None else str(value))
        rows.append(cells)
    return render_table(headers, rows)


# --- controls: the patches ---------------------------------------------------------------------------------


def promote_patch(obj: Obj, now: datetime) -> dict[str, Any]:
    """A fresh promote token: the UTC time, like the Argo CD action; finer when that token was already used."""
    token = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    used = {_str(_annotations(obj).get(PROMOTE_ANNOTATION)), rollout_of(obj).last_promote_token}
    if token in used:
        token = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"metadata": {"annotations": {PROMOTE_ANNOTATION: token}}}


def abort_patch() -> dict[str, Any]:
    return {"metadata": {"annotations": {ABORT_ANNOTATION: "true"}}}


def retry_patch() -> dict[str, Any]:
    """Remove the abort annotation (JSON merge patch: null deletes)."""
    return {"metadata": {"annotations": {ABORT_ANNOTATION: None}}}


def pause_patch(paused: bool) -> dict[str, Any]:
    return {"spec": {"paused": paused}}


def rollback_patch(number: int) -> dict[str, Any]:
    return {"metadata": {"annotations": {ROLLBACK_TO_ANNOTATION: str(number)}}}


def is_aborted(obj: Obj) -> bool:
    return _str(_annotations(obj).get(ABORT_ANNOTATION)).strip().lower() in ("true", "1", "yes")


def rollback_target(obj: Obj, requested: int | None) -> int:
    """The history number to roll back to: ``requested``, else the previous stable revision's number.

    Without ``previousRevision`` in status the newest revision that is neither stable, canary nor the one the
    spec resolves to is chosen. ``PluginError`` when there is none or ``requested`` is not in the history.
    """
    rollout = rollout_of(obj)
    history = rollout.history
    name = _name(obj)
    if requested is not None:
        if not any(h.number == requested for h in history):
            have = ", ".join(str(h.number) for h in history) or "none"
            raise PluginError(
                f'revision {requested} is not in status.history of modeldeployment "{name}" (available: {have})'
            )
        return requested
    previous = rollout.history_entry(rollout.previous_revision) if rollout.previous_revision else None
    if previous is not None:
        return previous.number
    busy = {stable_revision(obj), canary_revision(obj), _str(as_map(obj.get("status")).get("currentRevision"))}
    for entry in history:
        if entry.revision not in busy:
            return entry.number
    raise PluginError(
        f'modeldeployment "{name}" has no previous revision to roll back to (status.history: '
        f"{', '.join(str(h.number) for h in history) or 'empty'}); pass --to-revision N"
    )


# --- kubeconfig --------------------------------------------------------------------------------------------


def find_kubeconfig(explicit: str | None, environ: Mapping[str, str], home: Path) -> Path | None:
    """``--kubeconfig``, else the first existing file of ``$KUBECONFIG``, else ``~/.kube/config``.

    None when there is no file (then only an in-cluster service account can work). Unlike kubectl, several
    files in ``$KUBECONFIG`` are not merged: the first existing one is used.
    """
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise PluginError(f"kubeconfig file {explicit} not found")
        return path
    for item in environ.get("KUBECONFIG", "").split(os.pathsep):
        if item and Path(item).expanduser().is_file():
            return Path(item).expanduser()
    default = home / ".kube" / "config"
    return default if default.is_file() else None


@dataclass(frozen=True)
class Target:
    kubeconfig: Path | None
    context: str | None
    namespace: str


def resolve_target(args: argparse.Namespace, environ: Mapping[str, str], home: Path) -> Target:
    path = find_kubeconfig(args.kubeconfig, environ, home)
    if path is None and not environ.get("KUBERNETES_SERVICE_HOST"):
        raise PluginError(
            "no Kubernetes configuration found: pass --kubeconfig, set KUBECONFIG or create ~/.kube/config"
        )
    try:
        config = load_config(path).get(args.context)
    except ConfigError as error:
        raise PluginError(f"kubeconfig {path or '(in-cluster)'}: {error}") from None
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError, ValueError) as error:
        raise PluginError(f"kubeconfig {path} cannot be read: {error}") from None
    if config is None:
        raise PluginError(f"kubeconfig {path}: no current context; pass --context")
    return Target(path, args.context, args.namespace or config.namespace or "default")


# --- I/O: the commands -------------------------------------------------------------------------------------


def _not_found(name: str, namespace: str) -> PluginError:
    return PluginError(f'modeldeployment "{name}" not found in namespace "{namespace}"')


async def _read(client: KubeClient, namespace: str, name: str) -> dict[str, Any]:
    obj = await client.read_object(MODEL_DEPLOYMENTS, namespace, name)
    if obj is None:
        raise _not_found(name, namespace)
    return obj


async def _patch(client: KubeClient, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return await client.patch_object(MODEL_DEPLOYMENTS, namespace, name, patch)
    except ApiError as error:
        if error.code == 404:
            raise _not_found(name, namespace) from None
        raise


def _dump(data: object, output: str) -> str:
    if output == "json":
        return json.dumps(data, indent=2) + "\n"
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


@dataclass(frozen=True)
class Streams:
    out: TextIO
    err: TextIO


Command = Callable[[KubeClient, Target, argparse.Namespace, "Streams"], Awaitable[int]]


async def _cmd_status(client: KubeClient, target: Target, args: argparse.Namespace, io: Streams) -> int:
    obj = await _read(client, target.namespace, args.name)
    deployments = await client.list_objects(
        DEPLOYMENTS, target.namespace, label_selector=f"{MODEL_DEPLOYMENT_LABEL}={args.name}"
    )
    deployments.sort(key=lambda d: _str(as_map(d.get("metadata")).get("name")))
    warnings: list[dict[str, Any]] | str
    uid = _str(as_map(obj.get("metadata")).get("uid"))
    try:
        selector = f"involvedObject.uid={uid}"
        warnings = recent_warnings(await client.list_objects(EVENTS, target.namespace, field_selector=selector))
    except ApiError as error:  # Reading events is a nicety: RBAC that allows the object may not allow them.
        warnings = f"events could not be read ({error.code} {error.reason})"
    summary = status_summary(obj, deployments, warnings)
    io.out.write(_dump(summary, args.output) if args.output else format_status(summary, _now()))
    return EXIT_OK


async def _cmd_history(client: KubeClient, target: Target, args: argparse.Namespace, io: Streams) -> int:
    records = history_records(await _read(client, target.namespace, args.name))
    io.out.write(_dump(records, args.output) if args.output else format_history(records))
    return EXIT_OK


async def _cmd_list(client: KubeClient, target: Target, args: argparse.Namespace, io: Streams) -> int:
    namespace = None if args.all_namespaces else target.namespace
    try:
        objects = await client.list_objects(MODEL_DEPLOYMENTS, namespace)
    except ApiError as error:
        if error.code == 404:
            raise PluginError(
                "the server does not know ModelDeployments: install the CRD (crds/ or the Helm chart) first"
            ) from None
        raise
    if args.output in ("json", "yaml"):
        io.out.write(_dump({"apiVersion": "v1", "kind": "List", "items": objects}, args.output))
    elif not objects:
        where = "any namespace" if args.all_namespaces else f'namespace "{target.namespace}"'
        print(f"No modeldeployments found in {where}.", file=io.err)
    else:
        io.out.write(format_list(objects, _now(), wide=args.output == "wide", all_namespaces=args.all_namespaces))
    return EXIT_OK


def _ref(name: str, target: Target) -> str:
    return f'modeldeployment "{name}" in namespace "{target.namespace}"'


async def _cmd_promote(client: KubeClient, target: Target, args: argparse.Namespace, io: Streams) -> int:
    obj = await _read(client, target.namespace, args.name)
    patch = promote_patch(obj, _now())
    await _patch(client, target.namespace, args.name, patch)
    token = patch["metadata"]["annotations"][PROMOTE_ANNOTATION]
    io.out.write(f"Promotion of {_ref(args.name, target)} requested ({PROMOTE_ANNOTATION}={token}).\n")
    if not canary_revision(obj) and rollout_of(obj).phase not in ("Analyzing", "Paused"):
        io.out.write("Note: no rollout is in progress; the operator records the request and changes nothing.\n")
    return EXIT_OK


async def _cmd_abort(client: KubeClient, target: Target, args: argparse.Namespace, io: Streams) -> int:
    obj = await _read(client, target.namespace, args.name)
    if is_aborted(obj):
        io.out.write(f"{_ref(args.name, target)} is already aborted.\n")
        return EXIT_OK
    await _patch(client, target.namespace, args.name, abort_patch())
    io.out.write(
        f"Abort of {_ref(args.name, target)} requested ({ABORT_ANNOTATION}=true): traffic returns to the stable "
        f"revision. Run `{PROG} retry {args.name}` to roll the same revision out again.\n"
    )
    return EXIT_OK


async def _cmd_retry(client: KubeClient, target: Target, args: argparse.Namespace, io: Streams) -> int:
    obj = await _read(client, target.namespace, args.name)
    if as_map(as_map(obj.get("spec")).get("rollout")).get("abort") is True:
        raise PluginError(
            f'spec.rollout.abort is true in modeldeployment "{args.name}"; set it to false in the spec '
            "(the plugin only removes the abort annotation)"
        )
    if ABORT_ANNOTATION not in _annotations(obj):
        io.out.write(f"{_ref(args.name, target)} is not aborted; nothing to retry.\n")
        return EXIT_OK
    await _patch(client, target.namespace, args.name, retry_patch())
    io.out.write(f"Removed {ABORT_ANNOTATION} from {_ref(args.name, target)}: the rollout starts again.\n")
    return EXIT_OK


async def _set_paused(client: KubeClient, target: Target, name: str, paused: bool, io: Streams) -> int:
    obj = await _read(client, target.namespace, name)
    word = "paused" if paused else "resumed"
    if (as_map(obj.get("spec")).get("paused") is True) == paused:
        io.out.write(f"{_ref(name, target)} is already {'paused' if paused else 'not paused'}.\n")
        return EXIT_OK
    await _patch(client, target.namespace, name, pause_patch(paused))
    io.out.write(f"{_ref(name, target)} {word} (spec.paused={'true' if paused else 'false'}).\n")
    return EXIT_OK


async def _cmd_pause(client: KubeClient, target: Target, args: argparse.Namespace, io: Streams) -> int:
    return await _set_paused(client, target, args.name, True, io)


async def _cmd_resume(client: KubeClient, target: Target, args: argparse.Namespace, io: Streams) -> int:
    return await _set_paused(client, target, args.name, False, io)


async def _cmd_rollback(client: KubeClient, target: Target, args: argparse.Namespace, io: Streams) -> int:
    obj = await _read(client, target.namespace, args.name)
    number = rollback_target(obj, args.to_revision)
    rollout = rollout_of(obj)
    entry = next(h for h in rollout.history if h.number == number)
    if _str(_annotations(obj).get(ROLLBACK_TO_ANNOTATION)).strip() == str(number) and (
        rollout.last_rollback_to == number
    ):
        if rollout.rollback is not None and rollout.rollback.number == number:
            io.out.write(f"{_ref(args.name, target)} is already rolled back to revision {number}.\n")
            return EXIT_OK
        raise PluginError(
            f"rollback to revision {number} was already requested and handled; the operator acts on each number "
            f"once. Remove it with `kubectl annotate -n {target.namespace} modeldeployment {args.name} "
            f"{ROLLBACK_TO_ANNOTATION}-`, wait for the operator to observe it, then run this again"
        )
    await _patch(client, target.namespace, args.name, rollback_patch(number))
    io.out.write(
        f"Rollback of {_ref(args.name, target)} to revision {number} ({entry.revision}, model version "
        f"{entry.model_version or '-'}) requested ({ROLLBACK_TO_ANNOTATION}={number}).\n"
    )
    return EXIT_OK


def _now() -> datetime:
    return datetime.now(UTC)


# --- argument parsing --------------------------------------------------------------------------------------


def _common(suppress: bool) -> argparse.ArgumentParser:
    """Options accepted before and after the subcommand (after it they must not reset values given before)."""
    default: Any = argparse.SUPPRESS if suppress else None
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "-n", "--namespace", default=default, help="namespace (default: the kubeconfig context's, else default)"
    )
    parser.add_argument("--kubeconfig", default=default, metavar="FILE", help="kubeconfig file to use")
    parser.add_argument("--context", default=default, help="kubeconfig context to use (default: current-context)")
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Inspect and drive the rollouts of ModelDeployments (modeldeploy.io).",
        parents=[_common(suppress=False)],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common(suppress=True)

    def add(name: str, command: Command, help_: str, *, named: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".", parents=[common])
        if named:
            p.add_argument("name", metavar="NAME", help="name of the ModelDeployment")
        p.set_defaults(command_fn=command)
        return p

    status = add("status", _cmd_status, "show the rollout: revisions, weights, steps, analysis, conditions, pods")
    status.add_argument("-o", "--output", choices=("json", "yaml"), help="print the status summary as data")
    history = add("history", _cmd_history, "list the revisions in status.history")
    history.add_argument("-o", "--output", choices=("json", "yaml"), help="print the history as data")
    listing = add("list", _cmd_list, "list ModelDeployments, like kubectl get", named=False)
    listing.add_argument("-o", "--output", choices=("wide", "json", "yaml"), help="output format")
    listing.add_argument("-A", "--all-namespaces", action="store_true", help="list across all namespaces")
    add("promote", _cmd_promote, "promote the rollout in progress now, skipping its remaining steps")
    add("abort", _cmd_abort, "abort the rollout in progress: all traffic back to the stable revision")
    add("retry", _cmd_retry, "clear an abort so the rejected revision rolls out again from the first step")
    add("pause", _cmd_pause, "pause the ModelDeployment (spec.paused: true)")
    add("resume", _cmd_resume, "resume a paused ModelDeployment (spec.paused: false)")
    rollback = add("rollback", _cmd_rollback, "roll back to a revision of status.history")
    rollback.add_argument(
        "--to-revision",
        type=_positive,
        metavar="N",
        help="history number to roll back to (default: the previous stable revision)",
    )
    return parser


async def _execute(args: argparse.Namespace, target: Target, out: TextIO, err: TextIO) -> int:
    try:
        client = KubeClient.connect(target.kubeconfig, field_manager=FIELD_MANAGER, context=target.context)
    except (ConfigError, RuntimeError, OSError) as error:
        raise PluginError(f"cannot set up the API client: {error}") from None
    try:
        command: Command = args.command_fn
        return await command(client, target, args, Streams(out, err))
    finally:
        await client.close()


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the plugin; returns the exit status. ``out``/``err`` default to ``sys.stdout``/``sys.stderr``."""
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code) if isinstance(exit_.code, int) else EXIT_USAGE
    try:
        target = resolve_target(args, os.environ, Path.home())
        return asyncio.run(_execute(args, target, out, err))
    except PluginError as error:
        print(f"Error: {error}", file=err)
    except ApiUnreachableError as error:
        print(f"Error: cannot reach the API server: {error.message}", file=err)
    except ApiError as error:
        print(f"Error from server ({error.reason}): {error.message}", file=err)
    except KeyboardInterrupt:
        return 130
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
