"""Provider logon and logoff for one session, with MAPI's rules (docs/design.md 4).

Address books log on first, then stores, then (while a member is mail-enabled) transports.
A provider that answers MAPI_E_UNCONFIGURED gets its service configured once and one retry;
MAPI_E_FAILONEPROVIDER disables only that provider; any other failure, a time-out or an
exception disables its whole service for the session. Nothing a provider does can take the
daemon down: its status row says what went wrong.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import struct
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from mapid import entryid
from mapid.constants import (
    NotificationEvent,
    ResourceFlags,
    ResourceType,
    SpoolerNotify,
    StatusCode,
    ValidateStateFlags,
)
from mapid.daemon.config.credentials import TokenSource, resolve_password
from mapid.daemon.config.file_watch import shared_watcher
from mapid.daemon.config.profiles import ServiceSection, provider_uid
from mapid.daemon.config.service_admin import transports
from mapid.daemon.config.service_registry import ServiceUnavailable
from mapid.daemon.sessions.session import Session, SessionState
from mapid.daemon.sessions.slots import ProviderSlot, ServiceInstance, SlotState
from mapid.daemon.sessions.status_table import RowKey
from mapid.daemon.system import logs
from mapid.errors import ErrorCode, MapiError
from mapid.providers.base import (
    MessageService,
    Provider,
)

log = logging.getLogger("mapid.logon")
T = TypeVar("T")

_STATUS_MARK = b"mapid-status\0"
SIMPLE_STORE_KEY = "simple_store"
"""Profile key naming the service whose store is the simple store (MAPI_SIMPLE_STORE_PERMANENT)."""


def _phase(cls: type[Provider]) -> int:
    kind = getattr(cls, "resource_type", None)
    if kind == ResourceType.MAPI_AB_PROVIDER:
        return 0
    if kind == ResourceType.MAPI_TRANSPORT_PROVIDER:
        return 2
    return 1


SERVICES_STATE = "services"
"""The folder of the state directory that holds the services' own (Support.state_dir)."""
_PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def path_part(name: str) -> str:
    """`name` as one path component, one-to-one: ASCII letters, digits, `_` and `-` stay,
    every other character is its UTF-8 bytes as %XX (so "." or ".." or "a/b" cannot step
    out of its folder, and "a.b" and "a_b" stay apart); "" is "%"."""
    if not name:
        return "%"
    return "".join(
        ch if ch in _PLAIN else "".join(f"%{byte:02X}" for byte in ch.encode("utf-8"))
        for ch in name
    )


class Support:
    """The support object a provider gets (MAPI's IMAPISupport); see providers.base.

    One per provider per session, so it is slotted and its token source is made at the
    first ask: most providers never ask."""

    __slots__ = (
        "_session",
        "_slot",
        "_tokens",
        "logger",
        "profile_name",
        "provider_uid",
        "service_key",
        "service_uid",
    )

    def __init__(self, session: Session, slot: ProviderSlot) -> None:
        self._session = session
        self._slot = slot
        self.profile_name = session.profile.name
        self.service_key = slot.service.section.key
        self.service_uid = slot.service.section.uid
        self.provider_uid = slot.provider_uid
        self.logger = logging.getLogger(f"mapid.provider.{slot.service.section.service}")
        self._tokens: TokenSource | None = None

    def config(self) -> Mapping[str, Any]:
        return self._slot.service.config

    def resolve_path(self, value: str) -> Path:
        path = Path(os.path.expanduser(value))
        return path if path.is_absolute() else self._session.env.config_dir / path

    def state_dir(self) -> Path:
        """`<state dir>/services/<profile>/<service key>`, each name escaped (path_part)."""
        path = self._session.env.state_dir
        for part in (SERVICES_STATE, path_part(self.profile_name), path_part(self.service_key)):
            path = path / part
            path.mkdir(mode=0o700, parents=True, exist_ok=True)  # parents: the state dir
        if stat.S_IMODE(path.stat().st_mode) != 0o700:
            os.chmod(path, 0o700)
        return path

    def modify_status_row(self, props: Mapping[str, Any], *, update: bool = True) -> None:
        row = self._slot.row
        if row is None or self._session.state is SessionState.CLOSED:
            return
        if not update:
            # A provider replaces its own columns, never the ones MAPI keeps for it.
            keep = base_row(self._slot)
            keep.update(props)
            props = keep
        self._session.table.modify(row, props, update=update)

    def set_provider_uid(self, uid: bytes) -> None:
        if len(uid) != 16:
            raise ValueError("a MAPIUID is 16 bytes")
        self._slot.uids.append(uid)
        self._session.routes[uid] = self._slot

    def notify(
        self, event: NotificationEvent, *, entryid: bytes | None = None, **fields: Any
    ) -> int:
        if entryid is not None:
            fields.setdefault("entryid", entryid)
            new_mail = self._session.env.on_new_mail  # the desktop, advised or not
            if event == NotificationEvent.fnevNewMail and new_mail is not None:
                new_mail(self._slot, entryid)
        reached = 0
        for advise in list(self._session.advises.values()):
            if advise.slot is not self._slot or not advise.mask & event:
                continue
            if entryid is None or self._hears(advise.entryid, entryid, fields):
                reached += self._session.notify_advise(advise, event, **fields)
        return reached

    def _hears(self, target: bytes | None, entryid: bytes, fields: Mapping[str, Any]) -> bool:
        """An advise hears about its object, the object's children, and (on a store) all."""
        provider = self._slot.provider
        if target is None or provider is None:
            return True
        return (
            provider.compare_entryids(target, entryid)
            or target == fields.get("parent_entryid")
            or _is_store_advise(target, self._slot)
        )

    async def run_blocking(self, fn: Callable[..., T], /, *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    async def password(self) -> str | None:
        where = f"profile {self.profile_name}, service {self.service_key}"
        return await resolve_password(self.config(), where=where)

    async def oauth2_token(self, *, refresh: bool = False) -> str | None:
        where = f"profile {self.profile_name}, service {self.service_key}"
        if self._tokens is None:
            self._tokens = TokenSource()
        return await self._tokens.token(self.config(), where=where, refresh=refresh)

    def watch_directory(
        self, path: Path, callback: Callable[[set[Path]], None]
    ) -> Callable[[], None]:
        slot = self._slot

        def guarded(paths: set[Path]) -> None:
            # Events still queued when the provider logged off are not its business.
            if slot.state in (SlotState.PENDING, SlotState.ACTIVE):
                callback(paths)

        stop_watch = shared_watcher().watch(path, guarded)

        def stop() -> None:
            stop_watch()
            if stop in slot.watches:
                slot.watches.remove(stop)

        slot.watches.append(stop)
        return stop

    def spooler_notify(self, flags: SpoolerNotify) -> None:
        if flags & (SpoolerNotify.NOTIFY_READYTOSEND | SpoolerNotify.NOTIFY_CONFIG_CHANGE):
            spooler = getattr(self._session, "spooler", None)
            if spooler is not None:
                spooler.notify(self._slot, flags)  # kicks a pass; a recovered transport's
                # backoff ends, a changed one's address types are read again


def _is_store_advise(advise_entryid: bytes, slot: ProviderSlot) -> bool:
    """An advise on a provider's top object (its store) hears about everything in it."""
    provider = slot.provider
    store_entryid = getattr(provider, "store_entryid", None)
    if callable(store_entryid):
        try:
            return bool(advise_entryid == store_entryid())
        except Exception:
            return False
    return False


def status_entryid(uid: bytes, rowid: int) -> bytes:
    return entryid.make(uid, _STATUS_MARK + struct.pack(">I", rowid))


def base_row(slot: ProviderSlot) -> dict[str, Any]:
    """The columns MAPI supplies for a provider's row (the provider cannot change these)."""
    provider = slot.provider
    name = provider.display_name() if provider else slot.service.section.key
    flags = int(slot.cls.resource_flags)
    row_flags = getattr(provider, "row_flags", None)
    if callable(row_flags):
        try:
            flags |= int(row_flags())
        except Exception:
            log.exception("row_flags of %s failed", slot.key)
    flags = (flags | slot.flags_set) & ~slot.flags_cleared
    return {
        "PR_DISPLAY_NAME": name,
        "PR_PROVIDER_DISPLAY": slot.cls.display,
        "PR_PROVIDER_DLL_NAME": slot.service.section.service,
        "PR_RESOURCE_TYPE": int(slot.cls.resource_type),
        "PR_RESOURCE_FLAGS": flags,
        "PR_RESOURCE_METHODS": int(slot.cls.resource_methods),
    }


class ProviderHost:
    """Loads a session's services and logs their providers on and off."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.env = session.env

    # -- building ------------------------------------------------------------------------
    def load_services(self) -> None:
        """Resolve each section's service; an unavailable one gets its one failure row."""
        for section in self.session.profile.services:
            self.session.services.append(self._load_service(section))

    def _load_service(self, section: ServiceSection) -> ServiceInstance:
        session = self.session
        try:
            cls: type[MessageService] | None = self.env.registry.get(section.service)
        except ServiceUnavailable as exc:
            cls = None
            reason = str(exc)
        instance = ServiceInstance(section, cls, MappingProxyType(section.config))
        if cls is None:
            instance.disabled = reason
            instance.row = self._add_row(
                entryid.MAPID_UID,
                {
                    "PR_DISPLAY_NAME": section.config.get("display_name", section.key),
                    "PR_PROVIDER_DISPLAY": section.service,
                    "PR_PROVIDER_DLL_NAME": section.service,
                    "PR_RESOURCE_TYPE": int(ResourceType.MAPI_PROFILE_PROVIDER),
                    "PR_RESOURCE_FLAGS": 0,
                    "PR_RESOURCE_METHODS": 0,
                    "PR_STATUS_CODE": int(StatusCode.STATUS_FAILURE),
                    "PR_STATUS_STRING": reason,
                },
            )
            return instance
        for provider_cls in cls.providers:
            uid = provider_uid(session.profile.path.stem, section.key, provider_cls.name)
            instance.slots.append(ProviderSlot(instance, provider_cls, uid))
        return instance

    # -- following the profile (docs/design.md 8) ---------------------------------------------
    async def add_service(self, section: ServiceSection) -> None:
        """A section added to the profile: its providers log on in this live session."""
        instance = self._load_service(section)
        self.session.services.append(instance)
        for slot in sorted(instance.slots, key=lambda s: _phase(s.cls)):
            if not slot.is_transport or self.session.transports_on:
                await self._log_on_slot(slot)

    async def remove_service(self, instance: ServiceInstance) -> None:
        """A section removed from the profile: its providers log off, their rows go."""
        for slot in reversed(sorted(instance.slots, key=lambda s: _phase(s.cls))):
            await self.log_off_slot(slot)
            slot.state = SlotState.LOGGED_OFF
        if instance.row is not None:
            self.session.table.delete(instance.row)
            instance.row = None
        self.session.services.remove(instance)

    async def reconfigure(self, instance: ServiceInstance, section: ServiceSection) -> None:
        """A section whose configuration changed: validate_state(CONFIG_CHANGED) on each."""
        instance.section = section
        instance.config = MappingProxyType(section.config)
        for slot in instance.slots:
            provider = slot.provider
            if slot.state != SlotState.ACTIVE or provider is None or slot.row is None:
                continue
            try:
                await self._bounded(provider.validate_state(ValidateStateFlags.CONFIG_CHANGED))
            except Exception as exc:
                reason = f"configuration change failed: {_reason(exc)}"
                self.session.table.modify(slot.row, self._failure_row(slot, reason))
                continue
            row = base_row(slot)
            row.update(provider.status_props())
            row.setdefault("PR_STATUS_STRING", "configuration changed")
            self.session.table.modify(slot.row, row)

    def _add_row(self, uid: bytes, props: Mapping[str, Any]) -> RowKey:
        session = self.session
        made: list[bytes] = []

        def entryid_for(rowid: int) -> bytes:
            made.append(status_entryid(uid, rowid))
            return made[-1]

        key = session.table.add(entryid_for, props)
        session.status_objects[made[0]] = key
        return key

    def _slots(self, *, transports: bool) -> list[ProviderSlot]:
        slots = [s for inst in self.session.services for s in inst.slots]
        slots.sort(key=lambda s: _phase(s.cls))  # stable: profile order within a phase
        return [s for s in slots if s.is_transport == transports]

    # -- logon ---------------------------------------------------------------------------
    async def log_on_all(self, *, mail: bool) -> None:
        for slot in self._slots(transports=False):
            await self._log_on_slot(slot)
        if mail:
            await self.log_on_transports()
        self.apply_profile_rules()

    def transport_slots(self) -> list[ProviderSlot]:
        """The transports in transport order: services.transport_order when the profile has
        one, else profile order with STATUS_XP_PREFER_LAST ones last. The spooler offers a
        message to the first that takes its address type."""
        ranked = transports(self.session.profile, self.env.registry)
        rank = {uid: i for i, (uid, _section) in enumerate(ranked)}
        slots = self._slots(transports=True)
        return sorted(slots, key=lambda s: rank.get(s.provider_uid, len(rank)))

    async def log_on_transports(self) -> None:
        self.session.transports_on = True
        for slot in self.transport_slots():
            slot.state = SlotState.PENDING
            await self._log_on_slot(slot)
        if self.session.spooler is None:
            self.session.spooler = self.env.make_spooler(self.session)
            self.session.spooler.start()

    async def stop_spooler(self) -> None:
        """Before transports log off: the spooler finishes the message in hand and stops;
        the rest of the queue stays in the Outbox."""
        spooler, self.session.spooler = self.session.spooler, None
        if spooler is not None:
            await spooler.stop()

    async def _log_on_slot(self, slot: ProviderSlot) -> None:
        service = slot.service
        if service.disabled is not None:
            if slot.row is None:
                slot.state = SlotState.DISABLED
                slot.row = self._add_row(
                    slot.provider_uid, self._failure_row(slot, service.disabled)
                )
            return
        provider = slot.cls(Support(self.session, slot))
        slot.provider = provider
        slot.row = self._add_row(slot.provider_uid, {**base_row(slot), "PR_STATUS_CODE": 0})
        self.session.routes[slot.provider_uid] = slot
        try:
            await self._bounded(provider.logon())
        except MapiError as exc:
            if exc.code == ErrorCode.MAPI_E_UNCONFIGURED and service.cls is not None:
                try:
                    new_config = await self._bounded(service.cls.configure(service.config))
                    if new_config is not None:
                        service.config = MappingProxyType(dict(new_config))
                    await self._bounded(provider.logon())
                except Exception as retry_exc:  # the one retry failed: disable the service
                    await self.disable_service(service, _reason(retry_exc, "after configure"))
                    return
            elif exc.code == ErrorCode.MAPI_E_FAILONEPROVIDER:
                await self._fail_slot(slot, _reason(exc), SlotState.FAILED)
                return
            else:
                await self.disable_service(service, _reason(exc))
                return
        except Exception as exc:
            if not isinstance(exc, TimeoutError):
                log.exception(
                    "provider %s of profile %s failed",
                    slot.key,
                    self.session.profile.name,
                    extra=self._about(slot),
                )
            await self.disable_service(service, _reason(exc))
            return
        slot.state = SlotState.ACTIVE
        row = base_row(slot)
        row.update(provider.status_props())
        self.session.table.modify(slot.row, row)

    def _about(self, slot: ProviderSlot) -> dict[str, str]:
        """`extra=` naming the session, profile and service of a provider's log record."""
        session = self.session
        return logs.about(session.id, session.profile.name, slot.service.section.key)

    async def _bounded(self, aw: Awaitable[T]) -> T:
        return await asyncio.wait_for(aw, self.env.provider_timeout)

    def _failure_row(self, slot: ProviderSlot, reason: str) -> dict[str, Any]:
        row = base_row(slot)
        row["PR_RESOURCE_METHODS"] = 0
        row["PR_STATUS_CODE"] = int(StatusCode.STATUS_FAILURE)
        row["PR_STATUS_STRING"] = reason
        return row

    async def _fail_slot(self, slot: ProviderSlot, reason: str, state: SlotState) -> None:
        if slot.state == SlotState.ACTIVE:
            await self._log_off_provider(slot)
        self._unroute(slot)
        slot.state = state
        slot.reason = reason
        log.warning(
            "profile %s: %s: %s",
            self.session.profile.name,
            slot.key,
            reason,
            extra=self._about(slot),
        )
        if slot.row is not None:
            self.session.table.modify(slot.row, self._failure_row(slot, reason), update=False)

    async def disable_service(self, service: ServiceInstance, reason: str) -> None:
        """Any failure but FAILONEPROVIDER: every provider of the service stops for the session."""
        service.disabled = reason
        for slot in service.slots:
            if slot.row is None:
                continue  # not reached yet: it gets its failure row when its turn comes
            await self._fail_slot(slot, f"service disabled: {reason}", SlotState.DISABLED)

    def _unroute(self, slot: ProviderSlot) -> None:
        for stop in list(slot.watches):  # a provider that failed may have left some
            stop()
        slot.watches.clear()
        routes = self.session.routes
        for uid in [u for u, s in routes.items() if s is slot]:
            del routes[uid]
        slot.uids.clear()
        for connection in [c for c, a in self.session.advises.items() if a.slot is slot]:
            del self.session.advises[connection]

    # -- profile-wide rules --------------------------------------------------------------
    def apply_profile_rules(self) -> None:
        """One primary identity and one default store per session (docs/mapi.md 6 and 7.5)."""
        table = self.session.table
        chosen = self.session.profile.extra.get("primary_identity")
        # services.set_primary_identity names the service ("" for none); else the first wins.
        identity_seen = isinstance(chosen, str)
        default_seen = False
        stores: list[ProviderSlot] = []
        simple = self.session.profile.extra.get(SIMPLE_STORE_KEY)
        for instance in self.session.services:
            for slot in instance.slots:
                row = table.get(slot.row) if slot.row is not None else None
                if row is None or slot.state != SlotState.ACTIVE:
                    continue
                flags = int(row.get("PR_RESOURCE_FLAGS", 0))
                new = flags
                if flags & ResourceFlags.STATUS_PRIMARY_IDENTITY:
                    if identity_seen and instance.section.key != chosen:
                        new &= ~ResourceFlags.STATUS_PRIMARY_IDENTITY
                    identity_seen = True
                if slot.resource_type == ResourceType.MAPI_STORE_PROVIDER:
                    stores.append(slot)
                    if flags & ResourceFlags.STATUS_DEFAULT_STORE:
                        if default_seen:
                            new &= ~ResourceFlags.STATUS_DEFAULT_STORE
                        default_seen = True
                    # MAPI_SIMPLE_STORE_PERMANENT, kept as `simple_store = "<key>"`.
                    if (
                        isinstance(simple, str)
                        and simple
                        and not (slot.flags_cleared & ResourceFlags.STATUS_SIMPLE_STORE)
                    ):
                        if instance.section.key == simple:
                            new |= ResourceFlags.STATUS_SIMPLE_STORE
                        elif not slot.flags_set & ResourceFlags.STATUS_SIMPLE_STORE:
                            new &= ~ResourceFlags.STATUS_SIMPLE_STORE
                if new != flags:
                    table.modify(slot.row, {"PR_RESOURCE_FLAGS": new})  # type: ignore[arg-type]
        if not default_seen:
            for slot in stores:
                if slot.flags_cleared & ResourceFlags.STATUS_DEFAULT_STORE:
                    continue  # set_default_store(nil) said: no default store in this session
                row = table.get(slot.row) or {}  # type: ignore[arg-type]
                flags = int(row.get("PR_RESOURCE_FLAGS", 0))
                if not flags & ResourceFlags.STATUS_NO_DEFAULT_STORE:
                    table.modify(
                        slot.row,  # type: ignore[arg-type]
                        {"PR_RESOURCE_FLAGS": flags | ResourceFlags.STATUS_DEFAULT_STORE},
                    )
                    break

    # -- logoff --------------------------------------------------------------------------
    async def _log_off_provider(self, slot: ProviderSlot) -> None:
        provider = slot.provider
        if provider is None:
            return
        for entry in self.session.handles.drop_owner(slot.key):
            try:
                await self._bounded(entry.obj.release())
            except Exception:
                log.exception("release of an object of %s failed", slot.key)
        try:
            await self._bounded(provider.logoff())
        except Exception:
            log.exception("logoff of provider %s failed", slot.key, extra=self._about(slot))
        for stop in list(slot.watches):  # the watches it forgot to stop
            stop()
        slot.watches.clear()
        slot.state = SlotState.LOGGED_OFF

    async def log_off_slot(self, slot: ProviderSlot) -> None:
        """Log one provider off and remove its row (TABLE_ROW_DELETED)."""
        if slot.state == SlotState.ACTIVE:
            await self._log_off_provider(slot)
        self._unroute(slot)
        if slot.row is not None:
            self.session.table.delete(slot.row)
            self.session.status_objects = {
                e: k for e, k in self.session.status_objects.items() if k != slot.row
            }
            slot.row = None
        slot.state = SlotState.PENDING if slot.is_transport else SlotState.LOGGED_OFF

    async def log_off_transports(self) -> None:
        await self.stop_spooler()
        self.session.transports_on = False
        for slot in reversed(self.transport_slots()):
            await self.log_off_slot(slot)

    async def log_off_all(self) -> None:
        """Reverse order of logon; every provider's row goes as it logs off."""
        await self.stop_spooler()
        order = self._slots(transports=False) + self.transport_slots()
        for slot in reversed(order):
            await self.log_off_slot(slot)
        for instance in self.session.services:
            if instance.row is not None:
                self.session.table.delete(instance.row)
                instance.row = None


def _reason(exc: BaseException, context: str = "") -> str:
    if isinstance(exc, MapiError):
        text = f"{exc.code.name}: {exc.message}"
    elif isinstance(exc, TimeoutError):
        text = "timed out"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return f"{text} ({context})" if context else text
