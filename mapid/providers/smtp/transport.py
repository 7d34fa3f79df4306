"""The `smtp` transport provider: sends through an SMTP server (docs/design.md 4).

smtplib does the talking, always in a worker thread (`support.run_blocking`). The transport
does not connect at logon: an unreachable server is a temporary failure of a send, shown in
the status row, never a failed logon. One connection is kept open across consecutive sends
(a queue of a thousand messages must not pay a TLS handshake and an AUTH for each) and closed
after `IDLE_CLOSE_S` without use, at logoff and when the configuration changes. The status
row says "Connected" only while that connection is open: an idle close or a server that hangs
up (heard by the loop reading the idle socket) puts "Ready" back at once.

Failures are sorted for the spooler: a 5xx reply to MAIL or DATA, or every recipient refused
with a 5xx, is permanent (a non-delivery report); anything the user or the network can mend
(a 4xx, a refused or timed-out connection, a TLS or certificate failure, a wrong password)
is temporary, so the message stays queued. No message ever holds the password.

With `oauth2_token_command` AUTH takes an access token (`support.oauth2_token`) instead of a
password: the token of the last connection is used again until the server rejects it; then
the worker thread asks the loop for a fresh one (the command runs again) and tries once more
before the failure goes to the row, worded and sorted as a wrong password is.

The settings are config.py's, opening a connection connection.py's, the password and the token
credentials.py's, the SASL messages sasl.py's, the envelope envelope.py's and the failures'
wording failures.py's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import smtplib
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

from mapid.constants import ResourceMethods, SpoolerNotify, StatusCode, ValidateStateFlags
from mapid.errors import ErrorCode, MapiError
from mapid.proptags import (
    PR_REMOTE_PROGRESS,
    PR_REMOTE_VALIDATE_OK,
    PR_STATUS_CODE,
    PR_STATUS_STRING,
)
from mapid.providers.base import (
    REMOTE_PROGRESS_IDLE,
    Identity,
    OutgoingMessage,
    ProviderSupport,
    SendResult,
    TransportFailure,
    TransportProvider,
)
from mapid.providers.smtp.config import ADDRTYPE, SmtpSettings
from mapid.providers.smtp.connection import (
    Login,
    ServerNameContext,
    close_quietly,
    new_client,
    open_session,
    quit_quietly,
)
from mapid.providers.smtp.credentials import Credentials
from mapid.providers.smtp.envelope import (
    BARE_LF,
    envelope_sender,
    mail_options,
    plausible,
    unique_addresses,
)
from mapid.providers.smtp.failures import address_words, failure_of, reply_failure, reply_text

__all__ = ["BATCH_SLICE_S", "CHECK_AFTER_S", "CONNECTED", "IDLE_CLOSE_S", "SmtpTransport"]

T = TypeVar("T")

IDLE_CLOSE_S = 30.0
"""An open connection unused this long is closed (servers drop idle clients after minutes)."""
CHECK_AFTER_S = 2.0
"""A connection idle this long gets a NOOP before it is trusted with the next message."""
FRESH_TOKEN_WAIT_S = 60.0
"""How long the worker thread waits for the loop to run the token command again."""
CONNECTED = "Connected: "
"""How PR_STATUS_STRING starts while a connection is open (and only then)."""
BATCH_SLICE_S = 0.5
"""A batch starts its next message only within this many seconds of its start: a slow
server's batch comes back in pieces, so a stopping daemon does not wait for all of it."""

_KNOWN_FLAGS = ValidateStateFlags(0)
for _flag in ValidateStateFlags:
    _KNOWN_FLAGS |= _flag
_REMOTE_ONLY = (
    ValidateStateFlags.REFRESH_XP_HEADER_CACHE
    | ValidateStateFlags.PROCESS_XP_HEADER_CACHE
    | ValidateStateFlags.ABORT_XP_HEADER_OPERATION
    | ValidateStateFlags.SHOW_XP_SESSION_UI
)


class SmtpTransport(TransportProvider):
    """Sends the spooler's messages to one SMTP server, over one reusable connection."""

    name = "smtp"
    display = "mapid SMTP"
    shared = True  # one logon (and connection) for every session of a profile
    address_types: ClassVar[tuple[str, ...]] = (ADDRTYPE,)
    resource_methods = (
        ResourceMethods.STATUS_VALIDATE_STATE
        | ResourceMethods.STATUS_FLUSH_QUEUES
        | ResourceMethods.STATUS_SETTINGS_DIALOG
    )

    def __init__(self, support: ProviderSupport) -> None:
        super().__init__(support)
        self._settings: SmtpSettings | None = None
        self._conn: smtplib.SMTP | None = None
        self._connecting: smtplib.SMTP | None = None
        """The connection a worker thread is opening, so logoff can cut it short."""
        self._last_used = 0.0
        self._tls: ssl.SSLContext | None = None
        self._credentials = Credentials(support)
        self._lock = asyncio.Lock()
        self._idle: asyncio.TimerHandle | None = None
        self._idle_task: asyncio.Task[None] | None = None
        self._offline = False
        self._status = ""
        self._listening: tuple[asyncio.AbstractEventLoop, int] | None = None
        """(loop, socket) the loop reads while the connection is idle, to hear a hang-up."""
        self._hangup_task: asyncio.Task[None] | None = None

    # -- configuration and row -----------------------------------------------------------
    @property
    def settings(self) -> SmtpSettings:
        if self._settings is None:
            self._settings = SmtpSettings.from_config(self.support.config(), self.support)
        return self._settings

    def sender_override(self) -> Identity | None:
        return self.settings.sender

    def _ready_text(self) -> str:
        if self._offline:
            return f"Offline: {self.settings.where}"
        return f"Ready: {self.settings.where}"

    def status_props(self) -> dict[str, Any]:
        code = StatusCode.STATUS_AVAILABLE | StatusCode.STATUS_OUTBOUND_ENABLED
        if self._offline:
            code |= StatusCode.STATUS_OFFLINE
        return {
            PR_STATUS_CODE.name: int(code),
            PR_STATUS_STRING.name: self._status or self._ready_text(),
            PR_REMOTE_PROGRESS.name: REMOTE_PROGRESS_IDLE,
            PR_REMOTE_VALIDATE_OK.name: True,
        }

    def _show(self, text: str, *, code: bool = False) -> None:
        """Put `text` in PR_STATUS_STRING (only when it changed: a queue of a thousand sends
        must not publish a thousand events); `code` rewrites PR_STATUS_CODE too."""
        if text == self._status and not code:
            return
        self._status = text
        props = self.status_props() if code else {PR_STATUS_STRING.name: text}
        self.support.modify_status_row(props)

    # -- logon and logoff ----------------------------------------------------------------
    async def logon(self) -> None:
        """Check the configuration only: the server is first reached by a send."""
        self._settings = SmtpSettings.from_config(self.support.config(), self.support)
        self._status = self._ready_text()

    async def logoff(self) -> None:
        if self._lock.locked():
            # A worker thread is talking to the server; a silent server would hold it (and
            # so the daemon's stop) for the whole time-out. Cutting the socket ends it now;
            # the message it was sending stays queued.
            self._abort_wire()
        async with self._lock:
            await self._drop(show=False)  # the daemon removes my row
        for task in (self._idle_task, self._hangup_task):
            if task is not None:
                task.cancel()
        self._credentials.forget()

    # -- the connection ------------------------------------------------------------------
    def _abort_wire(self) -> None:
        """Shut down the sockets in use, which wakes a thread blocked on them (OSError)."""
        for conn in (self._conn, self._connecting):
            sock = getattr(conn, "sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    async def _drop(self, *, show: bool = True) -> None:
        """Close the connection (QUIT, then the socket). Call with the lock held. A row that
        says Connected says Ready again (`show` False: the caller writes the row itself)."""
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self._unlisten()
        conn, self._conn = self._conn, None
        if conn is not None:
            await self.support.run_blocking(quit_quietly, conn)
        if show and self._status.startswith(CONNECTED):
            self._show(self._ready_text())

    def _listen(self) -> None:
        """While the connection sits unused, let the loop read its socket: a server that
        hangs up (a 421, or just EOF) is heard at once, so the row never says Connected to
        a server that is gone. Never while a thread uses the connection."""
        self._unlisten()
        conn = self._conn
        sock = getattr(conn, "sock", None)
        if conn is None or sock is None or self._lock.locked():
            return
        loop = asyncio.get_running_loop()
        try:
            fd = sock.fileno()
            loop.add_reader(fd, self._on_hangup, conn)
        except (OSError, ValueError, NotImplementedError):
            return  # a loop that cannot: the idle close still comes
        self._listening = (loop, fd)

    def _unlisten(self) -> None:
        listening, self._listening = self._listening, None
        if listening is not None:
            loop, fd = listening
            with contextlib.suppress(OSError, ValueError, RuntimeError):
                loop.remove_reader(fd)

    def _on_hangup(self, conn: smtplib.SMTP) -> None:
        """The idle connection's socket is readable: an SMTP server says nothing unasked
        but its last words, so the connection is done."""
        self._unlisten()
        if self._lock.locked() or conn is not self._conn:
            return  # a send has it (it reads the socket itself), or it is gone already
        self._hangup_task = asyncio.get_running_loop().create_task(self._close_hung_up(conn))

    async def _close_hung_up(self, conn: smtplib.SMTP) -> None:
        async with self._lock:
            if conn is self._conn:
                await self._drop()

    def _touch(self) -> None:
        """The connection was just used: close it after IDLE_CLOSE_S more without use."""
        self._last_used = time.monotonic()
        if self._idle is not None:
            self._idle.cancel()
        if self._conn is not None:
            loop = asyncio.get_running_loop()
            self._idle = loop.call_later(IDLE_CLOSE_S, self._on_idle)
            self._listen()

    def _on_idle(self) -> None:
        self._idle = None
        self._idle_task = asyncio.get_running_loop().create_task(self._close_if_idle())

    async def _close_if_idle(self) -> None:
        async with self._lock:
            if self._conn is not None and time.monotonic() - self._last_used >= IDLE_CLOSE_S:
                await self._drop()

    async def _login(self) -> Login | None:
        """What AUTH needs for the next send; None without a username (no AUTH)."""
        s = self.settings
        if s.username is None:
            return None
        if not s.oauth2:
            return Login(s.username, password=await self._credentials.password(s.username))
        loop = asyncio.get_running_loop()
        where = s.where

        def fresh() -> str:
            """In the worker thread: a fresh token, from the command run on the loop."""
            self.support.logger.info(
                "%s rejected the access token of %s; running oauth2_token_command again",
                where,
                s.username,
            )
            future = asyncio.run_coroutine_threadsafe(self._credentials.token(refresh=True), loop)
            try:
                return future.result(FRESH_TOKEN_WAIT_S)
            except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
                future.cancel()
                raise TransportFailure(
                    "no access token: oauth2_token_command did not give a fresh one in time"
                ) from None

        return Login(s.username, token=await self._credentials.token(), fresh=fresh)

    def _connect(self, login: Login | None) -> smtplib.SMTP:
        """Open, secure and authenticate a connection (in a worker thread)."""
        s = self.settings
        if s.security != "none" and self._tls is None:
            self._tls = ServerNameContext.for_server(s.host, s.ca_file)
        conn = new_client(s, self._tls)
        self._connecting = conn  # so that _abort_wire can reach its socket meanwhile
        try:
            open_session(conn, s, self._tls, login)
        finally:
            self._connecting = None
        return conn

    def _usable(self, login: Login | None) -> tuple[smtplib.SMTP, bool]:
        """The open connection, checked with NOOP when idle a while, or a new one.
        Returns (connection, whether it is new)."""
        conn = self._conn
        if conn is not None and time.monotonic() - self._last_used > CHECK_AFTER_S:
            try:
                alive = conn.noop()[0] == 250
            except (smtplib.SMTPException, OSError):
                alive = False
            if not alive:
                close_quietly(conn)
                conn = self._conn = None
        if conn is not None:
            return conn, False
        self._conn = self._connect(login)
        return self._conn, True

    # -- sending -------------------------------------------------------------------------
    async def send(self, message: OutgoingMessage) -> SendResult:
        result = await self._sending(self._send_blocking, message)
        self._show(self._ready_text())
        return result

    async def send_batch(
        self, messages: Sequence[OutgoingMessage]
    ) -> Sequence[SendResult | TransportFailure]:
        """All of them over the one connection, in one trip to a worker thread (a trip
        costs about as much as a message's SMTP transaction on a loopback server)."""
        outcomes = await self._sending(self._send_batch_blocking, messages)
        if outcomes and isinstance(outcomes[-1], TransportFailure):
            self._failed(outcomes[-1])
        else:
            self._show(self._ready_text())
        return outcomes

    async def _sending(self, fn: Callable[[Any, Login | None], T], what: Any) -> T:
        """`fn(what, login)` in the worker thread under the connection lock; the row
        says why a send failed as a whole."""
        self._check_online()
        try:
            login = await self._login()
            return await self._locked_blocking(fn, what, login)
        except TransportFailure as failure:
            self._failed(failure)
            raise
        finally:
            self._touch()

    def _check_online(self) -> None:
        if self._offline:
            raise TransportFailure(
                "offline (validate_state FORCE_XP_DISCONNECT); FORCE_XP_CONNECT to send again"
            )

    def _failed(self, failure: TransportFailure) -> None:
        self._show(f"Send failed: {failure.message} ({self.settings.where})")
        if "authentication failed" in failure.message:
            self._credentials.forget()  # a fixed password_command is asked again next time

    async def _locked_blocking(self, fn: Callable[..., T], /, *args: Any) -> T:
        """Run `fn` in a worker thread under the connection lock. The lock goes when the
        thread ends, not when the caller gives up: after a time-out (the spooler's wait_for
        cancels the send) the thread still owns the connection until smtplib returns."""
        await self._lock.acquire()
        self._unlisten()  # the thread reads the socket now
        try:
            future = asyncio.ensure_future(self.support.run_blocking(fn, *args))
        except BaseException:
            self._lock.release()
            raise
        future.add_done_callback(self._thread_done)
        return await asyncio.shield(future)

    def _thread_done(self, future: asyncio.Future[Any]) -> None:
        """Free the connection; a result nobody waits for any more (the caller timed out or
        logoff cut the socket) is read here, so asyncio does not log it as lost."""
        self._lock.release()
        if not future.cancelled():
            future.exception()

    def _send_batch_blocking(
        self, messages: Sequence[OutgoingMessage], login: Login | None
    ) -> list[SendResult | TransportFailure]:
        outcomes: list[SendResult | TransportFailure] = []
        stop = time.monotonic() + BATCH_SLICE_S
        for message in messages:
            try:
                outcomes.append(self._send_blocking(message, login))
            except TransportFailure as failure:
                outcomes.append(failure)
                if not failure.permanent:
                    break  # the connection is gone or the server defers: the rest waits
            if time.monotonic() >= stop:
                break  # the rest comes in the next batch
        return outcomes

    def _send_blocking(self, message: OutgoingMessage, login: Login | None) -> SendResult:
        try:
            return self._transaction(message, login)
        except TransportFailure:
            raise
        except (smtplib.SMTPException, OSError, ValueError) as exc:
            raise self._broken(exc) from None

    def _transaction(self, message: OutgoingMessage, login: Login | None) -> SendResult:
        s = self.settings
        sender = envelope_sender(s.sender or message.sender, message.mime)
        recipients = unique_addresses([r.address.strip() for r in message.recipients])
        refused: dict[str, str] = {}
        bad = [a for a in recipients if not plausible(a)]
        for address in bad:
            refused[address] = "not a valid e-mail address (not sent)"
        recipients = [a for a in recipients if a not in refused]
        if not recipients:
            raise TransportFailure("no valid recipient: " + address_words(refused), permanent=True)
        body = BARE_LF.sub(b"\r\n", message.mime)

        conn, new = self._usable(login)
        options = mail_options(conn, sender, recipients, body)
        try:
            code, reply = conn.mail(sender, options)
        except smtplib.SMTPServerDisconnected:
            if new:
                raise
            close_quietly(conn)  # the server dropped the connection we kept: one more, at once
            self._conn = None
            conn, new = self._usable(login)
            code, reply = conn.mail(sender, options)
        if code != 250:
            self._reset(conn)
            raise reply_failure("MAIL FROM", code, reply, s)

        temporary: dict[str, str] = {}
        for address in recipients:
            code, reply = conn.rcpt(address, [])
            if code in (250, 251):
                continue
            words = f"{code} {reply_text(reply)}"
            (temporary if 400 <= code < 500 else refused)[address] = words
        if temporary:  # retry the whole message later rather than send it twice
            self._reset(conn)
            raise TransportFailure(f"recipient deferred: {address_words(temporary)}")
        if len(refused) == len(recipients) + len(bad):
            self._reset(conn)
            raise TransportFailure(
                f"every recipient refused: {address_words(refused)}", permanent=True
            )

        code, reply = conn.data(body)
        if code != 250:
            self._reset(conn)
            raise reply_failure("DATA", code, reply, s)
        return SendResult(refused=refused, response=f"{code} {reply_text(reply)}")

    def _broken(self, exc: BaseException) -> TransportFailure:
        """The connection is in an unknown state after `exc`: it goes, the next send opens
        a new one."""
        if self._conn is not None:
            close_quietly(self._conn)
            self._conn = None
        return failure_of(exc, self.settings)

    def _reset(self, conn: smtplib.SMTP) -> None:
        """RSET after a refusal keeps the connection for the next message; if that fails,
        the connection goes."""
        try:
            if conn.rset()[0] == 250:
                return
        except (smtplib.SMTPException, OSError):
            pass
        close_quietly(conn)
        self._conn = None

    # -- status object -------------------------------------------------------------------
    async def validate_state(self, flags: ValidateStateFlags) -> None:
        """FORCE_XP_CONNECT: go online and reach the server now; FORCE_XP_DISCONNECT: close
        and stay offline (sends wait in the queue); CONFIG_CHANGED: read the configuration
        again and tell the spooler (docs/mapi.md 5.2). SUPPRESS_UI changes nothing (no UI)."""
        if int(flags) & ~int(_KNOWN_FLAGS):
            raise MapiError(ErrorCode.MAPI_E_UNKNOWN_FLAGS, f"unknown flags {int(flags):#x}")
        if flags & _REMOTE_ONLY:
            raise MapiError(
                ErrorCode.MAPI_E_NO_SUPPORT,
                "smtp only sends: it keeps no header cache and has no session UI",
            )
        connect = bool(flags & ValidateStateFlags.FORCE_XP_CONNECT)
        disconnect = bool(flags & ValidateStateFlags.FORCE_XP_DISCONNECT)
        if connect and disconnect:
            raise MapiError(
                ErrorCode.MAPI_E_INVALID_PARAMETER,
                "FORCE_XP_CONNECT and FORCE_XP_DISCONNECT together",
            )
        async with self._lock:
            if flags & ValidateStateFlags.CONFIG_CHANGED or not (connect or disconnect):
                await self._reload_config(notify=bool(flags & ValidateStateFlags.CONFIG_CHANGED))
            if disconnect:
                await self._drop(show=False)
                self._offline = True
                self._show(self._ready_text(), code=True)
        if connect:
            self._offline = False
            await self._connect_now()

    async def _reload_config(self, *, notify: bool) -> None:
        try:
            settings = SmtpSettings.from_config(self.support.config(), self.support)
        except MapiError as exc:
            self._show(exc.message)
            raise
        if settings != self._settings or notify:
            await self._drop(show=False)
            self._settings, self._tls = settings, None
            self._credentials.forget()
        self._show(self._ready_text(), code=True)
        if notify:
            self.support.spooler_notify(SpoolerNotify.NOTIFY_CONFIG_CHANGE)

    async def _connect_now(self) -> None:
        """Connect (or check the open connection) and NOOP; the row says how it went."""
        try:
            login = await self._login()
            await self._locked_blocking(self._check_blocking, login)
        except TransportFailure as failure:
            self._show(f"Connect failed: {failure.message} ({self.settings.where})", code=True)
            raise MapiError(
                ErrorCode.MAPI_E_NETWORK_ERROR, f"{self.settings.where}: {failure.message}"
            ) from None
        finally:
            self._touch()
        self._show(f"{CONNECTED}{self.settings.where}", code=True)
        self.support.spooler_notify(SpoolerNotify.NOTIFY_READYTOSEND)

    def _check_blocking(self, login: Login | None) -> None:
        try:
            conn, _new = self._usable(login)
            code, reply = conn.noop()
            if code != 250:
                raise reply_failure("NOOP", code, reply, self.settings)
        except TransportFailure:
            raise
        except (smtplib.SMTPException, OSError, ValueError) as exc:
            raise self._broken(exc) from None
