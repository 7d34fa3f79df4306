"""The `maildir` message service: a message store over a Maildir++ tree (DESIGN.md 4).

The tree is the one mutt, neomutt, Dovecot, mbsync and offlineimap share, read and written
through the standard library's `mailbox`. The store's MAPIUID lives with the mail, in the
file `mapid.uid` of the Maildir root, so entry IDs stay valid across restarts and profile
edits. This first version serves the store object; folders and messages come later.
"""

from __future__ import annotations

import contextlib
import mailbox
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from mapid.constants import (
    ObjectType,
    ResourceFlags,
    ServiceFlags,
    StatusCode,
    StoreSupport,
    ValidateStateFlags,
)
from mapid.entryid import make, uid_from_name, uid_of
from mapid.errors import ErrorCode, MapiError
from mapid.proptags import (
    PR_DISPLAY_NAME,
    PR_ENTRYID,
    PR_MDB_PROVIDER,
    PR_OBJECT_TYPE,
    PR_RECORD_KEY,
    PR_RESOURCE_PATH,
    PR_STATUS_CODE,
    PR_STATUS_STRING,
    PR_STORE_ENTRYID,
    PR_STORE_RECORD_KEY,
    PR_STORE_SUPPORT_MASK,
)
from mapid.providers.base import (
    MapiObject,
    MessageService,
    PropsObject,
    ProviderSupport,
    StoreProvider,
)

__all__ = ["MAILDIR_STORE_TYPE", "MaildirService", "MaildirStore", "MaildirStoreObject"]

UID_FILE = "mapid.uid"
STANDARD_FOLDERS = ("Outbox", "Sent", "Trash", "Drafts")
"""Maildir++ folders (`.Outbox` ...) the IPM folders map onto; created at logon."""
MAILDIR_STORE_TYPE = uid_from_name("mapid-maildir-store-type")
"""PR_MDB_PROVIDER: the MAPIUID of this kind of store, the same for every Maildir."""
STORE_SUPPORT = (
    StoreSupport.STORE_ENTRYID_UNIQUE
    | StoreSupport.STORE_MODIFY_OK
    | StoreSupport.STORE_CREATE_OK
    | StoreSupport.STORE_SUBMIT_OK
    | StoreSupport.STORE_NOTIFY_OK
)
_STORE_PRIVATE = b"\x01store"


# --- The tree on disk (blocking; runs in the daemon's thread pool) ---------------------------


@dataclass(frozen=True)
class MaildirState:
    """What logon learns from the tree."""

    root: Path
    uid: bytes
    inbox_count: int


def _read_uid(path: Path) -> bytes | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise MapiError(ErrorCode.MAPI_E_CORRUPT_DATA, f"cannot read {path}: {exc}") from exc
    try:
        uid = bytes.fromhex(text)
    except ValueError:
        uid = b""
    if len(uid) != 16:
        raise MapiError(
            ErrorCode.MAPI_E_CORRUPT_DATA,
            f"{path} does not hold a store UID (32 hex digits); repair it, or remove it "
            "to get a new one (entry IDs of this store then change)",
        )
    return uid


def load_or_create_uid(root: Path) -> bytes:
    """The store's MAPIUID from `mapid.uid`, written on first use.

    The new file is written beside its final name and then linked into place, so a reader
    never sees half a file, and two logons racing on a new store agree on one UID: the
    first link wins and the loser reads it.
    """
    path = root / UID_FILE
    uid = _read_uid(path)
    if uid is not None:
        return uid
    fd, tmp = tempfile.mkstemp(prefix=f".{UID_FILE}.", dir=root)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(secrets.token_hex(16) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    dir_fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    uid = _read_uid(path)
    if uid is None:
        raise MapiError(ErrorCode.MAPI_E_CALL_FAILED, f"{path} vanished while it was written")
    return uid


def open_maildir(root: Path) -> MaildirState:
    """Create what is missing of the tree (root, cur/new/tmp, standard folders) and read it."""
    if root.exists() and not root.is_dir():
        raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, f"Maildir path {root} is not a folder")
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        box = mailbox.Maildir(root, create=True)
        for sub in ("cur", "new", "tmp"):  # mailbox leaves an existing empty folder as it is
            (root / sub).mkdir(mode=0o700, exist_ok=True)
        existing = set(box.list_folders())
        for name in STANDARD_FOLDERS:
            if name not in existing:
                box.add_folder(name)
        return MaildirState(root.resolve(), load_or_create_uid(root), len(box))
    except PermissionError as exc:
        raise MapiError(ErrorCode.MAPI_E_NO_ACCESS, f"Maildir {root}: {exc}") from exc
    except OSError as exc:
        raise MapiError(ErrorCode.MAPI_E_CALL_FAILED, f"Maildir {root}: {exc}") from exc


# --- Configuration ---------------------------------------------------------------------------


# --- Objects ---------------------------------------------------------------------------------


class MaildirStoreObject(PropsObject):
    """The store object (IMsgStore); read-only properties for now."""

    object_type = ObjectType.MAPI_STORE


# --- The provider ----------------------------------------------------------------------------


class MaildirStore(StoreProvider):
    """A message store provider over one Maildir++ tree."""

    name = "store"
    display = "mapid Maildir"

    def __init__(self, support: ProviderSupport) -> None:
        super().__init__(support)
        self._state: MaildirState | None = None
        self._registered: set[bytes] = set()

    async def logon(self) -> None:
        await self._load()

    async def logoff(self) -> None:
        self._state = None

    async def validate_state(self, flags: ValidateStateFlags) -> None:
        """Re-read the configuration and the tree, and refresh the status row."""
        try:
            await self._load()
        except MapiError as exc:
            self.support.modify_status_row(
                {
                    PR_STATUS_CODE.name: int(StatusCode.STATUS_FAILURE),
                    PR_STATUS_STRING.name: exc.message,
                }
            )
            raise
        self.support.modify_status_row(self.status_props())

    async def _load(self) -> None:
        config = self.support.config()
        problems = MaildirService.check_config(config)
        if problems:
            raise MapiError(
                ErrorCode.MAPI_E_UNCONFIGURED,
                "maildir: " + "; ".join(f"{p.key}: {p.message}" for p in problems),
                details={"errors": [{"key": p.key, "message": p.message} for p in problems]},
            )
        root = self.support.resolve_path(str(config["path"]))
        state = await self.support.run_blocking(open_maildir, root)
        if state.uid not in self._registered:
            self.support.set_provider_uid(state.uid)
            self._registered.add(state.uid)
        self._state = state

    def _logged_on(self) -> MaildirState:
        if self._state is None:
            raise MapiError(ErrorCode.MAPI_E_CALL_FAILED, "maildir: not logged on")
        return self._state

    def status_props(self) -> dict[str, Any]:
        props: dict[str, Any] = {PR_STATUS_CODE.name: int(StatusCode.STATUS_AVAILABLE)}
        if self._state is not None:
            count = self._state.inbox_count
            props[PR_RESOURCE_PATH.name] = str(self._state.root)
            props[PR_STATUS_STRING.name] = (
                f"Maildir at {self._state.root}: "
                f"{count} message{'' if count == 1 else 's'} in Inbox"
            )
        return props

    def row_flags(self) -> ResourceFlags:
        """PR_RESOURCE_FLAGS of my row: the profile asks for me as its default store."""
        if self.support.config().get("primary_store") is True:
            return ResourceFlags.STATUS_DEFAULT_STORE
        return ResourceFlags(0)

    # Entry IDs and objects.

    def store_entryid(self) -> bytes:
        """The long-term entry ID of the store (msg_stores_table's PR_ENTRYID)."""
        return make(self._logged_on().uid, _STORE_PRIVATE)

    def store_props(self) -> dict[str, Any]:
        """The properties of the store object (also the provider's store-table columns)."""
        state = self._logged_on()
        eid = self.store_entryid()
        return {
            PR_ENTRYID.name: eid,
            PR_STORE_ENTRYID.name: eid,
            PR_RECORD_KEY.name: state.uid,
            PR_STORE_RECORD_KEY.name: state.uid,
            PR_DISPLAY_NAME.name: self.display_name(),
            PR_MDB_PROVIDER.name: MAILDIR_STORE_TYPE,
            PR_OBJECT_TYPE.name: int(ObjectType.MAPI_STORE),
            PR_STORE_SUPPORT_MASK.name: int(STORE_SUPPORT),
            PR_RESOURCE_PATH.name: str(state.root),
        }

    async def open_entry(self, entryid: bytes, flags: int) -> MapiObject:
        state = self._logged_on()
        if uid_of(entryid) != state.uid:
            raise MapiError(ErrorCode.MAPI_E_INVALID_ENTRYID, "not an entry ID of this store")
        if entryid[4:] == self.store_entryid()[4:]:
            return MaildirStoreObject(self.store_props())
        raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, "no object with that entry ID in this store")

    def compare_entryids(self, a: bytes, b: bytes) -> bool:
        """Same object, whatever the flag bytes say."""
        return a[4:] == b[4:]


# --- The service -----------------------------------------------------------------------------


class MaildirService(MessageService):
    """The `maildir` service: one message store provider; it supplies no identity."""

    name = "maildir"
    display_name = "Maildir message store"
    flags = ServiceFlags.SERVICE_NO_PRIMARY_IDENTITY
    providers = (MaildirStore,)
    config_schema: ClassVar[dict[str, Any]] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Maildir message store",
        "type": "object",
        "properties": {
            "path": {
                "type": "string",
                "pattern": "\\S",
                "x-error": "must not be empty",
                "description": "The Maildir++ root folder; created if missing.",
            },
            "display_name": {"type": "string", "description": "Name of the store."},
            "primary_store": {
                "type": "boolean",
                "default": False,
                "description": "Make this the profile's default store.",
            },
        },
        "required": ["path"],
    }
