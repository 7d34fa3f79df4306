"""The spooler through the real daemon: a real Maildir, a real vCard book, a real aiosmtpd.

Each test composes mail as a client does (resolve, create in Drafts, recipients, submit) and
looks at what the SMTP server received, at the Maildir folders through the daemon, and at the
status rows (the spooler's and the transport's) in the table and on the event stream.
"""

from __future__ import annotations

import email
import email.policy
import itertools
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import pytest
import zmq

from mapid.client import Client
from mapid.constants import ResourceType, StatusCode
from mapid.errors import ErrorCode, MapiError
from mapid.paths import read_connection_file
from mapid.providers.base import (
    REMOTE_PROGRESS_IDLE,
    MessageService,
    OutgoingMessage,
    SendResult,
    TransportFailure,
    TransportProvider,
)
from mapid.wire.codec import unpack

from conftest import DEFAULT_CONFIG, DaemonFactory, DaemonProc, standard_profile
from smtp_server import SmtpServer, smtp_section

T = TypeVar("T")
NEW = ["MAPI_NEW_SESSION"]
MakeServer = Callable[..., SmtpServer]


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 15.0) -> T:
    """Poll `probe` until it returns something true; fail saying `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def mail_profile(root: Path, server: SmtpServer, **kwargs: Any) -> str:
    """standard_profile (vCard book with Ada's identity, Maildir) and an smtp transport."""
    identity = kwargs.pop("identity", True)
    autologon = kwargs.pop("autologon", False)
    return standard_profile(root, identity=identity, autologon=autologon) + smtp_section(
        server, **kwargs
    )


def parse(mime: bytes) -> EmailMessage:
    message = email.message_from_bytes(mime, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


@dataclass
class Mail:
    """One logged-on member with its default store open for writing."""

    client: Client
    token: bytes
    session: str = ""
    store: int = 0
    store_props: dict[str, Any] = field(default_factory=dict)
    folders: dict[str, int] = field(default_factory=dict)

    @classmethod
    def logon(cls, client: Client, profile: str = "alpha", flags: Any = NEW) -> Mail:
        logon = client.session_logon(profile, flags)
        mail = cls(client, logon["token"], logon["session"])
        token = mail.token
        stores = client.session_msg_stores_table(token)["rows"]
        default = next(r for r in stores if r.get("PR_DEFAULT_STORE"))
        opened = client.session_open_msg_store(token, default["PR_ENTRYID"], ["MDB_WRITE"])
        mail.store, mail.store_props = opened["handle"], opened["props"]
        return mail

    def folder(self, name: str) -> int:
        """A folder of the IPM subtree by display name (Inbox, Outbox, Sent Items, ...)."""
        if name not in self.folders:
            c, t = self.client, self.token
            subtree = c.container_open_entry(
                t, self.store, self.store_props["PR_IPM_SUBTREE_ENTRYID"]
            )
            rows = c.container_hierarchy_table(t, subtree["handle"])["rows"]
            entry = next(r["PR_ENTRYID"] for r in rows if r["PR_DISPLAY_NAME"] == name)
            self.folders[name] = c.container_open_entry(t, self.store, entry)["handle"]
        return self.folders[name]

    def contents(self, name: str, *columns: str) -> list[dict[str, Any]]:
        cols = ["PR_ENTRYID", "PR_SUBJECT", "PR_MESSAGE_CLASS", *columns]
        table = {"columns": cols}
        rows: list[dict[str, Any]] = self.client.container_contents_table(
            self.token, self.folder(name), table
        )["rows"]
        return rows

    def mime_of(self, name: str, entryid: bytes) -> bytes:
        handle = self.client.container_open_entry(self.token, self.folder(name), entryid)
        mime: bytes = self.client.message_get_mime(self.token, handle["handle"])["mime"]
        return mime

    def resolve(self, *names: str) -> list[dict[str, Any]]:
        book = self.client.session_open_address_book(self.token)["handle"]
        found: list[dict[str, Any]] = self.client.ab_resolve_names(self.token, book, list(names))[
            "recipients"
        ]
        return found

    def compose(
        self,
        subject: str,
        to: Sequence[dict[str, Any]] = (),
        cc: Sequence[str] = (),
        bcc: Sequence[str] = (),
        props: dict[str, Any] | None = None,
    ) -> int:
        c, t = self.client, self.token
        handle: int = c.folder_create_message(t, self.folder("Drafts"))["handle"]
        c.object_set_props(
            t, handle, {"PR_SUBJECT": subject, "PR_BODY": f"{subject}\n", **(props or {})}
        )
        recipients = [dict(r, PR_RECIPIENT_TYPE=1) for r in to]
        for kind, addresses in ((2, cc), (3, bcc)):
            recipients += [
                {
                    "PR_EMAIL_ADDRESS": a,
                    "PR_DISPLAY_NAME": a.split("@")[0].title(),
                    "PR_ADDRTYPE": "SMTP",
                    "PR_RECIPIENT_TYPE": kind,
                }
                for a in addresses
            ]
        c.message_modify_recipients(t, handle, recipients)
        return handle

    def send(self, subject: str, **kwargs: Any) -> bytes:
        entryid: bytes = self.client.message_submit(self.token, self.compose(subject, **kwargs))[
            "entryid"
        ]
        return entryid

    def rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.client.session_status_table(self.token)["rows"]
        return rows

    def row(self, kind: ResourceType) -> dict[str, Any]:
        return next(r for r in self.rows() if r["PR_RESOURCE_TYPE"] == int(kind))

    def status(self, kind: ResourceType) -> int:
        handle: int = self.client.session_open_entry(self.token, self.row(kind)["PR_ENTRYID"])[
            "handle"
        ]
        return handle

    def spooler_says(self) -> str:
        text: str = self.row(ResourceType.MAPI_SPOOLER).get("PR_STATUS_STRING", "")
        return text


GRACE = {
    "PR_EMAIL_ADDRESS": "grace@example.org",
    "PR_DISPLAY_NAME": "Grace Hopper",
    "PR_ADDRTYPE": "SMTP",
}


class Events:
    """Every `status.` event, collected by a thread while the test goes on."""

    def __init__(self, daemon: DaemonProc) -> None:
        info = read_connection_file(daemon.runtime)
        assert info is not None
        self._sock: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SUBSCRIBE, b"status.")
        self._sock.setsockopt(zmq.SUBSCRIBE, b"hb")
        self._sock.connect(info.events)
        self._stop = threading.Event()
        self._heard = threading.Event()
        self._lock = threading.Lock()
        self._rows: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        assert self._heard.wait(5), "no heartbeat from the daemon"

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self._sock.poll(50):
                continue
            topic, payload = self._sock.recv_multipart()
            self._heard.set()
            msg = unpack(payload)
            if topic.startswith(b"status.") and "row" in msg:
                with self._lock:
                    self._rows.append(dict(msg["row"]))

    def rows(self, kind: ResourceType) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self._rows if r.get("PR_RESOURCE_TYPE") == int(kind)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close(linger=0)


@pytest.fixture
def server(make_smtp_server: MakeServer) -> SmtpServer:
    return make_smtp_server()


@pytest.fixture
def mail_daemon(make_daemon: DaemonFactory, tmp_path: Path, server: SmtpServer) -> DaemonProc:
    return make_daemon(profiles={"alpha": mail_profile(tmp_path / "alpha", server)})


@pytest.fixture
def events(mail_daemon: DaemonProc) -> Iterator[Events]:
    recorder = Events(mail_daemon)
    yield recorder
    recorder.close()


# -- the whole path ----------------------------------------------------------------------------


def test_resolve_submit_deliver_then_sent_items(
    mail_daemon: DaemonProc, server: SmtpServer, events: Events
) -> None:
    mail = Mail.logon(mail_daemon.client())
    grace = mail.resolve("grace")
    assert grace[0]["PR_EMAIL_ADDRESS"] == "grace@example.org"
    mail.send("Engines", to=grace, cc=["carol@example.org"], bcc=["bob@example.org"])

    received = server.wait_for(1)[0]
    assert received.mail_from == "ada@example.org"  # the session's identity (the vCard book)
    assert sorted(received.rcpt_tos) == [
        "bob@example.org",
        "carol@example.org",
        "grace@example.org",
    ]
    message = parse(received.content)
    assert message["From"].addresses[0].addr_spec == "ada@example.org"
    assert message["From"].addresses[0].display_name == "Ada Lovelace"
    assert [a.addr_spec for a in message["To"].addresses] == ["grace@example.org"]
    assert [a.addr_spec for a in message["Cc"].addresses] == ["carol@example.org"]
    assert "Bcc" not in message and b"bob@example.org" not in received.content
    assert message["Subject"] == "Engines"
    assert message["Message-ID"] and message["Date"]
    assert not any(name.lower().startswith("x-mapid-") for name in message)

    sent = wait_for("the message in Sent Items", lambda: mail.contents("Sent Items"))
    assert [r["PR_SUBJECT"] for r in sent] == ["Engines"]
    assert mail.contents("Outbox") == []
    stored = parse(mail.mime_of("Sent Items", sent[0]["PR_ENTRYID"]))
    assert stored["Message-ID"] == message["Message-ID"]  # Sent Items holds what went out
    assert stored["Date"] == message["Date"]
    assert [a.addr_spec for a in stored["Bcc"].addresses] == ["bob@example.org"]  # and whom
    wait_for("the spooler idle", lambda: mail.spooler_says() == "idle")

    transport = events.rows(ResourceType.MAPI_TRANSPORT_PROVIDER)
    active = [r for r in transport if r["PR_STATUS_CODE"] & StatusCode.STATUS_OUTBOUND_ACTIVE]
    assert active, "STATUS_OUTBOUND_ACTIVE was never set while sending"
    assert [r["PR_REMOTE_PROGRESS"] for r in active] == [0, 100]
    assert active[0]["PR_REMOTE_PROGRESS_TEXT"] == "sending 1 of 1"
    now = mail.row(ResourceType.MAPI_TRANSPORT_PROVIDER)
    assert not now["PR_STATUS_CODE"] & StatusCode.STATUS_OUTBOUND_ACTIVE
    assert now["PR_REMOTE_PROGRESS"] == REMOTE_PROGRESS_IDLE
    assert "PR_REMOTE_PROGRESS_TEXT" not in now
    assert now["PR_STATUS_STRING"].startswith("Ready")  # the transport's own words stay
    spooler = [r.get("PR_STATUS_STRING") for r in events.rows(ResourceType.MAPI_SPOOLER)]
    assert "sending 1 of 1" in spooler and spooler[-1] == "idle"


def test_two_requests_a_message_deliver_like_five(
    mail_daemon: DaemonProc, server: SmtpServer
) -> None:
    """The compact requests (create_message with props and recipients, submit with
    release) send what MAPI's five requests send: same sender, recipients and From."""
    mail = Mail.logon(mail_daemon.client())
    c, t = mail.client, mail.token
    outbox = mail.folder("Outbox")
    for i in range(5):
        created = c.folder_create_message(
            t, outbox, {"PR_SUBJECT": f"short {i}", "PR_BODY": f"number {i}\n"}, [GRACE]
        )
        c.message_submit(t, created["handle"], release=True)
    mail.send("long", to=[GRACE])
    received = server.wait_for(6)
    by_subject = {}
    for r in received:
        message = email.message_from_bytes(r.content, policy=email.policy.default)
        by_subject[str(message["Subject"])] = (r, message)
    assert sorted(by_subject) == ["long", *(f"short {i}" for i in range(5))]
    short, long = by_subject["short 0"], by_subject["long"]
    assert short[0].mail_from == long[0].mail_from == "ada@example.org"
    assert list(short[0].rcpt_tos) == list(long[0].rcpt_tos) == ["grace@example.org"]
    assert short[1]["From"] == long[1]["From"]
    assert short[1].get_content() == "number 0\n"
    wait_for("all six in Sent Items", lambda: len(mail.contents("Sent Items")) == 6)
    assert mail.contents("Outbox") == []


def test_a_burst_is_one_sending_period_in_the_rows(
    mail_daemon: DaemonProc, server: SmtpServer, events: Events
) -> None:
    """Twenty messages submitted one after the other: the transport row goes active once
    and idle once (not four row events a message), and every message is delivered."""
    mail = Mail.logon(mail_daemon.client())
    for i in range(20):
        mail.send(f"Burst {i}", to=[GRACE])
    delivered = server.wait_for(20)
    assert sorted(parse(m.content)["Subject"] for m in delivered) == sorted(
        f"Burst {i}" for i in range(20)
    )
    wait_for("the spooler idle", lambda: mail.spooler_says() == "idle")
    wait_for("all in Sent Items", lambda: len(mail.contents("Sent Items")) == 20)
    transport = events.rows(ResourceType.MAPI_TRANSPORT_PROVIDER)
    active = [bool(r["PR_STATUS_CODE"] & StatusCode.STATUS_OUTBOUND_ACTIVE) for r in transport]
    flips = sum(1 for a, b in itertools.pairwise(active) if a != b)
    # One period, or a few if the machine paused the client for over SETTLE_S; before,
    # each message made its own (60 to 80 transport row events for 20 messages).
    assert active[-1] is False and flips <= 6, active
    assert len(transport) <= 20, len(transport)
    now = mail.row(ResourceType.MAPI_TRANSPORT_PROVIDER)
    assert now["PR_REMOTE_PROGRESS"] == REMOTE_PROGRESS_IDLE


def test_delete_after_submit_leaves_no_copy(mail_daemon: DaemonProc, server: SmtpServer) -> None:
    mail = Mail.logon(mail_daemon.client())
    mail.send("Gone after sending", to=[GRACE], props={"PR_DELETE_AFTER_SUBMIT": True})
    assert parse(server.wait_for(1)[0].content)["Subject"] == "Gone after sending"
    wait_for("an empty Outbox", lambda: mail.contents("Outbox") == [])
    wait_for("the spooler idle", lambda: mail.spooler_says() == "idle")
    assert mail.contents("Sent Items") == []


# -- temporary failures, then a flush ----------------------------------------------------------


def test_server_down_keeps_it_queued_then_flush_sends_it(
    mail_daemon: DaemonProc, server: SmtpServer
) -> None:
    mail = Mail.logon(mail_daemon.client())
    server.stop()
    mail.send("While the server is down", to=[GRACE])
    said = wait_for(
        "the spooler to wait", lambda: "next try in" in mail.spooler_says() and mail.spooler_says()
    )
    assert said.startswith("1 queued; next try in 30 s: outgoing: ")  # spooler_retry_s default
    transport = mail.row(ResourceType.MAPI_TRANSPORT_PROVIDER)
    assert transport["PR_STATUS_STRING"].startswith("Send failed")  # the transport says why
    assert not transport["PR_STATUS_CODE"] & StatusCode.STATUS_OUTBOUND_ACTIVE
    assert [r["PR_SUBJECT"] for r in mail.contents("Outbox")] == ["While the server is down"]

    server.start()
    # The backoff is 30 s: only the flush (synchronous) can have sent it when it returns.
    mail.client.status_flush_queues(
        mail.token, mail.status(ResourceType.MAPI_SPOOLER), ["FLUSH_UPLOAD"]
    )
    assert [parse(m.content)["Subject"] for m in server.messages] == ["While the server is down"]
    assert mail.contents("Outbox") == []
    assert [r["PR_SUBJECT"] for r in mail.contents("Sent Items")] == ["While the server is down"]
    assert mail.spooler_says() == "idle"


def test_a_queue_built_up_goes_out_in_batches_each_message_with_its_own_outcome(
    mail_daemon: DaemonProc, server: SmtpServer
) -> None:
    """Messages queued while the server was down go to the transport together (send_batch):
    in queue order, each once; a refusal of one gives its report and the rest go on; a
    deferral stops the batch there and leaves that message and the later ones queued."""
    mail = Mail.logon(mail_daemon.client())
    server.stop()
    subjects = [f"Queued {i}" for i in range(6)]
    for i, subject in enumerate(subjects):
        cc = ["nobody@example.org"] if i == 2 else ["later@example.org"] if i == 4 else []
        mail.send(subject, to=[] if cc else [GRACE], cc=cc)
    wait_for("the spooler to wait", lambda: mail.spooler_says().startswith("6 queued"))
    server.start()
    server.refuse("nobody@example.org")
    server.refuse("later@example.org", reply="451 4.2.1 come back later")
    spooler = mail.status(ResourceType.MAPI_SPOOLER)
    mail.client.status_flush_queues(mail.token, spooler, ["FLUSH_UPLOAD"])
    delivered = [parse(m.content)["Subject"] for m in server.messages]
    assert delivered == ["Queued 0", "Queued 1", "Queued 3"]
    assert sorted(r["PR_SUBJECT"] for r in mail.contents("Outbox")) == ["Queued 4", "Queued 5"]
    _row, report = _ndr(mail)
    assert "nobody@example.org" in _parts(report)[0]
    assert "451 4.2.1" in mail.spooler_says()

    server.accept_all()
    mail.client.status_flush_queues(mail.token, spooler, ["FLUSH_UPLOAD"])
    delivered = [parse(m.content)["Subject"] for m in server.messages]
    assert delivered == ["Queued 0", "Queued 1", "Queued 3", "Queued 4", "Queued 5"]
    assert mail.contents("Outbox") == []
    sent = wait_for("Sent Items", lambda: len(mail.contents("Sent Items")) == 5 or None)
    assert sent
    assert mail.spooler_says() == "idle"


def test_flush_on_the_transport_row_sends_what_it_takes(
    mail_daemon: DaemonProc, server: SmtpServer
) -> None:
    mail = Mail.logon(mail_daemon.client())
    server.answer_mail("451 4.3.0 try again later")
    mail.send("Deferred once", to=[GRACE])
    wait_for("the spooler to wait", lambda: "next try in" in mail.spooler_says())
    assert "451 4.3.0" in mail.spooler_says()
    server.accept_all()
    handle = mail.status(ResourceType.MAPI_TRANSPORT_PROVIDER)
    with pytest.raises(MapiError) as info:
        mail.client.status_flush_queues(mail.token, handle, ["FLUSH_UPLOAD", "FLUSH_ASYNC_OK"])
    assert info.value.code == ErrorCode.MAPI_E_UNKNOWN_FLAGS
    mail.client.status_flush_queues(mail.token, handle, ["FLUSH_UPLOAD", "FLUSH_FORCE"])
    assert [parse(m.content)["Subject"] for m in server.messages] == ["Deferred once"]
    assert mail.contents("Outbox") == []


def test_flush_async_ok_returns_at_once(mail_daemon: DaemonProc, server: SmtpServer) -> None:
    mail = Mail.logon(mail_daemon.client())
    server.stall("DATA", 30)  # held until accept_all() releases it
    mail.send("Slow", to=[GRACE])
    wait_for("the send under way", lambda: mail.spooler_says() == "sending 1 of 1")
    spooler = mail.status(ResourceType.MAPI_SPOOLER)
    mail.client.status_flush_queues(mail.token, spooler, ["FLUSH_UPLOAD", "FLUSH_ASYNC_OK"])
    assert server.messages == []  # it returned while the server still holds DATA
    with pytest.raises(MapiError) as info:  # that flush is still running
        mail.client.status_flush_queues(mail.token, spooler, ["FLUSH_UPLOAD"])
    assert info.value.code == ErrorCode.MAPI_E_BUSY
    server.accept_all()
    assert parse(server.wait_for(1)[0].content)["Subject"] == "Slow"
    wait_for("an empty Outbox", lambda: mail.contents("Outbox") == [])


# -- permanent failures: non-delivery reports --------------------------------------------------


def _ndr(mail: Mail) -> tuple[dict[str, Any], EmailMessage]:
    inbox = wait_for("a report in the Inbox", lambda: mail.contents("Inbox"))
    assert len(inbox) == 1
    assert inbox[0]["PR_MESSAGE_CLASS"] == "REPORT.IPM.Note.NDR"
    return inbox[0], parse(mail.mime_of("Inbox", inbox[0]["PR_ENTRYID"]))


def _parts(report: EmailMessage) -> tuple[str, list[EmailMessage], EmailMessage]:
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    text, status, original = list(report.iter_parts())
    assert text.get_content_type() == "text/plain"
    assert status.get_content_type() == "message/delivery-status"
    assert original.get_content_type() == "message/rfc822"
    blocks = status.get_payload()
    assert isinstance(blocks, list)
    inner = original.get_payload()[0]
    assert isinstance(inner, EmailMessage)
    return str(text.get_content()), blocks, inner


def test_a_5xx_gives_a_report_in_the_inbox_and_empties_the_outbox(
    mail_daemon: DaemonProc, server: SmtpServer
) -> None:
    mail = Mail.logon(mail_daemon.client())
    server.answer_data("554 5.6.0 content refused")
    mail.send("Refused whole", to=[GRACE], bcc=["bob@example.org"])
    row, report = _ndr(mail)
    assert row["PR_SUBJECT"] == "Undeliverable: Refused whole"
    text, blocks, original = _parts(report)
    assert "grace@example.org" in text and "554 5.6.0 content refused" in text
    assert report["From"].addresses[0].addr_spec == "MAILER-DAEMON@localhost"
    assert report["To"].addresses[0].addr_spec == "ada@example.org"
    per_recipient = [b for b in blocks if b["Final-Recipient"]]
    assert {b["Final-Recipient"] for b in per_recipient} == {
        "rfc822; grace@example.org",
        "rfc822; bob@example.org",
    }
    assert all(b["Action"] == "failed" and b["Status"] == "5.6.0" for b in per_recipient)
    assert original["Subject"] == "Refused whole"
    assert original["Bcc"]  # the whole original: it is the only copy left
    wait_for("an empty Outbox", lambda: mail.contents("Outbox") == [])
    assert mail.contents("Sent Items") == []
    assert server.messages == []


def test_a_refused_recipient_gets_a_report_the_others_the_mail(
    mail_daemon: DaemonProc, server: SmtpServer
) -> None:
    mail = Mail.logon(mail_daemon.client())
    server.refuse("nobody@example.org")
    mail.send("Mostly delivered", to=[GRACE], cc=["nobody@example.org", "carol@example.org"])
    received = server.wait_for(1)[0]
    assert sorted(received.rcpt_tos) == ["carol@example.org", "grace@example.org"]
    _row, report = _ndr(mail)
    text, blocks, original = _parts(report)
    assert "nobody@example.org" in text and "550 5.1.1" in text
    assert "delivered to the other recipients" in text
    finals = [b["Final-Recipient"] for b in blocks if b["Final-Recipient"]]
    assert finals == ["rfc822; nobody@example.org"]
    assert original["Subject"] == "Mostly delivered"
    sent = wait_for("the message in Sent Items", lambda: mail.contents("Sent Items"))
    assert [r["PR_SUBJECT"] for r in sent] == ["Mostly delivered"]
    assert mail.contents("Outbox") == []


def test_no_sender_anywhere_is_a_permanent_failure(
    make_daemon: DaemonFactory, tmp_path: Path, server: SmtpServer
) -> None:
    proc = make_daemon(profiles={"alpha": mail_profile(tmp_path / "a", server, identity=False)})
    mail = Mail.logon(proc.client())
    mail.send("From nobody", to=[GRACE])
    _row, report = _ndr(mail)
    text, blocks, original = _parts(report)
    assert "no sender" in text
    assert [b["Status"] for b in blocks if b["Final-Recipient"]] == ["5.1.7"]
    assert original["Subject"] == "From nobody"
    assert "To" not in report  # there is no one to address it to
    wait_for("an empty Outbox", lambda: mail.contents("Outbox") == [])
    assert server.messages == []


def test_the_transports_from_wins(
    make_daemon: DaemonFactory, tmp_path: Path, server: SmtpServer
) -> None:
    profile = mail_profile(tmp_path / "a", server, sender="Ada at Work <ada@work.example>")
    proc = make_daemon(profiles={"alpha": profile})
    mail = Mail.logon(proc.client())
    mail.send("From work", to=[GRACE])
    received = server.wait_for(1)[0]
    assert received.mail_from == "ada@work.example"
    sender = parse(received.content)["From"].addresses
    assert [(a.display_name, a.addr_spec) for a in sender] == [("Ada at Work", "ada@work.example")]


# -- who runs the queue ------------------------------------------------------------------------


def test_no_mail_member_gets_no_spooler(mail_daemon: DaemonProc, server: SmtpServer) -> None:
    client = mail_daemon.client()
    quiet = Mail.logon(client, flags=["MAPI_NEW_SESSION", "MAPI_ALLOW_OTHERS", "MAPI_NO_MAIL"])
    kinds = [r["PR_RESOURCE_TYPE"] for r in quiet.rows()]
    assert int(ResourceType.MAPI_TRANSPORT_PROVIDER) not in kinds
    spooler = quiet.row(ResourceType.MAPI_SPOOLER)
    assert spooler["PR_STATUS_CODE"] & StatusCode.STATUS_FAILURE
    with pytest.raises(MapiError) as info:
        quiet.send("Not from here", to=[GRACE])
    assert info.value.code == ErrorCode.MAPI_E_NO_SUPPORT
    with pytest.raises(MapiError) as info:
        client.status_flush_queues(
            quiet.token, quiet.status(ResourceType.MAPI_SPOOLER), ["FLUSH_UPLOAD"]
        )
    assert info.value.code == ErrorCode.MAPI_E_NO_SUPPORT
    # A message put in the Outbox the way any Maildir client does stays there...
    mime = b"From: Ada <ada@example.org>\nTo: grace@example.org\nSubject: Waiting\n\nbody\n"
    client.folder_import_message(quiet.token, quiet.folder("Outbox"), mime)
    assert [r["PR_SUBJECT"] for r in quiet.contents("Outbox")] == ["Waiting"]
    # ...until a mail-enabled member joins the session: its spooler sends it at once.
    joined = client.session_logon(None, [])
    assert joined["session"] == quiet.session
    assert parse(server.wait_for(1)[0].content)["Subject"] == "Waiting"
    wait_for("an empty Outbox", lambda: quiet.contents("Outbox") == [])


def test_two_sessions_on_one_profile_send_each_message_once(
    mail_daemon: DaemonProc, server: SmtpServer
) -> None:
    first = Mail.logon(mail_daemon.client())
    second = Mail.logon(mail_daemon.client())
    # In line from its logon on: the row says so in the logon's own table (no pass, no
    # row change after it).
    said = second.spooler_says()
    assert said == f"standby: session {first.session} sends this store's Outbox", said
    first.send("one", to=[GRACE])
    second.send("two", to=[GRACE])
    first.send("three", to=[GRACE])
    server.wait_for(3)
    wait_for("an empty Outbox", lambda: first.contents("Outbox") == [])
    said = second.spooler_says()
    assert said.startswith("standby: session ") and said.endswith("sends this store's Outbox")
    # The Outbox is empty: nothing is left that anyone could send a second time.
    assert sorted(parse(m.content)["Subject"] for m in server.messages) == ["one", "three", "two"]
    # The owner goes; the session in line takes the queue over.
    first.client.session_logoff(first.token)
    wait_for("the second session to take over", lambda: second.spooler_says() == "idle")
    second.send("four", to=[GRACE])
    server.wait_for(4)
    wait_for("an empty Outbox", lambda: second.contents("Outbox") == [])
    subjects = sorted(parse(m.content)["Subject"] for m in server.messages)
    assert subjects == ["four", "one", "three", "two"]


# -- SIGKILL in the middle of a queue ----------------------------------------------------------


def test_sigkill_mid_queue_then_restart_delivers_all(
    make_daemon: DaemonFactory, tmp_path: Path, server: SmtpServer
) -> None:
    profile = mail_profile(tmp_path / "a", server, autologon=True)
    proc = make_daemon(profiles={"alpha": profile})
    server.stall("DATA", 0.2)  # each message takes a while: the kill lands mid-queue
    mail = Mail.logon(proc.client(), flags=[])  # joins the autologon session
    subjects = [f"queued {n:03}" for n in range(100)]
    for subject in subjects:
        mail.send(subject, to=[GRACE])
    before = server.wait_for(3)
    assert len(before) < 100
    proc.stop(signal.SIGKILL)
    outbox = tmp_path / "a" / "Mail" / ".Outbox"
    left = [p for sub in ("cur", "new") for p in (outbox / sub).iterdir()]
    assert left, "the kill came after the queue was done; nothing was tested"
    server.handler.stalls.clear()

    proc.start()  # the autologon session's spooler starts with a pass
    wait_for(
        "every message delivered after the restart",
        lambda: {parse(m.content)["Subject"] for m in server.messages} >= set(subjects),
        timeout=30,
    )
    by_subject: dict[str, set[str]] = {}
    for received in server.messages:
        message = parse(received.content)
        by_subject.setdefault(str(message["Subject"]), set()).add(str(message["Message-ID"]))
    assert set(by_subject) == set(subjects)
    assert all(len(ids) == 1 for ids in by_subject.values())  # a repeat is the same message
    wait_for(
        "an empty Outbox",
        lambda: not [p for sub in ("cur", "new") for p in (outbox / sub).iterdir()],
    )
    after = Mail.logon(proc.client(), flags=[])
    wait_for("the spooler idle", lambda: after.spooler_says() == "idle")
    assert len(after.contents("Sent Items")) == 100


def test_retry_keys_of_mapid_toml(
    make_daemon: DaemonFactory, tmp_path: Path, server: SmtpServer
) -> None:
    config = DEFAULT_CONFIG + "spooler_retry_s = 0.5\nspooler_retry_max_s = 1\n"
    proc = make_daemon(profiles={"alpha": mail_profile(tmp_path / "a", server)}, config=config)
    mail = Mail.logon(proc.client())
    server.answer_mail("421 4.3.2 busy")
    mail.send("Retried by itself", to=[GRACE])
    wait_for("a first failure", lambda: re.search(r"next try in 0\.\d s", mail.spooler_says()))
    server.accept_all()  # no flush: the backoff timer sends it
    assert parse(server.wait_for(1)[0].content)["Subject"] == "Retried by itself"
    wait_for("an empty Outbox", lambda: mail.contents("Outbox") == [])


def _subjects(folder: Path) -> set[str]:
    """Subjects of a Maildir folder's messages (one the daemon moves meanwhile is skipped)."""
    found: set[str] = set()
    for sub in ("cur", "new"):
        for path in (folder / sub).iterdir():
            try:
                found.add(str(parse(path.read_bytes())["Subject"]))
            except FileNotFoundError:
                continue
    return found


def test_sigterm_mid_queue_leaves_every_message_in_one_place(
    make_daemon: DaemonFactory, tmp_path: Path, server: SmtpServer
) -> None:
    profile = mail_profile(tmp_path / "a", server, autologon=True)
    proc = make_daemon(profiles={"alpha": profile})
    mail = Mail.logon(proc.client(), flags=[])
    server.stall("DATA", 0.1)
    subjects = {f"graceful {n:02}" for n in range(30)}
    for subject in sorted(subjects):
        mail.send(subject, to=[GRACE])
    server.wait_for(2)
    assert proc.stop(signal.SIGTERM) == 0
    maildir = tmp_path / "a" / "Mail"
    queued, sent = _subjects(maildir / ".Outbox"), _subjects(maildir / ".Sent")
    assert queued, "the queue was done before the stop; nothing was tested"
    assert not queued & sent and queued | sent == subjects  # nothing half-moved, none lost
    assert {parse(m.content)["Subject"] for m in server.messages} <= sent | queued
    server.handler.stalls.clear()
    proc.start()
    wait_for("the rest delivered", lambda: not _subjects(maildir / ".Outbox"))
    assert {parse(m.content)["Subject"] for m in server.messages} == subjects


def test_the_first_transport_in_transport_order_sends(
    make_daemon: DaemonFactory, tmp_path: Path, make_smtp_server: MakeServer
) -> None:
    first, second = make_smtp_server(), make_smtp_server()
    profile = (
        standard_profile(tmp_path / "a")
        + smtp_section(first, key="first")
        + smtp_section(second, key="second")
    )
    proc = make_daemon(profiles={"alpha": profile})
    mail = Mail.logon(proc.client())
    mail.send("by the first", to=[GRACE])
    assert parse(first.wait_for(1)[0].content)["Subject"] == "by the first"
    rows = mail.client.services_providers(mail.token)["rows"]
    transports = {
        r["PR_DISPLAY_NAME"]: r["PR_PROVIDER_UID"]
        for r in rows
        if r["PR_RESOURCE_TYPE"] == int(ResourceType.MAPI_TRANSPORT_PROVIDER)
    }
    # services.transport_order writes the profile; the live session follows it.
    mail.client.services_transport_order(
        mail.token, provider_uids=[transports["second"], transports["first"]]
    )
    mail.send("by the second", to=[GRACE])
    assert parse(second.wait_for(1)[0].content)["Subject"] == "by the second"
    wait_for("an empty Outbox", lambda: mail.contents("Outbox") == [])
    assert len(first.messages) == 1


def test_a_transport_that_reconnects_ends_its_backoff(
    mail_daemon: DaemonProc, server: SmtpServer
) -> None:
    mail = Mail.logon(mail_daemon.client())
    server.stop()
    mail.send("After reconnecting", to=[GRACE])
    wait_for("the spooler to wait", lambda: "next try in 30 s" in mail.spooler_says())
    server.start()
    # FORCE_XP_CONNECT: the transport reaches the server and says NOTIFY_READYTOSEND; the
    # spooler sends at once instead of waiting out the 30 s.
    transport = mail.status(ResourceType.MAPI_TRANSPORT_PROVIDER)
    mail.client.status_validate_state(mail.token, transport, ["FORCE_XP_CONNECT"])
    assert parse(server.wait_for(1)[0].content)["Subject"] == "After reconnecting"
    wait_for("an empty Outbox", lambda: mail.contents("Outbox") == [])
    wait_for("the spooler idle", lambda: mail.spooler_says() == "idle")


def test_validate_state_on_the_spooler_logs_transports_on_again_and_sends(
    mail_daemon: DaemonProc, server: SmtpServer
) -> None:
    mail = Mail.logon(mail_daemon.client())
    server.stop()
    mail.send("After validate_state", to=[GRACE])
    wait_for("the spooler to wait", lambda: "next try in 30 s" in mail.spooler_says())
    server.start()
    before = mail.row(ResourceType.MAPI_TRANSPORT_PROVIDER)["PR_INSTANCE_KEY"]
    spooler = mail.status(ResourceType.MAPI_SPOOLER)
    mail.client.status_validate_state(mail.token, spooler, ["CONFIG_CHANGED"])
    assert mail.row(ResourceType.MAPI_TRANSPORT_PROVIDER)["PR_INSTANCE_KEY"] != before
    assert parse(server.wait_for(1)[0].content)["Subject"] == "After validate_state"
    wait_for("an empty Outbox", lambda: mail.contents("Outbox") == [])


def _first_transport(
    make_daemon: DaemonFactory, tmp_path: Path, server: SmtpServer, key: str, service: str
) -> tuple[DaemonProc, Mail]:
    """A daemon whose profile has the transport `service` of this file (as `key`) first in
    transport order, then smtp, and a member logged on to it."""
    profile = (
        standard_profile(tmp_path / "a")
        + f'\n[services.{key}]\nservice = "test_spooler:{service}"\n'
        + smtp_section(server)
    )
    proc = make_daemon(profiles={"alpha": profile})
    return proc, Mail.logon(proc.client())


class BuggyTransport(TransportProvider):
    """A third-party transport with a bug: its send raises a plain Python exception."""

    name = "transport"
    address_types = ("SMTP",)

    async def send(self, message: OutgoingMessage) -> SendResult:
        raise RuntimeError("bug in a third-party transport")


class Buggy(MessageService):
    name = "buggy"
    display_name = "a transport whose send crashes"
    providers = (BuggyTransport,)


def test_a_transport_that_crashes_is_a_temporary_failure_without_failover(
    make_daemon: DaemonFactory, tmp_path: Path, server: SmtpServer
) -> None:
    proc, mail = _first_transport(make_daemon, tmp_path, server, "buggy", "Buggy")
    mail.send("Held by a bug", to=[GRACE])
    wait_for("the spooler to wait", lambda: "next try in" in mail.spooler_says())
    said = mail.spooler_says()
    assert said.endswith("buggy: RuntimeError: bug in a third-party transport")
    assert "transport buggy/transport failed to send" in proc.log()
    # The first transport in transport order that takes SMTP is the one that sends; a
    # failure of it is retried, never handed to the next transport.
    assert server.messages == []
    assert [r["PR_SUBJECT"] for r in mail.contents("Outbox")] == ["Held by a bug"]


class MuteBatchTransport(TransportProvider):
    """A third-party transport with a bug: send() defers, send_batch() says nothing."""

    name = "transport"
    address_types = ("SMTP",)

    async def send(self, message: OutgoingMessage) -> SendResult:
        raise TransportFailure("not now")

    async def send_batch(
        self, messages: Sequence[OutgoingMessage]
    ) -> Sequence[SendResult | TransportFailure]:
        return []


class MuteBatch(MessageService):
    name = "mute"
    display_name = "a transport whose send_batch returns no outcome"
    providers = (MuteBatchTransport,)


def test_a_batch_without_an_outcome_is_a_bug_that_keeps_every_message_queued(
    make_daemon: DaemonFactory, tmp_path: Path, server: SmtpServer
) -> None:
    proc, mail = _first_transport(make_daemon, tmp_path, server, "mute", "MuteBatch")
    mail.send("First", to=[GRACE])  # send() defers it: the transport waits out a backoff
    wait_for("the spooler to wait", lambda: "next try in" in mail.spooler_says())
    mail.send("Second", to=[GRACE])
    mail.send("Third", to=[GRACE])
    spooler = mail.status(ResourceType.MAPI_SPOOLER)
    mail.client.status_flush_queues(mail.token, spooler, ["FLUSH_UPLOAD"])  # one batch of 3
    assert mail.spooler_says().endswith("mute: a bug in the transport (see the log)")
    assert mail.spooler_says().startswith("3 queued; next try in")
    assert "transport mute/transport returned no outcome for a batch" in proc.log()
    assert sorted(r["PR_SUBJECT"] for r in mail.contents("Outbox")) == [
        "First",
        "Second",
        "Third",
    ]
    assert server.messages == []


def test_sigterm_while_the_server_is_silent_stops_at_once_and_keeps_the_message(
    make_daemon: DaemonFactory, tmp_path: Path, server: SmtpServer
) -> None:
    """A server that says nothing must not hold the stop for the SMTP time-out (30 s)."""
    profile = mail_profile(tmp_path / "a", server, autologon=True)
    proc = make_daemon(profiles={"alpha": profile})
    mail = Mail.logon(proc.client(), flags=[])
    server.stall("DATA", 60)
    mail.send("held by a silent server", to=[GRACE])
    server.wait_connections(1)
    # docs/design.md 10: SIGTERM ends the daemon within 5 s (proc.stop kills and raises if not).
    assert proc.stop(signal.SIGTERM, timeout=5) == 0
    maildir = tmp_path / "a" / "Mail"
    assert _subjects(maildir / ".Outbox") == {"held by a silent server"}
    server.accept_all()
    proc.start()
    wait_for("sent after the restart", lambda: not _subjects(maildir / ".Outbox"))
    assert _subjects(maildir / ".Sent") == {"held by a silent server"}
