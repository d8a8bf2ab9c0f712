"""Whether NetworkPolicies admit a connection between two pods, evaluated as networking.k8s.io/v1 defines it.

Follows https://kubernetes.io/docs/concepts/services-networking/network-policies/: a pod is isolated for ingress
when a policy of its namespace selects it (`podSelector`) with `Ingress` among its policy types, and then admits
exactly what one of those policies' ingress rules allows (the rules add up; none subtracts). Only ingress between
pods is evaluated: `ipBlock` peers never match, as the tests know no pod IPs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True)
class Pod:
    """A pod as a NetworkPolicy sees it: its namespace's labels, its own labels and its named container ports."""

    namespace: str
    labels: Mapping[str, str]
    ports: Mapping[str, int] = field(default_factory=dict)
    """Named container ports (name: number), which a policy's named ports refer to."""
    namespace_labels: Mapping[str, str] = field(default_factory=dict)
    """Labels of the namespace besides `kubernetes.io/metadata.name`, which the API server sets on every one."""

    def all_namespace_labels(self) -> dict[str, str]:
        return {**self.namespace_labels, NAMESPACE_NAME_LABEL: self.namespace}


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A LabelSelector: every matchLabels pair and every matchExpressions requirement holds (an empty one matches
    everything)."""
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for requirement in selector.get("matchExpressions") or []:
        key, operator, values = requirement["key"], requirement["operator"], requirement.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise ValueError(f"unknown label selector operator {operator!r}")
    return True


def _peer_matches(peer: Mapping[str, Any], policy_namespace: str, source: Pod) -> bool:
    """A NetworkPolicyPeer: a podSelector alone means pods of the policy's own namespace; a namespaceSelector
    alone every pod of the namespaces it selects; both together the selected pods of the selected namespaces."""
    if "ipBlock" in peer:
        return False
    namespace_selector = peer.get("namespaceSelector")
    if namespace_selector is None:
        if source.namespace != policy_namespace:
            return False
    elif not selector_matches(namespace_selector, source.all_namespace_labels()):
        return False
    pod_selector = peer.get("podSelector")
    return pod_selector is None or selector_matches(pod_selector, source.labels)


def _port_matches(entry: Mapping[str, Any], destination: Pod, port: int, protocol: str) -> bool:
    """A NetworkPolicyPort: the protocol (TCP unless given) and the port, by number (up to endPort) or by the
    destination container port's name; no port means every port."""
    if entry.get("protocol", "TCP") != protocol:
        return False
    if "port" not in entry:
        return True
    wanted = entry["port"]
    if isinstance(wanted, str):
        return destination.ports.get(wanted) == port
    return bool(wanted <= port <= entry.get("endPort", wanted))


def _rule_admits(
    rule: Mapping[str, Any], policy_namespace: str, source: Pod, destination: Pod, port: int, protocol: str
) -> bool:
    """An ingress rule: empty or absent `ports` means every port, empty or absent `from` every source."""
    ports = rule.get("ports") or []
    if ports and not any(_port_matches(entry, destination, port, protocol) for entry in ports):
        return False
    peers = rule.get("from") or []
    return not peers or any(_peer_matches(peer, policy_namespace, source) for peer in peers)


def _policy_types(policy: Mapping[str, Any]) -> list[str]:
    """Ingress always, Egress when the policy has egress rules, unless policyTypes says otherwise."""
    spec = policy["spec"]
    return list(spec.get("policyTypes") or (["Ingress", "Egress"] if "egress" in spec else ["Ingress"]))


def isolating_for_ingress(policies: Iterable[Mapping[str, Any]], pod: Pod) -> list[Mapping[str, Any]]:
    """The NetworkPolicies that select `pod` for ingress."""
    return [
        policy
        for policy in policies
        if policy["kind"] == "NetworkPolicy"
        and policy["metadata"]["namespace"] == pod.namespace
        and "Ingress" in _policy_types(policy)
        and selector_matches(policy["spec"]["podSelector"], pod.labels)
    ]


def ingress_admitted(
    policies: Iterable[Mapping[str, Any]], source: Pod, destination: Pod, port: int, protocol: str = "TCP"
) -> bool:
    """Whether a connection from `source` to `destination`'s `port` is admitted by the policies: always when none
    isolates the destination, else when a rule of one of those that do admits it."""
    isolating = isolating_for_ingress(policies, destination)
    return not isolating or any(
        _rule_admits(rule, destination.namespace, source, destination, port, protocol)
        for policy in isolating
        for rule in policy["spec"].get("ingress") or []
    )
