"""Editing the `vcard` service's cards: which properties a card takes, and creating,
editing and deleting card files (blocking; run through support.run_blocking).

A new card is vCard 4.0 with a fresh UUID URN as its UID, in a file of its own named
`<UID>.vcf`, as khard and vdirsyncer expect; the UID never changes afterwards. An edit
re-reads the card's file from disk (so changes another program made since the last scan are
kept), changes only the lines that mapid's properties map to, and keeps every other line
(NOTE, TEL, X-KHARD-..., photos) as vobject serializes it. Every write goes to a hidden
temporary file beside the card, is fsynced and then renamed over it, so a reader (khard,
vdirsyncer, another session's scan) never sees half a card. A file holding several cards
is never rewritten: editing or deleting one of its cards is MAPI_E_NO_ACCESS.

The atomic write itself is mapid.atomic_files.write_atomic (a new card 0o600, an edited
one with the permissions it had).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import unicodedata
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import vobject

from mapid.atomic_files import fsync_dir, write_atomic
from mapid.errors import ErrorCode, MapiError
from mapid.proptags import (
    PR_ADDRTYPE,
    PR_COMPANY_NAME,
    PR_CONTACT_ADDRTYPES,
    PR_CONTACT_DEFAULT_ADDRESS_INDEX,
    PR_CONTACT_EMAIL_ADDRESSES,
    PR_CONTACT_ENTRYIDS,
    PR_DISPLAY_NAME,
    PR_DISPLAY_TYPE,
    PR_EMAIL_ADDRESS,
    PR_ENTRYID,
    PR_GIVEN_NAME,
    PR_INSTANCE_KEY,
    PR_NICKNAME,
    PR_OBJECT_TYPE,
    PR_RECORD_KEY,
    PR_SEARCH_KEY,
    PR_SMTP_ADDRESS,
    PR_SURNAME,
    PR_TRANSMITABLE_DISPLAY_NAME,
    resolve_tag,
    tag_name,
)
from mapid.providers.vcard.cards import pref_rank
from mapid.providers.vcard.entryids import ADDRTYPE

__all__ = [
    "COMPUTED",
    "WRITABLE",
    "Changes",
    "check_props",
    "create_card_file",
    "delete_card_files",
    "edit_card_file",
    "explain",
    "new_card",
]

Changes = dict[str, str | None]
"""Pending changes by canonical tag name: the new text, or None to remove the property."""

WRITABLE: frozenset[str] = frozenset(
    t.name
    for t in (
        PR_DISPLAY_NAME,
        PR_EMAIL_ADDRESS,
        PR_GIVEN_NAME,
        PR_SURNAME,
        PR_COMPANY_NAME,
        PR_NICKNAME,
        PR_ADDRTYPE,
    )
)
"""What a card can take: FN, the preferred EMAIL, N's given and family names, ORG, NICKNAME
(PR_ADDRTYPE is accepted when it is SMTP, the only type a card's EMAIL has)."""

COMPUTED: frozenset[str] = frozenset(
    t.name
    for t in (
        PR_ENTRYID,
        PR_RECORD_KEY,
        PR_INSTANCE_KEY,
        PR_OBJECT_TYPE,
        PR_DISPLAY_TYPE,
        PR_SEARCH_KEY,
        PR_SMTP_ADDRESS,
        PR_TRANSMITABLE_DISPLAY_NAME,
        PR_CONTACT_EMAIL_ADDRESSES,
        PR_CONTACT_ADDRTYPES,
        PR_CONTACT_ENTRYIDS,
        PR_CONTACT_DEFAULT_ADDRESS_INDEX,
    )
)
"""Properties that follow from the card (its UID, its EMAIL lines): MAPI_E_COMPUTED."""

_FIELDS = {PR_DISPLAY_NAME.name: "fn", PR_NICKNAME.name: "nickname"}


def _address_ok(value: str) -> bool:
    local, at, domain = value.rpartition("@")
    return bool(at and local and domain) and not any(c.isspace() for c in value)


def check_props(
    props: Mapping[str, Any], *, deleting: Sequence[str] = ()
) -> tuple[Changes, dict[str, str]]:
    """(changes a card can take, problems by tag as object.set_props reports them).

    Tags may come by name or hex; text is stripped, and an empty text removes the property.
    """
    changes: Changes = {}
    problems: dict[str, str] = {}
    items: list[tuple[object, object]] = [*props.items(), *((t, None) for t in deleting)]
    for key, value in items:
        try:
            tag = tag_name(resolve_tag(key))  # type: ignore[arg-type]
        except (MapiError, TypeError, ValueError):
            problems[str(key)] = ErrorCode.MAPI_E_INVALID_PARAMETER.name
            continue
        if tag in COMPUTED:
            problems[tag] = ErrorCode.MAPI_E_COMPUTED.name
        elif tag not in WRITABLE:
            problems[tag] = ErrorCode.MAPI_E_NO_SUPPORT.name
        elif value is not None and not isinstance(value, str):
            problems[tag] = ErrorCode.MAPI_E_INVALID_TYPE.name
        elif tag == PR_ADDRTYPE.name:
            if value is not None and value.strip().upper() != ADDRTYPE:
                problems[tag] = ErrorCode.MAPI_E_BAD_VALUE.name
        else:
            text = value.strip() if value is not None else ""
            if any(unicodedata.category(c) == "Cc" for c in text) or (
                tag == PR_EMAIL_ADDRESS.name and text and not _address_ok(text)
            ):
                problems[tag] = ErrorCode.MAPI_E_BAD_VALUE.name
                continue
            changes[tag] = text or None
    return changes, problems


def explain(problems: Mapping[str, str]) -> str:
    """One sentence for create_entry's MAPI_E_INVALID_PARAMETER."""
    why = {
        ErrorCode.MAPI_E_COMPUTED.name: "follows from the card and cannot be set",
        ErrorCode.MAPI_E_NO_SUPPORT.name: "has no place in a vCard here",
        ErrorCode.MAPI_E_INVALID_TYPE.name: "must be a str",
        ErrorCode.MAPI_E_BAD_VALUE.name: "has a value a card cannot take",
        ErrorCode.MAPI_E_INVALID_PARAMETER.name: "is not a property tag",
    }
    parts = [f"{tag} {why.get(code, code)}" for tag, code in problems.items()]
    settable = ", ".join(sorted(WRITABLE))
    return "props: " + "; ".join(parts) + f" (a card takes {settable})"


# --- Files (blocking; run through support.run_blocking) ---------------------------------------


def _os_error(exc: OSError, what: str) -> MapiError:
    if isinstance(exc, PermissionError):
        return MapiError(ErrorCode.MAPI_E_NO_ACCESS, f"cannot {what}: {exc}")
    if isinstance(exc, FileNotFoundError):
        return MapiError(ErrorCode.MAPI_E_NOT_FOUND, f"cannot {what}: {exc}")
    return MapiError(ErrorCode.MAPI_E_CALL_FAILED, f"cannot {what}: {exc}")


def _rev(card: Any) -> None:
    """REV: when the card last changed, which syncers (vdirsyncer) may compare."""
    for line in list(card.contents.get("rev", [])):
        card.remove(line)
    card.add("rev").value = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def _version(card: Any) -> str:
    lines = card.contents.get("version", [])
    return str(lines[0].value).strip() if lines else "3.0"


def _set_text(card: Any, name: str, value: str | None) -> None:
    lines = card.contents.get(name, [])
    if value is None:
        for line in list(lines):
            card.remove(line)
    elif lines:
        lines[0].value = value
    else:
        card.add(name).value = value


def _set_org(card: Any, value: str | None) -> None:
    """ORG's first component is the company; its units (after `;`) stay."""
    lines = card.contents.get("org", [])
    if value is None:
        for line in list(lines):
            card.remove(line)
        return
    if not lines:
        card.add("org").value = [value]
        return
    old = lines[0].value
    units = list(old[1:]) if isinstance(old, list) else []
    lines[0].value = [value, *units]


def _set_names(card: Any, given: str | None, surname: str | None, which: set[str]) -> None:
    """N's given and family components; the others (additional, prefix, suffix) stay."""
    lines = card.contents.get("n", [])
    name = lines[0].value if lines else None
    if isinstance(name, str):  # left unparsed by vobject: family;given;additional;...
        parts = (name.split(";") + [""] * 5)[:5]
        name = vobject.vcard.Name(
            family=parts[0], given=parts[1], additional=parts[2], prefix=parts[3], suffix=parts[4]
        )
    if name is None:
        name = vobject.vcard.Name()
    if PR_GIVEN_NAME.name in which:
        name.given = given or ""
    if PR_SURNAME.name in which:
        name.family = surname or ""
    if lines:
        lines[0].value = name
    else:
        card.add("n").value = name


def _email_value(line: Any) -> str:
    value = line.value.strip() if isinstance(line.value, str) else ""
    return value[len("mailto:") :].strip() if value.lower().startswith("mailto:") else value


def _set_email(card: Any, address: str | None) -> None:
    """The preferred address: its line takes the new value (its TYPE and PREF stay); a line
    that already had the new address goes, so it is not listed twice."""
    lines = list(card.contents.get("email", []))
    preferred = min(
        ((pref_rank(line), i, line) for i, line in enumerate(lines)),
        default=None,
        key=lambda item: item[:2],
    )
    if address is None:
        if preferred is not None:
            card.remove(preferred[2])
        return
    for line in lines:
        if (preferred is None or line is not preferred[2]) and (
            _email_value(line).casefold() == address.casefold()
        ):
            card.remove(line)
    if preferred is not None:
        preferred[2].value = address
        return
    line = card.add("email")
    line.value = address
    if _version(card) == "4.0":
        line.params["PREF"] = ["1"]
    else:
        line.params["TYPE"] = ["INTERNET"]


def _apply(card: Any, changes: Changes) -> None:
    for tag, name in _FIELDS.items():
        if tag in changes:
            _set_text(card, name, changes[tag])
    if PR_COMPANY_NAME.name in changes:
        _set_org(card, changes[PR_COMPANY_NAME.name])
    which = {t for t in (PR_GIVEN_NAME.name, PR_SURNAME.name) if t in changes}
    if which:
        _set_names(card, changes.get(PR_GIVEN_NAME.name), changes.get(PR_SURNAME.name), which)
    if PR_EMAIL_ADDRESS.name in changes:
        _set_email(card, changes[PR_EMAIL_ADDRESS.name])
    _rev(card)


def _serialize(card: Any) -> bytes:
    return str(card.serialize()).encode("utf-8")


def new_card(changes: Changes) -> tuple[str, bytes]:
    """(UID, file content) of a new vCard 4.0 card; FN defaults to the names, else the
    address (vCard 4.0 requires FN)."""
    address = changes.get(PR_EMAIL_ADDRESS.name)
    if not address:
        raise MapiError(
            ErrorCode.MAPI_E_INVALID_PARAMETER,
            "props needs PR_EMAIL_ADDRESS: an entry of this address book is a recipient",
            details={"arg": "props"},
        )
    uid = uuid.uuid4().urn  # "urn:uuid:...", RFC 6350 6.7.6's preferred form
    card = vobject.vCard()
    card.add("version").value = "4.0"
    card.add("uid").value = uid
    given, surname = changes.get(PR_GIVEN_NAME.name), changes.get(PR_SURNAME.name)
    display = changes.get(PR_DISPLAY_NAME.name) or " ".join(p for p in (given, surname) if p)
    card.add("fn").value = display or address
    _apply(card, {k: v for k, v in changes.items() if k != PR_DISPLAY_NAME.name})
    return uid, _serialize(card)


def create_card_file(folder: Path, changes: Changes) -> str:
    """Write a new card as `<UID>.vcf` in `folder`; returns its UID."""
    uid, data = new_card(changes)
    path = folder / f"{uid}.vcf"
    if path.exists():  # a UUID collision: never overwrite somebody's card
        raise MapiError(ErrorCode.MAPI_E_COLLISION, f"{path} exists already")
    try:
        write_atomic(path, data)
    except OSError as exc:
        raise _os_error(exc, f"write {path}") from exc
    return uid


def _single_card(path: Path, uid: str, what: str) -> Any:
    """The one card of `path`, which must have `uid`; a file of several: MAPI_E_NO_ACCESS."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _os_error(exc, f"read {path}") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    try:
        cards = [c for c in vobject.readComponents(text) if str(c.name).upper() == "VCARD"]
    except Exception as exc:
        raise MapiError(ErrorCode.MAPI_E_CORRUPT_DATA, f"{path} does not parse: {exc}") from exc
    if len(cards) > 1:
        raise MapiError(
            ErrorCode.MAPI_E_NO_ACCESS,
            f"cannot {what}: {path.name} holds {len(cards)} cards, and mapid never rewrites a "
            "file of several cards (split it into one file a card, as khard and vdirsyncer "
            "keep them)",
            details={"path": str(path)},
        )
    have = [str(c.uid.value).strip() for c in cards if "uid" in c.contents]
    if not cards or (have and have[0] != uid) or (not have and not uid.startswith(path.name)):
        raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, f"{path.name} no longer holds the card {uid!r}")
    return cards[0]


def edit_card_file(path: Path, uid: str, changes: Changes) -> None:
    """Apply `changes` to the card in `path`, keeping every line they do not touch."""
    card = _single_card(path, uid, "change this contact")
    _apply(card, changes)
    if not card.contents.get("fn"):
        raise MapiError(
            ErrorCode.MAPI_E_INVALID_PARAMETER,
            "PR_DISPLAY_NAME cannot be removed: a vCard needs FN",
        )
    try:
        mode = path.stat().st_mode & 0o7777
        write_atomic(path, _serialize(card), mode=mode)
    except OSError as exc:
        raise _os_error(exc, f"write {path}") from exc


def delete_card_files(cards: Sequence[tuple[Path, str]]) -> None:
    """Delete the files of these cards, all or none: every file is checked (one card, the
    right UID) before the first goes."""
    for path, uid in cards:
        _single_card(path, uid, "delete this contact")
    folders: set[Path] = set()
    for path, _ in cards:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _os_error(exc, f"delete {path}") from exc
        folders.add(path.parent)
    for folder in folders:
        with contextlib.suppress(OSError):
            fsync_dir(folder)
