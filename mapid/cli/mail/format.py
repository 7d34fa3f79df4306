"""How the mail commands show things: message lines as mutt's index has them, headers and
bodies, folder trees, and notifications, each as plain values for `--json` beside the text.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from mapid.cli.mail.session import FolderInfo, StoreInfo
from mapid.constants import FlagStatus, MessageFlags, MsgStatus, RecipientType, flag_names
from mapid.proptags import (
    PR_CLIENT_SUBMIT_TIME,
    PR_DISPLAY_NAME,
    PR_DISPLAY_TO,
    PR_EMAIL_ADDRESS,
    PR_ENTRYID,
    PR_FLAG_STATUS,
    PR_MESSAGE_CLASS,
    PR_MESSAGE_DELIVERY_TIME,
    PR_MESSAGE_FLAGS,
    PR_MESSAGE_SIZE,
    PR_MSG_STATUS,
    PR_RECIPIENT_TYPE,
    PR_SENDER_EMAIL_ADDRESS,
    PR_SENDER_NAME,
    PR_SENT_REPRESENTING_EMAIL_ADDRESS,
    PR_SENT_REPRESENTING_NAME,
    PR_SUBJECT,
)

LIST_COLUMNS: tuple[str, ...] = (
    PR_ENTRYID.name,
    PR_MESSAGE_FLAGS.name,
    PR_FLAG_STATUS.name,
    PR_MSG_STATUS.name,
    PR_CLIENT_SUBMIT_TIME.name,
    PR_MESSAGE_DELIVERY_TIME.name,
    PR_SENDER_NAME.name,
    PR_SENDER_EMAIL_ADDRESS.name,
    PR_DISPLAY_TO.name,
    PR_SUBJECT.name,
    PR_MESSAGE_SIZE.name,
)
"""The only columns `ls` asks for: what one line shows, so a page stays small and fast."""


def _int(value: object, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _when(value: object) -> dt.datetime | None:
    return value if isinstance(value, dt.datetime) else None


# --- one message line -------------------------------------------------------------------------


def flag_letters(row: Mapping[str, Any]) -> str:
    """Maildir's letters, as mutt shows them: N new (unread), F flagged, D draft, T trashed
    (marked deleted)."""
    flags = _int(row.get(PR_MESSAGE_FLAGS.name))
    status = _int(row.get(PR_MSG_STATUS.name))
    letters = ""
    if PR_MESSAGE_FLAGS.name in row and not flags & MessageFlags.MSGFLAG_READ:
        letters += "N"
    if _int(row.get(PR_FLAG_STATUS.name)) == FlagStatus.followupFlagged:
        letters += "F"
    if flags & MessageFlags.MSGFLAG_UNSENT:
        letters += "D"
    if status & MsgStatus.MSGSTATUS_DELMARKED:
        letters += "T"
    return letters


def format_size(size: object) -> str:
    """mutt's %c: 512, 1.2K, 34K, 5.6M."""
    n = _int(size, -1)
    if n < 0:
        return "-"
    if n < 1024:
        return str(n)
    for unit, scale in (("K", 1024), ("M", 1024**2), ("G", 1024**3)):
        value = n / scale
        if value < 10:
            return f"{value:.1f}{unit}"
        if value < 1024 or unit == "G":
            return f"{value:.0f}{unit}"
    return str(n)


def format_date(value: object) -> str:
    """A message time in local time, to the minute."""
    when = _when(value)
    return when.astimezone().strftime("%Y-%m-%d %H:%M") if when else "-"


def message_date(row: Mapping[str, Any]) -> dt.datetime | None:
    """When it was sent (the Date header), else when it arrived."""
    return _when(row.get(PR_CLIENT_SUBMIT_TIME.name)) or _when(
        row.get(PR_MESSAGE_DELIVERY_TIME.name)
    )


def correspondent(row: Mapping[str, Any], outgoing: bool) -> str:
    """Who a line names: the sender, or `To …` in folders of one's own mail, as mutt does."""
    if outgoing:
        to = str(row.get(PR_DISPLAY_TO.name) or "")
        return f"To {to}" if to else "To -"
    return str(row.get(PR_SENDER_NAME.name) or row.get(PR_SENDER_EMAIL_ADDRESS.name) or "-")


def message_item(index: int, row: Mapping[str, Any]) -> dict[str, Any]:
    """One `ls --json` message."""
    flags = _int(row.get(PR_MESSAGE_FLAGS.name))
    return {
        "index": index,
        "entryid": row.get(PR_ENTRYID.name),
        "flags": flag_letters(row),
        "message_flags": flag_names(MessageFlags, flags),
        "unread": PR_MESSAGE_FLAGS.name in row and not flags & MessageFlags.MSGFLAG_READ,
        "date": message_date(row),
        "from": row.get(PR_SENDER_NAME.name),
        "from_address": row.get(PR_SENDER_EMAIL_ADDRESS.name),
        "to": row.get(PR_DISPLAY_TO.name),
        "subject": row.get(PR_SUBJECT.name),
        "size": row.get(PR_MESSAGE_SIZE.name),
    }


FROM_WIDTH = 22
"""The most a line gives the sender (or `To …`), as mutt's %-22.22F; the subject gets the
rest of the width."""


def _fit(text: str, width: int) -> str:
    """`text` in exactly `width` cells: padded, or cut with an ellipsis."""
    if width <= 0:
        return ""
    if len(text) <= width:
        return text.ljust(width)
    return text[: width - 1] + "\u2026"


def message_lines(
    rows: Sequence[Mapping[str, Any]],
    first_index: int,
    *,
    outgoing: bool,
    long: bool,
    width: int,
) -> list[Text]:
    """The lines of `ls`: number, flags, date, who, subject and size, in columns that fit
    `width`, like mutt's index (unread lines bold). With `long`, each line is followed by
    the message's entry ID, indented: it is too long to share a line."""
    if not rows:
        return []
    number_width = len(str(first_index + len(rows) - 1))
    sizes = [f"({format_size(r.get(PR_MESSAGE_SIZE.name))})" for r in rows]
    size_width = max(len(x) for x in sizes)
    who = [correspondent(r, outgoing) for r in rows]
    who_width = min(FROM_WIDTH, max(len(w) for w in who))
    fixed = number_width + 1 + 3 + 1 + 16 + 2 + who_width + 2 + 2 + size_width
    subjects = [str(r.get(PR_SUBJECT.name) or "(no subject)") for r in rows]
    subject_width = min(max(10, width - fixed), max(len(x) for x in subjects))
    lines: list[Text] = []
    for n, row in enumerate(rows):
        letters = flag_letters(row)
        unread = "N" in letters
        line = Text(style="bold" if unread else "")
        line.append(str(first_index + n).rjust(number_width) + " ")
        line.append(letters.ljust(3), style="bold green" if unread else "")
        line.append(" " + format_date(message_date(row)).ljust(16) + "  ")
        line.append(_fit(who[n], who_width) + "  ")
        line.append(_fit(subjects[n], subject_width) + "  ")
        line.append(sizes[n].rjust(size_width), style="dim")
        lines.append(line)
        if long:
            entryid = row.get(PR_ENTRYID.name)
            shown = entryid.hex() if isinstance(entryid, bytes) else "-"
            lines.append(Text(" " * (number_width + 5) + shown, style="dim"))
    return lines


# --- stores and folders ---------------------------------------------------------------------


def store_item(info: StoreInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "default": info.default,
        "provider": info.provider,
        "entryid": info.entryid,
    }


def stores_table(stores: Sequence[StoreInfo]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("Store", "Default", "Provider"):
        table.add_column(name, no_wrap=True, min_width=len(name))
    # On a narrow terminal the long hex folds onto more lines; the names stay whole.
    table.add_column("Entry ID", overflow="fold")
    for info in stores:
        table.add_row(
            Text(info.name, style="bold" if info.default else ""),
            "yes" if info.default else "",
            info.provider,
            info.entryid.hex(),
        )
    return table


def folder_item(info: FolderInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "path": info.path,
        "depth": info.depth,
        "messages": info.messages,
        "unread": info.unread,
        "entryid": info.entryid,
    }


def folders_table(folders: Sequence[FolderInfo]) -> Table:
    """The tree, indented by depth, with message and unread counts."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("Folder", no_wrap=True)
    table.add_column("Messages", justify="right")
    table.add_column("Unread", justify="right")
    for info in folders:
        unread = info.unread or 0
        table.add_row(
            Text("  " * info.depth + info.name, style="bold" if unread else ""),
            "-" if info.messages is None else str(info.messages),
            Text("-" if info.unread is None else str(unread), style="bold" if unread else ""),
        )
    return table


# --- one message ----------------------------------------------------------------------------


def address(name: object, addr: object) -> str:
    """`Ada Lovelace <ada@example.org>`, or whichever half there is."""
    name_s = str(name or "").strip()
    addr_s = str(addr or "").strip()
    if name_s and addr_s and name_s.casefold() != addr_s.casefold():
        return f"{name_s} <{addr_s}>"
    return name_s or addr_s


def recipient_item(row: Mapping[str, Any]) -> dict[str, Any]:
    kind = _int(row.get(PR_RECIPIENT_TYPE.name), int(RecipientType.MAPI_TO))
    return {
        "name": row.get(PR_DISPLAY_NAME.name),
        "address": row.get(PR_EMAIL_ADDRESS.name),
        "type": flag_names(RecipientType, kind)[0],
    }


def header_lines(
    props: Mapping[str, Any], recipients: Sequence[Mapping[str, Any]]
) -> list[tuple[str, str]]:
    """From, To, Cc, Date, Subject, as a mail reader shows them."""
    sender = address(
        props.get(PR_SENT_REPRESENTING_NAME.name) or props.get(PR_SENDER_NAME.name),
        props.get(PR_SENT_REPRESENTING_EMAIL_ADDRESS.name)
        or props.get(PR_SENDER_EMAIL_ADDRESS.name),
    )
    lines: list[tuple[str, str]] = [("From", sender or "-")]
    for label, kind in (("To", RecipientType.MAPI_TO), ("Cc", RecipientType.MAPI_CC)):
        names = [
            address(r.get(PR_DISPLAY_NAME.name), r.get(PR_EMAIL_ADDRESS.name))
            for r in recipients
            if _int(r.get(PR_RECIPIENT_TYPE.name), int(RecipientType.MAPI_TO)) == kind
        ]
        if names or kind == RecipientType.MAPI_TO:
            lines.append((label, ", ".join(names) or str(props.get(PR_DISPLAY_TO.name) or "-")))
    when = message_date(props)
    lines.append(("Date", when.astimezone().strftime("%a, %d %b %Y %H:%M:%S %z") if when else "-"))
    lines.append(("Subject", str(props.get(PR_SUBJECT.name) or "")))
    message_class = str(props.get(PR_MESSAGE_CLASS.name) or "")
    if message_class.upper().startswith("REPORT."):
        lines.append(("Class", message_class))
    return lines


def attachments_of(mime: bytes) -> list[dict[str, Any]]:
    """The attachments of an RFC 5322 message: file name, content type, size in bytes."""
    msg = BytesParser(policy=policy.default).parsebytes(mime)
    if not isinstance(msg, EmailMessage):
        return []
    found: list[dict[str, Any]] = []
    try:
        parts = list(msg.iter_attachments()) if msg.is_multipart() else []
    except (KeyError, ValueError):
        return []
    for part in parts:
        payload = part.get_payload(decode=True)
        found.append(
            {
                "filename": part.get_filename() or "",
                "content_type": part.get_content_type(),
                "size": len(payload) if isinstance(payload, bytes) else None,
            }
        )
    return found


# --- notifications --------------------------------------------------------------------------


def notification_line(
    note: Mapping[str, Any], folder_name: str | None, detail: str | None, now: dt.datetime
) -> Text:
    """`14:02:11  newmail  Inbox  Ada Lovelace: Hello`."""
    event = str(note.get("event", "?"))
    short = EVENT_SHORT_NAMES.get(event, event)
    line = Text()
    line.append(now.astimezone().strftime("%H:%M:%S"), style="dim")
    line.append("  ")
    line.append(f"{short:<8}", style="bold green" if short == "newmail" else "bold")
    if folder_name:
        line.append(f"  {folder_name}", style="cyan")
    if detail:
        line.append(f"  {detail}")
    return line


EVENT_SHORT_NAMES: dict[str, str] = {
    "fnevNewMail": "newmail",
    "fnevObjectCreated": "created",
    "fnevObjectDeleted": "deleted",
    "fnevObjectModified": "modified",
    "fnevObjectMoved": "moved",
    "fnevObjectCopied": "copied",
    "fnevTableModified": "table",
    "fnevCriticalError": "critical",
    "fnevExtended": "extended",
}
"""`notify --events` names, and how a line names an event."""
