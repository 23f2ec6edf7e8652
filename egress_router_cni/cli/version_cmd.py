"""`egress-router version`."""

from __future__ import annotations

import json

import click

from .. import __version__
from ..versions import SUPPORTED_VERSIONS


@click.command()
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text", show_default=True)
def version(output: str) -> None:
    """Print the plugin version and the CNI spec versions it serves.

    Example: egress-router version --output json
    """
    if output == "json":
        click.echo(json.dumps({"version": __version__, "cniVersions": list(SUPPORTED_VERSIONS)}))
    else:
        click.echo(f"egress-router {__version__}")
        click.echo(f"CNI spec versions: {' '.join(SUPPORTED_VERSIONS)}")
