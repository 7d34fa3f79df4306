"""The MAPI objects the provider opens: a read-only mail user and the folder's container."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from mapid.constants import ObjectType
from mapid.errors import ErrorCode, MapiError
from mapid.providers.base import Container, MapiObject, PropsObject, Row, pick_props

__all__ = ["ContainerSource", "MailUser", "VCardContainer"]


class ContainerSource(Protocol):
    """What VCardContainer asks of its provider (VCardAddressBook)."""

    def container_props(self) -> dict[str, Any]: ...

    def contents_rows(self) -> Sequence[Row]: ...

    async def open_entry(self, entryid: bytes, flags: int) -> MapiObject: ...


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

    def __init__(self, provider: ContainerSource) -> None:
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
