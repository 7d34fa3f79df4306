"""`mapictl` for people who send mail: resolve, identity, send and flush.

Each command logs on as mapid.cli.mail.session describes (joining the shared session when
one runs), does its work through the protocol's ops alone, and logs off; composing and
submitting a message, and following it through the spooler, are mapid.cli.mail.send's.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from mapid.cli.context import JsonOpt, ProfileOpt, RuntimeOpt, TimeoutOpt
from mapid.cli.exits import ExitCode
from mapid.cli.mail.common import command_options, notice
from mapid.cli.mail.send import (
    SendRequest,
    explain_failure,
    failed_names,
    recipient_summary,
    resolve_recipients,
    submit,
    wait_for_delivery,
)
from mapid.cli.mail.session import (
    mail_session,
    not_found,
    table_args,
)
from mapid.cli.output import console, decode_row, emit_json, status_table
from mapid.constants import (
    FlushFlags,
    ResourceFlags,
    ResourceType,
)
from mapid.errors import ErrorCode, MapiError
from mapid.proptags import (
    PR_ADDRTYPE,
    PR_DISPLAY_NAME,
    PR_EMAIL_ADDRESS,
    PR_ENTRYID,
    PR_INSTANCE_KEY,
    PR_RESOURCE_FLAGS,
    PR_RESOURCE_TYPE,
)

# --- resolve --------------------------------------------------------------------------------


def resolve(
    ctx: typer.Context,
    names: Annotated[
        list[str],
        typer.Argument(
            metavar="NAME...",
            help="Names or addresses to look up (a part of a name is enough when it fits "
            "one entry only).",
            show_default=False,
        ),
    ],
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = None,
    runtime_dir: RuntimeOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Look names up in the address book, as `send` does.

    For each NAME, the entry ab.resolve_names finds: display name, address and address
    type. A name that fits several entries is ambiguous: its candidates are listed and
    the exit code is 1. A name that fits none gives exit code 3 (when no other name was
    ambiguous). An address the address book does not know comes back as it is (a one-off
    entry); `send` takes a typed address as it is without asking."""
    opts = command_options(ctx, json_output, timeout, runtime_dir, profile)
    results: list[dict[str, Any]] = []
    worst: MapiError | None = None
    with mail_session(opts) as ms:
        ab = ms.open_address_book()
        for name in names:
            try:
                rows = ms.client.ab_resolve_names(ms.token, ab.handle, [name]).get("recipients")
            except MapiError as exc:
                if exc.code not in (ErrorCode.MAPI_E_AMBIGUOUS_RECIP, ErrorCode.MAPI_E_NOT_FOUND):
                    raise
                info = failed_names(exc).get(name) or {"code": exc.code.name, "candidates": []}
                results.append(
                    {
                        "name": name,
                        "error": info["code"],
                        "candidates": [recipient_summary(c) for c in info["candidates"]],
                    }
                )
                if worst is None or exc.code is ErrorCode.MAPI_E_AMBIGUOUS_RECIP:
                    worst = MapiError(
                        exc.code, "some names did not resolve", details={"names": names}
                    )
                for line in explain_failure(name, info):
                    print(line, file=sys.stderr)
                continue
            row = (rows or [{}])[0]
            results.append({"name": name, "recipient": recipient_summary(row)})
    if opts.json:
        payload: dict[str, Any] = {"results": results}
        if worst is not None:
            payload["error"] = worst.to_wire()
        emit_json(payload)
    else:
        for item in results:
            rec = item.get("recipient")
            if rec:
                print(f"{item['name']}: {rec['name']} <{rec['address']}> ({rec['type']})")
    if worst is not None:
        raise typer.Exit(int(ExitCode.MAPI_ERROR if _ambiguous(worst) else ExitCode.NOT_FOUND))


def _ambiguous(exc: MapiError) -> bool:
    return exc.code is ErrorCode.MAPI_E_AMBIGUOUS_RECIP


# --- identity -------------------------------------------------------------------------------


def identity(
    ctx: typer.Context,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = None,
    runtime_dir: RuntimeOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Who the session sends as.

    session.query_identity, then the identity's display name, address and address type,
    and the service that supplies it. When no service of the profile supplies one, the
    daemon answers MAPI_W_NO_SERVICE with a placeholder: mapictl says so (exit code 0;
    give a service an identity with `mapictl services identity`)."""
    opts = command_options(ctx, json_output, timeout, runtime_dir, profile)
    with mail_session(opts) as ms:
        result = ms.client.session_query_identity(ms.token)
        entryid = bytes(result["entryid"])
        opened = ms.open(entryid)
        rows = ms.client.session_status_table(
            ms.token,
            table_args(
                [PR_DISPLAY_NAME.name],
                restriction={
                    "bitmask": PR_RESOURCE_FLAGS.name,
                    "mask": int(ResourceFlags.STATUS_PRIMARY_IDENTITY),
                    "test": "nez",
                },
                limit=1,
            ),
        ).get("rows")
    props = opened.props
    item: dict[str, Any] = {
        "name": props.get(PR_DISPLAY_NAME.name),
        "address": props.get(PR_EMAIL_ADDRESS.name),
        "type": props.get(PR_ADDRTYPE.name),
        "entryid": entryid,
        "service": (rows or [{}])[0].get(PR_DISPLAY_NAME.name) if not result.warning else None,
        "profile": ms.profile,
    }
    if opts.json:
        emit_json({"identity": item, "warning": result.warning})
        return
    if result.warning == ErrorCode.MAPI_W_NO_SERVICE.name:
        print(f"no identity: no service of profile {ms.profile} supplies one (MAPI_W_NO_SERVICE)")
        return
    print(f"{item['name']} <{item['address']}> ({item['type']})")
    if item["service"]:
        print(f"supplied by {item['service']} (profile {ms.profile})")


# --- send -----------------------------------------------------------------------------------

# send's options, declared once as context.py declares the ones every command shares.
ToOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--to",
        "-t",
        metavar="ADDR-OR-NAME",
        help="A recipient: an address ('ada@example.org', 'Ada <ada@example.org>') or a "
        "name the address book knows ('Grace', 'Hopper'). Repeatable.",
        show_default=False,
    ),
]
CcOpt = Annotated[
    list[str] | None,
    typer.Option("--cc", "-c", metavar="ADDR-OR-NAME", help="A Cc recipient; repeatable."),
]
BccOpt = Annotated[
    list[str] | None,
    typer.Option("--bcc", "-b", metavar="ADDR-OR-NAME", help="A Bcc recipient; repeatable."),
]
SubjectOpt = Annotated[str, typer.Option("--subject", "-s", metavar="TEXT", help="The subject.")]
BodyOpt = Annotated[
    str | None,
    typer.Option(
        "--body",
        metavar="TEXT",
        help="The text of the message (default: read from stdin).",
        show_default=False,
    ),
]
AttachOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--attach",
        "-a",
        metavar="FILE",
        exists=True,
        dir_okay=False,
        readable=True,
        help="Attach a file; repeatable.",
        show_default=False,
    ),
]
FromOpt = Annotated[
    str | None,
    typer.Option(
        "--from",
        metavar="ADDRESS",
        help="The From address; it goes out through the transport whose `from` it is "
        "(default: the session's identity, or the first transport's `from`).",
        show_default=False,
    ),
]
WaitOpt = Annotated[
    bool,
    typer.Option(
        "--wait",
        "-w",
        help="Wait until the spooler has sent it, and say whether it went to Sent Items "
        "or came back as a non-delivery report.",
    ),
]
WaitTimeoutOpt = Annotated[
    float,
    typer.Option(
        "--wait-timeout",
        metavar="SECONDS",
        min=0.1,
        help="With --wait: how long to wait before giving up (exit code 5).",
    ),
]


def send(
    ctx: typer.Context,
    to: ToOpt = None,
    cc: CcOpt = None,
    bcc: BccOpt = None,
    subject: SubjectOpt = "",
    body: BodyOpt = None,
    attach: AttachOpt = None,
    sender: FromOpt = None,
    wait: WaitOpt = False,
    wait_timeout: WaitTimeoutOpt = 60.0,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = None,
    runtime_dir: RuntimeOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Send a message; the text comes from stdin (or --body).

    Names are looked up in the address book (ab.resolve_names): one that fits several
    entries is ambiguous (its candidates are listed, exit code 1), one that fits none is
    exit code 3; typed addresses are used as they are. The message is written in the
    default store's Drafts and submitted (message.submit); mapictl prints its entry ID in
    the Outbox, from where the spooler sends it. With --wait it stays until the Outbox no
    longer holds it and says where it went: Sent Items (exit 0), or a non-delivery report
    in the Inbox (exit 1). Messages go out when a session of the profile runs with mail
    enabled: normally the shared session of the autologon profile; without one, use
    --wait."""
    opts = command_options(ctx, json_output, timeout, runtime_dir, profile)
    request = SendRequest.from_options(to, cc, bcc, sender, body)
    outcome: dict[str, Any] = {}
    with mail_session(opts) as ms:
        recipients = resolve_recipients(ms, request.wanted)
        store = ms.store(write=True)
        queued = submit(
            ms,
            store,
            recipients,
            subject,
            request.text,
            attach or [],
            request.message_id,
            request.sender,
        )
        outcome = {
            "entryid": queued,
            "message_id": request.message_id,
            "recipients": [recipient_summary(r) for r in recipients],
        }
        if not opts.json:
            print(f"queued {queued.hex()}", flush=True)
        if wait:
            outcome.update(
                wait_for_delivery(ms, store, queued, subject, request.message_id, wait_timeout)
            )
        elif not ms.shared:
            notice(
                f"no shared session of profile {ms.profile} is running: the message waits "
                "in the Outbox until one runs (use --wait to send it now)"
            )
    if opts.json:
        emit_json(outcome)
    elif wait:
        print(outcome["summary"])
    if outcome.get("outcome") == "ndr":
        raise typer.Exit(int(ExitCode.MAPI_ERROR))


# --- flush ----------------------------------------------------------------------------------


def flush(
    ctx: typer.Context,
    asynchronous: Annotated[
        bool,
        typer.Option(
            "--async",
            help="FLUSH_ASYNC_OK: return at once and let the spooler send in the background "
            "(the spooler only).",
        ),
    ] = False,
    transport: Annotated[
        str | None,
        typer.Option(
            "--transport",
            metavar="NAME",
            help="Flush this transport's queue (its status row's display name) instead of "
            "the spooler's.",
            show_default=False,
        ),
    ] = None,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = None,
    runtime_dir: RuntimeOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Send what is queued, now.

    status.flush_queues with FLUSH_UPLOAD|FLUSH_FORCE on the spooler's status object (or
    a transport's), so messages waiting for a retry go now. It returns when the flush is
    done (unless --async), then prints the spooler's status row (and the transport's),
    whose status string says what failed, if anything."""
    opts = command_options(ctx, json_output, timeout, runtime_dir, profile)
    flags = FlushFlags.FLUSH_UPLOAD | FlushFlags.FLUSH_FORCE
    if asynchronous:
        flags |= FlushFlags.FLUSH_ASYNC_OK
    with mail_session(opts) as ms:
        rows = list(ms.client.session_status_table(ms.token).get("rows") or [])
        spooler = next(
            (r for r in rows if r.get(PR_RESOURCE_TYPE.name) == int(ResourceType.MAPI_SPOOLER)),
            None,
        )
        target = spooler
        if transport is not None:
            target = next(
                (
                    r
                    for r in rows
                    if r.get(PR_RESOURCE_TYPE.name) == int(ResourceType.MAPI_TRANSPORT_PROVIDER)
                    and str(r.get(PR_DISPLAY_NAME.name, "")).casefold() == transport.casefold()
                ),
                None,
            )
            if target is None:
                names = [
                    str(r.get(PR_DISPLAY_NAME.name))
                    for r in rows
                    if r.get(PR_RESOURCE_TYPE.name) == int(ResourceType.MAPI_TRANSPORT_PROVIDER)
                ]
                raise not_found(
                    f"no transport {transport!r} in this session"
                    + (f"; the transports are {', '.join(names)}" if names else ""),
                    transport=transport,
                )
        if target is None:
            raise not_found("this session has no spooler row")
        status_obj = ms.open(bytes(target[PR_ENTRYID.name]))
        ms.client.call(
            "status.flush_queues",
            {"handle": status_obj.handle, "flags": flag_list(flags)},
            token=ms.token,
        )
        keys = [r[PR_INSTANCE_KEY.name] for r in (spooler, target) if r is not None]
        after = [
            decode_row(r)
            for r in ms.client.session_status_table(ms.token).get("rows") or []
            if r.get(PR_INSTANCE_KEY.name) in keys
        ]
    flushed = str(target.get(PR_DISPLAY_NAME.name))
    if opts.json:
        emit_json({"flushed": flushed, "async": asynchronous, "rows": after})
        return
    print(f"flushed {flushed}" + (" (in the background)" if asynchronous else ""))
    console().print(status_table(after))


def flag_list(flags: FlushFlags) -> list[str]:
    return [f.name for f in FlushFlags if f in flags and f.name]
