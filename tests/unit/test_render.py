"""`egress-router render`: the rendered objects, their API validity, golden output and the CLI.

Golden files live in tests/golden/; after an intended change of the output,
rewrite them with `EGRESS_ROUTER_UPDATE_GOLDEN=1 python -m pytest tests/unit/test_render.py`
and review the diff.
"""

from __future__ import annotations

import copy
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from click.testing import CliRunner

from egress_router_cni.cli import cli
from egress_router_cni.config import parse_netconf
from egress_router_cni.k8s.egressrouter import EgressRouter, parse_egress_router
from egress_router_cni.k8s.render import (
    IMAGE_BUNDLE_DIR,
    INSTALL_SCRIPT,
    MAX_SUFFIX_LENGTH,
    RenderError,
    build_plugin_config,
    render_installer,
    render_routers,
    router_names,
)
from tests.samples import egress_router_example

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
EXAMPLE = ROOT / "conf" / "egressrouter-example.yaml"
INSTALLER_IMAGE = "quay.io/example/egress-router:0.1.0"
UID = "6a1f0d2e-0000-4000-8000-000000000001"
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def example() -> Dict[str, Any]:
    return egress_router_example()


def router(**changes: Any) -> EgressRouter:
    """The example router; `metadata=`/`spec=` dicts are merged into the example's."""
    obj = copy.deepcopy(example())
    obj["metadata"].update(changes.pop("metadata", {}))
    obj["spec"].update(changes.pop("spec", {}))
    assert not changes
    return parse_egress_router(obj)


def dual_stack() -> EgressRouter:
    return router(
        metadata={"namespace": "egress", "uid": UID, "labels": {"team": "net"}},
        spec={
            "addresses": [
                {"ip": "192.168.12.99/24", "gateway": "192.168.12.1"},
                {"ip": "fd00:12::99/64", "gateway": "fd00:12::1"},
            ],
            "networkInterface": {"macvlan": {"mode": "VEPA", "master": "ens4"}},
            "redirect": {
                "redirectRules": [
                    {"destinationIP": "203.0.113.26", "port": 8080, "targetPort": 80, "protocol": "TCP"},
                    {"destinationIP": "2001:db8::26", "port": 8080, "targetPort": 80, "protocol": "TCP"},
                    {"destinationIP": "2001:db8::53", "port": 53, "protocol": "SCTP"},
                ],
                "fallbackIP": "203.0.113.30",
            },
        },
    )


def by_kind(objects: Any, kind: str) -> Dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind]
    assert len(matches) == 1, f"{len(matches)} objects of kind {kind}"
    result: Dict[str, Any] = matches[0]
    return result


def make_runner() -> CliRunner:
    """A runner with stdout and stderr apart, on click 8.1 (mix_stderr) and 8.2+ (always apart)."""
    legacy: Dict[str, Any] = {"mix_stderr": False}
    try:
        return CliRunner(**legacy)
    except TypeError:
        return CliRunner()


def nad_config(objects: Any) -> Dict[str, Any]:
    config: Dict[str, Any] = json.loads(by_kind(objects, "NetworkAttachmentDefinition")["spec"]["config"])
    return config


# --------------------------------------------------------------------------- plugin config (NAD)


def test_plugin_config_for_product_page_example() -> None:
    assert build_plugin_config(router()) == {
        "cniVersion": "0.4.0",
        "type": "egress-router",
        "name": "egress-router-cni-nad",
        "ip": {
            "addresses": ["192.168.12.99/24"],
            "gateway": "192.168.12.1",
            "destinations": ["80 UDP 10.0.0.99", "8080 TCP 203.0.113.26 80", "8443 TCP 203.0.113.27 443"],
        },
        "interfaceArgs": {"mode": "bridge"},
        "log_file": "/tmp/egress-router-log",
        "log_level": "debug",
    }


def test_plugin_config_carries_what_the_operator_drops() -> None:
    """Every address, fallbackIP, master and mode: the operator renders none of these."""
    config = build_plugin_config(dual_stack())
    assert config["ip"]["addresses"] == ["192.168.12.99/24", "fd00:12::99/64"]
    assert config["ip"]["gateway"] == ["192.168.12.1", "fd00:12::1"]
    assert config["ip"]["fallbackIP"] == "203.0.113.30"
    assert config["interfaceArgs"] == {"master": "ens4", "mode": "vepa"}


@pytest.mark.parametrize("target", [router(), dual_stack(), router(spec={"redirect": {"fallbackIP": "10.0.0.1"}})])
def test_plugin_config_is_accepted_by_the_plugin(target: EgressRouter) -> None:
    conf = parse_netconf(build_plugin_config(target))
    assert [str(a) for a in conf.addresses] == [str(a.ip) for a in target.addresses]
    assert [str(g) for g in conf.gateways] == [str(g) for g in target.gateways()]
    rules = [d for d in conf.destinations if not d.is_fallback]
    # The plugin's addresses (egress_router_cni.ipaddr) against the operator side's (ipaddress): as text.
    assert [(d.port, d.protocol, str(d.address), d.target_port) for d in rules] == [
        (r.port, r.protocol.lower(), str(r.destination_ip), r.target_port) for r in target.redirect_rules
    ]
    fallbacks = [str(d.address) for d in conf.destinations if d.is_fallback]
    assert fallbacks == ([str(target.fallback_ip)] if target.fallback_ip else [])
    assert conf.mode == target.macvlan_mode.lower()
    assert conf.master == target.macvlan_master
    assert (conf.log_file, conf.log_level) == ("/tmp/egress-router-log", "debug")


# --------------------------------------------------------------------------- Deployment and Service


def test_deployment_matches_the_operator() -> None:
    deployment = by_kind(render_routers([router()]).objects, "Deployment")
    assert deployment["metadata"]["name"] == "egress-router-cni-deployment"
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["selector"] == {"matchLabels": {"app": "egress-router-cni"}}
    template = spec["template"]
    assert template["metadata"]["labels"] == {"app": "egress-router-cni"}
    assert template["metadata"]["annotations"] == {
        "k8s.v1.cni.cncf.io/networks": '[{"name":"egress-router-cni-nad","default-route":["192.168.12.1"]}]',
        "target.workload.openshift.io/management": '{"effect": "PreferredDuringScheduling"}',
    }
    (container,) = template["spec"]["containers"]
    assert container["name"] == "egress-router-cni-pod"
    assert container["command"] == ["/bin/sh", "-c", "sleep infinity"]
    assert container["image"] == "registry.access.redhat.com/ubi9/ubi-minimal:latest"
    assert container["resources"]["requests"]["cpu"] == "100m"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container["securityContext"]["privileged"] is False


def test_deployment_recreates_so_two_pods_never_hold_the_address() -> None:
    assert by_kind(render_routers([router()]).objects, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}


def test_deployment_default_route_lists_one_gateway_per_family() -> None:
    deployment = by_kind(render_routers([dual_stack()]).objects, "Deployment")
    networks = json.loads(deployment["spec"]["template"]["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"])
    assert networks == [{"name": "egress-router-cni-nad", "default-route": ["192.168.12.1", "fd00:12::1"]}]


def test_deployment_image_is_settable() -> None:
    deployment = by_kind(render_routers([router()], image="example.com/sleeper:1").objects, "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "example.com/sleeper:1"


def test_service_exposes_every_redirect_port_on_its_own_number() -> None:
    service = by_kind(render_routers([router()]).objects, "Service")
    assert service["metadata"]["name"] == "egress-router-cni"
    assert service["spec"] == {
        "type": "ClusterIP",
        "selector": {"app": "egress-router-cni"},
        "ports": [
            {"name": "udp-80", "protocol": "UDP", "port": 80, "targetPort": 80},
            {"name": "tcp-8080", "protocol": "TCP", "port": 8080, "targetPort": 8080},
            {"name": "tcp-8443", "protocol": "TCP", "port": 8443, "targetPort": 8443},
        ],
    }


def test_service_has_one_port_for_both_families() -> None:
    service = by_kind(render_routers([dual_stack()]).objects, "Service")
    assert [p["name"] for p in service["spec"]["ports"]] == ["tcp-8080", "sctp-53"]


def test_fallback_only_router_gets_no_service_and_a_note() -> None:
    result = render_routers([router(spec={"redirect": {"fallbackIP": "203.0.113.30"}})])
    assert [o["kind"] for o in result.objects] == ["NetworkAttachmentDefinition", "Deployment"]
    assert any("no Service was rendered" in note for note in result.notes)


def test_router_without_rules_or_fallback_is_noted() -> None:
    result = render_routers([router(spec={"redirect": {}})])
    assert any("will redirect nothing" in note for note in result.notes)


# --------------------------------------------------------------------------- metadata


def test_objects_get_namespace_labels_and_owner_reference() -> None:
    result = render_routers([dual_stack()])
    assert [o["kind"] for o in result.objects] == ["NetworkAttachmentDefinition", "Deployment", "Service"]
    for obj in result.objects:
        meta = obj["metadata"]
        assert meta["namespace"] == "egress"
        assert meta["labels"] == {"team": "net", "app": "egress-router-cni"}
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "network.operator.openshift.io/v1",
                "kind": "EgressRouter",
                "name": "egress-router-redirect",
                "uid": UID,
                "controller": True,
            }
        ]
    assert result.notes == ()


def test_no_owner_reference_without_uid_and_no_namespace_without_one() -> None:
    for obj in render_routers([router()]).objects:
        assert "ownerReferences" not in obj["metadata"]
        assert "namespace" not in obj["metadata"]


def test_namespace_option_overrides_and_drops_cross_namespace_owner() -> None:
    result = render_routers([dual_stack()], namespace="elsewhere")
    for obj in result.objects:
        assert obj["metadata"]["namespace"] == "elsewhere"
        assert "ownerReferences" not in obj["metadata"]
    assert any("no ownerReference" in note and "'elsewhere'" in note for note in result.notes)


def test_namespace_option_equal_to_the_routers_keeps_the_owner() -> None:
    result = render_routers([dual_stack()], namespace="egress")
    assert all("ownerReferences" in o["metadata"] for o in result.objects)


# --------------------------------------------------------------------------- several routers


def test_two_routers_in_one_namespace_are_refused() -> None:
    first = router(metadata={"name": "a", "namespace": "egress"})
    second = router(metadata={"name": "b", "namespace": "egress"})
    with pytest.raises(RenderError) as info:
        render_routers([first, second])
    message = str(info.value)
    assert "2 EgressRouters (egress/a, egress/b) would render into namespace 'egress'" in message
    assert "--name-suffix '{name}'" in message


def test_two_routers_without_namespace_collide_in_the_current_namespace() -> None:
    with pytest.raises(RenderError, match="the current namespace"):
        render_routers([router(metadata={"name": "a"}), router(metadata={"name": "b"})])


def test_namespace_option_can_create_the_collision() -> None:
    first = router(metadata={"name": "a", "namespace": "one"})
    second = router(metadata={"name": "b", "namespace": "two"})
    assert len(render_routers([first, second]).objects) == 6
    with pytest.raises(RenderError, match="namespace 'shared'"):
        render_routers([first, second], namespace="shared")


def test_name_suffix_with_name_placeholder_separates_routers() -> None:
    first = router(metadata={"name": "a", "namespace": "egress"})
    second = router(metadata={"name": "b", "namespace": "egress"})
    result = render_routers([first, second], name_suffix="{name}")
    names = [(o["kind"], o["metadata"]["name"]) for o in result.objects]
    assert names == [
        ("NetworkAttachmentDefinition", "egress-router-cni-nad-a"),
        ("Deployment", "egress-router-cni-deployment-a"),
        ("Service", "egress-router-cni-a"),
        ("NetworkAttachmentDefinition", "egress-router-cni-nad-b"),
        ("Deployment", "egress-router-cni-deployment-b"),
        ("Service", "egress-router-cni-b"),
    ]
    assert any("-l app=egress-router-cni-SUFFIX" in note for note in result.notes)


def test_name_suffix_reaches_annotation_config_labels_and_selectors() -> None:
    objects = render_routers([router()], name_suffix="blue").objects
    assert nad_config(objects)["name"] == "egress-router-cni-nad-blue"
    deployment = by_kind(objects, "Deployment")
    template = deployment["spec"]["template"]
    assert json.loads(template["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"])[0]["name"] == (
        "egress-router-cni-nad-blue"
    )
    assert deployment["spec"]["selector"]["matchLabels"] == {"app": "egress-router-cni-blue"}
    assert template["metadata"]["labels"] == {"app": "egress-router-cni-blue"}
    assert by_kind(objects, "Service")["spec"]["selector"] == {"app": "egress-router-cni-blue"}
    assert template["spec"]["containers"][0]["name"] == "egress-router-cni-pod"


def test_literal_name_suffix_does_not_separate_two_routers() -> None:
    first = router(metadata={"name": "a", "namespace": "egress"})
    second = router(metadata={"name": "b", "namespace": "egress"})
    with pytest.raises(RenderError, match=r"egress-router-cni-nad-blue"):
        render_routers([first, second], name_suffix="blue")


@pytest.mark.parametrize("suffix", ["Blue", "-x", "x-", "a_b", "a.b", "x" * (MAX_SUFFIX_LENGTH + 1)])
def test_invalid_name_suffix_is_refused(suffix: str) -> None:
    with pytest.raises(RenderError, match="name suffix"):
        render_routers([router()], name_suffix=suffix)


def test_name_placeholder_with_dotted_router_name_is_refused() -> None:
    with pytest.raises(RenderError, match=r"name suffix 'egress\.v2' \(for EgressRouter egress\.v2\)"):
        render_routers([router(metadata={"name": "egress.v2"})], name_suffix="{name}")


def test_longest_suffix_fits_a_label_value() -> None:
    names = router_names("x" * MAX_SUFFIX_LENGTH)
    assert len(names.app) == 63 and len(names.service) == 63


# --------------------------------------------------------------------------- API validation


def _k8s_versions() -> List[str]:
    kv = pytest.importorskip("kubernetes_validate")
    return ["1.25", str(kv.latest_version())]


def _validate_k8s(obj: Dict[str, Any]) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    for version in _k8s_versions():
        kv.validate(obj, version, strict=True)


def _validate_nad(obj: Dict[str, Any]) -> None:
    """kubernetes-validate has no schema for this CRD: check its shape, and the metadata as ObjectMeta."""
    assert obj["apiVersion"] == "k8s.cni.cncf.io/v1"
    assert obj["kind"] == "NetworkAttachmentDefinition"
    assert set(obj) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(obj["spec"]) == {"config"}
    assert isinstance(obj["spec"]["config"], str)
    assert _DNS_SUBDOMAIN.match(obj["metadata"]["name"]) and len(obj["metadata"]["name"]) <= 253
    _validate_k8s({"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]})
    parse_netconf(json.loads(obj["spec"]["config"]))  # the plugin accepts it


ROUTER_CASES = {
    "example": lambda: render_routers([router()]),
    "dual-stack": lambda: render_routers([dual_stack()]),
    "suffix": lambda: render_routers([dual_stack()], name_suffix="x" * MAX_SUFFIX_LENGTH, namespace="other"),
    "fallback-only": lambda: render_routers([router(spec={"redirect": {"fallbackIP": "10.0.0.1"}})]),
}


@pytest.mark.parametrize("case", sorted(ROUTER_CASES))
def test_router_objects_validate_against_the_api(case: str) -> None:
    for obj in ROUTER_CASES[case]().objects:
        if obj["kind"] == "NetworkAttachmentDefinition":
            _validate_nad(obj)
        else:
            _validate_k8s(obj)


@pytest.mark.parametrize("namespace", [None, "kube-system"])
@pytest.mark.parametrize("policy", [None, '{"allowedModes": ["bridge"]}'])
def test_installer_objects_validate_against_the_api(namespace: Optional[str], policy: Optional[str]) -> None:
    for obj in render_installer(INSTALLER_IMAGE, namespace, "/var/lib/cni/bin", policy).objects:
        _validate_k8s(obj)


def test_validation_catches_a_bad_object() -> None:
    """The API check is real: an unknown field fails it."""
    kv = pytest.importorskip("kubernetes_validate")
    service = copy.deepcopy(by_kind(render_routers([router()]).objects, "Service"))
    service["spec"]["typo"] = True
    with pytest.raises(kv.ValidationError):
        _validate_k8s(service)


# --------------------------------------------------------------------------- installer


def test_installer_default_objects() -> None:
    result = render_installer(INSTALLER_IMAGE)
    assert [(o["kind"], o["metadata"]["name"]) for o in result.objects] == [
        ("Namespace", "egress-router-system"),
        ("ServiceAccount", "egress-router-installer"),
        ("Role", "egress-router-installer"),
        ("RoleBinding", "egress-router-installer"),
        ("DaemonSet", "egress-router-installer"),
    ]
    assert result.notes == ()


def test_installer_in_given_namespace_renders_no_namespace_object() -> None:
    result = render_installer(INSTALLER_IMAGE, namespace="kube-system")
    assert "Namespace" not in [o["kind"] for o in result.objects]
    assert all(o["metadata"]["namespace"] == "kube-system" for o in result.objects)
    assert any("privileged" in note for note in result.notes)


def test_installer_daemonset_mounts_the_cni_bin_dir() -> None:
    daemonset = by_kind(render_installer(INSTALLER_IMAGE, cni_bin_dir="/var/lib/cni/bin").objects, "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["volumes"] == [
        {"name": "cni-bin", "hostPath": {"path": "/var/lib/cni/bin", "type": "DirectoryOrCreate"}}
    ]
    (install,) = pod["initContainers"]
    assert install["image"] == INSTALLER_IMAGE
    assert install["command"] == ["/bin/sh", "-c", INSTALL_SCRIPT]
    env = {e["name"]: e["value"] for e in install["env"]}
    assert env["SOURCE_DIR"] == IMAGE_BUNDLE_DIR
    assert install["volumeMounts"] == [{"name": "cni-bin", "mountPath": env["CNI_BIN_DIR"]}]
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert pod["serviceAccountName"] == "egress-router-installer"


@pytest.mark.parametrize("path", ["opt/cni/bin", "/opt/cni/bin/", "/opt/../cni", ""])
def test_installer_refuses_a_bad_cni_bin_dir(path: str) -> None:
    with pytest.raises(RenderError, match="absolute path"):
        render_installer(INSTALLER_IMAGE, cni_bin_dir=path)


def test_containerfile_puts_the_bundle_where_the_installer_reads_it() -> None:
    containerfile = (ROOT / "Containerfile").read_text()
    assert f"COPY --from=builder /src/dist/egress-router/ {IMAGE_BUNDLE_DIR}/" in containerfile
    assert "BUILD_ID" in containerfile
    assert "pyinstaller" in containerfile and "build.spec" in containerfile


def _fake_bundle(path: Path, build_id: str) -> None:
    """A stand-in for the onedir build: an executable that answers CNI VERSION, plus _internal/."""
    (path / "_internal").mkdir(parents=True, exist_ok=True)
    (path / "_internal" / "lib.txt").write_text(build_id)
    exe = path / "egress-router"
    exe.write_text('#!/bin/sh\n[ "$CNI_COMMAND" = VERSION ] && echo \'{"cniVersion":"1.1.0"}\'\n')
    exe.chmod(0o755)
    (path / "BUILD_ID").write_text(build_id + "\n")


def _install(source: Path, bin_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SOURCE_DIR": str(source), "CNI_BIN_DIR": str(bin_dir)}
    return subprocess.run(["sh", "-c", INSTALL_SCRIPT], env=env, capture_output=True, text=True, check=True)


def test_install_script_installs_swaps_and_prunes(tmp_path: Path) -> None:
    source, bin_dir = tmp_path / "bundle", tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "bridge").write_text("another plugin")
    store = bin_dir / ".egress-router.d"
    for build_id in ("b1", "b2", "b3"):
        _fake_bundle(source, build_id)
        out = _install(source, bin_dir)
        assert f"build {build_id} installed" in out.stdout
        link = bin_dir / "egress-router"
        assert os.readlink(link) == f".egress-router.d/{build_id}/egress-router"
        assert (link.resolve().parent / "_internal" / "lib.txt").read_text() == build_id
        assert subprocess.run([str(link)], env={"CNI_COMMAND": "VERSION"}, capture_output=True).returncode == 0
    # The live build and the one before it stay (an ADD may still be loading it); older ones go.
    assert sorted(p.name for p in store.iterdir()) == ["b2", "b3"]
    assert not list(bin_dir.glob(".egress-router.new"))
    assert (bin_dir / "bridge").read_text() == "another plugin"
    _install(source, bin_dir)  # the same build again: nothing to copy, still installed
    assert os.readlink(bin_dir / "egress-router") == ".egress-router.d/b3/egress-router"


def test_install_script_replaces_a_plain_file_and_cleans_stale_temp_dirs(tmp_path: Path) -> None:
    source, bin_dir = tmp_path / "bundle", tmp_path / "bin"
    (bin_dir / ".egress-router.d" / ".tmp-b0").mkdir(parents=True)
    (bin_dir / "egress-router").write_text("an older single-file install")
    _fake_bundle(source, "b1")
    _install(source, bin_dir)
    assert os.readlink(bin_dir / "egress-router") == ".egress-router.d/b1/egress-router"
    assert sorted(p.name for p in (bin_dir / ".egress-router.d").iterdir()) == ["b1"]


def test_install_script_refuses_a_bundle_that_does_not_run(tmp_path: Path) -> None:
    source, bin_dir = tmp_path / "bundle", tmp_path / "bin"
    bin_dir.mkdir()
    _fake_bundle(source, "b1")
    (source / "egress-router").write_text("#!/bin/sh\nexit 3\n")
    with pytest.raises(subprocess.CalledProcessError):
        _install(source, bin_dir)
    assert not (bin_dir / "egress-router").exists()


# --------------------------------------------------------------------------- golden files


def _check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("EGRESS_ROUTER_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{path} differs: rerun with EGRESS_ROUTER_UPDATE_GOLDEN=1 if intended"


@pytest.mark.parametrize("output", ["yaml", "json"])
def test_golden_product_page_example(output: str) -> None:
    pytest.importorskip("yaml")
    result = make_runner().invoke(cli, ["render", str(EXAMPLE), "--output", output])
    assert result.exit_code == 0, result.output
    _check_golden(f"egressrouter-example.{output}", result.stdout)


def test_golden_installer() -> None:
    pytest.importorskip("yaml")
    result = make_runner().invoke(cli, ["render", "--installer", "--image", INSTALLER_IMAGE])
    assert result.exit_code == 0, result.output
    _check_golden("installer.yaml", result.stdout)


def test_golden_yaml_and_json_hold_the_same_objects() -> None:
    yaml = pytest.importorskip("yaml")
    from_yaml = list(yaml.safe_load_all((GOLDEN / "egressrouter-example.yaml").read_text()))
    from_json = json.loads((GOLDEN / "egressrouter-example.json").read_text())
    assert from_json["kind"] == "List"
    assert from_yaml == from_json["items"]


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def runner() -> CliRunner:
    return make_runner()


def test_cli_lists_render(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "render" in result.stdout


def test_cli_help_has_an_example(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["render", "--help"])
    assert result.exit_code == 0
    assert "egress-router render conf/egressrouter-example.yaml | kubectl apply -f -" in result.stdout
    assert "--name-suffix" in result.stdout and "--installer" in result.stdout


def test_cli_reads_json_from_stdin_and_writes_a_json_list(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["render", "-o", "json", "-n", "egress"], input=json.dumps(example()))
    assert result.exit_code == 0, result.output
    listing = json.loads(result.stdout)
    assert (listing["apiVersion"], listing["kind"]) == ("v1", "List")
    assert [o["kind"] for o in listing["items"]] == ["NetworkAttachmentDefinition", "Deployment", "Service"]
    assert {o["metadata"]["namespace"] for o in listing["items"]} == {"egress"}
    assert result.stderr == ""


def test_cli_reads_several_files_and_yaml_lists(runner: CliRunner, tmp_path: Path) -> None:
    yaml = pytest.importorskip("yaml")
    first = dict(example(), metadata={"name": "a", "namespace": "one"})
    second = dict(example(), metadata={"name": "b", "namespace": "two"})
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(first))
    (tmp_path / "list.yaml").write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [second]}))
    result = runner.invoke(cli, ["render", str(tmp_path / "a.yaml"), str(tmp_path / "list.yaml")])
    assert result.exit_code == 0, result.output
    docs = list(yaml.safe_load_all(result.stdout))
    assert [(d["kind"], d["metadata"]["namespace"]) for d in docs] == [
        ("NetworkAttachmentDefinition", "one"),
        ("Deployment", "one"),
        ("Service", "one"),
        ("NetworkAttachmentDefinition", "two"),
        ("Deployment", "two"),
        ("Service", "two"),
    ]


def test_cli_invalid_router_exits_1_with_field_paths(runner: CliRunner) -> None:
    obj = example()
    obj["spec"]["redirect"]["redirectRules"][1]["port"] = 70000
    obj["spec"]["redirect"]["redirectRules"][2]["protocol"] = "tcp"
    result = runner.invoke(cli, ["render", "-o", "json"], input=json.dumps(obj))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "error: stdin (EgressRouter egress-router-redirect): invalid EgressRouter:" in result.stderr
    assert "  spec.redirect.redirectRules[1].port: 70000 is not in 1-65535" in result.stderr
    assert '  spec.redirect.redirectRules[2].protocol: "tcp" is not one of TCP, UDP, SCTP' in result.stderr


def test_cli_reports_every_invalid_router(runner: CliRunner) -> None:
    bad = example()
    bad["spec"]["addresses"] = []
    listing = {"apiVersion": "v1", "kind": "List", "items": [bad, example(), bad]}
    result = runner.invoke(cli, ["render", "-o", "json"], input=json.dumps(listing))
    assert result.exit_code == 1
    assert "stdin, items[0]" in result.stderr and "stdin, items[2]" in result.stderr


def test_cli_collision_exits_1(runner: CliRunner) -> None:
    listing = {"apiVersion": "v1", "kind": "List", "items": [example(), dict(example(), metadata={"name": "b"})]}
    result = runner.invoke(cli, ["render", "-o", "json"], input=json.dumps(listing))
    assert result.exit_code == 1
    assert "error: 2 EgressRouters (egress-router-redirect, b) would render into the current namespace" in (
        result.stderr
    )
    ok = runner.invoke(cli, ["render", "-o", "json", "--name-suffix", "{name}"], input=json.dumps(listing))
    assert ok.exit_code == 0, ok.output
    assert "note: with a name suffix" in ok.stderr


def test_cli_skips_other_kinds_with_a_note(runner: CliRunner) -> None:
    listing = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [{"kind": "ConfigMap", "metadata": {"name": "x"}}, example()],
    }
    result = runner.invoke(cli, ["render", "-o", "json"], input=json.dumps(listing))
    assert result.exit_code == 0
    assert "note: skipped stdin, items[0]: ConfigMap/x is not an EgressRouter" in result.stderr


def test_cli_input_without_egress_router_exits_1(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["render"], input="")
    assert result.exit_code == 1
    assert "error: no EgressRouter" in result.stderr


def test_cli_unreadable_input_exits_1(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["render"], input="{not json")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: stdin: not valid")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["render", "--installer"], "--installer needs --image"),
        (["render", "--installer", "--image", "x", "conf/egressrouter-example.yaml"], "--installer reads no"),
        (["render", "--installer", "--image", "x", "--name-suffix", "a"], "--name-suffix does not apply"),
        (["render", "--cni-bin-dir", "/opt/cni/bin"], "--cni-bin-dir goes with --installer"),
        (["render", "--output", "toml"], "Invalid value for '--output'"),
        (["render", "no-such-file.yaml"], "No such file or directory"),
    ],
)
def test_cli_usage_errors_exit_2(runner: CliRunner, args: List[str], message: str) -> None:
    result = runner.invoke(cli, args, input="")
    assert result.exit_code == 2, result.output
    assert message in result.stderr


def test_cli_installer_bad_path_exits_1(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["render", "--installer", "--image", "x", "--cni-bin-dir", "relative"])
    assert result.exit_code == 1
    assert "error: CNI bin dir 'relative'" in result.stderr


def test_cli_installer_namespace_note(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["render", "--installer", "--image", "x", "-n", "kube-system", "-o", "json"])
    assert result.exit_code == 0
    assert "note: namespace 'kube-system' must exist" in result.stderr
    assert {o["metadata"]["namespace"] for o in json.loads(result.stdout)["items"]} == {"kube-system"}


def test_cli_without_pyyaml_falls_back_to_json(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)
    result = runner.invoke(cli, ["render"], input=json.dumps(example()))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["kind"] == "List"
    assert "PyYAML is not installed, writing JSON instead (pip install PyYAML for YAML)" in result.stderr
    yaml_input = runner.invoke(cli, ["render", str(EXAMPLE)])
    assert yaml_input.exit_code == 1
    assert "reading YAML needs PyYAML" in yaml_input.stderr


def test_real_executable_renders_the_example() -> None:
    """Once through the real entry point (python -m), not CliRunner."""
    pytest.importorskip("yaml")
    proc = subprocess.run(
        [sys.executable, "-m", "egress_router_cni", "render", str(EXAMPLE)],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "CNI_COMMAND"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (GOLDEN / "egressrouter-example.yaml").read_text()


def test_cli_yaml_and_json_outputs_hold_the_same_objects(runner: CliRunner) -> None:
    yaml = pytest.importorskip("yaml")
    obj = example()
    obj["metadata"].update(namespace="egress", uid=UID, labels={"on": "yes", "version": "1.0"})
    obj["spec"]["addresses"].append({"ip": "fd00:12::99/64", "gateway": "fd00:12::1"})
    as_yaml = runner.invoke(cli, ["render"], input=json.dumps(obj))
    as_json = runner.invoke(cli, ["render", "-o", "json"], input=json.dumps(obj))
    assert as_yaml.exit_code == as_json.exit_code == 0
    assert list(yaml.safe_load_all(as_yaml.stdout)) == json.loads(as_json.stdout)["items"]


# --------------------------------------------------------------------------- installer --policy (issue 13)

POLICY_EXAMPLE = Path(__file__).resolve().parents[2] / "conf" / "policy.json"


def test_golden_installer_with_policy() -> None:
    pytest.importorskip("yaml")
    args = ["render", "--installer", "--image", INSTALLER_IMAGE, "--policy", str(POLICY_EXAMPLE)]
    result = make_runner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    _check_golden("installer-policy.yaml", result.stdout)


def test_installer_policy_ships_a_configmap_copied_to_the_host() -> None:
    policy = POLICY_EXAMPLE.read_text()
    objects = render_installer(INSTALLER_IMAGE, policy=policy).objects
    assert by_kind(objects, "ConfigMap")["data"] == {"policy.json": policy}
    pod = by_kind(objects, "DaemonSet")["spec"]["template"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["policy-source"]["configMap"]["name"] == "egress-router-policy"
    assert volumes["policy-dir"]["hostPath"]["path"] == "/etc/egress-router"
    # A changed policy changes the pod template: `kubectl apply` rolls it out to every node.
    other = render_installer(INSTALLER_IMAGE, policy=policy.replace("ens4", "ens5")).objects
    assert other[-1]["spec"]["template"]["metadata"] != pod["metadata"]


def test_installer_without_policy_renders_no_configmap() -> None:
    assert not [o for o in render_installer(INSTALLER_IMAGE).objects if o["kind"] == "ConfigMap"]


def test_installer_refuses_an_invalid_policy() -> None:
    with pytest.raises(RenderError, match="invalid node policy: unknown key 'allowedMode'"):
        render_installer(INSTALLER_IMAGE, policy='{"allowedMode": ["bridge"]}')


def test_installer_policy_script_installs_root_owned_0644_by_rename(tmp_path: Path) -> None:
    from egress_router_cni.k8s.render import POLICY_SCRIPT

    source, target = tmp_path / "source", tmp_path / "host"
    source.mkdir()
    target.mkdir()
    (source / "policy.json").write_text('{"allowedModes": ["bridge"]}')
    (target / "policy.json").write_text("{}")
    os.chmod(target / "policy.json", 0o600)
    before = (target / "policy.json").stat().st_ino
    env = {"POLICY_SOURCE": str(source), "POLICY_DIR": str(target), "PATH": os.environ["PATH"]}
    subprocess.run(["sh", "-c", "set -eu\n" + POLICY_SCRIPT], env=env, check=True, capture_output=True)
    installed = target / "policy.json"
    assert installed.read_text() == '{"allowedModes": ["bridge"]}'
    assert stat.S_IMODE(installed.stat().st_mode) == 0o644
    assert installed.stat().st_ino != before, "replaced by rename, not rewritten in place"
    assert sorted(p.name for p in target.iterdir()) == ["policy.json"]
