"""Tier 2: canary rollouts through an API server that fails some of the operator's requests, the real operator
(KopfRunner) against the emulated API server.

A busy or failing-over API server answers some requests with 429 (API Priority and Fairness, with
``Retry-After``), 500 (an etcd leader change), 503 or 504, closes the connection of some without an answer (a
restart, or a load balancer in front of it), and some writes commit although their reply is lost (the client sees
a timeout or a dropped connection for a write that happened). Its watch streams end (an API server restarting
behind its load balancer), and etcd compacts the history they would resume from (410 Gone: list again). Every
request of the operator, kopf's and its own, reads and writes alike, may meet one of these, and a rollout must
still come out exactly as it does on a healthy server:

- a good canary: the steps only move forward, every analysis run passes (a failed request to the API server is
  not a failed measurement), nothing is rejected, and the new revision ends stable at ``N`` pods;
- a bad canary: its first analysis fails, it is rolled back, and the stable ends alone at ``N`` pods;
- both: the stable keeps its Deployment until a status that names the new stable is recorded (never, for the bad
  one), no Deployment comes back once deleted, ``N`` pods stay ready throughout, and the operator never crashes.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kopf
import pytest
from kopf.testing import KopfRunner

from modeldeploy.sim.emulator import ClusterEmulator, Fault, RequestRecord, WatchEvent

from .conftest import MD, StandInPrometheus, ThreadedCluster, counts
from .test_operator import events, md, ready, settle, status

pytestmark = pytest.mark.component

N = 4
FAULTS = (
    Fault(429, "TooManyRequests", "the server has received too many requests and has asked us to try again later",
          retry_after=1),
    Fault(500, "InternalError", "etcdserver: leader changed"),
    Fault(503, "ServiceUnavailable", "the server is currently unable to handle the request"),
    Fault(504, "Timeout", "the server was unable to return a response in the time allotted", after=True),
    Fault(500, "InternalError", "etcdserver: request timed out", after=True),
    Fault.reset(),  # no answer at all: the API server restarts, or a load balancer drops the connection
    Fault.reset(after=True),  # a write that commits, and the connection drops before its reply
)  # fmt: skip
LEADER_CHANGED, LOST, LOST_TOO = FAULTS[1], FAULTS[3], FAULTS[4]


class Flaky:
    """Fails a share of the requests, drawn from a seeded generator, with each of ``FAULTS`` in turn. On top of
    the draw, so that the hardest cases never depend on it:

    - after :meth:`lose_next_writes`, the next status write and the next Deployment write commit with a lost reply;
    - the status write that records a new stable revision (the promotion) is refused ``promotion_refusals`` times:
      more than the API client's own tries of one call (3), so that the pass fails at that write and another pass
      must carry the promotion.
    """

    def __init__(self, emulator: ClusterEmulator, rate: float, seed: int, promotion_refusals: int = 4) -> None:
        self.emulator = emulator
        self.rate = rate
        self.random = random.Random(seed)
        self.turn = itertools.cycle(FAULTS)
        self.refusing = itertools.cycle([fault for fault in FAULTS if not fault.after])
        self.pending: dict[tuple[str, str | None], Fault] = {}
        self.promotion_refusals = promotion_refusals
        self.refused: list[RequestRecord] = []

    def lose_next_writes(self) -> None:
        self.pending = {("modeldeployments", "status"): LOST, ("deployments", None): LOST_TOO}

    def promotes(self, body: bytes) -> bool:
        """Whether this status patch names a stable revision other than the one recorded."""
        stable = (json.loads(body).get("status") or {}).get("stableRevision") if body else None
        recorded = ((self.emulator.get_object(MD, "ml", "iris") or {}).get("status") or {}).get("stableRevision")
        return bool(stable and recorded and stable != recorded)

    def __call__(self, record: RequestRecord, body: bytes) -> Fault | None:
        target = (record.resource, record.subresource)
        if record.is_write and target in self.pending:
            return self.pending.pop(target)
        if record.is_write and target == ("modeldeployments", "status") and self.promotes(body):
            if len(self.refused) < self.promotion_refusals:
                self.refused.append(record)
                return LEADER_CHANGED
            return None
        if self.random.random() >= self.rate:
            return None
        # A watch can only be refused (its reply is a stream already under way): it takes the refusals in their own
        # turn, so that every kind of fault still comes round for the other requests, however few there are.
        return next(self.refusing) if record.verb == "watch" else next(self.turn)


class Journal:
    """Every committed change of the ModelDeployment, its Deployments and its HTTPRoute, in commit order (the
    emulator calls :meth:`__call__` synchronously as it commits, so nothing between two samples is missed)."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def __call__(self, event: WatchEvent) -> None:
        if event.resource.plural in ("modeldeployments", "deployments", "httproutes"):
            with self.lock:
                self.entries.append((event.resource.plural, event.type, copy.deepcopy(event.object)))

    @staticmethod
    def line(index: int, plural: str, kind: str, obj: dict[str, Any]) -> str:
        """One entry, in a line: what the status said, a Deployment's counts, a route's weights."""
        if plural == "modeldeployments":
            current = obj.get("status") or {}
            rollout = current.get("rollout") or {}
            facts = [f"stable={current.get('stableRevision')}", f"canary={rollout.get('canaryRevision')}",
                     f"phase={rollout.get('phase')}", f"step={rollout.get('currentStepIndex')}",
                     f"rejected={[r.get('revision') for r in rollout.get('rejectedRevisions') or []]}"]  # fmt: skip
        elif plural == "deployments":
            ready_now = (obj.get("status") or {}).get("readyReplicas")
            facts = [f"replicas={obj['spec'].get('replicas')}", f"ready={ready_now}"]
        else:
            refs = [ref for rule in obj["spec"]["rules"] for ref in rule["backendRefs"]]
            facts = [f"{ref['name']}={ref.get('weight', 1)}" for ref in refs]
        return f"{index} {kind} {plural[:-1]} {obj['metadata']['name']} " + " ".join(facts)

    def check(self, old: str, new: str) -> list[int]:
        """Assert the invariants of every commit (a failure shows the commits up to it); return the step indexes the
        status went through while ``new`` rolled out over ``old`` (until promoted or rejected; in order, repeats
        dropped)."""
        with self.lock:
            entries = list(self.entries)

        def holds(index: int, condition: bool, message: str) -> None:
            if not condition:
                lines = "\n".join(self.line(i, *entries[i]) for i in range(max(0, index - 30), index + 1))
                raise AssertionError(f"{message} at commit {index}; the commits up to it:\n{lines}")

        steps: list[int] = []
        recorded = None  # the stable revision in the last status committed
        ready_pods: dict[str, int] = {}
        weights: dict[str, int] = {}  # the HTTPRoute's weighted backends (Deployment name -> weight)
        deleted: set[str] = set()
        armed = False  # from the moment the stable first had its N pods ready
        for index, (plural, kind, obj) in enumerate(entries):
            name = obj["metadata"]["name"]
            if plural == "modeldeployments":
                current = obj.get("status") or {}
                recorded = current.get("stableRevision")
                rollout = current.get("rollout") or {}
                step = rollout.get("currentStepIndex")
                rolling_out = rollout.get("canaryRevision") == new and not rollout.get("rejectedRevisions")
                if recorded == old and rolling_out and step is not None and (not steps or steps[-1] != step):
                    steps.append(step)
                continue
            if plural == "httproutes":
                rules = obj["spec"]["rules"]
                (weighted,) = [r for r in rules if not any(m.get("headers") for m in r.get("matches", []))]
                weights = {ref["name"]: ref.get("weight", 1) for ref in weighted["backendRefs"]}
            elif kind == "DELETED":
                ready_pods.pop(name, None)
                deleted.add(name)
                holds(index, name != f"iris-{old}" or recorded == new, "the stable deleted before a promotion")
            else:
                holds(index, name not in deleted, f"{name} created again")
                ready_pods[name] = (obj.get("status") or {}).get("readyReplicas", 0)
            armed = armed or ready_pods.get(f"iris-{old}") == N
            if armed:
                holds(index, sum(ready_pods.values()) >= N, f"fewer than {N} pods ready ({ready_pods})")
                short = {name: (weight, ready_pods.get(name, 0)) for name, weight in weights.items()
                         if ready_pods.get(name, 0) < math.ceil(weight * N / 100)}  # fmt: skip
                holds(index, not short, f"more traffic than ready pods ((weight, ready): {short})")
        return steps


MODEL_V2 = {"version": "2", "storageUri": "s3://models/iris/2/model.pt", "format": "TorchScript"}
STEPS = [{"setWeight": 25}, {"analysis": {}}, {"setWeight": 50}, {"pause": {"duration": "1s"}}, {"setWeight": 75},
         {"analysis": {}}]  # fmt: skip


def roll_out(
    emulated: ThreadedCluster,
    prometheus: StandInPrometheus,
    flaky: Flaky,
    journal: Journal,
    *,
    routing: str,
    done: Callable[[str], bool],
) -> tuple[str, str, list[RequestRecord]]:
    """Create ``iris`` and update it to version 2 through ``flaky``, cutting every watch each second (and once
    compacting the history), until ``done(old)``; then stop the faults and let the operator settle. Returns the
    old and the new revision and the requests of the update that met a fault."""
    emulator = emulated.cluster.emulator
    analysis = prometheus.analysis(count=2)
    emulated.call(emulator.add_listener, journal)
    emulated.call(emulator.set_faults, flaky)
    canary: dict[str, Any] = {"steps": STEPS}
    if routing == "GatewayAPI":  # exact weights on an HTTPRoute the operator creates
        canary["trafficRouting"] = {"type": "GatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gateway"}]}}
    rollout = {"strategy": "Canary", "canary": canary, "analysis": analysis}
    emulated.create(MD, md(replicas=N, rollout=rollout))
    emulated.wait_for(lambda: ready(emulated), timeout=60, message="iris Ready through the faults")
    old = status(emulated)["stableRevision"]
    first = len(emulated.requests())
    emulated.call(flaky.lose_next_writes)
    emulated.patch(MD, "ml", "iris", {"spec": {"model": MODEL_V2}})
    new = emulated.wait_for(lambda: (status(emulated).get("rollout") or {}).get("canaryRevision"), timeout=30)
    deadline = time.monotonic() + 120
    cuts = 0
    while not done(old):
        assert time.monotonic() < deadline, (status(emulated), counts(emulated))
        time.sleep(1.0)
        if cuts == 1:
            emulated.call(emulator.compact)  # once, the watchers cannot resume: 410 Gone, list again
        emulated.call(emulator.cut_watches)  # every stream ends; the watchers resume from where they were
        cuts += 1
    emulated.call(emulator.set_faults, None)
    settle(emulated)
    faults = [r for r in emulated.requests()[first:] if r.fault is not None]
    # The faults happened, of every kind, on reads, writes and watches.
    kinds = Counter((r.fault.code, r.fault.after) for r in faults if r.fault is not None)
    assert set(kinds) == {(f.code, f.after) for f in FAULTS}, kinds
    lost = [f"{r.resource}/{r.subresource or ''}" for r in faults if r.fault in (LOST, LOST_TOO) and r.is_write]
    assert "modeldeployments/status" in lost and "deployments/" in lost, lost
    assert {r.verb for r in faults} >= {"list", "watch", "patch"}, Counter(r.verb for r in faults)
    return old, new, faults


ROUTINGS = pytest.mark.parametrize("routing", ["Replicas", "GatewayAPI"])


@ROUTINGS
def test_a_good_canary_through_a_flaky_api_server_is_promoted_as_on_a_healthy_one(
    emulated: ThreadedCluster, operator_factory: Callable[[], KopfRunner], prometheus: StandInPrometheus,
    routing: str,
) -> None:
    flaky = Flaky(emulated.cluster.emulator, rate=0.25, seed=20261124)
    journal = Journal()
    with operator_factory() as runner:

        def promoted(old: str) -> bool:
            return status(emulated).get("stableRevision") not in (None, old) and len(counts(emulated)) == 1

        old, new, _ = roll_out(emulated, prometheus, flaky, journal, routing=routing, done=promoted)
        assert len(flaky.refused) == flaky.promotion_refusals, "the promotion's status write was refused"
        assert status(emulated)["stableRevision"] == new
        rollout = status(emulated)["rollout"]
        assert rollout["phase"] == "Completed", rollout
        assert counts(emulated) == {f"iris-{new}": (N, N)}
        assert not rollout.get("rejectedRevisions"), rollout["rejectedRevisions"]
        runs = rollout.get("analysisRuns") or []
        assert [(run["revision"], run["gate"], run["phase"]) for run in runs] == [
            (new, "step-1", "Successful"),
            (new, "step-5", "Successful"),
        ], runs
        reasons = {reason for _, reason in events(emulated)}
        assert not reasons & {"RolledBack", "AnalysisFailed", "MeasurementFailed", "Aborted"}, reasons
        steps = journal.check(old, new)
        assert steps == sorted(steps) and steps[-1] >= len(STEPS) - 1, steps
    assert runner.exit_code == 0, runner.output
    assert "Traceback" not in runner.output, runner.output


@ROUTINGS
def test_a_bad_canary_through_a_flaky_api_server_is_rolled_back_as_on_a_healthy_one(
    emulated: ThreadedCluster, operator_factory: Callable[[], KopfRunner], prometheus: StandInPrometheus,
    routing: str,
) -> None:
    prometheus.error_ratio = 0.3
    flaky = Flaky(emulated.cluster.emulator, rate=0.25, seed=20261125)
    journal = Journal()
    with operator_factory() as runner:

        def rolled_back(old: str) -> bool:
            rejected = (status(emulated).get("rollout") or {}).get("rejectedRevisions") or []
            return bool(rejected) and counts(emulated) == {f"iris-{old}": (N, N)}

        old, new, _ = roll_out(emulated, prometheus, flaky, journal, routing=routing, done=rolled_back)
        assert flaky.refused == [], "no status ever named the bad canary stable"
        assert status(emulated)["stableRevision"] == old
        rollout = status(emulated)["rollout"]
        assert [(r["revision"], r["reason"]) for r in rollout["rejectedRevisions"]] == [(new, "AnalysisFailed")]
        runs = rollout.get("analysisRuns") or []
        assert [(run["revision"], run["gate"], run["phase"]) for run in runs] == [(new, "step-1", "Failed")], runs
        steps = journal.check(old, new)
        assert steps == sorted(steps) and steps[-1] == 1, steps  # rejected at its first analysis
        assert counts(emulated) == {f"iris-{old}": (N, N)}
    assert runner.exit_code == 0, runner.output
    assert "Traceback" not in runner.output, runner.output


@dataclass(frozen=True)
class Outage:
    """What :func:`outage` saw: the requests met by its faults, the request count at the end of each span but the
    last, when it ended (``time.monotonic``) and the index of the first request after it."""

    down: list[RequestRecord]
    marks: list[int]
    back: float
    back_from: int


def outage(emulated: ThreadedCluster, hook: Callable[[RequestRecord, bytes], Fault | None], *spans: float) -> Outage:
    """Answer every request with ``hook`` for the ``spans`` (seconds, one after another), every watch ended at the
    start, then serve normally again."""
    emulator = emulated.cluster.emulator
    emulated.call(emulator.set_faults, hook)
    down_from = len(emulated.requests())  # after the hook is in place: every request from here on meets it
    emulated.call(emulator.cut_watches)
    marks = []
    for span in spans:
        time.sleep(span)
        marks.append(len(emulated.requests()))
    # Ended and counted in one call on the cluster's thread: a request served normally between the two would
    # otherwise count as met by the outage.
    def serve_normally() -> int:
        emulator.set_faults(None)
        return len(emulator.requests_log)

    back_from = emulated.call(serve_normally)
    back = time.monotonic()
    return Outage(emulated.requests()[down_from:back_from], marks[:-1], back, back_from)


def test_a_rollout_goes_on_once_an_api_server_that_was_down_is_back(
    emulated: ThreadedCluster, operator_factory: Callable[[], KopfRunner], prometheus: StandInPrometheus,
) -> None:
    """The API server answers nothing at all for 8 s in the middle of a canary (a control-plane upgrade restarting
    it): every connection is closed unanswered, every watch ends. The operator keeps trying without a crash, backs
    off, and once the API server is back the rollout goes on by itself and ends as on a healthy server."""
    emulator = emulated.cluster.emulator
    journal = Journal()
    analysis = prometheus.analysis(count=2)
    with operator_factory() as runner:
        emulated.call(emulator.add_listener, journal)
        emulated.create(MD, md(replicas=N, rollout={"strategy": "Canary", "canary": {"steps": STEPS},
                                                    "analysis": analysis}))  # fmt: skip
        emulated.wait_for(lambda: ready(emulated), timeout=60, message="iris Ready")
        old = status(emulated)["stableRevision"]
        emulated.patch(MD, "ml", "iris", {"spec": {"model": MODEL_V2}})
        new = emulated.wait_for(lambda: (status(emulated).get("rollout") or {}).get("canaryRevision"), timeout=30)

        went = outage(emulated, lambda record, body: Fault.reset(), 8.0)
        down, back, back_from = went.down, went.back, went.back_from
        assert down and {r.code for r in down} == {0}, "nothing was answered while it was down"
        tried = [r for r in down if r.user_agent.startswith("modeldeploy")]
        assert tried, "the operator kept trying while it was down"

        def operator_wrote() -> bool:
            return any(r.is_write and r.user_agent.startswith("modeldeploy") for r in emulated.requests()[back_from:])

        emulated.wait_for(operator_wrote, timeout=61, message="the operator writing again (its longest delay: 60 s)")
        resumed = time.monotonic() - back
        emulated.wait_for(
            lambda: status(emulated).get("stableRevision") == new and len(counts(emulated)) == 1,
            timeout=90,
            message="the canary promoted after the outage",
        )
        report = (f"outage: {len(down)} requests unanswered ({len(tried)} of them the operator's own); the operator "
                  f"wrote again {resumed:.1f}s after the API server was back")  # fmt: skip
        rollout = status(emulated)["rollout"]
        assert rollout["phase"] == "Completed" and not rollout.get("rejectedRevisions"), rollout
        assert [(run["gate"], run["phase"]) for run in rollout.get("analysisRuns") or []] == [
            ("step-1", "Successful"),
            ("step-5", "Successful"),
        ]
        assert counts(emulated) == {f"iris-{new}": (N, N)}
        steps = journal.check(old, new)
        assert steps == sorted(steps) and steps[-1] >= len(STEPS) - 1, steps
    assert runner.exit_code == 0, runner.output
    assert "Traceback" not in runner.output, runner.output
    print(report)  # outside the runner, which captures the standard output while it runs


KOPF_RETRIES = sum(kopf.OperatorSettings().networking.error_backoffs)  # kopf's default: 9 tries over 54 s
PAST_KOPFS_RETRIES = 6.0
RESTARTING = (
    Fault(503, "ServiceUnavailable", "the server is currently unable to handle the request"),
    Fault(403, "Forbidden", 'deployments.apps is forbidden: User "system:serviceaccount:modeldeploy:modeldeploy" '
                            'cannot list resource "deployments" in API group "apps" at the cluster scope'),
    Fault(500, "InternalError", "etcdserver: request timed out"),
)  # fmt: skip


def test_the_operator_outlasts_an_api_server_that_refuses_everything_for_longer_than_kopfs_retries(
    emulated: ThreadedCluster, operator_factory: Callable[[], KopfRunner]
) -> None:
    """For longer than kopf's own retries of a list or a watch (about 54 s), the API server answers every request
    with 503, 403 and 500 in turn, as one restarting behind a load balancer does (no backend, then its RBAC not
    loaded yet, then etcd not answering). The operator must neither stop nor give up its watches: kopf keeps trying
    past its default retries, and a change made once the API server is back is applied within seconds."""
    turn = itertools.cycle(RESTARTING)
    with operator_factory() as runner:
        emulated.create(MD, md(replicas=2))
        emulated.wait_for(lambda: ready(emulated), timeout=60, message="iris Ready")
        went = outage(emulated, lambda record, body: next(turn), KOPF_RETRIES, PAST_KOPFS_RETRIES)
        assert went.down and {r.code for r in went.down} == {503, 403, 500}, Counter(r.code for r in went.down)
        late = [r for r in emulated.requests()[went.marks[0]:went.back_from] if r.verb in ("list", "watch")]
        assert late, "kopf went on listing and watching after its default retries were spent"

        emulated.patch(MD, "ml", "iris", {"spec": {"replicas": 3}})
        emulated.wait_for(
            lambda: ready(emulated) and counts(emulated) == {f"iris-{status(emulated)['stableRevision']}": (3, 3)},
            timeout=30,
            message="the change made after the outage applied",
        )
        applied = time.monotonic() - went.back
        report = (f"refused for {KOPF_RETRIES + PAST_KOPFS_RETRIES:.0f}s: {len(went.down)} requests ({len(late)} "
                  f"lists and watches after kopf's default retries); a change made after it applied in "
                  f"{applied:.1f}s")  # fmt: skip
    assert runner.exit_code == 0, runner.output
    assert "has failed" not in runner.output and "Traceback" not in runner.output, runner.output
    print(report)  # outside the runner, which captures the standard output while it runs
