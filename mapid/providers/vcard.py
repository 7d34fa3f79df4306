"""The `vcard` message service: an address book over a folder of `.vcf` files (DESIGN.md 4).

The folder is a vdir, the layout khard and vdirsyncer share: `.vcf` files side by side, each
holding one card or several. The provider reads the folder at logon and on ValidateState and
keeps the contacts in memory; a contact's entry ID carries its vCard UID, so it stays valid
across restarts for as long as the card keeps its UID. The folder's MAPIUID derives from its
real path, so entry IDs survive profile edits that keep the folder.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import vobject

from mapid.constants import (
    ENTRYID_MIN_LENGTH,
    DisplayType,
    ObjectType,
    ResourceFlags,
    ServiceFlags,
    StatusCode,
    ValidateStateFlags,
)
from mapid.entryid import make, one_off, private_of, search_key, uid_from_name, uid_of
from mapid.errors import ErrorCode, MapiError
from mapid.proptags import (
    PR_ADDRTYPE,
    PR_COMPANY_NAME,
    PR_DISPLAY_NAME,
    PR_DISPLAY_TYPE,
    PR_EMAIL_ADDRESS,
    PR_ENTRYID,
    PR_GIVEN_NAME,
    PR_IDENTITY_DISPLAY,
    PR_IDENTITY_ENTRYID,
    PR_IDENTITY_SEARCH_KEY,
    PR_OBJECT_TYPE,
    PR_RECORD_KEY,
    PR_RESOURCE_PATH,
    PR_SEARCH_KEY,
    PR_STATUS_CODE,
    PR_STATUS_STRING,
    PR_SURNAME,
)
from mapid.providers.base import (
    AddressBookProvider,
    Identity,
    MapiObject,
    MessageService,
    PropsObject,
    ProviderSupport,
)

__all__ = ["Contact", "MailUser", "VCardAddressBook", "VCardService", "VdirScan", "read_vdir"]

ADDRTYPE = "SMTP"
_CONTACT_PREFIX = b"\x01"
"""First private byte of a contact's entry ID; other kinds (containers) get other bytes."""
_NO_PREF = 101
"""Rank of an address without a preference; vCard 4.0 PREF runs from 1 (best) to 100."""


@dataclass(frozen=True)
class Contact:
    """One card of the folder, reduced to what an address book needs."""

    uid: str
    display_name: str
    emails: tuple[str, ...]
    path: Path
    given_name: str | None = None
    surname: str | None = None
    company: str | None = None

    @property
    def email(self) -> str | None:
        """The preferred address (PR_EMAIL_ADDRESS), if the card has any."""
        return self.emails[0] if self.emails else None


@dataclass(frozen=True)
class VdirScan:
    """The result of reading a folder: its contacts and the files that would not parse."""

    contacts: tuple[Contact, ...]
    unreadable: tuple[Path, ...]

    @functools.cached_property
    def by_uid(self) -> dict[str, Contact]:
        """Contacts by UID, built once per scan and shared by its sessions."""
        return {c.uid: c for c in self.contacts}


# --- Reading cards (blocking; runs in the daemon's thread pool) -----------------------------


def _first_text(card: Any, name: str) -> str | None:
    for line in card.contents.get(name, []):
        value = line.value
        if isinstance(value, list):
            value = next((v for v in value if isinstance(v, str) and v.strip()), "")
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _join(part: object) -> str | None:
    """A component of N: vobject gives a str, or a list when it held several values."""
    if isinstance(part, (list, tuple)):
        part = " ".join(p for p in part if isinstance(p, str) and p)
    if not isinstance(part, str):
        return None
    return part.strip() or None


def _names(card: Any) -> tuple[str | None, str | None]:
    """(given name, surname) from N, whether vobject parsed it into a Name or left it raw."""
    lines = card.contents.get("n", [])
    if not lines:
        return None, None
    value = lines[0].value
    if isinstance(value, str):
        parts = value.split(";")
        return _join(parts[1] if len(parts) > 1 else ""), _join(parts[0])
    return _join(getattr(value, "given", None)), _join(getattr(value, "family", None))


def _pref_rank(line: Any) -> int:
    """How preferred an address is: PREF=n (4.0), TYPE=pref (3.0) or a bare PREF (2.1)."""
    for raw in line.params.get("PREF", []):
        try:
            return int(raw)
        except (TypeError, ValueError):
            return 1
    types = [str(t).lower() for t in line.params.get("TYPE", [])]
    singles = [str(t).lower() for t in getattr(line, "singletonparams", [])]
    return 1 if "pref" in types or "pref" in singles else _NO_PREF


def _emails(card: Any) -> tuple[str, ...]:
    """Every EMAIL of the card, preferred first, otherwise in file order, no duplicates."""
    ranked: list[tuple[int, int, str]] = []
    seen: set[str] = set()
    for index, line in enumerate(card.contents.get("email", [])):
        value = line.value.strip() if isinstance(line.value, str) else ""
        if value.lower().startswith("mailto:"):
            value = value[len("mailto:") :]
        if value and value.casefold() not in seen:
            seen.add(value.casefold())
            ranked.append((_pref_rank(line), index, value))
    return tuple(value for _, _, value in sorted(ranked))


def _contact(card: Any, path: Path, index: int) -> Contact:
    given, surname = _names(card)
    emails = _emails(card)
    uid = _first_text(card, "uid") or f"{path.name}#{index}"
    display = (
        _first_text(card, "fn")
        or " ".join(p for p in (given, surname) if p)
        or (emails[0] if emails else uid)
    )
    return Contact(
        uid=uid,
        display_name=display,
        emails=emails,
        path=path,
        given_name=given,
        surname=surname,
        company=_first_text(card, "org"),
    )


def read_vcf(path: Path) -> list[Contact]:
    """The cards of one file (vCard 2.1, 3.0 or 4.0). Raises on a file that does not parse.

    vCard 4.0 is UTF-8; older exports that are not get read as Latin-1 rather than dropped.
    """
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    cards = [c for c in vobject.readComponents(text) if str(c.name).upper() == "VCARD"]
    return [_contact(card, path, index) for index, card in enumerate(cards)]


_Stamp = tuple[int, int, int]


@dataclass
class _FolderCache:
    """The last parse of one folder, shared by every session that reads it."""

    stamps: dict[Path, _Stamp]
    files: dict[Path, tuple[Contact, ...] | None]
    """Each file's contacts; None for a file that did not parse."""
    scan: VdirScan


_CACHE: dict[Path, _FolderCache] = {}
_CACHE_LOCK = threading.Lock()


def read_vdir(folder: Path, logger: logging.Logger) -> VdirScan:
    """Read every `.vcf` file of a folder; a file that does not parse is logged and skipped.

    Parsing is the costly part, and every session of a profile reads the same folder, so
    each file is parsed once and again only when its time, size or inode change; a folder
    that did not change at all returns the very same scan, shared by all its sessions.
    """
    stamps: dict[Path, _Stamp] = {}
    with os.scandir(folder) as entries:  # DirEntry caches its stat: one syscall a file
        for entry in sorted(entries, key=lambda e: e.name):
            name = entry.name
            if not name.lower().endswith(".vcf") or name.startswith("."):
                continue
            try:
                if not entry.is_file():
                    continue
                info = entry.stat()
            except OSError:
                continue
            stamps[folder / name] = (info.st_mtime_ns, info.st_size, info.st_ino)
    with _CACHE_LOCK:
        cached = _CACHE.get(folder)
    if cached is not None and cached.stamps == stamps:
        return cached.scan
    files: dict[Path, tuple[Contact, ...] | None] = {}
    for path, stamp in stamps.items():
        if cached is not None and cached.stamps.get(path) == stamp and path in cached.files:
            files[path] = cached.files[path]
            continue
        try:
            files[path] = tuple(read_vcf(path))
        except Exception as exc:
            logger.warning("vcard: skipping unreadable file %s: %s", path, exc)
            files[path] = None
    contacts: list[Contact] = []
    unreadable: list[Path] = []
    seen: set[str] = set()
    for path, cards in files.items():
        if cards is None:
            unreadable.append(path)
            continue
        for contact in cards:
            if contact.uid in seen:
                logger.warning("vcard: %s repeats UID %r; keeping the first", path, contact.uid)
                continue
            seen.add(contact.uid)
            contacts.append(contact)
    scan = VdirScan(tuple(contacts), tuple(unreadable))
    with _CACHE_LOCK:
        _CACHE[folder] = _FolderCache(stamps, files, scan)
    return scan


def _prepare_folder(folder: Path) -> Path:
    """The folder's real path, creating it when missing: a new vdir is simply empty."""
    if folder.exists() and not folder.is_dir():
        raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, f"vCard path {folder} is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except PermissionError as exc:
        raise MapiError(ErrorCode.MAPI_E_NO_ACCESS, f"cannot create {folder}: {exc}") from exc
    except OSError as exc:
        raise MapiError(ErrorCode.MAPI_E_CALL_FAILED, f"cannot create {folder}: {exc}") from exc
    return folder.resolve()


def _scan(folder: Path, logger: logging.Logger) -> tuple[Path, VdirScan]:
    real = _prepare_folder(folder)
    try:
        return real, read_vdir(real, logger)
    except OSError as exc:
        raise MapiError(ErrorCode.MAPI_E_CALL_FAILED, f"cannot read {real}: {exc}") from exc


# --- Configuration --------------------------------------------------------------------------


def _identity(config: Mapping[str, Any]) -> Identity | None:
    """The configured identity, or None when there is none or it is incomplete."""
    raw = config.get("identity")
    if not isinstance(raw, Mapping):
        return None
    display, email = raw.get("display_name"), raw.get("email")
    if not isinstance(display, str) or not isinstance(email, str):
        return None
    if not display.strip() or not email.strip():
        return None
    return Identity(display_name=display.strip(), email=email.strip(), addrtype=ADDRTYPE)


# --- Objects --------------------------------------------------------------------------------


class MailUser(PropsObject):
    """A contact opened through its entry ID: read-only, its properties fixed at open."""

    object_type = ObjectType.MAPI_MAILUSER


def mailuser_props(contact: Contact, eid: bytes) -> dict[str, Any]:
    """The properties of a contact as a MAPI messaging user."""
    props: dict[str, Any] = {
        PR_ENTRYID.name: eid,
        PR_RECORD_KEY.name: eid,
        PR_OBJECT_TYPE.name: int(ObjectType.MAPI_MAILUSER),
        PR_DISPLAY_TYPE.name: int(DisplayType.DT_MAILUSER),
        PR_DISPLAY_NAME.name: contact.display_name,
        PR_ADDRTYPE.name: ADDRTYPE,
    }
    if contact.email is not None:
        props[PR_EMAIL_ADDRESS.name] = contact.email
        props[PR_SEARCH_KEY.name] = search_key(ADDRTYPE, contact.email)
    for tag, value in (
        (PR_GIVEN_NAME, contact.given_name),
        (PR_SURNAME, contact.surname),
        (PR_COMPANY_NAME, contact.company),
    ):
        if value:
            props[tag.name] = value
    return props


# --- The provider ---------------------------------------------------------------------------


class VCardAddressBook(AddressBookProvider):
    """An address book provider over one vdir."""

    name = "contacts"
    display = "mapid vCard"

    def __init__(self, support: ProviderSupport) -> None:
        super().__init__(support)
        self._folder: Path | None = None
        self._uid: bytes | None = None
        self._registered: set[bytes] = set()
        self._contacts: tuple[Contact, ...] = ()
        self._by_uid: dict[str, Contact] = {}
        self._unreadable: tuple[Path, ...] = ()
        self._identity: Identity | None = None
        self._identity_entryid: bytes | None = None
        self._logged_on = False

    # Logon and state.

    async def logon(self) -> None:
        await self._load()
        self._logged_on = True

    async def logoff(self) -> None:
        self._contacts, self._by_uid, self._logged_on = (), {}, False

    async def validate_state(self, flags: ValidateStateFlags) -> None:
        """Re-read the configuration and the folder (edited cards, a changed `path`)."""
        before = set(self.status_props())
        try:
            await self._load()
        except MapiError as exc:
            self.support.modify_status_row(
                {
                    PR_STATUS_CODE.name: int(StatusCode.STATUS_FAILURE),
                    PR_STATUS_STRING.name: exc.message,
                }
            )
            raise
        props = self.status_props()
        # A merge cannot drop a column: replace the row's columns when identity went away.
        self.support.modify_status_row(props, update=before <= props.keys())

    async def _load(self) -> None:
        config = self.support.config()
        problems = VCardService.check_config(config)
        if problems:
            raise MapiError(
                ErrorCode.MAPI_E_UNCONFIGURED,
                "vcard: " + "; ".join(f"{p.key}: {p.message}" for p in problems),
                details={"errors": [{"key": p.key, "message": p.message} for p in problems]},
            )
        folder = self.support.resolve_path(str(config["path"]))
        real, scan = await self.support.run_blocking(_scan, folder, self.support.logger)
        uid = uid_from_name("vcard", str(real))
        if uid not in self._registered:
            self.support.set_provider_uid(uid)
            self._registered.add(uid)
        self._folder, self._uid = real, uid
        self._contacts = scan.contacts
        self._by_uid = scan.by_uid
        self._unreadable = scan.unreadable
        self._identity = _identity(config)
        self._identity_entryid = self._make_identity_entryid(self._identity)
        self.support.logger.debug(
            "vcard: %s: %d contacts, %d unreadable files",
            real,
            len(scan.contacts),
            len(scan.unreadable),
        )

    def _make_identity_entryid(self, identity: Identity | None) -> bytes | None:
        """My entry ID for the card with the identity's address, else a one-off."""
        if identity is None:
            return None
        wanted = identity.email.casefold()
        for contact in self._contacts:
            if any(e.casefold() == wanted for e in contact.emails):
                return self.entryid_of(contact)
        return one_off(identity.display_name, identity.addrtype, identity.email)

    # The status row.

    def status_props(self) -> dict[str, Any]:
        props: dict[str, Any] = {PR_STATUS_CODE.name: int(StatusCode.STATUS_AVAILABLE)}
        if self._folder is not None:
            props[PR_RESOURCE_PATH.name] = str(self._folder)
        props[PR_STATUS_STRING.name] = self.status_string()
        identity = self._identity
        if identity is not None and self._identity_entryid is not None:
            props[PR_IDENTITY_DISPLAY.name] = identity.display_name
            props[PR_IDENTITY_ENTRYID.name] = self._identity_entryid
            props[PR_IDENTITY_SEARCH_KEY.name] = search_key(identity.addrtype, identity.email)
        return props

    def status_string(self) -> str:
        count = len(self._contacts)
        text = f"{count} contact{'' if count == 1 else 's'}"
        bad = len(self._unreadable)
        if bad:
            text += f", {bad} unreadable file{'' if bad == 1 else 's'}"
        return text

    def row_flags(self) -> ResourceFlags:
        """PR_RESOURCE_FLAGS of my row: whether I supply the session's primary identity."""
        if self.identity() is not None:
            return ResourceFlags.STATUS_PRIMARY_IDENTITY
        return ResourceFlags.STATUS_NO_PRIMARY_IDENTITY

    def identity(self) -> Identity | None:
        if self._logged_on:
            return self._identity
        return _identity(self.support.config())

    def identity_entryid(self) -> bytes | None:
        return self._identity_entryid

    # Entry IDs and objects.

    @property
    def uid(self) -> bytes | None:
        """My MAPIUID (None before logon)."""
        return self._uid

    def entryid_of(self, contact: Contact) -> bytes:
        if self._uid is None:
            raise MapiError(ErrorCode.MAPI_E_CALL_FAILED, "vcard: not logged on")
        return make(self._uid, _CONTACT_PREFIX + contact.uid.encode("utf-8"))

    def _contact_uid(self, eid: bytes) -> str | None:
        """The contact UID an entry ID of mine names, or None when it names no contact."""
        if len(eid) < ENTRYID_MIN_LENGTH or uid_of(eid) != self._uid:
            return None
        private = private_of(eid)
        if not private.startswith(_CONTACT_PREFIX):
            return None
        try:
            return private[len(_CONTACT_PREFIX) :].decode("utf-8")
        except UnicodeDecodeError:
            return None

    async def open_entry(self, entryid: bytes, flags: int) -> MapiObject:
        if self._uid is None or uid_of(entryid) != self._uid:
            raise MapiError(ErrorCode.MAPI_E_INVALID_ENTRYID, "not an entry ID of this folder")
        contact_uid = self._contact_uid(entryid)
        contact = self._by_uid.get(contact_uid) if contact_uid is not None else None
        if contact is None:
            raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, "no such contact in this folder")
        return MailUser(mailuser_props(contact, self.entryid_of(contact)))

    def compare_entryids(self, a: bytes, b: bytes) -> bool:
        """Same contact, whatever the flag bytes say."""
        ua, ub = self._contact_uid(a), self._contact_uid(b)
        if ua is None or ub is None:
            return a == b
        return ua == ub

    # What resolve_names builds on.

    def contacts(self) -> list[Contact]:
        return list(self._contacts)

    def resolve(self, name: str) -> list[Contact]:
        """Contacts whose name or an address matches, case-insensitively.

        Exact matches come first, then prefix matches, then substring matches.
        """
        needle = name.strip().casefold()
        if not needle:
            return []
        ranked: list[tuple[int, int, Contact]] = []
        for index, contact in enumerate(self._contacts):
            rank = _match_rank(needle, [contact.display_name, *contact.emails])
            if rank is not None:
                ranked.append((rank, index, contact))
        return [contact for _, _, contact in sorted(ranked, key=lambda r: r[:2])]


def _match_rank(needle: str, haystack: Iterable[str]) -> int | None:
    best: int | None = None
    for text in haystack:
        folded = text.casefold()
        if folded == needle:
            rank = 0
        elif folded.startswith(needle):
            rank = 1
        elif needle in folded:
            rank = 2
        else:
            continue
        best = rank if best is None else min(best, rank)
    return best


# --- The service ----------------------------------------------------------------------------


class VCardService(MessageService):
    """The `vcard` service: one address book provider; it can supply the primary identity."""

    name = "vcard"
    display_name = "vCard address book"
    flags = ServiceFlags(0)
    providers = (VCardAddressBook,)
    config_schema: ClassVar[dict[str, Any]] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "vCard address book",
        "type": "object",
        "properties": {
            "path": {
                "type": "string",
                "pattern": "\\S",
                "x-error": "must not be empty",
                "description": "A folder of .vcf files (khard / vdirsyncer layout); "
                "created if missing.",
            },
            "display_name": {"type": "string", "description": "Name of the address book."},
            "identity": {
                "type": "object",
                "description": "The user this service stands for (the session's identity).",
                "properties": {
                    "display_name": {
                        "type": "string",
                        "pattern": "\\S",
                        "x-error": "must not be empty",
                    },
                    "email": {
                        "type": "string",
                        "pattern": "^[^@\\s]+@[^@\\s]+$",
                        "x-error": "must be an e-mail address (name@domain)",
                    },
                },
                "required": ["display_name", "email"],
                "additionalProperties": False,
            },
        },
        "required": ["path"],
    }

    @classmethod
    def identity(cls, config: Mapping[str, Any]) -> Identity | None:
        return _identity(config)
