"""Composing a message, submitting it, and following it through the spooler, for
`mapictl send` and `mapictl resolve`.

Names go through ab.resolve_names; typed addresses become one-off recipients, as a mail
client makes them. A plain message is built from properties (folder.create_message in
Drafts); one with attachments as MIME (folder.import_message), since the protocol has no
attachment objects. Either way message.submit queues it in the Outbox.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import mimetypes
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path
from typing import Any

from mapid.cli.mail.common import notice, usage_error
from mapid.cli.mail.session import MailSession, Store, table_args
from mapid.constants import RecipientType, ResourceType
from mapid.entryid import one_off, search_key
from mapid.errors import ErrorCode, MapiError
from mapid.proptags import (
    PR_ADDRTYPE,
    PR_BODY,
    PR_DISPLAY_NAME,
    PR_EMAIL_ADDRESS,
    PR_ENTRYID,
    PR_IN_REPLY_TO_ID,
    PR_INTERNET_MESSAGE_ID,
    PR_IPM_DRAFTS_ENTRYID,
    PR_IPM_OUTBOX_ENTRYID,
    PR_IPM_SENTMAIL_ENTRYID,
    PR_MESSAGE_CLASS,
    PR_MESSAGE_DELIVERY_TIME,
    PR_RECIPIENT_TYPE,
    PR_RESOURCE_TYPE,
    PR_SEARCH_KEY,
    PR_SENT_REPRESENTING_EMAIL_ADDRESS,
    PR_SENT_REPRESENTING_NAME,
    PR_STATUS_STRING,
    PR_SUBJECT,
)
from mapid.wire.codec import MAX_STR

MESSAGE_CLASS_NOTE = "IPM.Note"
REPORT_CLASS_PREFIX = "REPORT."
"""Non-delivery reports are REPORT.IPM.Note.NDR (PR_MESSAGE_CLASS)."""


# --- recipients -----------------------------------------------------------------------------


def failed_names(exc: MapiError) -> dict[str, dict[str, Any]]:
    """details.names of a failed ab.resolve_names, as {name: {code, candidates}}."""
    names = exc.details.get("names")
    out: dict[str, dict[str, Any]] = {}
    if not isinstance(names, Mapping):
        return out
    for name, info in names.items():
        if isinstance(info, Mapping):
            code = str(info.get("code") or exc.code.name)
            candidates = list(info.get("candidates") or [])
            more = info.get("more")
        else:
            code, candidates, more = str(info), [], None
        out[str(name)] = {"code": code, "candidates": candidates, "more": more}
    return out


def recipient_summary(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": row.get(PR_DISPLAY_NAME.name),
        "address": row.get(PR_EMAIL_ADDRESS.name),
        "type": row.get(PR_ADDRTYPE.name),
        "entryid": row.get(PR_ENTRYID.name),
    }


def explain_failure(name: str, info: Mapping[str, Any]) -> list[str]:
    """Lines for stderr: an ambiguous name's candidates, or that a name is unknown."""
    if info["code"] == ErrorCode.MAPI_E_AMBIGUOUS_RECIP.name:
        lines = [f"{name!r} is ambiguous; it could be:"]
        for cand in info["candidates"]:
            if isinstance(cand, Mapping):
                who = cand.get(PR_DISPLAY_NAME.name, "")
                lines.append(f"  {who} <{cand.get(PR_EMAIL_ADDRESS.name, '')}>")
        if info.get("more"):
            lines.append(f"  … and {info['more']} more: be more precise")
        return lines
    return [f"{name!r}: no such name in the address book ({info['code']})"]


def split_address(text: str) -> tuple[str, str] | None:
    """`Name <addr>` or `addr@host` as (name, address); None for a name to resolve."""
    name, addr = email.utils.parseaddr(text)
    if addr and "@" in addr and " " not in addr:
        return name, addr
    return None


def _one_off_row(name: str, addr: str) -> dict[str, Any]:
    shown = name or addr
    return {
        PR_DISPLAY_NAME.name: shown,
        PR_EMAIL_ADDRESS.name: addr,
        PR_ADDRTYPE.name: "SMTP",
        PR_ENTRYID.name: one_off(shown, "SMTP", addr),
        PR_SEARCH_KEY.name: search_key("SMTP", addr),
    }


def resolve_recipients(
    ms: MailSession, wanted: Sequence[tuple[str, RecipientType]]
) -> list[dict[str, Any]]:
    """Recipient rows for message.modify_recipients. Addresses are taken as typed (one-off
    entries, as a mail client does); names go through ab.resolve_names in one call, which
    fails as a whole when one of them is ambiguous or unknown: the candidates go to stderr."""
    rows: list[dict[str, Any] | None] = []
    to_resolve: list[tuple[int, str]] = []
    for text, kind in wanted:
        typed = split_address(text)
        if typed is not None:
            rows.append({**_one_off_row(*typed), PR_RECIPIENT_TYPE.name: int(kind)})
        else:
            to_resolve.append((len(rows), text.strip()))
            rows.append(None)
    if to_resolve:
        ab = ms.open_address_book()
        try:
            found = ms.client.ab_resolve_names(
                ms.token, ab.handle, [name for _, name in to_resolve]
            ).get("recipients")
        except MapiError as exc:
            for name, info in failed_names(exc).items():
                for line in explain_failure(name, info):
                    print(line, file=sys.stderr)
            raise
        for (slot, _name), row in zip(to_resolve, found or [], strict=True):
            kind = wanted[slot][1]
            rows[slot] = {**dict(row), PR_RECIPIENT_TYPE.name: int(kind)}
    return [r for r in rows if r is not None]


def _mime_address(row: Mapping[str, Any]) -> str:
    name = str(row.get(PR_DISPLAY_NAME.name) or "")
    addr = str(row.get(PR_EMAIL_ADDRESS.name) or "")
    try:
        return str(Address(display_name=name if name != addr else "", addr_spec=addr))
    except (ValueError, IndexError):
        return email.utils.formataddr((name, addr))


def build_mime(
    recipients: Sequence[Mapping[str, Any]],
    subject: str,
    body: str,
    attachments: Sequence[Path],
    message_id: str,
    sender: str | None,
) -> bytes:
    """The RFC 5322 message of `send --attach`: the text, then each file as an attachment
    (its type guessed from the name). Bcc stays in it: the spooler removes it for the wire."""
    msg = EmailMessage()
    if sender:
        msg["From"] = sender
    for header, kind in (
        ("To", RecipientType.MAPI_TO),
        ("Cc", RecipientType.MAPI_CC),
        ("Bcc", RecipientType.MAPI_BCC),
    ):
        chosen = [r for r in recipients if r.get(PR_RECIPIENT_TYPE.name) == int(kind)]
        if chosen:
            msg[header] = ", ".join(_mime_address(r) for r in chosen)
    msg["Subject"] = subject
    msg["Date"] = email.utils.format_datetime(dt.datetime.now(dt.UTC).astimezone())
    msg["Message-ID"] = message_id
    msg.set_content(body)
    for path in attachments:
        ctype, encoding = mimetypes.guess_type(path.name)
        if ctype is None or encoding is not None:
            ctype = "application/octet-stream"
        maintype, subtype = ctype.split("/", 1)
        data = path.read_bytes()
        try:
            text_data = data.decode("utf-8") if maintype == "text" else None
        except UnicodeDecodeError:
            text_data = None  # another charset: sent as the bytes it is (base64)
        if text_data is not None:
            msg.add_attachment(text_data, subtype=subtype, filename=path.name)
        else:
            msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=path.name)
    return msg.as_bytes(policy=SMTP_POLICY)


def drafts_folder(ms: MailSession, store: Store) -> bytes:
    """The Drafts folder: PR_IPM_DRAFTS_ENTRYID, else the IPM folder named Drafts."""
    entryid = ms.special(store, PR_IPM_DRAFTS_ENTRYID.name)
    if entryid is not None:
        return entryid
    return ms.find_folder(store, "Drafts").entryid


def _fits(size: int, what: str) -> None:
    """Refuse, before anything is written, what the wire cannot carry in one value: the
    daemon would refuse it, or drop the connection if the payload passed 4 MiB."""
    if size > MAX_STR:
        raise MapiError(
            ErrorCode.MAPI_E_TOO_BIG,
            f"{what} is {size / 2**20:.1f} MiB; one value on the wire is at most "
            f"{MAX_STR // 2**20} MiB (docs/protocol.md 2), so mapid cannot take it yet",
        )


def _check_problems(result: Mapping[str, Any]) -> None:
    problems = result.get("problems") or {}
    wanted = {PR_SUBJECT.name, PR_BODY.name, PR_MESSAGE_CLASS.name}
    failed = {tag: code for tag, code in problems.items() if tag in wanted}
    if failed:
        raise MapiError(
            ErrorCode.MAPI_E_CALL_FAILED,
            f"the store did not take {', '.join(f'{t} ({c})' for t, c in failed.items())}",
            details={"problems": failed},
        )


def submit(
    ms: MailSession,
    store: Store,
    recipients: Sequence[Mapping[str, Any]],
    subject: str,
    text: str,
    attachments: Sequence[Path],
    message_id: str,
    sender: str | None,
) -> bytes:
    """Write the message in Drafts and submit it; returns its entry ID in the Outbox."""
    mime = b""
    if attachments:
        mime = build_mime(recipients, subject, text, attachments, message_id, sender)
        _fits(len(mime), "the message with its attachments")
    else:
        _fits(len(text.encode("utf-8")), "the text")
    drafts = ms.open(drafts_folder(ms, store), modify=True)
    if attachments:
        imported = ms.client.folder_import_message(ms.token, drafts.handle, mime)
        handle = ms.open(bytes(imported["entryid"]), modify=True).handle
    else:
        handle = ms.keep_handle(
            int(ms.client.folder_create_message(ms.token, drafts.handle)["handle"])
        )
        props: dict[str, Any] = {
            PR_MESSAGE_CLASS.name: MESSAGE_CLASS_NOTE,
            PR_SUBJECT.name: subject,
            PR_BODY.name: text,
            PR_INTERNET_MESSAGE_ID.name: message_id,
        }
        if sender is not None:
            name, addr = split_address(sender) or ("", sender)
            props[PR_SENT_REPRESENTING_NAME.name] = name or addr
            props[PR_SENT_REPRESENTING_EMAIL_ADDRESS.name] = addr
        _check_problems(ms.client.object_set_props(ms.token, handle, props))
    ms.client.message_modify_recipients(ms.token, handle, recipients)
    return bytes(ms.client.message_submit(ms.token, handle)["entryid"])


# --- waiting for the spooler ----------------------------------------------------------------


def _rows(
    ms: MailSession,
    folder: bytes,
    restriction: Mapping[str, Any],
    *,
    newest: bool = False,
    limit: int = 1,
) -> list[Mapping[str, Any]]:
    opened = ms.open(folder)
    try:
        rows = ms.contents(
            opened.handle,
            table_args(
                [PR_ENTRYID.name, PR_SUBJECT.name],
                restriction=restriction,
                sort=[(PR_MESSAGE_DELIVERY_TIME.name, "desc")] if newest else None,
                limit=limit,
            ),
        ).get("rows")
    finally:
        ms.release(opened.handle)
    return list(rows or [])


MATCH_CANDIDATES = 10
"""How many of the newest matching messages are opened to compare their Message-ID."""


def _with_message_id(
    ms: MailSession, folder: bytes, restriction: Mapping[str, Any], tag: str, message_id: str
) -> Mapping[str, Any] | None:
    """The newest message of `folder` that fits `restriction` and whose property `tag`
    names `message_id`. Message-IDs are not table columns of every store, so the few
    candidates the table gives are opened and compared."""
    for row in _rows(ms, folder, restriction, newest=True, limit=MATCH_CANDIDATES):
        entryid = row.get(PR_ENTRYID.name)
        if not isinstance(entryid, bytes):
            continue
        opened = ms.open(entryid)
        ms.release(opened.handle)
        if message_id in str(opened.props.get(tag) or ""):
            return {**row, **opened.props}
    return None


def _transport_trouble(ms: MailSession) -> str:
    """The spooler's and transports' status strings, to say why a message is still queued."""
    rows = ms.client.session_status_table(
        ms.token,
        table_args([PR_DISPLAY_NAME.name, PR_RESOURCE_TYPE.name, PR_STATUS_STRING.name]),
    ).get("rows")
    kinds = (int(ResourceType.MAPI_SPOOLER), int(ResourceType.MAPI_TRANSPORT_PROVIDER))
    said = [
        f"{r.get(PR_DISPLAY_NAME.name)}: {r.get(PR_STATUS_STRING.name)}"
        for r in rows or []
        if r.get(PR_RESOURCE_TYPE.name) in kinds and r.get(PR_STATUS_STRING.name)
    ]
    return "; ".join(said)


def wait_for_delivery(
    ms: MailSession, store: Store, queued: bytes, subject: str, message_id: str, timeout: float
) -> dict[str, Any]:
    """Poll the Outbox until the message left it, then look for it in Sent Items and for a
    non-delivery report about it (In-Reply-To: its Message-ID) in the Inbox."""
    outbox = store.props.get(PR_IPM_OUTBOX_ENTRYID.name)
    if not isinstance(outbox, bytes):
        raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, "the default store has no Outbox")
    in_queue = {"prop": PR_ENTRYID.name, "op": "eq", "value": queued}
    deadline = time.monotonic() + timeout
    pause = 0.05
    while _rows(ms, outbox, in_queue):
        if time.monotonic() >= deadline:
            why = _transport_trouble(ms)
            raise MapiError(
                ErrorCode.MAPI_E_TIMEOUT,
                f"still in the Outbox after {timeout:g} s" + (f" ({why})" if why else ""),
                details={"entryid": queued.hex()},
            )
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, 0.5)
    result: dict[str, Any] = {"outcome": "sent", "sent_entryid": None, "ndr_entryid": None}
    sent = store.props.get(PR_IPM_SENTMAIL_ENTRYID.name)
    if isinstance(sent, bytes):
        same_subject = {"content": PR_SUBJECT.name, "value": subject, "match": "full"}
        row = _with_message_id(ms, sent, same_subject, PR_INTERNET_MESSAGE_ID.name, message_id)
        if row is not None:
            result["sent_entryid"] = row.get(PR_ENTRYID.name)
    ndr = _find_report(ms, store, message_id)
    if ndr is not None:
        result["ndr_entryid"] = ndr.get(PR_ENTRYID.name)
        result["ndr_subject"] = ndr.get(PR_SUBJECT.name)
        result["outcome"] = "ndr"
        partly = " (and a copy in Sent Items: the other recipients got it)"
        result["summary"] = (
            f"not delivered: a non-delivery report is in the Inbox: {result['ndr_subject']}"
            + (partly if result["sent_entryid"] else "")
        )
    elif result["sent_entryid"] is not None:
        result["summary"] = "sent; a copy is in Sent Items"
    else:
        result["summary"] = "sent (no copy kept in Sent Items)"
    return result


def _find_report(ms: MailSession, store: Store, message_id: str) -> Mapping[str, Any] | None:
    """A non-delivery report in the Inbox whose In-Reply-To names our message."""
    try:
        inbox = ms.find_folder(store, "Inbox").entryid
    except MapiError:
        return None
    reports = {
        "content": PR_MESSAGE_CLASS.name,
        "value": REPORT_CLASS_PREFIX,
        "match": "prefix",
        "ignore_case": True,
    }
    return _with_message_id(ms, inbox, reports, PR_IN_REPLY_TO_ID.name, message_id)


# --- the request ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SendRequest:
    """What `mapictl send` was asked, checked before it logs on: the recipients as typed,
    each with its type, the --from address, the text (--body, or stdin) and the new
    message's Message-ID."""

    wanted: list[tuple[str, RecipientType]]
    sender: str | None
    text: str
    message_id: str

    @classmethod
    def from_options(
        cls,
        to: Sequence[str] | None,
        cc: Sequence[str] | None,
        bcc: Sequence[str] | None,
        sender: str | None,
        body: str | None,
    ) -> SendRequest:
        """--to, --cc, --bcc, --from and --body; a usage error (exit code 2) when there is
        no recipient or --from is not an address, and only then the text from stdin."""
        wanted = (
            [(t, RecipientType.MAPI_TO) for t in to or []]
            + [(c, RecipientType.MAPI_CC) for c in cc or []]
            + [(b, RecipientType.MAPI_BCC) for b in bcc or []]
        )
        if not wanted:
            raise usage_error("give at least one recipient", "--to")
        if sender is not None and split_address(sender) is None:
            raise usage_error(f"{sender!r} is not an address", "--from")
        text = read_body(body)
        domain = socket.gethostname() or "localhost"
        message_id = email.utils.make_msgid(domain=domain)
        return cls(wanted, sender, text, message_id)


def read_body(body: str | None) -> str:
    if body is not None:
        return body
    if sys.stdin.isatty():
        notice("type the message, then Ctrl-D on a line of its own")
    return sys.stdin.read()


__all__ = [
    "SendRequest",
    "build_mime",
    "explain_failure",
    "failed_names",
    "recipient_summary",
    "resolve_recipients",
    "split_address",
    "submit",
    "wait_for_delivery",
]
