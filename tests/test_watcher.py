"""The configuration watcher against real files and watchdog's real observers.

Each test runs its own loop with `asyncio.run`. The only stand-in is in the fall-back tests:
an observer whose `schedule()` or `start()` raises OSError(ENOSPC/EMFILE) plays the part of
a kernel out of inotify watches, since exhausting `fs.inotify.max_user_watches` for real
would mean changing a system setting.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.inotify import InotifyObserver

from mapid.daemon.config.profiles import is_editor_temp, is_profile_file_name
from mapid.daemon.config.watcher import ConfigWatcher

pytestmark = pytest.mark.timeout(30)

DEBOUNCE = 0.15
CEILING = 0.6
QUIET = DEBOUNCE + 0.3  # long enough that a spurious round would have fired


@dataclass
class Recorder:
    """The on_change callback: what it was called with and what the files held then."""

    calls: list[set[Path]] = field(default_factory=list)
    contents: list[dict[Path, bytes | None]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    delay: float = 0.0
    active: int = 0
    max_active: int = 0
    fail_first: bool = False

    async def __call__(self, changed: set[Path]) -> None:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            self.calls.append(set(changed))
            self.times.append(time.monotonic())
            self.contents.append({p: p.read_bytes() if p.exists() else None for p in changed})
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.fail_first and len(self.calls) == 1:
                raise RuntimeError("callback bug")
        finally:
            self.active -= 1


async def wait_for(cond: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(0.02)
    return cond()


def make_tree(tmp_path: Path, *, profiles: bool = True) -> Path:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "mapid.toml").write_text("log_level = 'info'\n")
    if profiles:
        (conf / "profiles").mkdir()
        (conf / "profiles" / "work.toml").write_text("autologon = false\n")
    return conf


def run(
    conf: Path,
    body: Callable[[ConfigWatcher, Recorder], Awaitable[None]],
    recorder: Recorder | None = None,
    **kwargs: Any,
) -> Recorder:
    rec = recorder or Recorder()

    async def main() -> None:
        kwargs.setdefault("debounce", DEBOUNCE)
        kwargs.setdefault("ceiling", CEILING)
        watcher = ConfigWatcher(conf, rec, **kwargs)
        watcher.start()
        try:
            await body(watcher, rec)
        finally:
            await watcher.stop()

    asyncio.run(main())
    return rec


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "work.toml~",
        ".work.toml.swp",
        ".work.toml.swx",
        "4913",
        "work.toml.tmp",
        ".#work.toml",
        "#work.toml#",
        ".work.toml.kate-swp",
        ".work.toml.XYZ123",
        "work.toml.bak",
    ],
)
def test_editor_droppings_are_not_profiles(name: str) -> None:
    assert is_editor_temp(name)
    assert not is_profile_file_name(name)


@pytest.mark.parametrize("name", ["work.toml", "Ada Lovelace.toml", "a.b.toml"])
def test_profile_names(name: str) -> None:
    assert is_profile_file_name(name)


def test_known_and_prime_record_hashes(tmp_path: Path) -> None:
    conf = make_tree(tmp_path)
    watcher = ConfigWatcher(conf, Recorder())
    watcher.prime()
    assert watcher.known() == {
        conf / "mapid.toml": sha(b"log_level = 'info'\n"),
        conf / "profiles" / "work.toml": sha(b"autologon = false\n"),
    }


# -- saves -----------------------------------------------------------------------------------


def test_in_place_write_fires_once(tmp_path: Path) -> None:
    conf = make_tree(tmp_path)
    target = conf / "profiles" / "work.toml"

    async def body(w: ConfigWatcher, rec: Recorder) -> None:
        assert w.mode == "inotify" and w.warning is None
        with target.open("w") as handle:  # several write() calls, one save
            handle.write("autologon = true\n")
            handle.flush()
            handle.write("# more\n")
        assert await wait_for(lambda: len(rec.calls) >= 1)
        await asyncio.sleep(QUIET)

    rec = run(conf, body)
    assert rec.calls == [{target}]
    assert rec.contents[0][target] == b"autologon = true\n# more\n"


def test_atomic_replace_save_fires_once_never_for_temp(tmp_path: Path) -> None:
    conf = make_tree(tmp_path)
    target = conf / "profiles" / "work.toml"

    async def body(w: ConfigWatcher, rec: Recorder) -> None:
        for temp_name in (".work.toml.swp", ".work.toml.Ab12Cd"):
            temp = conf / "profiles" / temp_name
            temp.write_text(f"autologon = true # via {temp_name}\n")
            os.replace(temp, target)
            assert await wait_for(lambda: len(rec.calls) >= 1)
            await asyncio.sleep(QUIET)
            assert len(rec.calls) == 1, rec.calls
            assert rec.contents[0][target] == f"autologon = true # via {temp_name}\n".encode()
            rec.calls.clear()
            rec.contents.clear()

    run(conf, body)


def test_vim_style_save_fires_once(tmp_path: Path) -> None:
    conf = make_tree(tmp_path)
    profiles = conf / "profiles"
    target = profiles / "work.toml"

    async def body(w: ConfigWatcher, rec: Recorder) -> None:
        swap = profiles / ".work.toml.swp"
        swap.write_bytes(b"\0" * 64)
        probe = profiles / "4913"  # vim checks whether it may create files here
        probe.write_text("")
        probe.unlink()
        os.rename(target, profiles / "work.toml~")
        target.write_text("autologon = true\n")
        (profiles / "work.toml~").unlink()
        swap.unlink()
        assert await wait_for(lambda: len(rec.calls) >= 1)
        await asyncio.sleep(QUIET)

    rec = run(conf, body)
    assert rec.calls == [{target}]
    assert rec.contents[0][target] == b"autologon = true\n"


def test_temp_files_alone_fire_nothing(tmp_path: Path) -> None:
    conf = make_tree(tmp_path)
    profiles = conf / "profiles"

    async def body(w: ConfigWatcher, rec: Recorder) -> None:
        for name in (".work.toml.swp", "work.toml~", "4913", "work.toml.tmp", "#work.toml#"):
            (profiles / name).write_text("x = 1\n")
        os.symlink("ada@host.1234:1700000000", profiles / ".#work.toml")  # emacs lock
        (conf / "mapid.toml~").write_text("x = 1\n")
        (conf / "other.toml").write_text("x = 1\n")  # only mapid.toml counts up there
        await asyncio.sleep(QUIET + 0.3)
        assert w.rounds == 0

    rec = run(conf, body)
    assert rec.calls == []


def test_touch_and_identical_rewrite_fire_nothing(tmp_path: Path) -> None:
    conf = make_tree(tmp_path)
    target = conf / "profiles" / "work.toml"

    async def body(w: ConfigWatcher, rec: Recorder) -> None:
        os.utime(target, (1_000_000_000, 1_000_000_000))
        os.utime(conf / "mapid.toml")
        await asyncio.sleep(QUIET)
        target.write_text("autologon = false\n")  # same bytes
        temp = conf / "profiles" / ".work.toml.tmp"
        temp.write_text("autologon = false\n")
        os.replace(temp, target)  # same bytes, new inode
        assert await wait_for(lambda: w.rounds >= 1)  # the events did arrive
        await asyncio.sleep(QUIET)

    rec = run(conf, body)
    assert rec.calls == []


def test_mapid_toml_is_watched(tmp_path: Path) -> None:
    conf = make_tree(tmp_path, profiles=False)
    target = conf / "mapid.toml"

    async def body(w: ConfigWatcher, rec: Recorder) -> None:
        temp = conf / ".mapid.toml.new"
        temp.write_text("log_level = 'debug'\n")
        os.replace(temp, target)
        assert await wait_for(lambda: len(rec.calls) >= 1)
        await asyncio.sleep(QUIET)

    rec = run(conf, body)
    assert rec.calls == [{target}]


# -- deletion and directories ----------------------------------------------------------------


def test_delete_then_recreate_separated_fires_twice(tmp_path: Path) -> None:
    conf = make_tree(tmp_path)
    target = conf / "profiles" / "work.toml"

    async def body(w: ConfigWatcher, rec: Recorder) -> None:
        target.unlink()
        assert await wait_for(lambda: len(rec.calls) >= 1)
        assert target not in w.known()
        target.write_text("autologon = true\n")
        assert await wait_for(lambda: len(rec.calls) >= 2)
        await asyncio.sleep(QUIET)

    rec = run(conf, body)
    assert rec.calls == [{target}, {target}]
    assert rec.contents[0][target] is None
    assert rec.contents[1][target] == b"autologon = true\n"


def test_delete_then_recreate_quickly_is_one_round(tmp_path: Path) -> None:
    conf = make_tree(tmp_path)
    target = conf / "profiles" / "work.toml"

    async def body(w: ConfigWatcher, rec: Recorder) -> None:
        target.unlink()
        target.write_text("autologon = true\n")
        assert await wait_for(lambda: len(rec.calls) >= 1)
        await asyncio.sleep(QUIET)

    rec = run(conf, body)
    assert rec.calls == [{target}]
    assert rec.contents[0][target] == b"autologon = true\n"


def test_delete_and_recreate_same_content_quickly_fires_nothing(tmp_path: Path) -> None:
    conf = make_tree(tmp_path)
    target = conf / "profiles" / "work.toml"

    async def body(w: ConfigWatcher, rec: Recorder) -> None:
        target.unlink()
        target.write_text("autologon = false\n")
        assert await wait_for(lambda: w.rounds >= 1)
        await asyncio.sleep(QUIET)

    rec = run(conf, body)
    assert rec.calls == []


def test_profiles_dir_created_after_start_is_watched(tmp_path: Path) -> None:
    conf = make_tree(tmp_path, profiles=False)
    profiles = conf / "profiles"

    async def body(w: ConfigWatcher, rec: Recorder) -> None:
        profiles.mkdir()
        (profiles / "home.toml").write_text("autologon = true\n")  # racing the new watch
        assert await wait_for(lambda: len(rec.calls) >= 1)
        await asyncio.sleep(QUIET)
        assert rec.calls == [{profiles / "home.toml"}]
        # A later edit inside the new directory goes through its own watch.
        (profiles / "home.toml").write_text("autologon = false\n")
        assert await wait_for(lambda: len(rec.calls) >= 2)
        assert rec.calls[1] == {profiles / "home.toml"}

    run(conf, body)


def test_profiles_dir_removed_and_recreated(tmp_path: Path) -> None:
    conf = make_tree(tmp_path)
    profiles = conf / "profiles"
    work = profiles / "work.toml"

    async def body(w: ConfigWatcher, rec: Recorder) -> None:
        shutil.rmtree(profiles)
        assert await wait_for(lambda: len(rec.calls) >= 1)
        assert rec.calls[0] == {work}
        await asyncio.sleep(QUIET)
        profiles.mkdir()
        await asyncio.sleep(0.05)
        work.write_text("autologon = true\n")
        assert await wait_for(lambda: len(rec.calls) >= 2)
        await asyncio.sleep(QUIET)
        work.write_text("autologon = false\n")  # the re-created directory is watched
        assert await wait_for(lambda: len(rec.calls) >= 3)

    rec = run(conf, body)
    assert rec.calls == [{work}, {work}, {work}]
    assert rec.contents[2][work] == b"autologon = false\n"


# -- debounce, ceiling, single flight ----------------------------------------------------------


def test_rapid_writes_fire_a_few_times_with_final_content(tmp_path: Path) -> None:
    conf = make_tree(tmp_path)
    target = conf / "profiles" / "work.toml"

    async def body(w: ConfigWatcher, rec: Recorder) -> None:
        for i in range(100):
            target.write_text(f"# revision {i}\n")
            await asyncio.sleep(0.008)
        assert await wait_for(lambda: len(rec.calls) >= 1)
        await asyncio.sleep(w.debounce + 0.5)

    # The production timings: 300 ms of quiet, 2 s ceiling.
    rec = run(conf, body, debounce=0.3, ceiling=2.0)
    assert 1 <= len(rec.calls) <= 3, rec.calls
    assert all(call == {target} for call in rec.calls)
    assert rec.contents[-1][target] == b"# revision 99\n"


def test_burst_longer_than_ceiling_fires_before_it_ends(tmp_path: Path) -> None:
    conf = make_tree(tmp_path)
    target = conf / "profiles" / "work.toml"
    burst = 1.2

    async def body(w: ConfigWatcher, rec: Recorder) -> None:
        start = time.monotonic()
        i = 0
        while time.monotonic() - start < burst:
            target.write_text(f"# revision {i}\n")
            i += 1
            await asyncio.sleep(0.02)  # always well inside the debounce window
        end = time.monotonic()
        final = f"# revision {i - 1}\n".encode()
        assert rec.times and rec.times[0] < end  # the ceiling cut the burst
        assert rec.times[0] - start < CEILING + 0.4
        # The final content arrives, in a round during the burst's tail or just after it.
        assert await wait_for(lambda: rec.contents[-1][target] == final)
        calls = len(rec.calls)
        await asyncio.sleep(QUIET)
        assert len(rec.calls) == calls

    run(conf, body)


def test_one_callback_at_a_time_and_a_round_after(tmp_path: Path) -> None:
    conf = make_tree(tmp_path)
    target = conf / "profiles" / "work.toml"
    rec = Recorder(delay=0.4)

    async def body(w: ConfigWatcher, rec: Recorder) -> None:
        target.write_text("autologon = true\n")
        assert await wait_for(lambda: rec.active == 1)
        (conf / "mapid.toml").write_text("log_level = 'debug'\n")  # during the callback
        target.write_text("autologon = true # again\n")
        assert await wait_for(lambda: len(rec.calls) >= 2)
        await asyncio.sleep(QUIET + rec.delay)

    run(conf, body, recorder=rec)
    assert rec.max_active == 1
    assert rec.calls == [{target}, {target, conf / "mapid.toml"}]
    assert rec.times[1] - rec.times[0] >= rec.delay


def test_callback_error_does_not_stop_the_watcher(tmp_path: Path) -> None:
    conf = make_tree(tmp_path)
    target = conf / "profiles" / "work.toml"

    async def body(w: ConfigWatcher, rec: Recorder) -> None:
        target.write_text("autologon = true\n")
        assert await wait_for(lambda: len(rec.calls) >= 1)
        await asyncio.sleep(QUIET)
        target.write_text("autologon = false # back\n")
        assert await wait_for(lambda: len(rec.calls) >= 2)
        assert w.running

    rec = run(conf, body, recorder=Recorder(fail_first=True))
    assert rec.calls == [{target}, {target}]


def test_prime_after_own_write_suppresses_the_callback(tmp_path: Path) -> None:
    conf = make_tree(tmp_path)
    target = conf / "profiles" / "work.toml"

    async def body(w: ConfigWatcher, rec: Recorder) -> None:
        temp = conf / "profiles" / ".work.toml.tmp"
        temp.write_text("autologon = true\n")
        os.replace(temp, target)
        w.prime()  # the daemon applied its own write already
        assert await wait_for(lambda: w.rounds >= 1)
        await asyncio.sleep(QUIET)
        assert w.known()[target] == sha(b"autologon = true\n")

    rec = run(conf, body)
    assert rec.calls == []


# -- polling and the fall-back -----------------------------------------------------------------


def test_polling_mode_detects_a_write(tmp_path: Path) -> None:
    conf = make_tree(tmp_path)
    target = conf / "profiles" / "work.toml"

    async def body(w: ConfigWatcher, rec: Recorder) -> None:
        assert w.mode == "polling" and w.warning is None
        await asyncio.sleep(0.1)
        start = time.monotonic()
        temp = conf / "profiles" / ".work.toml.swp"
        temp.write_text("autologon = true\n")
        os.replace(temp, target)
        assert await wait_for(lambda: len(rec.calls) >= 1, timeout=1.5)
        assert time.monotonic() - start < 1.5
        (conf / "profiles" / "new.toml").write_text("autologon = false\n")
        assert await wait_for(lambda: len(rec.calls) >= 2, timeout=1.5)

    rec = run(conf, body, use_polling=True, poll_interval=0.5)
    assert rec.calls == [{target}, {conf / "profiles" / "new.toml"}]


class _OutOfWatches(InotifyObserver):
    """An inotify observer on a kernel whose watch (or instance) limit is used up from the
    `fail_from`-th watch on: raises where watchdog would, from schedule() or from start()."""

    def __init__(self, code: int, *, where: str, fail_from: int = 1) -> None:
        super().__init__()
        self.code = code
        self.where = where
        self.fail_from = fail_from
        self.scheduled = 0

    def _limit(self) -> OSError:
        return OSError(self.code, os.strerror(self.code))

    def schedule(self, *args: Any, **kwargs: Any) -> ObservedWatch:
        self.scheduled += 1
        if self.where == "schedule" and self.scheduled >= self.fail_from:
            raise self._limit()
        return super().schedule(*args, **kwargs)

    def start(self) -> None:
        if self.where == "start":
            raise self._limit()
        super().start()


@pytest.mark.parametrize(
    ("code", "where", "sysctl"),
    [
        (errno.ENOSPC, "schedule", "max_user_watches"),
        (errno.ENOSPC, "start", "max_user_watches"),
        (errno.EMFILE, "schedule", "max_user_instances"),
    ],
)
def test_inotify_limit_falls_back_to_polling(
    tmp_path: Path, code: int, where: str, sysctl: str
) -> None:
    conf = make_tree(tmp_path)
    target = conf / "profiles" / "work.toml"

    def factory() -> BaseObserver:
        return _OutOfWatches(code, where=where)

    async def body(w: ConfigWatcher, rec: Recorder) -> None:
        assert w.mode == "polling"
        assert w.warning is not None and sysctl in w.warning and "polling" in w.warning
        await asyncio.sleep(0.05)
        target.write_text("autologon = true\n")
        assert await wait_for(lambda: len(rec.calls) >= 1, timeout=1.5)

    rec = run(conf, body, observer_factory=factory, poll_interval=0.2)
    assert rec.calls == [{target}]


def test_inotify_limit_when_profiles_dir_appears(tmp_path: Path) -> None:
    conf = make_tree(tmp_path, profiles=False)
    profiles = conf / "profiles"

    def factory() -> BaseObserver:
        return _OutOfWatches(errno.ENOSPC, where="schedule", fail_from=2)

    async def body(w: ConfigWatcher, rec: Recorder) -> None:
        assert w.mode == "inotify" and w.warning is None
        profiles.mkdir()
        (profiles / "home.toml").write_text("autologon = true\n")
        assert await wait_for(lambda: len(rec.calls) >= 1, timeout=1.5)
        assert w.mode == "polling"
        assert w.warning is not None and "max_user_watches" in w.warning
        await asyncio.sleep(0.05)
        (profiles / "home.toml").write_text("autologon = false\n")
        assert await wait_for(lambda: len(rec.calls) >= 2, timeout=1.5)

    rec = run(conf, body, observer_factory=factory, poll_interval=0.2)
    assert rec.calls == [{profiles / "home.toml"}, {profiles / "home.toml"}]


def test_other_errors_are_not_swallowed(tmp_path: Path) -> None:
    async def main() -> None:
        watcher = ConfigWatcher(tmp_path / "missing", Recorder())
        with pytest.raises(FileNotFoundError):
            watcher.start()

    asyncio.run(main())
