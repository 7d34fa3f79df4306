"""`mapictl keys`: the client key pairs of remote access over CURVE (docs/protocol.md 9).

Key making needs no daemon: it runs on the client's host, and only the public half travels
to the server, into `authorized_keys.d/` in the daemon's configuration directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mapid.cli.context import JsonOpt
from mapid.cli.exits import handled, usage_when_bare
from mapid.cli.output import emit_json
from mapid.curve_keys import (
    default_key_dir,
    default_key_name,
    read_public_key,
    write_key_pair,
)

keys_app = typer.Typer(
    help="CURVE key pairs for reaching a daemon on another host (docs/remote.md).",
    invoke_without_command=True,
)


@keys_app.callback()
def keys_group(ctx: typer.Context) -> None:
    """CURVE key pairs for reaching a daemon on another host (docs/remote.md)."""
    usage_when_bare(ctx)


SERVER_DIRS = "~/.config/mapid/authorized_keys.d/ (user daemon) or /etc/mapid/authorized_keys.d/"


@keys_app.command("new")
def new(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="DIR",
            help="Where to write NAME.key and NAME.key_secret (default: "
            "~/.config/mapid/keys/, where mapictl looks without --client-key).",
            show_default=False,
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            metavar="NAME",
            help="The key's name: the file names, and who the daemon's log says connected "
            "(default: this host's name).",
            show_default=False,
        ),
    ] = None,
    json_output: JsonOpt = False,
) -> None:
    """Make a client key pair.

    Writes NAME.key (the public key, to copy to the server) and NAME.key_secret (0600,
    stays here) and prints where the public file goes on the server: the daemon's
    authorized_keys.d/ directory, then `mapictl reload` there. Existing files are never
    overwritten."""
    directory = (out if out is not None else default_key_dir()).expanduser()
    key_name = name if name is not None else default_key_name()
    with handled(json_output):
        public_path, secret_path = write_key_pair(
            directory, key_name, "A mapid client key: copy it into authorized_keys.d/."
        )
        public = read_public_key(public_path).decode()
    if json_output:
        emit_json({"public": str(public_path), "secret": str(secret_path), "public_key": public})
        return
    print(f"public key  {public_path}")
    print(f"secret key  {secret_path} (0600: keep it on this host)")
    print(f"key         {public}")
    print()
    print("On the server, allow it and reload:")
    print(f"  copy {public_path.name} into {SERVER_DIRS} (system daemon)")
    print("  mapictl reload")
    print("Then from here:")
    print(
        "  mapictl --endpoint tcp://SERVER:5555 --server-key SERVER.key "
        f"--client-key {secret_path} status"
    )
