"""Writing the address book: `abcontainer.create_entry` and `abcontainer.delete_entries`
(IABContainer::CreateEntry and DeleteEntries, docs/protocol.md 6.5's naming).

Editing a mail user needs no op of its own: a contact opened with MAPI_MODIFY (session.open_entry,
or container.open_entry on a container handle opened so) takes object.set_props and
object.delete_props, and object.save_changes writes them. The ops check the handle (an
address-book container, opened for writing) and the arguments; the provider behind the
container judges the properties and writes, or answers MAPI_E_NO_ACCESS when it cannot.
"""

from __future__ import annotations

from typing import Any

from mapid.constants import ObjectType
from mapid.daemon.bus.registry import EntryIdList, OpContext, Props, op
from mapid.daemon.ops.common import entry_of, session_of
from mapid.daemon.sessions.address_book import AddressBook
from mapid.daemon.sessions.handles import OpenObject
from mapid.daemon.sessions.routing import slot_by_key
from mapid.daemon.sessions.slots import SlotState
from mapid.daemon.sessions.table_query import canonical_tag
from mapid.errors import ErrorCode, MapiError
from mapid.proptags import PR_ENTRYID
from mapid.providers.base import AddressBookProvider

_HOW = (
    "open the container with session.open_entry and MAPI_MODIFY, on a PR_ENTRYID of the "
    "address book's hierarchy table"
)


async def _container(ctx: OpContext, what: str) -> tuple[AddressBookProvider, bytes]:
    """The provider and entry ID of the handle's container, which must be writable."""
    entry: OpenObject = entry_of(ctx)
    if entry.object_type != ObjectType.MAPI_ABCONT or isinstance(entry.obj, AddressBook):
        raise MapiError(
            ErrorCode.MAPI_E_NO_SUPPORT,
            f"cannot {what}: this handle is not an address-book container ({_HOW})",
        )
    slot = slot_by_key(session_of(ctx), entry.owner)
    provider = slot.provider if slot is not None else None
    if (
        slot is None
        or slot.state != SlotState.ACTIVE
        or not isinstance(provider, AddressBookProvider)
    ):
        raise MapiError(
            ErrorCode.MAPI_E_NO_SUPPORT,
            f"cannot {what}: the handle's address book provider is not logged on",
        )
    if not entry.writable:
        raise MapiError(
            ErrorCode.MAPI_E_NO_ACCESS, f"cannot {what}: this handle is read-only ({_HOW})"
        )
    entryid = (await entry.obj.get_props([PR_ENTRYID.name])).get(PR_ENTRYID.name)
    if not isinstance(entryid, bytes):
        raise MapiError(ErrorCode.MAPI_E_NO_SUPPORT, f"cannot {what}: the container has no ID")
    return provider, entryid


@op("abcontainer.create_entry", token=True, handle=True, args={"props": Props(required=True)})
async def create_entry(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """A new mail user from `props` (PR_EMAIL_ADDRESS required); -> its `entryid`."""
    raw: dict[str, Any] = args["props"]
    if not raw:
        raise MapiError(
            ErrorCode.MAPI_E_INVALID_PARAMETER,
            "argument 'props' is empty: give at least PR_EMAIL_ADDRESS",
            details={"arg": "props"},
        )
    props = {canonical_tag(k, f"props.{k}"): v for k, v in raw.items()}
    provider, container = await _container(ctx, "create an entry")
    return {"entryid": await provider.create_entry(container, props)}


@op("abcontainer.delete_entries", token=True, handle=True, args={"entryids": EntryIdList()})
async def delete_entries(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Delete mail users of the container: all of them, or none if one cannot go."""
    provider, container = await _container(ctx, "delete entries")
    await provider.delete_entries(container, args["entryids"])
    return {}
