"""Handles: small ints naming the objects a session has open (docs/protocol.md 5).

Each session has its own table, so a handle from another session is simply unknown there.
Handles die with `object.release`, with the session, and with the provider behind them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mapid.errors import ErrorCode, MapiError

MAPID_OWNER = "mapid"
"""The owner of handles the daemon itself serves rather than a provider (status objects,
one-off mail users, the address book's root, profile sections)."""


@dataclass
class OpenObject:
    """What a handle names: the object, and who owns it (a provider's key, or MAPID_OWNER)."""

    obj: Any
    owner: str
    object_type: int
    writable: bool = False


class HandleTable:
    __slots__ = ("_next", "_objects", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._objects: dict[int, OpenObject] = {}
        self._next = 1

    def __len__(self) -> int:
        return len(self._objects)

    def __iter__(self) -> Iterator[tuple[int, OpenObject]]:
        return iter(list(self._objects.items()))

    def add(self, entry: OpenObject) -> int:
        if len(self._objects) >= self.limit:
            raise MapiError(
                ErrorCode.MAPI_E_NOT_ENOUGH_RESOURCES,
                f"the session holds {self.limit} open handles, the most it may; release some",
            )
        handle = self._next
        self._next += 1
        self._objects[handle] = entry
        return handle

    def get(self, handle: int) -> OpenObject:
        entry = self._objects.get(handle)
        if entry is None:
            raise MapiError(
                ErrorCode.MAPI_E_INVALID_OBJECT,
                f"handle {handle} is unknown, released, or from another session",
            )
        return entry

    def remove(self, handle: int) -> OpenObject:
        entry = self.get(handle)
        del self._objects[handle]
        return entry

    def drop_owner(self, owner: str) -> list[OpenObject]:
        """Invalidate every handle of one provider (it logged off)."""
        gone = [h for h, e in self._objects.items() if e.owner == owner]
        return [self._objects.pop(h) for h in gone]

    def clear(self) -> list[OpenObject]:
        entries = list(self._objects.values())
        self._objects.clear()
        return entries
