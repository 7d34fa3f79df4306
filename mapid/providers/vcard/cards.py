"""What one `.vcf` file holds: its cards as `Contact`s (vCard 2.1, 3.0 or 4.0).

Blocking: the provider runs it in the daemon's thread pool. Nothing here knows MAPI.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import vobject

__all__ = ["Contact", "is_card_file", "pref_rank", "read_vcf"]

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
    nickname: str | None = None

    @property
    def email(self) -> str | None:
        """The preferred address (PR_EMAIL_ADDRESS), if the card has any."""
        return self.emails[0] if self.emails else None


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


def pref_rank(line: Any) -> int:
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
            ranked.append((pref_rank(line), index, value))
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


def is_card_file(name: str) -> bool:
    """What read_vdir reads: `.vcf` files, not hidden ones (editors' and syncers' temps)."""
    return name.lower().endswith(".vcf") and not name.startswith(".")
