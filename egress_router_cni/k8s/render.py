"""Render an egress router's Kubernetes objects, and the installer of the plugin (pure: dicts out).

The router objects are the ones the Cluster Network Operator renders for an
EgressRouter (bindata/egress-router/), with its fixed names, minus its bugs:
every address (not only the first), fallbackIP, the macvlan master and mode
reach the plugin config, and the Service the API documentation promises is
actually rendered.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..config import DEFAULT_LOG_FILE
from .egressrouter import API_VERSION, KIND, EgressRouter

# The operator's fixed names (the product page: "not configurable").
NAD_NAME = "egress-router-cni-nad"
DEPLOYMENT_NAME = "egress-router-cni-deployment"
APP_LABEL = "egress-router-cni"
CONTAINER_NAME = "egress-router-cni-pod"
# The operator renders no Service; this name is ours, fixed the same way.
SERVICE_NAME = "egress-router-cni"

DEFAULT_IMAGE = "registry.access.redhat.com/ubi9/ubi-minimal:latest"
PLUGIN_CNI_VERSION = "0.4.0"  # what the operator writes; Multus accepts it everywhere
NETWORKS_ANNOTATION = "k8s.v1.cni.cncf.io/networks"
MANAGEMENT_ANNOTATION = "target.workload.openshift.io/management"
NAD_API_VERSION = "k8s.cni.cncf.io/v1"

INSTALLER_NAMESPACE = "egress-router-system"
INSTALLER_NAME = "egress-router-installer"
DEFAULT_CNI_BIN_DIR = "/opt/cni/bin"
# Where the Containerfile puts the PyInstaller onedir build (executable + _internal/ + BUILD_ID).
IMAGE_BUNDLE_DIR = "/opt/egress-router"
_HOST_BIN_MOUNT = "/host/cni-bin"
# The node policy (--policy): a ConfigMap the installer copies to every node's /etc/egress-router.
POLICY_CONFIGMAP = "egress-router-policy"
POLICY_HOST_DIR = "/etc/egress-router"
_POLICY_SOURCE_MOUNT = "/etc/egress-router-policy-source"
_POLICY_HOST_MOUNT = "/host/etc/egress-router"

# `egress-router-cni-<suffix>` is a label value and a Service name: at most 63 characters.
MAX_SUFFIX_LENGTH = 63 - len(APP_LABEL) - 1
_SUFFIX_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class RenderError(Exception):
    """The routers cannot be rendered as asked (colliding names, a bad suffix or path)."""


@dataclass(frozen=True)
class RouterNames:
    """The names of one router's objects and the pod label that ties them together."""

    nad: str = NAD_NAME
    deployment: str = DEPLOYMENT_NAME
    service: str = SERVICE_NAME
    app: str = APP_LABEL


@dataclass(frozen=True)
class Rendered:
    """Objects in apply order, and notes for the user (stderr, never mixed into the objects)."""

    objects: Tuple[Dict[str, Any], ...]
    notes: Tuple[str, ...] = ()


def router_names(suffix: Optional[str] = None) -> RouterNames:
    """The operator's fixed names, or each of them with `-<suffix>` appended."""
    if not suffix:
        return RouterNames()
    return RouterNames(
        nad=f"{NAD_NAME}-{suffix}",
        deployment=f"{DEPLOYMENT_NAME}-{suffix}",
        service=f"{SERVICE_NAME}-{suffix}",
        app=f"{APP_LABEL}-{suffix}",
    )


def expand_suffix(template: str, router: EgressRouter) -> str:
    """Replace `{name}` with the router's name and check the result; raise RenderError."""
    suffix = template.replace("{name}", router.name)
    if len(suffix) > MAX_SUFFIX_LENGTH or not _SUFFIX_RE.match(suffix):
        raise RenderError(
            f"name suffix {suffix!r} (for {KIND} {router.display_name()}) must be 1-{MAX_SUFFIX_LENGTH} "
            "lower-case letters, digits or '-', starting and ending with a letter or digit: "
            f"it becomes part of the label app={APP_LABEL}-SUFFIX and of a Service name"
        )
    return suffix


# --------------------------------------------------------------------------- the router


def render_routers(
    routers: Sequence[EgressRouter],
    image: str = DEFAULT_IMAGE,
    namespace: Optional[str] = None,
    name_suffix: Optional[str] = None,
) -> Rendered:
    """Render every router's NAD, Deployment and Service; raise RenderError if two would collide."""
    planned = [_plan(router, namespace, name_suffix) for router in routers]
    _check_collisions(planned)
    objects: List[Dict[str, Any]] = []
    notes: List[str] = []
    for router, names, target_namespace in planned:
        keep_owner = router.uid is not None and (namespace is None or namespace == router.namespace)
        if router.uid is not None and not keep_owner:
            notes.append(
                f"{KIND} {router.display_name()}: no ownerReference, because the objects go to namespace "
                f"{namespace!r}: the garbage collector deletes objects whose owner is not in their namespace"
            )
        owners = [owner_reference(router)] if keep_owner else []
        objects.append(render_nad(router, names, target_namespace, owners))
        objects.append(render_deployment(router, names, target_namespace, image, owners))
        service = render_service(router, names, target_namespace, owners)
        if service is not None:
            objects.append(service)
        notes.extend(_router_notes(router, service is not None))
    if name_suffix:
        notes.append(
            "with a name suffix the objects do not carry the operator's fixed names: select the router pods "
            f"with -l app={APP_LABEL}-SUFFIX instead of -l app={APP_LABEL}"
        )
    return Rendered(tuple(objects), tuple(notes))


def _plan(
    router: EgressRouter, namespace: Optional[str], name_suffix: Optional[str]
) -> Tuple[EgressRouter, RouterNames, Optional[str]]:
    suffix = expand_suffix(name_suffix, router) if name_suffix else None
    return router, router_names(suffix), namespace or router.namespace


def _check_collisions(planned: Sequence[Tuple[EgressRouter, RouterNames, Optional[str]]]) -> None:
    # The operator's names are fixed, so two routers in one namespace overwrite
    # each other's objects (and each apply steals the ownerReferences).
    groups: Dict[Tuple[str, str], List[EgressRouter]] = {}
    for router, names, target_namespace in planned:
        groups.setdefault((target_namespace or "", names.nad), []).append(router)
    for (target_namespace, nad), members in groups.items():
        if len(members) < 2:
            continue
        where = f"namespace {target_namespace!r}" if target_namespace else "the current namespace"
        who = ", ".join(r.display_name() for r in members)
        raise RenderError(
            f"{len(members)} {KIND}s ({who}) would render into {where} under the same names ({nad}, ...): "
            "the operator's names are fixed, so each would overwrite the other. Render them into different "
            "namespaces, or give each its own names with a suffix (egress-router render --name-suffix '{name}')"
        )


def _router_notes(router: EgressRouter, has_service: bool) -> List[str]:
    notes: List[str] = []
    who = f"{KIND} {router.display_name()}"
    if not router.redirect_rules and router.fallback_ip is None:
        notes.append(f"{who} has neither redirectRules nor fallbackIP: the router will redirect nothing")
    elif not has_service:
        notes.append(
            f"{who} has no redirectRules, so no Service was rendered: its fallbackIP takes every port, "
            "so write a Service with the ports your clients use"
        )
    return notes


def owner_reference(router: EgressRouter) -> Dict[str, Any]:
    """The reference that lets the garbage collector delete the objects with the EgressRouter."""
    # controller=true as the operator sets it. No blockOwnerDeletion: setting it
    # needs update rights on the EgressRouter's finalizers, which a user
    # applying the output often lacks (OwnerReferencesPermissionEnforcement).
    return {"apiVersion": API_VERSION, "kind": KIND, "name": router.name, "uid": router.uid, "controller": True}


def build_plugin_config(router: EgressRouter, network_name: str = NAD_NAME) -> Dict[str, Any]:
    """The plugin config (the NAD's spec.config) for a router."""
    gateways = [str(g) for g in router.gateways()]
    ip: Dict[str, Any] = {
        "addresses": [str(a.ip) for a in router.addresses],
        # The plugin takes one gateway per family: a plain string when there is one.
        "gateway": gateways[0] if len(gateways) == 1 else gateways,
        "destinations": [rule.destination() for rule in router.redirect_rules],
    }
    if router.fallback_ip is not None:
        ip["fallbackIP"] = str(router.fallback_ip)
    interface_args: Dict[str, Any] = {}
    if router.macvlan_master:
        interface_args["master"] = router.macvlan_master
    interface_args["mode"] = router.macvlan_mode.lower()  # the plugin's spelling: bridge, vepa, ...
    return {
        "cniVersion": PLUGIN_CNI_VERSION,
        "type": "egress-router",
        "name": network_name,
        "ip": ip,
        "interfaceArgs": interface_args,
        # Fixed, as with the operator: the product page's verification reads this file.
        "log_file": DEFAULT_LOG_FILE,
        "log_level": "debug",
    }


def render_nad(
    router: EgressRouter,
    names: RouterNames = RouterNames(),
    namespace: Optional[str] = None,
    owners: Sequence[Dict[str, Any]] = (),
) -> Dict[str, Any]:
    """The NetworkAttachmentDefinition carrying the plugin config."""
    config = build_plugin_config(router, names.nad)
    return {
        "apiVersion": NAD_API_VERSION,
        "kind": "NetworkAttachmentDefinition",
        "metadata": _metadata(names.nad, namespace, _labels(router, names), owners),
        # Indented so that `kubectl get net-attach-def -o yaml` shows it readably.
        "spec": {"config": json.dumps(config, indent=2)},
    }


def render_deployment(
    router: EgressRouter,
    names: RouterNames = RouterNames(),
    namespace: Optional[str] = None,
    image: str = DEFAULT_IMAGE,
    owners: Sequence[Dict[str, Any]] = (),
) -> Dict[str, Any]:
    """The router Deployment: one pod attached to the NAD, doing nothing itself (the CNI does the work)."""
    # default-route makes Multus keep the cluster and service routes on eth0
    # while the default route moves to net1 (CNO #1390, BZ2075475).
    networks = [{"name": names.nad, "default-route": [str(g) for g in router.gateways()]}]
    container = {
        "name": CONTAINER_NAME,
        "image": image,
        "command": ["/bin/sh", "-c", "sleep infinity"],
        "resources": {"requests": {"cpu": "100m", "memory": "16Mi"}},
        "securityContext": {
            "privileged": False,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(names.deployment, namespace, _labels(router, names), owners),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": names.app}},
            # A rolling update would start the new pod while the old one still
            # holds the reserved address: two macvlans answering ARP for it.
            "strategy": {"type": "Recreate"},
            "template": {
                "metadata": {
                    "labels": {"app": names.app},
                    "annotations": {
                        NETWORKS_ANNOTATION: json.dumps(networks, separators=(",", ":")),
                        MANAGEMENT_ANNOTATION: json.dumps({"effect": "PreferredDuringScheduling"}),
                    },
                },
                "spec": {
                    # `sleep` runs as PID 1 and ignores SIGTERM: without this every
                    # restart of the router would wait the default 30 s.
                    "terminationGracePeriodSeconds": 5,
                    "containers": [container],
                },
            },
        },
    }


def render_service(
    router: EgressRouter,
    names: RouterNames = RouterNames(),
    namespace: Optional[str] = None,
    owners: Sequence[Dict[str, Any]] = (),
) -> Optional[Dict[str, Any]]:
    """The ClusterIP Service exposing each redirect port, or None when the router has no rules."""
    ports: List[Dict[str, Any]] = []
    seen = set()
    for rule in router.redirect_rules:
        key = (rule.port, rule.protocol)
        if key in seen:
            continue  # the same port/protocol to an IPv4 and an IPv6 destination: one Service port
        seen.add(key)
        # targetPort is the port itself: the router pod DNATs by the port it
        # receives; the rule's targetPort is the destination's port, not the pod's.
        ports.append(
            {
                "name": f"{rule.protocol.lower()}-{rule.port}",
                "protocol": rule.protocol,
                "port": rule.port,
                "targetPort": rule.port,
            }
        )
    if not ports:
        return None
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(names.service, namespace, _labels(router, names), owners),
        "spec": {"type": "ClusterIP", "selector": {"app": names.app}, "ports": ports},
    }


def _labels(router: EgressRouter, names: RouterNames) -> Dict[str, str]:
    return {**router.labels, "app": names.app}


def _metadata(
    name: str, namespace: Optional[str], labels: Dict[str, str], owners: Sequence[Dict[str, Any]] = ()
) -> Dict[str, Any]:
    meta: Dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace  # absent: kubectl applies into the current namespace
    if labels:
        meta["labels"] = dict(labels)
    if owners:
        meta["ownerReferences"] = [dict(o) for o in owners]
    return meta


# --------------------------------------------------------------------------- the installer

# Run by the installer's init container on every node. Like Multus's installer
# it copies under a temporary name and renames, so a runtime exec'ing the
# plugin sees the old build or the new one, never a half-written file. The
# onedir build is a tree (executable + _internal/), which cannot be renamed
# over an existing tree: each build gets its own directory, and the executable
# name is a symlink swapped by rename(2). PyInstaller resolves the symlink to
# find _internal/.
INSTALL_SCRIPT = """\
set -eu
store=.egress-router.d
id=$(cat "$SOURCE_DIR/BUILD_ID")
mkdir -p "$CNI_BIN_DIR/$store"
rm -rf "$CNI_BIN_DIR/$store"/.tmp-*
if [ ! -x "$CNI_BIN_DIR/$store/$id/egress-router" ]; then
  cp -a "$SOURCE_DIR" "$CNI_BIN_DIR/$store/.tmp-$id"
  mv "$CNI_BIN_DIR/$store/.tmp-$id" "$CNI_BIN_DIR/$store/$id"
fi
# A damaged copy fails here, not in a pod's CNI ADD.
CNI_COMMAND=VERSION "$CNI_BIN_DIR/$store/$id/egress-router" </dev/null >/dev/null
old=$(readlink "$CNI_BIN_DIR/egress-router" 2>/dev/null || true)
ln -sfn "$store/$id/egress-router" "$CNI_BIN_DIR/.egress-router.new"
mv -Tf "$CNI_BIN_DIR/.egress-router.new" "$CNI_BIN_DIR/egress-router"
# Keep the build that was live until now: an ADD started before the swap may still be loading it.
keep=${old#"$store/"}
keep=${keep%%/*}
for dir in "$CNI_BIN_DIR/$store"/*; do
  name=${dir##*/}
  if [ -d "$dir" ] && [ "$name" != "$id" ] && [ "$name" != "$keep" ]; then rm -rf "$dir"; fi
done
echo "egress-router build $id installed as $CNI_BIN_DIR/egress-router"
"""

# With --policy: the node policy, copied as root, mode 0644, and renamed into
# place so the plugin reads the old policy or the new one, never half a file.
POLICY_SCRIPT = """\
cp "$POLICY_SOURCE/policy.json" "$POLICY_DIR/.policy.json.new"
chown 0:0 "$POLICY_DIR/.policy.json.new"
chmod 0644 "$POLICY_DIR/.policy.json.new"
mv -f "$POLICY_DIR/.policy.json.new" "$POLICY_DIR/policy.json"
echo "egress-router node policy installed as /etc/egress-router/policy.json"
"""

# Keeps the DaemonSet pod alive after the copy; exits at once on SIGTERM.
_IDLE_SCRIPT = "trap 'exit 0' TERM; sleep infinity & wait"


def render_installer(
    image: str,
    namespace: Optional[str] = None,
    cni_bin_dir: str = DEFAULT_CNI_BIN_DIR,
    policy: Optional[str] = None,
) -> Rendered:
    """The objects that copy the plugin (and POLICY, the node policy's JSON text) onto every node.

    Raise RenderError on a bad path or an invalid policy.
    """
    if not cni_bin_dir.startswith("/") or posixpath.normpath(cni_bin_dir) != cni_bin_dir:
        raise RenderError(f"CNI bin dir {cni_bin_dir!r} must be a normalized absolute path, e.g. /opt/cni/bin")
    target_namespace = namespace or INSTALLER_NAMESPACE
    labels = {"app": INSTALLER_NAME}
    objects: List[Dict[str, Any]] = []
    notes: List[str] = []
    if namespace is None:
        objects.append(_installer_namespace(target_namespace))
    else:
        # Never render someone else's Namespace: `kubectl delete -f` would delete it.
        notes.append(
            f"namespace {namespace!r} must exist and admit privileged pods "
            "(label pod-security.kubernetes.io/enforce=privileged)"
        )
    objects.append(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _metadata(INSTALLER_NAME, target_namespace, labels)}
    )
    objects.extend(_installer_rbac(target_namespace, labels))
    daemonset = _installer_daemonset(image, target_namespace, cni_bin_dir, labels)
    if policy is not None:
        objects.append(_policy_configmap(policy, target_namespace, labels))
        _ship_policy(daemonset, policy)
    objects.append(daemonset)
    return Rendered(tuple(objects), tuple(notes))


def _policy_configmap(policy: str, namespace: str, labels: Dict[str, str]) -> Dict[str, Any]:
    from ..policy import parse_policy

    try:
        parse_policy(policy.encode(), "the policy")
    except ValueError as e:
        raise RenderError(f"invalid node policy: {e}") from None
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(POLICY_CONFIGMAP, namespace, labels),
        "data": {"policy.json": policy},
    }


def _ship_policy(daemonset: Dict[str, Any], policy: str) -> None:
    """The init container also copies the policy; a changed policy changes the pod template, so it rolls out."""
    import zlib

    pod = daemonset["spec"]["template"]
    pod["metadata"]["annotations"] = {"egress-router/policy-crc32": f"{zlib.crc32(policy.encode()):08x}"}
    install = pod["spec"]["initContainers"][0]
    install["command"] = ["/bin/sh", "-c", INSTALL_SCRIPT + POLICY_SCRIPT]
    install["env"] += [
        {"name": "POLICY_SOURCE", "value": _POLICY_SOURCE_MOUNT},
        {"name": "POLICY_DIR", "value": _POLICY_HOST_MOUNT},
    ]
    install["volumeMounts"] += [
        {"name": "policy-source", "mountPath": _POLICY_SOURCE_MOUNT, "readOnly": True},
        {"name": "policy-dir", "mountPath": _POLICY_HOST_MOUNT},
    ]
    pod["spec"]["volumes"] += [
        {"name": "policy-source", "configMap": {"name": POLICY_CONFIGMAP}},
        {"name": "policy-dir", "hostPath": {"path": POLICY_HOST_DIR, "type": "DirectoryOrCreate"}},
    ]


def _installer_namespace(name: str) -> Dict[str, Any]:
    labels = {
        "pod-security.kubernetes.io/enforce": "privileged",
        "pod-security.kubernetes.io/audit": "privileged",
        "pod-security.kubernetes.io/warn": "privileged",
        # OpenShift would otherwise rewrite the pod-security labels from its SCCs.
        "security.openshift.io/scc.podSecurityLabelSync": "false",
    }
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def _installer_rbac(namespace: str, labels: Dict[str, str]) -> List[Dict[str, Any]]:
    # OpenShift admits a privileged pod only if its service account may `use`
    # the privileged SCC; elsewhere this Role names an API that does not exist
    # and grants nothing.
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _metadata(INSTALLER_NAME, namespace, labels),
        "rules": [
            {
                "apiGroups": ["security.openshift.io"],
                "resources": ["securitycontextconstraints"],
                "resourceNames": ["privileged"],
                "verbs": ["use"],
            }
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(INSTALLER_NAME, namespace, labels),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": INSTALLER_NAME},
        "subjects": [{"kind": "ServiceAccount", "name": INSTALLER_NAME, "namespace": namespace}],
    }
    return [role, binding]


def _installer_daemonset(image: str, namespace: str, cni_bin_dir: str, labels: Dict[str, str]) -> Dict[str, Any]:
    install = {
        "name": "install-egress-router",
        "image": image,
        "command": ["/bin/sh", "-c", INSTALL_SCRIPT],
        "env": [
            {"name": "SOURCE_DIR", "value": IMAGE_BUNDLE_DIR},
            {"name": "CNI_BIN_DIR", "value": _HOST_BIN_MOUNT},
        ],
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
        # Root to write the host directory; privileged because on SELinux hosts
        # a confined container may not write the CNI bin dir (Multus does the same).
        "securityContext": {"privileged": True, "runAsUser": 0},
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "cni-bin", "mountPath": _HOST_BIN_MOUNT}],
    }
    idle = {
        "name": "idle",
        "image": image,
        "command": ["/bin/sh", "-c", _IDLE_SCRIPT],
        "resources": {"requests": {"cpu": "1m", "memory": "8Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": _metadata(INSTALLER_NAME, namespace, labels),
        "spec": {
            "selector": {"matchLabels": dict(labels)},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "serviceAccountName": INSTALLER_NAME,
                    "automountServiceAccountToken": False,  # it never talks to the API server
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    # Every node that may run a router needs the plugin, tainted or not.
                    "tolerations": [{"operator": "Exists"}],
                    "initContainers": [install],
                    "containers": [idle],
                    "volumes": [{"name": "cni-bin", "hostPath": {"path": cni_bin_dir, "type": "DirectoryOrCreate"}}],
                },
            },
        },
    }
