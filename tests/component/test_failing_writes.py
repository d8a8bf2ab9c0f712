"""Tier 2: a validating admission webhook that times out (``failurePolicy: Fail``: the API server waits its
``timeoutSeconds``, then answers 500 ``failed calling webhook``) holds up the writes it matches. The ModelDeployments
it holds up are reported as such once the failures have lasted (``WriteFailing``: a Warning event and
``Degraded=True``) and converge once it answers again; the others go on meanwhile, unreported."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from kopf.testing import KopfRunner

from modeldeploy.sim.emulator import Fault, RequestRecord

from .conftest import DEPLOYMENTS, EVENTS, MD, ThreadedCluster
from .test_operator import condition, md, ready

pytestmark = pytest.mark.component

WEBHOOK_SECONDS = 2.0
ATTEMPTS = 3
"""Tries of one write by the operator's client (``KubeClient.attempts``): a pass fails after about 3 x 2 s."""
REPORT_SECONDS = 10.0
"""More than one failed pass lasts and less than two: the second failed pass is not reported, the third is."""
TIMEOUT = Fault(
    500,
    "InternalError",
    'Internal error occurred: failed calling webhook "validate.policy.example.com": failed to call webhook: Post '
    '"https://policy.example.svc:443/validate?timeout=2s": context deadline exceeded',
    delay=WEBHOOK_SECONDS,
)


class SlowWebhook:
    """Times out on every apply (the operator's write) of a Deployment of ModelDeployment ``iris`` while ``down`` is
    set; remembers when it first did (``time.monotonic``)."""

    def __init__(self) -> None:
        self.down = threading.Event()
        self.down.set()
        self.first: float | None = None
        self.calls = 0

    def __call__(self, record: RequestRecord, body: bytes) -> Fault | None:
        if not self.down.is_set() or record.resource != "deployments" or record.verb != "patch":
            return None
        if not (record.name or "").startswith("iris-"):
            return None
        if self.first is None:
            self.first = time.monotonic()
        self.calls += 1
        return TIMEOUT


def failing(emulated: ThreadedCluster, name: str = "iris") -> list[dict[str, object]]:
    return [
        e for e in emulated.list(EVENTS, "ml")
        if e["reason"] == "WriteFailing" and e["involvedObject"]["name"] == name
    ]  # fmt: skip


def test_a_webhook_that_times_out_is_reported_on_what_it_holds_up_and_the_rest_goes_on(
    emulated: ThreadedCluster, operator_factory: Callable[[], KopfRunner], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELDEPLOY_WRITE_FAILURE_SECONDS", str(REPORT_SECONDS))
    webhook = SlowWebhook()
    emulated.call(emulated.cluster.emulator.set_faults, webhook)
    other = md()
    other["metadata"]["name"] = "other"
    with operator_factory() as runner:
        created = time.monotonic()
        emulated.create(MD, md())
        emulated.create(MD, other)
        emulated.wait_for(lambda: ready(emulated, "other"), message="other Ready while iris's writes time out")
        assert time.monotonic() - created < 2 * WEBHOOK_SECONDS, "other never waited on iris's webhook calls"
        assert webhook.first is not None
        assert emulated.list(DEPLOYMENTS, "ml", "modeldeploy.io/model-deployment=iris") == []

        # A third pass has started: the second failed, REPORT_SECONDS after the first had not passed yet.
        emulated.wait_for(lambda: webhook.calls > 2 * ATTEMPTS, timeout=40, message="a third pass")
        assert failing(emulated) == [], "not before the failures have lasted"
        [event] = emulated.wait_for(lambda: failing(emulated), timeout=40, message="a WriteFailing event on iris")
        assert time.monotonic() - webhook.first >= REPORT_SECONDS
        message = str(event["message"])
        assert event["type"] == "Warning" and message.startswith("The API server failed to apply Deployment ml/iris-")
        assert TIMEOUT.message in message and "in a row, this one included)" in message
        degraded = condition(emulated, "Degraded")
        assert (degraded["status"], degraded["reason"]) == ("True", "WriteFailing")
        assert TIMEOUT.message in degraded["message"]
        assert condition(emulated, "Degraded", "other")["status"] == "False" and failing(emulated, "other") == []

        time.sleep(2 * WEBHOOK_SECONDS + 1.0)  # another failed pass at least
        assert len(failing(emulated)) == 1, "once while it lasts"
        webhook.down.clear()
        emulated.wait_for(lambda: ready(emulated), timeout=60, message="iris Ready once the webhook answers")
        assert condition(emulated, "Degraded")["status"] == "False"
        assert len(failing(emulated)) == 1
    assert runner.exit_code == 0, runner.output
    assert "Traceback" not in runner.output, runner.output
