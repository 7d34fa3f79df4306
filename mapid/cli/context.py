"""What every mapictl command shares: the global options and a connected client."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from mapid.cli.completion import profile_names
from mapid.cli.exits import handled
from mapid.client import Client
from mapid.curve_keys import KeyFileError, default_client_key, load_client_keys
from mapid.errors import MapidError
from mapid.paths import EVENTS_SOCKET, REQUEST_SOCKET
from mapid.remote import events_endpoint_for, is_tcp

DEFAULT_TIMEOUT = 5.0


@dataclass(frozen=True)
class Options:
    json: bool = False
    timeout: float = DEFAULT_TIMEOUT
    runtime_dir: Path | None = None
    profile: str | None = None
    """The profile the mail commands log on to (None: the shared session or the default)."""
    remote: RemoteOptions | None = None
    """--endpoint and its keys: a daemon on another host over CURVE (docs/remote.md)."""


@dataclass(frozen=True)
class RemoteOptions:
    """The global remote options as given; the key files are read when a command connects."""

    endpoint: str
    events_endpoint: str | None = None
    server_key: str | None = None
    client_key: Path | None = None

    def curve(self) -> dict[str, bytes] | None:
        """The client's keys for `Client(curve=...)`; None for an ipc endpoint."""
        if not is_tcp(self.endpoint):
            return None
        if not self.server_key:
            raise KeyFileError(
                f"{self.endpoint} needs --server-key: the daemon's Z85 public key or its "
                "server.key file (curve_server_key in its mapid.json)"
            )
        secret = self.client_key if self.client_key is not None else default_client_key()
        return load_client_keys(secret, self.server_key)

    def events(self) -> str:
        """--events-endpoint, else the request port + 1 (TCP) or the `events.sock` beside
        the `request.sock` (ipc)."""
        if self.events_endpoint:
            return self.events_endpoint
        if is_tcp(self.endpoint):
            return events_endpoint_for(self.endpoint)
        if self.endpoint.endswith(f"/{REQUEST_SOCKET}"):
            return self.endpoint.removesuffix(REQUEST_SOCKET) + EVENTS_SOCKET
        raise MapidError(f"give --events-endpoint: none follows from {self.endpoint}")


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


EndpointOpt = Annotated[
    str | None,
    typer.Option(
        "--endpoint",
        envvar="MAPID_ENDPOINT",
        metavar="URL",
        help="Talk to the daemon at this request endpoint instead of the local one, e.g. "
        "tcp://host:5555 for a remote daemon over CURVE (needs --server-key). "
        "[env: MAPID_ENDPOINT]",
        show_default=False,
        show_envvar=False,
    ),
]
EventsEndpointOpt = Annotated[
    str | None,
    typer.Option(
        "--events-endpoint",
        envvar="MAPID_EVENTS_ENDPOINT",
        metavar="URL",
        help="The remote daemon's events endpoint (default: --endpoint's port + 1). "
        "[env: MAPID_EVENTS_ENDPOINT]",
        show_default=False,
        show_envvar=False,
    ),
]
ServerKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--server-key",
        envvar="MAPID_SERVER_KEY",
        metavar="KEY-OR-FILE",
        help="The remote daemon's CURVE public key: Z85, or a file holding it (its "
        "server.key). [env: MAPID_SERVER_KEY]",
        show_default=False,
        show_envvar=False,
    ),
]
ClientKeyOpt = Annotated[
    Path | None,
    typer.Option(
        "--client-key",
        envvar="MAPID_CLIENT_KEY",
        metavar="SECRET-FILE",
        help="This client's .key_secret file from `mapictl keys new` (default: "
        "~/.config/mapid/keys/HOSTNAME.key_secret). [env: MAPID_CLIENT_KEY]",
        show_default=False,
        show_envvar=False,
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
        autocompletion=profile_names,
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
        remote=base.remote,
    )


def open_client(opts: Options, timeout: float | None = None) -> Client:
    """A client of the local daemon, or of the remote one that --endpoint names."""
    wait = opts.timeout if timeout is None else timeout
    if opts.remote is None:
        return Client(opts.runtime_dir, timeout=wait)
    return Client(
        opts.runtime_dir, endpoint=opts.remote.endpoint, curve=opts.remote.curve(), timeout=wait
    )


@contextmanager
def connected(opts: Options) -> Iterator[Client]:
    """A client for one command, with expected failures turned into exit codes."""
    with handled(opts.json), open_client(opts) as client:
        yield client
