"""Many accounts in one profile (issue 15 part 5): the spooler sends each message through the
transport that sends as its sender, else through the first in transport order.

Real peers: two aiosmtpd servers on loopback, one for each account, behind two smtp
transports with different `from` addresses; one Maildir store; the real daemon, and the
real mapictl for `send --from`. The profile lists `work` first and `home` second, and its
`transport_order` puts `home` first: "first" below means first in transport order.
"""

from __future__ import annotations

import email
import email.policy
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mapid.client import Client
from mapid.constants import ResourceType
from mapid.daemon.config.profiles import provider_uid

from conftest import DaemonFactory, DaemonProc, standard_profile
from smtp_server import SmtpServer, smtp_section

T = TypeVar("T")
MakeServer = Callable[..., SmtpServer]

WORK = "Ada at Work <ada@work.example>"
HOME = "Ada at Home <Ada@Home.Example>"
"""Mixed case on purpose: addresses match without regard to case."""
GRACE = {
    "PR_EMAIL_ADDRESS": "grace@example.org",
    "PR_DISPLAY_NAME": "Grace Hopper",
    "PR_ADDRTYPE": "SMTP",
    "PR_RECIPIENT_TYPE": 1,
}


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 15.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def parse(mime: bytes) -> EmailMessage:
    message = email.message_from_bytes(mime, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def from_of(mime: bytes) -> list[tuple[str, str]]:
    return [(a.display_name, a.addr_spec) for a in parse(mime)["From"].addresses]


@dataclass
class Accounts:
    daemon: DaemonProc
    work: SmtpServer
    home: SmtpServer


def two_account_profile(
    root: Path,
    work: SmtpServer,
    home: SmtpServer,
    *,
    identity: bool = True,
    autologon: bool = False,
) -> str:
    """vCard book (Ada's identity, ada@example.org, unless `identity` is false), a Maildir,
    transports `work` and `home` in that order in the file, `home` first in transport order."""
    order = [provider_uid("alpha", key, "smtp").hex() for key in ("home", "work")]
    return (
        f"transport_order = {order!r}\n".replace("'", '"')
        + standard_profile(root, identity=identity, autologon=autologon)
        + smtp_section(work, key="work", sender=WORK)
        + smtp_section(home, key="home", sender=HOME)
    )


@pytest.fixture
def accounts(make_daemon: DaemonFactory, make_smtp_server: MakeServer, tmp_path: Path) -> Accounts:
    work, home = make_smtp_server(), make_smtp_server()
    profile = two_account_profile(tmp_path / "alpha", work, home)
    return Accounts(make_daemon(profiles={"alpha": profile}), work, home)


@dataclass
class Mail:
    """One logged-on member with its default store open for writing."""

    client: Client
    token: bytes
    store: int = 0
    store_props: dict[str, Any] = field(default_factory=dict)
    folders: dict[str, int] = field(default_factory=dict)

    @classmethod
    def logon(cls, client: Client) -> Mail:
        logon = client.session_logon("alpha", ["MAPI_NEW_SESSION"])
        mail = cls(client, logon["token"])
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

    def subjects(self, name: str) -> list[str]:
        rows = self.client.container_contents_table(
            self.token, self.folder(name), {"columns": ["PR_SUBJECT"]}
        )["rows"]
        return sorted(str(r["PR_SUBJECT"]) for r in rows)

    def send(self, subject: str, sender: tuple[str, str] | None = None) -> None:
        """Compose in Drafts and submit; `sender` is (PR_SENT_REPRESENTING_NAME, _EMAIL_ADDRESS)."""
        props: dict[str, Any] = {"PR_SUBJECT": subject, "PR_BODY": f"{subject}\n"}
        if sender is not None:
            props["PR_SENT_REPRESENTING_NAME"] = sender[0]
            props["PR_SENT_REPRESENTING_EMAIL_ADDRESS"] = sender[1]
        created = self.client.folder_create_message(
            self.token, self.folder("Drafts"), props, [GRACE]
        )
        self.client.message_submit(self.token, created["handle"], release=True)

    def spooler_row(self) -> dict[str, Any]:
        rows = self.client.session_status_table(self.token)["rows"]
        return next(r for r in rows if r["PR_RESOURCE_TYPE"] == int(ResourceType.MAPI_SPOOLER))

    def spooler_says(self) -> str:
        return str(self.spooler_row().get("PR_STATUS_STRING", ""))

    def flush(self) -> None:
        """status.flush_queues on the spooler's row: returns when the pass is done."""
        entry = self.spooler_row()["PR_ENTRYID"]
        handle = self.client.session_open_entry(self.token, entry)["handle"]
        self.client.status_flush_queues(self.token, handle, ["FLUSH_UPLOAD"])

    def drained(self, *subjects: str) -> None:
        """Wait until the spooler is done with these: in Sent Items, the Outbox empty."""
        wait_for(
            f"{subjects} in Sent Items and an empty Outbox",
            lambda: (
                set(subjects) <= set(self.subjects("Sent Items")) and self.subjects("Outbox") == []
            ),
        )


def subjects(server: SmtpServer) -> list[str]:
    return [str(parse(m.content)["Subject"]) for m in server.messages]


# -- by the sender -----------------------------------------------------------------------------


def test_each_sender_goes_out_through_its_own_account(accounts: Accounts) -> None:
    mail = Mail.logon(accounts.daemon.client())
    # work is second in transport order: only its sender takes the message there.
    mail.send("From work", sender=("Ada (office)", "ADA@work.example"))
    [got] = accounts.work.wait_for(1)
    mail.drained("From work")
    assert accounts.home.messages == []
    assert got.mail_from == "ada@work.example"  # the transport's own `from`
    assert from_of(got.content) == [("Ada (office)", "ADA@work.example")]  # as the client set it

    mail.send("From home", sender=("Ada", "ada@home.example"))
    [got] = accounts.home.wait_for(1)
    mail.drained("From home")
    assert subjects(accounts.work) == ["From work"]
    assert got.mail_from == "Ada@Home.Example"
    assert from_of(got.content) == [("Ada", "ada@home.example")]


def test_a_queue_of_both_accounts_each_to_its_server(accounts: Accounts) -> None:
    """Submitted while both servers are down, then flushed: each message to its account,
    in queue order, none to the other."""
    mail = Mail.logon(accounts.daemon.client())
    accounts.work.stop()
    accounts.home.stop()
    names = ["w1", "h1", "w2", "w3", "h2"]
    for name in names:
        mail.send(
            name, sender=("Ada", "ada@work.example" if name[0] == "w" else "ada@home.example")
        )
    wait_for("the spooler to wait", lambda: mail.spooler_says().startswith("5 queued"))
    accounts.work.start()
    accounts.home.start()
    mail.flush()
    assert subjects(accounts.work) == ["w1", "w2", "w3"]
    assert subjects(accounts.home) == ["h1", "h2"]
    mail.drained(*names)


def test_a_senders_account_down_keeps_its_message_waiting_for_it(accounts: Accounts) -> None:
    """Its server is down: the message waits for it, never goes out through the other
    account; the other account's mail goes on meanwhile."""
    mail = Mail.logon(accounts.daemon.client())
    accounts.work.stop()
    mail.send("Waits for work", sender=("Ada", "ada@work.example"))
    wait_for("the spooler to wait", lambda: "work: " in mail.spooler_says())
    mail.send("Home meanwhile", sender=("Ada", "ada@home.example"))
    accounts.home.wait_for(1)
    wait_for(
        "home's message in Sent Items", lambda: "Home meanwhile" in mail.subjects("Sent Items")
    )
    assert subjects(accounts.home) == ["Home meanwhile"]
    assert mail.subjects("Outbox") == ["Waits for work"]
    accounts.work.start()
    mail.flush()
    assert subjects(accounts.work) == ["Waits for work"]
    assert subjects(accounts.home) == ["Home meanwhile"]


# -- no sender, or one no account has ----------------------------------------------------------


def test_no_sender_goes_through_the_first_transport_as_its_from(
    make_daemon: DaemonFactory, make_smtp_server: MakeServer, tmp_path: Path
) -> None:
    """A session without an identity and a message without a sender: the first transport
    in transport order (home, second in the file) sends it, From its `from`."""
    work, home = make_smtp_server(), make_smtp_server()
    profile = two_account_profile(tmp_path / "alpha", work, home, identity=False)
    mail = Mail.logon(make_daemon(profiles={"alpha": profile}).client())
    mail.send("Nobody's")
    [got] = home.wait_for(1)
    mail.drained("Nobody's")
    assert work.messages == []
    assert got.mail_from == "Ada@Home.Example"
    assert from_of(got.content) == [("Ada at Home", "Ada@Home.Example")]


def test_the_sessions_identity_no_account_has_is_the_first_transports(
    accounts: Accounts,
) -> None:
    """No sender set by the client: message.submit stamps the session's identity
    (ada@example.org), which neither transport sends as; the first transport sends it and
    its `from` replaces the identity, as with one transport."""
    mail = Mail.logon(accounts.daemon.client())
    mail.send("Stamped")
    [got] = accounts.home.wait_for(1)
    mail.drained("Stamped")
    assert accounts.work.messages == []
    assert from_of(got.content) == [("Ada at Home", "Ada@Home.Example")]


def test_an_unknown_sender_goes_through_the_first_transport_keeping_its_from(
    accounts: Accounts,
) -> None:
    """A sender none of the accounts sends as: the first transport in transport order
    sends it, the envelope sender is that account's, and From stays what the client set
    (PR_SENT_REPRESENTING_* as MAPI keeps it)."""
    mail = Mail.logon(accounts.daemon.client())
    mail.send("For the board", sender=("The Board", "board@example.net"))
    [got] = accounts.home.wait_for(1)
    mail.drained("For the board")
    assert accounts.work.messages == []
    assert got.mail_from == "Ada@Home.Example"
    assert from_of(got.content) == [("The Board", "board@example.net")]


# -- messages submitted as MIME ----------------------------------------------------------------


def mime_from(sender: bytes, subject: str) -> bytes:
    return (
        b"From: " + sender + b"\n"
        b"To: Grace Hopper <grace@example.org>\n"
        b"Subject: " + subject.encode() + b"\n"
        b"\n"
        b"Sent as MIME.\n"
    )


def test_a_mime_message_routes_on_its_from_header(accounts: Accounts) -> None:
    """Imported as MIME and submitted: the From header is the sender, matched on its
    address part without regard to case."""
    mail = Mail.logon(accounts.daemon.client())
    mime = mime_from(b'"Lovelace, Ada (work)" <Ada@WORK.example>', "MIME from work")
    c, t = mail.client, mail.token
    imported = c.folder_import_message(t, mail.folder("Drafts"), mime)
    opened = c.session_open_entry(t, imported["entryid"], ["MAPI_MODIFY"])
    c.message_submit(t, opened["handle"], release=True)
    [got] = accounts.work.wait_for(1)
    mail.drained("MIME from work")
    assert accounts.home.messages == []
    assert got.mail_from == "ada@work.example"
    assert from_of(got.content) == [("Lovelace, Ada (work)", "Ada@WORK.example")]
    assert parse(got.content).get_content() == "Sent as MIME.\n"


def test_mime_put_in_the_outbox_routes_on_its_from_header(accounts: Accounts) -> None:
    """Put in the Outbox as MIME, the way any Maildir client queues it (then flushed)."""
    mail = Mail.logon(accounts.daemon.client())
    outbox = mail.folder("Outbox")
    mail.client.folder_import_message(mail.token, outbox, mime_from(b"ada@home.example", "h"))
    mail.client.folder_import_message(mail.token, outbox, mime_from(b"ada@work.example", "w"))
    mail.flush()
    assert subjects(accounts.home) == ["h"]
    assert subjects(accounts.work) == ["w"]
    assert from_of(accounts.work.messages[0].content) == [("", "ada@work.example")]
    mail.drained("h", "w")


# -- mapictl send --from -----------------------------------------------------------------------


def mapictl(daemon: DaemonProc, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mapid.cli.app", "--runtime-dir", str(daemon.runtime), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_mapictl_send_from_picks_the_account(
    make_daemon: DaemonFactory, make_smtp_server: MakeServer, tmp_path: Path
) -> None:
    """`mapictl send --from` sets the sender the spooler routes on: as properties
    (PR_SENT_REPRESENTING_*), and as the From of the MIME that --attach builds."""
    work, home = make_smtp_server(), make_smtp_server()
    profile = two_account_profile(tmp_path / "alpha", work, home, autologon=True)
    daemon = make_daemon(profiles={"alpha": profile})
    send = ["send", "--to", "grace@example.org", "--body", "x", "--wait"]
    done = mapictl(daemon, *send, "-s", "Plain from work", "--from", "Ada W. <ada@work.example>")
    assert done.returncode == 0, done.stderr
    assert "sent; a copy is in Sent Items" in done.stdout
    [got] = work.wait_for(1)
    assert home.messages == []
    assert got.mail_from == "ada@work.example"
    assert from_of(got.content) == [("Ada W.", "ada@work.example")]

    attachment = tmp_path / "notes.txt"
    attachment.write_text("notes\n")
    with_file = [*send, "-s", "Attached from work", "--attach", str(attachment)]
    done = mapictl(daemon, *with_file, "--from", "ADA@WORK.EXAMPLE")
    assert done.returncode == 0, done.stderr
    assert subjects(work) == ["Plain from work", "Attached from work"]
    assert from_of(work.messages[1].content) == [("", "ADA@WORK.EXAMPLE")]
    assert home.messages == []

    done = mapictl(daemon, *send, "-s", "Default account")  # no --from: the first transport
    assert done.returncode == 0, done.stderr
    [got] = home.wait_for(1)
    assert subjects(home) == ["Default account"]
    assert from_of(got.content) == [("Ada at Home", "Ada@Home.Example")]
    assert len(work.messages) == 2
