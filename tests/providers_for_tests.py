"""Small third-party message services that exercise the provider rules of docs/design.md 4.

They are real services on the public provider API, loaded by the real daemon through a
profile's `service = "providers_for_tests:<Class>"`; nothing of mapid is replaced. Each one
behaves in one way a real provider may: needs configuring, fails alone, fails its service,
crashes, hangs, sends, supplies an identity in an unusual shape, raises notifications.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from mapid import entryid
from mapid.constants import (
    FlushFlags,
    NotificationEvent,
    ObjectType,
    ResourceFlags,
    ServiceFlags,
    StatusCode,
    ValidateStateFlags,
)
from mapid.errors import ErrorCode, MapiError
from mapid.providers.base import (
    AddressBookProvider,
    MapiObject,
    MessageService,
    PropsObject,
    StoreProvider,
    TransportProvider,
)


class _Counting:
    """Logon attempts are counted per provider instance and shown in the status string."""

    attempts: int

    def count(self) -> int:
        self.attempts = getattr(self, "attempts", 0) + 1
        return self.attempts


class PlainBook(AddressBookProvider, _Counting):
    name = "book"
    display = "test book"

    async def logon(self) -> None:
        self.count()

    def status_props(self) -> dict[str, Any]:
        return {
            "PR_STATUS_CODE": int(StatusCode.STATUS_AVAILABLE),
            "PR_STATUS_STRING": f"attempts={self.attempts}",
        }


class NeedsConfigBook(PlainBook):
    """Says MAPI_E_UNCONFIGURED until its section has `configured = true`."""

    async def logon(self) -> None:
        self.count()
        if not self.support.config().get("configured"):
            raise MapiError(ErrorCode.MAPI_E_UNCONFIGURED, "not configured yet")


class Unconfigured(MessageService):
    name = "unconfigured"
    display_name = "configures itself on MSG_SERVICE_CONFIGURE"
    providers = (NeedsConfigBook,)

    @classmethod
    async def configure(cls, config: Mapping[str, Any]) -> Mapping[str, Any] | None:
        return {**config, "configured": True}


class NeverConfigured(MessageService):
    name = "never-configured"
    display_name = "configuring does not help"
    providers = (NeedsConfigBook,)


class FailingStore(StoreProvider):
    name = "store"
    display = "test failing store"

    async def logon(self) -> None:
        code = self.support.config().get("fail_with", "MAPI_E_FAILONEPROVIDER")
        raise MapiError(ErrorCode[code], f"store says {code}")


class FailOne(MessageService):
    """Book logs on; the store fails with `fail_with` (default MAPI_E_FAILONEPROVIDER)."""

    name = "fail-one"
    display_name = "a store that fails alone"
    providers = (PlainBook, FailingStore)


class CrashingStore(StoreProvider):
    name = "store"

    async def logon(self) -> None:
        raise RuntimeError("provider bug")


class Crashing(MessageService):
    name = "crashing"
    display_name = "raises a Python exception"
    providers = (PlainBook, CrashingStore)


class HangingStore(StoreProvider):
    name = "store"

    async def logon(self) -> None:
        await asyncio.sleep(3600)


class Hanging(MessageService):
    name = "hanging"
    display_name = "never finishes logging on"
    providers = (HangingStore,)


class SlowGoodbyeBook(PlainBook):
    """Logs on at once; logging off takes an hour (a server that never answers QUIT)."""

    async def logoff(self) -> None:
        await asyncio.sleep(3600)


class SlowGoodbye(MessageService):
    name = "slow-goodbye"
    display_name = "takes an hour to log off"
    providers = (SlowGoodbyeBook,)


class TestTransport(TransportProvider, _Counting):
    name = "transport"
    display = "test transport"
    address_types = ("X-TEST",)
    flushes: ClassVar[int] = 0

    async def logon(self) -> None:
        self.count()

    def status_props(self) -> dict[str, Any]:
        return {
            "PR_STATUS_CODE": int(StatusCode.STATUS_AVAILABLE | StatusCode.STATUS_OUTBOUND_ENABLED),
            "PR_STATUS_STRING": f"attempts={self.attempts}",
            "PR_REMOTE_PROGRESS": 1,
        }

    async def flush_queues(self, flags: FlushFlags) -> None:
        TestTransport.flushes += 1
        self.support.modify_status_row(
            {"PR_REMOTE_PROGRESS_TEXT": f"flushed {TestTransport.flushes} ({int(flags)})"}
        )

    async def validate_state(self, flags: ValidateStateFlags) -> None:
        self.support.modify_status_row({"PR_STATUS_STRING": f"validated {int(flags)}"})


class Transport(MessageService):
    name = "test-transport"
    display_name = "a transport that sends nowhere"
    providers = (TestTransport,)


class FlaggedBook(AddressBookProvider):
    """Flags STATUS_PRIMARY_IDENTITY but gives no PR_IDENTITY_ENTRYID (docs/mapi.md 11 item 55)."""

    name = "book"
    resource_flags = ResourceFlags.STATUS_PRIMARY_IDENTITY

    def status_props(self) -> dict[str, Any]:
        return {
            "PR_STATUS_CODE": int(StatusCode.STATUS_AVAILABLE),
            "PR_IDENTITY_DISPLAY": "Flagged Person",
            "PR_IDENTITY_SEARCH_KEY": entryid.search_key("SMTP", "flagged@example.org"),
        }


class FlaggedNoEntryId(MessageService):
    name = "flagged-no-entryid"
    display_name = "identity without entry ID"
    flags = ServiceFlags.SERVICE_PRIMARY_IDENTITY
    providers = (FlaggedBook,)


UNFLAGGED_IDENTITY = entryid.one_off("Unflagged Person", "SMTP", "unflagged@example.org")


class UnflaggedBook(AddressBookProvider):
    """Has identity columns but no STATUS_PRIMARY_IDENTITY (docs/mapi.md 11 item 56)."""

    name = "book"
    resource_flags = ResourceFlags.STATUS_NO_PRIMARY_IDENTITY

    def status_props(self) -> dict[str, Any]:
        return {
            "PR_STATUS_CODE": int(StatusCode.STATUS_AVAILABLE),
            "PR_IDENTITY_DISPLAY": "Unflagged Person",
            "PR_IDENTITY_ENTRYID": UNFLAGGED_IDENTITY,
            "PR_IDENTITY_SEARCH_KEY": entryid.search_key("SMTP", "unflagged@example.org"),
        }


class UnflaggedIdentity(MessageService):
    name = "unflagged-identity"
    display_name = "identity without the flag"
    providers = (UnflaggedBook,)


NOTIFY_UID = entryid.uid_from_name("tests", "notifying-store")
NOTIFY_STORE_ENTRYID = entryid.make(NOTIFY_UID, b"store")


class _StoreObject(PropsObject):
    object_type = ObjectType.MAPI_STORE

    def __init__(self) -> None:
        super().__init__(
            {
                "PR_ENTRYID": NOTIFY_STORE_ENTRYID,
                "PR_DISPLAY_NAME": "notifying store",
                "PR_OBJECT_TYPE": int(ObjectType.MAPI_STORE),
            }
        )


class NotifyingStoreProvider(StoreProvider):
    """Accepts advises on its store; each validate_state raises fnevObjectModified."""

    name = "store"

    async def logon(self) -> None:
        self.support.set_provider_uid(NOTIFY_UID)

    def store_entryid(self) -> bytes:
        return NOTIFY_STORE_ENTRYID

    async def open_entry(self, entryid: bytes, flags: int) -> MapiObject:
        if entryid != NOTIFY_STORE_ENTRYID:
            raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, "only the store is here")
        return _StoreObject()

    async def advise(self, entryid: bytes, event_mask: NotificationEvent) -> None:
        if event_mask & NotificationEvent.fnevExtended:
            raise MapiError(ErrorCode.MAPI_E_NO_SUPPORT, "no extended events here")

    async def validate_state(self, flags: ValidateStateFlags) -> None:
        self.support.notify(
            NotificationEvent.fnevObjectModified,
            entryid=NOTIFY_STORE_ENTRYID,
            object_type=int(ObjectType.MAPI_STORE),
            parent_entryid=None,
        )


class NotifyingStore(MessageService):
    name = "notifying-store"
    display_name = "raises notifications"
    providers = (NotifyingStoreProvider,)


class PasswordBook(AddressBookProvider):
    """Asks the daemon for its service's password at logon and says how long it was."""

    name = "book"
    length = 0

    async def logon(self) -> None:
        secret = await self.support.password()
        self.length = len(secret or "")

    def status_props(self) -> dict[str, Any]:
        return {
            "PR_STATUS_CODE": int(StatusCode.STATUS_AVAILABLE),
            "PR_STATUS_STRING": f"password of {self.length} characters",
        }


class WithPassword(MessageService):
    name = "with-password"
    display_name = "needs a password"
    providers = (PasswordBook,)


class LastTransport(TestTransport):
    """A transport that asks to be tried last (STATUS_XP_PREFER_LAST)."""

    resource_flags = ResourceFlags.STATUS_XP_PREFER_LAST


class PreferLast(MessageService):
    name = "prefer-last"
    display_name = "a transport that goes last"
    providers = (LastTransport,)


class OnlyOne(MessageService):
    name = "only-one"
    display_name = "one copy per profile"
    flags = ServiceFlags.SERVICE_SINGLE_COPY | ServiceFlags.SERVICE_NO_PRIMARY_IDENTITY
    providers = (PlainBook,)


class SharedBook(AddressBookProvider):
    """A shared provider (one logon for every session of a profile). Its row counts the
    logons and logoffs of the class in this daemon, so a test sees how many there were.

    Configuration: `delay` (seconds each logon takes), `fail_first` (a MAPI error name the
    first logon raises), `logoff_marker` (a file each logoff writes the counts to)."""

    name = "book"
    display = "shared test book"
    shared = True
    logons: ClassVar[int] = 0
    logoffs: ClassVar[int] = 0

    async def logon(self) -> None:
        config = self.support.config()
        delay = config.get("delay", 0)
        if delay:
            await asyncio.sleep(float(delay))
        SharedBook.logons += 1
        fail = config.get("fail_first")
        if isinstance(fail, str) and SharedBook.logons == 1:
            raise MapiError(ErrorCode[fail], "the first logon fails")

    async def logoff(self) -> None:
        SharedBook.logoffs += 1
        marker = self.support.config().get("logoff_marker")
        if isinstance(marker, str):
            Path(marker).write_text(self.counts())

    def counts(self) -> str:
        return f"logons={SharedBook.logons} logoffs={SharedBook.logoffs}"

    def status_props(self) -> dict[str, Any]:
        return {
            "PR_STATUS_CODE": int(StatusCode.STATUS_AVAILABLE),
            "PR_STATUS_STRING": self.counts(),
        }

    async def validate_state(self, flags: ValidateStateFlags) -> None:
        self.support.modify_status_row({"PR_STATUS_STRING": f"validated {self.counts()}"})


class Shared(MessageService):
    name = "shared"
    display_name = "one logon for all the sessions of a profile"
    providers = (SharedBook,)
