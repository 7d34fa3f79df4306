"""The directory watcher behind ProviderSupport.watch_directory.

Providers watch their own directories (a Maildir's `new/` and `cur/`, a vCard folder) so that
what other programs do on disk becomes notifications. The daemon runs one watchdog observer
for all of them (the configuration watcher in watcher.py keeps its own; both are a
`FallbackObserver`), with one watch per directory path however many callbacks share it: ten
sessions on the same profile cost one inotify watch per directory, not ten.

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
import functools
import logging
import os
import stat
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
    """Runs on the observer thread: hands every event to `on_event`, nothing else."""

    def __init__(self, on_event: Callable[[FileSystemEvent], None]) -> None:
        super().__init__()
        self.on_event = on_event

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.on_event(event)


class FallbackObserver:
    """Non-recursive directory watches, keyed by path, on one watchdog observer.

    The observer (`observer_factory`, by default watchdog's native `Observer`; in "polling"
    mode a `PollingObserver`) starts with the first `schedule()`. When inotify runs out of
    watches or instances, from `schedule()` or from `start()`, every path moves once to
    polling, with one warning logged as "`name`: `warning`". With `join`, a stopped observer
    is joined at once, else by a daemon thread (a polling one can take up to its interval).
    """

    def __init__(
        self,
        logger: logging.Logger,
        name: str,
        *,
        polling: bool,
        poll_interval: float,
        observer_factory: ObserverFactory | None,
        polls: str = "polling",
        follow_symlink: bool = False,
        join: bool = False,
    ) -> None:
        self._log = logger
        self.name = name
        self.poll_interval = poll_interval
        self._polls = polls
        self._factory: ObserverFactory = observer_factory or (lambda: Observer())
        self._follow_symlink = follow_symlink
        self._join = join
        self.mode = "polling" if polling else "inotify"
        self.warning: str | None = None
        self.observer: BaseObserver | None = None
        self._handlers: dict[str, _Handler] = {}
        self._observed: dict[str, ObservedWatch] = {}

    def schedule(self, path: str, on_event: Callable[[FileSystemEvent], None]) -> None:
        """Watch `path`, starting the observer if need be; `on_event` runs on its thread. An
        error other than an inotify limit raises (and stops an observer left idle)."""
        handler = _Handler(on_event)
        try:
            self._observe(self._start(), path, handler)
        except OSError as exc:
            if exc.errno not in LIMIT_ERRNOS or self.mode == "polling":
                if not self._handlers:
                    self.stop()
                raise
            self._fall_back(exc)
            self._observe(self._start(), path, handler)
        self._handlers[path] = handler

    def unschedule(self, path: str) -> None:
        self._handlers.pop(path, None)
        observed = self._observed.pop(path, None)
        if observed is not None and self.observer is not None:
            with contextlib.suppress(KeyError, OSError):
                self.observer.unschedule(observed)

    def set_polling(self, polling: bool) -> None:
        """Move every path to polling, or back to the native observer."""
        self.mode = "polling" if polling else "inotify"
        if polling:
            self.warning = None
        if self.observer is not None:
            self._halt()
            self._restart()

    def stop(self) -> None:
        """Forget every path and stop the observer."""
        self._handlers.clear()
        self._halt()

    def _start(self) -> BaseObserver:
        if self.observer is None:
            polling = self.mode == "polling"
            observer = PollingObserver(timeout=self.poll_interval) if polling else self._factory()
            observer.daemon = True
            self.observer = observer
            try:
                observer.start()
            except BaseException:
                self._halt()
                raise
        return self.observer

    def _observe(self, observer: BaseObserver, path: str, handler: _Handler) -> None:
        self._observed[path] = observer.schedule(
            handler, path, event_filter=EVENT_FILTER, follow_symlink=self._follow_symlink
        )

    def _restart(self) -> None:
        """Watch every path on a new observer; a path that cannot be watched is logged."""
        try:
            observer = self._start()
        except OSError as exc:
            if exc.errno not in LIMIT_ERRNOS or self.mode == "polling":
                raise
            self._fall_back(exc)
            return
        for path, handler in self._handlers.items():
            try:
                self._observe(observer, path, handler)
            except OSError as again:
                if again.errno in LIMIT_ERRNOS and self.mode != "polling":
                    self._fall_back(again)
                    return
                self._log.warning("%s: cannot watch %s: %s", self.name, path, again)

    def _fall_back(self, exc: OSError) -> None:
        """Replace inotify by polling for every path after a limit error."""
        reason = LIMIT_ERRNOS.get(exc.errno or 0, str(exc))
        self.warning = f"{reason}; {self._polls} every {self.poll_interval:g} s"
        self.mode = "polling"
        self._log.warning("%s: %s", self.name, self.warning)
        self._halt()
        self._restart()

    def _halt(self) -> None:
        observer, self.observer = self.observer, None
        self._observed.clear()
        if observer is None:
            return
        with contextlib.suppress(Exception):
            observer.unschedule_all()
        with contextlib.suppress(Exception):
            observer.stop()
        if observer.is_alive() and self._join:
            observer.join(timeout=5)
        elif observer.is_alive():
            threading.Thread(target=observer.join, args=(5,), daemon=True).start()


@dataclass(eq=False, slots=True)
class _Subscriber:
    callback: WatchCallback
    stopped: bool = False


@dataclass(eq=False, slots=True)
class _Watch:
    """One watched directory: its subscribers (a dict, so that one of 100 000 sessions
    leaves in O(1)) and one coalescing timer for all of them, not a timer and a set of
    pending paths per subscriber: a delivery to the Inbox every session watches was
    100 000 timers."""

    subscribers: dict[_Subscriber, None] = field(default_factory=dict)
    pending: set[Path] = field(default_factory=set)
    timer: asyncio.TimerHandle | None = None
    inode: tuple[int, int, int] = (0, 0, 0)
    """The directory's (st_dev, st_ino, st_ctime_ns) when the watch was made or last
    lingered: ext4 gives a directory made anew the inode number of the one removed."""
    linger: asyncio.TimerHandle | None = None
    """Set while the watch has no subscriber and waits out `DirectoryWatcher.linger`."""


LINGER_S = 5.0
"""How long a directory's OS watch outlives its last subscriber. A session that logs off
and another that logs on (a logon cycle, a cron job's short sessions) would otherwise stop
and start watchdog's emitter threads for each watched directory: 40 % of the daemon's time
in a logon cycle of one session, with a thread join in every logoff."""


def _inode(path: str) -> tuple[int, int, int] | None:
    """(st_dev, st_ino, st_ctime_ns) of a directory, or None when it is not one."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode):
        return None
    return (info.st_dev, info.st_ino, info.st_ctime_ns)


class DirectoryWatcher:
    """One observer, one watch per directory, many callbacks. Use it on the loop's thread."""

    def __init__(
        self,
        *,
        coalesce: float = 0.1,
        linger: float = LINGER_S,
        use_polling: bool = False,
        poll_interval: float = 1.0,
        observer_factory: ObserverFactory | None = None,
    ) -> None:
        self.coalesce = coalesce
        self.linger = linger
        self.poll_interval = poll_interval
        self._use_polling = use_polling
        self._fallback = FallbackObserver(
            log,
            "directory watcher",
            polling=use_polling,
            poll_interval=poll_interval,
            observer_factory=observer_factory,
            polls="polling provider directories",
        )
        self.loop: asyncio.AbstractEventLoop | None = None
        self._watches: dict[str, _Watch] = {}

    @property
    def mode(self) -> str:
        """The observer in use: "inotify" (watchdog's native one) or "polling"."""
        return self._fallback.mode

    @property
    def warning(self) -> str | None:
        """Why the watcher polls instead of using inotify; None when all is well."""
        return self._fallback.warning

    @property
    def _observer(self) -> BaseObserver | None:  # the running observer, if any
        return self._fallback.observer

    # -- public -------------------------------------------------------------------------

    def watch(self, path: Path, callback: WatchCallback) -> Callable[[], None]:
        """Call `callback` with the paths changed in `path` (not recursive); returns the
        function that stops this callback's watch. A missing directory raises OSError."""
        self.loop = asyncio.get_running_loop()
        key = os.path.abspath(path)
        watch = self._watches.get(key)
        inode = _inode(key) if watch is None or watch.linger is not None else None
        if watch is not None and watch.linger is not None:  # nobody watched it a moment
            watch.linger.cancel()
            watch.linger = None
            if inode != watch.inode:  # changed or made anew: watched from scratch
                self._drop(key, watch)
        if key not in self._watches:
            if inode is None:
                raise FileNotFoundError(errno.ENOENT, "no such directory to watch", key)
            self._fallback.schedule(key, functools.partial(self._on_event, key))
            self._watches[key] = _Watch(inode=inode)
        subscriber = _Subscriber(callback)
        self._watches[key].subscribers[subscriber] = None

        def stop() -> None:
            self._unsubscribe(key, subscriber)

        return stop

    def paths(self) -> list[Path]:
        """The directories being watched."""
        return [Path(key) for key in self._watches]

    def set_polling(self, polling: bool) -> None:
        """Follow mapid.toml's `watch = "poll"` (network file systems): move every watch to
        polling, or back to inotify; the watches and their callbacks stay."""
        if polling != self._use_polling:
            self._use_polling = polling
            self._fallback.set_polling(polling)

    def stop_all(self) -> None:
        """Stop every watch and the observer (daemon shutdown)."""
        for watch in self._watches.values():
            self._end(watch)
        self._watches.clear()
        self._fallback.stop()

    def _unsubscribe(self, key: str, subscriber: _Subscriber) -> None:
        subscriber.stopped = True
        watch = self._watches.get(key)
        if watch is None or watch.subscribers.pop(subscriber, False) is False:
            return
        if watch.subscribers:
            return
        inode = _inode(key)
        loop = self.loop
        if inode is not None and self.linger > 0 and loop is not None and not loop.is_closed():
            watch.inode = inode  # what a logon in the linger must find (watch())
            watch.linger = loop.call_later(self.linger, self._linger_out, key, watch)
            return
        self._drop(key, watch)

    def _linger_out(self, key: str, watch: _Watch) -> None:
        watch.linger = None
        if not watch.subscribers and self._watches.get(key) is watch:
            self._drop(key, watch)

    def _drop(self, key: str, watch: _Watch) -> None:
        """The OS watch goes (the observer too, with the last)."""
        self._end(watch)
        del self._watches[key]
        self._fallback.unschedule(key)
        if not self._watches:
            self._fallback.stop()

    # -- events -------------------------------------------------------------------------

    def _on_event(self, key: str, event: FileSystemEvent) -> None:
        """On the observer thread: name the paths, hop to the loop, nothing else."""
        paths = {Path(os.fsdecode(raw)) for raw in (event.src_path, event.dest_path) if raw}
        loop = self.loop
        if loop is None or not paths:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing
            loop.call_soon_threadsafe(self._deliver, key, paths)

    @staticmethod
    def _end(watch: _Watch) -> None:
        for subscriber in watch.subscribers:
            subscriber.stopped = True
        for timer in (watch.timer, watch.linger):
            if timer is not None:
                timer.cancel()
        watch.timer = watch.linger = None
        watch.pending.clear()

    def _deliver(self, key: str, paths: set[Path]) -> None:
        """On the loop: queue the paths for the watch's callbacks (one timer for all)."""
        watch = self._watches.get(key)
        if watch is None or self.loop is None:
            return
        watch.pending |= paths
        if watch.timer is None:
            watch.timer = self.loop.call_later(self.coalesce, self._flush, watch)

    def _flush(self, watch: _Watch) -> None:
        watch.timer = None
        paths, watch.pending = watch.pending, set()
        if not paths:
            return
        for subscriber in list(watch.subscribers):
            if subscriber.stopped:
                continue
            try:
                subscriber.callback(set(paths))  # its own set: a callback may change it
            except Exception:
                log.exception("directory watcher: a callback failed")


_shared: DirectoryWatcher | None = None


def shared_watcher() -> DirectoryWatcher:
    """The daemon's one DirectoryWatcher (made on first use)."""
    global _shared
    if _shared is None:
        _shared = DirectoryWatcher()
    return _shared
