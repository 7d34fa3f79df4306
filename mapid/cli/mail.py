"""`mapictl` for people who read and send mail: stores, folders, ls, show, send, resolve,
identity, flush and notify.

Each command logs on as mapid.cli.mail_session describes (joining the shared session when
one runs), does its work through the protocol's ops alone, and logs off. Lists ask the
daemon only for the columns and the page they print, so a folder of 100 000 messages
answers as fast as one of ten.
"""

from __future__ import annotations

import email.utils
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from mapid.cli.context import JsonOpt, Options, ProfileOpt, RuntimeOpt, TimeoutOpt, options
from mapid.cli.exits import ExitCode, until_interrupted
from mapid.cli.mail_format import (
    LIST_COLUMNS,
    attachments_of,
    folder_item,
    folders_table,
    header_lines,
    message_item,
    message_lines,
    recipient_item,
    store_item,
    stores_table,
)
from mapid.cli.mail_notify import (
    DEFAULT_EVENTS,
    SESSION_EVENTS,
    event_list,
    follow_notifications,
    parse_events,
    short_names,
)
from mapid.cli.mail_send import (
    explain_failure,
    failed_names,
    recipient_summary,
    resolve_recipients,
    split_address,
    submit,
    wait_for_delivery,
)
from mapid.cli.mail_session import (
    MailSession,
    Store,
    looks_like_entryid,
    mail_session,
    not_found,
    split_indexed,
    table_args,
)
from mapid.cli.output import console, decode_row, emit_json, status_table
from mapid.constants import (
    FlushFlags,
    MessageFlags,
    NotificationEvent,
    ObjectType,
    RecipientType,
    ResourceFlags,
    ResourceType,
)
from mapid.errors import ErrorCode, MapiError
from mapid.proptags import (
    PR_ADDRTYPE,
    PR_BODY,
    PR_CLIENT_SUBMIT_TIME,
    PR_DISPLAY_NAME,
    PR_EMAIL_ADDRESS,
    PR_ENTRYID,
    PR_HASATTACH,
    PR_INSTANCE_KEY,
    PR_IPM_DRAFTS_ENTRYID,
    PR_IPM_OUTBOX_ENTRYID,
    PR_IPM_SENTMAIL_ENTRYID,
    PR_MESSAGE_DELIVERY_TIME,
    PR_MESSAGE_FLAGS,
    PR_MESSAGE_SIZE,
    PR_RECIPIENT_TYPE,
    PR_RESOURCE_FLAGS,
    PR_RESOURCE_TYPE,
    PR_SENDER_NAME,
    PR_SUBJECT,
)

SORT_KEYS: dict[str, str] = {
    "date": PR_CLIENT_SUBMIT_TIME.name,
    "received": PR_MESSAGE_DELIVERY_TIME.name,
    "subject": PR_SUBJECT.name,
    "from": PR_SENDER_NAME.name,
    "size": PR_MESSAGE_SIZE.name,
}
"""`ls --sort` keys: `date` is when it was sent (the Date header), as mutt's sort=date."""
DEFAULT_SORT: tuple[tuple[str, str], ...] = (
    (PR_CLIENT_SUBMIT_TIME.name, "desc"),
    (PR_MESSAGE_DELIVERY_TIME.name, "desc"),
)
"""Newest first; `FOLDER:N` counts in this order."""


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


def _opts(
    ctx: typer.Context,
    json_output: bool,
    timeout: float | None,
    runtime_dir: Path | None,
    profile: str | None,
) -> Options:
    return options(ctx, json_output, timeout, runtime_dir, profile)


def _usage(message: str, hint: str) -> typer.BadParameter:
    return typer.BadParameter(message, param_hint=hint)


def _notice(message: str) -> None:
    print(f"mapictl: {message}", file=sys.stderr, flush=True)


# --- stores, folders ------------------------------------------------------------------------


def stores(
    ctx: typer.Context,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = None,
    runtime_dir: RuntimeOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """The session's message stores.

    From session.msg_stores_table: each store's display name, whether it is the default
    store (where mail is sent from and arrives), its provider, and its entry ID in hex
    (which --store also takes)."""
    opts = _opts(ctx, json_output, timeout, runtime_dir, profile)
    with mail_session(opts) as ms:
        found = ms.stores()
    if opts.json:
        emit_json({"profile": ms.profile, "stores": [store_item(s) for s in found]})
    elif not found:
        console().print(f"profile {ms.profile} has no message store")
    else:
        console().print(stores_table(found))


def folders(
    ctx: typer.Context,
    store: StoreOpt = None,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = None,
    runtime_dir: RuntimeOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """The folder tree of a store, with message and unread counts.

    Walks the store's IPM subtree (the folders a mail reader shows: Inbox, Outbox, Sent
    Items, Deleted Items, Drafts and yours), sub-folders indented under their parent. The
    names are what `ls FOLDER` takes, sub-folders as `Parent/Child`."""
    opts = _opts(ctx, json_output, timeout, runtime_dir, profile)
    with mail_session(opts) as ms:
        chosen = ms.store(store)
        tree = ms.folder_tree(chosen)
    if opts.json:
        emit_json({"store": chosen.info.name, "folders": [folder_item(f) for f in tree]})
    elif not tree:
        console().print(f"store {chosen.info.name} has no folders")
    else:
        console().print(folders_table(tree))


# --- ls -------------------------------------------------------------------------------------


def parse_sort(keys: Sequence[str]) -> list[tuple[str, str]]:
    """`--sort -date --sort subject` as table sort keys; `-` (or a `~` for shells that
    eat dashes) means descending."""
    out: list[tuple[str, str]] = []
    for raw in keys:
        for key in (k.strip() for k in raw.split(",")):
            if not key:
                continue
            descending = key[0] in "-~"
            name = key[1:] if descending else key
            tag = SORT_KEYS.get(name.lower())
            if tag is None:
                choices = ", ".join(SORT_KEYS)
                raise _usage(f"unknown sort key {name!r} (one of {choices})", "--sort")
            out.append((tag, "desc" if descending else "asc"))
    return out


def _restriction(unread: bool, search: str | None) -> dict[str, Any] | None:
    parts: list[dict[str, Any]] = []
    if unread:
        parts.append(
            {
                "bitmask": PR_MESSAGE_FLAGS.name,
                "mask": int(MessageFlags.MSGFLAG_READ),
                "test": "eqz",
            }
        )
    if search:
        parts.append(
            {"content": PR_SUBJECT.name, "value": search, "match": "substring", "ignore_case": True}
        )
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"and": parts}


def _outgoing(ms: MailSession, store: Store, folder: bytes) -> bool:
    """Whether a folder holds one's own mail (Sent Items, Outbox, Drafts): there, a line
    names the recipients rather than the sender, as mutt does."""
    for tag in (PR_IPM_SENTMAIL_ENTRYID.name, PR_IPM_OUTBOX_ENTRYID.name):
        if ms.same(folder, store.props.get(tag)):
            return True
    return ms.same(folder, ms.special(store, PR_IPM_DRAFTS_ENTRYID.name))


def ls(
    ctx: typer.Context,
    folder: Annotated[
        str,
        typer.Argument(
            metavar="FOLDER",
            help="A folder by name, any case ('Inbox', 'Sent Items', 'Work/Projects'; "
            "'Sent' and 'Trash' work too), or by entry ID in hex. Default: Inbox.",
            show_default=False,
        ),
    ] = "Inbox",
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, help="How many messages to show.")
    ] = 20,
    offset: Annotated[
        int, typer.Option("--offset", min=0, help="Skip this many first (for the next page).")
    ] = 0,
    sort: Annotated[
        list[str] | None,
        typer.Option(
            "--sort",
            metavar="KEY",
            help="date, received, subject, from or size; '-date' is newest first "
            "(the default). Repeatable: later keys break ties.",
            show_default=False,
        ),
    ] = None,
    unread: Annotated[bool, typer.Option("--unread", "-u", help="Only unread messages.")] = False,
    search: Annotated[
        str | None,
        typer.Option(
            "--search",
            metavar="TEXT",
            help="Only messages whose subject contains TEXT (any case).",
            show_default=False,
        ),
    ] = None,
    long: Annotated[
        bool, typer.Option("--long", "-l", help="Add each message's entry ID to its line.")
    ] = False,
    store: StoreOpt = None,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = None,
    runtime_dir: RuntimeOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """The messages of a folder, newest first.

    One line per message: its number, flags (N new, F flagged, D draft, R replied,
    T trashed, as Maildir and mutt name them), date, sender (recipients in Sent Items,
    Outbox and Drafts), subject and size. `mapictl show FOLDER:N` shows line N of the
    default listing (no --sort, --unread or --search); with them, use the entry IDs of
    -l or --json. Only the page shown is read from the store: --limit and --offset page
    through big folders. The total goes to stderr."""
    opts = _opts(ctx, json_output, timeout, runtime_dir, profile)
    order = parse_sort(sort or []) or list(DEFAULT_SORT)
    with mail_session(opts) as ms:
        chosen = ms.store(store)
        found = ms.find_folder(chosen, folder)
        opened = ms.open(found.entryid)
        result = ms.contents(
            opened.handle,
            table_args(
                LIST_COLUMNS,
                restriction=_restriction(unread, search),
                sort=order,
                offset=offset,
                limit=limit,
            ),
        )
        outgoing = not opts.json and _outgoing(ms, chosen, found.entryid)
    rows = list(result.get("rows") or [])
    total = int(result.get("total") or 0)
    if opts.json:
        emit_json(
            {
                "folder": {"name": found.name, "path": found.path, "entryid": found.entryid},
                "total": total,
                "offset": offset,
                "messages": [message_item(offset + 1 + n, r) for n, r in enumerate(rows)],
            }
        )
        return
    if rows:
        out = console()
        for line in message_lines(rows, offset + 1, outgoing=outgoing, long=long, width=out.width):
            out.print(line, no_wrap=True, overflow="ignore", crop=False)
    if not rows:
        _notice(f"{found.path}: no messages" + (f" past {offset} (of {total})" if total else ""))
        return
    more = f"; --offset {offset + len(rows)} for more" if offset + len(rows) < total else ""
    _notice(f"{found.path}: messages {offset + 1}-{offset + len(rows)} of {total}{more}")


# --- show -----------------------------------------------------------------------------------


def locate_message(ms: MailSession, spec: str, store: str | None) -> bytes:
    """MESSAGE as `show` takes it: an entry ID in hex, or FOLDER:N of the default `ls`."""
    text = spec.strip()
    if looks_like_entryid(text):
        return bytes.fromhex(text)
    indexed = split_indexed(text)
    if indexed is None:
        raise _usage(f"{spec!r} is neither an entry ID (hex, from `ls -l`) nor FOLDER:N", "MESSAGE")
    folder_name, index = indexed
    if index < 1:
        raise _usage("N in FOLDER:N counts from 1", "MESSAGE")
    folder = ms.find_folder(ms.store(store), folder_name)
    opened = ms.open(folder.entryid)
    result = ms.contents(
        opened.handle,
        table_args([PR_ENTRYID.name], sort=DEFAULT_SORT, offset=index - 1, limit=1),
    )
    rows = result.get("rows") or []
    if not rows:
        total = int(result.get("total") or 0)
        raise not_found(f"{folder.path} has {total} messages, no number {index}", spec=spec)
    return bytes(rows[0][PR_ENTRYID.name])


def show(
    ctx: typer.Context,
    message: Annotated[
        str,
        typer.Argument(
            metavar="MESSAGE",
            help="An entry ID in hex (from `ls -l` or `ls --json`), or FOLDER:N, the N-th "
            "line of `ls FOLDER` (e.g. Inbox:1, the newest).",
            show_default=False,
        ),
    ],
    raw: Annotated[
        bool, typer.Option("--raw", help="Print the message as it is stored (RFC 5322).")
    ] = False,
    peek: Annotated[bool, typer.Option("--peek", help="Leave an unread message unread.")] = False,
    store: StoreOpt = None,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = None,
    runtime_dir: RuntimeOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """One message: its headers and its body.

    Prints From, To, Cc, Date and Subject, a blank line, then the text body (PR_BODY; for
    HTML-only mail the text the store made of it), and the attachments' names. --raw
    prints the whole message as stored (message.get_mime), for piping into other tools;
    --json prints its properties and recipients. Shown this way (not with --raw, --json
    or --peek), an unread message becomes read, as in a mail reader."""
    opts = _opts(ctx, json_output, timeout, runtime_dir, profile)
    mime: bytes | None = None
    with mail_session(opts) as ms:
        entryid = locate_message(ms, message, store)
        opened = ms.open(entryid)
        if opened.object_type != int(ObjectType.MAPI_MESSAGE):
            raise MapiError(
                ErrorCode.MAPI_E_INVALID_PARAMETER,
                f"{message[:16]}… is not a message's entry ID (`mapictl ls -l` has them)",
            )
        props = dict(opened.props)
        if raw:
            mime = bytes(ms.client.message_get_mime(ms.token, opened.handle).get("mime") or b"")
        elif props.get(PR_HASATTACH.name):
            try:
                mime = bytes(ms.client.message_get_mime(ms.token, opened.handle)["mime"])
            except MapiError as exc:
                if exc.code is not ErrorCode.MAPI_E_TOO_BIG:
                    raise
                _notice("the attachments are not listed: the message is over 1 MiB")
        recipients: list[Mapping[str, Any]] = []
        if not raw:
            columns = [PR_DISPLAY_NAME.name, PR_EMAIL_ADDRESS.name, PR_RECIPIENT_TYPE.name]
            recipients = list(
                ms.client.message_recipients_table(
                    ms.token, opened.handle, table_args(columns)
                ).get("rows")
                or []
            )
        if not (raw or opts.json or peek):
            mark_read(ms, entryid, props)
    if raw and mime is not None:
        sys.stdout.flush()
        sys.stdout.buffer.write(mime)
        sys.stdout.buffer.flush()
        return
    attachments = attachments_of(mime) if mime else []
    if opts.json:
        emit_json(
            {
                "entryid": entryid,
                "props": props,
                "recipients": [recipient_item(r) for r in recipients],
                "attachments": attachments,
                "too_big": list(opened.too_big),
            }
        )
        return
    out = console()
    for label, value in header_lines(props, recipients):
        out.print(f"[bold]{label}:[/bold] {_escape(value)}", highlight=False, soft_wrap=True)
    body = props.get(PR_BODY.name)
    print(flush=True)
    if isinstance(body, str):
        text = body
    elif PR_BODY.name in opened.too_big:
        text = "(the text is over 1 MiB, more than one reply of the daemon carries)"
    else:
        text = "(no text body; --raw shows the whole message)"
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    for item in attachments:
        size = "" if item["size"] is None else f", {item['size']} bytes"
        sys.stdout.write(f"[attachment: {item['filename'] or '-'}, {item['content_type']}{size}]\n")
    sys.stdout.flush()


def mark_read(ms: MailSession, entryid: bytes, props: Mapping[str, Any]) -> None:
    """Set MSGFLAG_READ on an unread message (Maildir's S flag), through a writable handle:
    the message's store opened with MDB_WRITE, the message with MAPI_MODIFY. A store that
    refuses only costs a remark on stderr."""
    flags = props.get(PR_MESSAGE_FLAGS.name)
    if not isinstance(flags, int) or flags & MessageFlags.MSGFLAG_READ:
        return
    try:
        ms.store_of(entryid, write=True)
        message = ms.open(entryid, modify=True)
        read = {PR_MESSAGE_FLAGS.name: flags | int(MessageFlags.MSGFLAG_READ)}
        problems = ms.client.object_set_props(ms.token, message.handle, read).get("problems")
        if problems:
            raise MapiError(ErrorCode.MAPI_E_NO_ACCESS, f"the store refused: {problems}")
        ms.client.object_save_changes(ms.token, message.handle)
    except MapiError as exc:
        _notice(f"could not mark it read: {exc.code.name}: {exc.message}")


def _escape(text: str) -> str:
    return text.replace("[", "\\[")


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
    opts = _opts(ctx, json_output, timeout, runtime_dir, profile)
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
    opts = _opts(ctx, json_output, timeout, runtime_dir, profile)
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


def _read_body(body: str | None) -> str:
    if body is not None:
        return body
    if sys.stdin.isatty():
        _notice("type the message, then Ctrl-D on a line of its own")
    return sys.stdin.read()


def send(
    ctx: typer.Context,
    to: Annotated[
        list[str] | None,
        typer.Option(
            "--to",
            "-t",
            metavar="ADDR-OR-NAME",
            help="A recipient: an address ('ada@example.org', 'Ada <ada@example.org>') or a "
            "name the address book knows ('Grace', 'Hopper'). Repeatable.",
            show_default=False,
        ),
    ] = None,
    cc: Annotated[
        list[str] | None,
        typer.Option("--cc", "-c", metavar="ADDR-OR-NAME", help="A Cc recipient; repeatable."),
    ] = None,
    bcc: Annotated[
        list[str] | None,
        typer.Option("--bcc", "-b", metavar="ADDR-OR-NAME", help="A Bcc recipient; repeatable."),
    ] = None,
    subject: Annotated[
        str, typer.Option("--subject", "-s", metavar="TEXT", help="The subject.")
    ] = "",
    body: Annotated[
        str | None,
        typer.Option(
            "--body",
            metavar="TEXT",
            help="The text of the message (default: read from stdin).",
            show_default=False,
        ),
    ] = None,
    attach: Annotated[
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
    ] = None,
    sender: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="ADDRESS",
            help="The From address (default: the session's identity, or the transport's `from`).",
            show_default=False,
        ),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            "-w",
            help="Wait until the spooler has sent it, and say whether it went to Sent Items "
            "or came back as a non-delivery report.",
        ),
    ] = False,
    wait_timeout: Annotated[
        float,
        typer.Option(
            "--wait-timeout",
            metavar="SECONDS",
            min=0.1,
            help="With --wait: how long to wait before giving up (exit code 5).",
        ),
    ] = 60.0,
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
    opts = _opts(ctx, json_output, timeout, runtime_dir, profile)
    wanted = (
        [(t, RecipientType.MAPI_TO) for t in to or []]
        + [(c, RecipientType.MAPI_CC) for c in cc or []]
        + [(b, RecipientType.MAPI_BCC) for b in bcc or []]
    )
    if not wanted:
        raise _usage("give at least one recipient", "--to")
    if sender is not None and split_address(sender) is None:
        raise _usage(f"{sender!r} is not an address", "--from")
    text = _read_body(body)
    domain = socket.gethostname() or "localhost"
    message_id = email.utils.make_msgid(domain=domain)
    outcome: dict[str, Any] = {}
    with mail_session(opts) as ms:
        recipients = resolve_recipients(ms, wanted)
        store = ms.store(write=True)
        queued = submit(ms, store, recipients, subject, text, attach or [], message_id, sender)
        outcome = {
            "entryid": queued,
            "message_id": message_id,
            "recipients": [recipient_summary(r) for r in recipients],
        }
        if not opts.json:
            print(f"queued {queued.hex()}", flush=True)
        if wait:
            outcome.update(wait_for_delivery(ms, store, queued, subject, message_id, wait_timeout))
        elif not ms.shared:
            _notice(
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
    opts = _opts(ctx, json_output, timeout, runtime_dir, profile)
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


# --- notify ---------------------------------------------------------------------------------


def notify(
    ctx: typer.Context,
    folder: Annotated[
        str | None,
        typer.Argument(
            metavar="FOLDER",
            help="Follow only this folder (default: the whole default store).",
            show_default=False,
        ),
    ] = None,
    events: Annotated[
        str,
        typer.Option(
            "--events",
            "-e",
            metavar="LIST",
            help="Comma-separated: newmail, created, deleted, modified, moved, copied, "
            "critical, extended (the session's: an end forced by another member, the "
            "logoff), or all of these.",
        ),
    ] = DEFAULT_EVENTS,
    count: Annotated[
        int | None,
        typer.Option(
            "--count", "-n", min=1, help="Stop after N notifications.", show_default=False
        ),
    ] = None,
    store: StoreOpt = None,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = None,
    runtime_dir: RuntimeOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Follow a store's (or a folder's) notifications until Ctrl-C.

    Registers with session.advise and prints each notification as it arrives: new mail
    (with its sender and subject), messages and folders created, deleted, modified, moved
    and copied, whether through mapid or by another program in the Maildir. With --json,
    one JSON object per line, the notification as the daemon sent it (PROTOCOL.md 7.4).
    Ctrl-C (or SIGTERM) stops it with exit code 0. If the session ends under it (a
    MAPI_LOGOFF_SHARED elsewhere), it says so and exits with code 1."""
    opts = _opts(ctx, json_output, timeout, runtime_dir, profile)
    mask = parse_events(events)
    object_mask = mask & ~SESSION_EVENTS
    # Ctrl-C or SIGTERM: the session logs off, then the command ends with exit code 0.
    with until_interrupted(), mail_session(opts) as ms:
        chosen = ms.store(store)
        target: bytes = chosen.info.entryid
        where = f"store {chosen.info.name}"
        if folder is not None:
            found = ms.find_folder(chosen, folder)
            target, where = found.entryid, f"folder {found.path}"
        if object_mask:
            ms.client.session_advise(ms.token, event_list(object_mask), target)
        ms.client.session_advise(
            ms.token, event_list(NotificationEvent.fnevCriticalError | (mask & SESSION_EVENTS))
        )
        _notice(f"following {where} ({', '.join(short_names(mask))}); Ctrl-C stops")
        follow_notifications(ms, mask, count, opts.json)


# --- registration ---------------------------------------------------------------------------

COMMANDS = (stores, folders, ls, show, send, resolve, identity, flush, notify)


def register(app: typer.Typer) -> None:
    """Add the mail commands to mapictl."""
    for command in COMMANDS:
        app.command(command.__name__)(command)


__all__ = ["COMMANDS", "register"]
