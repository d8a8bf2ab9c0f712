"""A tiny pure model of the cluster for driving ``next_rollout`` in tests."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from modeldeploy.analysis.golden import GoldenResult
from modeldeploy.analysis.sample import Sample
from modeldeploy.analysis.webhooks import WebhookResult
from modeldeploy.rollout.config import RolloutSpec, parse_rollout
from modeldeploy.rollout.plan import (
    Controls,
    Decision,
    Measurement,
    Observed,
    RevisionInfo,
    RevisionObservation,
    next_rollout,
)
from modeldeploy.rollout.state import RolloutStatus

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
GOOD = Sample(requests=1000, errors=1, p99_seconds=0.1, pods=1)
BAD = Sample(requests=1000, errors=200, p99_seconds=0.1, pods=1)
THIN = Sample(requests=3, errors=0, p99_seconds=0.1, pods=1)
A, B, C = "aaaaaaaaaa", "bbbbbbbbbb", "cccccccccc"  # revisions
# A canary rollout with a step of each kind: weight, timed pause, analysis (two measurements), weight.
CANARY: dict[str, Any] = {
    "strategy": "Canary",
    "canary": {"steps": [{"setWeight": 25}, {"pause": {"duration": "1m"}}, {"analysis": {}}, {"setWeight": 50}]},
    "analysis": {"maxErrorRatio": 0.01, "interval": "30s", "count": 2, "failureLimit": 0, "minRequests": 10},
    "progressDeadlineSeconds": 120,
}


@dataclass
class Cluster:
    """Deployments as desired/ready counts; pods become ready when ``auto_ready`` (or via ``make_ready``)."""

    spec: RolloutSpec
    replicas: int = 4
    target: RevisionInfo = field(default_factory=lambda: RevisionInfo("aaaaaaaaaa", "1", "tmpl-a"))
    status: RolloutStatus = field(default_factory=RolloutStatus)
    now: datetime = T0
    auto_ready: bool = True
    deployments: dict[str, RevisionObservation] = field(default_factory=dict)
    controls: Controls = field(default_factory=Controls)
    next_sample: Sample | None = GOOD
    next_golden: GoldenResult | None = None
    """The canary's answers to golden requests in the next measurement (with ``goldenRequests``)."""
    next_webhooks: WebhookResult | None = None
    """The webhooks' answers in the next measurement (with ``webhooks``)."""
    stable_sample: Sample | None = GOOD
    crash: set[str] = field(default_factory=set)
    decisions: list[Decision] = field(default_factory=list)
    last_measurement: Measurement | None = None
    gpus_per_pod: int = 0
    gpus_free: int | None = None
    """What the operator would read from the cluster for the GPU pre-flight (None: not read)."""

    def observed(self, measurement: Measurement | None = None) -> Observed:
        revisions = {
            rev: RevisionObservation(
                desired=d.desired,
                ready=d.ready,
                updated=d.desired,
                crash_looping=rev in self.crash,
                was_stable=d.was_stable,
            )
            for rev, d in self.deployments.items()
        }
        return Observed(
            target=self.target,
            replicas=self.replicas,
            revisions=revisions,
            measurement=measurement,
            gpus_per_pod=self.gpus_per_pod,
            gpus_free=self.gpus_free,
        )

    def step(self, measurement: Measurement | None = None) -> Decision:
        decision = next_rollout(self.spec, self.status, self.observed(measurement), self.now, self.controls)
        self.decisions.append(decision)
        # Restart safety: what is stored is the JSON form; read it back every time.
        stored = json.loads(json.dumps(decision.status.to_status()))
        history = json.loads(json.dumps(decision.status.history_to_status()))
        self.status = RolloutStatus.from_status(stored, history)
        assert self.status == decision.status
        self.apply(decision)
        return decision

    def apply(self, decision: Decision) -> None:
        """As the reconcile renders it: every revision's Deployment, the stable's with the stable marker."""
        for rev in list(self.deployments):
            if rev not in decision.replicas:
                del self.deployments[rev]
        for rev, count in decision.replicas.items():
            old = self.deployments.get(rev, RevisionObservation())
            ready = count if self.auto_ready and rev not in self.crash else min(old.ready, count)
            stable = rev == decision.status.stable_revision
            self.deployments[rev] = RevisionObservation(desired=count, ready=ready, was_stable=stable)

    def make_ready(self, rev: str) -> None:
        d = self.deployments[rev]
        self.deployments[rev] = replace(d, ready=d.desired)

    def lose_status(self) -> None:
        """``status.rollout`` is gone (restored without its status, cleared with kubectl); the cluster is not."""
        self.status = RolloutStatus()

    def measure_if_asked(self, decision: Decision) -> Decision:
        """Answer the decision's analysis request (if any) with ``next_sample``."""
        request = decision.analysis
        if request is None or self.next_sample is None:
            return decision
        m = Measurement(
            request.run_id,
            request.seq,
            self.now,
            self.next_sample,
            self.stable_sample,
            attempt=request.attempt,
            golden=self.next_golden,
            webhooks=self.next_webhooks,
        )
        self.last_measurement = m
        return self.step(m)

    def fail_if_asked(self, decision: Decision, error: str = "Prometheus query failed: connection refused") -> Decision:
        """Answer the decision's analysis request (if any) with a measurement that could not be taken."""
        request = decision.analysis
        if request is None:
            return decision
        m = Measurement.failed(request, self.now, error)
        self.last_measurement = m
        return self.step(m)

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def run(self, steps: int = 50, seconds: float = 30) -> Decision:
        """Step (answering analysis requests) until nothing changes and no timer is pending."""
        decision = self.step()
        for _ in range(steps):
            decision = self.measure_if_asked(decision)
            if decision.requeue_after is None and decision.analysis is None:
                return decision
            self.advance(seconds if decision.requeue_after is None else max(decision.requeue_after, 1))
            decision = self.step()
        return decision

    def deploy(self, revision: str, version: str = "2") -> None:
        self.target = RevisionInfo(revision, version, f"tmpl-{revision[:1]}")


def spec(raw: dict[str, Any], **kwargs: Any) -> RolloutSpec:
    return parse_rollout(raw, **kwargs)


def stable_cluster(raw: dict[str, Any], **kwargs: Any) -> Cluster:
    """A cluster whose first revision (A) is deployed and stable."""
    cluster = Cluster(spec(raw), **kwargs)
    assert cluster.run().status.stable_revision == A
    return cluster


def gated_canary(analysis: dict[str, Any]) -> dict[str, Any]:
    """A Canary whose first step is an analysis, before any traffic (a gate for the checks of the canary itself:
    golden requests, webhooks), then 25% and a pause."""
    return {
        "strategy": "Canary",
        "canary": {"steps": [{"analysis": {}}, {"setWeight": 25}, {"pause": {}}]},
        "analysis": analysis,
        "progressDeadlineSeconds": 120,
    }


def reasons(decision: Decision) -> list[str]:
    return [e.reason for e in decision.events]


def canary_at_50(raw: dict[str, Any], replicas: int = 4) -> Cluster:
    """N = ``replicas`` (4: B serves 50% on 2 ready pods) and B waits at its pause step (the second); pods become
    ready only with ``Cluster.make_ready``."""
    cluster = Cluster(spec(raw), replicas=replicas, auto_ready=False)
    cluster.step()
    cluster.make_ready(A)
    cluster.step()
    cluster.deploy(B)
    cluster.step()
    cluster.make_ready(B)
    d = cluster.step()
    assert d.weights == {A: 50, B: 50} and d.status.phase == "Paused" and d.status.canary_weight == 50
    assert d.status.current_step_index == 1, d
    return cluster
