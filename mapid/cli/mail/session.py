"""One mail command's logon, and the stores, folders and messages it reaches over the wire.

A mail command logs on without MAPI_NEW_SESSION, so it joins the shared session when one
runs (the autologon profile's) and otherwise opens the profile's own. Handles belong to the
session, not to the member (docs/protocol.md 5): in a shared session they would outlive the
command, so every handle opened here is released before the logoff. The logon carries a
lease, so a mapictl killed halfway leaves no member behind.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from mapid.cli.context import Options, connected
from mapid.client import Client, Result
from mapid.constants import ENTRYID_MIN_LENGTH, ObjectType
from mapid.entryid import uid_of
from mapid.errors import DaemonUnreachable, ErrorCode, MapidError, MapiError
from mapid.proptags import (
    PR_CONTENT_COUNT,
    PR_CONTENT_UNREAD,
    PR_DEFAULT_STORE,
    PR_DISPLAY_NAME,
    PR_ENTRYID,
    PR_IPM_DRAFTS_ENTRYID,
    PR_IPM_OUTBOX_ENTRYID,
    PR_IPM_SENTMAIL_ENTRYID,
    PR_IPM_SUBTREE_ENTRYID,
    PR_IPM_WASTEBASKET_ENTRYID,
    PR_PROVIDER_DISPLAY,
    PR_SUBFOLDERS,
)

LEASE_S = 30.0
"""The member's lease: long enough for any one command, short enough that a killed mapictl
is gone soon. Long-running commands (`notify`, `send --wait`) renew it."""

STORE_TIMEOUT = 60.0
"""How long the calls after the logon may take at least, whatever --timeout says: the first
look at a big folder builds the store's index (100 000 messages: seconds). A daemon that is
not there, or frozen, is still found within --timeout, at the logon."""

MAX_FOLDER_DEPTH = 32
"""The deepest folder tree walked (a provider whose tree loops cannot hang `folders`)."""

ALIASES: dict[str, str] = {
    "sent": PR_IPM_SENTMAIL_ENTRYID.name,
    "sent items": PR_IPM_SENTMAIL_ENTRYID.name,
    "sent mail": PR_IPM_SENTMAIL_ENTRYID.name,
    "outbox": PR_IPM_OUTBOX_ENTRYID.name,
    "drafts": PR_IPM_DRAFTS_ENTRYID.name,
    "trash": PR_IPM_WASTEBASKET_ENTRYID.name,
    "deleted": PR_IPM_WASTEBASKET_ENTRYID.name,
    "deleted items": PR_IPM_WASTEBASKET_ENTRYID.name,
}
"""Names that mutt, Dovecot and Thunderbird users type for the store's special folders,
tried when no folder has the name itself (the store's PR_IPM_*_ENTRYID says which it is)."""

_HEX = re.compile(r"^[0-9a-fA-F]+$")
_INDEXED = re.compile(r"^(?P<folder>.+):(?P<index>\d+)$")


def looks_like_entryid(text: str) -> bool:
    """An entry ID as `ls -l` and `--json` print it: hex of at least 20 bytes."""
    text = text.strip()
    return len(text) >= 2 * ENTRYID_MIN_LENGTH and len(text) % 2 == 0 and bool(_HEX.match(text))


def split_indexed(text: str) -> tuple[str, int] | None:
    """`FOLDER:N` (the N-th line of `ls FOLDER`) as (FOLDER, N), or None."""
    match = _INDEXED.match(text)
    if match is None or looks_like_entryid(text):
        return None
    return match["folder"], int(match["index"])


def not_found(message: str, **details: Any) -> MapiError:
    return MapiError(ErrorCode.MAPI_E_NOT_FOUND, message, details=details)


@dataclass(frozen=True)
class Opened:
    """An object the command opened: its handle and the properties it came with."""

    handle: int
    object_type: int
    props: Mapping[str, Any]
    too_big: tuple[str, ...] = ()
    """Properties the daemon left out: values over the 1 MiB one reply may carry."""


@dataclass(frozen=True)
class StoreInfo:
    """A row of session.msg_stores_table."""

    name: str
    entryid: bytes
    default: bool
    provider: str


@dataclass(frozen=True)
class Store:
    info: StoreInfo
    opened: Opened

    @property
    def handle(self) -> int:
        return self.opened.handle

    @property
    def props(self) -> Mapping[str, Any]:
        return self.opened.props


@dataclass(frozen=True)
class FolderInfo:
    """A folder of the IPM subtree, named by its path of display names (`Work/Projects`)."""

    entryid: bytes
    name: str
    path: str
    depth: int
    messages: int | None = None
    unread: int | None = None


def table_args(
    columns: Sequence[str] | None = None,
    *,
    restriction: Mapping[str, Any] | None = None,
    sort: Sequence[tuple[str, str]] | None = None,
    offset: int | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """docs/protocol.md 5 table arguments, leaving out what is not asked for."""
    args: dict[str, Any] = {}
    if columns is not None:
        args["columns"] = list(columns)
    if restriction is not None:
        args["restriction"] = dict(restriction)
    if sort:
        args["sort"] = [[tag, order] for tag, order in sort]
    if offset:
        args["offset"] = offset
    if limit is not None:
        args["limit"] = limit
    return args


def name_is(tag: str, value: str) -> dict[str, Any]:
    """A restriction: `tag` equals `value`, ignoring case."""
    return {"content": tag, "value": value, "match": "full", "ignore_case": True}


class MailSession:
    """A logged-on member and the handles it opened; see the module docstring."""

    def __init__(self, client: Client, opts: Options, logon: Mapping[str, Any]) -> None:
        self.client = client
        self.opts = opts
        self.token = bytes(logon["token"])
        self.session_id = str(logon.get("session"))
        self.profile = str(logon.get("profile"))
        self.shared = bool(logon.get("shared"))
        self._handles: list[int] = []
        self._subtrees: dict[bytes, Opened] = {}

    # --- handles ----------------------------------------------------------------------------

    def _keep(self, result: Mapping[str, Any]) -> Opened:
        opened = Opened(
            int(result["handle"]),
            int(result.get("object_type") or 0),
            result.get("props") or {},
            tuple(str(t) for t in result.get("too_big") or ()),
        )
        self._handles.append(opened.handle)
        return opened

    def open(self, entryid: bytes, *, modify: bool = False) -> Opened:
        """session.open_entry (MAPI_MODIFY when asked)."""
        flags = ["MAPI_MODIFY"] if modify else None
        return self._keep(self.client.session_open_entry(self.token, entryid, flags))

    def open_child(self, container: int, entryid: bytes | None) -> Opened:
        return self._keep(self.client.container_open_entry(self.token, container, entryid))

    def open_address_book(self) -> Opened:
        """session.open_address_book: the integrated address book, for ab.resolve_names."""
        return self._keep(self.client.session_open_address_book(self.token))

    def keep_handle(self, handle: int) -> int:
        """Remember a handle an op returned (folder.create_message) for the release."""
        self._handles.append(handle)
        return handle

    def release(self, handle: int) -> None:
        if handle in self._handles:
            self._handles.remove(handle)
            self.client.object_release(self.token, handle)

    def close(self) -> None:
        """Release every handle, then log off; quietly, and briefly if the daemon is gone."""
        quick = min(self.opts.timeout, 2.0)
        try:
            for handle in reversed(self._handles):
                with suppress(MapiError):
                    self.client.call(
                        "object.release", {"handle": handle}, token=self.token, timeout=quick
                    )
            self._handles.clear()
            self.client.call("session.logoff", {}, token=self.token, timeout=quick)
        except MapidError:
            pass  # the lease ends the member anyway

    # --- stores -----------------------------------------------------------------------------

    def stores(self) -> list[StoreInfo]:
        columns = [PR_ENTRYID, PR_DISPLAY_NAME, PR_DEFAULT_STORE, PR_PROVIDER_DISPLAY]
        result = self.client.session_msg_stores_table(
            self.token, table_args([t.name for t in columns])
        )
        return [
            StoreInfo(
                name=str(row.get(PR_DISPLAY_NAME.name, "")),
                entryid=bytes(row[PR_ENTRYID.name]),
                default=bool(row.get(PR_DEFAULT_STORE.name)),
                provider=str(row.get(PR_PROVIDER_DISPLAY.name, "")),
            )
            for row in result.get("rows") or []
            if isinstance(row.get(PR_ENTRYID.name), bytes)
        ]

    def store(self, name: str | None = None, *, write: bool = False) -> Store:
        """The default store, or the one named (display name ignoring case, or entry ID hex),
        opened with MDB_WRITE when the command changes something."""
        found = self.stores()
        if not found:
            raise not_found(f"profile {self.profile!r} has no message store")
        if name is None:
            info = next((s for s in found if s.default), found[0])
        else:
            wanted = name.strip()
            info_or_none = next((s for s in found if s.name.casefold() == wanted.casefold()), None)
            if info_or_none is None and looks_like_entryid(wanted):
                raw = bytes.fromhex(wanted)
                info_or_none = next((s for s in found if s.entryid == raw), None)
            if info_or_none is None:
                names = ", ".join(repr(s.name) for s in found)
                raise not_found(f"no message store {name!r}; the stores are {names}", store=name)
            info = info_or_none
        flags = ["MDB_WRITE"] if write else None
        opened = self._keep(self.client.session_open_msg_store(self.token, info.entryid, flags))
        return Store(info, opened)

    def store_of(self, entryid: bytes, *, write: bool = False) -> Store:
        """The store an object's entry ID belongs to: the one with the same provider MAPIUID
        (docs/protocol.md 5: flags, MAPIUID, private bytes)."""
        uid = uid_of(entryid)
        info = next((s for s in self.stores() if uid_of(s.entryid) == uid), None)
        if info is None:
            raise MapiError(
                ErrorCode.MAPI_E_UNKNOWN_ENTRYID, "no message store of this session holds it"
            )
        flags = ["MDB_WRITE"] if write else None
        opened = self._keep(self.client.session_open_msg_store(self.token, info.entryid, flags))
        return Store(info, opened)

    # --- folders ----------------------------------------------------------------------------

    def subtree(self, store: Store) -> Opened:
        """The IPM subtree (the folders a person sees), else the store's root folder."""
        cached = self._subtrees.get(store.info.entryid)
        if cached is not None:
            return cached
        subtree = store.props.get(PR_IPM_SUBTREE_ENTRYID.name)
        if isinstance(subtree, bytes):
            opened = self.open(subtree)
        else:
            opened = self.open_child(store.handle, None)
        self._subtrees[store.info.entryid] = opened
        return opened

    def special(self, store: Store, tag: str) -> bytes | None:
        """A special folder's entry ID (PR_IPM_*_ENTRYID) from the store, else from the root
        folder (where MAPI keeps PR_IPM_DRAFTS_ENTRYID)."""
        value = store.props.get(tag)
        if isinstance(value, bytes):
            return value
        root = self.open_child(store.handle, None)
        try:
            props = self.client.object_get_props(self.token, root.handle, [tag]).get("props") or {}
        finally:
            self.release(root.handle)
        value = props.get(tag)
        return value if isinstance(value, bytes) else None

    def folder_tree(self, store: Store) -> list[FolderInfo]:
        """Every folder under the IPM subtree, depth first in the provider's order."""
        columns = [
            PR_ENTRYID.name,
            PR_DISPLAY_NAME.name,
            PR_CONTENT_COUNT.name,
            PR_CONTENT_UNREAD.name,
            PR_SUBFOLDERS.name,
        ]
        found: list[FolderInfo] = []
        seen: set[bytes] = set()

        def walk(handle: int, parent: str, depth: int) -> None:
            rows = self.client.container_hierarchy_table(self.token, handle, table_args(columns))
            for row in rows.get("rows") or []:
                entryid = row.get(PR_ENTRYID.name)
                if not isinstance(entryid, bytes) or entryid in seen:
                    continue
                seen.add(entryid)
                name = str(row.get(PR_DISPLAY_NAME.name, ""))
                path = f"{parent}/{name}" if parent else name
                found.append(
                    FolderInfo(
                        entryid,
                        name,
                        path,
                        depth,
                        _int_or_none(row.get(PR_CONTENT_COUNT.name)),
                        _int_or_none(row.get(PR_CONTENT_UNREAD.name)),
                    )
                )
                if row.get(PR_SUBFOLDERS.name) is False or depth + 1 >= MAX_FOLDER_DEPTH:
                    continue
                child = self.open(entryid)
                try:
                    walk(child.handle, path, depth + 1)
                finally:
                    self.release(child.handle)

        walk(self.subtree(store).handle, "", 0)
        return found

    def _child_named(self, handle: int, name: str) -> tuple[bytes, str] | None:
        """The sub-folder of `handle` called `name` (ignoring case; an exact match wins)."""
        rows = self.client.container_hierarchy_table(
            self.token,
            handle,
            table_args(
                [PR_ENTRYID.name, PR_DISPLAY_NAME.name],
                restriction=name_is(PR_DISPLAY_NAME.name, name),
            ),
        ).get("rows")
        candidates = [
            (bytes(r[PR_ENTRYID.name]), str(r.get(PR_DISPLAY_NAME.name, "")))
            for r in rows or []
            if isinstance(r.get(PR_ENTRYID.name), bytes)
        ]
        if not candidates:
            return None
        return next((c for c in candidates if c[1] == name), candidates[0])

    def find_folder(self, store: Store, spec: str) -> FolderInfo:
        """FOLDER as a person types it: a path of display names (`Inbox`, `Work/Projects`,
        any case), a special folder's usual name (`Sent`, `Trash`), or an entry ID in hex."""
        text = spec.strip()
        if looks_like_entryid(text):
            raw = bytes.fromhex(text)
            opened = self.open(raw)
            self.release(opened.handle)
            if opened.object_type != int(ObjectType.MAPI_FOLDER):
                raise MapiError(
                    ErrorCode.MAPI_E_INVALID_PARAMETER,
                    f"{text[:16]}… is not a folder's entry ID (`mapictl folders --json` has them)",
                )
            name = str(opened.props.get(PR_DISPLAY_NAME.name, text))
            return FolderInfo(raw, name, name, 0)
        top = self.subtree(store)
        whole = self._child_named(top.handle, text)  # a provider may name a folder "a/b"
        if whole is not None:
            return FolderInfo(whole[0], whole[1], whole[1], 0)
        parts = [p for p in text.strip("/").split("/") if p]
        if not parts:
            raise MapiError(ErrorCode.MAPI_E_INVALID_PARAMETER, "an empty folder name")
        handle, path, entryid, opened_here = top.handle, "", b"", []
        try:
            for depth, part in enumerate(parts):
                child = self._child_named(handle, part)
                if child is None and depth == 0 and len(parts) == 1:
                    alias = self._alias(store, part)
                    if alias is not None:
                        return alias
                if child is None:
                    where = f"in {path!r}" if path else f"in store {store.info.name!r}"
                    raise not_found(
                        f"no folder {part!r} {where} (`mapictl folders` lists them)", folder=spec
                    )
                entryid, name = child
                path = f"{path}/{name}" if path else name
                if depth + 1 < len(parts):
                    opened = self.open(entryid)
                    opened_here.append(opened.handle)
                    handle = opened.handle
        finally:
            for h in opened_here:
                self.release(h)
        return FolderInfo(entryid, path.rsplit("/", 1)[-1], path, len(parts) - 1)

    def _alias(self, store: Store, name: str) -> FolderInfo | None:
        tag = ALIASES.get(name.casefold())
        if not tag:
            return None
        entryid = self.special(store, tag)
        if entryid is None:
            return None
        opened = self.open(entryid)
        try:
            display = str(opened.props.get(PR_DISPLAY_NAME.name, name))
        finally:
            self.release(opened.handle)
        return FolderInfo(entryid, display, display, 0)

    def same(self, a: bytes | None, b: bytes | None) -> bool:
        """Whether two entry IDs name one object (session.compare_entryids, as docs/protocol.md 5
        asks of clients)."""
        if a is None or b is None:
            return False
        if a == b:
            return True
        try:
            return bool(self.client.session_compare_entryids(self.token, a, b).get("equal"))
        except MapiError:
            return False

    # --- tables -----------------------------------------------------------------------------

    def contents(self, folder: int, args: Mapping[str, Any]) -> Result:
        return self.client.container_contents_table(self.token, folder, args)

    def renew(self) -> None:
        self.client.session_renew(self.token)


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@contextmanager
def mail_session(opts: Options) -> Iterator[MailSession]:
    """Connect, log on (joining the shared session if there is one), and log off at the end;
    failures become the documented exit codes (mapid.cli.exits)."""
    flags: list[str] = [] if opts.profile else ["MAPI_USE_DEFAULT"]
    args: dict[str, Any] = {
        "flags": flags,
        "client": {"name": "mapictl", "pid": os.getpid()},
        "lease_s": LEASE_S,
    }
    if opts.profile:
        args["profile"] = opts.profile
    with connected(opts) as client:
        # A deadline inside our time-out: a logon the daemon cannot finish in time is undone
        # there (MAPI_E_TIMEOUT, exit 5) instead of leaving a member nobody holds.
        result = client.call("session.logon", args, deadline_ms=max(1, int(900 * opts.timeout)))
        if opts.profile and result.get("profile") != opts.profile:
            print(
                f"mapictl: note: joined the shared session of profile {result.get('profile')!r} "
                f"(MAPI's rule: a running shared session is joined whatever the name)",
                file=sys.stderr,
            )
        client.timeout = max(client.timeout, STORE_TIMEOUT)
        session = MailSession(client, opts, result)
        try:
            yield session
        except DaemonUnreachable:
            session._handles.clear()  # nothing to release on a daemon that is gone
            raise
        finally:
            session.close()


__all__ = [
    "ALIASES",
    "LEASE_S",
    "FolderInfo",
    "MailSession",
    "Opened",
    "Store",
    "StoreInfo",
    "looks_like_entryid",
    "mail_session",
    "name_is",
    "not_found",
    "split_indexed",
    "table_args",
]
