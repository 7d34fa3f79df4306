"""The `vcard` message service: an address book over a folder of `.vcf` files (DESIGN.md 4).

The folder is a vdir, the layout khard and vdirsyncer share: `.vcf` files side by side, each
holding one card or several. The provider reads the folder at logon, whenever the folder
changes on disk (through `support.watch_directory`) and on ValidateState, and keeps the
contacts in memory; a contact's entry ID carries its vCard UID, so it stays valid across
restarts for as long as the card keeps its UID. The folder's MAPIUID derives from its real
path, so entry IDs survive profile edits that keep the folder.

The folder is one address book container (AB_RECIPIENTS | AB_MODIFIABLE, or AB_UNMODIFIABLE
with `read_only`) whose contents are the cards that have an e-mail address: a card without
one cannot be a recipient, so it is neither listed nor resolved (it still counts in the
status row, which says how many lack an address). Entry IDs, after the 4 flag bytes and the MAPIUID:

- `01` + UID (UTF-8): a contact, at its preferred address;
- `02`: the folder's container;
- `03` + address (UTF-8) + `00` + UID: the same contact at one of its other addresses, so
  that a resolved or listed secondary address opens as the mail user with that address.

Every address of a card is also in PR_CONTACT_EMAIL_ADDRESSES (preferred first), with
PR_CONTACT_ADDRTYPES, PR_CONTACT_ENTRYIDS (the per-address entry IDs, in the same order)
and PR_CONTACT_DEFAULT_ADDRESS_INDEX 0.

Creating, editing and deleting cards is vcard_write.py's: one vCard 4.0 card a file.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import threading
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import vobject

from mapid.constants import (
    ENTRYID_MIN_LENGTH,
    AbContainerFlags,
    DisplayType,
    NotificationEvent,
    ObjectType,
    OpenFlags,
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
    PR_CONTACT_ADDRTYPES,
    PR_CONTACT_DEFAULT_ADDRESS_INDEX,
    PR_CONTACT_EMAIL_ADDRESSES,
    PR_CONTACT_ENTRYIDS,
    PR_CONTAINER_FLAGS,
    PR_DEPTH,
    PR_DISPLAY_NAME,
    PR_DISPLAY_TYPE,
    PR_EMAIL_ADDRESS,
    PR_ENTRYID,
    PR_GIVEN_NAME,
    PR_IDENTITY_DISPLAY,
    PR_IDENTITY_ENTRYID,
    PR_IDENTITY_SEARCH_KEY,
    PR_INSTANCE_KEY,
    PR_NICKNAME,
    PR_OBJECT_TYPE,
    PR_RECORD_KEY,
    PR_RESOURCE_PATH,
    PR_SEARCH_KEY,
    PR_SMTP_ADDRESS,
    PR_STATUS_CODE,
    PR_STATUS_STRING,
    PR_SURNAME,
    PR_TRANSMITABLE_DISPLAY_NAME,
)
from mapid.providers.base import (
    AddressBookProvider,
    Container,
    Identity,
    MapiObject,
    MessageService,
    PropsObject,
    ProviderSupport,
    Row,
    pick_props,
)
from mapid.providers.row_pacer import RowPacer

__all__ = [
    "AddressBook",
    "Contact",
    "MailUser",
    "VCardAddressBook",
    "VCardContainer",
    "VCardService",
    "VdirScan",
    "read_vdir",
]

ADDRTYPE = "SMTP"
_CONTACT_PREFIX = b"\x01"
"""First private byte of a contact's entry ID (its preferred address)."""
_CONTAINER_PREFIX = b"\x02"
"""First private byte of the folder's container entry ID."""
_ADDRESS_PREFIX = b"\x03"
"""First private byte of a contact's entry ID at another of its addresses."""
_NO_PREF = 101
"""Rank of an address without a preference; vCard 4.0 PREF runs from 1 (best) to 100."""
_CONTAINER_EVENTS = (
    NotificationEvent.fnevObjectCreated
    | NotificationEvent.fnevObjectDeleted
    | NotificationEvent.fnevObjectModified
)
_CONTACT_EVENTS = NotificationEvent.fnevObjectDeleted | NotificationEvent.fnevObjectModified


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
    nickname: str | None = None

    @property
    def email(self) -> str | None:
        """The preferred address (PR_EMAIL_ADDRESS), if the card has any."""
        return self.emails[0] if self.emails else None


@dataclass(frozen=True)
class VdirScan:
    """The result of reading a folder: its contacts and the files that would not parse."""

    contacts: tuple[Contact, ...]
    unreadable: tuple[Path, ...]
    books: dict[bytes, AddressBook] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )
    """The address book views of this scan by MAPIUID, built once and shared by sessions."""

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
            return max(1, min(int(raw), _NO_PREF - 1))
        except (TypeError, ValueError):
            return 1
    types = {
        part.strip().lower()
        for value in line.params.get("TYPE", [])
        for part in str(value).split(",")
    }
    singles = {str(t).lower() for t in getattr(line, "singletonparams", [])}
    return 1 if "pref" in types or "pref" in singles else _NO_PREF


def _emails(card: Any) -> tuple[str, ...]:
    """Every EMAIL of the card, preferred first, otherwise in file order, no duplicates."""
    ranked: list[tuple[int, int, str]] = []
    seen: set[str] = set()
    for index, line in enumerate(card.contents.get("email", [])):
        value = line.value.strip() if isinstance(line.value, str) else ""
        if value.lower().startswith("mailto:"):
            value = value[len("mailto:") :].strip()
        if not value or "\0" in value or any(c.isspace() for c in value):
            continue  # no address a transport could use
        if value.casefold() not in seen:
            seen.add(value.casefold())
            ranked.append((_pref_rank(line), index, value))
    return tuple(value for _, _, value in sorted(ranked))


def _contact(card: Any, path: Path, index: int) -> Contact:
    given, surname = _names(card)
    emails = _emails(card)
    company = _first_text(card, "org")
    uid = _first_text(card, "uid") or f"{path.name}#{index}"
    # FN is required by 3.0 and 4.0, but 2.1 exports and hand-written cards go without.
    display = (
        _first_text(card, "fn")
        or " ".join(p for p in (given, surname) if p)
        or company
        or (emails[0] if emails else uid)
    )
    return Contact(
        uid=uid,
        display_name=display,
        emails=emails,
        path=path,
        given_name=given,
        surname=surname,
        company=company,
        nickname=_first_text(card, "nickname"),
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
            if not _is_card_file(name):
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


def _is_card_file(name: str) -> bool:
    """What read_vdir reads: `.vcf` files, not hidden ones (editors' and syncers' temps)."""
    return name.lower().endswith(".vcf") and not name.startswith(".")


def _prepare_folder(folder: Path, create: bool) -> Path:
    """The folder's real path, creating it when missing (`create`): a new vdir is empty."""
    if folder.exists() and not folder.is_dir():
        raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, f"vCard path {folder} is not a folder")
    if not create:
        if not folder.is_dir():
            raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, f"vCard folder {folder} is gone")
        return folder.resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except PermissionError as exc:
        raise MapiError(ErrorCode.MAPI_E_NO_ACCESS, f"cannot create {folder}: {exc}") from exc
    except OSError as exc:
        raise MapiError(ErrorCode.MAPI_E_CALL_FAILED, f"cannot create {folder}: {exc}") from exc
    return folder.resolve()


def _scan(
    folder: Path, logger: logging.Logger, create: bool, previous: AddressBook | None
) -> tuple[Path, VdirScan, AddressBook]:
    real = _prepare_folder(folder, create)
    try:
        scan = read_vdir(real, logger)
    except OSError as exc:
        raise MapiError(ErrorCode.MAPI_E_CALL_FAILED, f"cannot read {real}: {exc}") from exc
    uid = uid_from_name("vcard", str(real))
    book = scan.books.get(uid)
    if book is None:
        book = scan.books.setdefault(uid, AddressBook.build(uid, scan, previous))
    return real, scan, book


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


# --- Entry IDs, rows and matching (pure; shared by every session of a folder) ---------------


def contact_entryid(uid: bytes, contact: Contact, address: str | None = None) -> bytes:
    """A contact's entry ID at `address` (None or the preferred one: its plain entry ID)."""
    if address is None or (contact.email is not None and address == contact.email):
        return make(uid, _CONTACT_PREFIX + contact.uid.encode("utf-8"))
    return make(uid, _ADDRESS_PREFIX + address.encode("utf-8") + b"\0" + contact.uid.encode())


def container_entryid(uid: bytes) -> bytes:
    return make(uid, _CONTAINER_PREFIX)


@dataclass(frozen=True)
class _Target:
    """What one of my entry IDs names: the container, or a contact (at an address)."""

    container: bool = False
    contact_uid: str | None = None
    address: str | None = None
    """None: the contact's preferred address."""


def _parse_entryid(uid: bytes | None, eid: bytes) -> _Target | None:
    """What an entry ID of mine names; None for anything else (another MAPIUID, garbage)."""
    if uid is None or len(eid) < ENTRYID_MIN_LENGTH or uid_of(eid) != uid:
        return None
    private = private_of(eid)
    try:
        if private == _CONTAINER_PREFIX:
            return _Target(container=True)
        if private.startswith(_CONTACT_PREFIX) and len(private) > 1:
            return _Target(contact_uid=private[1:].decode("utf-8"))
        if private.startswith(_ADDRESS_PREFIX):
            address, nul, contact_uid = private[1:].partition(b"\0")
            if nul and address and contact_uid:
                return _Target(
                    contact_uid=contact_uid.decode("utf-8"), address=address.decode("utf-8")
                )
    except UnicodeDecodeError:
        return None
    return None


def mailuser_props(contact: Contact, eid: bytes, address: str | None = None) -> dict[str, Any]:
    """The properties of a contact as a MAPI messaging user, at `address` (else preferred).

    `eid` is the contact's entry ID at that address; the other addresses' entry IDs are
    derived from its MAPIUID.
    """
    uid = uid_of(eid)
    address = address if address is not None else contact.email
    props: dict[str, Any] = {
        PR_ENTRYID.name: eid,
        PR_RECORD_KEY.name: eid,
        PR_OBJECT_TYPE.name: int(ObjectType.MAPI_MAILUSER),
        PR_DISPLAY_TYPE.name: int(DisplayType.DT_MAILUSER),
        PR_DISPLAY_NAME.name: contact.display_name,
        PR_TRANSMITABLE_DISPLAY_NAME.name: contact.display_name,
        PR_ADDRTYPE.name: ADDRTYPE,
    }
    if address is not None:
        props[PR_EMAIL_ADDRESS.name] = address
        props[PR_SMTP_ADDRESS.name] = address
        props[PR_SEARCH_KEY.name] = search_key(ADDRTYPE, address)
    if contact.emails:
        props[PR_CONTACT_EMAIL_ADDRESSES.name] = list(contact.emails)
        props[PR_CONTACT_ADDRTYPES.name] = [ADDRTYPE] * len(contact.emails)
        props[PR_CONTACT_ENTRYIDS.name] = [contact_entryid(uid, contact, a) for a in contact.emails]
        props[PR_CONTACT_DEFAULT_ADDRESS_INDEX.name] = 0
    for tag, value in (
        (PR_GIVEN_NAME, contact.given_name),
        (PR_SURNAME, contact.surname),
        (PR_COMPANY_NAME, contact.company),
        (PR_NICKNAME, contact.nickname),
    ):
        if value:
            props[tag.name] = value
    return props


def _recipient_row(contact: Contact, eid: bytes, address: str) -> dict[str, Any]:
    """What ab.resolve_names answers for a contact at one address."""
    return {
        PR_ENTRYID.name: eid,
        PR_DISPLAY_NAME.name: contact.display_name,
        PR_EMAIL_ADDRESS.name: address,
        PR_ADDRTYPE.name: ADDRTYPE,
        PR_SEARCH_KEY.name: search_key(ADDRTYPE, address),
        PR_OBJECT_TYPE.name: int(ObjectType.MAPI_MAILUSER),
        PR_DISPLAY_TYPE.name: int(DisplayType.DT_MAILUSER),
    }


def _fold(text: str) -> str:
    """The form names are compared in: NFC (composed and decomposed é alike), casefolded,
    inner white space collapsed."""
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


_WORD_BREAK = re.compile(r"[\s.,;@_+\-()<>\"']+")


@dataclass(frozen=True)
class _Key:
    """One text a contact is found by, folded, with its words; `address` when it is one."""

    text: str
    words: tuple[str, ...]
    address: str | None


def _keys(contact: Contact) -> tuple[_Key, ...]:
    names: list[str] = [contact.display_name]
    given, surname = contact.given_name, contact.surname
    if given and surname:
        names += [f"{given} {surname}", f"{surname} {given}", f"{surname}, {given}"]
    names += [n for n in (given, surname, contact.nickname) if n]
    keys: list[_Key] = []
    seen: set[str] = set()
    for name in names:
        folded = _fold(name)
        if folded and folded not in seen:
            seen.add(folded)
            keys.append(_Key(folded, tuple(w for w in _WORD_BREAK.split(folded) if w), None))
    for address in contact.emails:
        folded = _fold(address)
        local, _, domain = folded.rpartition("@")
        # The local part and the domain count as words too: "example.org" finds everyone there.
        words = tuple(w for w in (*_WORD_BREAK.split(folded), local, domain) if w)
        keys.append(_Key(folded, words, address))
    return tuple(keys)


def _rank(needle: str, key: _Key) -> int | None:
    """0 exact, 1 prefix of the text or of one of its words, 2 substring, None no match."""
    if key.text == needle:
        return 0
    if key.text.startswith(needle) or any(w.startswith(needle) for w in key.words):
        return 1
    if needle in key.text:
        return 2
    return None


@dataclass(frozen=True)
class _Entry:
    """One contact as the address book serves it."""

    contact: Contact
    eid: bytes
    row: Mapping[str, Any] | None
    """Its contents-table row; None for a card without an address (not listed)."""
    keys: tuple[_Key, ...]
    recipients: Mapping[str, Row]
    """The recipient rows by address, for resolve_names."""


@dataclass(frozen=True)
class AddressBook:
    """The address book over one scan of a folder: entry IDs, rows and the resolve index,
    built once per scan (in the worker thread) and shared by every session of the folder.
    An unchanged contact keeps the very entry of the previous scan."""

    uid: bytes
    container_eid: bytes
    entries: tuple[_Entry, ...]
    by_uid: Mapping[str, _Entry]
    rows: tuple[Row, ...]
    without_address: int

    @classmethod
    def build(cls, uid: bytes, scan: VdirScan, previous: AddressBook | None) -> AddressBook:
        reuse = previous.by_uid if previous is not None and previous.uid == uid else {}
        entries: list[_Entry] = []
        for contact in scan.contacts:
            old = reuse.get(contact.uid)
            if old is not None and (old.contact is contact or old.contact == contact):
                entries.append(old)
                continue
            eid = contact_entryid(uid, contact)
            row: dict[str, Any] | None = None
            if contact.emails:
                row = mailuser_props(contact, eid)
                row[PR_INSTANCE_KEY.name] = eid
            recipients = {
                address: _recipient_row(contact, contact_entryid(uid, contact, address), address)
                for address in contact.emails
            }
            entries.append(_Entry(contact, eid, row, _keys(contact), recipients))
        return cls(
            uid=uid,
            container_eid=container_entryid(uid),
            entries=tuple(entries),
            by_uid={e.contact.uid: e for e in entries},
            rows=tuple(e.row for e in entries if e.row is not None),
            without_address=sum(1 for e in entries if e.row is None),
        )

    def search(self, name: str) -> list[tuple[int, Row]]:
        """(rank, recipient row) of every contact with an address that matches, best first;
        equal ranks keep the folder's order. A match on an address answers that address, a
        match on a name the preferred one (a name wins a tie with an address)."""
        needle = _fold(name)
        if not needle:
            return []
        found: list[tuple[int, int, Row]] = []
        for index, entry in enumerate(self.entries):
            contact = entry.contact
            if contact.email is None:
                continue
            best: tuple[int, int] | None = None  # (rank, 0 for a name or 1 + address order)
            best_address = contact.email
            for key in entry.keys:
                rank = _rank(needle, key)
                if rank is None:
                    continue
                order = 0 if key.address is None else 1 + contact.emails.index(key.address)
                if best is None or (rank, order) < best:
                    best = (rank, order)
                    best_address = key.address or contact.email
            if best is not None:
                found.append((best[0], index, entry.recipients[best_address]))
        found.sort(key=lambda item: item[:2])
        return [(rank, row) for rank, _, row in found]


# --- Objects --------------------------------------------------------------------------------


class MailUser(PropsObject):
    """A contact opened through its entry ID: read-only, its properties fixed at open."""

    object_type = ObjectType.MAPI_MAILUSER

    async def set_props(self, props: Mapping[str, Any]) -> dict[str, str]:
        raise MapiError(ErrorCode.MAPI_E_NO_ACCESS, _READ_ONLY_USER)

    async def delete_props(self, tags: list[str]) -> dict[str, str]:
        raise MapiError(ErrorCode.MAPI_E_NO_ACCESS, _READ_ONLY_USER)


_READ_ONLY_USER = (
    "this contact is open read-only: open it with session.open_entry and MAPI_MODIFY (or from "
    "a container handle opened so) in an address book without read_only"
)


class VCardContainer(Container):
    """The folder as an address book container. Its tables follow the folder live: they are
    the rows of the provider's latest scan, whenever the handle was opened."""

    object_type = ObjectType.MAPI_ABCONT

    def __init__(self, provider: VCardAddressBook) -> None:
        self._provider = provider

    async def get_props(self, tags: list[str] | None) -> dict[str, Any]:
        return pick_props(self._provider.container_props(), tags)

    async def contents_rows(self) -> Sequence[Row]:
        return self._provider.contents_rows()

    async def hierarchy_rows(self) -> Sequence[Row]:
        return ()

    async def open_child(self, entryid: bytes | None, flags: int) -> MapiObject:
        if entryid is None:
            raise MapiError(
                ErrorCode.MAPI_E_NO_SUPPORT, "an address book container has no root to open"
            )
        return await self._provider.open_entry(entryid, flags)


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
        self._book: AddressBook | None = None
        self._contacts: tuple[Contact, ...] = ()
        self._by_uid: dict[str, Contact] = {}
        self._unreadable: tuple[Path, ...] = ()
        self._identity: Identity | None = None
        self._identity_entryid: bytes | None = None
        self._container_row: dict[str, Any] | None = None
        self._logged_on = False
        self._load_lock = asyncio.Lock()
        self._stop_watch: Callable[[], None] | None = None
        self._watched: tuple[Path, int, int] | None = None
        self._watch_error: str | None = None
        self._refresh_task: asyncio.Task[None] | None = None
        self._dirty = False
        self._failure: str | None = None
        self._shown: dict[str, Any] = {}
        """The status columns last written to my row."""
        self._row = RowPacer(self._push_status, support.logger)

    def _show(self, props: dict[str, Any]) -> None:
        """Write my columns (replacing them when one went, as a merge cannot drop it)."""
        self.support.modify_status_row(props, update=self._shown.keys() <= props.keys())
        self._shown = props

    async def _push_status(self) -> bool:
        """The row after the folder changed on disk (RowPacer's push: a burst of card
        writes is a few row changes, not one a file)."""
        props = self.status_props()
        if not self._logged_on or props == self._shown:
            return False
        self._show(props)
        return True

    # Logon and state.

    async def logon(self) -> None:
        await self._load(create=True)
        self._logged_on = True
        self._watch()
        self._shown = self.status_props()  # what the daemon puts in my row now

    async def logoff(self) -> None:
        self._logged_on = False
        self._row.close()
        self._unwatch()
        task, self._refresh_task = self._refresh_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        self._book, self._contacts, self._by_uid, self._container_row = None, (), {}, None

    async def validate_state(self, flags: ValidateStateFlags) -> None:
        """Re-read the configuration and the folder (edited cards, a changed `path`)."""
        try:
            await self._load(create=True)
        except MapiError as exc:
            self._report_failure(exc)
            raise
        self._watch()  # the path may have changed, or the folder been made anew
        # A merge cannot drop a column: replace the row's columns when identity went away.
        self._show(self.status_props())

    def _report_failure(self, exc: MapiError) -> None:
        self._failure = exc.message
        self.support.modify_status_row(
            {
                PR_STATUS_CODE.name: int(StatusCode.STATUS_FAILURE),
                PR_STATUS_STRING.name: exc.message,
            }
        )
        self._shown = self.status_props()

    async def _load(self, *, create: bool) -> None:
        """Read the configuration and the folder, then tell advise sinks what changed."""
        async with self._load_lock:
            config = self.support.config()
            problems = VCardService.check_config(config)
            if problems:
                raise MapiError(
                    ErrorCode.MAPI_E_UNCONFIGURED,
                    "vcard: " + "; ".join(f"{p.key}: {p.message}" for p in problems),
                    details={"errors": [{"key": p.key, "message": p.message} for p in problems]},
                )
            folder = self.support.resolve_path(str(config["path"]))
            real, scan, book = await self.support.run_blocking(
                _scan, folder, self.support.logger, create, self._book
            )
            if book.uid not in self._registered:
                self.support.set_provider_uid(book.uid)
                self._registered.add(book.uid)
            previous = self._book if self._logged_on else None
            self._folder, self._uid, self._book = real, book.uid, book
            self._contacts = scan.contacts
            self._by_uid = scan.by_uid
            self._unreadable = scan.unreadable
            self._failure = None
            self._identity = _identity(config)
            self._identity_entryid = self._make_identity_entryid(self._identity)
            self._container_row = self._make_container_row(config, real, book)
            self.support.logger.debug(
                "vcard: %s: %d contacts, %d unreadable files",
                real,
                len(scan.contacts),
                len(scan.unreadable),
            )
            if previous is not None and previous is not book:
                self._notify_changes(previous, book)

    def _make_container_row(
        self, config: Mapping[str, Any], folder: Path, book: AddressBook
    ) -> dict[str, Any]:
        name = config.get("display_name")
        return {
            PR_ENTRYID.name: book.container_eid,
            PR_RECORD_KEY.name: book.container_eid,
            PR_INSTANCE_KEY.name: book.container_eid,
            PR_DISPLAY_NAME.name: name if isinstance(name, str) and name.strip() else folder.name,
            PR_OBJECT_TYPE.name: int(ObjectType.MAPI_ABCONT),
            PR_DISPLAY_TYPE.name: int(DisplayType.DT_NOT_SPECIFIC),
            PR_CONTAINER_FLAGS.name: int(
                AbContainerFlags.AB_RECIPIENTS
                | (
                    AbContainerFlags.AB_UNMODIFIABLE
                    if config.get("read_only") is True
                    else AbContainerFlags.AB_MODIFIABLE
                )
            ),
            PR_DEPTH.name: 0,
        }

    def _make_identity_entryid(self, identity: Identity | None) -> bytes | None:
        """My entry ID for the card with the identity's address, else a one-off."""
        if identity is None:
            return None
        wanted = identity.email.casefold()
        for contact in self._contacts:
            for address in contact.emails:
                if address.casefold() == wanted:
                    return self.entryid_of(contact, address)
        return one_off(identity.display_name, identity.addrtype, identity.email)

    # Following the folder on disk.

    def _watch(self) -> None:
        """Watch the folder (again, when it is a new one); failures only lose live updates."""
        folder = self._folder
        if folder is None:
            return
        try:
            info = folder.stat()
        except OSError:
            return
        where = (folder, info.st_dev, info.st_ino)
        if self._watched == where and self._stop_watch is not None:
            return
        self._unwatch()
        watch_directory = getattr(self.support, "watch_directory", None)
        if watch_directory is None:
            return  # a support without watching: ValidateState still re-reads
        try:
            self._stop_watch = watch_directory(folder, self._on_change)
        except Exception as exc:
            self._watch_error = f"not watched ({exc})"
            self.support.logger.warning("vcard: cannot watch %s: %s", folder, exc)
            return
        self._watched, self._watch_error = where, None

    def _unwatch(self) -> None:
        stop, self._stop_watch, self._watched = self._stop_watch, None, None
        if stop is not None:
            stop()

    def _on_change(self, paths: set[Path]) -> None:
        """The watch's callback (on the loop): re-read when a card file or the folder moved."""
        folder = self._folder
        if not self._logged_on or folder is None:
            return
        if not any(p == folder or _is_card_file(p.name) for p in paths):
            return
        self._dirty = True
        if self._refresh_task is None or self._refresh_task.done():
            self._refresh_task = asyncio.get_running_loop().create_task(self._refresh())

    async def _refresh(self) -> None:
        """Re-read until no change is pending; the status row follows, paced (RowPacer)."""
        while self._dirty and self._logged_on:
            self._dirty = False
            try:
                # Never re-create the folder here: it may be in the middle of being swapped.
                await self._load(create=False)
            except MapiError as exc:
                if self._logged_on and exc.message != self._failure:
                    self.support.logger.warning("vcard: %s", exc.message)
                    self._report_failure(exc)
                continue
            except Exception:
                self.support.logger.exception("vcard: re-reading %s failed", self._folder)
                continue
            self._row.changed()

    def _notify_changes(self, old: AddressBook, new: AddressBook) -> None:
        """fnevObjectCreated / Deleted / Modified for the contacts that appeared, vanished or
        changed, to sinks on the container (their parent) or on the contact itself."""
        if old.uid != new.uid:
            return  # another folder altogether: its entry IDs were never handed out
        parent = new.container_eid
        for entry in new.entries:
            before = old.by_uid.get(entry.contact.uid)
            if before is None:
                event = NotificationEvent.fnevObjectCreated
            elif before is entry or before.contact == entry.contact:
                continue
            else:
                event = NotificationEvent.fnevObjectModified
            self._raise(event, entry.eid, parent)
        for entry in old.entries:
            if entry.contact.uid not in new.by_uid:
                self._raise(NotificationEvent.fnevObjectDeleted, entry.eid, parent)

    def _raise(self, event: NotificationEvent, eid: bytes, parent: bytes) -> None:
        self.support.notify(
            event,
            entryid=eid,
            object_type=int(ObjectType.MAPI_MAILUSER),
            parent_entryid=parent,
        )

    async def advise(self, entryid: bytes, event_mask: NotificationEvent) -> None:
        """The container raises contact creations, deletions and changes; a contact its own
        deletion and changes."""
        target = _parse_entryid(self._uid, entryid)
        if target is None:
            raise MapiError(ErrorCode.MAPI_E_INVALID_ENTRYID, "not an entry ID of this folder")
        allowed = _CONTAINER_EVENTS if target.container else _CONTACT_EVENTS
        if event_mask & ~allowed:
            names = ", ".join(e.name or "" for e in NotificationEvent if e & allowed)
            what = "the vCard container" if target.container else "a contact"
            raise MapiError(ErrorCode.MAPI_E_NO_SUPPORT, f"{what} raises only {names}")
        if not target.container and self._lookup(target) is None:
            raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, "no such contact in this folder")

    # The status row.

    def status_props(self) -> dict[str, Any]:
        code = StatusCode.STATUS_FAILURE if self._failure else StatusCode.STATUS_AVAILABLE
        props: dict[str, Any] = {PR_STATUS_CODE.name: int(code)}
        if self._folder is not None:
            props[PR_RESOURCE_PATH.name] = str(self._folder)
        props[PR_STATUS_STRING.name] = self._failure or self.status_string()
        identity = self._identity
        if identity is not None and self._identity_entryid is not None:
            props[PR_IDENTITY_DISPLAY.name] = identity.display_name
            props[PR_IDENTITY_ENTRYID.name] = self._identity_entryid
            props[PR_IDENTITY_SEARCH_KEY.name] = search_key(identity.addrtype, identity.email)
        return props

    def status_string(self) -> str:
        count = len(self._contacts)
        text = f"{count} contact{'' if count == 1 else 's'}"
        missing = self._book.without_address if self._book is not None else 0
        if missing:
            text += f", {missing} without an e-mail address"
        bad = len(self._unreadable)
        if bad:
            text += f", {bad} unreadable file{'' if bad == 1 else 's'}"
        if self._watch_error:
            text += f", {self._watch_error}"
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

    # Containers.

    def top_containers(self) -> list[Row]:
        return [self._container_row] if self._container_row is not None else []

    def container_props(self) -> dict[str, Any]:
        """The container object's properties: its hierarchy row without the table columns."""
        row = self._container_row or {}
        return {k: v for k, v in row.items() if k not in (PR_DEPTH.name, PR_INSTANCE_KEY.name)}

    def contents_rows(self) -> Sequence[Row]:
        """The mail users, as built with the scan: the same tuple until the folder changes."""
        return self._book.rows if self._book is not None else ()

    # Entry IDs and objects.

    @property
    def uid(self) -> bytes | None:
        """My MAPIUID (None before logon)."""
        return self._uid

    def entryid_of(self, contact: Contact, address: str | None = None) -> bytes:
        if self._uid is None:
            raise MapiError(ErrorCode.MAPI_E_CALL_FAILED, "vcard: not logged on")
        return contact_entryid(self._uid, contact, address)

    def _lookup(self, target: _Target) -> tuple[Contact, str | None] | None:
        """The contact and address an entry ID names, if the folder still has them."""
        contact = self._by_uid.get(target.contact_uid or "")
        if contact is None:
            return None
        if target.address is None:
            return contact, contact.email
        for address in contact.emails:
            if address == target.address:
                return contact, address
        return None

    async def open_entry(self, entryid: bytes, flags: int) -> MapiObject:
        if self._uid is None or uid_of(entryid) != self._uid:
            raise MapiError(ErrorCode.MAPI_E_INVALID_ENTRYID, "not an entry ID of this folder")
        target = _parse_entryid(self._uid, entryid)
        if target is None:
            raise MapiError(ErrorCode.MAPI_E_INVALID_ENTRYID, "not an entry ID of this folder")
        if target.container:
            return VCardContainer(self)
        found = self._lookup(target)
        if found is None:
            raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, "no such contact in this folder")
        contact, address = found
        props = mailuser_props(contact, self.entryid_of(contact, address), address)
        if flags & OpenFlags.MAPI_MODIFY and not self.read_only():
            from mapid.providers import vcard_write  # it imports this module

            return vcard_write.opened(self, entryid, props)
        return MailUser(props)

    # Writing (vcard_write.py; it imports this module, hence the imports in the methods).

    def read_only(self) -> bool:
        """The section's `read_only`: the folder is another program's to write."""
        return self.support.config().get("read_only") is True

    async def reload_after_write(self) -> None:
        """Read the folder now, so the change resolves at once; the watch sees it again later
        as the same scan. Advise sinks hear it as they hear any change on disk."""
        await self._load(create=False)
        self._row.changed()

    async def create_entry(self, container: bytes, props: Mapping[str, Any]) -> bytes:
        from mapid.providers import vcard_write

        return await vcard_write.create_entry(self, container, props)

    async def modify_entry(
        self, entryid: bytes, props: Mapping[str, Any], delete: Sequence[str] = ()
    ) -> Mapping[str, Any]:
        from mapid.providers import vcard_write

        return await vcard_write.modify_entry(self, entryid, props, delete)

    async def delete_entries(self, container: bytes, entryids: Sequence[bytes]) -> None:
        from mapid.providers import vcard_write

        await vcard_write.delete_entries(self, container, entryids)

    def compare_entryids(self, a: bytes, b: bytes) -> bool:
        """Same object, whatever the flag bytes say; a contact's plain entry ID and its entry
        ID at its preferred address name the same mail user."""
        ta, tb = _parse_entryid(self._uid, a), _parse_entryid(self._uid, b)
        if ta is None or tb is None:
            return a == b
        if ta.container or tb.container:
            return ta.container and tb.container
        if ta.contact_uid != tb.contact_uid:
            return False
        contact = self._by_uid.get(ta.contact_uid or "")
        preferred = contact.email if contact is not None else None

        def address(t: _Target) -> str | None:
            value = t.address if t.address is not None else preferred
            return value.casefold() if value is not None else None

        return address(ta) == address(tb)

    # Resolving names.

    async def resolve_names(self, name: str) -> list[tuple[int, Row]]:
        book = self._book
        if book is None:
            return []
        return await self.support.run_blocking(book.search, name)

    def contacts(self) -> list[Contact]:
        return list(self._contacts)

    def resolve(self, name: str) -> list[Contact]:
        """The contacts resolve_names finds for `name`, best first (blocking; for tests and
        tools on small books)."""
        book = self._book
        if book is None:
            return []
        found: list[Contact] = []
        for _, row in book.search(name):
            target = _parse_entryid(book.uid, row[PR_ENTRYID.name])
            entry = book.by_uid.get(target.contact_uid or "") if target is not None else None
            if entry is not None:
                found.append(entry.contact)
        return found


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
            "read_only": {
                "type": "boolean",
                "description": "Never write the folder (another program syncs it); "
                "creating, editing or deleting contacts is then MAPI_E_NO_ACCESS.",
            },
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
