"""The address book over one scan: its entries, contents rows and resolve_names matching.

Pure, built once per scan (in the worker thread) and shared by every session of the
folder.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from mapid.proptags import PR_INSTANCE_KEY
from mapid.providers.base import Row
from mapid.providers.vcard.cards import Contact
from mapid.providers.vcard.entryids import (
    contact_entryid,
    container_entryid,
    mailuser_props,
    recipient_row,
)

__all__ = ["AddressBook", "Scan"]


class Scan(Protocol):
    """What AddressBook.build reads of a scan (folder.VdirScan)."""

    @property
    def contacts(self) -> tuple[Contact, ...]: ...


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
    def build(cls, uid: bytes, scan: Scan, previous: AddressBook | None) -> AddressBook:
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
                address: recipient_row(contact, contact_entryid(uid, contact, address), address)
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
