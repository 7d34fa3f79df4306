"""Status fan-out: many subscribers mirror the daemon while sessions come and go.

`--subscribers` SUB sockets (default 50), spread over `--procs` processes (default 5, so the
GIL of one process does not serialize them all), each run the clone recipe of docs/protocol.md
7.3 with `mapid.mirror.MirrorState`: subscribe to everything, wait for the first heartbeat,
snapshot, apply events checking `seq`, re-snapshot on a gap, a new epoch or 3 s without a
heartbeat. Meanwhile one client makes at least `--events` status changes (default 1000):
it logs sessions on (a `logon` event, then one TABLE_ROW_ADDED per row) and off (one
TABLE_ROW_DELETED per row, then `logoff`), at random, keeping at most `--max-live` sessions,
paced to `--rate` events per second (default 500; 0 sends them as fast as one client can,
and then the 50 subscribers, not the daemon, set the latency on a 2-core machine).

It prints the events caused (counted by the driver from each session's table, and checked
against `daemon.stats` and the `seq` range), per-subscriber events received and resyncs,
p50/p99/max latency from publish (the event's `ts`, the daemon's clock at publish) to receipt
(the subscriber's time.time() right after the read), and whether every subscriber ends with
exactly the sessions and rows of a fresh `daemon.snapshot`.

    python bench/fanout.py [--subscribers 50] [--procs 5] [--events 1000] [--rate 500]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import queue
import random
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection
from multiprocessing.queues import Queue
from typing import Any

import zmq
from _daemon import (
    BenchDaemon,
    handle_sigterm,
    interrupt_exit,
    machine,
    percentile,
    py_spy,
    verdict,
)

from mapid.client import Client
from mapid.mirror import HEARTBEAT_TIMEOUT, MirrorState, Resync
from mapid.wire import envelope
from mapid.wire.codec import CodecError

# -- subscriber side (child processes) ------------------------------------------------------


@dataclass
class Subscriber:
    index: int
    sock: zmq.Socket[Any]
    state: MirrorState = field(default_factory=MirrorState)
    last_hb: float = 0.0
    received: int = 0
    """Events read (not heartbeats), including ones older than the snapshot."""
    applied: int = 0
    resyncs: int = 0
    """Snapshots taken after the first one."""
    reasons: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    synced: bool = False


def _snapshot(client: Client, prefix: str) -> list[dict[str, Any]]:
    parts = [dict(client.daemon_snapshot(prefix=prefix))]
    while parts[-1].get("next"):
        parts.append(dict(client.daemon_snapshot(cursor=parts[-1]["next"])))
    return parts


def _resync(sub: Subscriber, client: Client, reason: str | None) -> None:
    sub.state.load_snapshot(_snapshot(client, sub.state.prefix))
    sub.synced = True
    sub.last_hb = time.monotonic()
    if reason is not None:
        sub.resyncs += 1
        sub.reasons.append(reason)


def _seconds(ts: object) -> float:
    """An event's `ts`: a msgpack timestamp (a datetime here) or, from older daemons, a float."""
    if isinstance(ts, datetime):
        return ts.timestamp()
    return float(ts)  # type: ignore[arg-type]


def _handle(sub: Subscriber, client: Client, frames: list[bytes], now: float) -> None:
    try:
        topic, event = envelope.decode_event_frames(frames)
    except (ValueError, CodecError):
        return
    if topic == envelope.TOPIC_HEARTBEAT:
        sub.last_hb = time.monotonic()
    else:
        sub.received += 1
    if not sub.synced:
        return
    try:
        if sub.state.apply(topic, event):
            sub.applied += 1
            sub.latencies.append(now - _seconds(event.get("ts")))
    except Resync as exc:
        _resync(sub, client, str(exc))


def subscriber_main(
    indices: list[int],
    runtime: str,
    events_ep: str,
    control: Connection,
    results: Queue[dict[str, Any]],
) -> None:
    """One process: several subscribers on one poller, one client for their snapshots."""
    with contextlib.suppress(KeyboardInterrupt):
        _subscriber_loop(indices, runtime, events_ep, control, results)


def _subscriber_loop(
    indices: list[int],
    runtime: str,
    events_ep: str,
    control: Connection,
    results: Queue[dict[str, Any]],
) -> None:
    ctx = zmq.Context()
    client = Client(runtime, timeout=30.0, context=ctx)
    subs: list[Subscriber] = []
    poller = zmq.Poller()
    for index in indices:
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(events_ep)
        sock.setsockopt_string(zmq.SUBSCRIBE, "")
        subs.append(Subscriber(index, sock))
        poller.register(sock, zmq.POLLIN)
    by_sock = {s.sock: s for s in subs}
    # Recipe steps 2-4 for each: the first heartbeat (at most 1 s), then the snapshot.
    deadline = time.monotonic() + 1.0
    waiting = set(by_sock)
    while waiting and time.monotonic() < deadline:
        for sock, _ in poller.poll(100):
            sub = by_sock[sock]
            frames = sock.recv_multipart()
            if frames[0] == envelope.TOPIC_HEARTBEAT.encode():
                sub.last_hb = time.monotonic()
                waiting.discard(sock)
    for sub in subs:
        _resync(sub, client, None)
    results.put({"ready": indices})
    control_fd = control.fileno()
    poller.register(control_fd, zmq.POLLIN)
    final_seq: int | None = None
    stop_at: float | None = None
    while True:
        for sock, _ in poller.poll(200):
            if sock == control_fd:  # (final seq, seconds to catch up), or None to stop now
                message = control.recv()
                if message is None:
                    final_seq, stop_at = None, 0.0
                else:
                    final_seq, stop_at = message[0], time.monotonic() + message[1]
                continue
            sub = by_sock[sock]
            # Drain what is queued: one timestamp per message, right after its read.
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                _handle(sub, client, frames, time.time())
        now = time.monotonic()
        for sub in subs:
            if now - sub.last_hb > HEARTBEAT_TIMEOUT:
                _resync(sub, client, f"no heartbeat for {HEARTBEAT_TIMEOUT:g} s")
        if stop_at is not None and (
            now >= stop_at
            or (final_seq is not None and all(s.state.last_seq >= final_seq for s in subs))
        ):
            break
    for sub in subs:
        results.put(
            {
                "index": sub.index,
                "received": sub.received,
                "applied": sub.applied,
                "resyncs": sub.resyncs,
                "reasons": sub.reasons[:5],
                "latencies": sub.latencies,
                "last_seq": sub.state.last_seq,
                "epoch": sub.state.epoch,
                "sessions": sub.state.sessions,
                "tables": sub.state.tables,
            }
        )
        sub.sock.close(linger=0)
    client.close()
    ctx.term()


# -- driver side (parent) -------------------------------------------------------------------


def drive(
    client: Client, target: int, max_live: int, rate: float, seed: int
) -> tuple[int, int, int, list[tuple[bytes, int]]]:
    """Log sessions on and off until `target` events were caused.

    Returns (events caused, logons, logoffs, live sessions as (token, rows)).
    """
    rng = random.Random(seed)
    live: list[tuple[bytes, int]] = []
    caused = logons = logoffs = 0
    started = time.monotonic()
    pid = os.getpid()
    while caused < target:
        if live and (len(live) >= max_live or rng.random() < 0.45):
            token, rows = live.pop(rng.randrange(len(live)))
            client.session_logoff(token)
            caused += rows + 1  # one TABLE_ROW_DELETED per row, then `logoff`
            logoffs += 1
        else:
            token = client.session_logon("alpha", client={"name": "bench.fanout", "pid": pid})[
                "token"
            ]
            rows = len(client.session_status_table(token)["rows"])
            live.append((token, rows))
            caused += 1 + rows  # `logon`, then one TABLE_ROW_ADDED per row
            logons += 1
        if rate > 0:  # pace to `rate` events per second
            ahead = caused / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    return caused, logons, logoffs, live


def _get(
    results: Queue[dict[str, Any]], procs: list[mp.process.BaseProcess], deadline: float
) -> dict[str, Any] | None:
    """The next message from the subscribers; None at the deadline or once they all died."""
    while time.monotonic() < deadline:
        try:
            return results.get(timeout=0.5)
        except queue.Empty:
            if not any(p.is_alive() for p in procs):
                try:
                    return results.get(timeout=0.5)
                except queue.Empty:
                    return None
    return None


def snapshot_state(client: Client) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """(seq, sessions by id, tables by id) of a fresh `daemon.snapshot`, all parts."""
    parts = _snapshot(client, "")
    state = MirrorState()
    state.load_snapshot(parts)
    return state.last_seq, state.sessions, state.tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=50)
    parser.add_argument("--procs", type=int, default=5, help="subscriber processes")
    parser.add_argument("--events", type=int, default=1000, help="status events to cause")
    parser.add_argument("--max-live", type=int, default=20, help="live sessions at most")
    parser.add_argument(
        "--rate", type=float, default=500, help="events per second to cause (0: unpaced burst)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--catch-up", type=float, default=60.0, help="seconds to wait at the end")
    parser.add_argument("--log-level", default=None, help="the daemon's log_level")
    parser.add_argument("--py-spy", metavar="OUT", help="profile the daemon while driving")
    parser.add_argument("--keep", action="store_true", help="keep the daemon's temp dir")
    args = parser.parse_args()
    handle_sigterm()
    procs_n = max(1, min(args.procs, args.subscribers))
    print(f"mapid fan-out benchmark — {time.strftime('%Y-%m-%d %H:%M:%S')} — {machine()}")
    print(
        f"  {args.subscribers} subscribers in {procs_n} processes; >= {args.events} events; "
        f"rate {'unpaced' if args.rate <= 0 else f'{args.rate:g}/s'}; max {args.max_live} live"
    )
    spawn = mp.get_context("spawn")
    procs: list[mp.process.BaseProcess] = []
    controls: list[Connection] = []
    with interrupt_exit(), BenchDaemon(log_level=args.log_level, keep=args.keep) as daemon:
        try:
            _, events_ep = daemon.endpoints()
            results: Queue[dict[str, Any]] = spawn.Queue()
            groups = [list(range(args.subscribers))[i::procs_n] for i in range(procs_n)]
            for group in groups:
                parent_end, child_end = spawn.Pipe()
                proc = spawn.Process(
                    target=subscriber_main,
                    args=(group, str(daemon.runtime), events_ep, child_end, results),
                    daemon=True,
                )
                proc.start()
                procs.append(proc)
                controls.append(parent_end)
            ready = 0
            while ready < procs_n:
                msg = _get(results, procs, time.monotonic() + 60)
                ready += 1 if msg is not None and "ready" in msg else 0
                if msg is None:
                    raise RuntimeError("the subscriber processes did not get ready")
            print(f"  all {args.subscribers} subscribers synced; daemon pid {daemon.pid}")

            with daemon.client() as client:
                stats0 = client.daemon_stats()
                seq0, _, _ = snapshot_state(client)
                with py_spy(daemon.pid, args.py_spy):
                    cpu0 = daemon.cpu_seconds()
                    t0 = time.monotonic()
                    caused, logons, logoffs, live = drive(
                        client, args.events, args.max_live, args.rate, args.seed
                    )
                    drive_s = time.monotonic() - t0
                    cpu_s = daemon.cpu_seconds() - cpu0
                stats1 = client.daemon_stats()
                final_seq, sessions, tables = snapshot_state(client)
            print(
                f"  driver: {logons} logons, {logoffs} logoffs in {drive_s:.2f} s; "
                f"{len(live)} sessions live at the end; daemon CPU {cpu_s:.2f} s"
            )
            by_stats = stats1["events"] - stats0["events"]
            by_seq = final_seq - seq0
            agree = "agree" if caused == by_stats == by_seq else "DISAGREE"
            print(
                f"  events caused: {caused} (driver's count); daemon.stats {by_stats}; "
                f"seq range {by_seq} — {agree}; {caused / drive_s:.0f} events/s"
            )
            t_done = time.monotonic()
            for conn in controls:
                with contextlib.suppress(OSError):  # a subscriber process that died
                    conn.send((final_seq, args.catch_up))
            reports: list[dict[str, Any]] = []
            deadline = time.monotonic() + args.catch_up + 30
            while len(reports) < args.subscribers:
                msg = _get(results, procs, deadline)
                if msg is None:
                    break
                if "index" in msg:
                    reports.append(msg)
            catch_up_s = time.monotonic() - t_done
        finally:
            for conn in controls:
                with contextlib.suppress(OSError):
                    conn.send(None)
            for child in procs:
                child.join(5)
                if child.is_alive():
                    child.terminate()
                    child.join(5)

        report(args, reports, caused, final_seq, sessions, tables, catch_up_s)
    if daemon.exit_code != 0:
        print(f"daemon exit code {daemon.exit_code}:\n{daemon.log_tail()}", file=sys.stderr)


def report(
    args: argparse.Namespace,
    reports: list[dict[str, Any]],
    caused: int,
    final_seq: int,
    sessions: dict[str, Any],
    tables: dict[str, Any],
    catch_up_s: float,
) -> None:
    reports.sort(key=lambda r: r["index"])
    equal = [
        r
        for r in reports
        if r["sessions"] == sessions and r["tables"] == tables and r["last_seq"] == final_seq
    ]
    received = [r["received"] for r in reports]
    applied = [r["applied"] for r in reports]
    resyncs = sum(r["resyncs"] for r in reports)
    lat = sorted(x * 1e3 for r in reports for x in r["latencies"])
    print(
        f"  subscribers reporting: {len(reports)}/{args.subscribers}; "
        f"last one caught up {catch_up_s:.2f} s after the driver stopped"
    )
    if received:
        print(
            f"  events received per subscriber: min {min(received)} max {max(received)} "
            f"(caused {caused}); applied min {min(applied)} max {max(applied)}; "
            f"total receipts {sum(received)}"
        )
    print(f"  resyncs (after the first snapshot): {resyncs}")
    for r in reports:
        if r["resyncs"]:
            print(f"    subscriber {r['index']}: {r['resyncs']} ({'; '.join(r['reasons'])})")
    if lat:
        print(
            f"  latency publish->receipt over {len(lat)} receipts (ms): "
            f"p50 {percentile(lat, 50):.2f}  p99 {percentile(lat, 99):.2f}  "
            f"max {lat[-1]:.2f}"
        )
    rows = sum(len(t) for t in tables.values())
    mark = verdict(len(equal) == args.subscribers, "every mirror equal")
    print(
        f"  final state: {len(sessions)} sessions, {rows} rows at seq {final_seq}; "
        f"{len(equal)}/{args.subscribers} subscribers equal to a fresh daemon.snapshot — {mark}"
    )
    for r in reports:
        if r not in equal:
            print(
                f"    subscriber {r['index']}: last_seq {r['last_seq']}, "
                f"{len(r['sessions'])} sessions, "
                f"{sum(len(t) for t in r['tables'].values())} rows"
            )


if __name__ == "__main__":
    main()
