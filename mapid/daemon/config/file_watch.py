"""The directory watcher behind ProviderSupport.watch_directory.

Providers watch their own directories (a Maildir's `new/` and `cur/`, a vCard folder) so that
what other programs do on disk becomes notifications. The daemon runs one watchdog observer
for all of them (the configuration watcher in watcher.py keeps its own), with one watch per
directory path however many callbacks share it: ten sessions on the same profile cost one
inotify watch per directory, not ten.

The observer thread only hands events to the asyncio loop (`call_soon_threadsafe`). On the
loop, each callback collects the changed paths for `coalesce` seconds after the first event
and then gets them at once, so a burst of 1 000 deliveries is one call. A callback's
exception is logged, never raised into the watcher.

When inotify runs out of watches (ENOSPC) or instances (EMFILE), the watcher switches to
watchdog's PollingObserver for every path, logs a warning and keeps it in `warning`. With the
last watch stopped, the observer stops too, so an idle daemon runs no observer thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.polling import PollingObserver

log = logging.getLogger("mapid.file_watch")

WatchCallback = Callable[[set[Path]], None]
ObserverFactory = Callable[[], BaseObserver]

# The event kinds that can mean "content may have changed". Opened, closed-without-write and
# attribute events are left out at the source: reading a message or hashing a profile opens
# it, and a touch is not a change. The config watcher (watcher.py) uses the same two tables.
EVENT_FILTER: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileClosedEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
]

LIMIT_ERRNOS = {
    errno.ENOSPC: "inotify watch limit reached (fs.inotify.max_user_watches)",
    errno.EMFILE: "inotify instance limit reached (fs.inotify.max_user_instances)",
}


class _Handler(FileSystemEventHandler):
    """Runs on the observer thread: name the paths, hop to the loop, nothing else."""

    def __init__(self, watcher: DirectoryWatcher, key: str) -> None:
        super().__init__()
        self._watcher = watcher
        self._key = key

    def on_any_event(self, event: FileSystemEvent) -> None:
        paths = {Path(os.fsdecode(raw)) for raw in (event.src_path, event.dest_path) if raw}
        loop = self._watcher.loop
        if loop is None or not paths:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing
            loop.call_soon_threadsafe(self._watcher._deliver, self._key, paths)


@dataclass(eq=False)
class _Subscriber:
    callback: WatchCallback
    pending: set[Path] = field(default_factory=set)
    timer: asyncio.TimerHandle | None = None
    stopped: bool = False


@dataclass(eq=False)
class _Watch:
    path: Path
    subscribers: list[_Subscriber] = field(default_factory=list)
    observed: ObservedWatch | None = None


class DirectoryWatcher:
    """One observer, one watch per directory, many callbacks. Use it on the loop's thread."""

    def __init__(
        self,
        *,
        coalesce: float = 0.1,
        use_polling: bool = False,
        poll_interval: float = 1.0,
        observer_factory: ObserverFactory | None = None,
    ) -> None:
        self.coalesce = coalesce
        self.poll_interval = poll_interval
        self._use_polling = use_polling
        self._observer_factory: ObserverFactory = observer_factory or (lambda: Observer())
        self.mode = "polling" if use_polling else "inotify"
        self.warning: str | None = None
        """Why the watcher polls instead of using inotify; None when all is well."""
        self.loop: asyncio.AbstractEventLoop | None = None
        self._observer: BaseObserver | None = None
        self._watches: dict[str, _Watch] = {}

    # -- public -------------------------------------------------------------------------

    def watch(self, path: Path, callback: WatchCallback) -> Callable[[], None]:
        """Call `callback` with the paths changed in `path` (not recursive); returns the
        function that stops this callback's watch. A missing directory raises OSError."""
        self.loop = asyncio.get_running_loop()
        key = os.path.abspath(path)
        watch = self._watches.get(key)
        if watch is None:
            if not os.path.isdir(key):
                raise FileNotFoundError(errno.ENOENT, "no such directory to watch", key)
            watch = _Watch(Path(key))
            self._schedule(watch)
            self._watches[key] = watch
        subscriber = _Subscriber(callback)
        watch.subscribers.append(subscriber)

        def stop() -> None:
            self._unsubscribe(key, subscriber)

        return stop

    def paths(self) -> list[Path]:
        """The directories being watched."""
        return [watch.path for watch in self._watches.values()]

    def set_polling(self, polling: bool) -> None:
        """Follow mapid.toml's `watch = "poll"` (network file systems): move every watch to
        polling, or back to inotify; the watches and their callbacks stay."""
        if polling == self._use_polling:
            return
        self._use_polling = polling
        self.mode = "polling" if polling else "inotify"
        if polling:
            self.warning = None
        if self._observer is None:
            return
        self._stop_observer()
        try:
            observer = self._ensure_observer()
        except OSError as exc:
            if exc.errno not in LIMIT_ERRNOS:
                raise
            self._fall_back(exc)
            return
        for watch in self._watches.values():
            try:
                watch.observed = self._observe(observer, watch)
            except OSError as exc:
                if exc.errno in LIMIT_ERRNOS and self.mode != "polling":
                    self._fall_back(exc)
                    return
                watch.observed = None
                log.warning("directory watcher: cannot watch %s: %s", watch.path, exc)

    def stop_all(self) -> None:
        """Stop every watch and the observer (daemon shutdown)."""
        for watch in self._watches.values():
            for subscriber in watch.subscribers:
                self._cancel(subscriber)
        self._watches.clear()
        self._stop_observer()

    # -- observer -----------------------------------------------------------------------

    def _ensure_observer(self) -> BaseObserver:
        if self._observer is None:
            observer = (
                PollingObserver(timeout=self.poll_interval)
                if self.mode == "polling"
                else self._observer_factory()
            )
            observer.daemon = True
            observer.start()
            self._observer = observer
        return self._observer

    def _schedule(self, watch: _Watch) -> None:
        try:
            observer = self._ensure_observer()
            watch.observed = self._observe(observer, watch)
        except OSError as exc:
            if exc.errno not in LIMIT_ERRNOS or self.mode == "polling":
                if not self._watches:
                    self._stop_observer()
                raise
            self._fall_back(exc)
            watch.observed = self._observe(self._ensure_observer(), watch)

    def _observe(self, observer: BaseObserver, watch: _Watch) -> ObservedWatch:
        """Schedule one directory on `observer` (not recursive, content events only)."""
        path = str(watch.path)
        return observer.schedule(
            _Handler(self, path), path, recursive=False, event_filter=EVENT_FILTER
        )

    def _fall_back(self, exc: OSError) -> None:
        """Replace inotify by polling for every path after a limit error."""
        reason = LIMIT_ERRNOS.get(exc.errno or 0, str(exc))
        self.warning = f"{reason}; polling provider directories every {self.poll_interval:g} s"
        self.mode = "polling"
        log.warning("directory watcher: %s", self.warning)
        self._stop_observer()
        observer = self._ensure_observer()
        for watch in self._watches.values():
            try:
                watch.observed = self._observe(observer, watch)
            except OSError as again:
                watch.observed = None
                log.warning("directory watcher: cannot watch %s: %s", watch.path, again)

    def _stop_observer(self) -> None:
        observer, self._observer = self._observer, None
        if observer is None:
            return
        with contextlib.suppress(Exception):
            observer.unschedule_all()
        observer.stop()
        # Joining a polling observer can take up to its interval: not on the loop.
        threading.Thread(target=observer.join, args=(5,), daemon=True).start()

    def _unsubscribe(self, key: str, subscriber: _Subscriber) -> None:
        self._cancel(subscriber)
        watch = self._watches.get(key)
        if watch is None or subscriber not in watch.subscribers:
            return
        watch.subscribers.remove(subscriber)
        if watch.subscribers:
            return
        del self._watches[key]
        if watch.observed is not None and self._observer is not None:
            with contextlib.suppress(KeyError, OSError):
                self._observer.unschedule(watch.observed)
        if not self._watches:
            self._stop_observer()

    # -- events -------------------------------------------------------------------------

    @staticmethod
    def _cancel(subscriber: _Subscriber) -> None:
        subscriber.stopped = True
        if subscriber.timer is not None:
            subscriber.timer.cancel()
            subscriber.timer = None
        subscriber.pending.clear()

    def _deliver(self, key: str, paths: set[Path]) -> None:
        """On the loop: queue the paths for each callback of the watch."""
        watch = self._watches.get(key)
        if watch is None or self.loop is None:
            return
        for subscriber in watch.subscribers:
            subscriber.pending |= paths
            if subscriber.timer is None:
                subscriber.timer = self.loop.call_later(self.coalesce, self._flush, subscriber)

    def _flush(self, subscriber: _Subscriber) -> None:
        subscriber.timer = None
        paths, subscriber.pending = subscriber.pending, set()
        if subscriber.stopped or not paths:
            return
        try:
            subscriber.callback(paths)
        except Exception:
            log.exception("directory watcher: a callback failed")


_shared: DirectoryWatcher | None = None


def shared_watcher() -> DirectoryWatcher:
    """The daemon's one DirectoryWatcher (made on first use)."""
    global _shared
    if _shared is None:
        _shared = DirectoryWatcher()
    return _shared
