"""RFC 5322 messages <-> MAPI properties: the one mapping every message store shares.

Two readers share one set of header rules so a contents-table row and the opened message
never disagree: `HeaderSummary` reads the fields a table shows from the header block alone
(with a small parser of its own: a folder of 100 000 files cannot afford email's parsers),
and `message_props` adds bodies, attachments and the rest from a policy.default parse.
`compose` goes the other way, for messages a client writes (`compose_parsed` also parses
what it made, once, for the contents table and the spooler).

Pure conversions: no paths, no files, no store; the Maildir store (providers/maildir/) uses
it, and a later IMAP store is meant to share it.
"""

from __future__ import annotations

import email.utils
import functools
import html
import os
import re
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.header import decode_header, make_header
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser
from html.parser import HTMLParser
from typing import Any, BinaryIO

from mapid.constants import RecipientType
from mapid.entryid import one_off, search_key
from mapid.errors import ErrorCode, MapiError
from mapid.proptags import (
    PR_ADDRTYPE,
    PR_BODY,
    PR_BODY_HTML,
    PR_CLIENT_SUBMIT_TIME,
    PR_DELETE_AFTER_SUBMIT,
    PR_DISPLAY_BCC,
    PR_DISPLAY_CC,
    PR_DISPLAY_NAME,
    PR_DISPLAY_TO,
    PR_EMAIL_ADDRESS,
    PR_ENTRYID,
    PR_HASATTACH,
    PR_HTML,
    PR_IN_REPLY_TO_ID,
    PR_INTERNET_MESSAGE_ID,
    PR_INTERNET_REFERENCES,
    PR_MESSAGE_CLASS,
    PR_NORMALIZED_SUBJECT,
    PR_RECIPIENT_TYPE,
    PR_SEARCH_KEY,
    PR_SENDER_ADDRTYPE,
    PR_SENDER_EMAIL_ADDRESS,
    PR_SENDER_NAME,
    PR_SENDER_SEARCH_KEY,
    PR_SENT_REPRESENTING_ADDRTYPE,
    PR_SENT_REPRESENTING_EMAIL_ADDRESS,
    PR_SENT_REPRESENTING_NAME,
    PR_SENT_REPRESENTING_SEARCH_KEY,
    PR_SUBJECT,
    PR_SUBJECT_PREFIX,
    PR_TRANSPORT_MESSAGE_HEADERS,
)

__all__ = [
    "DELETE_AFTER_SUBMIT_HEADER",
    "LOOP_COMPOSE_BYTES",
    "LOOP_COMPOSE_RECIPIENTS",
    "Composed",
    "HeaderSummary",
    "MailRecipient",
    "Save",
    "compose",
    "compose_parsed",
    "composes_quickly",
    "header_block",
    "message_props",
    "parse_header_block",
    "recipients_of",
    "split_head",
    "split_subject",
    "summarize",
    "text_size",
]

DELETE_AFTER_SUBMIT_HEADER = "X-Mapid-Delete-After-Submit"
"""PR_DELETE_AFTER_SUBMIT kept in the file, so the queue on disk carries it."""
LOOP_COMPOSE_BYTES = 64 * 1024
LOOP_COMPOSE_RECIPIENTS = 100
"""A new message up to these sizes is composed on the event loop at submit (tens of µs;
64 KiB of text take about a millisecond), a bigger one in the worker thread."""
CLASS_NOTE = "IPM.Note"
CLASS_NDR = "REPORT.IPM.Note.NDR"
CLASS_READ_RECEIPT = "REPORT.IPM.Note.IPNRN"
HEADER_LIMIT = 256 * 1024
"""The most of a file read for its header block (a longer block is cut there)."""
_CHUNK = 8192
_PREFIX = re.compile(r"^([^\s\d:]{1,3}):\s+")
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_FULL = BytesParser(policy=policy.default)


# --- Header values ---------------------------------------------------------------------------


def decode_text(value: str | None) -> str:
    """A header value as text: unfolded, RFC 2047 words decoded, raw UTF-8 (RFC 6532) kept."""
    if value is None:
        return ""
    text = _FOLD.sub("", str(value)) if "\n" in value else str(value)
    if text.isascii():
        return text.strip() if "=?" not in text else _decode_words(text)
    if any("\udc80" <= ch <= "\udcff" for ch in text):  # 8-bit bytes from the parser
        text = text.encode("ascii", "surrogateescape").decode("utf-8", "replace")
    return text.strip() if "=?" not in text else _decode_words(text)


def _decode_words(text: str) -> str:
    try:
        return str(make_header(decode_header(text))).strip()
    except (ValueError, LookupError, UnicodeError):
        return text.strip()


def parse_addresses(values: Iterable[str | None]) -> list[tuple[str, str]]:
    """(display name, address) pairs of address headers; groups are flattened.

    The usual forms (`Name <addr>`, `addr`, comma-separated) take a regular expression;
    anything with quotes, comments or groups goes through email.utils.getaddresses.
    """
    pairs: list[tuple[str, str]] = []
    for value in values:
        if not value:
            continue
        text = _FOLD.sub("", str(value))
        simple = _simple_addresses(text)
        found = simple if simple is not None else email.utils.getaddresses([text])
        for name, addr in found:
            if addr or name:
                pairs.append((decode_text(name), decode_text(addr)))
    return pairs


_NAMED = re.compile(r"^\s*([^<>]*?)\s*<([^<>\s]*)>\s*$")
_BARE = re.compile(r"^\s*([^\s<>]+)\s*$")


def _simple_addresses(text: str) -> list[tuple[str, str]] | None:
    if any(ch in text for ch in '"()\\;:[]'):
        return None
    out: list[tuple[str, str]] = []
    for part in text.split(","):
        if not part.strip():
            continue
        match = _NAMED.match(part)
        if match is not None:
            out.append((match.group(1), match.group(2)))
            continue
        match = _BARE.match(part)
        if match is None:
            return None
        out.append(("", match.group(1)))
    return out


def display_list(pairs: Sequence[tuple[str, str]]) -> str:
    """PR_DISPLAY_TO and its kin: display names (or addresses) joined by "; " as MAPI does."""
    return "; ".join(name or addr for name, addr in pairs)


def split_subject(subject: str) -> tuple[str, str]:
    """(PR_SUBJECT_PREFIX, PR_NORMALIZED_SUBJECT): MAPI's prefix is 1-3 letters, a colon and
    a space ("RE: ", "Fwd: ", "AW: "); a subject without one has an empty prefix."""
    match = _PREFIX.match(subject)
    if match is None:
        return "", subject
    return match.group(0), subject[match.end() :]


def parse_date(value: str | None) -> datetime | None:
    """A Date header as an aware UTC datetime; an unreadable one is None."""
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(_FOLD.sub("", str(value)).strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": the sender did not say; read it as UTC
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def message_class(content_type: str, report_type: str | None) -> str:
    """PR_MESSAGE_CLASS from the top-level content type."""
    if content_type == "multipart/report":
        kind = (report_type or "").lower()
        if kind == "delivery-status":
            return CLASS_NDR
        if kind == "disposition-notification":
            return CLASS_READ_RECEIPT
    return CLASS_NOTE


# --- The table's fields, from the header block only ------------------------------------------


def header_block(source: str | int | BinaryIO) -> bytes:
    """The header block of a message file (a path, an open descriptor or a file):
    everything up to the first empty line."""
    if isinstance(source, str):
        with open(source, "rb") as handle:
            return header_block(handle)
    read = (lambda n: os.read(source, n)) if isinstance(source, int) else source.read
    data = b""
    while len(data) < HEADER_LIMIT:
        chunk = read(_CHUNK)
        if not chunk:
            break
        start = max(0, len(data) - 3)
        data += chunk
        for sep in (b"\n\n", b"\r\n\r\n"):
            end = data.find(sep, start)
            if end >= 0:
                return data[: end + len(sep)]
    return data[:HEADER_LIMIT]


class Headers:
    """A header block: values by lower-case name, unfolded, in file order.

    A small parser of its own: email's parsers cost 30 to 800 us a message, which a folder
    of 100 000 messages cannot afford. 8-bit bytes stay as surrogates for decode_text.
    """

    __slots__ = ("_values",)

    def __init__(self, block: bytes) -> None:
        values: dict[str, list[str]] = {}
        current: list[str] | None = None
        for line in block.decode("utf-8", "surrogateescape").split("\n"):
            line = line.rstrip("\r")
            if not line:
                if current is None and not values:
                    continue  # blank lines before the headers
                break
            if line[0] in " \t":
                if current is not None:
                    current[-1] += line
                continue
            name, sep, value = line.partition(":")
            if not sep or not name.strip() or " " in name.strip():
                current = None  # not a header (an mbox "From " line)
                continue
            current = values.setdefault(name.strip().lower(), [])
            current.append(value.strip())
        self._values = values

    def get(self, name: str, default: str | None = None) -> str | None:
        found = self._values.get(name.lower())
        return found[0] if found else default

    def get_all(self, name: str) -> list[str]:
        return list(self._values.get(name.lower(), ()))

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._values

    def content_type(self) -> tuple[str, str | None]:
        """(type/subtype, report-type parameter); text/plain when absent or unreadable."""
        value = self.get("content-type")
        if not value:
            return "text/plain", None
        ctype = value.split(";", 1)[0].strip().lower()
        if ctype.count("/") != 1:
            ctype = "text/plain"
        match = _REPORT_TYPE.search(value)
        return ctype, match.group(1) if match else None


_REPORT_TYPE = re.compile(r"report-type\s*=\s*\"?([^\";\s]+)", re.IGNORECASE)


def split_head(raw: bytes) -> bytes:
    """The header block of a whole message, with the empty line that ends it."""
    ends = [i + len(sep) for sep in (b"\n\n", b"\r\n\r\n") if (i := raw.find(sep)) >= 0]
    return raw[: min(ends)] if ends else raw


def parse_header_block(data: bytes) -> Headers:
    return Headers(data)


@dataclass(frozen=True, slots=True)
class HeaderSummary:
    """What a contents-table row shows of a message, read from its headers."""

    subject: str
    sender_name: str | None
    sender_email: str | None
    display_to: str
    submit_time: datetime | None
    message_class: str
    has_attach: bool
    """From the headers alone: a multipart/mixed message, or a single non-text part."""


def summarize(headers: Headers) -> HeaderSummary:
    sender = _sender(headers, "from")
    ctype, report_type = headers.content_type()
    return HeaderSummary(
        subject=decode_text(headers.get("subject")),
        sender_name=(sender[0] or sender[1]) if sender else None,
        sender_email=sender[1] if sender else None,
        display_to=display_list(parse_addresses(headers.get_all("to"))),
        submit_time=parse_date(headers.get("date")),
        message_class=message_class(ctype, report_type),
        has_attach=_attach_by_headers(ctype),
    )


def _attach_by_headers(ctype: str) -> bool:
    main = ctype.split("/", 1)[0]
    return ctype == "multipart/mixed" or main not in ("text", "multipart")


def _sender(headers: Headers, name: str) -> tuple[str, str] | None:
    pairs = parse_addresses(headers.get_all(name))
    return pairs[0] if pairs else None


# --- The whole message ----------------------------------------------------------------------


@dataclass(frozen=True)
class MailRecipient:
    display_name: str
    address: str
    recipient_type: RecipientType


def recipients_of(headers: Headers) -> list[MailRecipient]:
    """To, Cc and Bcc, in that order."""
    out: list[MailRecipient] = []
    for name, kind in (
        ("to", RecipientType.MAPI_TO),
        ("cc", RecipientType.MAPI_CC),
        ("bcc", RecipientType.MAPI_BCC),
    ):
        for display, addr in parse_addresses(headers.get_all(name)):
            out.append(MailRecipient(display or addr, addr, kind))
    return out


def recipient_row(recipient: MailRecipient, rowid: int) -> dict[str, Any]:
    """A recipient-table row; the instance key is the row id, unique in the table."""
    eid = one_off(recipient.display_name, "SMTP", recipient.address)
    return {
        PR_DISPLAY_NAME.name: recipient.display_name,
        PR_EMAIL_ADDRESS.name: recipient.address,
        PR_ADDRTYPE.name: "SMTP",
        PR_RECIPIENT_TYPE.name: int(recipient.recipient_type),
        PR_SEARCH_KEY.name: search_key("SMTP", recipient.address),
        PR_ENTRYID.name: eid,
        "PR_ROWID": rowid,
        "PR_INSTANCE_KEY": rowid.to_bytes(4, "little"),
    }


class _TextOfHtml(HTMLParser):
    """A plain rendering of HTML for PR_BODY of mail that has no text/plain part."""

    _BREAKS = frozenset({"br", "p", "div", "tr", "li", "h1", "h2", "h3", "h4", "table"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "head"):
            self._skip += 1
        elif tag in self._BREAKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head") and self._skip:
            self._skip -= 1
        elif tag in ("p", "div", "table", "h1", "h2", "h3", "h4"):
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)

    def text(self) -> str:
        joined = re.sub(r"[ \t]+", " ", "".join(self.parts))
        return re.sub(r"\n\s*\n+", "\n\n", joined).strip() + "\n"


def html_to_text(markup: str) -> str:
    parser = _TextOfHtml()
    try:
        parser.feed(markup)
        parser.close()
    except (ValueError, AssertionError):
        return html.unescape(re.sub(r"<[^>]*>", "", markup))
    return parser.text()


def _part_text(part: EmailMessage) -> str:
    try:
        return str(part.get_content())
    except (LookupError, ValueError, AssertionError):
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""


def parse_message(raw: bytes) -> EmailMessage:
    msg = _FULL.parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    return msg


def message_props(raw: bytes) -> tuple[dict[str, Any], bool]:
    """The properties an RFC 5322 message gives, and whether it has attachments.

    The fields a contents table shows come from `summarize`, so they match the table.
    """
    head = split_head(raw)
    headers = parse_header_block(head)
    summary = summarize(headers)
    msg = parse_message(raw)
    prefix, normalized = split_subject(summary.subject)
    props: dict[str, Any] = {
        PR_SUBJECT.name: summary.subject,
        PR_SUBJECT_PREFIX.name: prefix,
        PR_NORMALIZED_SUBJECT.name: normalized,
        PR_MESSAGE_CLASS.name: summary.message_class,
        PR_DISPLAY_TO.name: summary.display_to,
        PR_DISPLAY_CC.name: display_list(parse_addresses(headers.get_all("cc"))),
        PR_DISPLAY_BCC.name: display_list(parse_addresses(headers.get_all("bcc"))),
        PR_TRANSPORT_MESSAGE_HEADERS.name: head.decode("utf-8", "replace").replace("\r\n", "\n")[
            :-1
        ],
    }
    if summary.submit_time is not None:
        props[PR_CLIENT_SUBMIT_TIME.name] = summary.submit_time
    represented = _sender(headers, "from")
    sender = _sender(headers, "sender") or represented
    for who, tags in (
        (
            sender,
            (PR_SENDER_NAME, PR_SENDER_EMAIL_ADDRESS, PR_SENDER_ADDRTYPE, PR_SENDER_SEARCH_KEY),
        ),
        (
            represented,
            (
                PR_SENT_REPRESENTING_NAME,
                PR_SENT_REPRESENTING_EMAIL_ADDRESS,
                PR_SENT_REPRESENTING_ADDRTYPE,
                PR_SENT_REPRESENTING_SEARCH_KEY,
            ),
        ),
    ):
        if who is not None:
            name_tag, addr_tag, type_tag, key_tag = tags
            props[name_tag.name] = who[0] or who[1]
            props[addr_tag.name] = who[1]
            props[type_tag.name] = "SMTP"
            props[key_tag.name] = search_key("SMTP", who[1])
    for header, tag in (
        ("message-id", PR_INTERNET_MESSAGE_ID),
        ("in-reply-to", PR_IN_REPLY_TO_ID),
        ("references", PR_INTERNET_REFERENCES),
    ):
        value = headers.get(header)
        if value:
            props[tag.name] = decode_text(value)
    if str(headers.get(DELETE_AFTER_SUBMIT_HEADER, "")).strip().lower() in ("yes", "true", "1"):
        props[PR_DELETE_AFTER_SUBMIT.name] = True
    plain = msg.get_body(preferencelist=("plain",))
    rich = msg.get_body(preferencelist=("html",))
    if rich is not None:
        markup = _part_text(rich)  # type: ignore[arg-type]
        props[PR_BODY_HTML.name] = markup
        props[PR_HTML.name] = markup.encode("utf-8")
    if plain is not None:
        props[PR_BODY.name] = _part_text(plain)  # type: ignore[arg-type]
    elif rich is not None:
        props[PR_BODY.name] = html_to_text(props[PR_BODY_HTML.name])
    # The contents table can only judge by the headers (it never reads bodies), so the
    # opened message judges the same way, as Thunderbird's paperclip does: a table and its
    # message never disagree.
    has_attach = _attach_by_headers(msg.get_content_type())
    props[PR_HASATTACH.name] = has_attach
    return props, has_attach


# --- Writing ---------------------------------------------------------------------------------

SETTABLE = frozenset(
    {
        PR_SUBJECT.name,
        PR_BODY.name,
        PR_BODY_HTML.name,
        PR_HTML.name,
        PR_DELETE_AFTER_SUBMIT.name,
        PR_INTERNET_MESSAGE_ID.name,
        PR_IN_REPLY_TO_ID.name,
        PR_INTERNET_REFERENCES.name,
        PR_CLIENT_SUBMIT_TIME.name,
        PR_SENT_REPRESENTING_NAME.name,
        PR_SENT_REPRESENTING_EMAIL_ADDRESS.name,
    }
)
"""Properties `compose` writes into the message itself."""


_LINE_BREAKS = re.compile(r"[\r\n]+\s*")


def one_line(text: str) -> str:
    """A value fit for a header: a line break in it (a client's subject pasted from a
    text) becomes a space, so it can never start a header of its own."""
    return _LINE_BREAKS.sub(" ", text).strip()


def _address(name: str, addr: str) -> str:
    name, addr = one_line(name), one_line(addr)
    if not name or name == addr:
        name = ""
    try:
        return str(Address(display_name=name or "", addr_spec=addr))
    except (ValueError, IndexError):
        return email.utils.formataddr((name, addr))


@functools.cache
def _msgid_domain() -> str:
    """The host name for new Message-IDs, read once: make_msgid() without a domain asks
    socket.getfqdn(), a DNS lookup that may block, for every message."""
    return socket.gethostname() or "localhost"


def compose(
    raw: bytes | None,
    changes: Mapping[str, Any],
    deleted: Iterable[str],
    recipients: Sequence[MailRecipient] | None,
) -> bytes:
    """The RFC 5322 bytes of a message after a client's changes.

    `raw` is the stored message (None for a new one); `changes` the set properties of
    SETTABLE, `deleted` those deleted, `recipients` the new recipient list (None: unchanged).
    A new message gets a Date and a Message-ID, as mutt gives a postponed message.
    """
    deleted = set(deleted)
    if raw is None and not deleted:
        simple = _compose_plain(changes, recipients)
        if simple is not None:
            return simple
    msg = parse_message(raw) if raw is not None else EmailMessage()
    header_tags = {
        PR_SUBJECT.name: "Subject",
        PR_INTERNET_MESSAGE_ID.name: "Message-ID",
        PR_IN_REPLY_TO_ID.name: "In-Reply-To",
        PR_INTERNET_REFERENCES.name: "References",
    }
    for tag, header in header_tags.items():
        if tag in changes or tag in deleted:
            del msg[header]
            if tag in changes and changes[tag] not in (None, ""):
                msg[header] = one_line(str(changes[tag]))
    if PR_CLIENT_SUBMIT_TIME.name in changes and isinstance(
        changes[PR_CLIENT_SUBMIT_TIME.name], datetime
    ):
        del msg["Date"]
        msg["Date"] = email.utils.format_datetime(changes[PR_CLIENT_SUBMIT_TIME.name])
    if PR_SENT_REPRESENTING_EMAIL_ADDRESS.name in changes:
        del msg["From"]
        addr = str(changes[PR_SENT_REPRESENTING_EMAIL_ADDRESS.name])
        msg["From"] = _address(str(changes.get(PR_SENT_REPRESENTING_NAME.name, "")), addr)
    if PR_DELETE_AFTER_SUBMIT.name in changes or PR_DELETE_AFTER_SUBMIT.name in deleted:
        del msg[DELETE_AFTER_SUBMIT_HEADER]
        if changes.get(PR_DELETE_AFTER_SUBMIT.name) is True:
            msg[DELETE_AFTER_SUBMIT_HEADER] = "yes"
    if recipients is not None:
        for header in ("To", "Cc", "Bcc"):
            del msg[header]
        for header, kind in (
            ("To", RecipientType.MAPI_TO),
            ("Cc", RecipientType.MAPI_CC),
            ("Bcc", RecipientType.MAPI_BCC),
        ):
            chosen = [r for r in recipients if r.recipient_type == kind]
            if chosen:
                msg[header] = ", ".join(_address(r.display_name, r.address) for r in chosen)
    body_tags = (PR_BODY.name, PR_BODY_HTML.name, PR_HTML.name)
    if raw is None or any(t in changes or t in deleted for t in body_tags):
        _set_body(msg, raw is None, changes, deleted)
    if "Date" not in msg:
        msg["Date"] = email.utils.format_datetime(datetime.now(UTC))
    if "Message-ID" not in msg:
        msg["Message-ID"] = email.utils.make_msgid(domain=_msgid_domain())
    if "MIME-Version" not in msg:
        msg["MIME-Version"] = "1.0"
    return msg.as_bytes(policy=policy.default.clone(linesep="\n"))


_PLAIN_TAGS = frozenset(
    {
        PR_SUBJECT.name,
        PR_BODY.name,
        PR_SENT_REPRESENTING_NAME.name,
        PR_SENT_REPRESENTING_EMAIL_ADDRESS.name,
    }
)
_PLAIN_TEXT = re.compile(r"[ -~]*")
"""Printable ASCII: a header value the email package would write as it is."""
_PLAIN_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
"""A display name of atoms alone: written without quotes."""
_PLAIN_ADDR = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@"
    r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
)
_LINE_MAX = 78


def _compose_plain(
    changes: Mapping[str, Any], recipients: Sequence[MailRecipient] | None
) -> bytes | None:
    """compose() of a new plain-text message with short ASCII lines, without the email
    package (a third of the CPU of a submit): the bytes policy.default would write for it,
    byte for byte (tests/test_maildir_fastpaths.py compares them). None: not such a message."""
    if not _PLAIN_TAGS.issuperset(changes):
        return None
    lines: list[str] = []
    subject = changes.get(PR_SUBJECT.name)
    if subject not in (None, ""):
        value = one_line(str(subject))
        if not _plain_value(value) or "=?" in value or len(value) + 9 > _LINE_MAX:
            return None
        lines.append(f"Subject: {value}" if value else "Subject:")
    if PR_SENT_REPRESENTING_EMAIL_ADDRESS.name in changes:
        name = str(changes.get(PR_SENT_REPRESENTING_NAME.name, ""))
        shown_from = _plain_address(name, str(changes[PR_SENT_REPRESENTING_EMAIL_ADDRESS.name]))
        if shown_from is None or len(shown_from) + 6 > _LINE_MAX:
            return None
        lines.append(f"From: {shown_from}")
    for header, kind in (
        ("To", RecipientType.MAPI_TO),
        ("Cc", RecipientType.MAPI_CC),
        ("Bcc", RecipientType.MAPI_BCC),
    ):
        chosen = [r for r in recipients or () if r.recipient_type == kind]
        if not chosen:
            continue
        shown = []
        for r in chosen:
            one = _plain_address(r.display_name, r.address)
            if one is None:
                return None
            shown.append(one)
        line = f"{header}: {', '.join(shown)}"
        if len(line) > _LINE_MAX:
            return None
        lines.append(line)
    body = str(changes.get(PR_BODY.name) or "")
    if not body.isascii():
        return None
    body_lines = body.encode("ascii").splitlines()
    if any(len(x) > _LINE_MAX for x in body_lines):
        return None
    lines += [
        'Content-Type: text/plain; charset="utf-8"',
        "Content-Transfer-Encoding: 7bit",
        "MIME-Version: 1.0",
        f"Date: {email.utils.format_datetime(datetime.now(UTC))}",
        f"Message-ID: {email.utils.make_msgid(domain=_msgid_domain())}",
    ]
    head = "\n".join(lines).encode("ascii")
    return head + b"\n\n" + b"\n".join(body_lines) + b"\n"


def _plain_address(display_name: str, address: str) -> str | None:
    """An address as the email package writes a plain one; None for any other."""
    name, addr = one_line(display_name), one_line(address)
    if not _PLAIN_ADDR.fullmatch(addr):
        return None
    if not name or name == addr:
        return addr
    if _PLAIN_NAME.fullmatch(name):
        return f"{name} <{addr}>"
    return None


def _plain_value(value: str) -> bool:
    return _PLAIN_TEXT.fullmatch(value) is not None and "  " not in value


def _set_body(msg: EmailMessage, new: bool, changes: Mapping[str, Any], deleted: set[str]) -> None:
    """Replace the text parts, keeping the attachments."""
    old_plain = None if new else msg.get_body(preferencelist=("plain",))
    old_html = None if new else msg.get_body(preferencelist=("html",))
    if PR_BODY.name in changes:
        plain: str | None = str(changes[PR_BODY.name] or "")
    elif PR_BODY.name in deleted or old_plain is None:
        plain = None
    else:
        plain = _part_text(old_plain)  # type: ignore[arg-type]
    markup: str | None
    if PR_BODY_HTML.name in changes:
        markup = str(changes[PR_BODY_HTML.name] or "")
    elif PR_HTML.name in changes:
        value = changes[PR_HTML.name]
        markup = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    elif PR_BODY_HTML.name in deleted or PR_HTML.name in deleted or old_html is None:
        markup = None
    elif PR_BODY.name in changes:
        markup = None  # a new plain body: the old HTML no longer says the same thing
    else:
        markup = _part_text(old_html)  # type: ignore[arg-type]
    attachments = [] if new or not msg.is_multipart() else list(msg.iter_attachments())
    msg.clear_content()
    if plain is None and markup is None:
        plain = ""
    if plain is not None:
        msg.set_content(plain)
        if markup is not None:
            msg.add_alternative(markup, subtype="html")
    else:
        msg.set_content(markup or "", subtype="html")
    if attachments:
        msg.make_mixed()
        for part in attachments:
            msg.attach(part)


# --- Composing for a store's save and submit ---------------------------------------------


@dataclass(frozen=True)
class Save:
    """A message's pending changes, for a save that goes with the submit."""

    raw: bytes | None
    changes: dict[str, Any]
    deleted: set[str]
    recipients: list[MailRecipient] | None
    flags: dict[str, Any]


@dataclass(frozen=True)
class Composed:
    """A message's bytes as composed, with its parsed header block (the index's row and the
    spooler's view both come from it: one parse)."""

    data: bytes
    headers: Headers
    summary: HeaderSummary | None
    """The index row's fields; None when the header block is longer than the index reads."""


def compose_parsed(
    raw: bytes | None,
    changes: dict[str, Any],
    deleted: set[str],
    recipients: list[MailRecipient] | None,
) -> Composed:
    data = compose(raw, changes, deleted, recipients)
    head = split_head(data)
    headers = parse_header_block(head)
    return Composed(data, headers, summarize(headers) if len(head) < HEADER_LIMIT else None)


def composes_quickly(save: Save) -> bool:
    """A new message whose composing takes well under a millisecond: done on the event loop
    rather than in the submit's worker thread, where it would contend for the GIL with the
    loop for longer than it takes (composing is CPU work, not I/O)."""
    if save.raw is not None or save.deleted:
        return False
    if save.recipients is not None and len(save.recipients) > LOOP_COMPOSE_RECIPIENTS:
        return False
    return text_size(save.changes.values()) <= LOOP_COMPOSE_BYTES


def text_size(values: Iterable[Any]) -> int:
    """The length of the strings and bytes among `values`, and in lists of them."""
    size = 0
    for value in values:
        if isinstance(value, str | bytes):
            size += len(value)
        elif isinstance(value, list | tuple):
            size += text_size(value)
    return size


def check_recipients(recipients: Sequence[Mapping[str, Any]], store: str) -> list[dict[str, Any]]:
    """Recipient rows a client gave (message.modify_recipients) as a message of `store`
    keeps them: an address without spaces or brackets, TO/CC/BCC, SMTP only; the type
    and address type filled in. MAPI_E_INVALID_PARAMETER names the first bad row."""
    checked: list[dict[str, Any]] = []
    for i, given in enumerate(recipients):
        address = given.get("PR_EMAIL_ADDRESS")
        if not isinstance(address, str) or not address.strip():
            raise MapiError(
                ErrorCode.MAPI_E_INVALID_PARAMETER, f"recipients[{i}] has no PR_EMAIL_ADDRESS"
            )
        if any(ch.isspace() or ch in "<>," for ch in address.strip()):
            raise MapiError(
                ErrorCode.MAPI_E_INVALID_PARAMETER,
                f"recipients[{i}]: {address!r} is not an e-mail address (no spaces, commas or "
                "angle brackets; put the name in PR_DISPLAY_NAME)",
            )
        kind = given.get("PR_RECIPIENT_TYPE", int(RecipientType.MAPI_TO))
        if kind not in (1, 2, 3):
            raise MapiError(
                ErrorCode.MAPI_E_INVALID_PARAMETER,
                f"recipients[{i}]: PR_RECIPIENT_TYPE must be MAPI_TO (1), MAPI_CC (2) or "
                "MAPI_BCC (3)",
            )
        addrtype = given.get("PR_ADDRTYPE", "SMTP")
        if not isinstance(addrtype, str) or addrtype.upper() != "SMTP":
            raise MapiError(
                ErrorCode.MAPI_E_INVALID_PARAMETER,
                f"recipients[{i}]: {store} message holds SMTP addresses only, not {addrtype!r}",
            )
        checked.append({**given, "PR_RECIPIENT_TYPE": int(kind), "PR_ADDRTYPE": "SMTP"})
    return checked
