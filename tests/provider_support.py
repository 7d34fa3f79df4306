"""A small but real ProviderSupport, for the tests that run a provider without a daemon.

It is what a provider can see of the daemon, recorded so that a test can check what the
provider did: status-row changes, MAPIUIDs, notifications, spooler notices and directory
watches. `watch_directory` is real: a watchdog observer whose events reach the loop through
`call_soon_threadsafe`, coalesced per watch, as the daemon's shared watcher does them.
`password` and `oauth2_token` are the daemon's own (mapid/daemon/config/credentials.py), so a
password_command or an oauth2_token_command really runs. `state_dir` lays the provider's
folder out as the daemon does (`<state root>/services/<profile>/<key>`, mode 0700), under
`state_root` (default: `<config_dir>/state`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from mapid.constants import NotificationEvent, SpoolerNotify
from mapid.daemon.config.credentials import TokenSource, resolve_password
from mapid.daemon.sessions.logon import SERVICES_STATE, path_part

T = TypeVar("T")


class _Handler(FileSystemEventHandler):
    """On the observer thread: hand the paths to the loop, nothing else."""

    def __init__(self, loop: asyncio.AbstractEventLoop, deliver: Callable[[set[Path]], None]):
        super().__init__()
        self._loop, self._deliver = loop, deliver

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return  # reading a file is not a change (the daemon filters these too)
        paths = {Path(os.fsdecode(p)) for p in (event.src_path, event.dest_path) if p}
        with contextlib.suppress(RuntimeError):  # the loop is closed: the test is over
            self._loop.call_soon_threadsafe(self._deliver, paths)


@dataclass
class Support:
    """ProviderSupport for one provider instance, over a config dict and a config dir."""

    settings: dict[str, Any]
    config_dir: Path
    profile_name: str = "test"
    service_key: str = "svc"
    service_uid: bytes = b"\x00" * 16
    provider_uid: bytes = b"\x01" * 16
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("mapid.test"))
    rows: list[tuple[dict[str, Any], bool]] = field(default_factory=list)
    """Every modify_status_row call: (props, update)."""
    uids: list[bytes] = field(default_factory=list)
    notifications: list[tuple[NotificationEvent, bytes | None, dict[str, Any]]] = field(
        default_factory=list
    )
    spooler: list[SpoolerNotify] = field(default_factory=list)
    watched: list[Path] = field(default_factory=list)
    """The directories watched right now."""
    watch_refusal: str | None = None
    """When set, watch_directory fails with this reason (as when inotify runs out)."""
    coalesce: float = 0.05
    state_root: Path | None = None
    """The daemon's state directory as this support plays it (None: `<config_dir>/state`)."""
    _tokens: TokenSource = field(default_factory=TokenSource)
    _stops: list[Callable[[], None]] = field(default_factory=list)

    # -- the ProviderSupport protocol ----------------------------------------------------
    def config(self) -> Mapping[str, Any]:
        return self.settings

    def resolve_path(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.config_dir / path

    def state_dir(self) -> Path:
        path = self.state_root if self.state_root is not None else self.config_dir / "state"
        for part in (SERVICES_STATE, path_part(self.profile_name), path_part(self.service_key)):
            path = path / part
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)
        return path

    def modify_status_row(self, props: Mapping[str, Any], *, update: bool = True) -> None:
        self.rows.append((dict(props), update))

    def set_provider_uid(self, uid: bytes) -> None:
        self.uids.append(uid)

    def notify(
        self, event: NotificationEvent, *, entryid: bytes | None = None, **fields: Any
    ) -> int:
        self.notifications.append((event, entryid, fields))
        return 1

    async def run_blocking(self, fn: Callable[..., T], /, *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    async def password(self) -> str | None:
        return await resolve_password(self.settings, where=f"test, service {self.service_key}")

    async def oauth2_token(self, *, refresh: bool = False) -> str | None:
        where = f"test, service {self.service_key}"
        return await self._tokens.token(self.settings, where=where, refresh=refresh)

    def spooler_notify(self, flags: SpoolerNotify) -> None:
        self.spooler.append(flags)

    def watch_directory(
        self, path: Path, callback: Callable[[set[Path]], None]
    ) -> Callable[[], None]:
        if self.watch_refusal is not None:
            raise OSError(self.watch_refusal)
        loop = asyncio.get_running_loop()
        pending: set[Path] = set()
        timer: list[asyncio.TimerHandle] = []

        def flush() -> None:
            timer.clear()
            paths = set(pending)
            pending.clear()
            if paths and path in self.watched:
                callback(paths)

        def deliver(paths: set[Path]) -> None:
            pending.update(paths)
            if not timer:
                timer.append(loop.call_later(self.coalesce, flush))

        observer: BaseObserver = Observer()
        observer.schedule(_Handler(loop, deliver), str(path), recursive=False)
        observer.daemon = True
        observer.start()
        self.watched.append(path)

        def stop() -> None:
            if path in self.watched:
                self.watched.remove(path)
            for handle in timer:
                handle.cancel()
            observer.stop()
            observer.join(5)
            with contextlib.suppress(ValueError):
                self._stops.remove(stop)

        self._stops.append(stop)
        return stop

    # -- for the tests -------------------------------------------------------------------
    @property
    def row(self) -> dict[str, Any]:
        """The provider's columns of its row as they stand after every change so far."""
        merged: dict[str, Any] = {}
        for props, update in self.rows:
            if not update:
                merged.clear()
            merged.update(props)
        return merged

    def events(self, event: NotificationEvent) -> list[dict[str, Any]]:
        """The fields (with `entryid`) of every notification of one kind, in order."""
        return [{"entryid": eid, **fields} for ev, eid, fields in self.notifications if ev == event]

    def raised(self) -> list[tuple[str, bytes | None]]:
        """(event name, entry ID) of every notification, in order."""
        return [(event.name or "", eid) for event, eid, _ in self.notifications]

    def close(self) -> None:
        """Stop the watches a provider left behind."""
        for stop in list(self._stops):
            stop()
