"""The `vcard` address book provider: a folder of `.vcf` files as one container (docs/design.md 4).

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

Creating, editing and deleting cards is write.py's (through edit.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mapid.constants import (
    AbContainerFlags,
    DisplayType,
    NotificationEvent,
    ObjectType,
    OpenFlags,
    ResourceFlags,
    StatusCode,
    ValidateStateFlags,
)
from mapid.entryid import one_off, search_key, uid_of
from mapid.errors import ErrorCode, MapiError
from mapid.proptags import (
    PR_CONTAINER_FLAGS,
    PR_DEPTH,
    PR_DISPLAY_NAME,
    PR_DISPLAY_TYPE,
    PR_ENTRYID,
    PR_IDENTITY_DISPLAY,
    PR_IDENTITY_ENTRYID,
    PR_IDENTITY_SEARCH_KEY,
    PR_INSTANCE_KEY,
    PR_OBJECT_TYPE,
    PR_RECORD_KEY,
    PR_RESOURCE_PATH,
    PR_STATUS_CODE,
    PR_STATUS_STRING,
)
from mapid.providers.base import AddressBookProvider, Identity, MapiObject, ProviderSupport, Row
from mapid.providers.row_pacer import RowPacer
from mapid.providers.vcard import write
from mapid.providers.vcard.cards import Contact, is_card_file
from mapid.providers.vcard.config import check_config, config_identity
from mapid.providers.vcard.entryids import Target, contact_entryid, mailuser_props, parse_entryid
from mapid.providers.vcard.folder import scan_folder
from mapid.providers.vcard.matching import AddressBook
from mapid.providers.vcard.objects import MailUser, VCardContainer

__all__ = ["VCardAddressBook"]

_CONTAINER_EVENTS = (
    NotificationEvent.fnevObjectCreated
    | NotificationEvent.fnevObjectDeleted
    | NotificationEvent.fnevObjectModified
)
_CONTACT_EVENTS = NotificationEvent.fnevObjectDeleted | NotificationEvent.fnevObjectModified


class VCardAddressBook(AddressBookProvider):
    """An address book provider over one vdir."""

    name = "contacts"
    display = "mapid vCard"
    shared = True  # one logon for every session of a profile (docs/providers.md)

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
            problems = check_config(config)
            if problems:
                raise MapiError(
                    ErrorCode.MAPI_E_UNCONFIGURED,
                    "vcard: " + "; ".join(f"{p.key}: {p.message}" for p in problems),
                    details={"errors": [{"key": p.key, "message": p.message} for p in problems]},
                )
            folder = self.support.resolve_path(str(config["path"]))
            real, scan, book = await self.support.run_blocking(
                scan_folder, folder, self.support.logger, create, self._book
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
            self._identity = config_identity(config)
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
        if not any(p == folder or is_card_file(p.name) for p in paths):
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
        target = parse_entryid(self._uid, entryid)
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
        return config_identity(self.support.config())

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

    def _lookup(self, target: Target) -> tuple[Contact, str | None] | None:
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
        target = parse_entryid(self._uid, entryid)
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
            return write.opened(self, entryid, props)
        return MailUser(props)

    # Writing (write.py; it takes me as its WritableBook).

    @property
    def folder(self) -> Path | None:
        """The folder's real path (None before logon)."""
        return self._folder

    @property
    def by_uid(self) -> Mapping[str, Contact]:
        """The contacts of the last scan by UID."""
        return self._by_uid

    def read_only(self) -> bool:
        """The section's `read_only`: the folder is another program's to write."""
        return self.support.config().get("read_only") is True

    async def reload_after_write(self) -> None:
        """Read the folder now, so the change resolves at once; the watch sees it again later
        as the same scan. Advise sinks hear it as they hear any change on disk."""
        await self._load(create=False)
        self._row.changed()

    async def create_entry(self, container: bytes, props: Mapping[str, Any]) -> bytes:
        return await write.create_entry(self, container, props)

    async def modify_entry(
        self, entryid: bytes, props: Mapping[str, Any], delete: Sequence[str] = ()
    ) -> Mapping[str, Any]:
        return await write.modify_entry(self, entryid, props, delete)

    async def delete_entries(self, container: bytes, entryids: Sequence[bytes]) -> None:
        await write.delete_entries(self, container, entryids)

    def compare_entryids(self, a: bytes, b: bytes) -> bool:
        """Same object, whatever the flag bytes say; a contact's plain entry ID and its entry
        ID at its preferred address name the same mail user."""
        ta, tb = parse_entryid(self._uid, a), parse_entryid(self._uid, b)
        if ta is None or tb is None:
            return a == b
        if ta.container or tb.container:
            return ta.container and tb.container
        if ta.contact_uid != tb.contact_uid:
            return False
        contact = self._by_uid.get(ta.contact_uid or "")
        preferred = contact.email if contact is not None else None

        def address(t: Target) -> str | None:
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
            target = parse_entryid(book.uid, row[PR_ENTRYID.name])
            entry = book.by_uid.get(target.contact_uid or "") if target is not None else None
            if entry is not None:
                found.append(entry.contact)
        return found
