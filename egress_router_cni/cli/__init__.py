"""The human CLI (click). Never imported in CNI mode.

Each command lives in its own module and is registered lazily, so
`egress-router version` does not import what `render` needs.
"""

from __future__ import annotations

import importlib
from typing import Any, Dict, List, Optional, Tuple

import click

# command name -> (module, attribute): modules are imported only when the command runs.
COMMANDS: Dict[str, Tuple[str, str]] = {
    "version": ("egress_router_cni.cli.version_cmd", "version"),
    "validate": ("egress_router_cni.cli.validate_cmd", "validate"),
    "inspect": ("egress_router_cni.cli.inspect_cmd", "inspect"),
    "render": ("egress_router_cni.cli.render_cmd", "render"),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> List[str]:
        """The subcommands' names, without importing them."""
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> Optional[click.Command]:
        """The subcommand called cmd_name, imported now; None when there is none."""
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module = importlib.import_module(target[0])
        command: click.Command = getattr(module, target[1])
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="egress-router-cni", prog_name="egress-router")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="How messages on stderr are written: plain lines or JSON records.",
)
@click.pass_context
def cli(ctx: click.Context, log_format: str) -> None:
    """egress-router: a CNI plugin giving a pod a reserved source IP and redirecting its traffic.

    Runtimes execute this program with CNI_COMMAND set; without it, these
    commands are for humans. Shell completion (bash):
    eval "$(_EGRESS_ROUTER_COMPLETE=bash_source egress-router)"
    """
    ctx.ensure_object(dict)
    ctx.obj["log_format"] = log_format


def main(argv: Optional[List[str]] = None) -> Any:
    """Run the human CLI (click) on argv (sys.argv when None)."""
    return cli.main(args=argv, prog_name="egress-router")
