"""Changes other programs make on disk -> MAPI notifications (advise), as `TreeWatch`.

An advise on a folder follows it from the daemon's shared directory watch (its new/ and
cur/; a missing parent's once it has them); the first watch takes a baseline, so what is
there already raises nothing. An advise on the store, the root or the IPM subtree follows
every folder and the Maildir root itself, so folders that mutt or Dovecot create or remove
are heard about too. The Inbox is followed from logon for the status row's count.

`TreeWatch(store)` is MaildirStore's collaborator; what it needs of the store is `Host`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from mapid.constants import NotificationEvent, ObjectType
from mapid.errors import ErrorCode, MapiError
from mapid.providers.base import ProviderSupport
from mapid.providers.maildir.disk import MaildirState
from mapid.providers.maildir.entryids import KIND_FOLDER, KIND_ROOT, KIND_STORE, KIND_SUBTREE
from mapid.providers.maildir.index import Change, FolderIndex, MaildirHub
from mapid.providers.maildir.names import INBOX, display_of, parent_of
from mapid.providers.maildir.tree import folder_path, is_ready, list_folders

__all__ = ["ADVISE_EVENTS", "Host", "TreeWatch"]

ADVISE_EVENTS = (
    NotificationEvent.fnevNewMail
    | NotificationEvent.fnevObjectCreated
    | NotificationEvent.fnevObjectDeleted
    | NotificationEvent.fnevObjectModified
    | NotificationEvent.fnevObjectMoved
    | NotificationEvent.fnevObjectCopied
    | NotificationEvent.fnevCriticalError
    | NotificationEvent.fnevExtended
)
_TREE = "\0tree"
"""Key of the Maildir root's own watch among the folder watches."""


class Host(Protocol):
    """What the watch needs of its store (MaildirStore)."""

    @property
    def support(self) -> ProviderSupport: ...
    @property
    def active(self) -> bool: ...
    def logged_on(self) -> MaildirState: ...
    def the_hub(self) -> MaildirHub: ...
    def folder_exists(self, name: str) -> bool: ...
    def entryid_for(self, kind: str, name: str = INBOX) -> bytes: ...
    def parse_entryid(self, entryid: bytes) -> tuple[str, str, str]: ...
    async def refreshed(self, name: str, force: bool = False) -> FolderIndex: ...
    def publish(self, extra: Sequence[Change] = ()) -> None: ...


class TreeWatch:
    """The folder watches of one store provider (one session's)."""

    def __init__(self, store: Host, inbox_followed: Callable[[], None]) -> None:
        self._store = store
        self._inbox_followed = inbox_followed
        """Called once the Inbox's watch has its baseline (the status row counts again)."""
        self._watches: dict[str, list[Callable[[], None]]] = {}
        self._refreshing: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._baselines: dict[str, asyncio.Future[None]] = {}
        """Folders whose watch is being set up: a second advise waits for the baseline."""
        self._unattached: set[str] = set()
        """Watched missing parents: their new/ and cur/ are watched once they exist."""

    @property
    def follows_tree(self) -> bool:
        """A store advise follows the folders as they come and go."""
        return _TREE in self._watches

    def follow_inbox(self) -> None:
        """The row says how many messages the Inbox holds: the Inbox's watch (the one an
        Inbox advise uses) keeps that true. Its baseline runs after logon, not in it."""
        key = f"watch:{INBOX}"
        task = self._refreshing[key] = asyncio.ensure_future(self._watch_inbox())

        def forget(done: asyncio.Future[None]) -> None:
            if self._refreshing.get(key) is done:
                del self._refreshing[key]  # a finished task is not kept, one a session

        task.add_done_callback(forget)

    async def _watch_inbox(self) -> None:
        try:
            await self._watch(INBOX)
        except (MapiError, OSError) as exc:
            self._store.support.logger.warning("cannot follow the Inbox: %s", exc)
            return
        self._inbox_followed()  # what arrived between logon's count and the baseline

    def stop(self) -> None:
        """Every watch, baseline and refresh ends (logoff, another Maildir)."""
        for baseline in self._baselines.values():
            baseline.cancel()
        self._baselines.clear()
        self._unattached.clear()
        for stops in self._watches.values():
            for stop in stops:
                with contextlib.suppress(Exception):
                    stop()
        self._watches.clear()
        for task in self._refreshing.values():
            task.cancel()
        self._refreshing.clear()

    async def advise(self, entryid: bytes, event_mask: NotificationEvent) -> None:
        kind, folder, _ = self._store.parse_entryid(entryid)
        unsupported = NotificationEvent(int(event_mask) & ~int(ADVISE_EVENTS))
        if unsupported:
            raise MapiError(
                ErrorCode.MAPI_E_NO_SUPPORT,
                f"the Maildir store raises no {unsupported!r} events",
            )
        if kind in (KIND_STORE, KIND_ROOT, KIND_SUBTREE):
            root = self._store.logged_on().root
            names = [INBOX, *await self._store.support.run_blocking(list_folders, root)]
            await self._watch_tree()
        else:
            if not await self._store.support.run_blocking(self._store.folder_exists, folder):
                raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, f"no folder {display_of(folder)!r}")
            names = [folder]
        for name in names:
            await self._watch(name)

    async def _watch(self, name: str) -> None:
        """Keep a folder's index current from the daemon's shared directory watch. The
        first call takes the baseline (what is there now raises nothing); a call meanwhile
        waits for it, so an advise never returns before its folder is followed."""
        if name in self._watches:
            return
        baseline = self._baselines.get(name)
        if baseline is None or baseline.cancelled():  # cancelled: a logon's loop ended
            baseline = self._baselines[name] = asyncio.ensure_future(self._baseline(name))
        await asyncio.shield(baseline)

    async def _baseline(self, name: str) -> None:
        try:
            await self._store.refreshed(name)
        finally:
            if self._baselines.get(name) is asyncio.current_task():
                del self._baselines[name]
        if name not in self._watches and self._store.active:
            self._watches[name] = []
            self._attach(name)

    def _attach(self, name: str) -> None:
        """Watch a folder's new/ and cur/; a missing parent's once it has them."""
        watch_directory = getattr(self._store.support, "watch_directory", None)
        if not callable(watch_directory):
            self._store.support.logger.debug("no watch_directory: %s is refreshed on access", name)
            return
        path = folder_path(self._store.logged_on().root, name)
        if name != INBOX and not is_ready(path):
            self._unattached.add(name)  # attach_ready, once a write made its dirs
            return
        self._unattached.discard(name)

        def changed(paths: set[Path]) -> None:
            self._schedule_refresh(name)

        for sub in ("new", "cur"):
            try:
                self._watches[name].append(watch_directory(path / sub, changed))
            except (OSError, NotImplementedError) as exc:
                self._store.support.logger.warning("cannot watch %s: %s", path / sub, exc)

    async def _watch_tree(self) -> None:
        """Watch the Maildir root for folders other programs create or remove (mutt's
        `c`, Dovecot's CREATE), so a store advise hears about them and their mail."""
        if _TREE in self._watches:
            return
        self._watches[_TREE] = []
        await self._sync_folders()  # the baseline
        watch_directory = getattr(self._store.support, "watch_directory", None)
        if not callable(watch_directory):
            return

        def changed(paths: set[Path]) -> None:
            if any(p.name.startswith(".") for p in paths):  # not our mapid.index saves
                self._schedule_refresh(_TREE)

        try:
            self._watches[_TREE].append(watch_directory(self._store.logged_on().root, changed))
        except (OSError, NotImplementedError) as exc:
            self._store.support.logger.warning(
                "cannot watch %s: %s", self._store.logged_on().root, exc
            )

    async def _sync_folders(self) -> None:
        root = self._store.logged_on().root
        hub = self._store.the_hub()

        def sync() -> tuple[list[str], list[str], list[str]]:
            with hub.tree_lock:  # not while the store creates a folder
                names = list_folders(root)  # missing parents too: they hold the new ones
                return names, *hub.sync_folders(set(names))

        names, added, removed = await self._store.support.run_blocking(sync)
        every = set(names) | set(removed)
        changes = []
        for event, which in (
            (NotificationEvent.fnevObjectCreated, added),
            (NotificationEvent.fnevObjectDeleted, removed),
        ):
            for name in which:
                up = parent_of(name, every)
                parent = (
                    self._store.entryid_for(KIND_SUBTREE)
                    if up is None
                    else self._store.entryid_for(KIND_FOLDER, up)
                )
                changes.append(
                    Change(
                        event,
                        self._store.entryid_for(KIND_FOLDER, name),
                        parent,
                        object_type=ObjectType.MAPI_FOLDER,
                    )
                )
        for name in removed:
            self._store.the_hub().forget(name)
        self._store.publish(changes)

    def _schedule_refresh(self, name: str) -> None:
        if not self._store.active:
            return
        running = self._refreshing.get(name)
        if running is not None and not running.done():
            self._again.add(name)
            return
        self._refreshing[name] = asyncio.ensure_future(self._refresh_loop(name))

    async def _refresh_loop(self, name: str) -> None:
        try:
            while True:
                self._again.discard(name)
                if name == _TREE:
                    await self._sync_folders()
                else:
                    await self._store.refreshed(name)  # the directories' stamps say what changed
                if name not in self._again:
                    return
        except MapiError as exc:
            self._store.support.logger.warning("refreshing %s failed: %s", name or "Inbox", exc)
        except OSError as exc:
            self._store.support.logger.warning("refreshing %s failed: %s", name or "Inbox", exc)

    def follow_folder(self, change: Change) -> None:
        """A store advise follows folders as they come and go."""
        name = self._store.parse_entryid(change.entryid)[1]
        if change.event == NotificationEvent.fnevObjectCreated and name not in self._watches:
            self._refreshing[f"watch:{name}"] = asyncio.ensure_future(self._watch(name))
        elif change.event == NotificationEvent.fnevObjectDeleted:
            for stop in self._watches.pop(name, []):
                with contextlib.suppress(Exception):
                    stop()

    def attach_ready(self, root: Path) -> None:
        """Watch the missing parents that a write gave their directories meanwhile."""
        if self._unattached:
            for name in list(self._unattached):
                if name not in self._watches:
                    self._unattached.discard(name)  # no longer followed
                elif is_ready(folder_path(root, name)):
                    self._attach(name)
