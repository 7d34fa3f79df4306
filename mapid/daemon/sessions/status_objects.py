"""Status objects (IMAPIStatus, docs/protocol.md 6.6) and the other objects MAPI itself owns.

A status object is a view of one status row. MAPI's own three rows are served here; a
provider's row forwards its methods to the provider. Which methods an object supports is
exactly its row's PR_RESOURCE_METHODS (docs/mapi.md 5.1).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from mapid import entryid as eid
from mapid.constants import (
    FlushFlags,
    ObjectType,
    ResourceMethods,
    ResourceType,
    ValidateStateFlags,
)
from mapid.daemon.config.credentials import MASK, SECRET_KEYS, mask
from mapid.daemon.config.profiles import Profile
from mapid.daemon.config.service_admin import ServiceAdmin
from mapid.daemon.sessions.logon import ProviderHost, base_row
from mapid.daemon.sessions.session import Session
from mapid.daemon.sessions.slots import ProviderSlot, SlotState
from mapid.daemon.sessions.status_table import RowKey
from mapid.errors import ErrorCode, MapiError
from mapid.providers.base import MapiObject, PropsObject, pick_props

log = logging.getLogger("mapid.status")


class StatusObject(MapiObject):
    object_type = ObjectType.MAPI_STATUS

    def __init__(self, session: Session, row: RowKey) -> None:
        self.session = session
        self.row = row

    def props(self) -> dict[str, Any]:
        row = self.session.table.get(self.row)
        if row is None:
            raise MapiError(
                ErrorCode.MAPI_E_INVALID_OBJECT, "the status row behind this object is gone"
            )
        return row

    async def get_props(self, tags: list[str] | None) -> dict[str, Any]:
        return pick_props(self.props(), tags)

    def _kind(self) -> ResourceType:
        return ResourceType(int(self.props().get("PR_RESOURCE_TYPE", 0)))

    def _slot(self) -> ProviderSlot | None:
        for instance in self.session.services:
            for slot in instance.slots:
                if slot.row == self.row:
                    return slot
        return None

    def require(self, method: ResourceMethods, name: str) -> None:
        methods = int(self.props().get("PR_RESOURCE_METHODS", 0))
        if not methods & method:
            raise MapiError(
                ErrorCode.MAPI_E_NO_SUPPORT,
                f"this status object does not support {name} (PR_RESOURCE_METHODS)",
            )

    def _active_slots(self, kind: ResourceType | None = None) -> list[ProviderSlot]:
        return [
            s
            for inst in self.session.services
            for s in inst.slots
            if s.state == SlotState.ACTIVE
            and s.provider is not None
            and (kind is None or s.resource_type == kind)
        ]

    def _refresh_row(self, slot: ProviderSlot) -> None:
        if slot.row is not None and slot.state == SlotState.ACTIVE:
            self.session.table.modify(slot.row, base_row(slot))

    async def validate_state(self, flags: ValidateStateFlags) -> None:
        self.require(ResourceMethods.STATUS_VALIDATE_STATE, "validate_state")
        if self.row in self.session.busy:
            raise MapiError(ErrorCode.MAPI_E_BUSY, "another operation runs on this object")
        kind = self._kind()
        if kind == ResourceType.MAPI_SUBSYSTEM:
            targets = self._active_slots()
        elif kind == ResourceType.MAPI_AB:
            targets = self._active_slots(ResourceType.MAPI_AB_PROVIDER)
        elif kind == ResourceType.MAPI_SPOOLER:
            await self._relogon_transports()
            spooler = self.session.spooler
            if spooler is not None and flags & ValidateStateFlags.CONFIG_CHANGED:
                spooler.refresh_address_types()  # IXPLogon::AddressTypes asked again
            return
        else:
            slot = self._slot()
            targets = [slot] if slot is not None and slot.provider is not None else []
        for slot in targets:
            assert slot.provider is not None
            try:
                await slot.provider.validate_state(flags)
            except MapiError:
                if len(targets) == 1:
                    raise
                log.warning("validate_state of %s failed", slot.key, exc_info=True)
            self._refresh_row(slot)

    async def _relogon_transports(self) -> None:
        """The spooler's ValidateState logs every transport on again (docs/mapi.md 5.1)."""
        if not self.session.transports_on:
            return
        host = ProviderHost(self.session)
        await host.log_off_transports()
        for instance in self.session.services:
            if instance.disabled is not None and all(s.is_transport for s in instance.slots):
                instance.disabled = None
        await host.log_on_transports()
        host.apply_profile_rules()

    async def flush_queues(self, flags: FlushFlags) -> None:
        """On the spooler: every transport's queue; on a transport: only the messages it
        takes (docs/mapi.md 5.3). FLUSH_UPLOAD or FLUSH_FORCE (or no direction at all: the
        Outbox is the only queue there is) runs a pass now that ignores the retry backoff;
        each transport's own flush_queues is called first (IXPLogon::FlushQueues).
        Synchronous unless FLUSH_ASYNC_OK, which only the spooler takes."""
        self.require(ResourceMethods.STATUS_FLUSH_QUEUES, "flush_queues")
        kind = self._kind()
        only: ProviderSlot | None = None
        if kind == ResourceType.MAPI_SPOOLER:
            targets = self._active_slots(ResourceType.MAPI_TRANSPORT_PROVIDER)
        else:
            if flags & FlushFlags.FLUSH_ASYNC_OK:
                raise MapiError(
                    ErrorCode.MAPI_E_UNKNOWN_FLAGS, "only the spooler accepts FLUSH_ASYNC_OK"
                )
            slot = self._slot()
            targets = [slot] if slot is not None and slot.provider is not None else []
            only = slot
        if self.row in self.session.busy:
            raise MapiError(ErrorCode.MAPI_E_BUSY, "a flush of this object is running")
        upload = bool(flags & (FlushFlags.FLUSH_UPLOAD | FlushFlags.FLUSH_FORCE)) or not (
            flags & FlushFlags.FLUSH_DOWNLOAD
        )
        spooler = self.session.spooler
        if upload and spooler is None and kind == ResourceType.MAPI_SPOOLER:
            raise MapiError(
                ErrorCode.MAPI_E_NO_SUPPORT,
                "no spooler runs in this session: every member logged on with MAPI_NO_MAIL",
            )

        async def flush() -> None:
            try:
                for slot in targets:
                    assert slot.provider is not None
                    await slot.provider.flush_queues(flags)
                if upload and spooler is not None:
                    await spooler.flush(only)
            finally:
                self.session.busy.discard(self.row)

        # Busy from now, not from the task's first step: a request drained in the same
        # round of the loop as this one (a client that got this reply at once) must see it.
        self.session.busy.add(self.row)
        if flags & FlushFlags.FLUSH_ASYNC_OK:
            try:
                task = asyncio.get_running_loop().create_task(flush())
            except BaseException:
                self.session.busy.discard(self.row)
                raise
            task.add_done_callback(_log_failure)
            return
        await flush()

    async def settings(
        self,
        config: Mapping[str, Any] | None,
        admin: ServiceAdmin | None = None,
        profile: Profile | None = None,
    ) -> dict[str, Any]:
        """SettingsDialog without a dialog: the service's configuration (secrets masked) and
        its schema. With `config`, the change services.configure makes through `admin`
        (merged, nil removes a key, checked, written to `profile`'s file, reloaded like a hand
        edit); a secret given back as the mask keeps its stored value. Call it without the
        session's lock: the reload takes it to apply the change to this session."""
        self.require(ResourceMethods.STATUS_SETTINGS_DIALOG, "settings")
        slot = self._slot()
        if slot is None or slot.service.cls is None:
            raise MapiError(ErrorCode.MAPI_E_NO_SUPPORT, "no settings behind this object")
        cls = slot.service.cls
        hidden = SECRET_KEYS | cls.secret_keys
        if config is not None:
            if admin is None or profile is None:
                raise MapiError(ErrorCode.MAPI_E_NO_SUPPORT, "settings cannot be changed here")
            change = _keep_secrets(config, slot.service.section.config, hidden)
            await admin.configure(profile, slot.service.section.uid, change)
            slot = self._slot() or slot  # the reload applied it: the session's config now
        return {"config": mask(slot.service.config, hidden), "schema": cls.config_schema}

    async def change_password(self, old: str, new: str) -> None:
        self.require(ResourceMethods.STATUS_CHANGE_PASSWORD, "change_password")
        slot = self._slot()
        if slot is None or slot.provider is None:
            raise MapiError(ErrorCode.MAPI_E_NO_SUPPORT, "no provider behind this object")
        await slot.provider.change_password(old, new)


def _keep_secrets(
    given: Mapping[str, Any], stored: Mapping[str, Any], hidden: frozenset[str]
) -> dict[str, Any]:
    """`given` with every secret that came back as the mask put back to its stored value (or
    left out when none is stored), so showing and saving a configuration loses no secret."""
    kept: dict[str, Any] = {}
    for key, value in given.items():
        before = stored.get(key)
        if key in hidden and value == MASK:
            if before is not None:
                kept[key] = before
        elif isinstance(value, Mapping) and isinstance(before, Mapping):
            kept[key] = _keep_secrets(value, before, hidden)
        else:
            kept[key] = value
    return kept


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("asynchronous flush failed: %s", task.exception())


class OneOffUser(PropsObject):
    """A mail user built from a one-off entry ID: it belongs to no provider."""

    object_type = ObjectType.MAPI_MAILUSER

    def __init__(self, entryid: bytes, one_off: eid.OneOff) -> None:
        super().__init__(
            {
                "PR_ENTRYID": entryid,
                "PR_RECORD_KEY": entryid,
                "PR_OBJECT_TYPE": int(ObjectType.MAPI_MAILUSER),
                "PR_DISPLAY_NAME": one_off.display_name,
                "PR_ADDRTYPE": one_off.addrtype,
                "PR_EMAIL_ADDRESS": one_off.address,
                "PR_SEARCH_KEY": eid.search_key(one_off.addrtype, one_off.address),
            }
        )
