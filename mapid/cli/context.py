"""What every mapictl command shares: the global options and a connected client."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from mapid.cli.exits import handled
from mapid.client import Client

DEFAULT_TIMEOUT = 5.0


@dataclass(frozen=True)
class Options:
    json: bool = False
    timeout: float = DEFAULT_TIMEOUT
    runtime_dir: Path | None = None
    profile: str | None = None
    """The profile the mail commands log on to (None: the shared session or the default)."""


JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print JSON for scripts (one object per line).")
]
TimeoutOpt = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        metavar="SECONDS",
        min=0.001,
        help=f"How long to wait for the daemon's answer (default {DEFAULT_TIMEOUT:g}).",
        show_default=False,
    ),
]
RuntimeOpt = Annotated[
    Path | None,
    typer.Option(
        "--runtime-dir",
        metavar="PATH",
        help="The daemon's runtime directory (default: $MAPID_RUNTIME_DIR, else "
        "$XDG_RUNTIME_DIR/mapid, else /tmp/mapid-$UID).",
        show_default=False,
    ),
]


ProfileOpt = Annotated[
    str | None,
    typer.Option(
        "--profile",
        "-p",
        metavar="NAME",
        help="The profile to log on to. Without it the mail commands join the shared session "
        "(the autologon profile's) if one runs, else the default profile. MAPI's rule: a "
        "running shared session is joined whatever the name.",
        show_default=False,
    ),
]


def options(
    ctx: typer.Context,
    json_output: bool,
    timeout: float | None,
    runtime_dir: Path | None,
    profile: str | None = None,
) -> Options:
    """The global options with the command's own on top."""
    base = ctx.find_object(Options) or Options()
    return Options(
        json=base.json or json_output,
        timeout=timeout if timeout is not None else base.timeout,
        runtime_dir=runtime_dir if runtime_dir is not None else base.runtime_dir,
        profile=profile if profile is not None else base.profile,
    )


@contextmanager
def connected(opts: Options) -> Iterator[Client]:
    """A client for one command, with expected failures turned into exit codes."""
    with handled(opts.json), Client(opts.runtime_dir, timeout=opts.timeout) as client:
        yield client
