"""What every mail command shares: the --store option, the options of the command line,
and how a command reports a usage error or a remark.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from mapid.cli.context import Options, options

StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        "-s",
        metavar="NAME",
        help="A message store by display name or entry ID (default: the default store; "
        "`mapictl stores` lists them).",
        show_default=False,
    ),
]


def command_options(
    ctx: typer.Context,
    json_output: bool,
    timeout: float | None,
    runtime_dir: Path | None,
    profile: str | None,
) -> Options:
    return options(ctx, json_output, timeout, runtime_dir, profile)


def usage_error(message: str, hint: str) -> typer.BadParameter:
    return typer.BadParameter(message, param_hint=hint)


def notice(message: str) -> None:
    print(f"mapictl: {message}", file=sys.stderr, flush=True)
