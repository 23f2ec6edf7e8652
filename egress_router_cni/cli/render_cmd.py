"""`egress-router render`: EgressRouter manifests in, the objects that run the router out."""

from __future__ import annotations

import json
import sys
from typing import IO, Any, Dict, List, Optional, Sequence, Tuple

import click

from ..k8s.egressrouter import (
    EgressRouter,
    InvalidEgressRouter,
    ManifestError,
    find_egress_routers,
    load_documents,
    parse_egress_router,
)
from ..k8s.render import (
    DEFAULT_CNI_BIN_DIR,
    DEFAULT_IMAGE,
    INSTALLER_NAMESPACE,
    Rendered,
    RenderError,
    render_installer,
    render_routers,
)
from .output import report

_YAML_INSTALL = "pip install PyYAML"


@click.command()
@click.argument("files", nargs=-1, type=click.File("r"))
@click.option("--output", "-o", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
@click.option(
    "--namespace",
    "-n",
    help="Namespace of every rendered object (default: each EgressRouter's own; "
    f"with --installer: {INSTALLER_NAMESPACE}, created by the output).",
)
@click.option(
    "--image",
    help=f"Router pod image (default {DEFAULT_IMAGE}); with --installer, required: the image built "
    "from the Containerfile.",
)
@click.option(
    "--name-suffix",
    metavar="SUFFIX",
    help="Append -SUFFIX to every object name and to the app label, so that several EgressRouters can "
    "share a namespace; '{name}' stands for each EgressRouter's name. The operator's fixed names are then "
    "not used.",
)
@click.option("--installer", is_flag=True, help="Render the DaemonSet that installs the plugin on every node instead.")
@click.option(
    "--cni-bin-dir",
    default=DEFAULT_CNI_BIN_DIR,
    show_default=True,
    help="With --installer: the nodes' CNI plugin directory (/var/lib/cni/bin for Multus on OpenShift).",
)
@click.option(
    "--policy",
    "policy_file",
    type=click.File("r"),
    help="With --installer: a node policy JSON file, shipped as a ConfigMap and copied by the DaemonSet to "
    "every node's /etc/egress-router/policy.json.",
)
@click.pass_context
def render(
    ctx: click.Context,
    files: Tuple[IO[str], ...],
    output: str,
    namespace: Optional[str],
    image: Optional[str],
    name_suffix: Optional[str],
    installer: bool,
    cni_bin_dir: str,
    policy_file: Optional[IO[str]],
) -> None:
    """Render the objects that run an egress router from EgressRouter manifests.

    FILES (YAML or JSON, '-' or none for stdin) hold network.operator.openshift.io/v1
    EgressRouter objects, one or many, or Lists of them. Each one is validated
    as the API server would, then rendered as the operator would, plus a
    Service: the NetworkAttachmentDefinition egress-router-cni-nad, the
    Deployment egress-router-cni-deployment (pods labelled app=egress-router-cni)
    and the ClusterIP Service egress-router-cni exposing every redirect port.
    Other kinds of object in the input are skipped.

    Touches no cluster: pipe the output to `kubectl apply -f -`. Exit status 1
    when an EgressRouter is invalid, listing every bad field by its path.

    \b
    Examples:
      egress-router render conf/egressrouter-example.yaml | kubectl apply -f -
      kubectl get egressrouters -A -o yaml | egress-router render -o json
      egress-router render --installer --image quay.io/example/egress-router:0.1.0 | kubectl apply -f -
      egress-router render --installer --image IMAGE --policy conf/policy.json | kubectl apply -f -
    """
    if installer:
        _check_installer_usage(ctx, files, name_suffix)
        if not image:
            raise click.UsageError(
                "--installer needs --image: the image built from the Containerfile "
                "(podman build -t REGISTRY/egress-router:TAG . && podman push REGISTRY/egress-router:TAG)"
            )
        policy = policy_file.read() if policy_file is not None else None
        result = _or_exit(lambda: render_installer(image, namespace, cni_bin_dir, policy))
    else:
        if ctx.get_parameter_source("cni_bin_dir") != click.core.ParameterSource.DEFAULT:
            raise click.UsageError("--cni-bin-dir goes with --installer")
        if policy_file is not None:
            raise click.UsageError("--policy goes with --installer")
        routers = _read_routers(files or (sys.stdin,))
        result = _or_exit(lambda: render_routers(routers, image or DEFAULT_IMAGE, namespace, name_suffix))
    for note in result.notes:
        report("note", note)
    click.echo(_dump(result, output), nl=False)


def _check_installer_usage(ctx: click.Context, files: Tuple[IO[str], ...], name_suffix: Optional[str]) -> None:
    if files:
        raise click.UsageError("--installer reads no EgressRouter: drop the FILES")
    if name_suffix:
        raise click.UsageError("--name-suffix does not apply to --installer")


def _read_routers(streams: Sequence[IO[str]]) -> List[EgressRouter]:
    """Read and validate every EgressRouter of the streams, reporting all the invalid ones before exiting."""
    routers: List[EgressRouter] = []
    failures: List[str] = []
    found = 0
    for stream in streams:
        source = "stdin" if stream.name in ("<stdin>", "-") else stream.name
        if source == "stdin" and stream.isatty():
            raise click.UsageError("no input: give FILES or pipe EgressRouter manifests into stdin")
        try:
            documents, skipped = find_egress_routers(load_documents(stream.read(), source), source)
        except ManifestError as e:
            _fail(str(e))
        for skip in skipped:
            report("note", f"skipped {skip}")
        found += len(documents)
        for document in documents:
            try:
                routers.append(parse_egress_router(document.obj, document.where))
            except InvalidEgressRouter as e:
                failures.append(str(e))
    if failures:
        _fail("\n".join(failures))
    if not found:
        _fail("no EgressRouter (apiVersion network.operator.openshift.io/v1, kind EgressRouter) in the input")
    return routers


def _or_exit(build: Any) -> Rendered:
    try:
        result: Rendered = build()
    except RenderError as e:
        _fail(str(e))
    return result


def _fail(message: str) -> Any:
    report("error", message)
    sys.exit(1)


def _dump(result: Rendered, output: str) -> str:
    if output == "yaml":
        text = _dump_yaml(result.objects)
        if text is not None:
            return text
        # kubectl reads JSON as well, so a pipeline into `kubectl apply` keeps working.
        report("note", f"PyYAML is not installed, writing JSON instead ({_YAML_INSTALL} for YAML)")
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": list(result.objects)}, indent=2) + "\n"


def _dump_yaml(objects: Sequence[Dict[str, Any]]) -> Optional[str]:
    try:
        import yaml
    except ImportError:
        return None

    class Dumper(yaml.SafeDumper):  # type: ignore[misc]
        pass

    def represent_str(dumper: Any, value: str) -> Any:
        # The NAD's config is indented JSON: a literal block keeps it readable.
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, represent_str)
    return yaml.dump_all(objects, Dumper=Dumper, sort_keys=False, default_flow_style=False, width=1000)  # type: ignore[no-any-return]
