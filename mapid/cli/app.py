"""`mapictl`, the control command of mapid: a typer app that is only a protocol client.

It talks to the daemon through `mapid.Client`, `mapid.StatusMirror` and a SUB socket, never
by importing the daemon (docs/design.md 1). Every command has a readable default output and
`--json` for scripts; failures become a message on stderr and a documented exit code
(mapid.cli.exits), never a traceback.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Annotated, Any

import typer
import zmq

import mapid
from mapid.cli import events as events_mod
from mapid.cli import watch as watch_mod
from mapid.cli.admin import config_app, profiles_app, services_app
from mapid.cli.completion import profile_names
from mapid.cli.contacts import register as register_contacts_commands
from mapid.cli.context import (
    DEFAULT_TIMEOUT,
    ClientKeyOpt,
    EndpointOpt,
    EventsEndpointOpt,
    JsonOpt,
    Options,
    ProfileOpt,
    RemoteOptions,
    RuntimeOpt,
    ServerKeyOpt,
    TimeoutOpt,
    connected,
    open_client,
    options,
)
from mapid.cli.exits import (
    EXIT_CODES_HELP,
    ExitCode,
    describe,
    error_object,
    exit_code,
    handled,
    until_interrupted,
    usage_when_bare,
)
from mapid.cli.keys import keys_app
from mapid.cli.mail import register as register_mail_commands
from mapid.cli.output import (
    config_lines,
    console,
    decode_row,
    decode_session,
    emit_json,
    sessions_table,
    sort_rows,
    status_renderable,
    status_table,
    status_view,
)
from mapid.client import Client
from mapid.constants import LogonFlags
from mapid.errors import ErrorCode, MapidError, MapiError

APP_HELP = f"""Control and watch mapid, the MAPI session daemon.

mapictl finds the daemon through the connection file mapid.json in its runtime directory:
--runtime-dir, else $MAPID_RUNTIME_DIR, else $XDG_RUNTIME_DIR/mapid, else /tmp/mapid-$UID.
The options --json, --timeout and --runtime-dir work before the command and after it, and
so does --profile for the mail commands (stores, folders, ls, show, send, resolve,
identity, flush, notify).

A daemon on another host: --endpoint tcp://HOST:5555 --server-key KEY-OR-FILE
[--client-key SECRET-FILE] [--events-endpoint tcp://HOST:5556], before the command (or
MAPID_ENDPOINT, MAPID_SERVER_KEY, MAPID_CLIENT_KEY, MAPID_EVENTS_ENDPOINT); every command
then works over CURVE. `mapictl keys new` makes the client's key pair (docs/remote.md).

Tables fit the terminal's width (COLUMNS when set; 80 columns when the output is not a
terminal), as systemctl's do: long names, paths and status strings end in an ellipsis, the
columns a command takes stay whole. --json always prints the full values.

{EXIT_CODES_HELP}
"""

app = typer.Typer(
    name="mapictl",
    help=APP_HELP,
    invoke_without_command=True,
    add_completion=True,
    rich_markup_mode=None,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


# --- global options ---------------------------------------------------------------------------


@app.callback()
def main_options(
    ctx: typer.Context,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = None,
    runtime_dir: RuntimeOpt = None,
    profile: ProfileOpt = None,
    endpoint: EndpointOpt = None,
    events_endpoint: EventsEndpointOpt = None,
    server_key: ServerKeyOpt = None,
    client_key: ClientKeyOpt = None,
) -> None:
    """Keep the global options for the command (which may override them)."""
    usage_when_bare(ctx)
    if endpoint is None and (events_endpoint or server_key or client_key):
        raise typer.BadParameter(
            "--events-endpoint, --server-key and --client-key go with --endpoint",
            param_hint="--endpoint",
        )
    ctx.obj = Options(
        json=json_output,
        timeout=timeout if timeout is not None else DEFAULT_TIMEOUT,
        runtime_dir=runtime_dir,
        profile=profile,
        remote=RemoteOptions(endpoint, events_endpoint, server_key, client_key)
        if endpoint is not None
        else None,
    )


def parse_token(token_hex: str) -> bytes:
    """A member token as `logon` printed it (hex); a bad one is a usage error."""
    try:
        token = bytes.fromhex(token_hex.strip())
    except ValueError:
        raise typer.BadParameter("not a hex string", param_hint="TOKEN_HEX") from None
    if not token:
        raise typer.BadParameter("empty", param_hint="TOKEN_HEX")
    return token


# --- ping, version ---------------------------------------------------------------------------


@app.command()
def ping(
    ctx: typer.Context,
    count: Annotated[int, typer.Option("--count", "-c", min=1, help="How many pings to send.")] = 1,
    interval: Annotated[
        float,
        typer.Option("--interval", "-i", min=0.0, metavar="SECONDS", help="Pause between pings."),
    ] = 0.2,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = None,
    runtime_dir: RuntimeOpt = None,
) -> None:
    """Round-trip time to the daemon.

    Sends daemon.ping and prints the round-trip time in milliseconds; with --count N,
    N pings and their min/avg/max."""
    opts = options(ctx, json_output, timeout, runtime_dir)
    out = console()
    with connected(opts) as client:
        hello = client.daemon_hello()
        if not opts.json:
            out.print(
                f"PING mapid {hello.get('version')} (pid {hello.get('pid')}, "
                f"protocol {hello.get('protocol')}) at {client.endpoint}"
            )
        rtts: list[float] = []
        for n in range(count):
            if n:
                time.sleep(interval)
            start = time.perf_counter()
            client.daemon_ping()
            rtt = 1000 * (time.perf_counter() - start)
            rtts.append(rtt)
            if not opts.json:
                out.print(f"reply {n + 1}: time {rtt:.3f} ms")
    summary = {
        "min_ms": round(min(rtts), 3),
        "avg_ms": round(statistics.fmean(rtts), 3),
        "max_ms": round(max(rtts), 3),
    }
    if opts.json:
        emit_json(
            {
                "endpoint": client.endpoint,
                "version": hello.get("version"),
                "protocol": hello.get("protocol"),
                "pid": hello.get("pid"),
                "count": count,
                "rtt_ms": [round(r, 3) for r in rtts],
                **summary,
            }
        )
    else:
        out.print(
            f"{count} {'reply' if count == 1 else 'replies'}: min/avg/max = "
            f"{summary['min_ms']:.3f}/{summary['avg_ms']:.3f}/{summary['max_ms']:.3f} ms"
        )


@app.command()
def version(
    ctx: typer.Context,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = None,
    runtime_dir: RuntimeOpt = None,
) -> None:
    """Client and daemon versions.

    Prints mapictl's version and the running daemon's (from daemon.hello). Without a
    daemon the client version is still printed, and the exit code is 4."""
    opts = options(ctx, json_output, timeout, runtime_dir)
    client_version = mapid.__version__
    try:
        with open_client(opts) as client:
            hello = client.daemon_hello()
    except (MapidError, zmq.ZMQError) as exc:
        print(f"mapictl: {describe(exc)}", file=sys.stderr, flush=True)
        if opts.json:
            emit_json({"client": client_version, "daemon": None, "error": error_object(exc)})
        else:
            print(f"mapictl {client_version}")
        raise typer.Exit(int(exit_code(exc))) from None
    if opts.json:
        emit_json(
            {
                "client": client_version,
                "daemon": hello.get("version"),
                "protocol": hello.get("protocol"),
                "pid": hello.get("pid"),
                "epoch": hello.get("epoch"),
                "capabilities": hello.get("capabilities"),
            }
        )
        return
    print(f"mapictl {client_version}")
    print(
        f"mapid {hello.get('version')} (protocol {hello.get('protocol')}, pid {hello.get('pid')})"
    )


# --- status, sessions, events ---------------------------------------------------------------


def take_snapshot(client: Client, prefix: str = "") -> dict[str, Any]:
    """daemon.snapshot with its `next` parts followed and merged (all at one `seq`)."""
    first = dict(client.daemon_snapshot(prefix=prefix or None))
    merged = dict(first)
    merged["sessions"] = list(first.get("sessions") or [])
    merged["status"] = dict(first.get("status") or {})
    merged["topics"] = dict(first.get("topics") or {})
    cursor = first.get("next")
    while cursor:
        part = client.daemon_snapshot(cursor=cursor)
        merged["sessions"].extend(part.get("sessions") or [])
        merged["status"].update(part.get("status") or {})
        merged["topics"].update(part.get("topics") or {})
        cursor = part.get("next")
    merged.pop("next", None)
    return merged


@app.command()
def status(
    ctx: typer.Context,
    session: Annotated[
        str | None,
        typer.Argument(
            metavar="SESSION",
            help="Only the sessions whose id starts with this (exit code 3 if none does).",
            show_default=False,
        ),
    ] = None,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            "-w",
            help="Keep the view live until Ctrl-C; with --json, print one JSON snapshot "
            "line per change. It keeps going across daemon restarts.",
        ),
    ] = False,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = None,
    runtime_dir: RuntimeOpt = None,
) -> None:
    """The daemon, its sessions and their status tables.

    Shows the daemon (version, pid, epoch, uptime, config generation, and the last
    reload with its errors if any), then every session (id, profile, shared, members,
    state) with its status rows: each account's state (online, offline, syncing N%,
    failed), resource type, status code, resource flags and methods decoded into their
    MAPI names, and the status string. It is one consistent daemon.snapshot. With --json
    the same as one object, flags as lists of names, the state as `state`."""
    opts = options(ctx, json_output, timeout, runtime_dir)
    if watch:
        with handled(opts.json), until_interrupted():
            watch_mod.run(
                opts.runtime_dir,
                json_output=opts.json,
                timeout=opts.timeout,
                session_prefix=session,
                connect=None if opts.remote is None else lambda wait: open_client(opts, wait),
                events_endpoint=None if opts.remote is None else opts.remote.events(),
            )
        return
    with connected(opts) as client:
        hello = client.daemon_hello()
        snap = take_snapshot(client, f"session.{session}" if session else "")
        if session and not snap["sessions"]:
            raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, f"no session id starts with {session!r}")
    view = status_view(hello, snap, snap["sessions"], snap["status"])
    if opts.json:
        emit_json(view)
    else:
        console().print(status_renderable(view))


@app.command()
def sessions(
    ctx: typer.Context,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = None,
    runtime_dir: RuntimeOpt = None,
) -> None:
    """The daemon's sessions, one a line.

    From daemon.sessions: id, profile, shared, members, state, logon flags, and since
    when (the time of day for today, else the date; --json has the full "created"
    time)."""
    opts = options(ctx, json_output, timeout, runtime_dir)
    with connected(opts) as client:
        found = [decode_session(s) for s in client.daemon_sessions().get("sessions") or []]
    if opts.json:
        emit_json({"sessions": found})
    elif not found:
        console().print("no sessions")
    else:
        console().print(sessions_table(found))


@app.command()
def events(
    ctx: typer.Context,
    prefix: Annotated[
        str,
        typer.Argument(
            metavar="PREFIX",
            help="Topic prefix to follow: 'session.', 'status.ID', 'daemon' ... "
            "(default: everything).",
            show_default=False,
        ),
    ] = "",
    count: Annotated[
        int | None,
        typer.Option("--count", "-n", min=1, help="Stop after N events.", show_default=False),
    ] = None,
    heartbeats: Annotated[
        bool, typer.Option("--heartbeats", help="Print heartbeats too (they are skipped).")
    ] = False,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = None,
    runtime_dir: RuntimeOpt = None,
) -> None:
    """Follow the event stream.

    Prints the daemon's public events as they happen: session logons and logoffs,
    status-table changes, reloads. One readable line per event, or with --json exactly
    one JSON object per line: "topic" plus the event's payload, bytes as hex strings,
    times in ISO 8601. Heartbeats are skipped unless --heartbeats. --timeout bounds only
    the wait for the daemon's first sign of life; restarts and lost events are noted on
    stderr. Ctrl-C stops it (exit code 0)."""
    opts = options(ctx, json_output, timeout, runtime_dir)
    with handled(opts.json), until_interrupted():
        events_mod.follow(
            opts.runtime_dir,
            prefix,
            count=count,
            heartbeats=heartbeats,
            json_output=opts.json,
            timeout=opts.timeout,
            events_endpoint=None if opts.remote is None else opts.remote.events(),
            curve=None if opts.remote is None else opts.remote.curve(),
        )


@app.command()
def reload(
    ctx: typer.Context,
    check: Annotated[
        bool, typer.Option("--check", help="Only validate the files; apply nothing.")
    ] = False,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = None,
    runtime_dir: RuntimeOpt = None,
) -> None:
    """Reload the configuration now.

    Re-reads the configuration and profile files (daemon.reload) and reports what
    changed. It returns when the reload is done, so systemd's ExecReload can use it.
    Exit code 1 when a file had errors (those files keep their previous version)."""
    opts = options(ctx, json_output, timeout, runtime_dir)
    with connected(opts) as client:
        result = dict(client.daemon_reload(check=True if check else None))
    if opts.json:
        emit_json(result)
    else:
        out = console()
        if check:
            out.print("check only: nothing was applied")
        for line in config_lines({"gen": result.get("gen"), "last_reload": result}):
            out.print(line)
    if not result.get("ok", True):
        print("mapictl: the reload found errors", file=sys.stderr)
        raise typer.Exit(int(ExitCode.MAPI_ERROR))


# --- logon, logoff, status-table -------------------------------------------------------------


def logon_flag(name: str) -> str:
    """`new_session`, `NEW_SESSION` and `MAPI_NEW_SESSION` all name MAPI_NEW_SESSION; an
    unknown name goes to the daemon as given, which answers MAPI_E_UNKNOWN_FLAGS."""
    upper = name.strip().upper().replace("-", "_")
    for candidate in (upper, f"MAPI_{upper}"):
        if candidate in LogonFlags.__members__:
            return candidate
    return name


@app.command()
def logon(
    ctx: typer.Context,
    profile: Annotated[
        str | None,
        typer.Argument(
            metavar="PROFILE",
            help="The profile to log on (omit it to join the shared session, or with "
            "--use-default for the default profile).",
            show_default=False,
            autocompletion=profile_names,
        ),
    ] = None,
    flag: Annotated[
        list[str] | None,
        typer.Option(
            "--flag",
            "-f",
            metavar="NAME",
            help="A MAPI logon flag (MAPI_ALLOW_OTHERS, MAPI_EXPLICIT_PROFILE ...); repeatable.",
            show_default=False,
        ),
    ] = None,
    new_session: Annotated[
        bool, typer.Option("--new-session", help="MAPI_NEW_SESSION: never join the shared one.")
    ] = False,
    no_mail: Annotated[
        bool, typer.Option("--no-mail", help="MAPI_NO_MAIL: this member gets no spooler.")
    ] = False,
    use_default: Annotated[
        bool, typer.Option("--use-default", help="MAPI_USE_DEFAULT: the default profile.")
    ] = False,
    lease: Annotated[
        float,
        typer.Option(
            "--lease",
            min=0.0,
            metavar="SECONDS",
            help="The member's lease. 0 (the default) keeps it until `mapictl logoff TOKEN`; "
            "a positive lease ends it that long after its last call, and mapictl exits at "
            "once, so use one only if something else renews the token.",
        ),
    ] = 0.0,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = None,
    runtime_dir: RuntimeOpt = None,
) -> None:
    """Log a profile on (for scripts).

    Prints the session id and the member's token (hex), which `logoff` and
    `status-table` take. A logon lives only while its lease is renewed, and mapictl
    exits at once, so the default --lease 0 keeps it until `mapictl logoff TOKEN`.
    Exit code 3 when the profile does not exist."""
    opts = options(ctx, json_output, timeout, runtime_dir)
    names = [logon_flag(f) for f in flag or []]
    for wanted, name in (
        (new_session, "MAPI_NEW_SESSION"),
        (no_mail, "MAPI_NO_MAIL"),
        (use_default, "MAPI_USE_DEFAULT"),
    ):
        if wanted and name not in names:
            names.append(name)
    args: dict[str, Any] = {
        "flags": names,
        "client": {"name": "mapictl", "pid": os.getpid()},
        "lease_s": lease,
    }
    if profile is not None:
        args["profile"] = profile
    with connected(opts) as client:
        # A deadline inside our time-out: a logon the daemon cannot finish in time is
        # undone there (MAPI_E_TIMEOUT, exit 5) instead of leaving a member nobody holds.
        result = client.call("session.logon", args, deadline_ms=max(1, int(900 * opts.timeout)))
    token = bytes(result["token"])
    if profile and result.get("profile") != profile:
        # MAPI's rule: without MAPI_NEW_SESSION the shared session wins over a named profile.
        print(
            f"note: joined the shared session of profile {result.get('profile')!r}; "
            f"use --new-session to log on to {profile!r} itself",
            file=sys.stderr,
        )
    out = {
        "session": result.get("session"),
        "profile": result.get("profile"),
        "shared": bool(result.get("shared")),
        "lease_s": result.get("lease_s", lease),
        "token": token.hex(),
    }
    if opts.json:
        emit_json(out)
        return
    lease_s = out["lease_s"]
    lease_text = (
        "none: lives until `mapictl logoff TOKEN`"
        if not lease_s
        else f"{lease_s:g} s (renew the token, or it ends)"
    )
    print(f"session {out['session']}")
    print(f"profile {out['profile']}")
    print(f"shared  {'yes' if out['shared'] else 'no'}")
    print(f"lease   {lease_text}")
    print(f"token   {out['token']}")


TokenArg = Annotated[
    str,
    typer.Argument(
        metavar="TOKEN_HEX",
        help="The member token that `mapictl logon` printed (hex).",
        show_default=False,
    ),
]


@app.command()
def logoff(
    ctx: typer.Context,
    token_hex: TokenArg,
    shared: Annotated[
        bool,
        typer.Option(
            "--shared",
            help="MAPI_LOGOFF_SHARED: end the shared session for all of its members.",
        ),
    ] = False,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = None,
    runtime_dir: RuntimeOpt = None,
) -> None:
    """Log a member off.

    Logs off the member with this token; the session ends with its last member (or at
    once for everyone with --shared). The token is dead afterwards."""
    opts = options(ctx, json_output, timeout, runtime_dir)
    token = parse_token(token_hex)
    with connected(opts) as client:
        client.session_logoff(token, ["MAPI_LOGOFF_SHARED"] if shared else None)
    if opts.json:
        emit_json({"ok": True})
    else:
        print("logged off")


@app.command("status-table")
def status_table_cmd(
    ctx: typer.Context,
    token_hex: TokenArg,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = None,
    runtime_dir: RuntimeOpt = None,
) -> None:
    """One session's status table.

    Shows session.status_table of the session this token belongs to, decoded as
    `status` shows it."""
    opts = options(ctx, json_output, timeout, runtime_dir)
    token = parse_token(token_hex)
    with connected(opts) as client:
        result = client.session_status_table(token)
    rows = [decode_row(r) for r in sort_rows(result.get("rows") or [])]
    if opts.json:
        emit_json({"rows": rows, "total": result.get("total"), "seq": result.get("seq")})
    else:
        console().print(status_table(rows))


# --- entry point ----------------------------------------------------------------------------


app.add_typer(profiles_app, name="profiles")
app.add_typer(services_app, name="services")
app.add_typer(config_app, name="config")
app.add_typer(keys_app, name="keys")
register_mail_commands(app)
register_contacts_commands(app)


def main() -> None:
    """The `mapictl` console script."""
    app(prog_name="mapictl")


__all__ = ["app", "main"]

if __name__ == "__main__":
    main()
