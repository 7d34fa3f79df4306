"""A queued message made ready for the wire: From, Date and Message-ID set, Bcc gone.

Only the header block is edited, line by line; the body's bytes are passed on untouched, so
signatures and attachments survive. New header lines use the line ending the message uses.
"""

from __future__ import annotations

import email.policy
import email.utils
import functools
import re
from dataclasses import dataclass
from email.headerregistry import Address
from email.parser import BytesHeaderParser

from mapid.providers.base import Identity

_POLICY = email.policy.default.clone(linesep="\n", max_line_length=78)
HIDDEN_FIELDS = frozenset({b"bcc", b"resent-bcc"})
"""Header fields that never go on the wire: the envelope carries their recipients."""
PRIVATE_PREFIX = b"x-mapid-"
"""Fields a store keeps for itself (X-Mapid-Delete-After-Submit): not for the recipients."""


class NoSender(Exception):
    """Neither the transport, nor the message, nor the session names a sender."""


@dataclass(frozen=True)
class Prepared:
    mime: bytes
    sender: Identity
    """The envelope sender (MAIL FROM) and the From the message carries."""
    message_id: str
    record: bytes = b""
    """The copy for Sent Items: the bytes sent with the Bcc fields put back, so the sender
    still sees whom it went to blind (as Thunderbird's and mutt's sent copies do)."""


def split_header(mime: bytes) -> tuple[list[bytes], bytes]:
    """The header fields (each with its continuation lines) and the rest of the message,
    which starts with the blank line that ends the header (empty when there is none)."""
    fields: list[bytes] = []
    ends = [i for i in (mime.find(b"\n\n"), mime.find(b"\n\r\n")) if i >= 0]
    head_end = min(ends) + 1 if ends else len(mime)  # only the header block is split
    if mime.startswith((b"\n", b"\r\n")):
        head_end = 0
    lines = mime[:head_end].splitlines(keepends=True)
    for index, line in enumerate(lines):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        elif b":" in line:
            fields.append(line)
        else:  # not a header line: the body starts without a blank line
            return fields, b"".join(lines[index:]) + mime[head_end:]
    return fields, mime[head_end:]


def _name(field: bytes) -> bytes:
    return field.split(b":", 1)[0].strip().lower()


_PLAIN_ID = re.compile(
    rb"[A-Za-z-]+:[ \t]*(<[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+>)\r?\n?"
)
"""A one-line Message-ID field: its value is the text as it is, no parse needed."""


def header_value(fields: list[bytes], name: str) -> str | None:
    """The decoded value of the first field `name`, if any."""
    wanted = name.lower().encode()
    for field in fields:
        if _name(field) == wanted:
            if wanted == b"message-id" and (plain := _PLAIN_ID.fullmatch(field)) is not None:
                return plain.group(1).decode("ascii")
            parsed = BytesHeaderParser(policy=email.policy.default).parsebytes(field)
            value = parsed.get(name)
            return str(value) if value is not None else None
    return None


_ATOM = rb"[A-Za-z0-9!#$%&'*+/^_`{|}~-]+"
_ADDR_SPEC = _ATOM + rb"(?:\." + _ATOM + rb")*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_PLAIN_ADDRESS = re.compile(
    rb"[A-Za-z-]+:[ \t]*(?:(?P<name>"
    + _ATOM
    + rb"(?: "
    + _ATOM
    + rb")*) <(?P<angle>"
    + _ADDR_SPEC
    + rb")>|<(?P<bare_angle>"
    + _ADDR_SPEC
    + rb")>|(?P<bare>"
    + _ADDR_SPEC
    + rb"))[ \t]*\r?\n?"
)
"""A one-line field of one plain ASCII address (`Name Words <a@b>`, `<a@b>`, `a@b`: no
quotes, comments, dots in the name or encoded words), read as the email package reads it
without its cost (about 0.1 ms a parse, twice per message sent)."""


def header_address(fields: list[bytes], name: str) -> Identity | None:
    """The first address of an address field (From), or None when it has none."""
    wanted = name.lower().encode()
    for field in fields:
        if _name(field) != wanted:
            continue
        plain = _PLAIN_ADDRESS.fullmatch(field)
        if plain is not None:
            display = (plain.group("name") or b"").decode("ascii")
            spec = plain.group("angle") or plain.group("bare_angle") or plain.group("bare")
            return Identity(display, spec.decode("ascii"))
        parsed = BytesHeaderParser(policy=email.policy.default).parsebytes(field)
        try:
            header = parsed[name]
            addresses = getattr(header, "addresses", ())
        except Exception:  # a field the parser cannot make sense of counts as absent
            return None
        for address in addresses:
            if address.addr_spec and "@" in address.addr_spec:
                return Identity(address.display_name, address.addr_spec)
        return None
    return None


@functools.lru_cache(maxsize=64)
def _field(name: str, value: str, eol: bytes) -> bytes:
    """One folded header field (kept: the same From goes on message after message)."""
    folded: str = _POLICY.header_factory(name, value).fold(policy=_POLICY)
    return folded.encode("ascii", "surrogateescape").replace(b"\n", eol)


def _from_value(identity: Identity) -> str:
    local, _, domain = identity.email.rpartition("@")
    try:
        return str(Address(identity.display_name, local, domain))
    except (ValueError, IndexError):
        return email.utils.formataddr((identity.display_name, identity.email))


def prepare(
    mime: bytes, *, override: Identity | None, identity: Identity | None, now: float | None = None
) -> Prepared:
    """The bytes to send. From: `override` (the transport's `from`) replaces the message's;
    else the message's own From stays; else `identity` (the session's) is written. Raises
    NoSender when none of them has an address. The spooler passes `override` only when the
    message's own From does not stay (routing.py: no sender, or the session's identity that
    no transport sends as)."""
    fields, rest = split_header(mime)
    eol = b"\r\n" if b"\r\n" in b"".join(fields[:1]) or mime.startswith(b"\r\n") else b"\n"
    existing = header_address(fields, "From")
    sender = override or existing or identity
    if sender is None or "@" not in sender.email:
        raise NoSender("no sender: the message has no From, and the session has no identity")
    mine = [
        f
        for f in fields
        if not _name(f).startswith(PRIVATE_PREFIX) and not (override and _name(f) == b"from")
    ]
    kept = [f for f in mine if _name(f) not in HIDDEN_FIELDS]
    added: list[bytes] = []
    if override is not None or existing is None:
        added.append(_field("From", _from_value(sender), eol))
    names = {_name(f) for f in kept}
    if b"date" not in names:
        added.append(_field("Date", email.utils.formatdate(now, localtime=True), eol))
    message_id = header_value(kept, "Message-ID")
    if not message_id:
        domain = sender.email.rpartition("@")[2] or "localhost"
        message_id = email.utils.make_msgid(domain=domain)
        added.append(_field("Message-ID", message_id, eol))
    for block in (kept, mine):
        if block and not block[-1].endswith((b"\n", b"\r")):
            block[-1] += eol
    if not rest.startswith((b"\r\n", b"\n")):
        rest = eol + rest  # a header block needs its blank line, even before no body
    wire = b"".join(added + kept) + rest
    record = b"".join(added + mine) + rest
    return Prepared(wire, sender, message_id.strip(), record)
