"""Cached IMAP messages -> MAPI properties: contents-table rows and an opened message's
computed properties, and the local Outbox's rows and queued messages (pure). The headers'
mapping is the shared rfc5322.py's, so a row and its opened message never disagree; here
are only IMAP's own parts.

IMAP flags, both ways (`flag_props` reads them, `flag_edits` says what a client's change
stores): \\Seen is MSGFLAG_READ, \\Flagged PR_FLAG_STATUS 2 (followupFlagged), \\Deleted
MSGSTATUS_DELMARKED, \\Answered PR_LAST_VERB_EXECUTED 102 (EXCHIVERB_REPLYTOSENDER; 103,
reply to all, stores \\Answered too) and the $Forwarded keyword 104 (EXCHIVERB_FORWARD);
\\Draft is MSGFLAG_UNSENT, read only. INTERNALDATE is the delivery time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, overload

from mapid.constants import MessageFlags, MsgStatus, ObjectType
from mapid.proptags import (
    PR_CLIENT_SUBMIT_TIME,
    PR_DISPLAY_TO,
    PR_ENTRYID,
    PR_FLAG_STATUS,
    PR_HASATTACH,
    PR_INSTANCE_KEY,
    PR_INTERNET_MESSAGE_ID,
    PR_LAST_VERB_EXECUTED,
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
from mapid.providers.base import QueuedMessage, Recipient
from mapid.providers.imap.cache import Record
from mapid.providers.rfc5322 import (
    DELETE_AFTER_SUBMIT_HEADER,
    message_props,
    parse_header_block,
    recipients_of,
    split_head,
    summarize,
)

__all__ = [
    "FLAG_FOLLOWUP",
    "FLAG_TAGS",
    "HEADER_FIELDS",
    "QUEUED_FLAGS",
    "RecordRows",
    "flag_edits",
    "flag_props",
    "opened_props",
    "queued_message",
    "queued_row",
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
VERB_REPLY, VERB_REPLY_ALL, VERB_FORWARD = 102, 103, 104
"""PR_LAST_VERB_EXECUTED: EXCHIVERB_REPLYTOSENDER, EXCHIVERB_REPLYTOALL, EXCHIVERB_FORWARD."""
FORWARDED = "$Forwarded"
FLAG_TAGS = frozenset(
    {PR_MESSAGE_FLAGS.name, PR_FLAG_STATUS.name, PR_MSG_STATUS.name, PR_LAST_VERB_EXECUTED.name}
)
"""The properties a server message keeps in its IMAP flags (a UID STORE changes them)."""
_READ = int(MessageFlags.MSGFLAG_READ)
_UNSENT = int(MessageFlags.MSGFLAG_UNSENT)
_HASATTACH = int(MessageFlags.MSGFLAG_HASATTACH)
_DELMARKED = int(MsgStatus.MSGSTATUS_DELMARKED)
QUEUED_FLAGS = int(MessageFlags.MSGFLAG_SUBMIT) | _UNSENT | _READ
"""PR_MESSAGE_FLAGS of a message in the local Outbox."""


def _lower(flags: Iterable[str]) -> set[str]:
    return {f.lower() for f in flags}


def flag_props(flags: Iterable[str], has_attach: bool) -> dict[str, int]:
    """PR_MESSAGE_FLAGS, PR_FLAG_STATUS, PR_MSG_STATUS and (when answered or forwarded)
    PR_LAST_VERB_EXECUTED from a message's IMAP flags."""
    found = _lower(flags)
    value = _HASATTACH if has_attach else 0
    if "\\seen" in found:
        value |= _READ
    if "\\draft" in found:
        value |= _UNSENT
    props = {
        PR_MESSAGE_FLAGS.name: value,
        PR_FLAG_STATUS.name: FLAG_FOLLOWUP if "\\flagged" in found else 0,
        PR_MSG_STATUS.name: _DELMARKED if "\\deleted" in found else 0,
    }
    if "\\answered" in found:
        props[PR_LAST_VERB_EXECUTED.name] = VERB_REPLY
    elif FORWARDED.lower() in found:
        props[PR_LAST_VERB_EXECUTED.name] = VERB_FORWARD
    return props


def flag_edits(changes: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """(flags to add, flags to remove) for a client's changes of FLAG_TAGS (a value None
    is a deleted property). Only PR_MESSAGE_FLAGS' read bit is the client's to change."""
    add: set[str] = set()
    remove: set[str] = set()

    def turn(flag: str, on: bool) -> None:
        (add if on else remove).add(flag)
        (remove if on else add).discard(flag)

    if PR_MESSAGE_FLAGS.name in changes:
        turn("\\Seen", bool(int(changes[PR_MESSAGE_FLAGS.name] or 0) & _READ))
    if PR_FLAG_STATUS.name in changes:
        turn("\\Flagged", changes[PR_FLAG_STATUS.name] == FLAG_FOLLOWUP)
    if PR_MSG_STATUS.name in changes:
        turn("\\Deleted", bool(int(changes[PR_MSG_STATUS.name] or 0) & _DELMARKED))
    if PR_LAST_VERB_EXECUTED.name in changes:
        verb = changes[PR_LAST_VERB_EXECUTED.name]
        turn("\\Answered", verb in (VERB_REPLY, VERB_REPLY_ALL))
        turn(FORWARDED, verb == VERB_FORWARD)
    return add, remove


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


class RecordRows(Sequence[Mapping[str, Any]]):
    """A mailbox's contents rows in UID order, each built when first read (row_of keeps it
    on its record): the first page of 10 000 cached messages builds 50 rows, not 10 000.
    The daemon pages any Sequence without copying it (table_query); a sort or restriction
    reads every row and so builds them all, once."""

    def __init__(self, records: Sequence[Record], make: Callable[[Record], dict[str, Any]]):
        self._records = records
        self._make = make

    def __len__(self) -> int:
        return len(self._records)

    @overload
    def __getitem__(self, index: int) -> Mapping[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> list[Mapping[str, Any]]: ...
    def __getitem__(self, index: int | slice) -> Mapping[str, Any] | list[Mapping[str, Any]]:
        if isinstance(index, slice):
            return [self._make(r) for r in self._records[index]]
        return self._make(self._records[index])


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


def queued_row(
    raw: bytes, entryid: bytes, outbox_entryid: bytes, submitted: float
) -> dict[str, Any]:
    """The contents-table row of a message queued in the local Outbox (`submitted`: when,
    in seconds since the epoch)."""
    s = summarize(parse_header_block(split_head(raw)))
    row: dict[str, Any] = {
        PR_ENTRYID.name: entryid,
        PR_INSTANCE_KEY.name: entryid,
        PR_SUBJECT.name: s.subject,
        PR_DISPLAY_TO.name: s.display_to,
        PR_MESSAGE_SIZE.name: len(raw),
        PR_HASATTACH.name: s.has_attach,
        PR_MESSAGE_CLASS.name: s.message_class,
        PR_MESSAGE_FLAGS.name: QUEUED_FLAGS,
        PR_OBJECT_TYPE.name: int(ObjectType.MAPI_MESSAGE),
        PR_PARENT_ENTRYID.name: outbox_entryid,
        PR_CLIENT_SUBMIT_TIME.name: datetime.fromtimestamp(submitted, UTC),
    }
    if s.sender_name is not None:
        row[PR_SENDER_NAME.name] = s.sender_name
    if s.sender_email is not None:
        row[PR_SENDER_EMAIL_ADDRESS.name] = s.sender_email
    return row


def queued_message(entryid: bytes, raw: bytes, submitted: float) -> QueuedMessage:
    """The spooler's view of a message queued in the local Outbox."""
    headers = parse_header_block(split_head(raw))
    delete = str(headers.get(DELETE_AFTER_SUBMIT_HEADER, "")).strip().lower()
    return QueuedMessage(
        entryid=entryid,
        mime=raw,
        recipients=tuple(
            Recipient(r.address, r.display_name, "SMTP", int(r.recipient_type))
            for r in recipients_of(headers)
        ),
        delete_after_submit=delete in ("yes", "true", "1"),
        submitted=datetime.fromtimestamp(submitted, UTC),
    )
