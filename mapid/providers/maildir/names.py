"""Maildir++ folder names <-> MAPI display names: pure naming, no I/O.

A folder's name is its directory without the leading dot (`Work.Projects` for
`.Work.Projects`, "" for the Inbox, which is the root itself), "." between levels and
non-ASCII levels in IMAP's modified UTF-7 as Dovecot writes them. Which of those
directories are folders is decided in tree.py.
"""

from __future__ import annotations

import base64
import re
import unicodedata

from mapid.errors import ErrorCode, MapiError

__all__ = [
    "DRAFTS",
    "INBOX",
    "OUTBOX",
    "SENT",
    "SPECIAL_NAMES",
    "STANDARD_FOLDERS",
    "TRASH",
    "check_folder_name",
    "display_of",
    "mutf7_decode",
    "mutf7_encode",
    "name_order",
    "parent_of",
]

INBOX = ""
"""The Inbox's folder name: the Maildir root itself."""
STANDARD_FOLDERS = ("Outbox", "Sent", "Trash", "Drafts")
"""Maildir++ folders (`.Outbox` ...) the IPM folders map onto; created at logon."""
OUTBOX, SENT, TRASH, DRAFTS = STANDARD_FOLDERS
SPECIAL_NAMES = {
    INBOX: "Inbox",
    OUTBOX: "Outbox",
    SENT: "Sent Items",
    TRASH: "Deleted Items",
    DRAFTS: "Drafts",
}
"""MAPI display names of the IPM folders, in the order the IPM subtree lists them."""


_MUTF7_RUN = re.compile(r"&([A-Za-z0-9+,]*)-")


def mutf7_encode(text: str) -> str:
    """IMAP's modified UTF-7 (RFC 3501 5.1.3), as Dovecot names Maildir++ folders."""
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            data = "".join(run).encode("utf-16-be")
            out.append("&" + base64.b64encode(data).decode("ascii").rstrip("=").replace("/", ","))
            out.append("-")
            run.clear()

    for ch in text:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    flush()
    return "".join(out)


def mutf7_decode(text: str) -> str:
    """The inverse of mutf7_encode; a name that is not valid modified UTF-7 stays as it is
    (mutt writes raw UTF-8 names)."""

    def one(match: re.Match[str]) -> str:
        body = match.group(1)
        if not body:
            return "&"
        data = body.replace(",", "/")
        data += "=" * (-len(data) % 4)
        return base64.b64decode(data).decode("utf-16-be")

    try:
        return _MUTF7_RUN.sub(one, text)
    except (ValueError, UnicodeDecodeError):
        return text


def parent_of(name: str, names: set[str]) -> str | None:
    """The folder a folder is listed under: its nearest existing ancestor, the Inbox for
    `INBOX.x`, or None for the IPM subtree."""
    if name == INBOX:
        return None
    parts = name.split(".")
    for end in range(len(parts) - 1, 0, -1):
        candidate = ".".join(parts[:end])
        if end == 1 and candidate.upper() == "INBOX":
            return INBOX
        if candidate in names:
            return candidate
    return None


def check_folder_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise MapiError(ErrorCode.MAPI_E_INVALID_PARAMETER, "a folder name must not be empty")
    bad = [ch for ch in (".", "/", "\\") if ch in name]
    if bad or any(ord(ch) < 0x20 for ch in name):
        raise MapiError(
            ErrorCode.MAPI_E_INVALID_PARAMETER,
            f"folder name {name!r} holds {bad[0] if bad else 'a control character'!r}: Maildir++"
            " uses '.' between folder levels, so '.', '/' and '\\' cannot be in a name",
        )
    if name != name.strip():
        raise MapiError(
            ErrorCode.MAPI_E_INVALID_PARAMETER,
            f"folder name {name!r} starts or ends with a space",
        )
    return name


def display_of(name: str) -> str:
    """PR_DISPLAY_NAME of a Maildir++ folder."""
    if name in SPECIAL_NAMES:
        return SPECIAL_NAMES[name]
    return mutf7_decode(name.rsplit(".", 1)[-1])


def name_order(name: str) -> str:
    """Sort key of folder names as a person expects them: accents and case do not count."""
    text = unicodedata.normalize("NFKD", display_of(name))
    return "".join(ch for ch in text if not unicodedata.combining(ch)).casefold()
