"""Group commit for the Maildir store: the fsyncs of many writes share one disk flush.

An fsync costs a journal commit (1 to 5 ms on a VM's disk), and a commit made for one file
carries every other file that is being fsynced at the same moment. So callers hand the
flusher open descriptors of files they wrote and the folders whose entries they changed;
one coordinating thread takes everything that arrived while the previous batch ran, fsyncs
its files in parallel, then its folders, then resolves each caller's future. Nothing here
ever runs on the event loop; an `asyncio` caller awaits `asyncio.wrap_future(...)`.

While writes keep coming (the previous batch ended less than GATHER_S ago), the thread
gathers for GATHER_S before it starts the next batch (new requests do not wake it
meanwhile): a spooler filing a message every
couple of milliseconds then pays one commit for several of them, not one each, and a
file that is unlinked before its batch runs (an Outbox file sent meanwhile) costs no
fsync at all. A lone write is flushed at once.

Files are synced before folders, so a folder entry made durable never names a file whose
bytes are not; a file or folder that is gone by then has nothing left to make durable.

A write that puts its fsyncs off collects them in a `Durable` and hands that over.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, overload

from mapid.atomic_files import fsync_dir

__all__ = ["Durable", "Flusher", "flusher"]

log = logging.getLogger("mapid.provider.maildir")

T = TypeVar("T")

WORKERS = 8
"""Threads that run a batch's fsyncs side by side (the disk merges their commits)."""
SERIAL_MAX = 3
"""Up to this many fsyncs of a batch run one after the other in the flusher's thread."""
GATHER_S = 0.010
"""How long a busy flusher waits for more work before it syncs (see above)."""


@dataclass
class _Request:
    fds: list[int]
    dirs: list[str]
    then: Callable[[], Any] | None = None
    future: concurrent.futures.Future[Any] = field(default_factory=concurrent.futures.Future)


class Flusher:
    """fsync in batches, off the caller's thread (one per process: see `flusher()`)."""

    def __init__(self, workers: int = WORKERS) -> None:
        self._cond = threading.Condition()
        self._pending: list[_Request] = []
        self._workers = workers
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._idle = False
        """The thread waits for a first request: only then does a new one wake it (in its
        gathering it sleeps its time out; each wake-up is a context switch)."""

    @overload
    def flush(
        self, fds: Iterable[int], dirs: Iterable[str | os.PathLike[str]]
    ) -> concurrent.futures.Future[None]: ...

    @overload
    def flush(
        self,
        fds: Iterable[int],
        dirs: Iterable[str | os.PathLike[str]],
        then: Callable[[], T],
    ) -> concurrent.futures.Future[T]: ...

    def flush(
        self,
        fds: Iterable[int],
        dirs: Iterable[str | os.PathLike[str]],
        then: Callable[[], Any] | None = None,
    ) -> concurrent.futures.Future[Any]:
        """Make the files (descriptors the flusher now owns and closes) and then the folders
        durable, then run `then` (in the flusher's thread: keep it short), whose result the
        future carries; it fails with the first OSError an fsync of this request met (and
        `then` is not run)."""
        request = _Request(list(fds), list(dict.fromkeys(os.fspath(d) for d in dirs)), then)
        with self._cond:
            self._pending.append(request)
            if self._thread is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    self._workers, thread_name_prefix="mapid-fsync"
                )
                self._thread = threading.Thread(target=self._run, name="mapid-flusher", daemon=True)
                self._thread.start()
            if self._idle:
                self._cond.notify()
        return request.future

    def later(self, fds: Iterable[int], dirs: Iterable[str | os.PathLike[str]]) -> None:
        """flush() for a caller that does not wait: a failure is logged."""
        future = self.flush(fds, dirs)
        future.add_done_callback(_log_failure)

    def _run(self) -> None:
        ended = 0.0
        while True:
            with self._cond:
                while not self._pending:
                    self._idle = True
                    self._cond.wait()
                self._idle = False
                now = time.monotonic()
                if now - ended < GATHER_S:
                    until = now + GATHER_S
                    while (left := until - time.monotonic()) > 0:
                        self._cond.wait(left)  # new requests do not notify meanwhile
                batch, self._pending = self._pending, []
            try:
                self._flush_batch(batch)
            except BaseException as exc:  # never leave a caller waiting
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(exc)
            ended = time.monotonic()

    def _flush_batch(self, batch: list[_Request]) -> None:
        failed: dict[int, OSError] = {}
        file_jobs = [(i, fd) for i, r in enumerate(batch) for fd in r.fds]
        for i, error in zip(
            (i for i, _ in file_jobs), self._map(_sync_fd, [fd for _, fd in file_jobs]), strict=True
        ):
            if error is not None:
                failed.setdefault(i, error)
        dirs = list(dict.fromkeys(d for r in batch for d in r.dirs))
        dir_errors = dict(zip(dirs, self._map(_sync_dir, dirs), strict=True))
        for i, request in enumerate(batch):
            error = failed.get(i) or next(
                (e for d in request.dirs if (e := dir_errors[d]) is not None), None
            )
            if error is not None:
                request.future.set_exception(error)
            elif request.then is None:
                request.future.set_result(None)
            else:
                try:
                    result = request.then()
                except BaseException as exc:
                    request.future.set_exception(exc)
                else:
                    request.future.set_result(result)

    def _map(self, fn: Callable[[T], OSError | None], items: list[T]) -> list[OSError | None]:
        # A few in a row cost less than waking pool threads (each wake-up is a context
        # switch, dear on a VM), and after the first the journal has little left to commit.
        if len(items) <= SERIAL_MAX or self._pool is None:
            return [fn(item) for item in items]
        return list(self._pool.map(fn, items))


def _sync_fd(fd: int) -> OSError | None:
    try:
        if os.fstat(fd).st_nlink == 0:
            return None  # unlinked meanwhile: no name left to keep
        os.fsync(fd)
    except OSError as exc:
        return exc
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    return None


def _sync_dir(path: str) -> OSError | None:
    try:
        fsync_dir(path)
    except FileNotFoundError:
        return None  # removed meanwhile: nothing in it to keep
    except OSError as exc:
        return exc
    return None


def _log_failure(future: concurrent.futures.Future[Any]) -> None:
    error = future.exception()
    if error is not None:
        log.error("cannot make Maildir writes durable (fsync): %s", error)


_FLUSHER: Flusher | None = None
_FLUSHER_LOCK = threading.Lock()


def flusher() -> Flusher:
    """The process's flusher (its threads start on first use)."""
    global _FLUSHER
    with _FLUSHER_LOCK:
        if _FLUSHER is None:
            _FLUSHER = Flusher()
        return _FLUSHER


@dataclass
class Durable:
    """The fsyncs a write put off (open descriptors, folders), for the flusher."""

    fds: list[int] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)

    def add(self, fd: int | None, *dirs: Path) -> None:
        if fd is not None:
            self.fds.append(fd)
        self.dirs.extend(str(d) for d in dirs)

    def hand_off(self) -> None:
        if self.fds or self.dirs:
            flusher().later(self.fds, self.dirs)
            self.fds, self.dirs = [], []

    def flush(self, then: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Sync, then run `then` in the flusher's thread: its result is the future's."""
        future = flusher().flush(self.fds, self.dirs, then)
        self.fds, self.dirs = [], []
        return future
