"""Reading a vdir: every card file of the folder, parsed once and cached by file stamp.

Blocking: the provider runs `scan_folder` in the daemon's thread pool. The cache is
shared by every session that reads the same folder, and so is the scan it returns.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from mapid.entryid import uid_from_name
from mapid.errors import ErrorCode, MapiError
from mapid.providers.vcard.cards import Contact, is_card_file, read_vcf
from mapid.providers.vcard.matching import AddressBook

__all__ = ["VdirScan", "read_vdir", "scan_folder"]


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
            if not is_card_file(name):
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


def scan_folder(
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
