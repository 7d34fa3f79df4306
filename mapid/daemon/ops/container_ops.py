"""Containers, folders, messages and the address book on handles (docs/protocol.md 6.5).

The ops check what the provider contract leaves to the daemon: that the handle's object is
of the right kind (MAPI_E_NO_SUPPORT), that the handle is writable for anything that changes
a store (MAPI_E_NO_ACCESS), and the arguments. Tables go through TableQuery like every
other table. Objects opened from a handle inherit its writability and its owner, so they die
with the provider behind them.

Two things the daemon does on top of the providers:
- folder.delete_messages moves the messages to the store's Deleted Items
  (PR_IPM_WASTEBASKET_ENTRYID) through copy_messages(move=True), as mutt and Thunderbird do
  with a trash folder; in Deleted Items itself, or in a store without one, they go for good.
- folder.copy_messages to a folder of another store copies through MIME (get_mime, then
  import_message there; for a move the originals are then deleted for good).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from mapid.constants import LogonFlags, OpenFlags, RecipientType
from mapid.daemon.bus.registry import (
    Arg,
    Bool,
    EntryId,
    EntryIdList,
    OpContext,
    Props,
    Str,
    StrList,
    op,
)
from mapid.daemon.ops.common import (
    add_handle,
    entry_of,
    member_of,
    require_writable,
    session_of,
    table_of,
)
from mapid.daemon.sessions.address_book import AddressBook
from mapid.daemon.sessions.handles import OpenObject
from mapid.daemon.sessions.identity import primary_identity
from mapid.daemon.sessions.routing import has_writable_store, routed_slot, slot_by_key
from mapid.daemon.sessions.session import Session
from mapid.daemon.sessions.table_query import canonical_tag
from mapid.errors import ErrorCode, MapiError
from mapid.proptags import (
    PR_ADDRTYPE,
    PR_EMAIL_ADDRESS,
    PR_ENTRYID,
    PR_IPM_WASTEBASKET_ENTRYID,
    PR_RECIPIENT_TYPE,
)
from mapid.providers.base import Container, Folder, Message, StoreProvider

log = logging.getLogger("mapid.ops.container")

MAX_MIME = 1 << 20
"""The codec's limit for one bin value (docs/protocol.md 2): a MIME message travels as one."""


def _container(ctx: OpContext) -> Container:
    obj = entry_of(ctx).obj
    if not isinstance(obj, Container):
        raise MapiError(ErrorCode.MAPI_E_NO_SUPPORT, "this handle is not a container")
    return obj


def _folder(ctx: OpContext) -> Folder:
    obj = entry_of(ctx).obj
    if not isinstance(obj, Folder):
        raise MapiError(ErrorCode.MAPI_E_NO_SUPPORT, "this handle is not a folder")
    return obj


def _message(ctx: OpContext) -> Message:
    obj = entry_of(ctx).obj
    if not isinstance(obj, Message):
        raise MapiError(ErrorCode.MAPI_E_NO_SUPPORT, "this handle is not a message")
    return obj


def _mime(value: object, name: str) -> bytes:
    if not isinstance(value, bytes):
        raise MapiError(
            ErrorCode.MAPI_E_INVALID_PARAMETER,
            f"argument {name!r} must be bin: the RFC 5322 message, at most 1 MiB",
            details={"arg": name},
        )
    if not value.strip():
        raise MapiError(
            ErrorCode.MAPI_E_INVALID_PARAMETER,
            f"argument {name!r} is empty: give the RFC 5322 message",
            details={"arg": name},
        )
    return value


# -- containers -------------------------------------------------------------------------------


@op("container.hierarchy_table", token=True, handle=True, table=True)
async def hierarchy_table(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    return table_of(ctx).run(await _container(ctx).hierarchy_rows())


@op("container.contents_table", token=True, handle=True, table=True)
async def contents_table(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    return table_of(ctx).run(await _container(ctx).contents_rows())


@op(
    "container.open_entry",
    token=True,
    handle=True,
    args={"entryid": EntryId(required=False, nullable=True)},
)
async def open_entry(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """An object inside the container (nil: the root); it inherits the handle's access."""
    session, entry = session_of(ctx), entry_of(ctx)
    container = _container(ctx)
    if isinstance(container, AddressBook):
        obj, owner = await container.open(args["entryid"])
        return await add_handle(session, obj, owner, False)
    flags = int(OpenFlags.MAPI_MODIFY) if entry.writable else 0
    child = await container.open_child(args["entryid"], flags)
    return await add_handle(session, child, entry.owner, entry.writable)


# -- folders ----------------------------------------------------------------------------------


@op(
    "folder.create_folder",
    token=True,
    handle=True,
    args={"name": Str(required=True, max_len=255)},
)
async def create_folder(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    folder, entry = _folder(ctx), entry_of(ctx)
    require_writable(entry, "create a folder")
    name = args["name"]
    if not name.strip():
        raise MapiError(ErrorCode.MAPI_E_INVALID_PARAMETER, "a folder needs a name")
    child, entryid = await folder.create_folder(name)
    result = await add_handle(session_of(ctx), child, entry.owner, True)
    return {"handle": result["handle"], "entryid": entryid}


def _recipients(value: object, name: str) -> list[dict[str, Any]]:
    """Each recipient is a PROPS map with PR_EMAIL_ADDRESS; PR_RECIPIENT_TYPE defaults to
    MAPI_TO and PR_ADDRTYPE to SMTP; every other property is kept as given."""
    if not isinstance(value, list):
        raise MapiError(
            ErrorCode.MAPI_E_INVALID_PARAMETER,
            f"argument {name!r} must be a list of recipient maps",
            details={"arg": name},
        )
    out: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(item, dict) or not all(isinstance(k, str) for k in item):
            raise MapiError(
                ErrorCode.MAPI_E_INVALID_PARAMETER,
                f"{where} must be a map of properties",
                details={"arg": where},
            )
        props = {canonical_tag(k, f"{where}.{k}"): v for k, v in item.items()}
        address = props.get(PR_EMAIL_ADDRESS.name)
        if not isinstance(address, str) or not address.strip():
            raise MapiError(
                ErrorCode.MAPI_E_INVALID_PARAMETER,
                f"{where} needs PR_EMAIL_ADDRESS (a non-empty str)",
                details={"arg": where},
            )
        kind = props.setdefault(PR_RECIPIENT_TYPE.name, int(RecipientType.MAPI_TO))
        allowed = (RecipientType.MAPI_TO, RecipientType.MAPI_CC, RecipientType.MAPI_BCC)
        if not isinstance(kind, int) or isinstance(kind, bool) or kind not in allowed:
            raise MapiError(
                ErrorCode.MAPI_E_INVALID_PARAMETER,
                f"{where}.PR_RECIPIENT_TYPE must be MAPI_TO (1), MAPI_CC (2) or MAPI_BCC (3)",
                details={"arg": where},
            )
        addrtype = props.setdefault(PR_ADDRTYPE.name, "SMTP")
        if not isinstance(addrtype, str):
            raise MapiError(
                ErrorCode.MAPI_E_INVALID_PARAMETER,
                f"{where}.PR_ADDRTYPE must be a str",
                details={"arg": where},
            )
        out.append(props)
    return out


@op(
    "folder.create_message",
    token=True,
    handle=True,
    args={"props": Props(), "recipients": Arg(_recipients)},
)
async def create_message(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """With `props` and `recipients` (capability `create_message.props`), the new message
    gets them as object.set_props and message.modify_recipients would give them, in the
    same request: a client that waits for each reply saves two round trips a message. If
    the recipients are refused, no handle is left behind."""
    folder, entry = _folder(ctx), entry_of(ctx)
    require_writable(entry, "create a message")
    session = session_of(ctx)
    message = await folder.create_message()
    handle = int((await add_handle(session, message, entry.owner, True))["handle"])
    if args["props"] is None and args["recipients"] is None:
        return {"handle": handle}
    try:
        problems = await message.set_props(args["props"]) if args["props"] is not None else {}
        if args["recipients"] is not None:
            await message.modify_recipients(args["recipients"])
    except BaseException:
        await _release_handle(session, handle)
        raise
    return {"handle": handle, "problems": problems}


async def _release_handle(session: Session, handle: int) -> None:
    """object.release from the daemon's side. A handle gone already was released when it
    went (its provider logged off meanwhile)."""
    try:
        entry = session.handles.remove(handle)
    except MapiError:
        return
    await entry.obj.release()


@op(
    "folder.import_message",
    token=True,
    handle=True,
    args={"mime": Arg(_mime, required=True)},
)
async def import_message(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    folder = _folder(ctx)
    require_writable(entry_of(ctx), "import a message")
    return {"entryid": await folder.import_message(args["mime"])}


def _store_provider(session: Session, entry: OpenObject) -> StoreProvider | None:
    slot = slot_by_key(session, entry.owner)
    provider = slot.provider if slot is not None else None
    return provider if isinstance(provider, StoreProvider) else None


@op(
    "folder.delete_messages",
    token=True,
    handle=True,
    args={"entryids": EntryIdList()},
)
async def delete_messages(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """To Deleted Items, unless this is Deleted Items (or the store has none): for good."""
    session, folder, entry = session_of(ctx), _folder(ctx), entry_of(ctx)
    require_writable(entry, "delete messages")
    entryids: list[bytes] = args["entryids"]
    provider = _store_provider(session, entry)
    trash = None
    if provider is not None:
        try:
            trash = provider.store_props().get(PR_IPM_WASTEBASKET_ENTRYID.name)
        except MapiError:
            trash = None
    here = (await folder.get_props([PR_ENTRYID.name])).get(PR_ENTRYID.name)
    in_trash = (
        isinstance(trash, bytes)
        and isinstance(here, bytes)
        and provider is not None
        and provider.compare_entryids(trash, here)
    )
    if not isinstance(trash, bytes) or in_trash:
        await folder.delete_messages(entryids)
        return {}
    moved = await folder.copy_messages(entryids, trash, True)
    return {"entryids": moved}


@op(
    "folder.copy_messages",
    token=True,
    handle=True,
    args={"entryids": EntryIdList(), "dest": EntryId(), "move": Bool()},
)
async def copy_messages(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Copy or move into `dest`; returns the new entry IDs in order (`entryids`)."""
    session, folder, entry = session_of(ctx), _folder(ctx), entry_of(ctx)
    move: bool = args["move"]
    require_writable(entry, "move messages" if move else "copy messages")
    dest: bytes = args["dest"]
    dest_slot = routed_slot(session, dest)
    if dest_slot.key == entry.owner:
        return {"entryids": await folder.copy_messages(args["entryids"], dest, move)}
    if not has_writable_store(session, dest_slot):
        raise MapiError(
            ErrorCode.MAPI_E_NO_ACCESS,
            "the destination's store is not open for writing in this session: open it with "
            "MDB_WRITE first",
        )
    return {
        "entryids": await _copy_across(folder, args["entryids"], dest_slot.provider, dest, move)
    }


async def _copy_across(
    folder: Folder, entryids: Sequence[bytes], provider: Any, dest: bytes, move: bool
) -> list[bytes]:
    """Another store: each message goes over as MIME, and a move deletes the originals."""
    target = await provider.open_entry(dest, int(OpenFlags.MAPI_MODIFY))
    try:
        if not isinstance(target, Folder):
            raise MapiError(ErrorCode.MAPI_E_INVALID_PARAMETER, "dest must name a folder")
        made: list[bytes] = []
        for entryid in entryids:
            message = await folder.open_child(entryid, 0)
            try:
                if not isinstance(message, Message):
                    raise MapiError(ErrorCode.MAPI_E_INVALID_ENTRYID, "entryids must name messages")
                mime = await message.get_mime()
            finally:
                await message.release()
            made.append(await target.import_message(mime))
        if move:
            await folder.delete_messages(entryids)
        return made
    finally:
        await target.release()


# -- messages ---------------------------------------------------------------------------------


@op("message.get_mime", token=True, handle=True)
async def get_mime(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    mime = await _message(ctx).get_mime()
    if len(mime) > MAX_MIME:
        raise MapiError(
            ErrorCode.MAPI_E_TOO_BIG,
            f"the message is {len(mime)} bytes; a bin value on the wire is at most 1 MiB",
        )
    return {"mime": mime}


@op(
    "message.modify_recipients",
    token=True,
    handle=True,
    args={"recipients": Arg(_recipients, required=True)},
)
async def modify_recipients(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    message = _message(ctx)
    require_writable(entry_of(ctx), "change recipients")
    await message.modify_recipients(args["recipients"])
    return {}


@op("message.recipients_table", token=True, handle=True, table=True)
async def recipients_table(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    return table_of(ctx).run(await _message(ctx).recipients_rows())


@op("message.submit", token=True, handle=True, args={"release": Bool()})
async def submit(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Saved, queued in the Outbox, and the spooler is told at once. With `release`
    (capability `submit.release`), a submit that succeeded also releases the handle, as
    object.release would; one that failed keeps it, to be mended or released."""
    session, message = session_of(ctx), _message(ctx)
    if member_of(ctx).flags & LogonFlags.MAPI_NO_MAIL:
        raise MapiError(ErrorCode.MAPI_E_NO_SUPPORT, "logged on with MAPI_NO_MAIL")
    require_writable(entry_of(ctx), "submit a message")
    # The sender goes in before the message is queued, as MAPI's spooler sets it on
    # submit: what is queued is then what will be sent, and filed in Sent Items.
    entryid = await message.submit(sender=primary_identity(session))
    spooler = getattr(session, "spooler", None)
    if spooler is not None:
        spooler.kick()
    if args["release"]:
        await _release_handle(session, args["handle"])
    return {"entryid": entryid}


# -- the address book -------------------------------------------------------------------------


@op("ab.resolve_names", token=True, handle=True, args={"names": StrList(required=True)})
async def resolve_names(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    book = entry_of(ctx).obj
    if not isinstance(book, AddressBook):
        raise MapiError(
            ErrorCode.MAPI_E_NO_SUPPORT,
            "ab.resolve_names needs the handle of session.open_address_book",
        )
    names: list[str] = args["names"]
    if not names:
        raise MapiError(ErrorCode.MAPI_E_INVALID_PARAMETER, "names must hold at least one name")
    for i, name in enumerate(names):
        if not name.strip():
            raise MapiError(
                ErrorCode.MAPI_E_INVALID_PARAMETER, f"names[{i}] is empty", details={"arg": i}
            )
    return {"recipients": await book.resolve_names(names)}
