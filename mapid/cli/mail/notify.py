"""`mapictl notify`: the command, the event names it takes, and the loop that prints each
notification (docs/protocol.md 7.4) as it arrives while renewing the lease.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from typing import Annotated, Any

import typer

from mapid.cli.context import JsonOpt, ProfileOpt, RuntimeOpt, TimeoutOpt
from mapid.cli.exits import until_interrupted
from mapid.cli.mail.common import StoreOpt, command_options, notice
from mapid.cli.mail.format import EVENT_SHORT_NAMES, notification_line
from mapid.cli.mail.session import LEASE_S, MailSession, mail_session
from mapid.cli.output import console, emit_json
from mapid.constants import NotificationEvent, ObjectType
from mapid.errors import ErrorCode, MapiError
from mapid.proptags import PR_DISPLAY_NAME, PR_SENDER_NAME, PR_SUBJECT

EVENT_NAMES: dict[str, NotificationEvent] = {
    short: NotificationEvent[name] for name, short in EVENT_SHORT_NAMES.items()
}
DEFAULT_EVENTS = "newmail,created,deleted,modified,moved,copied"
SESSION_EVENTS = NotificationEvent.fnevCriticalError | NotificationEvent.fnevExtended
"""The events only the session raises (advised with a nil entry ID)."""
ALL_EVENTS = (
    NotificationEvent.fnevNewMail
    | NotificationEvent.fnevObjectCreated
    | NotificationEvent.fnevObjectDeleted
    | NotificationEvent.fnevObjectModified
    | NotificationEvent.fnevObjectMoved
    | NotificationEvent.fnevObjectCopied
    | SESSION_EVENTS
)
"""`--events all`: what a store or folder raises, and the session's own. Not
fnevTableModified, which belongs to tables (a store advise refuses it)."""


def parse_events(text: str) -> NotificationEvent:
    """`newmail,created` (or fnev names, or `all`) as an event mask."""
    mask = NotificationEvent(0)
    for raw in text.split(","):
        name = raw.strip()
        if not name:
            continue
        if name.lower() == "all":
            mask |= ALL_EVENTS
            continue
        event: NotificationEvent | None = EVENT_NAMES.get(name.lower())
        if event is None and name in NotificationEvent.__members__:
            event = NotificationEvent[name]
        if event is None:
            choices = ", ".join(EVENT_NAMES)
            raise typer.BadParameter(
                f"unknown event {name!r} (one of {choices}, or all)", param_hint="--events"
            )
        mask |= event
    if not mask:
        raise typer.BadParameter("name at least one event", param_hint="--events")
    return mask


def short_names(mask: NotificationEvent) -> list[str]:
    """The `--events` names of a mask, for people."""
    return [short for short, event in EVENT_NAMES.items() if event in mask]


def event_list(mask: NotificationEvent) -> list[str]:
    return [e.name for e in NotificationEvent if e in mask and e.name]


class _Names:
    """Folder names and message summaries for notification lines, looked up once each."""

    def __init__(self, ms: MailSession) -> None:
        self.ms = ms
        self.folders: dict[bytes, str] = {}

    def folder(self, entryid: object) -> str | None:
        if not isinstance(entryid, bytes):
            return None
        if entryid not in self.folders:
            try:
                opened = self.ms.open(entryid)
                self.ms.release(opened.handle)
                self.folders[entryid] = str(opened.props.get(PR_DISPLAY_NAME.name) or "?")
            except MapiError:
                self.folders[entryid] = entryid.hex()[-8:]
        return self.folders[entryid]

    def message(self, entryid: object) -> str | None:
        if not isinstance(entryid, bytes):
            return None
        try:
            opened = self.ms.open(entryid)
            self.ms.release(opened.handle)
        except MapiError:
            return None
        who = opened.props.get(PR_SENDER_NAME.name) or "-"
        return f"{who}: {opened.props.get(PR_SUBJECT.name) or '(no subject)'}"


def _detail(note: Mapping[str, Any], names: _Names) -> str:
    event = note.get("event")
    if event == "fnevNewMail":
        return names.message(note.get("entryid")) or ""
    if event == "fnevCriticalError":
        error = note.get("error")
        if isinstance(error, Mapping):
            return f"{error.get('code')}: {error.get('message')}"
        return ""
    if event == "fnevExtended":
        return str(note.get("extended_event", ""))
    if event == "fnevTableModified":
        return str(note.get("table_event", ""))
    entryid = note.get("entryid")
    if note.get("object_type") == int(ObjectType.MAPI_FOLDER):
        text = f"folder {names.folder(entryid) or '?'}"
    else:
        summary = None if event == "fnevObjectDeleted" else names.message(entryid)
        short = entryid.hex()[-12:] if isinstance(entryid, bytes) else "?"
        text = summary or f"message …{short}"
    if event in ("fnevObjectMoved", "fnevObjectCopied"):
        old = names.folder(note.get("old_parent_entryid"))
        if old:
            text += f" from {old}"
    return text


def follow_notifications(
    ms: MailSession, mask: NotificationEvent, count: int | None, json_output: bool
) -> None:
    """Print notifications until `count` of them (or forever), renewing the lease."""
    names = _Names(ms)
    out = console()
    printed = 0
    renew_every = LEASE_S / 3
    next_renew = time.monotonic() + renew_every
    while count is None or printed < count:
        note = ms.client.recv_notification(timeout=max(0.05, next_renew - time.monotonic()))
        if time.monotonic() >= next_renew:
            ms.renew()
            next_renew = time.monotonic() + renew_every
        if note is None:
            continue
        event_name = str(note.get("event", ""))
        event = NotificationEvent.__members__.get(event_name)
        critical = event is NotificationEvent.fnevCriticalError
        if event is not None and (event & mask or critical):
            if json_output:
                emit_json(note)
            else:
                folder = names.folder(note.get("parent_entryid"))
                out.print(
                    notification_line(note, folder, _detail(note, names), dt.datetime.now(dt.UTC)),
                    soft_wrap=True,
                    highlight=False,
                )
            printed += 1
        if critical:
            error = note.get("error")
            if isinstance(error, Mapping):
                raise MapiError.from_wire(error)
            raise MapiError(ErrorCode.MAPI_E_END_OF_SESSION, "the session ended")


# --- the command ----------------------------------------------------------------------------


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
    one JSON object per line, the notification as the daemon sent it (docs/protocol.md 7.4).
    Ctrl-C (or SIGTERM) stops it with exit code 0. If the session ends under it (a
    MAPI_LOGOFF_SHARED elsewhere), it says so and exits with code 1."""
    opts = command_options(ctx, json_output, timeout, runtime_dir, profile)
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
        notice(f"following {where} ({', '.join(short_names(mask))}); Ctrl-C stops")
        follow_notifications(ms, mask, count, opts.json)


__all__ = [
    "DEFAULT_EVENTS",
    "EVENT_NAMES",
    "SESSION_EVENTS",
    "event_list",
    "follow_notifications",
    "notify",
    "parse_events",
    "short_names",
]
