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
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar, cast

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
from mapid.daemon.sessions.session import Session, SessionEnv, SessionState
from mapid.daemon.sessions.slots import (
    Failure,
    ProviderSlot,
    ServiceInstance,
    SharedLogon,
    SlotState,
)
from mapid.daemon.sessions.status_table import RowKey, changed_row
from mapid.daemon.system import logs
from mapid.errors import ErrorCode, MapiError
from mapid.providers.base import (
    MessageService,
    Provider,
)

log = logging.getLogger("mapid.logon")
T = TypeVar("T")

_STATUS_MARK = b"mapid-status\0"
Holder = tuple[Session, ProviderSlot]
"""A session and its slot of a provider: who hears what the provider says."""
FANOUT_CHUNK = 1000
"""Rows changed in one step of the event loop when a shared provider changes its row; the
rest follow in the next steps, so 100 000 sessions never hold the loop for one change."""
_LOGOFFS: set[asyncio.Future[None]] = set()
"""Logoffs of shared providers that no op waits for (kept until done)."""
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
    """The support object of one provider of one session; see providers.base.

    Slotted, and its token source is made at the first ask: most providers never ask."""

    __slots__ = (
        "_env",
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
        self._env: SessionEnv = session.env
        self._session = session
        self._slot = slot
        self.profile_name = session.profile.name
        self.service_key = slot.service.section.key
        self.service_uid = slot.service.section.uid
        self.provider_uid = slot.provider_uid
        self.logger = logging.getLogger(f"mapid.provider.{slot.service.section.service}")
        self._tokens: TokenSource | None = None

    # -- who hears me (SharedSupport: every session that holds the provider) -------------
    def _holders(self) -> Iterable[Holder]:
        return ((self._session, self._slot),)

    def _watching(self) -> bool:
        """Whether a directory event is still my provider's business."""
        return self._slot.state in (SlotState.PENDING, SlotState.ACTIVE)

    def _watches(self) -> list[Callable[[], None]]:
        """Where my watches' stop functions are kept, to stop the ones my provider forgets."""
        return self._slot.watches

    def _record_uid(self, uid: bytes) -> None:
        """A MAPIUID registered (a shared logon hands it to sessions that come later)."""

    # -- ProviderSupport -----------------------------------------------------------------
    def config(self) -> Mapping[str, Any]:
        return self._slot.service.config

    def resolve_path(self, value: str) -> Path:
        path = Path(os.path.expanduser(value))
        return path if path.is_absolute() else self._env.config_dir / path

    def state_dir(self) -> Path:
        """`<state dir>/services/<profile>/<service key>`, each name escaped (path_part)."""
        path = self._env.state_dir
        for part in (SERVICES_STATE, path_part(self.profile_name), path_part(self.service_key)):
            path = path / part
            path.mkdir(mode=0o700, parents=True, exist_ok=True)  # parents: the state dir
        if stat.S_IMODE(path.stat().st_mode) != 0o700:
            os.chmod(path, 0o700)
        return path

    def modify_status_row(self, props: Mapping[str, Any], *, update: bool = True) -> None:
        for session, slot in self._holders():
            modify_row(session, slot, props, update)

    def set_provider_uid(self, uid: bytes) -> None:
        if len(uid) != 16:
            raise ValueError("a MAPIUID is 16 bytes")
        self._record_uid(uid)
        for session, slot in self._holders():
            slot.uids.append(uid)
            session.routes[uid] = slot

    def notify(
        self, event: NotificationEvent, *, entryid: bytes | None = None, **fields: Any
    ) -> int:
        if entryid is not None:
            fields.setdefault("entryid", entryid)
        reached = 0
        told = False
        for session, slot in self._holders():
            if not told and entryid is not None:
                told = True  # the desktop hears once, advised or not, however many sessions
                new_mail = self._env.on_new_mail
                if event == NotificationEvent.fnevNewMail and new_mail is not None:
                    new_mail(slot, entryid)
            if session.advises:
                reached += notify_session(session, slot, event, entryid, fields)
        return reached

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
        watching = self._watching
        watches = self._watches()

        def guarded(paths: set[Path]) -> None:
            # Events still queued when the provider logged off are not its business.
            if watching():
                callback(paths)

        stop_watch = shared_watcher().watch(path, guarded)

        def stop() -> None:
            stop_watch()
            if stop in watches:
                watches.remove(stop)

        watches.append(stop)
        return stop

    def spooler_notify(self, flags: SpoolerNotify) -> None:
        if flags & (SpoolerNotify.NOTIFY_READYTOSEND | SpoolerNotify.NOTIFY_CONFIG_CHANGE):
            for session, slot in self._holders():
                spooler = session.spooler
                if spooler is not None:
                    spooler.notify(slot, flags)  # kicks a pass; a recovered transport's
                    # backoff ends, a changed one's address types are read again


class SharedSupport(Support):
    """The support object of a shared provider (slots.py): one for every session that holds
    its logon. Its configuration is the logon's, its watches live as long as the logon, and
    what it says reaches every holder."""

    __slots__ = ("_logon", "_pending", "_transport")

    def __init__(self, logon: SharedLogon, env: SessionEnv, profile: str, slot: ProviderSlot):
        # Not Support.__init__: no session of its own (the first may leave long before).
        self._env = env
        self._logon = logon
        self._transport = slot.is_transport
        self._tokens = None
        self.profile_name = profile
        self.service_key = slot.service.section.key
        self.service_uid = slot.service.section.uid
        self.provider_uid = slot.provider_uid
        self.logger = logging.getLogger(f"mapid.provider.{slot.service.section.service}")
        self._pending: deque[list[Any]] = deque()
        """Row changes still to reach some holders: [props, update, holders, next index]."""

    def _holders(self) -> list[Holder]:
        return cast(list[Holder], self._logon.holders())  # the holders are sessions

    def _watching(self) -> bool:
        return self._logon.logged_on

    def _watches(self) -> list[Callable[[], None]]:
        return self._logon.watches

    def _record_uid(self, uid: bytes) -> None:
        self._logon.uids.append(uid)

    def config(self) -> Mapping[str, Any]:
        return self._logon.config

    def modify_status_row(self, props: Mapping[str, Any], *, update: bool = True) -> None:
        """Every holder's row changes: FANOUT_CHUNK of them now, the rest in later steps
        of the loop, each holder's in the order the changes came."""
        props = dict(props)  # the provider may reuse its dict
        holders = self._holders()
        if not holders:  # lingering (release_shared): the next holder starts from this
            idle = self._logon.idle_row
            if idle is not None:
                self._logon.idle_row = changed_row(idle, props, update=update, keep=BASE_COLUMNS)
            return
        for session, slot in holders[:FANOUT_CHUNK]:
            modify_row(session, slot, props, update)
        if len(holders) > FANOUT_CHUNK:
            self._pending.append([props, update, holders, FANOUT_CHUNK])
            if len(self._pending) == 1:
                asyncio.get_running_loop().call_soon(self._drain)

    def _drain(self) -> None:
        budget = FANOUT_CHUNK
        while self._pending and budget > 0:
            entry = self._pending[0]
            props, update, holders, start = entry
            end = min(len(holders), start + budget)
            for session, slot in holders[start:end]:
                modify_row(session, slot, props, update)
            budget -= end - start
            if end >= len(holders):
                self._pending.popleft()
            else:
                entry[3] = end
        if self._pending:
            asyncio.get_running_loop().call_soon(self._drain)

    def spooler_notify(self, flags: SpoolerNotify) -> None:
        if flags & SpoolerNotify.NOTIFY_CONFIG_CHANGE or self._transport:
            super().spooler_notify(flags)  # every session's spooler keeps its own view
            return
        if not flags & SpoolerNotify.NOTIFY_READYTOSEND:
            return
        # A store queued a message: its queue has one sender (queue_claims.py), and a
        # spooler in line hands a kick on to it, so one spooler is enough.
        claims = self._env.queue_claims
        for uid in self._logon.uids:
            owner = claims.owner(uid)
            if owner is not None:
                owner.kick()
                return
        for session, slot in self._holders():
            if session.spooler is not None:
                session.spooler.notify(slot, flags)
                return


def modify_row(
    session: Session, slot: ProviderSlot, props: Mapping[str, Any], update: bool
) -> None:
    """A provider's change to its row in one session (STATUSROW_UPDATE, or replace)."""
    row = slot.row
    if row is None or session.state is SessionState.CLOSED:
        return
    if not update:
        # A provider replaces its own columns, never the ones MAPI keeps for it.
        keep = base_row(slot)
        keep.update(props)
        props = keep
    session.table.modify(row, props, update=update)


def notify_session(
    session: Session,
    slot: ProviderSlot,
    event: NotificationEvent,
    entryid: bytes | None,
    fields: Mapping[str, Any],
) -> int:
    """Raise a provider's notification to the advise sinks of one session that hear it."""
    reached = 0
    for advise in list(session.advises.values()):
        if advise.slot is not slot or not advise.mask & event:
            continue
        if entryid is None or _hears(slot, advise.entryid, entryid, fields):
            reached += session.notify_advise(advise, event, **fields)
    return reached


def _hears(
    slot: ProviderSlot, target: bytes | None, entryid: bytes, fields: Mapping[str, Any]
) -> bool:
    """An advise hears about its object, the object's children, and (on a store) all."""
    provider = slot.provider
    if target is None or provider is None:
        return True
    return (
        provider.compare_entryids(target, entryid)
        or target == fields.get("parent_entryid")
        or _is_store_advise(target, slot)
    )


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


BASE_COLUMNS = frozenset(
    {
        "PR_DISPLAY_NAME",
        "PR_PROVIDER_DISPLAY",
        "PR_PROVIDER_DLL_NAME",
        "PR_RESOURCE_TYPE",
        "PR_RESOURCE_FLAGS",
        "PR_RESOURCE_METHODS",
    }
)
"""The columns base_row supplies: a lingering logon's row keeps them when its provider
replaces its own (SharedSupport.modify_status_row)."""


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
            shared = slot.shared
            failure: str | None = None
            if shared is not None and shared.section is section:
                failure = shared.reconfigure_failure  # another holder told the provider
                instance.config = shared.config
            else:
                if shared is not None:
                    shared.section, shared.config = section, instance.config
                try:
                    await self._bounded(provider.validate_state(ValidateStateFlags.CONFIG_CHANGED))
                except Exception as exc:
                    failure = f"configuration change failed: {_reason(exc)}"
                if shared is not None:
                    shared.reconfigure_failure = failure
            if failure is not None:
                self.session.table.modify(slot.row, self._failure_row(slot, failure))
                continue
            row = base_row(slot)
            row.update(provider.status_props())
            row.setdefault("PR_STATUS_STRING", "configuration changed")
            self.session.table.modify(slot.row, row)

    def _add_row(self, uid: bytes, props: Mapping[str, Any]) -> RowKey:
        table = self.session.table
        key = table.add(lambda rowid: status_entryid(uid, rowid), props)
        row = table.get(key)
        assert row is not None
        self.session.status_objects[row["PR_ENTRYID"]] = key  # the shared row's bytes
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
        joined = False  # held a shared logon that was up already
        if slot.cls.shared:
            failure, joined = await self._hold_shared(slot)
        else:
            provider = slot.cls(Support(self.session, slot))
            slot.provider = provider
            slot.row = self._add_row(slot.provider_uid, {**base_row(slot), "PR_STATUS_CODE": 0})
            self.session.routes[slot.provider_uid] = slot

            def set_config(config: Mapping[str, Any]) -> None:
                service.config = config

            failure = await self._log_on_provider(provider, slot, set_config)
        if failure is not None:
            state, reason = failure
            if state is SlotState.FAILED:
                await self._fail_slot(slot, reason, SlotState.FAILED)
            else:
                await self.disable_service(service, reason)
            return
        slot.state = SlotState.ACTIVE
        assert slot.provider is not None and slot.row is not None
        row = base_row(slot)
        if not joined:  # a logon that was up already: the row copied from a peer is true
            row.update(slot.provider.status_props())
        self.session.table.modify(slot.row, row)

    async def _log_on_provider(
        self,
        provider: Provider,
        slot: ProviderSlot,
        set_config: Callable[[Mapping[str, Any]], None],
    ) -> Failure | None:
        """provider.logon() with MAPI's rules (module docstring); None when it is on."""
        service = slot.service
        try:
            await self._bounded(provider.logon())
        except MapiError as exc:
            if exc.code == ErrorCode.MAPI_E_UNCONFIGURED and service.cls is not None:
                try:
                    config = provider.support.config()
                    new_config = await self._bounded(service.cls.configure(config))
                    if new_config is not None:
                        set_config(MappingProxyType(dict(new_config)))
                    await self._bounded(provider.logon())
                except Exception as retry_exc:  # the one retry failed: disable the service
                    return SlotState.DISABLED, _reason(retry_exc, "after configure")
            elif exc.code == ErrorCode.MAPI_E_FAILONEPROVIDER:
                return SlotState.FAILED, _reason(exc)
            else:
                return SlotState.DISABLED, _reason(exc)
        except Exception as exc:
            if not isinstance(exc, TimeoutError):
                log.exception(
                    "provider %s of profile %s failed",
                    slot.key,
                    self.session.profile.name,
                    extra=self._about(slot),
                )
            return SlotState.DISABLED, _reason(exc)
        return None

    # -- shared providers (slots.py) ------------------------------------------------------
    async def _hold_shared(self, slot: ProviderSlot) -> tuple[Failure | None, bool]:
        """Hold the profile's logon of a shared provider, logging it on when there is none;
        a session that comes while it logs on waits for that one logon. Returns how it
        went, and whether the logon was up already (the row is then a peer's copy)."""
        logons = self.env.shared_logons
        section = slot.service.section
        shared = logons.find((slot.provider_uid, slot.cls), section)
        if shared is None:
            shared = SharedLogon((slot.provider_uid, slot.cls), section, slot.service.config)
            shared.provider = slot.cls(
                SharedSupport(shared, self.env, self.session.profile.name, slot)
            )
            logons.add(shared)
            shared.task = asyncio.ensure_future(self._log_on_shared(shared, slot))
        joined = shared.succeeded()
        peer = shared.peer_row() if joined else None
        shared.hold(self.session, slot)  # a lingering logon is held again
        logons.lingering.discard(shared)
        props = dict(peer) if peer is not None else {**base_row(slot), "PR_STATUS_CODE": 0}
        slot.row = self._add_row(slot.provider_uid, props)
        self.session.routes[slot.provider_uid] = slot
        assert shared.task is not None
        failure = await asyncio.shield(shared.task)
        if failure is None:
            slot.service.config = shared.config  # one mapping for every holder
        return failure, joined

    async def _log_on_shared(self, shared: SharedLogon, slot: ProviderSlot) -> Failure | None:
        """The one logon of a shared provider (a task: the session that started it may go
        before it is done, the others still wait for it)."""
        assert shared.provider is not None

        def set_config(config: Mapping[str, Any]) -> None:
            shared.config = config

        failure = await self._log_on_provider(shared.provider, slot, set_config)
        if failure is not None:
            self.env.shared_logons.discard(shared)  # the next session tries again
            shared.end()
        elif not shared:  # every holder went while it logged on
            await release_shared(shared, self.env)
        return failure

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
        shared = slot.shared
        if shared is not None and shared.let_go(slot) and shared.succeeded():
            # The last holder, never active here: its session ended while it logged on.
            _track(release_shared(shared, self.env))
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
        shared = slot.shared
        if shared is not None:  # the last holder lets it linger, or logs it off
            if shared.let_go(slot):
                await release_shared(shared, self.env)
            slot.state = SlotState.LOGGED_OFF
            return
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


# -- shared logons no session holds ----------------------------------------------------
async def release_shared(shared: SharedLogon, env: SessionEnv) -> None:
    """The last holder let go: the logon lingers env.shared_linger_s for the next session of
    its profile (a client logging on and off in a loop then logs no provider on), or logs
    off now when the linger is 0 (and at the stop)."""
    if env.shared_linger_s > 0 and shared.logged_on and shared.linger is None:
        loop = asyncio.get_running_loop()
        shared.linger = loop.call_later(env.shared_linger_s, _linger_out, shared, env)
        env.shared_logons.lingering.add(shared)
        return
    await _log_off_shared(shared, env)


def _linger_out(shared: SharedLogon, env: SessionEnv) -> None:
    shared.linger = None
    env.shared_logons.lingering.discard(shared)
    if not shared and shared.logged_on:  # nobody came meanwhile
        _track(_log_off_shared(shared, env))


def log_off_lingering(env: SessionEnv) -> list[asyncio.Future[None]]:
    """At the stop: the lingering logons log off now, with their providers' goodbyes (the
    caller waits for them under its deadline); later last holders do not linger."""
    env.shared_linger_s = 0.0
    tasks: list[asyncio.Future[None]] = []
    for shared in list(env.shared_logons.lingering):
        if shared.linger is not None:
            shared.linger.cancel()
            shared.linger = None
        if not shared and shared.logged_on:
            tasks.append(_track(_log_off_shared(shared, env)))
    env.shared_logons.lingering.clear()
    return tasks


async def _log_off_shared(shared: SharedLogon, env: SessionEnv) -> None:
    env.shared_logons.discard(shared)  # a session that comes now logs on anew
    env.shared_logons.lingering.discard(shared)
    if not shared.logged_on:
        return  # logged off already (or failed)
    shared.logged_on = False  # what its watches see from now on is nobody's business
    provider = shared.provider
    if provider is not None:
        try:
            await asyncio.wait_for(provider.logoff(), env.provider_timeout)
        except Exception:
            log.exception("logoff of shared provider %s failed", shared.section.key)
    shared.end()


def _track(aw: Coroutine[Any, Any, None]) -> asyncio.Future[None]:
    """A logoff no op waits for: kept until done (a task nobody holds may be collected)."""
    task = asyncio.ensure_future(aw)
    _LOGOFFS.add(task)
    task.add_done_callback(_LOGOFFS.discard)
    return task
