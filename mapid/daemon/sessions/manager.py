"""All sessions of the daemon: MAPI's logon algorithm, logoff, leases (docs/design.md 5).

Logon follows docs/mapi.md 1.3: the shared session unless MAPI_NEW_SESSION; else
the named profile; else the default with MAPI_USE_DEFAULT; else MAPI_E_LOGON_FAILED. A new
session logs its providers on privately and goes public at once when done, so the first
`logon` event and its TABLE_ROW_ADDED events describe a complete table.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

from mapid import entryid
from mapid.constants import (
    LogonFlags,
    NotificationEvent,
    ResourceMethods,
    ResourceType,
    StatusCode,
)
from mapid.daemon.config.profiles import Profile, check_profile_name
from mapid.daemon.sessions.logon import ProviderHost, log_off_lingering
from mapid.daemon.sessions.session import (
    SPOOLER_ROW,
    Member,
    Session,
    SessionEnv,
    SessionState,
    new_token,
)
from mapid.daemon.system import logs
from mapid.errors import ErrorCode, MapiError

log = logging.getLogger("mapid.sessions")

MAPID_DLL = "mapid"
SUBSYSTEM_ROW = "subsystem"
AB_ROW = "ab"
LEASE_CHECK_INTERVAL = 0.25
EXTENDED_LOGOFF = "logoff"
"""`extended_event` of the fnevExtended a member's own logoff sends to its session advises."""


def _mapi_row(name: str, kind: ResourceType, methods: ResourceMethods) -> dict[str, Any]:
    return {
        "PR_DISPLAY_NAME": name,
        "PR_PROVIDER_DISPLAY": MAPID_DLL,
        "PR_PROVIDER_DLL_NAME": MAPID_DLL,
        "PR_RESOURCE_TYPE": int(kind),
        "PR_RESOURCE_FLAGS": 0,
        "PR_RESOURCE_METHODS": int(methods),
        "PR_STATUS_CODE": int(StatusCode.STATUS_AVAILABLE),
    }


STOP_WORKERS = 64
"""Sessions logged off at once when the daemon stops (each waits on its own providers)."""
STOP_YIELD_EVERY = 16
"""Sessions a stop worker ends before it lets the loop run (and the deadline be seen)."""
STOP_CANCEL_GRACE = 0.2
"""How long the logoffs cancelled at the stop's deadline get to unwind."""


class SessionManager:
    def __init__(
        self,
        env: SessionEnv,
        profiles: Callable[[], dict[str, Profile]],
        default_profile: Callable[[], str | None],
        lease_s: Callable[[], float],
    ) -> None:
        self.env = env
        self._profiles = profiles
        self._default_profile = default_profile
        self._lease_default = lease_s
        self.sessions: dict[str, Session] = {}
        self.tokens: dict[bytes, tuple[Session, Member]] = {}
        self.shared: Session | None = None
        self.public_count = 0
        """Sessions that went public and have not ended: O(1) for every heartbeat."""
        self._leases: list[tuple[float, int, bytes]] = []
        self._lease_order = itertools.count()
        self.on_session_end: list[Callable[[Session], None]] = []
        self.on_session_start: list[Callable[[Session], None]] = []
        """Called as each session goes public (the heap freezer counts logons here: a
        timer on a loop that is busy logging sessions on comes too late)."""

    # -- lookups -------------------------------------------------------------------------
    def lookup(self, token: object) -> tuple[Session, Member]:
        found = self.tokens.get(token) if isinstance(token, bytes) else None
        if found is None or not found[0].alive:
            raise MapiError(
                ErrorCode.MAPI_E_END_OF_SESSION, "the token is unknown, expired or logged off"
            )
        return found

    def public_sessions(self) -> list[Session]:
        return [s for s in self.sessions.values() if s.public]

    def every_session(self) -> list[Session]:
        """Public or not: a plain copy, no test per session (a snapshot's capture looks at
        each in its own step of the loop)."""
        return list(self.sessions.values())

    def service_availability(self) -> dict[tuple[str, str], bool]:
        """(profile, service key) -> whether the service's status rows (each provider's, or
        the one row of a service that did not load) all have STATUS_AVAILABLE without
        STATUS_OFFLINE, in every live session of the profile (/metrics)."""
        found: dict[tuple[str, str], bool] = {}
        for session in self.sessions.values():
            if not session.alive:
                continue
            for instance in session.services:
                keys = [slot.row for slot in instance.slots] + [instance.row]
                rows = [session.table.get(key) or {} for key in keys if key is not None]
                if not rows:
                    continue
                codes = [int(row.get("PR_STATUS_CODE", 0)) for row in rows]
                up = all(
                    c & StatusCode.STATUS_AVAILABLE and not c & StatusCode.STATUS_OFFLINE
                    for c in codes
                )
                key = (session.profile.name, instance.section.key)
                found[key] = found.get(key, True) and up
        return found

    def touch(self, member: Member) -> None:
        """Any op on a token renews its lease (docs/protocol.md 8)."""
        expires = member.renew()
        if expires is not None and not member.queued:
            # One heap entry per member: a renewed member is pushed again when popped.
            member.queued = True
            heapq.heappush(self._leases, (expires, next(self._lease_order), member.token))

    # -- logon ---------------------------------------------------------------------------
    def choose_profile(self, name: str | None, flags: LogonFlags) -> Profile:
        """Steps 2 to 4 of the logon algorithm (the shared session is checked before)."""
        if name:
            check_profile_name(name)
        elif flags & LogonFlags.MAPI_USE_DEFAULT:
            name = self._default_profile()
            if not name:
                raise MapiError(
                    ErrorCode.MAPI_E_LOGON_FAILED,
                    "MAPI_USE_DEFAULT, but no default profile is set (default_profile)",
                )
        elif flags & LogonFlags.MAPI_EXPLICIT_PROFILE:
            raise MapiError(
                ErrorCode.MAPI_E_LOGON_FAILED,
                "MAPI_EXPLICIT_PROFILE needs a profile name; the default is not substituted",
            )
        else:
            raise MapiError(
                ErrorCode.MAPI_E_LOGON_FAILED,
                "no profile named, no MAPI_USE_DEFAULT, and no shared session to attach to",
            )
        profile = self._profiles().get(name)
        if profile is None:
            raise MapiError(
                ErrorCode.MAPI_E_LOGON_FAILED,
                f"no profile {name!r}",
                details={"profile": name, "reason": "not_found"},
            )
        return profile

    async def logon(
        self,
        profile_name: str | None,
        flags: LogonFlags,
        client: dict[str, Any],
        identity: bytes | None,
        lease_s: float | None,
    ) -> tuple[Session, Member]:
        lease = self._lease_default() if lease_s is None else lease_s
        shared = self.shared
        if not flags & LogonFlags.MAPI_NEW_SESSION and shared is not None and shared.alive:
            async with shared.lock:
                if shared.alive:
                    return shared, await self._join(shared, flags, client, identity, lease)
        profile = self.choose_profile(profile_name, flags)
        session = Session(profile, flags, self.env)
        member = Member(new_token(), flags, client, identity, lease, None)
        self.sessions[session.id] = session
        try:
            async with session.lock:
                await self._log_on(session, member)
        except BaseException:
            self.sessions.pop(session.id, None)
            await asyncio.shield(self._discard(session))
            raise
        return session, member

    async def _log_on(self, session: Session, member: Member) -> None:
        host = ProviderHost(session)
        add = host._add_row
        uid = entryid.MAPID_UID
        session.mapi_rows[SUBSYSTEM_ROW] = add(
            uid,
            _mapi_row(
                session.profile.name,
                ResourceType.MAPI_SUBSYSTEM,
                ResourceMethods.STATUS_VALIDATE_STATE,
            ),
        )
        session.mapi_rows[SPOOLER_ROW] = add(
            uid,
            _mapi_row(
                "MAPI Spooler",
                ResourceType.MAPI_SPOOLER,
                ResourceMethods.STATUS_VALIDATE_STATE | ResourceMethods.STATUS_FLUSH_QUEUES,
            ),
        )
        session.mapi_rows[AB_ROW] = add(
            uid,
            _mapi_row(
                "MAPI Address Book", ResourceType.MAPI_AB, ResourceMethods.STATUS_VALIDATE_STATE
            ),
        )
        host.load_services()
        await host.log_on_all(mail=member.mail_enabled)
        self._add_member(session, member)
        self.update_mapi_rows(session)
        session.transition(SessionState.ACTIVE)
        self.public_count += 1
        if session.flags & LogonFlags.MAPI_ALLOW_OTHERS:
            self.shared = session
        for hook in self.on_session_start:
            hook(session)
        session.publish_session("logon")
        session.table.go_public(self.env.publish)
        log.info(
            "session %s logged on to profile %s (%d rows)",
            session.id,
            session.profile.name,
            len(session.table),
            extra=logs.about(session.id, session.profile.name),
        )

    async def _discard(self, session: Session) -> None:
        """Undo a logon that failed or was cancelled half-way (nothing was published)."""
        try:
            await ProviderHost(session).log_off_all()
        except Exception:
            log.exception(
                "cleanup of session %s failed",
                session.id,
                extra=logs.about(session.id, session.profile.name),
            )
        for token in list(session.members):
            self.tokens.pop(token, None)

    def _add_member(self, session: Session, member: Member) -> None:
        session.members[member.token] = member
        self.tokens[member.token] = (session, member)
        self.touch(member)

    async def _join(
        self,
        session: Session,
        flags: LogonFlags,
        client: dict[str, Any],
        identity: bytes | None,
        lease: float,
    ) -> Member:
        member = Member(new_token(), flags, client, identity, lease, None)
        self._add_member(session, member)
        if member.mail_enabled and not session.transports_on:
            host = ProviderHost(session)
            await host.log_on_transports()
            host.apply_profile_rules()
        self.update_mapi_rows(session)
        session.publish_session("member_joined")
        return member

    def update_mapi_rows(self, session: Session) -> None:
        """The spooler row fails while no member is mail-enabled (docs/mapi.md 1.4)."""
        row = session.mapi_rows.get(SPOOLER_ROW)
        if row is None:
            return
        if session.transports_on:
            spooler = session.spooler  # it says what it does: "idle", "sending 3 of 10"...
            text = spooler.status_string if spooler is not None else None
            session.table.modify(
                row,
                {"PR_STATUS_CODE": int(StatusCode.STATUS_AVAILABLE), "PR_STATUS_STRING": text},
            )
        else:
            session.table.modify(
                row,
                {
                    "PR_STATUS_CODE": int(StatusCode.STATUS_FAILURE),
                    "PR_STATUS_STRING": "no mail-enabled member: every logon used MAPI_NO_MAIL",
                },
            )

    # -- following the profile ---------------------------------------------------------
    async def follow_profile(self, session: Session, profile: Profile) -> None:
        """Apply a changed profile to a live session, as docs/design.md 8 says.

        Sections are matched by key: a new key is a service to log on, a key gone is one
        to log off, a key whose `service` changed is both, and a key whose configuration
        changed is reconfigured in place.
        """
        async with session.lock:
            if not session.alive:
                return
            host = ProviderHost(session)
            old = {inst.section.key: inst for inst in session.services}
            new = {sec.key: sec for sec in profile.services}
            session.profile = profile
            for key, instance in old.items():
                section = new.get(key)
                if section is None or section.service != instance.section.service:
                    await host.remove_service(instance)
            for key, section in new.items():
                before = old.get(key)
                if before is None or section.service != before.section.service:
                    await host.add_service(section)
                elif section.config != before.section.config:
                    await host.reconfigure(before, section)
            order = {key: i for i, key in enumerate(new)}
            session.services.sort(key=lambda inst: order.get(inst.section.key, len(order)))
            host.apply_profile_rules()

    # -- logoff --------------------------------------------------------------------------
    async def logoff(
        self, session: Session, member: Member, *, shared: bool = False, reason: str | None = None
    ) -> None:
        """Drop one member (the caller holds the session's lock)."""
        if member.token not in session.members:
            return
        del session.members[member.token]
        self.tokens.pop(member.token, None)
        for advise in session.session_advises(member.token):
            if advise.mask & NotificationEvent.fnevExtended:
                session.notify_advise(
                    advise, NotificationEvent.fnevExtended, extended_event=EXTENDED_LOGOFF
                )
        session.drop_advises(member.token)
        if shared and session.members:
            error = MapiError(
                ErrorCode.MAPI_E_END_OF_SESSION,
                "another member logged off with MAPI_LOGOFF_SHARED",
            )
            for advise in session.session_advises():
                session.notify_advise(
                    advise, NotificationEvent.fnevCriticalError, error=error.to_wire()
                )
            await self.end_session(session, reason="logoff_shared")
        elif not session.members:
            await self.end_session(session, reason=reason)
        else:
            if session.transports_on and session.mail_members() == 0:
                await ProviderHost(session).log_off_transports()
            self.update_mapi_rows(session)
            extra = {"reason": reason} if reason else {}
            session.publish_session("member_left", **extra)

    async def end_session(self, session: Session, reason: str | None = None) -> None:
        """End a session for all its members (the caller holds its lock)."""
        if session.state in (SessionState.CLOSING, SessionState.CLOSED):
            return
        session.transition(SessionState.CLOSING)
        for token in list(session.members):
            self.tokens.pop(token, None)
        session.members.clear()
        session.advises.clear()
        if self.shared is session:
            self.shared = None
        await ProviderHost(session).log_off_all()  # releases each provider's objects first
        for entry in session.handles.clear():  # then MAPI's own (profile sections hold locks)
            try:
                await entry.obj.release()
            except Exception:
                log.exception("release of a %s failed", type(entry.obj).__name__)
        for key in list(session.mapi_rows.values()):
            session.table.delete(key)
        session.mapi_rows.clear()
        session.status_objects.clear()
        extra = {"reason": reason} if reason in ("expired",) else {}
        session.publish_session("logoff", **extra)
        self.env.forget_topics(*session.topics)
        session.transition(SessionState.CLOSED)
        self.public_count -= 1
        self.sessions.pop(session.id, None)
        for hook in self.on_session_end:
            hook(session)
        log.info(
            "session %s ended (%s)",
            session.id,
            reason or "logoff",
            extra=logs.about(session.id, session.profile.name),
        )

    # -- leases --------------------------------------------------------------------------
    async def run_leases(self) -> None:
        """Drop members whose lease ran out, within a second of it (docs/protocol.md 8)."""
        while True:
            await asyncio.sleep(LEASE_CHECK_INTERVAL)
            now = time.monotonic()
            while self._leases and self._leases[0][0] <= now:
                _, _, token = heapq.heappop(self._leases)
                found = self.tokens.get(token)
                if found is None:
                    continue
                session, member = found
                member.queued = False
                if member.expires is None:
                    continue
                if member.expires > now:  # renewed since it was queued
                    member.queued = True
                    entry = (member.expires, next(self._lease_order), token)
                    heapq.heappush(self._leases, entry)
                    continue
                async with session.lock:
                    if (
                        member.token in session.members
                        and (member.expires or 0) <= time.monotonic()
                    ):
                        log.info(
                            "session %s: a member's lease expired",
                            session.id,
                            extra=logs.about(session.id, session.profile.name),
                        )
                        await self.logoff(session, member, reason="expired")

    async def end_all(self, deadline: float) -> tuple[int, int]:
        """End every session by `deadline` (the loop's clock): (logged off, of how many).

        STOP_WORKERS sessions log off at once, each with its providers' goodbyes (and the
        lingering shared logons beside them, logon.log_off_lingering). What is
        still running at the deadline is cancelled, and every session left is dropped
        without its goodbyes (drop_all): the stop is a promise, not a hope."""
        loop = asyncio.get_running_loop()
        todo = collections.deque(self.sessions.values())
        total = len(todo)
        ended = 0

        async def worker() -> None:
            nonlocal ended
            mine = 0
            while todo and loop.time() < deadline:
                session = todo.popleft()
                try:
                    async with session.lock:
                        if session.alive:
                            await self.end_session(session, reason="daemon stopping")
                except Exception:
                    log.exception("session %s: logging off at the stop failed", session.id)
                ended += 1
                mine += 1
                if mine % STOP_YIELD_EVERY == 0:
                    # Logoffs of shared providers' holders finish without waiting for
                    # anything: without this, one worker would end them all in one step
                    # of the loop, past the deadline (11 s at 100 000 sessions).
                    await asyncio.sleep(0)

        # Shared logons no session holds log off beside the sessions; from now on the last
        # holder of a shared logon logs it off at once, without lingering.
        workers = log_off_lingering(self.env)
        workers += [loop.create_task(worker()) for _ in range(min(STOP_WORKERS, total))]
        if workers:
            _, late = await asyncio.wait(workers, timeout=max(0.0, deadline - loop.time()))
            for task in late:
                task.cancel()
            if late:  # let the cancellations run their finally blocks (locks, files)
                await asyncio.wait(late, timeout=STOP_CANCEL_GRACE)
        self.drop_all()
        return ended, total

    def drop_all(self) -> int:
        """Forget every session left, without its providers' goodbyes (the daemon is
        exiting: queued mail is on disk, nothing else of a session must survive)."""
        left = len(self.sessions)
        for session in self.sessions.values():
            if session.state is not SessionState.CLOSED:
                session.state = SessionState.CLOSED
        self.sessions.clear()
        self.tokens.clear()
        self.public_count = 0
        self.shared = None
        return left
