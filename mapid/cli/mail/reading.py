"""`mapictl` for people who read mail: stores, folders, ls and show.

Each command logs on as mapid.cli.mail.session describes (joining the shared session when
one runs), does its work through the protocol's ops alone, and logs off. Lists ask the
daemon only for the columns and the page they print, so a folder of 100 000 messages
answers as fast as one of ten.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import typer

from mapid.cli.context import JsonOpt, ProfileOpt, RuntimeOpt, TimeoutOpt
from mapid.cli.mail.common import StoreOpt, command_options, notice, usage_error
from mapid.cli.mail.format import (
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
from mapid.cli.mail.session import (
    MailSession,
    Store,
    looks_like_entryid,
    mail_session,
    not_found,
    split_indexed,
    table_args,
)
from mapid.cli.output import console, emit_json
from mapid.constants import (
    MessageFlags,
    ObjectType,
)
from mapid.errors import ErrorCode, MapiError
from mapid.proptags import (
    PR_BODY,
    PR_CLIENT_SUBMIT_TIME,
    PR_DISPLAY_NAME,
    PR_EMAIL_ADDRESS,
    PR_ENTRYID,
    PR_HASATTACH,
    PR_IPM_DRAFTS_ENTRYID,
    PR_IPM_OUTBOX_ENTRYID,
    PR_IPM_SENTMAIL_ENTRYID,
    PR_MESSAGE_DELIVERY_TIME,
    PR_MESSAGE_FLAGS,
    PR_MESSAGE_SIZE,
    PR_RECIPIENT_TYPE,
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
    opts = command_options(ctx, json_output, timeout, runtime_dir, profile)
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
    opts = command_options(ctx, json_output, timeout, runtime_dir, profile)
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
                raise usage_error(f"unknown sort key {name!r} (one of {choices})", "--sort")
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
    opts = command_options(ctx, json_output, timeout, runtime_dir, profile)
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
        notice(f"{found.path}: no messages" + (f" past {offset} (of {total})" if total else ""))
        return
    more = f"; --offset {offset + len(rows)} for more" if offset + len(rows) < total else ""
    notice(f"{found.path}: messages {offset + 1}-{offset + len(rows)} of {total}{more}")


# --- show -----------------------------------------------------------------------------------


def locate_message(ms: MailSession, spec: str, store: str | None) -> bytes:
    """MESSAGE as `show` takes it: an entry ID in hex, or FOLDER:N of the default `ls`."""
    text = spec.strip()
    if looks_like_entryid(text):
        return bytes.fromhex(text)
    indexed = split_indexed(text)
    if indexed is None:
        raise usage_error(
            f"{spec!r} is neither an entry ID (hex, from `ls -l`) nor FOLDER:N", "MESSAGE"
        )
    folder_name, index = indexed
    if index < 1:
        raise usage_error("N in FOLDER:N counts from 1", "MESSAGE")
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
    opts = command_options(ctx, json_output, timeout, runtime_dir, profile)
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
                notice("the attachments are not listed: the message is over 1 MiB")
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
        notice(f"could not mark it read: {exc.code.name}: {exc.message}")


def _escape(text: str) -> str:
    return text.replace("[", "\\[")
