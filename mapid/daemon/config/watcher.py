"""The configuration watcher (docs/design.md 3, 8 and A.1).

watchdog watches the configuration *directory* and its `profiles/` subdirectory, never the
files: editors save by writing a temporary file and renaming it over the target, and a watch
on the file would die with the old inode. Both watches are non-recursive, so a config
directory that also holds, say, a git repository costs two inotify watches and no noise; a
`profiles/` directory created (or moved in) after start is watched as soon as it appears.

The observer thread does nothing but filter names and hand each relevant event to the asyncio
loop with `call_soon_threadsafe`; everything else runs on the loop:

- Debounce: a round starts after `debounce` seconds without a relevant event, but never
  later than `ceiling` seconds after the first event of the burst, so a stream of writes
  still reloads.
- Settling: a changed file that is empty counts only once it has stayed empty for
  `EMPTY_SETTLE_S` by its modification time: an in-place save (an editor or `cat >`
  truncating, then writing) shows an empty file for a moment, and applying that would
  empty live sessions. A round waits for that, at most `SETTLE_LIMIT_S`, before it reports
  anything.
- Content gate: a round hashes every config file (`mapid.toml` and `profiles/*.toml`) in a
  worker thread and compares with the known hashes. A touch, a duplicate event or a rewrite
  with identical content changes nothing and calls nothing; a deleted file counts as changed.
- Single flight: `on_change(changed_paths)` is awaited one call at a time; events that
  arrive while it runs lead to one more round after it.
- Editor droppings (`x.toml~`, `.x.toml.swp`, `4913`, `x.toml.tmp`, `.#x.toml`, `#x.toml#`,
  ...) are ignored; the rename onto the real name is what counts.
- inotify exhaustion: when adding a watch fails with ENOSPC (`fs.inotify.max_user_watches`)
  or EMFILE (`fs.inotify.max_user_instances`), whether watchdog raises it from `schedule()`
  or from `start()`, the watcher switches to watchdog's `PollingObserver`, logs a warning and
  sets `warning` for `mapictl status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from watchdog.events import FileSystemEvent

from mapid.daemon.config.daemon_config import CONFIG_FILE, PROFILES_DIR
from mapid.daemon.config.file_watch import FallbackObserver, ObserverFactory
from mapid.daemon.config.profiles import is_profile_file_name

log = logging.getLogger("mapid.watcher")

EMPTY_SETTLE_S = 1.5
"""How long an empty configuration file must stay empty (by its mtime) before it counts: a
truncate-then-write save within a second never reaches a live session as an empty profile."""

SETTLE_LIMIT_S = 10.0
"""The longest a round waits for files to settle; a file rewritten without pause for longer
is taken as it then is."""

OnChange = Callable[[set[Path]], Awaitable[None]]


def _sha256(path: Path) -> str | None:
    """Hex digest of the file's content; None if it is absent or not a regular file; a
    marker (never a valid digest) if it cannot be read, so that becoming readable or
    unreadable is a change too."""
    try:
        if not path.is_file():
            return None
        with path.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"


class ConfigWatcher:
    """Watch a mapid configuration directory and report content changes to `on_change`.

    `on_change` receives the set of config files (`mapid.toml`, `profiles/*.toml`) whose
    content differs from the last known content: modified, created or deleted. The known
    hashes are updated before each call, whatever the callback then does (an exception from
    it is logged and the watcher carries on).

    `use_polling=True` forces watchdog's `PollingObserver` (a stat of the two directories
    every `poll_interval` seconds): for file systems where inotify sees no changes made by
    other hosts, such as NFS, CIFS or some FUSE mounts, and for tests. The same observer is
    used, with a warning, when inotify runs out of watches or instances.

    `observer_factory` builds the native observer (watchdog's `Observer`, inotify on Linux);
    it exists so the fall-back can be exercised without exhausting the system's limits.

    Everything but the constructor must be called on the loop's thread.
    """

    def __init__(
        self,
        directory: Path,
        on_change: OnChange,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        debounce: float = 0.3,
        ceiling: float = 2.0,
        use_polling: bool = False,
        poll_interval: float = 0.5,
        observer_factory: ObserverFactory | None = None,
    ) -> None:
        if debounce < 0 or ceiling < debounce:
            raise ValueError("need 0 <= debounce <= ceiling")
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        self.directory = Path(os.path.abspath(directory))
        self.profiles_dir = self.directory / PROFILES_DIR
        self._directory_s = str(self.directory)
        self._profiles_s = str(self.profiles_dir)
        self._config_s = str(self.directory / CONFIG_FILE)
        self._on_change = on_change
        self._loop = loop
        self.debounce = debounce
        self.ceiling = ceiling
        self.poll_interval = poll_interval
        self._fallback = FallbackObserver(
            log,
            "config watcher",
            polling=use_polling,
            poll_interval=poll_interval,
            observer_factory=observer_factory,
            follow_symlink=True,
            join=True,  # stop() + join() of an inotify observer take well under 1 ms
        )
        self._known: dict[Path, str] = {}
        self._primed = False
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._first: float | None = None
        self._last: float | None = None
        self._in_callback = False
        self._stopping = False
        self.rounds = 0
        """Rounds run (hash-and-compare passes), whether or not they called `on_change`."""

    @property
    def mode(self) -> str:
        """The observer in use: "inotify" (watchdog's native one) or "polling"."""
        return self._fallback.mode

    @property
    def warning(self) -> str | None:
        """Why the watcher fell back to polling, for `mapictl status`; None when all is well."""
        return self._fallback.warning

    # -- public -------------------------------------------------------------------------

    def known(self) -> dict[Path, str]:
        """Path -> sha256 (hex) of every config file as last seen (a copy)."""
        return dict(self._known)

    def prime(self) -> None:
        """Record the files' current content as known, without calling `on_change`.

        `start()` primes if nothing has been primed yet. The daemon may prime again after
        applying content it has read itself, so that the same content does not come back as
        a change (a later round would find nothing to report)."""
        self._known = self._scan()
        self._primed = True

    def start(self) -> None:
        """Watch the directory (which must exist) and, if present, `profiles/`."""
        if self._task is not None:
            raise RuntimeError("ConfigWatcher already started")
        if not self.directory.is_dir():
            raise FileNotFoundError(errno.ENOENT, "no such directory", self._directory_s)
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        if not self._primed:
            self.prime()
        self._stopping = False
        try:  # on failure nothing is left running
            self._fallback.schedule(self._directory_s, self._on_event)
            if self.profiles_dir.is_dir():
                self._fallback.schedule(self._profiles_s, self._on_event)
        except BaseException:
            self._fallback.stop()
            raise
        self._task = self._loop.create_task(self._run(), name="mapid-config-watcher")

    async def stop(self) -> None:
        """Stop watching. A callback in progress is allowed to finish; a pending round is
        dropped."""
        self._stopping = True
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            if self._in_callback:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            else:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._fallback.observer is not None:
            await asyncio.to_thread(self._fallback.stop)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # -- observer ----------------------------------------------------------------------

    def _sync_profiles_watch(self) -> None:
        """(Re)watch `profiles/` after it was created, deleted, moved or replaced."""
        if self._fallback.observer is None:
            return
        # A stale watch (its directory gone) would otherwise block a new one: watchdog keys
        # watches by path and keeps the dead emitter.
        self._fallback.unschedule(self._profiles_s)
        if not self.profiles_dir.is_dir():
            return
        mode = self.mode
        try:
            self._fallback.schedule(self._profiles_s, self._on_event)
        except OSError as exc:
            if self.mode != mode:  # an inotify limit, and then polling failed too
                self._fallback.warning = f"not watching {self.directory}: {exc}"
                log.error("config watcher: %s", self._fallback.warning)
                self._fallback.stop()
            elif not isinstance(exc, FileNotFoundError):  # else its deletion event follows
                log.warning("config watcher: cannot watch %s: %s", self.profiles_dir, exc)

    def _on_event(self, event: FileSystemEvent) -> None:
        """On the observer thread: filter by name, hop to the loop, nothing else."""
        file_hit = dir_hit = False
        for raw in (event.src_path, event.dest_path):
            if not raw:
                continue
            path = os.fsdecode(raw)
            if event.is_directory:
                if path in (self._profiles_s, self._directory_s):
                    dir_hit = True
            elif self._is_config_path(path):
                file_hit = True
        loop = self._loop
        if (file_hit or dir_hit) and loop is not None:
            # The loop may be closing while the observer thread still delivers an event.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._note_event, dir_hit)

    # -- events and rounds ----------------------------------------------------------------

    def _is_config_path(self, path: str) -> bool:
        if path == self._config_s:
            return True
        head, name = os.path.split(path)
        return head == self._profiles_s and is_profile_file_name(name)

    def _note_event(self, dir_hit: bool) -> None:
        """On the loop: one relevant event arrived."""
        if self._stopping or self._loop is None:
            return
        now = self._loop.time()
        if self._first is None:
            self._first = now
        self._last = now
        if dir_hit:
            if not self.directory.is_dir():
                self._fallback.warning = (
                    f"configuration directory {self.directory} was removed; "
                    "restart the daemon to watch it again"
                )
                log.warning("config watcher: %s", self._fallback.warning)
            # Watch a new profiles/ at once, so files written into it right after its
            # creation are seen; the round's full scan covers any written before.
            self._sync_profiles_watch()
        self._wake.set()

    async def _run(self) -> None:
        assert self._loop is not None
        loop = self._loop
        while not self._stopping:
            await self._wake.wait()
            while True:
                first, last = self._first, self._last
                if first is None or last is None:
                    break
                due = min(last + self.debounce, first + self.ceiling)
                delay = due - loop.time()
                if delay <= 0:
                    break
                await asyncio.sleep(delay)
            self._wake.clear()
            self._first = self._last = None
            if self._stopping:
                return
            await self._round()

    async def _round(self) -> None:
        self.rounds += 1
        assert self._loop is not None
        give_up = self._loop.time() + SETTLE_LIMIT_S
        while True:
            current = await asyncio.to_thread(self._scan)
            if self._stopping:
                return
            changed = {
                path
                for path in self._known.keys() | current.keys()
                if self._known.get(path) != current.get(path)
            }
            if not changed:
                log.debug("config watcher: events without content change")
                return
            wait = await asyncio.to_thread(self._unsettled_for, changed)
            if wait <= 0 or self._loop.time() >= give_up:
                break
            log.debug("config watcher: waiting %.2f s for %s to settle", wait, changed)
            await asyncio.sleep(wait)
        self._known = current
        log.info("config watcher: changed %s", ", ".join(sorted(str(p) for p in changed)))
        self._in_callback = True
        try:
            await self._on_change(changed)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("config watcher: on_change failed")
        finally:
            self._in_callback = False

    def _unsettled_for(self, paths: set[Path]) -> float:
        """How long until every empty file in `paths` has stayed empty EMPTY_SETTLE_S.

        A file with content needs no wait here: the round came after `debounce` seconds
        without events, or at the burst's `ceiling`, which must still fire during a stream
        of writes. An empty file is what an in-place save shows between its truncate and
        its write, so it waits (by its mtime) for the write that usually follows.
        """
        now = time.time()
        wait = 0.0
        for path in paths:
            try:
                info = os.stat(path)
            except OSError:
                continue  # deleted: a deletion needs no settling
            if info.st_size:
                continue
            age = now - info.st_mtime
            if age < EMPTY_SETTLE_S:  # a future mtime waits EMPTY_SETTLE_S once
                wait = max(wait, min(EMPTY_SETTLE_S - age, EMPTY_SETTLE_S))
        return wait

    def _scan(self) -> dict[Path, str]:
        """Hash `mapid.toml` and every `profiles/*.toml` (blocking; small files)."""
        found: dict[Path, str] = {}
        candidates = [self.directory / CONFIG_FILE]
        try:
            with os.scandir(self.profiles_dir) as entries:
                candidates.extend(
                    Path(entry.path) for entry in entries if is_profile_file_name(entry.name)
                )
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError as exc:
            # Unlistable: report no change for profiles rather than "all deleted".
            log.warning("config watcher: cannot list %s: %s", self.profiles_dir, exc)
            found.update(
                (path, digest)
                for path, digest in self._known.items()
                if path.parent == self.profiles_dir
            )
        for path in candidates:
            digest = _sha256(path)
            if digest is not None:
                found[path] = digest
        return found
