"""Tier 2: a child deleted while the operator's watch was down, the real operator (KopfRunner) against the emulated
API server.

A watch that cannot resume (its resourceVersion compacted away: 410 Gone, after an API server restart or a network
partition longer than etcd's compaction interval) lists again. kopf keeps in its indexes every object the new list no
longer has, so a Deployment deleted in that gap would stay in the operator's view for as long as it runs.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from kopf.testing import KopfRunner

from .conftest import DEPLOYMENTS, MD, SERVICES, ThreadedCluster
from .test_operator import children, md, quiet_period, ready, settle

pytestmark = pytest.mark.component


def delete_unseen(emulated: ThreadedCluster, resource: str, name: str) -> None:
    """Delete ``name`` so that no watch sees it go: every stream ends first, and the history that the watchers
    would resume from is compacted right after, all in one step of the API server's loop."""
    emulator = emulated.cluster.emulator

    def unseen() -> None:
        emulator.cut_watches()
        emulator.delete_object(resource, "ml", name)
        emulator.compact()

    emulated.call(unseen)


@pytest.mark.parametrize("resource", [DEPLOYMENTS, SERVICES], ids=["Deployment", "Service"])
def test_a_child_deleted_while_the_watch_was_down_is_created_again(
    emulated: ThreadedCluster, operator_factory: Callable[[], KopfRunner], resource: str
) -> None:
    with operator_factory() as runner:
        emulated.create(MD, md())
        emulated.wait_for(lambda: ready(emulated), message="iris Ready")
        settle(emulated)
        (child,) = children(emulated, resource)
        name, uid = child["metadata"]["name"], child["metadata"]["uid"]
        delete_unseen(emulated, resource, name)

        def created_again() -> bool:
            current = emulated.get(resource, "ml", name)
            return current is not None and current["metadata"]["uid"] != uid

        emulated.wait_for(created_again, timeout=20, message=f"{name} created again")
        emulated.wait_for(lambda: ready(emulated), message="iris Ready again")
        settle(emulated)
        assert quiet_period(emulated, 1.5) == [], "converged again: no writes"
    assert runner.exit_code == 0, runner.output
    assert "Traceback" not in runner.output, runner.output
