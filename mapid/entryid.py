"""Entry IDs (docs/protocol.md 5, docs/mapi.md 7.1): building and reading them.

An entry ID is 4 flag bytes, the 16-byte MAPIUID of the provider that owns the object, then
bytes private to that provider. One-off entry IDs carry a display name, an address type and
an address, and belong to no provider.
"""

from __future__ import annotations

import functools
import hashlib
import struct
import uuid
from dataclasses import dataclass

from mapid.constants import (
    ENTRYID_MIN_LENGTH,
    MAPI_ONE_OFF_UID,
    MAPI_ONE_OFF_UNICODE,
    MAPIUID_LENGTH,
)
from mapid.errors import ErrorCode, MapiError

MAPID_UID = uuid.UUID("6d617069-6400-4d41-5049-000000000001").bytes_le
"""The daemon's own MAPIUID, owner of the status objects of MAPI's own rows."""


def make(uid: bytes, private: bytes = b"", flags: int = 0) -> bytes:
    if len(uid) != MAPIUID_LENGTH:
        raise ValueError("a MAPIUID is 16 bytes")
    return struct.pack("<I", flags) + uid + private


def check(entryid: object, field: str = "entryid") -> bytes:
    """Validate an entry ID from the wire: bin of at least 20 bytes."""
    if not isinstance(entryid, bytes):
        raise MapiError(ErrorCode.MAPI_E_INVALID_PARAMETER, f"{field} must be bin")
    if len(entryid) < ENTRYID_MIN_LENGTH:
        raise MapiError(
            ErrorCode.MAPI_E_INVALID_ENTRYID,
            f"{field} is {len(entryid)} bytes; an entry ID has at least {ENTRYID_MIN_LENGTH}",
        )
    return entryid


def uid_of(entryid: bytes) -> bytes:
    return entryid[4 : 4 + MAPIUID_LENGTH]


def private_of(entryid: bytes) -> bytes:
    return entryid[4 + MAPIUID_LENGTH :]


@functools.lru_cache(maxsize=4096)
def uid_from_name(*parts: str) -> bytes:
    """A stable MAPIUID derived from names (service UIDs, a vCard folder's path); kept, as
    the spooler ranks its transports by them on every pass."""
    digest = hashlib.sha256("\0".join(parts).encode("utf-8")).digest()
    return uuid.UUID(bytes=digest[:16], version=5).bytes_le


@dataclass(frozen=True)
class OneOff:
    display_name: str
    addrtype: str
    address: str


def one_off(display_name: str, addrtype: str, address: str) -> bytes:
    """A one-off entry ID in the MAPI layout, Unicode strings (UTF-16LE, NUL-terminated)."""
    body = struct.pack("<HH", 0, MAPI_ONE_OFF_UNICODE)
    for text in (display_name, addrtype, address):
        body += text.encode("utf-16-le") + b"\0\0"
    return make(MAPI_ONE_OFF_UID, body)


def parse_one_off(entryid: bytes) -> OneOff | None:
    if uid_of(entryid) != MAPI_ONE_OFF_UID:
        return None
    body = private_of(entryid)
    if len(body) < 4:
        return None
    _version, flags = struct.unpack("<HH", body[:4])
    rest = body[4:]
    texts: list[str] = []
    try:
        if flags & MAPI_ONE_OFF_UNICODE:
            for _ in range(3):
                end = 0
                while end + 1 < len(rest) and rest[end : end + 2] != b"\0\0":
                    end += 2
                if rest[end : end + 2] != b"\0\0":
                    return None  # each string is NUL-terminated (docs/mapi.md 7.1): truncated
                texts.append(rest[:end].decode("utf-16-le"))
                rest = rest[end + 2 :]
        else:
            for _ in range(3):
                head, nul, rest = rest.partition(b"\0")
                if not nul:
                    return None
                texts.append(head.decode("latin-1"))
    except UnicodeDecodeError:
        return None
    return OneOff(*texts)


def search_key(addrtype: str, address: str) -> bytes:
    """PR_SEARCH_KEY of an address: UPPER(type) ":" UPPER(address) NUL."""
    return f"{addrtype.upper()}:{address.upper()}".encode() + b"\0"


UNKNOWN_IDENTITY = one_off("Unknown user", "", "")
"""The fixed entry ID `session.query_identity` returns with MAPI_W_NO_SERVICE."""
