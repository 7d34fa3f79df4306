"""The spooler's pure parts: the message made ready for the wire, the non-delivery report,
the daemon-wide queue claims and the identity read from status rows."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

import pytest

from mapid import entryid as eid
from mapid.constants import ResourceFlags, ResourceType
from mapid.daemon.sessions.identity import identity_row, row_identity
from mapid.daemon.sessions.queue_claims import QueueClaims
from mapid.daemon.spool import ndr
from mapid.daemon.spool.outgoing import NoSender, header_address, prepare, split_header
from mapid.providers.base import Identity

ADA = Identity("Ada Lovelace", "ada@example.org")


def parse(mime: bytes) -> EmailMessage:
    message = email.message_from_bytes(mime, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


# -- outgoing.prepare --------------------------------------------------------------------------

STORED = (
    b"Subject: Engines\n"
    b"To: Grace Hopper <grace@example.org>\n"
    b"Bcc: Bob <bob@example.org>,\n"
    b"  Eve <eve@example.org>\n"
    b"X-Mapid-Delete-After-Submit: yes\n"
    b"Content-Type: text/plain; charset=utf-8\n"
    b"\n"
    b"Body line one.\n"
    b"\n"
    b"Bcc: this is body text, not a header\n"
)


def test_prepare_adds_from_date_message_id_and_drops_bcc_keeping_the_body() -> None:
    ready = prepare(STORED, override=None, identity=ADA, now=0.0)
    message = parse(ready.mime)
    assert message["From"].addresses[0].addr_spec == "ada@example.org"
    assert message["From"].addresses[0].display_name == "Ada Lovelace"
    assert message["Date"].datetime.timestamp() == 0.0
    assert ready.message_id == message["Message-ID"] and ready.message_id.endswith("@example.org>")
    assert "Bcc" not in message and "X-Mapid-Delete-After-Submit" not in message
    assert ready.mime.endswith(STORED.split(b"\n\n", 1)[1])  # the body's bytes are untouched
    assert ready.sender == ADA
    kept = parse(ready.record)  # the Sent Items copy: what went out, and the Bcc
    assert [a.addr_spec for a in kept["Bcc"].addresses] == ["bob@example.org", "eve@example.org"]
    assert kept["Message-ID"] == message["Message-ID"]
    assert "X-Mapid-Delete-After-Submit" not in kept


def test_prepare_keeps_the_messages_own_from_and_ids() -> None:
    own = (
        b"From: Me <me@example.net>\r\nMessage-ID: <x@y>\r\n"
        b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nhi\r\n"
    )
    ready = prepare(own, override=None, identity=ADA)
    assert ready.mime == own
    assert ready.sender.email == "me@example.net" and ready.message_id == "<x@y>"


def test_the_transports_from_replaces_the_messages() -> None:
    own = b"From: Me <me@example.net>\r\nSubject: s\r\n\r\nhi\r\n"
    work = Identity("Ada at Work", "ada@work.example")
    ready = prepare(own, override=work, identity=ADA)
    message = parse(ready.mime)
    assert [a.addr_spec for a in message["From"].addresses] == ["ada@work.example"]
    assert ready.mime.count(b"From:") == 1
    assert b"\r\nSubject: s\r\n\r\nhi\r\n" in ready.mime  # CRLF stays CRLF
    assert ready.sender == work


def test_non_ascii_names_are_encoded_words() -> None:
    ready = prepare(
        b"Subject: s\n\nb\n", override=None, identity=Identity("Ada Lövelace", "ada@x.org")
    )
    assert ready.mime.isascii()
    assert parse(ready.mime)["From"].addresses[0].display_name == "Ada Lövelace"


def test_no_sender_at_all() -> None:
    with pytest.raises(NoSender):
        prepare(b"Subject: s\n\nb\n", override=None, identity=None)


def test_split_header_edges() -> None:
    assert split_header(b"\nbody") == ([], b"\nbody")
    assert split_header(b"A: 1\nB: 2\n") == ([b"A: 1\n", b"B: 2\n"], b"")
    fields, rest = split_header(b"A: 1\n cont\nnot a header\n\nx")
    assert fields == [b"A: 1\n cont\n"] and rest == b"not a header\n\nx"
    ready = prepare(b"Subject: s\nno blank line before this body\n", override=None, identity=ADA)
    assert parse(ready.mime).get_content().strip() == "no blank line before this body"


# -- ndr.build ---------------------------------------------------------------------------------


def test_a_report_is_rfc_3464() -> None:
    original = (
        b"From: Ada <ada@example.org>\nSubject: Engines\nMessage-ID: <m1@example.org>\n\nbody\n"
    )
    failures = [
        ndr.Failure("grace@example.org", "Grace Hopper", "550 5.1.1 No such user here"),
        ndr.Failure("x@example.org", "", "no transport takes address type X400", "5.1.0"),
    ]
    report = parse(ndr.build(original, failures, to=ADA, delivered_to_others=True, host="h"))
    assert report["Subject"] == "Undeliverable: Engines"
    assert report["In-Reply-To"] == "<m1@example.org>"
    assert report["Auto-Submitted"] == "auto-replied"
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    text, status, attached = list(report.iter_parts())
    words = text.get_content()
    assert "Grace Hopper <grace@example.org>" in words and "550 5.1.1 No such user here" in words
    assert "delivered to the other recipients" in words
    blocks = status.get_payload()
    assert blocks[0]["Reporting-MTA"] == "dns; h"
    assert [(b["Final-Recipient"], b["Status"], b["Diagnostic-Code"]) for b in blocks[1:]] == [
        ("rfc822; grace@example.org", "5.1.1", "smtp; 550 5.1.1 No such user here"),
        ("rfc822; x@example.org", "5.1.0", "X-mapid; no transport takes address type X400"),
    ]
    assert attached.get_payload()[0]["Message-ID"] == "<m1@example.org>"


def test_status_codes_from_the_servers_words() -> None:
    assert ndr.Failure("a@b", "", "554 5.7.1 relay denied").status_code() == "5.7.1"
    assert ndr.Failure("a@b", "", "550 mailbox unavailable").status_code() == "5.0.0"
    assert ndr.Failure("a@b", "", "timed out 4.4.1").status_code() == "5.0.0"


# -- queue claims ------------------------------------------------------------------------------


class Claimer:
    def __init__(self, name: str) -> None:
        self.label = name
        self.took = 0
        self.kicks = 0

    def took_over(self) -> None:
        self.took += 1

    def kick(self) -> None:
        self.kicks += 1

    async def flush(self) -> None:
        self.kicks += 1


def test_one_owner_per_store_and_the_next_in_line_takes_over() -> None:
    claims = QueueClaims()
    uid, other = b"\x01" * 16, b"\x02" * 16
    a, b, c = Claimer("a"), Claimer("b"), Claimer("c")
    assert claims.claim(uid, a) and claims.claim(uid, a)
    assert not claims.claim(uid, b) and not claims.claim(uid, c)
    assert claims.claim(other, b)  # another store is another queue
    assert claims.owner(uid) is a
    claims.release(uid, c)  # leaving the line changes nothing for the owner
    assert claims.owner(uid) is a and c.took == 0
    claims.release(uid, a)
    assert claims.owner(uid) is b and b.took == 1
    claims.release(uid, b)
    assert claims.owner(uid) is None
    assert claims.claim(uid, c)


# -- identity ----------------------------------------------------------------------------------


def _row(rowid: int, **props: object) -> dict[str, object]:
    return {"PR_ROWID": rowid, "PR_RESOURCE_TYPE": int(ResourceType.MAPI_AB_PROVIDER), **props}


def test_identity_row_prefers_the_flagged_row() -> None:
    unflagged = _row(1, PR_IDENTITY_ENTRYID=eid.one_off("U", "SMTP", "u@x.org"))
    flagged = _row(
        2,
        PR_RESOURCE_FLAGS=int(ResourceFlags.STATUS_PRIMARY_IDENTITY),
        PR_IDENTITY_DISPLAY="Flagged",
        PR_IDENTITY_SEARCH_KEY=eid.search_key("SMTP", "Flagged@X.org"),
    )
    assert identity_row([unflagged, flagged]) is flagged
    assert identity_row([unflagged]) is unflagged
    assert identity_row([_row(3)]) is None
    assert row_identity(flagged) == Identity("Flagged", "flagged@x.org", "SMTP")
    assert row_identity(unflagged) == Identity("U", "u@x.org", "SMTP")  # as written
    assert row_identity(_row(4)) is None


@pytest.mark.parametrize(
    "value",
    [
        b"Ada Lovelace <ada@example.org>",
        b"<ada@example.org>",
        b"ada@example.org",
        b"x-y_z <a+b@c-d.e>  ",
        b"O'Brien <ob@x.ie>",
        b'"Lovelace, Ada" <ada@example.org>',
        b"Ada L. Lovelace <ada@example.org>",
        b"=?utf-8?q?Ad=C3=A9?= <a@b.c>",
        b"ada@example.org (Ada)",
        b"Ada  Lovelace <ada@example.org>",
        b"Ada <ada@example.org>, Bob <bob@example.org>",
        b"undisclosed",
    ],
)
def test_header_address_reads_a_from_as_the_email_package_does(value: bytes) -> None:
    """The plain-address fast path and the parser it stands in for agree, eol or not."""
    for field in (b"From: " + value + b"\r\n", b"from:\t" + value + b"\n", b"FROM:" + value):
        parsed = email.message_from_bytes(field + b"\n", policy=email.policy.default)
        addresses = [a for a in parsed["From"].addresses if "@" in a.addr_spec]
        expected = (
            Identity(addresses[0].display_name, addresses[0].addr_spec) if addresses else None
        )
        assert header_address([field], "From") == expected
