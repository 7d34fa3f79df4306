"""Writing the `vcard` service's folder: IABContainer::CreateEntry, IMAPIProp::SetProps +
SaveChanges on a mail user, IABContainer::DeleteEntries.

VCardAddressBook delegates its write methods here, passing itself as a `WritableBook`;
the card files themselves are edit.py's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from mapid.constants import ENTRYID_MIN_LENGTH
from mapid.entryid import make, uid_of
from mapid.errors import ErrorCode, MapiError
from mapid.proptags import PR_ADDRTYPE, PR_DISPLAY_NAME, PR_EMAIL_ADDRESS
from mapid.providers.base import MapiObject, ProviderSupport
from mapid.providers.vcard.cards import Contact
from mapid.providers.vcard.edit import (
    Changes,
    check_props,
    create_card_file,
    delete_card_files,
    edit_card_file,
    explain,
)
from mapid.providers.vcard.entryids import CONTACT_PREFIX, parse_entryid
from mapid.providers.vcard.objects import MailUser

__all__ = [
    "WritableBook",
    "WritableMailUser",
    "create_entry",
    "delete_entries",
    "modify_entry",
    "opened",
]


class WritableBook(Protocol):
    """What writing asks of the provider (VCardAddressBook)."""

    @property
    def support(self) -> ProviderSupport: ...

    @property
    def uid(self) -> bytes | None: ...

    @property
    def folder(self) -> Path | None: ...

    @property
    def by_uid(self) -> Mapping[str, Contact]: ...

    def read_only(self) -> bool: ...

    async def reload_after_write(self) -> None: ...

    async def open_entry(self, entryid: bytes, flags: int) -> MapiObject: ...

    async def modify_entry(
        self, entryid: bytes, props: Mapping[str, Any], delete: Sequence[str] = ()
    ) -> Mapping[str, Any]: ...


# --- The writable mail user -------------------------------------------------------------------


class WritableMailUser(MailUser):
    """A contact opened with MAPI_MODIFY: set_props and delete_props collect changes, and
    save_changes writes them to the card's file (through the provider)."""

    def __init__(self, provider: WritableBook, entryid: bytes, props: Mapping[str, Any]) -> None:
        super().__init__(props)
        self._provider = provider
        self._entryid = entryid
        self._pending: Changes = {}

    def _stage(self, changes: Changes) -> None:
        self._pending.update(changes)
        for tag, value in changes.items():
            if tag == PR_ADDRTYPE.name:
                continue
            if value is None:
                self.props.pop(tag, None)
            else:
                self.props[tag] = value

    async def set_props(self, props: Mapping[str, Any]) -> dict[str, str]:
        changes, problems = check_props(props)
        self._stage(changes)
        return problems

    async def delete_props(self, tags: list[str]) -> dict[str, str]:
        changes, problems = check_props({}, deleting=tags)
        for tag in (PR_DISPLAY_NAME.name, PR_EMAIL_ADDRESS.name):
            if tag in changes:  # a card needs FN; a recipient needs an address
                del changes[tag]
                problems[tag] = ErrorCode.MAPI_E_NO_ACCESS.name
        self._stage(changes)
        return problems

    async def save_changes(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        try:
            props = await self._provider.modify_entry(
                self._entryid,
                {k: v for k, v in pending.items() if v is not None},
                [k for k, v in pending.items() if v is None],
            )
        except BaseException:
            self._pending = {**pending, **self._pending}
            raise
        self.props = dict(props)


def opened(provider: WritableBook, entryid: bytes, props: Mapping[str, Any]) -> MapiObject:
    """What open_entry with MAPI_MODIFY gives for a contact."""
    return WritableMailUser(provider, entryid, props)


# --- The provider's write methods (WritableBook delegates here) ---------------------------


def _folder(provider: WritableBook) -> Path:
    """The folder to write, or MAPI_E_NO_ACCESS when the section says `read_only`."""
    folder = provider.folder
    if folder is None or provider.uid is None:
        raise MapiError(ErrorCode.MAPI_E_CALL_FAILED, "vcard: not logged on")
    if provider.read_only():
        raise MapiError(
            ErrorCode.MAPI_E_NO_ACCESS,
            f"the address book {folder} is read-only (read_only = true in its profile section)",
        )
    return folder


def _target(provider: WritableBook, entryid: bytes, where: str) -> tuple[str, Path]:
    """(UID, file) of the contact an entry ID names, as the last scan has it."""
    if _uid_or_none(entryid) != provider.uid:
        raise MapiError(
            ErrorCode.MAPI_E_UNKNOWN_ENTRYID,
            f"{where} is not an entry of this address book",
            details={"arg": where},
        )
    target = parse_entryid(provider.uid, entryid)
    if target is None or target.container:
        what = "the container itself" if target is not None else "no entry of this folder"
        raise MapiError(
            ErrorCode.MAPI_E_INVALID_ENTRYID, f"{where} names {what}", details={"arg": where}
        )
    contact = provider.by_uid.get(target.contact_uid or "")
    if contact is None:
        raise MapiError(
            ErrorCode.MAPI_E_NOT_FOUND,
            f"{where}: no such contact in this address book (deleted meanwhile?)",
            details={"arg": where},
        )
    return contact.uid, contact.path


def _uid_or_none(entryid: bytes) -> bytes | None:
    return uid_of(entryid) if len(entryid) >= ENTRYID_MIN_LENGTH else None


def _check_container(provider: WritableBook, container: bytes) -> None:
    target = parse_entryid(provider.uid, container)
    if target is None or not target.container:
        raise MapiError(ErrorCode.MAPI_E_INVALID_ENTRYID, "not this address book's container")


async def create_entry(provider: WritableBook, container: bytes, props: Mapping[str, Any]) -> bytes:
    _check_container(provider, container)
    folder = _folder(provider)
    changes, problems = check_props(props)
    if problems:
        raise MapiError(
            ErrorCode.MAPI_E_INVALID_PARAMETER,
            explain(problems),
            details={"arg": "props", "problems": problems},
        )
    uid = await provider.support.run_blocking(create_card_file, folder, changes)
    await provider.reload_after_write()
    assert provider.uid is not None
    return make(provider.uid, CONTACT_PREFIX + uid.encode("utf-8"))


async def modify_entry(
    provider: WritableBook,
    entryid: bytes,
    props: Mapping[str, Any],
    delete: Sequence[str],
) -> Mapping[str, Any]:
    _folder(provider)
    uid, path = _target(provider, entryid, "entryid")
    changes, problems = check_props(props, deleting=delete)
    if problems:
        raise MapiError(
            ErrorCode.MAPI_E_INVALID_PARAMETER,
            explain(problems),
            details={"arg": "props", "problems": problems},
        )
    await provider.support.run_blocking(edit_card_file, path, uid, changes)
    await provider.reload_after_write()
    obj = await provider.open_entry(entryid, 0)
    return await obj.get_props(None)


async def delete_entries(
    provider: WritableBook, container: bytes, entryids: Sequence[bytes]
) -> None:
    _check_container(provider, container)
    _folder(provider)
    cards: dict[str, Path] = {}
    for i, entryid in enumerate(entryids):
        uid, path = _target(provider, entryid, f"entryids[{i}]")
        cards[uid] = path
    await provider.support.run_blocking(delete_card_files, [(p, u) for u, p in cards.items()])
    await provider.reload_after_write()
