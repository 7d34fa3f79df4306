"""Cached IMAP messages -> MAPI properties: contents-table rows and an opened message's
computed properties (pure). The headers' mapping is the shared rfc5322.py's, so a row and
its opened message never disagree; here are only IMAP's own parts.

IMAP flags: \\Seen is MSGFLAG_READ, \\Draft MSGFLAG_UNSENT, \\Flagged PR_FLAG_STATUS 2
(followupFlagged), \\Deleted MSGSTATUS_DELMARKED; INTERNALDATE is the delivery time.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mapid.constants import MessageFlags, MsgStatus, ObjectType
from mapid.proptags import (
    PR_CLIENT_SUBMIT_TIME,
    PR_DISPLAY_TO,
    PR_ENTRYID,
    PR_FLAG_STATUS,
    PR_HASATTACH,
    PR_INSTANCE_KEY,
    PR_INTERNET_MESSAGE_ID,
    PR_MESSAGE_CLASS,
    PR_MESSAGE_DELIVERY_TIME,
    PR_MESSAGE_FLAGS,
    PR_MESSAGE_SIZE,
    PR_MSG_STATUS,
    PR_OBJECT_TYPE,
    PR_PARENT_ENTRYID,
    PR_RECORD_KEY,
    PR_SEARCH_KEY,
    PR_SENDER_EMAIL_ADDRESS,
    PR_SENDER_NAME,
    PR_STORE_ENTRYID,
    PR_SUBJECT,
)
from mapid.providers.imap.cache import Record
from mapid.providers.rfc5322 import message_props

__all__ = [
    "FLAG_FOLLOWUP",
    "HEADER_FIELDS",
    "flag_props",
    "opened_props",
    "row_of",
]

HEADER_FIELDS = (
    "FROM",
    "SENDER",
    "TO",
    "CC",
    "SUBJECT",
    "DATE",
    "MESSAGE-ID",
    "CONTENT-TYPE",
)
"""The header fields fetched for the contents table (BODY.PEEK[HEADER.FIELDS (...)])."""
FLAG_FOLLOWUP = 2
_READ = int(MessageFlags.MSGFLAG_READ)
_UNSENT = int(MessageFlags.MSGFLAG_UNSENT)
_HASATTACH = int(MessageFlags.MSGFLAG_HASATTACH)
_DELMARKED = int(MsgStatus.MSGSTATUS_DELMARKED)


def _lower(flags: Iterable[str]) -> set[str]:
    return {f.lower() for f in flags}


def flag_props(flags: Iterable[str], has_attach: bool) -> dict[str, int]:
    """PR_MESSAGE_FLAGS, PR_FLAG_STATUS and PR_MSG_STATUS from a message's IMAP flags."""
    found = _lower(flags)
    value = _HASATTACH if has_attach else 0
    if "\\seen" in found:
        value |= _READ
    if "\\draft" in found:
        value |= _UNSENT
    return {
        PR_MESSAGE_FLAGS.name: value,
        PR_FLAG_STATUS.name: FLAG_FOLLOWUP if "\\flagged" in found else 0,
        PR_MSG_STATUS.name: _DELMARKED if "\\deleted" in found else 0,
    }


def row_of(record: Record, entryid: bytes, folder_entryid: bytes) -> dict[str, Any]:
    """The contents-table row of a cached message (kept on the record until it changes)."""
    if record.row is not None:
        return record.row
    s = record.summary
    row: dict[str, Any] = {
        PR_ENTRYID.name: entryid,
        PR_INSTANCE_KEY.name: entryid,
        PR_SUBJECT.name: s.subject,
        PR_DISPLAY_TO.name: s.display_to,
        PR_MESSAGE_SIZE.name: record.size,
        PR_HASATTACH.name: s.has_attach,
        PR_MESSAGE_CLASS.name: s.message_class,
        PR_OBJECT_TYPE.name: int(ObjectType.MAPI_MESSAGE),
        PR_PARENT_ENTRYID.name: folder_entryid,
    }
    row.update(flag_props(record.flags, s.has_attach))
    if s.sender_name is not None:
        row[PR_SENDER_NAME.name] = s.sender_name
    if s.sender_email is not None:
        row[PR_SENDER_EMAIL_ADDRESS.name] = s.sender_email
    if s.submit_time is not None:
        row[PR_CLIENT_SUBMIT_TIME.name] = s.submit_time
    if record.internaldate is not None:
        row[PR_MESSAGE_DELIVERY_TIME.name] = record.internaldate
    record.row = row
    return row


def opened_props(
    record: Record, raw: bytes, entryid: bytes, folder_entryid: bytes, store_entryid: bytes
) -> dict[str, Any]:
    """An opened message's properties: rfc5322's from `raw` (the whole message, or only its
    cached header fields while the server is out of reach), then IMAP's own."""
    props, has_attach = message_props(raw)
    message_id = props.get(PR_INTERNET_MESSAGE_ID.name)
    props.update(
        {
            PR_ENTRYID.name: entryid,
            PR_RECORD_KEY.name: entryid,
            PR_INSTANCE_KEY.name: entryid,
            PR_SEARCH_KEY.name: (message_id or f"imap-uid-{record.uid}").encode(
                "utf-8", "surrogateescape"
            ),
            PR_PARENT_ENTRYID.name: folder_entryid,
            PR_STORE_ENTRYID.name: store_entryid,
            PR_OBJECT_TYPE.name: int(ObjectType.MAPI_MESSAGE),
            PR_MESSAGE_SIZE.name: record.size,
        }
    )
    props.update(flag_props(record.flags, has_attach))
    if record.internaldate is not None:
        props[PR_MESSAGE_DELIVERY_TIME.name] = record.internaldate
    return props
