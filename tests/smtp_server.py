"""A real SMTP server on loopback (aiosmtpd) for the tests, and the TLS material it needs.

Registered as a pytest plugin in conftest.py, so every test module may ask for the fixtures:

- `tls_ca`: a throwaway trustme CA (session-wide) with a server certificate for 127.0.0.1 and
  localhost; `tls_ca.ca_file` is the CA in PEM, for a service's `ca_file` key.
- `make_smtp_server(security=..., auth=..., oauth2=...)`: start a server ("none", "starttls"
  or "tls"; `auth=(user, password)` makes AUTH mandatory, `oauth2=OAuth2Account(...)` makes
  AUTH mandatory with OAUTHBEARER and/or XOAUTH2); stopped at the end of the test.
- `smtp_server`: one plain server without AUTH.

An `SmtpServer` records what it accepted (`messages`, `wait_for`), and has knobs set from the
test thread at any time: `refuse` recipients (550), answer MAIL or DATA with a chosen reply,
`stall` a command (for time-outs), `stop()` and `start()` on the same port.
`smtp_section(server, ...)` writes the profile section of an smtp service that sends there.

OAuth2 is aiosmtpd's documented `auth_MECHANISM` hook on the handler (`OAuth2Handler`): it
accepts the tokens in `OAuth2Account.tokens` (a knob), answers another token as Google and
RFC 7628 do (a 334 with an error JSON, then 535 once the client has answered it) and records
each attempt (`OAuth2Handler.attempts`). Real tokens run to a few kilobytes; the server takes
AUTH lines of RFC 4954's 12 288 octets, as real servers do.

aiosmtpd's AUTH rule: a failed check must return `AuthResult(success=False, handled=False)`,
or the server sends no reply at all and the client hangs.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

Security = Literal["none", "starttls", "tls"]
STALL_COMMANDS = frozenset({"MAIL", "RCPT", "DATA"})


@dataclass(frozen=True)
class Received:
    """One message the server accepted."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    """The message as an MTA stores it (Maildir): dot-stuffing undone, lines end in \\n."""
    login: str | None = None
    """The AUTH user of the connection it came on, if any."""
    peer: tuple[str, int] | None = None
    """The client's address and port: messages with the same peer came on one connection."""
    wire: bytes = b""
    """The DATA as it came over the wire (CRLF line ends), dot-stuffing undone."""


@dataclass
class TlsCa:
    """A throwaway CA and a certificate for 127.0.0.1 and localhost signed by it."""

    ca: trustme.CA
    cert: trustme.LeafCert
    ca_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.cert.configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


class RecordingHandler:
    """aiosmtpd handler: records accepted messages; the knobs shape its replies."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: list[Received] = []
        self.refused: dict[str, str] = {}
        """Recipient (lowercase) -> the RCPT reply that refuses it."""
        self.mail_reply: str | None = None
        self.data_reply: str | None = None
        self.stalls: dict[str, float] = {}
        """Command -> seconds it waits before answering (until `release` is set)."""
        self.release = threading.Event()
        self.connections = 0

    @property
    def messages(self) -> list[Received]:
        with self._lock:
            return list(self._messages)

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()

    async def _stall(self, command: str) -> None:
        seconds = self.stalls.get(command)
        if not seconds:
            return
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.release.is_set():
            await asyncio.sleep(0.02)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        await self._stall("MAIL")
        if self.mail_reply is not None:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        await self._stall("RCPT")
        refusal = self.refused.get(address.lower())
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await self._stall("DATA")
        if self.data_reply is not None:
            return self.data_reply
        content = envelope.original_content or envelope.content or b""
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogateescape")
        auth = session.auth_data  # (session.login_data warns: deprecated in aiosmtpd 1.4)
        login = auth.login if isinstance(auth, LoginPassword) else None
        wire = bytes(content)
        received = Received(
            envelope.mail_from or "",
            tuple(envelope.rcpt_tos),
            wire.replace(b"\r\n", b"\n"),
            login.decode() if isinstance(login, bytes) else login,
            tuple(session.peer[:2]) if isinstance(session.peer, tuple) else None,
            wire,
        )
        with self._lock:
            self._messages.append(received)
        return "250 2.0.0 Message accepted"


OAUTH2_MECHANISMS = ("OAUTHBEARER", "XOAUTH2")
AUTH_LINE_LIMIT = 12288
"""RFC 4954 4: a server takes AUTH command lines of at least this many octets."""


@dataclass
class OAuth2Account:
    """The account an OAuth2 server knows: its user, the tokens it accepts right now, the
    mechanisms it offers, and whether it hangs up after a rejected token."""

    user: str
    tokens: set[str] = field(default_factory=set)
    mechanisms: tuple[str, ...] = OAUTH2_MECHANISMS
    hang_up_on_reject: bool = False


@dataclass(frozen=True)
class AuthAttempt:
    """One OAuth2 AUTH the server heard."""

    mechanism: str
    user: str
    token: str
    fields: dict[str, str]
    """OAUTHBEARER's key-values (host, port, auth); XOAUTH2's (user, auth)."""
    accepted: bool
    answer: bytes | None = None
    """What the client sent back to the error challenge (None: not challenged)."""


def _b64(arg: str) -> bytes | None:
    try:
        return base64.b64decode(arg.encode(), validate=True)
    except ValueError:
        return None


class OAuth2Handler(RecordingHandler):
    """RecordingHandler with `auth_OAUTHBEARER` and `auth_XOAUTH2` (aiosmtpd's auth hooks)."""

    def __init__(self, account: OAuth2Account) -> None:
        super().__init__()
        self.account = account
        self.attempts: list[AuthAttempt] = []

    async def _initial(self, server: SMTP, args: list[str]) -> bytes | None:
        if len(args) > 1:
            blob = _b64(args[1])
            if blob is None:
                await server.push("501 5.5.2 Can't decode base64")
            return blob
        answer = await server.challenge_auth("")
        return None if answer is MISSING else bytes(answer)

    async def _check(
        self,
        server: SMTP,
        mechanism: str,
        user: str,
        fields: dict[str, str],
        error: dict[str, str],
    ) -> AuthResult:
        auth = fields.get("auth", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else ""
        accepted = user == self.account.user and token in self.account.tokens
        if accepted:
            self.attempts.append(AuthAttempt(mechanism, user, token, fields, True))
            return AuthResult(success=True, auth_data=LoginPassword(user.encode(), b""))
        answer = await server.challenge_auth(json.dumps(error))
        self.attempts.append(
            AuthAttempt(
                mechanism, user, token, fields, False, None if answer is MISSING else bytes(answer)
            )
        )
        if answer is MISSING:
            return AuthResult(success=False, handled=True)  # challenge_auth replied 501
        reply = "535 5.7.8 Username and Password not accepted"
        if self.account.hang_up_on_reject:
            await server.push(reply)
            if server.transport is not None:
                server.transport.close()
            return AuthResult(success=False, handled=True)
        return AuthResult(success=False, handled=False, message=reply)

    async def auth_OAUTHBEARER(self, server: SMTP, args: list[str]) -> AuthResult:
        blob = await self._initial(server, args)
        if blob is None:
            return AuthResult(success=False, handled=True)
        gs2, _, rest = blob.partition(b"\x01")
        parts = gs2.split(b",")
        user = ""
        if len(parts) >= 2 and parts[1].startswith(b"a="):
            user = parts[1][2:].decode().replace("=2C", ",").replace("=3D", "=")
        fields = dict(
            kv.decode().partition("=")[::2] for kv in rest.rstrip(b"\x01").split(b"\x01") if kv
        )
        error = {"status": "invalid_token", "scope": "https://mail.example.org/"}
        return await self._check(server, "OAUTHBEARER", user, fields, error)

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        blob = await self._initial(server, args)
        if blob is None:
            return AuthResult(success=False, handled=True)
        fields = dict(
            kv.decode().partition("=")[::2] for kv in blob.rstrip(b"\x01").split(b"\x01") if kv
        )
        error = {"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"}
        return await self._check(server, "XOAUTH2", fields.get("user", ""), fields, error)


class _LongAuthSMTP(SMTP):
    """aiosmtpd's SMTP taking AUTH lines as long as RFC 4954 says (real tokens are long)."""

    line_length_limit = AUTH_LINE_LIMIT + 2

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limits: collections.defaultdict[str, int] = collections.defaultdict(
            lambda: SMTP.command_size_limit
        )
        limits["AUTH"] = AUTH_LINE_LIMIT
        self.command_size_limits = limits


class _Controller(Controller):
    """A Controller that knows its live connections, so stop() can cut them."""

    def __init__(self, handler: RecordingHandler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.live: list[SMTP] = []

    def factory(self) -> SMTP:
        cls = _LongAuthSMTP if isinstance(self.handler, OAuth2Handler) else SMTP
        server = cls(self.handler, **self.SMTP_kwargs)
        self.live.append(server)
        return server


@dataclass
class SmtpServer:
    """A real aiosmtpd server on 127.0.0.1; see the module docstring for the knobs."""

    security: Security = "none"
    auth: tuple[str, str] | None = None
    tls: TlsCa | None = None
    host: str = "127.0.0.1"
    port: int = 0
    handler: RecordingHandler = field(default_factory=RecordingHandler)
    auth_attempts: int = 0
    oauth2: OAuth2Account | None = None
    _controller: _Controller | None = None

    def __post_init__(self) -> None:
        if self.oauth2 is not None and not isinstance(self.handler, OAuth2Handler):
            self.handler = OAuth2Handler(self.oauth2)

    @property
    def oauth2_attempts(self) -> list[AuthAttempt]:
        """The OAuth2 AUTHs heard so far (an OAuth2 server's)."""
        handler = self.handler
        return list(handler.attempts) if isinstance(handler, OAuth2Handler) else []

    # -- what it received ----------------------------------------------------------------
    @property
    def messages(self) -> list[Received]:
        return self.handler.messages

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """The messages, once there are at least `count` of them (polled, with a deadline)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.handler.messages
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the SMTP server got {len(found)} messages in {timeout} s, not {count}"
                )
            time.sleep(0.02)

    def open_connections(self) -> int:
        """Client connections open right now."""
        controller = self._controller
        if controller is None:
            return 0
        return sum(1 for server in controller.live if server.transport is not None)

    def wait_connections(self, count: int, timeout: float = 10.0) -> None:
        """Return once exactly `count` client connections are open (polled, with a deadline)."""
        deadline = time.monotonic() + timeout
        while self.open_connections() != count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.open_connections()} connections open after {timeout} s, not {count}"
                )
            time.sleep(0.02)

    # -- knobs ---------------------------------------------------------------------------
    def refuse(self, *addresses: str, reply: str = "550 5.1.1 No such user here") -> None:
        for address in addresses:
            self.handler.refused[address.lower()] = reply

    def accept_all(self) -> None:
        """Undo every knob: accept all recipients, answer 250, stall nothing."""
        self.handler.refused.clear()
        self.handler.mail_reply = None
        self.handler.data_reply = None
        self.handler.stalls.clear()
        self.handler.release.set()

    def answer_mail(self, reply: str | None) -> None:
        """Answer MAIL FROM with `reply` ("451 4.3.0 busy", "550 5.7.1 no"); None: 250."""
        self.handler.mail_reply = reply

    def answer_data(self, reply: str | None) -> None:
        """Answer the end of DATA with `reply` ("451 4.3.0 try later", "554 5.6.0 no")."""
        self.handler.data_reply = reply

    def stall(self, command: str = "DATA", seconds: float = 30.0) -> None:
        """Wait `seconds` before answering `command` (MAIL, RCPT or DATA)."""
        if command not in STALL_COMMANDS:
            raise ValueError(f"stall one of {sorted(STALL_COMMANDS)}")
        self.handler.release.clear()
        self.handler.stalls[command] = seconds

    # -- life ----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._controller is not None

    @property
    def ca_file(self) -> Path | None:
        return self.tls.ca_file if self.tls is not None else None

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        self.auth_attempts += 1
        wanted = self.auth
        if isinstance(data, LoginPassword) and wanted is not None:
            given = (data.login.decode(), data.password.decode())
            if given == wanted:
                return AuthResult(success=True, auth_data=data)
        return AuthResult(success=False, handled=False)  # handled=True: no reply, a hang

    def start(self) -> SmtpServer:
        if self._controller is not None:
            return self
        if self.port == 0:
            self.port = free_port(self.host)
        kwargs: dict[str, Any] = {"hostname": self.host, "port": self.port, "ready_timeout": 10}
        if self.security != "none":
            if self.tls is None:
                raise ValueError(f"security {self.security!r} needs a TlsCa")
            context = self.tls.server_context()
            if self.security == "tls":
                kwargs["ssl_context"] = context
            else:
                kwargs["tls_context"] = context
                kwargs["require_starttls"] = True
        if self.auth is not None or self.oauth2 is not None:
            kwargs["authenticator"] = self._authenticate
            kwargs["auth_required"] = True
            # aiosmtpd only sees TLS that came by STARTTLS; implicit TLS and plain need this
            kwargs["auth_require_tls"] = self.security == "starttls"
        if self.oauth2 is not None:
            offered = set(self.oauth2.mechanisms)
            every = {"PLAIN", "LOGIN", *OAUTH2_MECHANISMS}
            kwargs["auth_exclude_mechanism"] = sorted(every - offered)
        controller = _Controller(self.handler, **kwargs)
        deadline = time.monotonic() + 5
        while True:  # the port of a server just stopped may linger for a moment
            try:
                controller.start()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                controller = _Controller(self.handler, **kwargs)
                time.sleep(0.05)
        controller.live.clear()  # the Controller's own start-up probe is no client
        self._controller = controller
        return self

    def stop(self) -> None:
        """Go down: close the listener and cut every open connection."""
        controller = self._controller
        if controller is None:
            return
        self._controller = None
        self.handler.release.set()

        async def cut() -> None:
            for server in controller.live:
                transport = server.transport
                if isinstance(transport, asyncio.Transport):
                    transport.abort()
            await asyncio.sleep(0.01)

        with contextlib.suppress(Exception):  # a loop already gone has nothing to cut
            asyncio.run_coroutine_threadsafe(cut(), controller.loop).result(5)
        controller.stop()

    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def smtp_section(
    server: SmtpServer,
    *,
    key: str = "outgoing",
    security: Security | None = None,
    username: str | None = None,
    password_command: str | list[str] | None = None,
    oauth2_token_command: str | list[str] | None = None,
    ca_file: Path | str | None = None,
    timeout: float | None = 10,
    sender: str | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """The TOML of a `[services.<key>]` smtp section that sends to `server`.

    `security` defaults to the server's, `ca_file` to the server's CA when it has TLS;
    `sender` is the service's `from`. Append it to a profile's text (standard_profile()).
    """
    security = security or server.security
    if ca_file is None and security != "none":
        ca_file = server.ca_file
    values: dict[str, Any] = {
        "service": "smtp",
        "host": server.host,
        "port": server.port,
        "security": security,
    }
    if username is not None:
        values["username"] = username
    if password_command is not None:
        values["password_command"] = password_command
    if oauth2_token_command is not None:
        values["oauth2_token_command"] = oauth2_token_command
    if ca_file is not None:
        values["ca_file"] = str(ca_file)
    if timeout is not None:
        values["timeout"] = timeout
    if sender is not None:
        values["from"] = sender
    values.update(extra or {})
    lines = [f"\n[services.{key}]"]
    lines += [f"{name} = {_toml_value(value)}" for name, value in values.items()]
    return "\n".join(lines) + "\n"


def password_command_for(secret: str) -> list[str]:
    """A password_command that prints `secret` (no shell, no file)."""
    return ["printf", "%s\\n", secret]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def pytest_configure(config: pytest.Config) -> None:
    # AUTH on a plain loopback server is what the tests want; aiosmtpd warns about it.
    config.addinivalue_line(
        "filterwarnings", "ignore:Requiring AUTH while not requiring TLS:UserWarning"
    )


@pytest.fixture(scope="session")
def tls_ca(tmp_path_factory: pytest.TempPathFactory) -> TlsCa:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file = tmp_path_factory.mktemp("tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return TlsCa(ca, cert, ca_file)


@pytest.fixture
def make_smtp_server(tls_ca: TlsCa) -> Iterator[Any]:
    """`make_smtp_server(security="starttls", auth=("ada", "secret"))` -> a running server;
    `oauth2=OAuth2Account("ada@example.org", {"token"})` for one that takes OAuth2."""
    started: list[SmtpServer] = []

    def factory(
        security: Security = "none",
        auth: tuple[str, str] | None = None,
        oauth2: OAuth2Account | None = None,
    ) -> SmtpServer:
        server = SmtpServer(security=security, auth=auth, tls=tls_ca, oauth2=oauth2)
        started.append(server)
        return server.start()

    yield factory
    for server in started:
        server.stop()


@pytest.fixture
def smtp_server(make_smtp_server: Any) -> SmtpServer:
    """A plain SMTP server on loopback without AUTH."""
    server: SmtpServer = make_smtp_server()
    return server
