"""Stores and the address book on the session (docs/protocol.md 6.4): the store table,
open_msg_store, open_address_book and set_default_store.

Write access is the daemon's business (the shared agreement of issue 4): a store handle is
writable only when opened with MDB_WRITE, and a folder or message handle only when the
session holds a live writable handle on its store (sessions/routing.py has these rules) or was
opened from a writable handle (container_ops). Providers never see a modifying call on a
read-only handle.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import tomlkit

from mapid import entryid as eid
from mapid.constants import (
    AbFlags,
    DefaultStoreFlag,
    MdbFlags,
    ObjectType,
    ResourceFlags,
    ResourceType,
    StoreSupport,
)
from mapid.daemon.bus.registry import EntryId, Flags, OpContext, Reply, op
from mapid.daemon.config.writer import edit_toml, set_value
from mapid.daemon.ops.common import add_handle, session_of, table_of
from mapid.daemon.sessions.address_book import AddressBook
from mapid.daemon.sessions.handles import MAPID_OWNER
from mapid.daemon.sessions.logon import SIMPLE_STORE_KEY
from mapid.daemon.sessions.routing import open_store, store_of, store_slots, support_mask
from mapid.daemon.sessions.session import Session
from mapid.daemon.sessions.slots import ProviderSlot
from mapid.errors import ErrorCode, MapiError
from mapid.proptags import (
    PR_DEFAULT_STORE,
    PR_DISPLAY_NAME,
    PR_ENTRYID,
    PR_INSTANCE_KEY,
    PR_MDB_PROVIDER,
    PR_OBJECT_TYPE,
    PR_PROVIDER_DISPLAY,
    PR_RECORD_KEY,
    PR_RESOURCE_FLAGS,
    PR_RESOURCE_TYPE,
)
from mapid.providers.base import MessageService, StoreProvider

log = logging.getLogger("mapid.stores")

PRIMARY_STORE_KEY = "primary_store"
"""The maildir (and any store service's) key that makes a store the profile's default."""

DEFAULT_STORE_NEEDS = (
    StoreSupport.STORE_SUBMIT_OK | StoreSupport.STORE_CREATE_OK | StoreSupport.STORE_MODIFY_OK
)
_FLAG_BITS = {
    DefaultStoreFlag.MAPI_DEFAULT_STORE: ResourceFlags.STATUS_DEFAULT_STORE,
    DefaultStoreFlag.MAPI_SIMPLE_STORE_TEMPORARY: ResourceFlags.STATUS_SIMPLE_STORE,
    DefaultStoreFlag.MAPI_SIMPLE_STORE_PERMANENT: ResourceFlags.STATUS_SIMPLE_STORE,
    DefaultStoreFlag.MAPI_PRIMARY_STORE: ResourceFlags.STATUS_PRIMARY_STORE,
    DefaultStoreFlag.MAPI_SECONDARY_STORE: ResourceFlags.STATUS_SECONDARY_STORE,
}


def store_rows(session: Session) -> list[dict[str, Any]]:
    """One row per logged-on store (docs/mapi.md 7.3), from its store_props and status row."""
    rows: list[dict[str, Any]] = []
    for slot in store_slots(session):
        provider = slot.provider
        assert isinstance(provider, StoreProvider)
        try:
            props = provider.store_props()
            entryid = props.get(PR_ENTRYID.name) or provider.store_entryid()
        except Exception:
            log.exception("store_props of %s failed", slot.key)
            continue
        status = session.table.get(slot.row) if slot.row is not None else None
        flags = int((status or {}).get(PR_RESOURCE_FLAGS.name, 0))
        rows.append(
            {
                PR_ENTRYID.name: entryid,
                PR_DISPLAY_NAME.name: props.get(PR_DISPLAY_NAME.name) or provider.display_name(),
                PR_DEFAULT_STORE.name: bool(flags & ResourceFlags.STATUS_DEFAULT_STORE),
                PR_MDB_PROVIDER.name: props.get(PR_MDB_PROVIDER.name, slot.provider_uid),
                PR_PROVIDER_DISPLAY.name: slot.cls.display,
                PR_RESOURCE_FLAGS.name: flags,
                PR_RECORD_KEY.name: props.get(PR_RECORD_KEY.name, eid.uid_of(entryid)),
                PR_INSTANCE_KEY.name: slot.provider_uid,
                PR_OBJECT_TYPE.name: int(ObjectType.MAPI_STORE),
                PR_RESOURCE_TYPE.name: int(ResourceType.MAPI_STORE_PROVIDER),
            }
        )
    return rows


@op("session.msg_stores_table", token=True, table=True)
def msg_stores_table(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    return table_of(ctx).run(store_rows(session_of(ctx)))


@op(
    "session.open_msg_store",
    token=True,
    args={"entryid": EntryId(nullable=True), "flags": Flags(MdbFlags)},
)
async def open_msg_store(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Read-only unless MDB_WRITE; MDB_NO_MAIL and MDB_TEMPORARY change nothing here."""
    if args["entryid"] is None:
        raise MapiError(ErrorCode.MAPI_E_INVALID_PARAMETER, "entryid must name a store, not nil")
    session = session_of(ctx)
    obj, owner, writable = await open_store(session, args["entryid"], MdbFlags(args["flags"]))
    return await add_handle(session, obj, owner, writable)


@op("session.open_address_book", token=True, args={"flags": Flags(AbFlags)})
async def open_address_book(ctx: OpContext, args: dict[str, Any]) -> Reply:
    """Always an object; MAPI_W_ERRORS_RETURNED when an address book provider failed."""
    session = session_of(ctx)
    book = AddressBook(session)
    result = await add_handle(session, book, MAPID_OWNER, False)
    failed = book.failed_providers()
    if not failed:
        return Reply({"handle": result["handle"]})
    names = ", ".join(f"{f['provider']} ({f['reason']})" for f in failed)
    session.last_error = MapiError(
        ErrorCode.MAPI_W_ERRORS_RETURNED,
        f"address book providers failed: {names}",
        details={"providers": failed},
    )
    return Reply({"handle": result["handle"]}, warning=ErrorCode.MAPI_W_ERRORS_RETURNED.name)


@op(
    "session.set_default_store",
    token=True,
    locks_session=False,  # its profile write reloads, and a reload takes the session's lock
    args={
        "flags": Flags(DefaultStoreFlag, required=True),
        "entryid": EntryId(required=False, nullable=True),
    },
)
async def set_default_store(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """docs/mapi.md 2 notes: one flag; the status rows change at once
    (events go out), and MAPI_DEFAULT_STORE and MAPI_SIMPLE_STORE_PERMANENT are written to the
    profile, whose reload the session then follows."""
    session = session_of(ctx)
    flag = DefaultStoreFlag(args["flags"])
    bit = int(_FLAG_BITS[flag])
    async with session.lock:
        if not session.alive:
            raise MapiError(ErrorCode.MAPI_E_END_OF_SESSION, "the session has ended")
        target: ProviderSlot | None = None
        if args["entryid"] is not None:
            target, provider = store_of(session, args["entryid"])
            if support_mask(provider) & DEFAULT_STORE_NEEDS != DEFAULT_STORE_NEEDS:
                raise MapiError(
                    ErrorCode.MAPI_E_NO_ACCESS,
                    f"{provider.display_name()} cannot be the {flag.name} store: its "
                    "PR_STORE_SUPPORT_MASK lacks STORE_SUBMIT_OK, STORE_CREATE_OK or "
                    "STORE_MODIFY_OK",
                )
        for slot in store_slots(session):
            if slot is target:
                slot.flags_set |= bit
                slot.flags_cleared &= ~bit
            else:
                slot.flags_set &= ~bit
                slot.flags_cleared |= bit
            if slot.row is None:
                continue
            row = session.table.get(slot.row) or {}
            flags = int(row.get(PR_RESOURCE_FLAGS.name, 0))
            new = flags | bit if slot is target else flags & ~bit
            session.table.modify(slot.row, {PR_RESOURCE_FLAGS.name: new})
        path = session.profile.path
        target_key = target.service.section.key if target is not None else None
        store_keys = {s.service.section.key for s in store_slots(session)}
        primary = {
            inst.section.key: inst.section.config.get(PRIMARY_STORE_KEY)
            for inst in session.services
            if inst.section.key in store_keys and _takes_primary_store(inst.cls)
        }
    if flag == DefaultStoreFlag.MAPI_DEFAULT_STORE:
        await _persist(ctx, path, _default_change(target_key, primary), "default store")
    elif flag == DefaultStoreFlag.MAPI_SIMPLE_STORE_PERMANENT:
        value = target_key or ""
        await _persist(
            ctx, path, lambda doc: set_value(doc, [SIMPLE_STORE_KEY], value), "simple store"
        )
    return {}


def _takes_primary_store(cls: type[MessageService] | None) -> bool:
    """Only a service whose schema knows `primary_store` gets it written (another key would
    make the whole profile file fail validation on reload)."""
    if cls is None:
        return False
    properties = cls.config_schema.get("properties")
    return isinstance(properties, dict) and PRIMARY_STORE_KEY in properties


def _default_change(target_key: str | None, primary: dict[str, Any]) -> Any:
    """`primary_store = true` on the new default's section, false where another had it."""

    def change(doc: tomlkit.TOMLDocument) -> None:
        for key, value in primary.items():
            if key == target_key:
                if value is not True:
                    set_value(doc, ["services", key, PRIMARY_STORE_KEY], True)
            elif value:
                set_value(doc, ["services", key, PRIMARY_STORE_KEY], False)

    return change


async def _persist(ctx: OpContext, path: Any, change: Any, what: str) -> None:
    """Write the choice to the profile file and reload, as services.* writes do."""
    if not path.exists():
        log.warning("%s not kept: the profile file %s is gone", what, path)
        return
    await asyncio.to_thread(edit_toml, path, change)
    await ctx.daemon.reload(trigger="session.set_default_store")
