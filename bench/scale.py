"""Many concurrent sessions on one daemon: logon rate, memory per session, stalls, stop time.

`--procs` client processes (default 2), each an AsyncClient with `--concurrency` logons in
flight (default 32, under the daemon's per-client cap of 64), log on `--sessions` sessions
(default 10 000; up to 100 000 and more) with no lease (`lease_s = 0`), and keep them.
Figures:

- logons per second (all sessions / wall time from the first logon sent to the last answered),
  the logon latency under that load, and the latency of a ping every 5 ms meanwhile;
- the daemon's garbage collections meanwhile (a sitecustomize on the daemon's
  PYTHONPATH logs gc.callbacks; the daemon's code is untouched; `--no-gc-log` turns it off);
- the daemon's VmRSS of the empty daemon after a warm-up, after the logons, and the memory
  per session beyond the empty daemon; its open file descriptors against its limit;
- ping latency with the sessions in place (`--steady` seconds of back-to-back pings);
- `daemon.snapshot` of everything (`--no-snapshot` skips it): time to the first part (the
  daemon builds every part in one step of its loop) and to the last, bytes across all parts
  (following the `next` cursors) and the number of parts, measured with a bare DEALER on the
  wire bytes, and the longest a ping from another process waited meanwhile (how long the
  loop was blocked);
- how long SIGTERM took to stop the daemon with all sessions live, and its exit code.

A summary at the end puts the figures of issue 18 beside their targets, PASS or MISS:

- SIGTERM with all sessions live: exit 0 within 5 s;
- no stall over 50 ms: the longest ping during the logons and in the steady state, and the
  longest full (generation 2) garbage collection from the first logon to the stop;
- at most 8 KB per session (the standard one-store profile);
- at least 2 000 logons a second (a few clients pipelining).

`--json FILE` writes that summary (and the raw figures) as JSON, with the rows of
bench/RESULTS.md's "Current figures" table. `--cards N` puts N more cards in the profile's
vCard folder (a realistic address book).

    python bench/scale.py [--sessions 10000] [--procs 2] [--concurrency 32] [--cards 0]
                          [--steady 3] [--no-snapshot] [--pin] [--json FILE]
    python bench/scale.py --sessions 100000 --json scale-100k.json   # issue 18's run
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing as mp
import os
import queue
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as MpEvent
from typing import Any

import zmq
from _daemon import (
    BenchDaemon,
    Summary,
    command_line,
    handle_sigterm,
    interrupt_exit,
    machine,
    pin,
    py_spy,
    summary_us,
    verdict,
)

from mapid.client import AsyncClient
from mapid.errors import MapidError
from mapid.wire import envelope
from mapid.wire.codec import pack, unpack

# -- logon workers (child processes) --------------------------------------------------------


async def _logons(runtime: str, count: int, concurrency: int, go: MpEvent) -> dict[str, Any]:
    latencies: list[int] = []
    errors: dict[str, int] = {}
    async with AsyncClient(runtime, timeout=120.0, retries=0) as client:
        await client.daemon_ping()
        await asyncio.to_thread(go.wait)
        todo = itertools.count()
        pid = os.getpid()
        clock = time.perf_counter_ns

        async def one_lane() -> None:
            while next(todo) < count:
                t0 = clock()
                try:
                    await client.session_logon(
                        "alpha", client={"name": "bench.scale", "pid": pid}, lease_s=0
                    )
                except MapidError as exc:
                    name = type(exc).__name__ + ":" + str(getattr(exc, "code", ""))
                    errors[name] = errors.get(name, 0) + 1
                    continue
                latencies.append(clock() - t0)

        start = time.time()
        await asyncio.gather(*(one_lane() for _ in range(concurrency)))
        end = time.time()
    return {"start": start, "end": end, "latencies": latencies, "errors": errors}


def worker_main(
    runtime: str, count: int, concurrency: int, go: MpEvent, results: Queue[dict[str, Any]]
) -> None:
    try:
        results.put(asyncio.run(_logons(runtime, count, concurrency, go)))
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # report it rather than leave the parent waiting
        results.put({"failed": repr(exc)})


# -- measuring in the parent ----------------------------------------------------------------


class RawDealer:
    """A bare DEALER that times wire bytes (no client library in the way)."""

    def __init__(self, endpoint: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVTIMEO, 120_000)
        self.sock.setsockopt(zmq.MAXMSGSIZE, -1)
        self.sock.connect(endpoint)
        self.ids = itertools.count()

    def call(self, op: str, args: dict[str, Any] | None = None) -> tuple[bytes, dict[str, Any]]:
        req_id = f"scale-{next(self.ids)}"
        self.sock.send_multipart([b"", pack(envelope.request(req_id, op, args))])
        while True:
            data = self.sock.recv_multipart()[-1]
            reply = unpack(data)
            if reply.get("id") == req_id:
                if not reply.get("ok"):
                    raise RuntimeError(f"{op}: {reply.get('error')}")
                return data, reply["result"]

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()


def snapshot_all(dealer: RawDealer) -> dict[str, Any]:
    """Take a full snapshot, following `next`; times and sizes of its parts."""
    t0 = time.perf_counter()
    data, result = dealer.call("daemon.snapshot", {"prefix": ""})
    first = time.perf_counter() - t0
    sizes = [len(data)]
    sessions = len(result["sessions"])
    rows = sum(len(r) for r in result["status"].values())
    seq = result["seq"]
    while result.get("next"):
        data, result = dealer.call("daemon.snapshot", {"cursor": result["next"]})
        sizes.append(len(data))
        sessions += len(result["sessions"])
        rows += sum(len(r) for r in result["status"].values())
        if result["seq"] != seq:
            raise RuntimeError(f"snapshot parts at different seq: {seq} and {result['seq']}")
    return {
        "first_s": first,
        "total_s": time.perf_counter() - t0,
        "sizes": sizes,
        "sessions": sessions,
        "rows": rows,
    }


def pinger_main(endpoint: str, stop: MpEvent, out: Queue[list[int]], interval: float = 0.0) -> None:
    """Ping until `stop`, `interval` s apart (its own process: the parent's GIL is busy).

    A ping that arrives while the daemon's loop is blocked waits for it, so the longest
    round trip shows the longest stall (to within `interval`).
    """
    samples: list[int] = []
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 120_000)
    sock.connect(endpoint)
    try:
        for i in itertools.count():
            if stop.is_set():
                break
            t0 = time.perf_counter_ns()
            sock.send_multipart([b"", pack(envelope.request(f"stall-{i}", "daemon.ping"))])
            sock.recv_multipart()
            samples.append(time.perf_counter_ns() - t0)
            if interval > 0:
                time.sleep(interval)
    except zmq.Again:  # no answer within RCVTIMEO: that is the stall, and the end
        samples.append(time.perf_counter_ns() - t0)
    except KeyboardInterrupt:
        pass
    finally:
        sock.close(linger=0)
        ctx.term()
    out.put(samples)


def full_gcs(daemon: BenchDaemon, since: float, until: float) -> list[float]:
    """Milliseconds of each full (generation 2) collection in a time window (GC log)."""
    return [ms for t, gen, ms, _ in daemon.gc_pauses(since) if gen == 2 and t <= until]


def gc_line(daemon: BenchDaemon, since: float, until: float) -> str:
    """The daemon's full (generation 2) collections in a time window, from its GC log."""
    if daemon.gc_log is None:
        return "not logged (--no-gc-log)"
    full = full_gcs(daemon, since, until)
    if not full:
        return "no full collection"
    return f"{len(full)} full collections, {sum(full):.0f} ms in all, longest {max(full):.0f} ms"


STOP_TARGET_S = 5.0
"""SIGTERM with all sessions live: exit 0 within this (docs/design.md 10, issue 18)."""
STALL_TARGET_MS = 50.0
"""No ping waits longer, while logging on or steady; no full collection lasts longer."""
KB_TARGET = 8.0
"""KB (1000 bytes) per session of the one-store profile, beyond the empty daemon."""
LOGON_RATE_TARGET = 2000.0
"""Logons a second with a few clients pipelining."""
IN_FLIGHT_CAP = 64
"""The daemon's default `max_in_flight` per client."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sessions", type=int, default=10_000, help="sessions to log on (issue 18: 100000)"
    )
    parser.add_argument("--procs", type=int, default=2, help="logon client processes")
    parser.add_argument("--concurrency", type=int, default=32, help="logons in flight per process")
    parser.add_argument("--warmup", type=int, default=200, help="warm-up logon/logoff cycles")
    parser.add_argument(
        "--settle",
        type=float,
        default=0.0,
        help="also measure RSS again after this many seconds (61+ lets the reply cache expire)",
    )
    parser.add_argument(
        "--steady", type=float, default=3.0, help="seconds of back-to-back pings after the logons"
    )
    parser.add_argument(
        "--no-snapshot", action="store_true", help="skip the daemon.snapshot measurement"
    )
    parser.add_argument(
        "--no-gc-log", action="store_true", help="do not log the daemon's garbage collections"
    )
    parser.add_argument(
        "--cards", type=int, default=0, help="extra .vcf files in the profile's vCard folder"
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="the daemon on one CPU, this process and its clients on the others (the "
        "logon rate on one core)",
    )
    parser.add_argument(
        "--hold",
        type=float,
        default=0.0,
        help="at the end, keep the daemon and its sessions this many seconds (to attach py-spy)",
    )
    parser.add_argument(
        "--stop-timeout",
        type=float,
        default=30.0,
        help="SIGKILL the daemon if it has not exited this many seconds after SIGTERM",
    )
    parser.add_argument("--log-level", default=None, help="the daemon's log_level")
    parser.add_argument("--py-spy", metavar="OUT", help="profile the daemon during the logons")
    parser.add_argument("--json", metavar="FILE", help="write the summary and figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the daemon's temp dir")
    args = parser.parse_args()
    if args.sessions < 1 or args.procs < 1 or args.concurrency < 1:
        parser.error("--sessions, --procs and --concurrency must be at least 1")
    handle_sigterm()
    summary = Summary("scale.py", command_line())
    print(f"mapid scale benchmark — {time.strftime('%Y-%m-%d %H:%M:%S')} — {machine()}")
    print(
        f"  {args.sessions} sessions by {args.procs} processes x {args.concurrency} in flight, "
        f"lease_s = 0; vCard folder of {2 + args.cards} cards"
    )
    spawn = mp.get_context("spawn")
    procs: list[mp.process.BaseProcess] = []
    # More in flight per client than the daemon's cap would be refused (DaemonBusy).
    extra = f"max_in_flight = {args.concurrency}" if args.concurrency > IN_FLIGHT_CAP else ""
    daemon = BenchDaemon(
        lease_s=0,
        log_level=args.log_level,
        extra_config=extra,
        gc_log=not args.no_gc_log,
        extra_cards=args.cards,
        keep=args.keep,
    )
    raw: dict[str, Any] = {"sessions_asked": args.sessions}
    with interrupt_exit():
        try:
            daemon.start()
            if args.pin:
                cpus = sorted(os.sched_getaffinity(0))
                if len(cpus) < 2:
                    parser.error("--pin needs two CPUs or more")
                pin(daemon.pid, {cpus[0]})
                os.sched_setaffinity(0, set(cpus[1:]))  # the client processes inherit it
                print(f"  daemon pinned to CPU {cpus[0]}; clients on {cpus[1:]}")
            request_ep, _ = daemon.endpoints()
            with daemon.client() as client:
                for _ in range(args.warmup):
                    client.session_logoff(client.session_logon("alpha", lease_s=0)["token"])
                for _ in range(500):
                    client.daemon_ping()
            time.sleep(1.0)
            rss0 = daemon.rss_kb()
            fds0 = daemon.open_fds()
            print(
                f"  empty daemon after {args.warmup} warm-up cycles: VmRSS {rss0 / 1024:.1f} MiB, "
                f"{fds0} open fds (limit {daemon.fd_limit() or 'none'})"
            )

            go = spawn.Event()
            results: Queue[dict[str, Any]] = spawn.Queue()
            shares = [args.sessions // args.procs] * args.procs
            shares[0] += args.sessions - sum(shares)
            for share in shares:
                proc = spawn.Process(
                    target=worker_main,
                    args=(str(daemon.runtime), share, args.concurrency, go, results),
                    daemon=True,
                )
                proc.start()
                procs.append(proc)
            workers = list(procs)
            stop_pings = spawn.Event()
            pings_q: Queue[list[int]] = spawn.Queue()
            pinger = spawn.Process(
                target=pinger_main, args=(request_ep, stop_pings, pings_q, 0.005), daemon=True
            )
            pinger.start()
            procs.append(pinger)
            time.sleep(0.5)
            with py_spy(daemon.pid, args.py_spy):
                cpu0 = daemon.cpu_seconds()
                t_logons = time.time()
                go.set()
                reports: list[dict[str, Any]] = []
                while len(reports) < len(workers):
                    try:
                        reports.append(results.get(timeout=1.0))
                    except queue.Empty:
                        if not any(p.is_alive() for p in workers):
                            break
                cpu = daemon.cpu_seconds() - cpu0
                t_logons_end = time.time()
                stop_pings.set()
                logon_pings = pings_q.get(timeout=150)
            for proc in [*workers, pinger]:
                # Gone before anything else is measured: a client process that is still
                # exiting (freeing its 50 000 sessions) takes a core from the daemon.
                proc.join(timeout=30)
            failed = [r["failed"] for r in reports if "failed" in r]
            if failed or len(reports) < len(workers):
                raise RuntimeError(f"logon workers failed: {failed or 'died'}")
            wall = max(r["end"] for r in reports) - min(r["start"] for r in reports)
            lat = [x for r in reports for x in r["latencies"]]
            errors: dict[str, int] = {}
            for r in reports:
                for name, n in r["errors"].items():
                    errors[name] = errors.get(name, 0) + n
            rss1 = daemon.rss_kb()
            fds1 = daemon.open_fds()
            with daemon.client() as client:
                stats = client.daemon_stats()
            s = summary_us(lat)
            rate = len(lat) / wall
            print(
                f"  logons: {len(lat)} in {wall:.2f} s = {rate:.0f} logons/s "
                f"{verdict(rate >= LOGON_RATE_TARGET, f'>= {LOGON_RATE_TARGET:.0f}/s')}; "
                f"errors {errors or 'none'}; daemon CPU {cpu:.1f} s "
                f"({cpu / max(1, len(lat)) * 1e3:.2f} ms per logon)"
            )
            print(
                f"  logon latency under load (ms): p50 {s['p50'] / 1e3:.1f}  "
                f"p99 {s['p99'] / 1e3:.1f}  max {s['max'] / 1e3:.1f}"
            )
            lp = summary_us(logon_pings)
            logon_stall_ms = lp["max"] / 1e3
            print(
                f"  pings every 5 ms from another process during the logons (ms): "
                f"p50 {lp['p50'] / 1e3:.2f}  p99 {lp['p99'] / 1e3:.1f}  max {logon_stall_ms:.1f} "
                f"{verdict(logon_stall_ms <= STALL_TARGET_MS, f'<= {STALL_TARGET_MS:.0f} ms')}"
            )
            print(f"  daemon GC during the logons: {gc_line(daemon, t_logons, t_logons_end)}")
            print(
                f"  daemon.stats: sessions {stats['sessions']}, members {stats.get('members')}, "
                f"reply cache {stats.get('reply_cache')} entries; open fds {fds0} -> {fds1}"
            )
            per = (rss1 - rss0) * 1024 / max(1, stats["sessions"])
            print(
                f"  VmRSS {rss0 / 1024:.1f} MiB -> {rss1 / 1024:.1f} MiB: "
                f"{per / 1000:.1f} KB per session beyond the empty daemon "
                f"{verdict(per / 1000 <= KB_TARGET, f'<= {KB_TARGET:g} KB')}"
            )
            raw.update(
                logons=len(lat),
                logon_errors=errors,
                logon_wall_s=wall,
                logons_per_s=rate,
                daemon_cpu_per_logon_ms=cpu / max(1, len(lat)) * 1e3,
                logon_latency_ms={k: v / 1e3 for k, v in s.items() if k != "n"},
                logon_pings_ms={k: v / 1e3 for k, v in lp.items() if k != "n"},
                sessions=stats["sessions"],
                rss_empty_kib=rss0,
                rss_loaded_kib=rss1,
                bytes_per_session=per,
                open_fds=[fds0, fds1],
                fd_limit=daemon.fd_limit(),
            )

            dealer = RawDealer(request_ep)
            try:
                for _ in range(200):
                    dealer.call("daemon.ping")
                t: list[int] = []
                t_steady = time.time()
                end = time.monotonic() + args.steady
                while time.monotonic() < end:
                    t0 = time.perf_counter_ns()
                    dealer.call("daemon.ping")
                    t.append(time.perf_counter_ns() - t0)
                t_steady_end = time.time()
                p = summary_us(t)
                steady_stall_ms = p["max"] / 1e3
                print(
                    f"  {args.steady:g} s of pings with {stats['sessions']} sessions (µs): "
                    f"p50 {p['p50']:.0f}  p99 {p['p99']:.0f}  max {p['max']:.0f} "
                    f"{verdict(steady_stall_ms <= STALL_TARGET_MS, f'<= {STALL_TARGET_MS:.0f} ms')}"
                    f"; {sum(1 for x in t if x > 2e6)} of {len(t)} over 2 ms; "
                    f"GC: {gc_line(daemon, t_steady, t_steady_end)}"
                )
                raw["steady_pings_us"] = {k: v for k, v in p.items() if k != "n"}
                raw["steady_pings"] = len(t)
                snap = snap2 = None
                stalls: list[int] = []
                if not args.no_snapshot:
                    stop = spawn.Event()
                    stalls_q: Queue[list[int]] = spawn.Queue()
                    pinger = spawn.Process(
                        target=pinger_main, args=(request_ep, stop, stalls_q), daemon=True
                    )
                    pinger.start()
                    procs.append(pinger)
                    time.sleep(1.0)
                    t_snap = time.time()
                    try:
                        snap = snapshot_all(dealer)
                        time.sleep(0.2)
                    finally:
                        stop.set()
                    stalls = stalls_q.get(timeout=150)
                    t_snap_end = time.time()
                    snap2 = snapshot_all(dealer)
            finally:
                dealer.close()
            snap_stall_ms = max(stalls, default=0) / 1e6
            if snap is not None and snap2 is not None:
                total = sum(snap["sizes"])
                print(
                    f"  daemon.snapshot: {snap['sessions']} sessions, {snap['rows']} rows, "
                    f"{len(snap['sizes'])} parts, {total:,} bytes "
                    f"({total / max(1, snap['sessions']):.0f} B per session); parts "
                    + ", ".join(f"{n / 1048576:.2f}" for n in snap["sizes"][:20])
                    + (", …" if len(snap["sizes"]) > 20 else "")
                    + " MiB"
                )
                print(
                    f"    first part {snap['first_s'] * 1e3:.0f} ms, all parts "
                    f"{snap['total_s'] * 1e3:.0f} ms (again: {snap2['first_s'] * 1e3:.0f} / "
                    f"{snap2['total_s'] * 1e3:.0f} ms)"
                )
                print(
                    f"    pings from another process meanwhile: longest {snap_stall_ms:.0f} ms, "
                    f"{sum(1 for x in stalls if x > 10e6)} over 10 ms; "
                    f"GC: {gc_line(daemon, t_snap, t_snap_end)}"
                )
                raw["snapshot"] = {
                    "sessions": snap["sessions"],
                    "rows": snap["rows"],
                    "parts": len(snap["sizes"]),
                    "bytes": total,
                    "first_part_ms": snap["first_s"] * 1e3,
                    "all_parts_ms": snap["total_s"] * 1e3,
                    "again_first_part_ms": snap2["first_s"] * 1e3,
                    "again_all_parts_ms": snap2["total_s"] * 1e3,
                    "longest_ping_ms": snap_stall_ms,
                }
            per2 = None
            if args.settle > 0:
                time.sleep(args.settle)
                with daemon.client() as client:
                    client.daemon_ping()  # the reply cache purges on a request
                    stats = client.daemon_stats()
                rss2 = daemon.rss_kb()
                per2 = (rss2 - rss0) * 1024 / max(1, stats["sessions"])
                print(
                    f"  after {args.settle:g} s more: VmRSS {rss2 / 1024:.1f} MiB, reply cache "
                    f"{stats.get('reply_cache')} entries, {per2 / 1000:.1f} KB per session "
                    f"{verdict(per2 / 1000 <= KB_TARGET, f'<= {KB_TARGET:g} KB')}"
                )
                raw["bytes_per_session_settled"] = per2
            if args.hold > 0:
                print(
                    f"  holding the daemon (pid {daemon.pid}, MAPID_RUNTIME_DIR="
                    f"{daemon.runtime}) for {args.hold:g} s",
                    flush=True,
                )
                time.sleep(args.hold)
            t_measured = time.time()
            gc_all = full_gcs(daemon, t_logons, t_measured)
            pauses = [pause for t_, _, pause, _ in daemon.gc_pauses(t_logons) if t_ <= t_measured]
            for child in procs:  # the helpers are done; the sessions stay live
                child.join(2)
            daemon.stop(args.stop_timeout)
            log_text = daemon.log_path.read_text(errors="replace")
            not_all_off = "sessions did not all log off" in log_text
            logged_off = log_text.count("ended (daemon stopping)")  # 0 below log_level info
            del log_text
        finally:
            for child in procs:
                child.join(2)
                if child.is_alive():
                    child.terminate()
                    child.join(5)
            daemon.close()
        stop_s = daemon.stop_seconds or 0.0
        stopped = (
            f"killed: no exit {args.stop_timeout:g} s after SIGTERM"
            if daemon.exit_code is None
            else f"exit {daemon.exit_code} after {stop_s:.2f} s"
        )
        stop_ok = daemon.exit_code == 0 and stop_s <= STOP_TARGET_S
        off = f"{logged_off} of {stats['sessions']} sessions logged off" if logged_off else ""
        if not_all_off:
            off = (off + ", " if off else "") + "the log says not all logged off"
        print(
            f"  SIGTERM with all sessions live: {stopped}"
            + (f" ({off})" if off else "")
            + f" {verdict(stop_ok, f'exit 0 within {STOP_TARGET_S:g} s')}"
        )
        raw.update(
            stop_s=daemon.stop_seconds,
            exit_code=daemon.exit_code,
            sessions_logged_off_at_stop=logged_off,
            sessions_not_all_logged_off=not_all_off,
            full_gcs_ms=gc_all,
            gc_pauses_logged=len(pauses),
            longest_gc_pause_any_generation_ms=max(pauses, default=None),
        )

    n = stats["sessions"]
    target_ms = f"<= {STALL_TARGET_MS:.0f} ms"
    summary.add(
        f"SIGTERM -> exit, {n} sessions live",
        stopped + (f" ({off})" if off else ""),
        f"exit 0 within {STOP_TARGET_S:g} s",
        stop_ok,
        stop_s,
        "s",
    )
    summary.add(
        "worst ping stall while logging on",
        f"{logon_stall_ms:.1f} ms",
        target_ms,
        logon_stall_ms <= STALL_TARGET_MS,
        logon_stall_ms,
        "ms",
    )
    summary.add(
        f"worst ping stall, steady ({args.steady:g} s)",
        f"{steady_stall_ms:.1f} ms",
        target_ms,
        steady_stall_ms <= STALL_TARGET_MS,
        steady_stall_ms,
        "ms",
    )
    if daemon.gc_log is None:
        summary.add("longest full GC pause", "not logged (--no-gc-log)", target_ms, None)
    else:
        longest = max(gc_all, default=0.0)
        summary.add(
            "longest full GC pause",
            f"{longest:.0f} ms ({len(gc_all)} full, {sum(gc_all):.0f} ms in all)"
            if gc_all
            else "no full collection",
            target_ms,
            longest <= STALL_TARGET_MS,
            longest,
            "ms",
        )
    kb = per / 1000
    summary.add(
        "memory per session",
        f"{kb:.1f} KB",
        f"<= {KB_TARGET:g} KB",
        kb <= KB_TARGET,
        kb,
        "KB",
    )
    if per2 is not None:
        kb2 = per2 / 1000
        summary.add(
            f"memory per session after {args.settle:g} s",
            f"{kb2:.1f} KB",
            f"<= {KB_TARGET:g} KB",
            kb2 <= KB_TARGET,
            kb2,
            "KB",
        )
    summary.add(
        "logons per second",
        f"{rate:.0f}/s ({args.procs} x {args.concurrency} in flight)",
        f">= {LOGON_RATE_TARGET:.0f}/s",
        rate >= LOGON_RATE_TARGET,
        rate,
        "/s",
    )
    if not args.no_snapshot:
        summary.add(
            "worst ping stall during daemon.snapshot",
            f"{snap_stall_ms:.0f} ms",
            "",
            None,
            snap_stall_ms,
            "ms",
        )
    print()
    summary.print(f"summary against issue 18's targets ({n} sessions)")
    if args.json:
        summary.write_json(args.json, figures_raw=raw)
        print(f"  written to {args.json}")


if __name__ == "__main__":
    main()
