"""Configuration reload: from a profile saved on disk to the `reloaded` event, and 500 profiles.

One daemon, started with `alpha` and `--few` more profiles (default 4), none logged on.

1. Save to event. `--saves` times (default 40) one profile file is saved with new content
   (a comment and the identity's display_name change), rotating over the `few-*` profiles
   and alternating two styles: an editor's save (a hidden temporary file in `profiles/`,
   then `os.replace` onto the target) and an in-place write (open, truncate, write, close).
   The latency runs from time.monotonic() just before the save to the receipt of the
   `reloaded` event with `trigger` "watcher" whose `changed` names that profile, on a SUB
   socket subscribed to `daemon` and `hb`. After each event the benchmark listens
   `--settle` seconds more, so a duplicate event for the same save is seen and counted.
   A save with no event within `--timeout` seconds counts as lost. The watcher waits
   0.3 s without a file event before it reloads (its debounce), so 0.3 s is the floor.
   Target: p50 under 500 ms.
2. `--profiles` profile files (default 500), each with a vCard service on one shared
   two-card folder and its own Maildir path, `autologon = false` (profiles are parsed at
   reload; nothing is logged on):
   - all written at once: time from the first write to the watcher's `reloaded` event;
   - `daemon.reload` round trips with nothing changed (`--reloads`, default 10), p50;
   - all rewritten with new content, then one `daemon.reload` at once (all `changed`),
     and whether the watcher publishes anything after it (it should not);
   - all rewritten again: time from the first write to the watcher's event (all `changed`).
   Beside it, measured in the same run after the daemon work: `tomllib.loads` of the same
   files in this process (the floor for parsing them) and mapid's own `read_profiles`, and
   the ratio daemon.reload p50 / tomllib p50.

Throughout, a thread pings the daemon every 5 ms with its own client; the longest ping in
each phase shows how long a reload held up the daemon's loop. The daemon's collections of
5 ms or more in each phase come from the GC log `_daemon.py` installs, to tell them apart.
A `stopping` event (the daemon got SIGTERM or SIGINT from elsewhere) ends the run.

    python bench/reload.py [--saves 40] [--profiles 500] [--reloads 10] [--settle 0.6]
                           [--py-spy out.txt]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import zmq
from _daemon import (
    PROFILE,
    BenchDaemon,
    handle_sigterm,
    interrupt_exit,
    machine,
    percentile,
    py_spy,
    verdict,
)

from mapid.client import Client
from mapid.daemon.config.profiles import read_profiles
from mapid.errors import MapidError
from mapid.wire import envelope

DEBOUNCE_S = 0.3
"""The watcher's debounce (mapid/daemon/config/watcher.py), the floor of the save-to-event time."""

TARGET_P50_S = 0.5

# -- profile files ---------------------------------------------------------------------------


def profile_text(name: str, rev: int, contacts: Path, mail_root: Path) -> str:
    """A profile with a vCard service on the shared folder and a Maildir of its own.

    `rev` goes into a comment and the identity's display_name, so each revision has new
    content (and a new digest) while staying a valid profile."""
    return (
        f"# {name}, written by bench/reload.py, revision {rev}\n"
        "autologon = false\n"
        "\n"
        "[services.contacts]\n"
        'service = "vcard"\n'
        f'path = "{contacts}"\n'
        f'identity = {{ display_name = "User {name} r{rev}", email = "{name}@example.org" }}\n'
        "\n"
        "[services.mail]\n"
        'service = "maildir"\n'
        f'path = "{mail_root / name}"\n'
        "primary_store = true\n"
    )


def save_replace(path: Path, text: str) -> None:
    """An editor's save: a hidden temporary file in the same directory, renamed over the
    target (the watcher ignores the temporary name; the rename is what it sees)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save_in_place(path: Path, text: str) -> None:
    """Open with truncation, write, close: one file, modified in place."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


SAVE_STYLES: list[tuple[str, Callable[[Path, str], None]]] = [
    ("editor (tmp + os.replace)", save_replace),
    ("in place (truncate + write)", save_in_place),
]


# -- events and pings ------------------------------------------------------------------------

Received = tuple[float, dict[str, Any]]
"""(time.monotonic() right after the read, the event's payload)."""


class DaemonStopped(RuntimeError):
    """The daemon published `stopping`: something sent it SIGTERM or SIGINT."""


def check_alive(event: dict[str, Any]) -> None:
    if event.get("type") == "stopping":
        raise DaemonStopped("the daemon published `stopping` (it got SIGTERM or SIGINT)")


class EventReader:
    """A SUB socket on the daemon's `daemon` and `hb` topics."""

    def __init__(self, endpoint: str) -> None:
        self.sock: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.sock.setsockopt_string(zmq.SUBSCRIBE, envelope.TOPIC_DAEMON)
        self.sock.setsockopt_string(zmq.SUBSCRIBE, envelope.TOPIC_HEARTBEAT)
        self.heartbeats = 0

    def wait_heartbeat(self, timeout: float) -> None:
        """The daemon sends a heartbeat when it reads a new subscription: then we are on."""
        deadline = time.monotonic() + timeout
        start = self.heartbeats
        while self.heartbeats == start:
            if self.read(deadline, stop_on_heartbeat=True) is None and self.heartbeats == start:
                raise RuntimeError(f"no heartbeat within {timeout:g} s")

    def read(self, until: float, *, stop_on_heartbeat: bool = False) -> Received | None:
        """The next `daemon` event received before monotonic `until`; heartbeats are counted."""
        while True:
            remaining = until - time.monotonic()
            if remaining <= 0 or not self.sock.poll(max(1, int(remaining * 1000))):
                return None
            frames = self.sock.recv_multipart()
            now = time.monotonic()
            topic, event = envelope.decode_event_frames(frames)
            if topic == envelope.TOPIC_HEARTBEAT:
                self.heartbeats += 1
                if stop_on_heartbeat:
                    return None
                continue
            if topic == envelope.TOPIC_DAEMON:
                check_alive(event)
                return now, event

    def collect(self, seconds: float) -> list[Received]:
        """Every `daemon` event received within the next `seconds` (0: what is queued)."""
        until = time.monotonic() + seconds
        found: list[Received] = []
        while True:
            got = self.read(until) if seconds > 0 else self._read_queued()
            if got is None:
                return found
            found.append(got)

    def _read_queued(self) -> Received | None:
        while True:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return None
            topic, event = envelope.decode_event_frames(frames)
            if topic == envelope.TOPIC_DAEMON:
                check_alive(event)
                return time.monotonic(), event
            self.heartbeats += 1

    def close(self) -> None:
        self.sock.close(linger=0)


class Pinger:
    """A thread that sends `daemon.ping` every `interval` seconds with its own client."""

    def __init__(self, runtime: Path, interval: float) -> None:
        self.runtime = runtime
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        """(monotonic time sent, seconds to the reply)."""
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pinger", daemon=True)

    def start(self) -> Pinger:
        self._thread.start()
        return self

    def _run(self) -> None:
        with Client(self.runtime, timeout=30.0) as client:
            while not self._stop.is_set():
                sent = time.monotonic()
                try:
                    client.daemon_ping()
                except MapidError as exc:
                    self.errors.append(str(exc))
                    return
                self.samples.append((sent, time.monotonic() - sent))
                self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=35)

    def slow(self, start: float, end: float, over: float = 0.010) -> list[tuple[float, float]]:
        """(time sent, seconds) of the pings sent in [start, end] that took over `over`."""
        return [(t, d) for t, d in list(self.samples) if start <= t <= end and d > over]

    def window(self, start: float, end: float) -> str:
        """The pings sent in [start, end]: count, longest, how many over 10 ms."""
        found = [d for t, d in list(self.samples) if start <= t <= end]
        if not found:
            return "no pings"
        slow = sum(1 for d in found if d > 0.010)
        return f"{len(found)} pings, longest {max(found) * 1e3:.1f} ms, {slow} over 10 ms"


def loop_line(daemon: BenchDaemon, pinger: Pinger, start: float, wall_start: float) -> str:
    """The pings sent since `start` (monotonic) and the daemon's collections since
    `wall_start` (wall clock, from its GC log) that took 5 ms or more."""
    pings = pinger.window(start, time.monotonic())
    pauses = [ms for _, _, ms, _ in daemon.gc_pauses(wall_start) if ms >= 5.0]
    longest = f", longest {max(pauses):.0f} ms" if pauses else ""
    return f"{pings}; daemon GC pauses >= 5 ms: {len(pauses)}{longest}"


def describe(event: dict[str, Any]) -> str:
    """One line for an event: type, trigger, gen and the sizes of its lists."""
    parts = [f"{event.get('type')} trigger={event.get('trigger')} gen={event.get('gen')}"]
    for key in ("added", "removed", "changed", "errors"):
        value = event.get(key) or []
        if value:
            parts.append(f"{key}={len(value)}" if len(value) > 3 else f"{key}={value}")
    return " ".join(parts)


def wall(ts: object) -> float | None:
    """An event's `ts` (a msgpack timestamp, decoded as a datetime) in seconds."""
    if isinstance(ts, datetime):
        return ts.timestamp()
    if isinstance(ts, int | float):
        return float(ts)
    return None


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def spread(values: Sequence[float]) -> str:
    """p50 / p99 / max (and min) of seconds, in ms."""
    if not values:
        return "no samples"
    s = sorted(values)
    return (
        f"p50 {ms(percentile(s, 50))}, p99 {ms(percentile(s, 99))}, "
        f"max {ms(s[-1])}, min {ms(s[0])} (n={len(s)})"
    )


# -- part 1: save to event -------------------------------------------------------------------


@dataclass
class Save:
    index: int
    profile: str
    style: str
    started: float
    """time.monotonic() just before the save."""
    latency: float | None
    """Seconds from just before the save to the receipt of its event; None: lost."""
    to_report: float | None
    """Seconds from the save (wall clock) to the event's `ts` (when the daemon built the report)."""
    events: list[dict[str, Any]] = field(default_factory=list)
    """Every `daemon` event read between the save and the end of its settle window."""
    problems: list[str] = field(default_factory=list)


def run_saves(
    reader: EventReader,
    profiles_dir: Path,
    names: Sequence[str],
    contacts: Path,
    mail_root: Path,
    saves: int,
    timeout: float,
    settle: float,
) -> list[Save]:
    results: list[Save] = []
    last_gen: int | None = None
    for index in range(saves):
        name = names[index % len(names)]
        style, save = SAVE_STYLES[index % len(SAVE_STYLES)]
        text = profile_text(name, 1000 + index, contacts, mail_root)
        leftovers = reader.collect(0)
        for _, event in leftovers:  # after the previous save's settle window: still its own
            if results:
                results[-1].events.append(event)
                results[-1].problems.append(f"late event: {describe(event)}")
        wall_start = time.time()
        start = time.monotonic()
        record = Save(index, name, style, start, None, None)
        save(profiles_dir / f"{name}.toml", text)
        deadline = start + timeout
        matched: Received | None = None
        while matched is None:
            got = reader.read(deadline)
            if got is None:
                break
            record.events.append(got[1])
            event = got[1]
            if event.get("trigger") == "watcher" and name in (event.get("changed") or []):
                matched = got
        if matched is None:
            record.problems.append(f"lost: no event within {timeout:g} s")
        else:
            received, event = matched
            record.latency = received - start
            ts = wall(event.get("ts"))
            if ts is not None:
                record.to_report = ts - wall_start
            if event.get("type") != "reloaded" or event.get("errors"):
                record.problems.append(f"unexpected event: {describe(event)}")
            if event.get("changed") != [name] or event.get("added") or event.get("removed"):
                record.problems.append(f"unexpected lists: {describe(event)}")
            gen = event.get("gen")
            if isinstance(gen, int):
                if last_gen is not None and gen != last_gen + 1:
                    record.problems.append(f"gen {gen} after {last_gen}")
                last_gen = gen
            record.events += [e for _, e in reader.collect(settle)]
        if len(record.events) > 1:
            shown = [describe(e) for e in record.events]
            record.problems.append(f"{len(record.events)} events: {shown}")
        results.append(record)
    return results


def report_saves(results: list[Save], settle: float) -> dict[str, Any]:
    latencies = [r.latency for r in results if r.latency is not None]
    lost = [r for r in results if r.latency is None]
    single = [r for r in results if len(r.events) == 1 and r.latency is not None]
    print(f"  saves: {len(results)}; events received: {len(latencies)}; lost: {len(lost)}")
    print(
        f"  saves with exactly one event (listening {settle:g} s after it): "
        f"{len(single)}/{len(results)}"
    )
    print(f"  save -> `reloaded` event: {spread(latencies)}")
    for style, _ in SAVE_STYLES:
        values = [r.latency for r in results if r.style == style and r.latency is not None]
        print(f"    {style:<28} {spread(values)}")
    to_report = [r.to_report for r in results if r.to_report is not None]
    if to_report:
        print(
            f"  save -> the report's `ts` (daemon clock, built after the reload): "
            f"p50 {ms(statistics.median(to_report))}"
        )
    if latencies:
        beyond = [x - DEBOUNCE_S for x in latencies]
        print(
            f"  beyond the {DEBOUNCE_S:g} s debounce: p50 {ms(statistics.median(beyond))}, "
            f"max {ms(max(beyond))}"
        )
        p50 = percentile(sorted(latencies), 50)
        mark = verdict(p50 < TARGET_P50_S)
        print(f"  save -> reloaded p50 {ms(p50)} (target < {TARGET_P50_S * 1e3:.0f} ms): {mark}")
    for r in results:
        for problem in r.problems:
            print(f"    save {r.index} ({r.profile}, {r.style}): {problem}")
    return {"latencies": latencies, "lost": len(lost), "single": len(single)}


# -- part 2: many profiles -------------------------------------------------------------------


def write_all(paths: Sequence[Path], texts: Sequence[str]) -> float:
    """Write every file in place as fast as possible; returns the seconds it took."""
    start = time.monotonic()
    for path, text in zip(paths, texts, strict=True):
        path.write_text(text, encoding="utf-8")
    return time.monotonic() - start


def await_watcher(
    reader: EventReader, key: str, expected: int, timeout: float, settle: float
) -> tuple[list[Received], int]:
    """Read events until the watcher's `reloaded` events list `expected` names under `key`
    (summed: a burst longer than the watcher's 2 s ceiling gives several), then `settle`
    seconds more. Returns every event read and the names counted."""
    deadline = time.monotonic() + timeout
    found: list[Received] = []
    counted = 0
    while counted < expected:
        got = reader.read(deadline)
        if got is None:
            break
        found.append(got)
        if got[1].get("trigger") == "watcher":
            counted += len(got[1].get(key) or [])
    found += reader.collect(settle)
    return found, counted


def bulk(
    daemon: BenchDaemon,
    reader: EventReader,
    pinger: Pinger,
    count: int,
    reloads: int,
    contacts: Path,
    mail_root: Path,
    timeout: float,
    settle: float,
) -> dict[str, float]:
    figures: dict[str, float] = {}
    profiles_dir = daemon.config_dir / "profiles"
    names = [f"bulk-{i:04d}" for i in range(count)]
    paths = [profiles_dir / f"{name}.toml" for name in names]
    client = daemon.client(timeout=120.0)
    try:
        total = count + len(list(profiles_dir.glob("*.toml")))
        reader.collect(0)

        # A. all written at once -> the watcher's event (all added)
        texts = [profile_text(n, 1, contacts, mail_root) for n in names]
        start, wall_start = time.monotonic(), time.time()
        cpu0 = daemon.cpu_seconds()
        wrote = write_all(paths, texts)
        events, counted = await_watcher(reader, "added", count, timeout, settle)
        watcher_events = [(t, e) for t, e in events if e.get("trigger") == "watcher"]
        print(f"  A. {count} new files written in {ms(wrote)} (in place, one after another)")
        if watcher_events and counted >= count:
            last = watcher_events[-1][0]
            figures["watch_added"] = last - start
            print(
                f"     first write -> watcher's `reloaded` event: {ms(last - start)} "
                f"(last write -> event: {ms(last - start - wrote)}); "
                f"{len(watcher_events)} watcher event(s), {counted} added"
            )
        else:
            print(f"     LOST: {counted}/{count} added reported within {timeout:g} s")
        print(f"     events: {[describe(e) for _, e in events]}")
        print(
            f"     daemon CPU {daemon.cpu_seconds() - cpu0:.2f} s; "
            f"{loop_line(daemon, pinger, start, wall_start)}"
        )

        # B. daemon.reload with nothing changed
        stats0 = client.daemon_stats()
        cpu0 = daemon.cpu_seconds()
        start, wall_start = time.monotonic(), time.time()
        times: list[float] = []
        odd: list[str] = []
        for _ in range(reloads):
            t0 = time.monotonic()
            result = client.daemon_reload()
            times.append(time.monotonic() - t0)
            if result.get("added") or result.get("removed") or result.get("changed"):
                odd.append(f"report with changes: {describe(dict(result))}")
            first = reader.read(time.monotonic() + 2.0)
            got = ([first] if first is not None else []) + reader.collect(0.05)
            request_events = [e for _, e in got if e.get("trigger") == "request"]
            if len(got) != 1 or len(request_events) != 1:
                odd.append(f"{len(got)} events: {[describe(e) for _, e in got]}")
        cpu = daemon.cpu_seconds() - cpu0
        stats1 = client.daemon_stats()
        figures["reload_same_p50"] = percentile(sorted(times), 50)
        print(f"  B. daemon.reload, nothing changed ({total} profiles): {spread(times)}")
        print(
            f"     daemon CPU {cpu / max(1, reloads) * 1e3:.0f} ms per reload; "
            f"daemon.stats reloads +{stats1['reloads'] - stats0['reloads']}; "
            f"{loop_line(daemon, pinger, start, wall_start)}"
        )
        for line in odd:
            print(f"     {line}")

        # C. all rewritten, then one daemon.reload at once (all changed)
        texts = [profile_text(n, 2, contacts, mail_root) for n in names]
        start, wall_start = time.monotonic(), time.time()
        wrote = write_all(paths, texts)
        t0 = time.monotonic()
        result = client.daemon_reload()
        took = time.monotonic() - t0
        figures["reload_changed"] = took
        changed_n = len(result.get("changed") or [])
        events = reader.collect(max(settle, 2 * DEBOUNCE_S + 1.0))
        print(
            f"  C. {count} files rewritten in {ms(wrote)}, then daemon.reload: {ms(took)}, "
            f"report: {changed_n} changed, ok={result.get('ok')}"
        )
        print(
            f"     events in the {max(settle, 2 * DEBOUNCE_S + 1.0):g} s after: "
            f"{[describe(e) for _, e in events]}"
        )
        print(f"     {loop_line(daemon, pinger, start, wall_start)}")

        # D. all rewritten again -> the watcher's event (all changed)
        texts = [profile_text(n, 3, contacts, mail_root) for n in names]
        start, wall_start = time.monotonic(), time.time()
        cpu0 = daemon.cpu_seconds()
        wrote = write_all(paths, texts)
        events, counted = await_watcher(reader, "changed", count, timeout, settle)
        watcher_events = [(t, e) for t, e in events if e.get("trigger") == "watcher"]
        print(f"  D. {count} files rewritten in {ms(wrote)}")
        if watcher_events and counted >= count:
            last = watcher_events[-1][0]
            figures["watch_changed"] = last - start
            print(
                f"     first write -> watcher's `reloaded` event: {ms(last - start)} "
                f"(last write -> event: {ms(last - start - wrote)}); "
                f"{len(watcher_events)} watcher event(s), {counted} changed"
            )
        else:
            print(f"     LOST: {counted}/{count} changed reported within {timeout:g} s")
        print(f"     events: {[describe(e) for _, e in events]}")
        print(
            f"     daemon CPU {daemon.cpu_seconds() - cpu0:.2f} s; "
            f"{loop_line(daemon, pinger, start, wall_start)}"
        )
    finally:
        client.close()
    return figures


def baseline(profiles_dir: Path, count: int, reps: int) -> dict[str, float]:
    """tomllib.loads of the bulk files in this process, and mapid's read_profiles."""
    paths = sorted(profiles_dir.glob("bulk-*.toml"))[:count]
    texts = [p.read_text(encoding="utf-8") for p in paths]
    loads: list[float] = []
    read_loads: list[float] = []
    mapid_read: list[float] = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for text in texts:
            tomllib.loads(text)
        loads.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for path in paths:
            tomllib.loads(path.read_text(encoding="utf-8"))
        read_loads.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        read_profiles(profiles_dir)
        mapid_read.append(time.perf_counter() - t0)
    figures = {
        "loads": statistics.median(loads),
        "read_loads": statistics.median(read_loads),
        "read_profiles": statistics.median(mapid_read),
    }
    print(f"  in this process, p50 of {reps} (files already in the page cache):")
    print(f"    tomllib.loads of the {len(texts)} texts:          {ms(figures['loads'])}")
    print(f"    read + tomllib.loads of the {len(paths)} files:   {ms(figures['read_loads'])}")
    print(
        f"    mapid read_profiles(profiles/) (all files):  {ms(figures['read_profiles'])} "
        "(list, read, parse, validate, hash)"
    )
    return figures


# -- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=40, help="profile saves timed (part 1)")
    parser.add_argument(
        "--profiles", type=int, default=500, help="profile files for the full reload (part 2)"
    )
    parser.add_argument("--few", type=int, default=4, help="profiles the saves rotate over")
    parser.add_argument("--reloads", type=int, default=10, help="daemon.reload calls, no change")
    parser.add_argument(
        "--settle",
        type=float,
        default=0.6,
        help="seconds to keep listening after an event, for duplicates",
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds before 'lost'")
    parser.add_argument("--ping-interval", type=float, default=0.005)
    parser.add_argument("--baseline-reps", type=int, default=5)
    parser.add_argument("--log-level", default=None, help="the daemon's log_level")
    parser.add_argument("--keep", action="store_true", help="keep the daemon's temp dir")
    parser.add_argument(
        "--py-spy", metavar="OUT", help="profile the daemon during part 2 (py-spy record)"
    )
    args = parser.parse_args()
    handle_sigterm()
    print(f"mapid reload benchmark — {time.strftime('%Y-%m-%d %H:%M:%S')} — {machine()}")
    print(
        f"  {args.saves} saves over {args.few} profiles (settle {args.settle:g} s, "
        f"timeout {args.timeout:g} s); {args.profiles} profiles, {args.reloads} reloads"
    )
    with interrupt_exit():
        daemon = BenchDaemon(log_level=args.log_level, keep=args.keep, gc_log=True)
        reader: EventReader | None = None
        pinger: Pinger | None = None
        try:
            profiles_dir = daemon.config_dir / "profiles"
            contacts = daemon.base / PROFILE / "contacts"  # the shared two-card folder
            mail_root = daemon.base / "mail"
            few = [f"few-{i}" for i in range(1, max(1, args.few) + 1)]
            for name in few:
                (profiles_dir / f"{name}.toml").write_text(
                    profile_text(name, 0, contacts, mail_root), encoding="utf-8"
                )
            daemon.start()
            _, events_ep = daemon.endpoints()
            reader = EventReader(events_ep)
            reader.wait_heartbeat(5.0)
            with daemon.client() as client:
                hello = client.daemon_hello()
            print(
                f"  daemon pid {daemon.pid}, config_gen {hello.get('config_gen')}, "
                f"{len(few) + 1} profiles; subscribed to `daemon` and `hb`"
            )
            pinger = Pinger(daemon.runtime, args.ping_interval).start()

            print(f"\n1. profile saved -> `reloaded` event (watcher), {args.saves} saves")
            start, wall_start = time.monotonic(), time.time()
            saves = run_saves(
                reader,
                profiles_dir,
                few,
                contacts,
                mail_root,
                args.saves,
                args.timeout,
                args.settle,
            )
            part1 = report_saves(saves, args.settle)
            print(f"  {loop_line(daemon, pinger, start, wall_start)}")
            for sent, took in pinger.slow(start, time.monotonic()):
                before = [r.started for r in saves if r.started <= sent]
                after = f"+{ms(sent - max(before))} after a save" if before else "before any save"
                print(f"    ping of {ms(took)} sent {after}")

            print(f"\n2. {args.profiles} profile files (vCard on a shared folder + Maildir)")
            with py_spy(daemon.pid, args.py_spy):
                part2 = bulk(
                    daemon,
                    reader,
                    pinger,
                    args.profiles,
                    args.reloads,
                    contacts,
                    mail_root,
                    timeout=max(30.0, args.timeout),
                    settle=args.settle,
                )
            pinger.stop()
            if pinger.errors:
                print(f"  pinger errors: {pinger.errors[:3]}")
            base = baseline(profiles_dir, args.profiles, args.baseline_reps)
            same = part2.get("reload_same_p50")
            if same is not None:
                print(
                    f"  ratio daemon.reload p50 (no change) / tomllib.loads: "
                    f"{same / base['loads']:.1f}x; / read_profiles: "
                    f"{same / base['read_profiles']:.1f}x"
                )
            changed = part2.get("reload_changed")
            if changed is not None:
                print(
                    f"  ratio daemon.reload (all changed) / tomllib.loads: "
                    f"{changed / base['loads']:.1f}x"
                )
            lat = part1["latencies"]
            if lat:
                print(
                    f"\nsummary: save -> event p50 {ms(percentile(sorted(lat), 50))}, "
                    f"p99 {ms(percentile(sorted(lat), 99))} ({part1['lost']} lost, "
                    f"{part1['single']}/{len(saves)} with exactly one event); "
                    f"{args.profiles} profiles: reload p50 "
                    f"{ms(same) if same is not None else '?'}, watcher (added) "
                    f"{ms(part2['watch_added']) if 'watch_added' in part2 else 'lost'}"
                )
        except DaemonStopped as exc:
            print(f"\nSTOPPED: {exc}; the benchmark cannot go on. Daemon log tail:")
            print(daemon.log_tail(5)[-2000:])
        finally:
            if pinger is not None:
                pinger.stop()
            if reader is not None:
                reader.close()
            daemon.close()
            if daemon.exit_code not in (0, None):
                print(f"daemon exit code {daemon.exit_code}")
            if args.keep:
                print(f"kept {daemon.base}")


if __name__ == "__main__":
    main()
