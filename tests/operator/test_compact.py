"""Tests for modeldeploy.compact: the copies the operator's caches keep."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from modeldeploy.compact import SHARED_STRING_LENGTH, compact, compact_object


def deployment(name: str) -> dict[str, Any]:
    # Decoded from JSON like a watch event, so no string is shared with another object by accident.
    return dict(
        json.loads(
            json.dumps(
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {
                        "name": name,
                        "namespace": "ml",
                        "labels": {"app.kubernetes.io/managed-by": "modeldeploy"},
                        "managedFields": [{"manager": "modeldeploy", "fieldsV1": {"f:spec": {}}}],
                    },
                    "spec": {
                        "replicas": 2,
                        "template": {
                            "spec": {
                                "containers": [
                                    {
                                        "name": "model-server",
                                        "imagePullPolicy": "IfNotPresent",
                                        "ports": [{"containerPort": 8080}],
                                        "args": ["--flag", "x" * (SHARED_STRING_LENGTH + 1)],
                                    }
                                ]
                            }
                        },
                    },
                    "status": {"readyReplicas": 2, "conditions": [{"type": "Available", "status": "True"}]},
                }
            )
        )
    )


def container(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    result: Mapping[str, Any] = obj["spec"]["template"]["spec"]["containers"][0]
    return result


def test_copy_is_equal_without_managed_fields() -> None:
    source = deployment("a")
    copy = compact_object(source)
    assert "managedFields" not in copy["metadata"]
    expected = {**source, "metadata": {k: v for k, v in source["metadata"].items() if k != "managedFields"}}
    assert copy == expected
    assert list(copy) == list(source)  # Key order kept.
    assert "managedFields" in source["metadata"]  # The source is left as it was.


def test_copies_of_two_objects_share_keys_and_short_strings_but_not_long_ones() -> None:
    a, b = compact_object(deployment("a")), compact_object(deployment("b"))
    key_a = next(k for k in container(a) if k == "imagePullPolicy")
    key_b = next(k for k in container(b) if k == "imagePullPolicy")
    assert key_a is key_b
    assert container(a)["imagePullPolicy"] is container(b)["imagePullPolicy"]
    assert container(a)["args"][1] == container(b)["args"][1]
    assert container(a)["args"][1] is not container(b)["args"][1]


def test_copy_shares_no_container_with_its_source() -> None:
    source = deployment("a")
    copy = compact_object(source)
    source["spec"]["template"]["spec"]["containers"][0]["ports"].append({"containerPort": 9090})
    source["status"]["conditions"][0]["status"] = "False"
    assert container(copy)["ports"] == [{"containerPort": 8080}]
    assert copy["status"]["conditions"][0]["status"] == "True"


class Body(Mapping[str, Any]):
    """A read-only mapping over a dict (as kopf's Body is)."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self._raw = raw

    def __getitem__(self, key: str) -> Any:
        return self._raw[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)


def test_mappings_become_plain_dicts_and_scalars_are_kept() -> None:
    copy = compact_object(Body(deployment("a")))
    assert type(copy) is dict
    assert copy["spec"]["replicas"] == 2
    assert compact(Body({"a": [1, 2.5, None, True]})) == {"a": [1, 2.5, None, True]}
    assert compact(3) == 3
