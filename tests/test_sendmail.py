"""The sendmail transport with real sendmail-compatible programs: provider-level, then in
the daemon.

Two programs play the machine's MTA:

- `FakeSendmail`, a script each test writes into its own directory: it records its
  arguments and its input, then ends as its knobs say (an exit status, words on stderr, a
  hang, a child left behind). The MTA's side of the contract, each outcome on demand.
- msmtp (Debian's package), the sendmail of many desktops, relaying to the loopback
  aiosmtpd server of tests/smtp_server.py: a real program's command line, exit statuses and
  words. Those tests skip where msmtp is not installed.

docs/providers.md builds this transport step by step and quotes the tests marked there.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mapid.client import Client
from mapid.constants import ResourceType, SpoolerNotify, StatusCode, ValidateStateFlags
from mapid.daemon.config.profiles import provider_uid
from mapid.errors import ErrorCode, MapiError
from mapid.providers.base import (
    Identity,
    OutgoingMessage,
    Recipient,
    SendResult,
    TransportFailure,
)
from mapid.providers.sendmail import SendmailService, SendmailTransport
from mapid.providers.sendmail.exits import EXIT_STATUSES, OUTPUT_LIMIT, failure_of

from conftest import DaemonFactory, DaemonProc, standard_profile
from provider_support import Support
from smtp_server import SmtpServer, smtp_section

T = TypeVar("T")
MakeServer = Callable[..., SmtpServer]
MSMTP = shutil.which("msmtp")

SCRIPT = '''#!@PYTHON@
"""A sendmail for the tests: records its arguments and input, then ends as knobs.json says."""
import json, os, pathlib, subprocess, sys, time

here = pathlib.Path(__file__).resolve().parent
calls = here / "calls"
calls.mkdir(exist_ok=True)
n = len(list(calls.glob("*.json")))
(calls / f"{n}.eml").write_bytes(sys.stdin.buffer.read())
(calls / f"{n}.tmp").write_text(json.dumps({"argv": sys.argv[1:], "pid": os.getpid()}))
(calls / f"{n}.tmp").rename(calls / f"{n}.json")
knobs_file = here / "knobs.json"
knobs = json.loads(knobs_file.read_text()) if knobs_file.exists() else {}
if knobs.get("child"):  # a child that keeps our stdout and stderr open
    child = subprocess.Popen(["sleep", "30"])
    (here / "child.pid").write_text(str(child.pid))
sys.stderr.write(knobs.get("say", ""))
sys.stderr.flush()
if knobs.get("hang"):
    time.sleep(60)
sys.exit(knobs.get("exit", 0))
'''


@dataclass(frozen=True)
class Call:
    """One run of the fake sendmail: its arguments and what it read."""

    argv: list[str]
    stdin: bytes
    pid: int


@dataclass
class FakeSendmail:
    """A sendmail-compatible program in `folder`: records each call, answers as told."""

    folder: Path
    path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "sendmail"
        self.path.write_text(SCRIPT.replace("@PYTHON@", sys.executable))
        self.path.chmod(0o755)

    def answer(self, status: int = 0, say: str = "", **knobs: Any) -> None:
        """End the next calls with exit `status`, writing `say` to stderr (`hang=True`,
        `child=True`: see the script)."""
        (self.folder / "knobs.json").write_text(json.dumps({"exit": status, "say": say, **knobs}))

    def calls(self) -> list[Call]:
        found = []
        calls = self.folder / "calls"
        for n in range(len(list(calls.glob("*.json"))) if calls.exists() else 0):
            record = json.loads((calls / f"{n}.json").read_text())
            found.append(Call(record["argv"], (calls / f"{n}.eml").read_bytes(), record["pid"]))
        return found

    def wait_calls(self, count: int, timeout: float = 10.0) -> list[Call]:
        def enough() -> list[Call] | None:
            found = self.calls()
            return found if len(found) >= count else None

        return wait_for(f"{count} calls of {self.path}", enough, timeout)


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 10.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def gone(pid: int) -> bool:
    """Whether process `pid` has ended (a zombie counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def parse(mime: bytes) -> EmailMessage:
    message = email.message_from_bytes(mime, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


@pytest.fixture
def fake(tmp_path: Path) -> FakeSendmail:
    return FakeSendmail(tmp_path / "bin")


# -- provider level ------------------------------------------------------------------------

MIME = (
    b"From: Ada Lovelace <ada@example.org>\r\n"
    b"To: Grace Hopper <grace@example.org>\r\n"
    b"Cc: carol@example.org\r\n"
    b"Subject: Engines\r\n"
    b"\r\n"
    b"The engine weaves algebraic patterns.\r\n"
    b".\r\n"
    b"A line of one dot, above, does not end the message.\r\n"
)
ADA = Identity("Ada Lovelace", "ada@example.org")


def message(*addresses: str, sender: Identity | None = ADA) -> OutgoingMessage:
    recipients = addresses or ("grace@example.org", "carol@example.org", "bob@example.org")
    return OutgoingMessage(
        entryid=b"\x01" * 20,
        mime=MIME,
        recipients=tuple(Recipient(a, a.split("@")[0].title()) for a in recipients),
        sender=sender,
    )


def run(
    tmp_path: Path,
    config: dict[str, Any],
    body: Callable[[SendmailTransport, Support], Awaitable[T]],
) -> T:
    """Log a transport on and run `body` with it, in one event loop."""

    async def main() -> T:
        support = Support(config, tmp_path)
        transport = SendmailTransport(support)
        await transport.logon()
        support.modify_status_row(transport.status_props())
        try:
            return await body(transport, support)
        finally:
            await transport.logoff()

    return asyncio.run(main())


def send(tmp_path: Path, config: dict[str, Any], outgoing: OutgoingMessage) -> SendResult:
    async def body(transport: SendmailTransport, _support: Support) -> SendResult:
        return await transport.send(outgoing)

    return run(tmp_path, config, body)


def send_failure(tmp_path: Path, config: dict[str, Any]) -> tuple[TransportFailure, str]:
    """The failure of one send, and the row's PR_STATUS_STRING after it."""

    async def body(transport: SendmailTransport, support: Support) -> tuple[Any, str]:
        with pytest.raises(TransportFailure) as caught:
            await transport.send(message())
        return caught.value, support.row["PR_STATUS_STRING"]

    return run(tmp_path, config, body)


def test_recipients_are_arguments_and_the_message_goes_to_stdin(
    tmp_path: Path, fake: FakeSendmail
) -> None:
    result = send(tmp_path, {"command": [str(fake.path)]}, message())
    [call] = fake.calls()
    assert call.argv == [
        "-oi",
        "-f",
        "ada@example.org",
        "--",
        "grace@example.org",
        "carol@example.org",
        "bob@example.org",
    ]
    assert call.stdin == MIME.replace(b"\r\n", b"\n")  # Unix line ends, nothing else changed
    assert result == SendResult(refused={}, response=f"{fake.path} took it")


def test_options_of_your_own_come_first_and_from_is_the_envelope_sender(
    tmp_path: Path, fake: FakeSendmail
) -> None:
    config = {"command": [str(fake.path), "-a", "work"], "from": "Ada <ada@work.example>"}
    send(tmp_path, config, message("grace@example.org"))
    assert fake.calls()[0].argv == [
        "-a",
        "work",
        "-oi",
        "-f",
        "ada@work.example",
        "--",
        "grace@example.org",
    ]


def test_bad_addresses_are_refused_before_the_program_runs(
    tmp_path: Path, fake: FakeSendmail
) -> None:
    outgoing = message("-oQ/tmp/evil@example.org", "grace@example.org", "GRACE@example.org", "x y")
    result = send(tmp_path, {"command": [str(fake.path)]}, outgoing)
    assert fake.calls()[0].argv[-2:] == ["--", "grace@example.org"]  # each address once
    assert set(result.refused) == {"-oQ/tmp/evil@example.org", "x y"}

    with pytest.raises(TransportFailure) as caught:
        send(tmp_path, {"command": [str(fake.path)]}, message("nobody"))
    assert caught.value.permanent and "no valid recipient" in caught.value.message
    assert len(fake.calls()) == 1


def test_no_sender_lets_the_program_choose(tmp_path: Path, fake: FakeSendmail) -> None:
    send(tmp_path, {"command": [str(fake.path)]}, message("grace@example.org", sender=None))
    assert fake.calls()[0].argv == ["-oi", "--", "grace@example.org"]


def test_the_row_says_ready_then_why_a_send_failed_then_ready_again(
    tmp_path: Path, fake: FakeSendmail
) -> None:
    async def body(transport: SendmailTransport, support: Support) -> None:
        row = support.row
        assert row["PR_STATUS_STRING"] == f"Ready: {fake.path}"
        code = StatusCode(row["PR_STATUS_CODE"])
        assert code == StatusCode.STATUS_AVAILABLE | StatusCode.STATUS_OUTBOUND_ENABLED
        fake.answer(75, "queue directory full\n")
        with pytest.raises(TransportFailure):
            await transport.send(message())
        assert support.row["PR_STATUS_STRING"] == (
            f"Send failed: {fake.path} exited with status 75 "
            "(EX_TEMPFAIL: temporary failure, 4.3.0): queue directory full"
        )
        fake.answer(0)
        changes = len(support.rows)
        await transport.send(message())
        await transport.send(message())
        assert support.row["PR_STATUS_STRING"] == f"Ready: {fake.path}"
        assert len(support.rows) == changes + 1  # only when the words change

    run(tmp_path, {"command": [str(fake.path)]}, body)


@pytest.mark.parametrize(
    ("status", "said", "permanent", "words"),
    [
        (75, "", False, "(EX_TEMPFAIL: temporary failure, 4.3.0)"),
        (71, "", False, "EX_OSERR"),
        (74, "", False, "EX_IOERR"),
        (78, "msmtp: account default not found", False, "account default not found"),
        (68, "msmtp: cannot locate host smtp.example.org", False, "EX_NOHOST"),
        (69, "msmtp: cannot connect", False, "EX_UNAVAILABLE"),
        (67, "", True, "(EX_NOUSER: user unknown, 5.1.1)"),
        (65, "", True, "EX_DATAERR"),
        (64, "sendmail: illegal option -- q", True, "EX_USAGE"),
        (70, "", True, "EX_SOFTWARE"),
        (1, "something broke", True, "exited with status 1: something broke"),
        # msmtp exits 69 for a 451 and a 554 alike: the server's reply it quotes decides.
        (69, "msmtp: server message: 554 5.6.0 content refused", True, "554 5.6.0"),
        (69, "msmtp: server message: 451 4.3.0 try again later", False, "451 4.3.0"),
        (69, "msmtp: cannot connect to 127.0.0.1, port 451: 5.1.1 reasons", False, "port"),
        # A 4xx makes any failure temporary; a 5xx decides only where the status does not.
        (65, "msmtp: server message: 451 4.7.1 greylisted", False, "451 4.7.1"),
        (1, "ssmtp: 550 5.7.1 relaying denied", True, "550 5.7.1"),
        (1, "ssmtp: 421 4.3.2 shutting down", False, "421 4.3.2"),
        (77, "msmtp: server message: 535 5.7.8 credentials invalid", False, "EX_NOPERM"),
        (65, "msmtp: server message: 550 5.1.1 No such user here", True, "550 5.1.1"),
    ],
)
def test_exit_statuses_are_temporary_or_permanent(
    status: int, said: str, permanent: bool, words: str
) -> None:
    failure = failure_of("/usr/sbin/sendmail", status, said)
    assert failure.permanent is permanent
    assert words in failure.message


def test_every_sysexits_code_has_a_reading() -> None:
    assert sorted(EXIT_STATUSES) == list(range(64, 79))
    temporary = {code for code, known in EXIT_STATUSES.items() if not known.permanent}
    assert temporary == {68, 69, 71, 72, 73, 74, 75, 76, 77, 78}


def test_a_permanent_failure_through_the_program(tmp_path: Path, fake: FakeSendmail) -> None:
    fake.answer(67, "grace@example.org... User unknown\n")
    failure, row = send_failure(tmp_path, {"command": [str(fake.path)]})
    assert failure.permanent
    assert failure.message == (
        f"{fake.path} exited with status 67 (EX_NOUSER: user unknown, 5.1.1): "
        "grace@example.org... User unknown"
    )
    assert row == f"Send failed: {failure.message}"


def test_the_output_kept_is_bounded(tmp_path: Path, fake: FakeSendmail) -> None:
    fake.answer(75, "x" * 100 + "\n" + "y" * 200_000)
    failure, _row = send_failure(tmp_path, {"command": [str(fake.path)]})
    assert failure.message.endswith(" [...]")
    assert len(failure.message) < OUTPUT_LIMIT + 200
    assert "x" * 100 + "; yyy" in failure.message


def test_a_program_past_its_time_is_killed_with_its_children(
    tmp_path: Path, fake: FakeSendmail
) -> None:
    fake.answer(0, hang=True, child=True)
    failure, row = send_failure(tmp_path, {"command": [str(fake.path)], "timeout": 2})
    assert not failure.permanent
    assert failure.message == f"{fake.path} did not finish within 2 s (killed)"
    assert row == f"Send failed: {failure.message}"
    child = int((fake.folder / "child.pid").read_text())
    wait_for("the program and its child gone", lambda: gone(fake.calls()[0].pid) and gone(child))


def test_a_child_left_behind_does_not_hold_the_send(tmp_path: Path, fake: FakeSendmail) -> None:
    """Exim's -odb delivers in a background child that keeps the output pipe open: the
    send ends with the program, not with that child."""
    fake.answer(0, "queued\n", child=True)
    result = send(tmp_path, {"command": [str(fake.path)]}, message())
    assert result.response == "queued"
    child = int((fake.folder / "child.pid").read_text())
    assert not gone(child)  # still delivering, and not ours to stop
    os.kill(child, signal.SIGKILL)


def test_a_cancelled_send_kills_the_program(tmp_path: Path, fake: FakeSendmail) -> None:
    """The spooler gives up on a send after its provider_timeout: the program goes too."""
    fake.answer(0, hang=True)

    async def body(transport: SendmailTransport, _support: Support) -> None:
        task = asyncio.ensure_future(transport.send(message()))
        await asyncio.to_thread(fake.wait_calls, 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(tmp_path, {"command": [str(fake.path)]}, body)
    wait_for("the program gone", lambda: gone(fake.calls()[0].pid))


def test_configuration_problems(tmp_path: Path, fake: FakeSendmail) -> None:
    def keys(config: dict[str, Any]) -> dict[str, str]:
        return {p.key: p.message for p in SendmailService.check_config(config)}

    assert keys({"command": [str(fake.path)], "from": "Ada <ada@example.org>"}) == {}
    assert "is not an absolute path" in keys({"command": ["sendmail"]})["command"]
    missing = keys({"command": [str(tmp_path / "nowhere" / "sendmail")]})["command"]
    assert missing.endswith(
        "does not exist (install a sendmail-compatible program: "
        "msmtp-mta, postfix or exim4; or name yours)"
    )
    plain = tmp_path / "plain"
    plain.write_text("")
    assert "is not an executable file" in keys({"command": [str(plain)]})["command"]
    assert "leave out -t" in keys({"command": [str(fake.path), "-oi", "-t"]})["command"]
    assert set(keys({"command": [], "timeout": 0, "from": "x", "port": 25})) == {
        "command",
        "timeout",
        "from",
        "(config)",
    }
    if not Path("/usr/sbin/sendmail").exists():  # the default command, where it is missing
        assert "/usr/sbin/sendmail does not exist" in keys({})["command"]

    async def logon() -> None:
        await SendmailTransport(Support({"command": ["/nowhere/sendmail"]}, tmp_path)).logon()

    with pytest.raises(MapiError) as caught:
        asyncio.run(logon())
    assert caught.value.code == ErrorCode.MAPI_E_UNCONFIGURED
    assert "command: /nowhere/sendmail does not exist" in caught.value.message
    assert caught.value.details["errors"][0]["key"] == "command"


def test_a_program_gone_after_logon_is_a_temporary_failure(
    tmp_path: Path, fake: FakeSendmail
) -> None:
    async def body(transport: SendmailTransport, support: Support) -> TransportFailure:
        fake.path.unlink()
        with pytest.raises(TransportFailure) as caught:
            await transport.send(message())
        return caught.value

    failure = run(tmp_path, {"command": [str(fake.path)]}, body)
    assert not failure.permanent
    assert failure.message == f"cannot run {fake.path}: No such file or directory"


def test_validate_state(tmp_path: Path, fake: FakeSendmail) -> None:
    config: dict[str, Any] = {"command": [str(fake.path)]}

    async def body(transport: SendmailTransport, support: Support) -> None:
        await transport.validate_state(ValidateStateFlags.FORCE_XP_DISCONNECT)
        assert support.row["PR_STATUS_CODE"] & StatusCode.STATUS_OFFLINE
        assert support.row["PR_STATUS_STRING"] == f"Offline: {fake.path}"
        with pytest.raises(TransportFailure) as offline:
            await transport.send(message())
        assert not offline.value.permanent and fake.calls() == []

        await transport.validate_state(ValidateStateFlags.FORCE_XP_CONNECT)
        assert not support.row["PR_STATUS_CODE"] & StatusCode.STATUS_OFFLINE
        assert support.row["PR_STATUS_STRING"] == f"Ready: {fake.path}"
        assert support.spooler == [SpoolerNotify.NOTIFY_READYTOSEND]  # send the queue now
        await transport.send(message())

        config["from"] = "ada@work.example"
        await transport.validate_state(ValidateStateFlags.CONFIG_CHANGED)
        assert transport.sender_addresses() == ("ada@work.example",)
        assert support.spooler[-1] == SpoolerNotify.NOTIFY_CONFIG_CHANGE

        config["command"] = ["/nowhere/sendmail"]
        with pytest.raises(MapiError) as bad:
            await transport.validate_state(ValidateStateFlags.CONFIG_CHANGED)
        assert bad.value.code == ErrorCode.MAPI_E_UNCONFIGURED
        assert "/nowhere/sendmail does not exist" in support.row["PR_STATUS_STRING"]

        for flags, code in [
            (0x40000000, ErrorCode.MAPI_E_UNKNOWN_FLAGS),
            (ValidateStateFlags.REFRESH_XP_HEADER_CACHE, ErrorCode.MAPI_E_NO_SUPPORT),
            (
                ValidateStateFlags.FORCE_XP_CONNECT | ValidateStateFlags.FORCE_XP_DISCONNECT,
                ErrorCode.MAPI_E_INVALID_PARAMETER,
            ),
        ]:
            with pytest.raises(MapiError) as refused:
                await transport.validate_state(ValidateStateFlags(flags))
            assert refused.value.code == code

    run(tmp_path, config, body)


# -- in the daemon ---------------------------------------------------------------------------

GRACE = {
    "PR_EMAIL_ADDRESS": "grace@example.org",
    "PR_DISPLAY_NAME": "Grace Hopper",
    "PR_ADDRTYPE": "SMTP",
    "PR_RECIPIENT_TYPE": 1,
}


def sendmail_section(command: list[str], *, key: str = "outgoing", **values: Any) -> str:
    """The TOML of a `[services.<key>]` sendmail section (values by key: from_="...")."""
    lines = [f"\n[services.{key}]", 'service = "sendmail"', f"command = {json.dumps(command)}"]
    lines += [f"{name.rstrip('_')} = {json.dumps(value)}" for name, value in values.items()]
    return "\n".join(lines) + "\n"


@dataclass
class Mail:
    """One logged-on member with its default store open for writing."""

    client: Client
    token: bytes
    store: int = 0
    store_props: dict[str, Any] = field(default_factory=dict)
    folders: dict[str, int] = field(default_factory=dict)

    @classmethod
    def logon(cls, daemon: DaemonProc) -> Mail:
        client = daemon.client()
        mail = cls(client, client.session_logon("alpha", ["MAPI_NEW_SESSION"])["token"])
        stores = client.session_msg_stores_table(mail.token)["rows"]
        default = next(r for r in stores if r.get("PR_DEFAULT_STORE"))
        opened = client.session_open_msg_store(mail.token, default["PR_ENTRYID"], ["MDB_WRITE"])
        mail.store, mail.store_props = opened["handle"], opened["props"]
        return mail

    def folder(self, name: str) -> int:
        if name not in self.folders:
            c, t = self.client, self.token
            subtree = c.container_open_entry(
                t, self.store, self.store_props["PR_IPM_SUBTREE_ENTRYID"]
            )
            rows = c.container_hierarchy_table(t, subtree["handle"])["rows"]
            entry = next(r["PR_ENTRYID"] for r in rows if r["PR_DISPLAY_NAME"] == name)
            self.folders[name] = c.container_open_entry(t, self.store, entry)["handle"]
        return self.folders[name]

    def contents(self, name: str) -> list[dict[str, Any]]:
        columns = ["PR_ENTRYID", "PR_SUBJECT", "PR_MESSAGE_CLASS"]
        table = {"columns": columns}
        rows: list[dict[str, Any]] = self.client.container_contents_table(
            self.token, self.folder(name), table
        )["rows"]
        return rows

    def subjects(self, name: str) -> list[str]:
        return [str(r["PR_SUBJECT"]) for r in self.contents(name)]

    def mime_of(self, name: str, entryid: bytes) -> bytes:
        handle = self.client.container_open_entry(self.token, self.folder(name), entryid)
        mime: bytes = self.client.message_get_mime(self.token, handle["handle"])["mime"]
        return mime

    def send(self, subject: str, *recipients: dict[str, Any], **props: Any) -> None:
        """Compose in Drafts and submit (two requests); `props` are more properties."""
        created = self.client.folder_create_message(
            self.token,
            self.folder("Drafts"),
            {"PR_SUBJECT": subject, "PR_BODY": f"{subject}\n", **props},
            list(recipients) or [GRACE],
        )
        self.client.message_submit(self.token, created["handle"], release=True)

    def row(self, kind: ResourceType) -> dict[str, Any]:
        rows = self.client.session_status_table(self.token)["rows"]
        row: dict[str, Any] = next(r for r in rows if r["PR_RESOURCE_TYPE"] == int(kind))
        return row

    def spooler_says(self) -> str:
        return str(self.row(ResourceType.MAPI_SPOOLER).get("PR_STATUS_STRING", ""))

    def spooler(self, method: str, flags: list[str]) -> None:
        """status.flush_queues or status.validate_state on the spooler's row (synchronous)."""
        entry = self.row(ResourceType.MAPI_SPOOLER)["PR_ENTRYID"]
        handle = self.client.session_open_entry(self.token, entry)["handle"]
        getattr(self.client, f"status_{method}")(self.token, handle, flags)

    def report(self) -> EmailMessage:
        """The one non-delivery report in the Inbox."""
        [row] = wait_for("a report in the Inbox", lambda: self.contents("Inbox"))
        assert row["PR_MESSAGE_CLASS"] == "REPORT.IPM.Note.NDR"
        return parse(self.mime_of("Inbox", row["PR_ENTRYID"]))


def statuses(report: EmailMessage) -> dict[str, str]:
    """Final-Recipient -> Status of a delivery status notification."""
    _text, status, _original = list(report.iter_parts())
    blocks = status.get_payload()
    assert isinstance(blocks, list)
    return {str(b["Final-Recipient"]): str(b["Status"]) for b in blocks if b["Final-Recipient"]}


@pytest.fixture
def mail_daemon(make_daemon: DaemonFactory, tmp_path: Path, fake: FakeSendmail) -> DaemonProc:
    profile = standard_profile(tmp_path / "alpha") + sendmail_section([str(fake.path)])
    return make_daemon(profiles={"alpha": profile})


def test_daemon_submit_hands_the_message_over_and_files_it(
    mail_daemon: DaemonProc, fake: FakeSendmail
) -> None:
    mail = Mail.logon(mail_daemon)
    transport = mail.row(ResourceType.MAPI_TRANSPORT_PROVIDER)
    assert transport["PR_PROVIDER_DLL_NAME"] == "sendmail"
    assert transport["PR_STATUS_STRING"] == f"Ready: {fake.path}"
    carol = {**GRACE, "PR_EMAIL_ADDRESS": "carol@example.org", "PR_RECIPIENT_TYPE": 2}
    bob = {**GRACE, "PR_EMAIL_ADDRESS": "bob@example.org", "PR_RECIPIENT_TYPE": 3}
    mail.send("Engines", GRACE, carol, bob)

    [call] = fake.wait_calls(1)
    assert call.argv[:4] == ["-oi", "-f", "ada@example.org", "--"]  # the session's identity
    assert sorted(call.argv[4:]) == ["bob@example.org", "carol@example.org", "grace@example.org"]
    sent = parse(call.stdin)
    assert "Bcc" not in sent and b"bob@example.org" not in call.stdin  # blind, as it should be
    assert sent["From"].addresses[0].addr_spec == "ada@example.org"
    assert sent["Subject"] == "Engines" and sent["Message-ID"]
    assert b"\r\n" not in call.stdin

    wait_for("Sent Items", lambda: mail.subjects("Sent Items") == ["Engines"])
    assert mail.subjects("Outbox") == []
    [row] = mail.contents("Sent Items")
    filed = parse(mail.mime_of("Sent Items", row["PR_ENTRYID"]))
    assert [a.addr_spec for a in filed["Bcc"].addresses] == ["bob@example.org"]  # and whom


def test_daemon_temporary_failure_keeps_it_queued_until_it_goes(
    mail_daemon: DaemonProc, fake: FakeSendmail
) -> None:
    fake.answer(75, "postdrop: warning: unable to look up public/pickup\n")
    mail = Mail.logon(mail_daemon)
    mail.send("Held back")
    said = wait_for(
        "the spooler to wait", lambda: "next try in" in mail.spooler_says() and mail.spooler_says()
    )
    assert "EX_TEMPFAIL" in said and "unable to look up public/pickup" in said
    transport = mail.row(ResourceType.MAPI_TRANSPORT_PROVIDER)
    assert transport["PR_STATUS_STRING"].startswith(f"Send failed: {fake.path} exited with")
    assert mail.subjects("Outbox") == ["Held back"]

    fake.answer(0)
    mail.spooler("flush_queues", ["FLUSH_UPLOAD"])  # now, whatever the backoff
    assert len(fake.calls()) == 2
    assert mail.subjects("Outbox") == []
    wait_for("Sent Items", lambda: mail.subjects("Sent Items") == ["Held back"])
    row = mail.row(ResourceType.MAPI_TRANSPORT_PROVIDER)
    assert row["PR_STATUS_STRING"] == f"Ready: {fake.path}"


def test_daemon_permanent_failure_gives_a_report(
    mail_daemon: DaemonProc, fake: FakeSendmail
) -> None:
    fake.answer(67, "grace@example.org... User unknown\n")
    mail = Mail.logon(mail_daemon)
    mail.send("Nobody home")
    report = mail.report()
    assert report["Subject"] == "Undeliverable: Nobody home"
    assert statuses(report) == {"rfc822; grace@example.org": "5.1.1"}
    text = str(next(report.iter_parts()).get_content())
    assert "User unknown" in text and "EX_NOUSER" in text
    wait_for("an empty Outbox", lambda: mail.subjects("Outbox") == [])
    assert mail.subjects("Sent Items") == []


def test_daemon_missing_program_is_a_configuration_problem(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """A profile that names a program not installed yet: the row says so, mail waits in the
    Outbox; once the program is there, validate_state on the spooler logs the transport on
    again and the queue goes."""
    later = FakeSendmail(tmp_path / "later")
    program = tmp_path / "bin" / "sendmail"
    profile = standard_profile(tmp_path / "alpha") + sendmail_section([str(program)])
    daemon = make_daemon(profiles={"alpha": profile})
    mail = Mail.logon(daemon)
    row = mail.row(ResourceType.MAPI_TRANSPORT_PROVIDER)
    assert row["PR_STATUS_CODE"] & StatusCode.STATUS_FAILURE
    assert f"command: {program} does not exist" in row["PR_STATUS_STRING"]
    mail.send("Waits for the MTA")
    wait_for("the spooler to say why", lambda: "not available" in mail.spooler_says())
    assert mail.subjects("Outbox") == ["Waits for the MTA"]

    services = mail.client.services_table(profile="alpha")["rows"]
    uid = next(r["PR_SERVICE_UID"] for r in services if r["PR_DISPLAY_NAME"] == "outgoing")
    with pytest.raises(MapiError) as refused:  # services.configure checks the program too
        mail.client.services_configure(
            profile="alpha", service_uid=uid, config={"command": ["/nowhere/sendmail"]}
        )
    assert refused.value.code == ErrorCode.MAPI_E_INVALID_PARAMETER
    assert refused.value.details["errors"] == [
        {
            "key": "command",
            "message": "/nowhere/sendmail does not exist (install a "
            "sendmail-compatible program: msmtp-mta, postfix or exim4; or name yours)",
        }
    ]

    program.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(later.path, program)  # "apt install msmtp-mta"
    mail.spooler("validate_state", [])
    wait_for("the message sent", lambda: mail.subjects("Sent Items") == ["Waits for the MTA"])
    assert [c.argv[-1] for c in FakeSendmail(program.parent).calls()] == ["grace@example.org"]
    row = mail.row(ResourceType.MAPI_TRANSPORT_PROVIDER)
    assert row["PR_STATUS_STRING"] == f"Ready: {program}"


def test_daemon_routes_a_sender_to_the_transport_that_sends_as_it(
    make_daemon: DaemonFactory, tmp_path: Path, fake: FakeSendmail, smtp_server: SmtpServer
) -> None:
    """smtp first in transport order, sendmail second with its own `from`: a message from
    that address goes through sendmail, one from the session's identity through smtp."""
    order = [
        provider_uid("alpha", "outgoing", "smtp").hex(),
        provider_uid("alpha", "local", "sendmail").hex(),
    ]
    profile = (
        f"transport_order = {json.dumps(order)}\n"
        + standard_profile(tmp_path / "alpha")
        + smtp_section(smtp_server)
        + sendmail_section([str(fake.path)], key="local", from_="Ada at Home <ada@home.example>")
    )
    mail = Mail.logon(make_daemon(profiles={"alpha": profile}))
    mail.send(
        "From home",
        PR_SENT_REPRESENTING_EMAIL_ADDRESS="ada@home.example",
        PR_SENT_REPRESENTING_NAME="Ada at Home",
    )
    [call] = fake.wait_calls(1)
    assert call.argv[:3] == ["-oi", "-f", "ada@home.example"]
    mail.send("From the identity")
    [got] = smtp_server.wait_for(1)
    assert parse(got.content)["Subject"] == "From the identity"
    wait_for(
        "both in Sent Items",
        lambda: sorted(mail.subjects("Sent Items")) == ["From home", "From the identity"],
    )
    assert len(fake.calls()) == 1


# -- a real MTA: msmtp relaying to aiosmtpd --------------------------------------------------

needs_msmtp = pytest.mark.skipif(
    MSMTP is None and not os.environ.get("CI"),
    reason="msmtp is not installed (apt install msmtp); with CI set these tests fail instead",
)


def msmtp_command(server: SmtpServer) -> list[str]:
    """msmtp as a sendmail that relays to `server`, configured on its command line only."""
    assert MSMTP is not None
    return [
        MSMTP,
        "-C",
        "/dev/null",
        f"--host={server.host}",
        f"--port={server.port}",
        "--auth=off",
        "--tls=off",
    ]


@pytest.fixture
def msmtp_daemon(make_daemon: DaemonFactory, tmp_path: Path, smtp_server: SmtpServer) -> DaemonProc:
    profile = standard_profile(tmp_path / "alpha") + sendmail_section(msmtp_command(smtp_server))
    return make_daemon(profiles={"alpha": profile})


@needs_msmtp
def test_msmtp_relays_with_bcc_in_the_envelope_only(
    msmtp_daemon: DaemonProc, smtp_server: SmtpServer
) -> None:
    mail = Mail.logon(msmtp_daemon)
    bob = {**GRACE, "PR_EMAIL_ADDRESS": "bob@example.org", "PR_RECIPIENT_TYPE": 3}
    mail.send("Through msmtp", GRACE, bob, PR_BODY="first\n.\nlast\n")
    [got] = smtp_server.wait_for(1)
    assert got.mail_from == "ada@example.org"
    assert sorted(got.rcpt_tos) == ["bob@example.org", "grace@example.org"]
    assert "Bcc" not in parse(got.content) and b"bob@example.org" not in got.content
    assert b"first\n.\nlast\n" in got.content  # a line of one dot is not the end (-oi)
    wait_for("Sent Items", lambda: mail.subjects("Sent Items") == ["Through msmtp"])


@needs_msmtp
def test_msmtp_refused_recipient_gives_a_report_with_the_servers_words(
    msmtp_daemon: DaemonProc, smtp_server: SmtpServer
) -> None:
    smtp_server.refuse("grace@example.org")  # 550 5.1.1 No such user here; msmtp exits 65
    mail = Mail.logon(msmtp_daemon)
    mail.send("Refused by the relay")
    report = mail.report()
    assert statuses(report) == {"rfc822; grace@example.org": "5.1.1"}
    assert "550 5.1.1 No such user here" in str(next(report.iter_parts()).get_content())


@needs_msmtp
def test_msmtp_deferred_by_the_relay_stays_queued(
    msmtp_daemon: DaemonProc, smtp_server: SmtpServer
) -> None:
    smtp_server.answer_mail("451 4.3.0 try again later")  # msmtp exits 69 (EX_UNAVAILABLE)
    mail = Mail.logon(msmtp_daemon)
    mail.send("Greylisted")
    said = wait_for(
        "the spooler to wait", lambda: "next try in" in mail.spooler_says() and mail.spooler_says()
    )
    assert "451 4.3.0 try again later" in said
    assert mail.subjects("Outbox") == ["Greylisted"]
    smtp_server.accept_all()
    mail.spooler("flush_queues", ["FLUSH_UPLOAD"])
    assert [parse(m.content)["Subject"] for m in smtp_server.messages] == ["Greylisted"]
    assert mail.subjects("Outbox") == []


@needs_msmtp
def test_msmtp_login_refused_is_temporary(
    make_daemon: DaemonFactory, tmp_path: Path, make_smtp_server: MakeServer
) -> None:
    """A wrong password is the user's to mend (msmtp exits 77 and quotes "535 5.7.8"): the
    message waits, as it does with the smtp transport."""
    server = make_smtp_server(auth=("ada", "right"))
    login = ["--auth=plain", "--user=ada", "--passwordeval=echo wrong"]
    command = [*msmtp_command(server), *login]
    command.remove("--auth=off")
    profile = standard_profile(tmp_path / "alpha") + sendmail_section(command)
    mail = Mail.logon(make_daemon(profiles={"alpha": profile}))
    mail.send("Wrong password")
    said = wait_for(
        "the spooler to wait", lambda: "next try in" in mail.spooler_says() and mail.spooler_says()
    )
    assert "EX_NOPERM" in said and "535 5.7.8" in said
    assert mail.subjects("Outbox") == ["Wrong password"] and mail.contents("Inbox") == []
