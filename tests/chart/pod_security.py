"""Pod Security Standards, "restricted" profile (which includes "baseline"), checked on a pod spec.

Follows https://kubernetes.io/docs/concepts/security/pod-security-standards/ (policy version latest):
each function returns the list of violations, empty when the pod is admitted.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
BASELINE_CAPABILITIES = {
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def _containers(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from spec.get(key) or []


def check_restricted(spec: dict[str, Any]) -> list[str]:
    """Violations of the restricted profile by a PodSpec."""
    errors: list[str] = []
    pod_sc = spec.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            errors.append(f"spec.{field} must not be true")
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            errors.append(f"volume {volume.get('name')}: type {sorted(kinds)} not allowed")
    for sysctl in pod_sc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            errors.append(f"sysctl {sysctl.get('name')} not allowed")
    if (pod_sc.get("seLinuxOptions") or {}).get("type", "") not in SELINUX_TYPES:
        errors.append("pod seLinuxOptions.type not allowed")
    if pod_sc.get("runAsUser") == 0:
        errors.append("pod runAsUser must not be 0")
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    if pod_seccomp not in (None, "RuntimeDefault", "Localhost"):
        errors.append(f"pod seccompProfile {pod_seccomp} not allowed")
    pod_apparmor = (pod_sc.get("appArmorProfile") or {}).get("type")
    if pod_apparmor not in (None, "RuntimeDefault", "Localhost"):
        errors.append(f"pod appArmorProfile {pod_apparmor} not allowed")
    for c in _containers(spec):
        name = c.get("name")
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            errors.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            errors.append(f"{name}: allowPrivilegeEscalation must be false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            errors.append(f"{name}: capabilities must drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            errors.append(f"{name}: only NET_BIND_SERVICE may be added")
        if set(caps.get("add") or []) - BASELINE_CAPABILITIES:
            errors.append(f"{name}: capabilities beyond baseline")
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            errors.append(f"{name}: runAsNonRoot must be true")
        if sc.get("runAsUser") == 0:
            errors.append(f"{name}: runAsUser must not be 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            errors.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost")
        if (sc.get("appArmorProfile") or {}).get("type") not in (None, "RuntimeDefault", "Localhost"):
            errors.append(f"{name}: appArmorProfile not allowed")
        if (sc.get("seLinuxOptions") or {}).get("type", "") not in SELINUX_TYPES:
            errors.append(f"{name}: seLinuxOptions.type not allowed")
        if sc.get("procMount", "Default") != "Default":
            errors.append(f"{name}: procMount must be Default")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                errors.append(f"{name}: hostPort not allowed")
    return errors
