"""Non-delivery reports: RFC 3464 delivery status notifications for the user's own Inbox.

A report is `multipart/report; report-type=delivery-status` (RFC 6522) with three parts: a
text a person reads (each failed recipient with the server's words), the
`message/delivery-status` fields a program reads, and the original message as
`message/rfc822`, whole (Bcc included: the report goes to the sender's own Inbox and is the
only copy left when nothing could be delivered). The store maps such a message to
PR_MESSAGE_CLASS "REPORT.IPM.Note.NDR".

`announce` tells the daemon's hook (the desktop notifier) of the failure in a line a person
reads: "Could not send 'Subject'" and the first recipient's reason.
"""

from __future__ import annotations

import email.policy
import email.utils
import re
import secrets
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.headerregistry import Address

from mapid.daemon.spool.outgoing import header_value, split_header
from mapid.providers.base import Identity

MAILER_DAEMON = Identity("Mail Delivery System", "MAILER-DAEMON@localhost")
_POLICY = email.policy.default.clone(linesep="\n", max_line_length=78)
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_REPLY = re.compile(r"^\s*([2-5]\d\d)\b")


@dataclass(frozen=True)
class Failure:
    """One recipient that could not be reached, and why."""

    address: str
    display_name: str
    reason: str
    """The server's words ("550 5.1.1 No such user here") or mapid's own."""
    status: str = ""
    """RFC 3463 status ("5.1.1"); empty: taken from `reason`, else 5.0.0."""

    def status_code(self) -> str:
        if self.status:
            return self.status
        found = _STATUS.search(self.reason)
        if found is not None and found.group(1) == "5":
            return found.group(0)
        return "5.0.0"

    def diagnostic(self) -> str:
        """Diagnostic-Code: an SMTP reply as `smtp;`, mapid's own reasons as `X-mapid;`."""
        kind = "smtp" if _REPLY.match(self.reason) else "X-mapid"
        return f"{kind}; {' '.join(self.reason.split())}"

    def label(self) -> str:
        if self.display_name and self.display_name != self.address:
            return f"{self.display_name} <{self.address}>"
        return f"<{self.address}>"


def _field(name: str, value: str) -> str:
    folded: str = _POLICY.header_factory(name, value).fold(policy=_POLICY)
    return folded


def _mailbox(who: Identity) -> str:
    local, _, domain = who.email.rpartition("@")
    try:
        return str(Address(who.display_name, local, domain))
    except (ValueError, IndexError):
        return email.utils.formataddr((who.display_name, who.email))


def build(
    original: bytes,
    failures: Sequence[Failure],
    *,
    to: Identity | None,
    delivered_to_others: bool,
    now: float | None = None,
    host: str | None = None,
) -> bytes:
    """The report's RFC 5322 bytes (LF line endings, like the Maildir it goes into)."""
    host = host or socket.gethostname() or "localhost"
    fields, _rest = split_header(original)
    subject = header_value(fields, "Subject") or ""
    message_id = (header_value(fields, "Message-ID") or "").strip()
    date = email.utils.formatdate(now, localtime=True)
    boundary = f"=_mapid-ndr-{secrets.token_hex(12)}"
    headers = [
        _field("From", _mailbox(MAILER_DAEMON)),
        _field("Subject", f"Undeliverable: {subject}" if subject else "Undeliverable"),
        _field("Date", date),
        _field("Message-ID", email.utils.make_msgid("ndr", domain=host)),
        _field("Auto-Submitted", "auto-replied"),
        "MIME-Version: 1.0\n",
        f'Content-Type: multipart/report; report-type=delivery-status;\n boundary="{boundary}"\n',
    ]
    if to is not None:
        headers.insert(1, _field("To", _mailbox(to)))
    if message_id:
        headers += [_field("In-Reply-To", message_id), _field("References", message_id)]

    text = _human_text(failures, delivered_to_others, host)
    text_bytes = text.encode("utf-8")
    cte = "7bit" if text.isascii() else "8bit"
    status = _delivery_status(failures, host, date)
    attached = original.replace(b"\r\n", b"\n")
    if not attached.endswith(b"\n"):
        attached += b"\n"
    original_cte = "7bit" if attached.isascii() else "8bit"

    parts = [
        "".join(headers).encode("utf-8"),
        b"\nThis is a MIME-encapsulated delivery status notification.\n",
        f"\n--{boundary}\n".encode(),
        b"Content-Type: text/plain; charset=utf-8\n",
        f"Content-Transfer-Encoding: {cte}\n".encode(),
        b"Content-Description: Notification\n\n",
        text_bytes,
        f"\n--{boundary}\n".encode(),
        b"Content-Type: message/delivery-status\n",
        b"Content-Description: Delivery report\n\n",
        status.encode("utf-8"),
        f"\n--{boundary}\n".encode(),
        b"Content-Type: message/rfc822\n",
        f"Content-Transfer-Encoding: {original_cte}\n".encode(),
        b"Content-Description: Undelivered Message\n\n",
        attached,
        f"\n--{boundary}--\n".encode(),
    ]
    return b"".join(parts)


def _human_text(failures: Sequence[Failure], delivered_to_others: bool, host: str) -> str:
    lines = [
        f"This is the mail system (mapid) on {host}.",
        "",
        "Your message could not be delivered to "
        + ("this recipient:" if len(failures) == 1 else "these recipients:"),
        "",
    ]
    for failure in failures:
        lines.append(f"  {failure.label()}")
        lines.append(f"    {' '.join(failure.reason.split())}")
    lines.append("")
    if delivered_to_others:
        lines.append("It was delivered to the other recipients.")
    else:
        lines.append("It was delivered to no one; it is no longer in your Outbox.")
    lines.append("The original message is attached.")
    return "\n".join(lines) + "\n"


def _delivery_status(failures: Sequence[Failure], host: str, date: str) -> str:
    blocks = [f"Reporting-MTA: dns; {host}\n"]
    for failure in failures:
        blocks.append(
            f"Final-Recipient: rfc822; {failure.address}\n"
            "Action: failed\n"
            f"Status: {failure.status_code()}\n"
            f"Diagnostic-Code: {failure.diagnostic()}\n"
            f"Last-Attempt-Date: {date}\n"
        )
    return "\n".join(blocks)


def headline(
    original: bytes, failures: Sequence[Failure], *, delivered_to_others: bool
) -> tuple[str, str]:
    """A send that failed for good, in a summary and a body: the message's subject, then
    the first failed recipient and the server's (or mapid's) words."""
    fields, _rest = split_header(original)
    subject = " ".join((header_value(fields, "Subject") or "").split()) or "(no subject)"
    summary = f"Could not send '{subject}'"
    if delivered_to_others:
        summary += f" to {len(failures)} recipient{'' if len(failures) == 1 else 's'}"
    first = failures[0]
    body = f"{first.label()}: {' '.join(first.reason.split())}"
    if len(failures) > 1:
        body += f" (and {len(failures) - 1} more)"
    return summary, body


def announce(
    tell: Callable[[str, str, bytes | None], None] | None,
    original: bytes,
    failures: Sequence[Failure],
    delivered_to_others: bool,
    report: bytes | None,
) -> None:
    """Hand `headline` and the report's entry ID to `tell` (SessionEnv.on_send_failed)."""
    if tell is not None and failures:
        tell(*headline(original, failures, delivered_to_others=delivered_to_others), report)
