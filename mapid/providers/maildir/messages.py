"""Message files of one folder and their MAPI properties: blocking (the thread pool runs
them), and each noted in the folder's index under its lock.

Reading a file into its properties; saving a message (a new file, or the same key rewritten
whole through tmp/, or a rename for a flag change alone); adding, deleting, copying and
moving files. MaildirStore finds the folder's index (and gives a missing parent its
directories first) and calls these.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from datetime import UTC, datetime
from typing import Any

from mapid.atomic_files import fsync_dir
from mapid.constants import MsgStatus, NotificationEvent, ObjectType
from mapid.errors import ErrorCode, MapiError
from mapid.proptags import (
    PR_ENTRYID,
    PR_FLAG_STATUS,
    PR_INSTANCE_KEY,
    PR_INTERNET_MESSAGE_ID,
    PR_LAST_MODIFICATION_TIME,
    PR_MESSAGE_DELIVERY_TIME,
    PR_MESSAGE_FLAGS,
    PR_MESSAGE_SIZE,
    PR_MSG_STATUS,
    PR_OBJECT_TYPE,
    PR_PARENT_ENTRYID,
    PR_RECORD_KEY,
    PR_SEARCH_KEY,
    PR_STORE_ENTRYID,
)
from mapid.providers.maildir import entryids
from mapid.providers.maildir.disk import Locked, move_file, place_message, where, write_message
from mapid.providers.maildir.flags import FLAG_FOLLOWUP, maildir_flags, message_flags_of
from mapid.providers.maildir.flush import Durable
from mapid.providers.maildir.index import Change, FolderIndex, join_name, key_time, split_name
from mapid.providers.rfc5322 import (
    Composed,
    HeaderSummary,
    MailRecipient,
    compose_parsed,
    message_props,
    parse_header_block,
    recipients_of,
    split_head,
)

__all__ = ["add_message", "copy_messages", "delete_messages", "read_message", "save_message"]


def read_message(
    index: FolderIndex, key: str, uid: bytes, folder: str
) -> tuple[dict[str, Any], bytes, list[MailRecipient]]:
    """A message's properties, bytes and recipients (`uid`: the store's MAPIUID)."""
    for attempt in range(2):
        sub, name = where(index, key)
        path = index.path / sub / name
        try:
            raw = path.read_bytes()
            st = os.stat(path)
            break
        except FileNotFoundError:  # renamed (a flag change) meanwhile
            if attempt:
                raise MapiError(
                    ErrorCode.MAPI_E_NOT_FOUND, "the message went away while it was read"
                ) from None
            index.refresh(force=True)
    props, has_attach = message_props(raw)
    flags = split_name(name)[1]
    eid = entryids.message_entryid(uid, folder, key)
    message_id = props.get(PR_INTERNET_MESSAGE_ID.name)
    props.update(
        {
            PR_ENTRYID.name: eid,
            PR_RECORD_KEY.name: eid,
            PR_INSTANCE_KEY.name: eid,
            PR_SEARCH_KEY.name: (message_id or key).encode("utf-8", "surrogateescape"),
            PR_PARENT_ENTRYID.name: index.folder_entryid,
            PR_STORE_ENTRYID.name: entryids.store_entryid(uid),
            PR_OBJECT_TYPE.name: int(ObjectType.MAPI_MESSAGE),
            PR_MESSAGE_FLAGS.name: message_flags_of(flags, has_attach) | index.extra_flags,
            PR_FLAG_STATUS.name: FLAG_FOLLOWUP if "F" in flags else 0,
            PR_MSG_STATUS.name: int(MsgStatus.MSGSTATUS_DELMARKED) if "T" in flags else 0,
            PR_MESSAGE_SIZE.name: st.st_size,
            PR_MESSAGE_DELIVERY_TIME.name: key_time(key, st.st_mtime_ns),
            PR_LAST_MODIFICATION_TIME.name: datetime.fromtimestamp(st.st_mtime, UTC),
        }
    )
    return props, raw, recipients_of(parse_header_block(split_head(raw)))


def save_message(
    index: FolderIndex,
    key: str | None,
    raw: bytes | None,
    changes: dict[str, Any],
    deleted: set[str],
    recipients: list[MailRecipient] | None,
    flag_changes: dict[str, Any],
    durable: Durable | None = None,
    written: list[Composed] | None = None,
    composed: Composed | None = None,
) -> str:
    """Write the message; with `durable`, its fsyncs are left there for the flusher;
    `written` gets what a file was written whole with (not a flag rename); `composed`:
    the new message composed already."""
    if key is not None or not index.loaded:  # a new file needs no listing once loaded
        index.refresh(wait=False)  # never under the lock (it reads files without it)
    content = bool(changes or deleted or recipients is not None)
    data = b""  # a flag change alone renames the file; it is not rewritten
    summary: HeaderSummary | None = None
    if key is None or content:
        if composed is None or key is not None:
            composed = compose_parsed(
                raw if key is not None else None, changes, deleted, recipients
            )
        data, summary = composed.data, composed.summary
        if written is not None:
            written.append(composed)
    with index.lock:
        if key is None:
            flags = maildir_flags("DS", flag_changes)
            if durable is None:
                new, name = write_message(index.path, data, sub="cur", flags=flags)
            else:
                new, name, fd = place_message(index.path, data, sub="cur", flags=flags)
                durable.add(fd, index.path / "cur")
            index.note_file(new, "cur", name, data=data, summary=summary)
            return new
        sub, name = where(index, key)
        old = index.path / sub / name
        target_name = join_name(key, maildir_flags(split_name(name)[1], flag_changes))
        target = index.path / "cur" / target_name
        if content:
            tmp = index.path / "tmp" / f"{key}.{secrets.token_hex(4)}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if durable is None:
                    os.fsync(fd)
                os.replace(tmp, target)  # the new content lands whole, under the same key
            except BaseException:
                os.close(fd)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            if durable is None:
                os.close(fd)
            if old != target:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(old)
            if durable is None:
                fsync_dir(index.path / "cur")
            else:
                durable.add(fd, index.path / "cur")
        elif old != target:
            os.rename(old, target)
            if durable is not None:
                durable.add(None, index.path / "cur")
        else:
            return key
        index.note_file(key, "cur", target_name, data=data if content else None, summary=summary)
        return key


def add_message(index: FolderIndex, mime: bytes, sub: str, flags: str) -> str:
    """Deliver `mime` into the folder's `sub` (new/ or cur/) with `flags`: its key."""
    index.refresh(wait=False)  # never under the lock (it reads files without it)
    with index.lock:
        key, name = write_message(index.path, mime, sub=sub, flags=flags)
        index.note_file(key, sub, name, data=mime)
        return key


def delete_messages(index: FolderIndex, keys: list[str]) -> None:
    index.refresh(wait=False)  # never under the lock (it reads files without it)
    with index.lock:
        for key in keys:
            found = index.locate(key)
            if found is None:
                continue  # already gone: deleting is idempotent
            with contextlib.suppress(FileNotFoundError):
                os.unlink(index.path / found[0] / found[1])
            index.note_gone(key)


def copy_messages(
    src: FolderIndex,
    dst: FolderIndex,
    keys: list[str],
    move: bool,
    uid: bytes,
    folder: str,
    target: str,
) -> tuple[list[bytes], list[Change]]:
    """Copy or move messages `keys` of `src` (folder `folder`) into `dst` (`target`):
    their entry IDs there, and the changes to raise."""
    src.refresh(wait=False)
    dst.refresh(wait=False)
    with Locked(src, dst):
        out: list[Change] = []
        eids: list[bytes] = []
        for key in keys:
            old = entryids.message_entryid(uid, folder, key)
            if move and src is dst:
                where(src, key)
                eids.append(old)
                continue
            if move:
                new, _ = move_file(src, key, dst)
                event = NotificationEvent.fnevObjectMoved
            else:
                sub, name = where(src, key)
                data = (src.path / sub / name).read_bytes()
                new, written = write_message(dst.path, data, sub="cur", flags=split_name(name)[1])
                dst.note_file(new, "cur", written, quiet=True)
                event = NotificationEvent.fnevObjectCopied
            eid = entryids.message_entryid(uid, target, new)
            eids.append(eid)
            out.append(
                Change(
                    event,
                    eid,
                    dst.folder_entryid,
                    old_entryid=old,
                    old_parent_entryid=src.folder_entryid,
                )
            )
        return eids, out
