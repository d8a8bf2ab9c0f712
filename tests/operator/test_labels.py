"""modeldeploy.labels: label keys and selectors of the children (docs/design.md, "Naming of children")."""

from __future__ import annotations

from modeldeploy import labels, schema


def test_revision_labels_include_the_common_ones() -> None:
    got = labels.revision_labels("iris", "abc", "1")
    assert got == {
        "app.kubernetes.io/name": "modeldeploy-runtime",
        "app.kubernetes.io/instance": "iris",
        "app.kubernetes.io/managed-by": "modeldeploy",
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/version": "1",
        "modeldeploy.io/revision": "abc",
        "modeldeploy.io/model-deployment": "iris",
    }
    assert labels.common_labels("iris").items() <= got.items()


def test_selectors() -> None:
    assert labels.selector("iris") == {"modeldeploy.io/model-deployment": "iris"}
    assert labels.revision_selector("iris", "abc") == {
        "modeldeploy.io/model-deployment": "iris",
        "modeldeploy.io/revision": "abc",
    }
    assert labels.selector_string(labels.selector("iris")) == "modeldeploy.io/model-deployment=iris"
    assert (
        labels.selector_string(labels.revision_selector("iris", "abc"))
        == "modeldeploy.io/model-deployment=iris,modeldeploy.io/revision=abc"
    )


def test_reserved_keys_match_the_crd_rule() -> None:
    podlabel_rules = [r for r in schema.cel_rules() if r.path == ("spec", "runtime", "podLabels")]
    [rule] = [r for r in podlabel_rules if "modeldeploy.io/" in r.rule]
    for key in labels.RESERVED_LABEL_KEYS:
        assert key in rule.rule
