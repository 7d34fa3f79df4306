"""The `sendmail` transport provider: hands each message to the local sendmail program.

Every MTA ships one at /usr/sbin/sendmail (msmtp-mta, Postfix, Exim, OpenSMTPD), so this
transport sends through whatever the machine already uses: the MTA queues the message and
delivers it, or, for msmtp, relays it to the account's server at once.

The command line is the configured `command` and then `-oi -f SENDER -- RECIPIENT...`:

- the recipients are arguments, never `-t` (read from the header): the spooler hands over
  the message with its Bcc field removed and the recipients beside it, some of which may
  be another transport's or, on a retry, done already; `-t` would lose the Bcc
  recipients and send to the others twice. `--` ends the options, so no address can be
  read as one;
- `-oi`: a line holding a single dot does not end the message (classic sendmail reads
  such a line as the end of its input);
- `-f`: the envelope sender, the transport's `from` else the spooler's sender (the
  session's identity), so bounces go back to the account that sent.

The message goes to standard input with Unix line ends, as sendmail programs take it.
Nothing runs through a shell; the program runs on the loop's own subprocess support
(program.py) and never blocks it; its exit status decides the outcome (exits.py), and its
first 2 KB of output give the words of a failure. Message bodies are never logged.

The status row says "Ready: <program>" and, after a send that failed, "Send failed: <why>"
until one goes through. A program that is missing or not executable is a configuration
problem: logon fails with MAPI_E_UNCONFIGURED and the service's row says so; a program
that disappears later fails each send, temporarily, until it is back.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

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
from mapid.providers.sendmail.config import ADDRTYPE, SendmailSettings
from mapid.providers.sendmail.exits import failure_of, output_words
from mapid.providers.sendmail.program import run_program

__all__ = ["SendmailTransport", "command_line", "unix_lines"]

_ADDRESS = re.compile(r"[^@\s<>-][^@\s<>]*@[^@\s<>]+")
"""An address fit for a command line: one @, no spaces or brackets, no leading dash."""

_KNOWN_FLAGS = ValidateStateFlags(0)
for _flag in ValidateStateFlags:
    _KNOWN_FLAGS |= _flag
_REMOTE_ONLY = (
    ValidateStateFlags.REFRESH_XP_HEADER_CACHE
    | ValidateStateFlags.PROCESS_XP_HEADER_CACHE
    | ValidateStateFlags.ABORT_XP_HEADER_OPERATION
    | ValidateStateFlags.SHOW_XP_SESSION_UI
)


def unix_lines(mime: bytes) -> bytes:
    """The message with LF line ends, as a sendmail program reads its input."""
    return mime.replace(b"\r\n", b"\n")


def command_line(
    settings: SendmailSettings, sender: str | None, recipients: list[str]
) -> list[str]:
    """The program's arguments: the configured command, then -oi -f SENDER -- RECIPIENTS."""
    argv = [*settings.command, "-oi"]
    if sender is not None:
        argv += ["-f", sender]
    return [*argv, "--", *recipients]


class SendmailTransport(TransportProvider):
    """Sends the spooler's messages through the machine's sendmail program."""

    name = "sendmail"
    display = "mapid sendmail"
    address_types: ClassVar[tuple[str, ...]] = (ADDRTYPE,)
    resource_methods = (
        ResourceMethods.STATUS_VALIDATE_STATE
        | ResourceMethods.STATUS_FLUSH_QUEUES
        | ResourceMethods.STATUS_SETTINGS_DIALOG
    )

    def __init__(self, support: ProviderSupport) -> None:
        super().__init__(support)
        self._settings: SendmailSettings | None = None
        self._status = ""
        self._offline = False

    # -- configuration and row -----------------------------------------------------------
    @property
    def settings(self) -> SendmailSettings:
        if self._settings is None:
            self._settings = SendmailSettings.from_config(self.support.config())
        return self._settings

    def sender_override(self) -> Identity | None:
        return self.settings.sender

    def _ready_text(self) -> str:
        return f"{'Offline' if self._offline else 'Ready'}: {self.settings.program}"

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
        """Put `text` in PR_STATUS_STRING, only when it changed (a queue of a thousand sends
        must not publish a thousand row events); `code` rewrites PR_STATUS_CODE too."""
        if text == self._status and not code:
            return
        self._status = text
        props = self.status_props() if code else {PR_STATUS_STRING.name: text}
        self.support.modify_status_row(props)

    # -- logon ---------------------------------------------------------------------------
    async def logon(self) -> None:
        """Check the configuration, the program's path included; nothing runs yet."""
        self._settings = SendmailSettings.from_config(self.support.config())
        self._status = self._ready_text()

    # -- sending -------------------------------------------------------------------------
    async def send(self, message: OutgoingMessage) -> SendResult:
        try:
            result = await self._hand_over(message)
        except TransportFailure as failure:
            self._show(f"Send failed: {failure.message}")
            raise
        self._show(self._ready_text())
        return result

    async def _hand_over(self, message: OutgoingMessage) -> SendResult:
        s = self.settings
        if self._offline:
            raise TransportFailure("offline (validate_state FORCE_XP_DISCONNECT)")
        recipients, refused = self._recipients(message)
        argv = command_line(s, self._sender(message), recipients)
        try:
            finished = await run_program(argv, unix_lines(message.mime), s.timeout)
        except TimeoutError:
            raise TransportFailure(
                f"{s.program} did not finish within {s.timeout:g} s (killed)"
            ) from None
        except OSError as exc:
            raise TransportFailure(f"cannot run {s.program}: {exc.strerror or exc}") from None
        said = output_words(finished.output, finished.truncated)
        if finished.status != 0:
            raise failure_of(str(s.program), finished.status, said)
        return SendResult(refused=refused, response=said or f"{s.program} took it")

    def _sender(self, message: OutgoingMessage) -> str | None:
        """The envelope sender: my `from`, else the spooler's; None lets the program choose
        (the user the daemon runs as)."""
        identity = self.settings.sender or message.sender
        if identity is not None and _ADDRESS.fullmatch(identity.email):
            return identity.email
        return None

    @staticmethod
    def _recipients(message: OutgoingMessage) -> tuple[list[str], dict[str, str]]:
        """The addresses to pass, each once, and those refused before the program runs."""
        seen: set[str] = set()
        good: list[str] = []
        refused: dict[str, str] = {}
        for recipient in message.recipients:
            address = recipient.address.strip()
            if address.casefold() in seen:
                continue
            seen.add(address.casefold())
            if _ADDRESS.fullmatch(address):
                good.append(address)
            else:
                refused[address] = "not a valid e-mail address (not sent)"
        if not good:
            words = "; ".join(f"{a}: {why}" for a, why in refused.items())
            raise TransportFailure(f"no valid recipient: {words}", permanent=True)
        return good, refused

    # -- status object -------------------------------------------------------------------
    async def validate_state(self, flags: ValidateStateFlags) -> None:
        """FORCE_XP_DISCONNECT: stay offline (sends wait in the queue); FORCE_XP_CONNECT: go
        online, check the program and have the spooler send now; CONFIG_CHANGED: read the
        configuration again and tell the spooler. SUPPRESS_UI changes nothing."""
        if int(flags) & ~int(_KNOWN_FLAGS):
            raise MapiError(ErrorCode.MAPI_E_UNKNOWN_FLAGS, f"unknown flags {int(flags):#x}")
        if flags & _REMOTE_ONLY:
            raise MapiError(
                ErrorCode.MAPI_E_NO_SUPPORT,
                "sendmail only sends: it keeps no header cache and has no session UI",
            )
        connect = bool(flags & ValidateStateFlags.FORCE_XP_CONNECT)
        disconnect = bool(flags & ValidateStateFlags.FORCE_XP_DISCONNECT)
        if connect and disconnect:
            raise MapiError(
                ErrorCode.MAPI_E_INVALID_PARAMETER,
                "FORCE_XP_CONNECT and FORCE_XP_DISCONNECT together",
            )
        if disconnect:
            self._offline = True
            self._show(self._ready_text(), code=True)
            return
        try:
            self._settings = SendmailSettings.from_config(self.support.config())
        except MapiError as exc:
            self._show(exc.message)
            raise
        self._offline = self._offline and not connect
        self._show(self._ready_text(), code=True)
        if flags & ValidateStateFlags.CONFIG_CHANGED:
            self.support.spooler_notify(SpoolerNotify.NOTIFY_CONFIG_CHANGE)
        if connect:
            self.support.spooler_notify(SpoolerNotify.NOTIFY_READYTOSEND)
