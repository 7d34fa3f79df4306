"""Many concurrent sessions on one daemon: logon rate, memory per session, snapshot size.

`--procs` client processes (default 2), each an AsyncClient with `--concurrency` logons in
flight (default 32, under the daemon's per-client cap of 64), log on `--sessions` sessions
(default 10 000) with no lease (`lease_s = 0`), and keep them. Figures:

- logons per second (all sessions / wall time from the first logon sent to the last answered),
  the logon latency under that load, and the latency of a ping every 5 ms meanwhile;
- the daemon's full garbage collections meanwhile (a sitecustomize on the daemon's
  PYTHONPATH logs gc.callbacks; the daemon's code is untouched; `--no-gc-log` turns it off);
- the daemon's VmRSS of the empty daemon after a warm-up, after the logons, and the memory
  per session beyond the empty daemon (target: under 20 KB);
- ping latency with the sessions in place (`--steady` seconds of back-to-back pings);
- `daemon.snapshot` of everything: time to the first part (the daemon builds every part in
  one step of its loop) and to the last, bytes across all parts (following the `next`
  cursors) and the number of parts, measured with a bare DEALER on the wire bytes, and the
  longest a ping from another process waited meanwhile (how long the loop was blocked);
- how long SIGTERM took to stop the daemon with all sessions live, and its exit code.

`--cards N` puts N more cards in the profile's vCard folder (a realistic address book).

    python bench/scale.py [--sessions 10000] [--procs 2] [--concurrency 32] [--cards 0]
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
from _daemon import BenchDaemon, handle_sigterm, interrupt_exit, machine, py_spy, summary_us

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
    except KeyboardInterrupt:
        pass
    finally:
        sock.close(linger=0)
        ctx.term()
    out.put(samples)


def gc_line(daemon: BenchDaemon, since: float, until: float) -> str:
    """The daemon's full (generation 2) collections in a time window, from its GC log."""
    if daemon.gc_log is None:
        return "not logged (--no-gc-log)"
    full = [ms for t, gen, ms, _ in daemon.gc_pauses(since) if gen == 2 and t <= until]
    if not full:
        return "no full collection"
    return f"{len(full)} full collections, {sum(full):.0f} ms in all, longest {max(full):.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
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
        "--no-gc-log", action="store_true", help="do not log the daemon's garbage collections"
    )
    parser.add_argument(
        "--cards", type=int, default=0, help="extra .vcf files in the profile's vCard folder"
    )
    parser.add_argument(
        "--hold",
        type=float,
        default=0.0,
        help="at the end, keep the daemon and its sessions this many seconds (to attach py-spy)",
    )
    parser.add_argument("--log-level", default=None, help="the daemon's log_level")
    parser.add_argument("--py-spy", metavar="OUT", help="profile the daemon during the logons")
    parser.add_argument("--keep", action="store_true", help="keep the daemon's temp dir")
    args = parser.parse_args()
    handle_sigterm()
    print(f"mapid scale benchmark — {time.strftime('%Y-%m-%d %H:%M:%S')} — {machine()}")
    print(
        f"  {args.sessions} sessions by {args.procs} processes x {args.concurrency} in flight, "
        f"lease_s = 0; vCard folder of {2 + args.cards} cards"
    )
    spawn = mp.get_context("spawn")
    procs: list[mp.process.BaseProcess] = []
    daemon = BenchDaemon(
        lease_s=0,
        log_level=args.log_level,
        gc_log=not args.no_gc_log,
        extra_cards=args.cards,
        keep=args.keep,
    )
    with interrupt_exit():
        try:
            daemon.start()
            request_ep, _ = daemon.endpoints()
            with daemon.client() as client:
                for _ in range(args.warmup):
                    client.session_logoff(client.session_logon("alpha", lease_s=0)["token"])
                for _ in range(500):
                    client.daemon_ping()
            time.sleep(1.0)
            rss0 = daemon.rss_kb()
            print(f"  empty daemon after {args.warmup} warm-up cycles: VmRSS {rss0 / 1024:.1f} MiB")

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
                logon_pings = pings_q.get(timeout=30)
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
            with daemon.client() as client:
                stats = client.daemon_stats()
            s = summary_us(lat)
            print(
                f"  logons: {len(lat)} in {wall:.2f} s = {len(lat) / wall:.0f} logons/s; "
                f"errors {errors or 'none'}; daemon CPU {cpu:.1f} s "
                f"({cpu / max(1, len(lat)) * 1e3:.2f} ms per logon)"
            )
            print(
                f"  logon latency under load (ms): p50 {s['p50'] / 1e3:.1f}  "
                f"p99 {s['p99'] / 1e3:.1f}  max {s['max'] / 1e3:.1f}"
            )
            lp = summary_us(logon_pings)
            print(
                f"  pings every 5 ms from another process during the logons (ms): "
                f"p50 {lp['p50'] / 1e3:.2f}  p99 {lp['p99'] / 1e3:.1f}  max {lp['max'] / 1e3:.1f}"
            )
            print(f"  daemon GC during the logons: {gc_line(daemon, t_logons, t_logons_end)}")
            print(
                f"  daemon.stats: sessions {stats['sessions']}, members {stats.get('members')}, "
                f"reply cache {stats.get('reply_cache')} entries"
            )
            per = (rss1 - rss0) * 1024 / max(1, stats["sessions"])
            verdict = "OK" if per < 20_000 else "MISSED"
            print(
                f"  VmRSS {rss0 / 1024:.1f} MiB -> {rss1 / 1024:.1f} MiB: "
                f"{per / 1000:.1f} KB per session beyond the empty daemon "
                f"(target < 20 KB) — {verdict}"
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
                p = summary_us(t)
                print(
                    f"  {args.steady:g} s of pings with {stats['sessions']} sessions (µs): "
                    f"p50 {p['p50']:.0f}  p99 {p['p99']:.0f}  max {p['max']:.0f}; "
                    f"{sum(1 for x in t if x > 2e6)} of {len(t)} over 2 ms; "
                    f"GC: {gc_line(daemon, t_steady, time.time())}"
                )
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
                stalls = stalls_q.get(timeout=30)
                t_snap_end = time.time()
                snap2 = snapshot_all(dealer)
            finally:
                dealer.close()
            total = sum(snap["sizes"])
            print(
                f"  daemon.snapshot: {snap['sessions']} sessions, {snap['rows']} rows, "
                f"{len(snap['sizes'])} parts, {total:,} bytes "
                f"({total / max(1, snap['sessions']):.0f} B per session); parts "
                f"{', '.join(f'{n / 1048576:.2f}' for n in snap['sizes'])} MiB"
            )
            print(
                f"    first part {snap['first_s'] * 1e3:.0f} ms, all parts "
                f"{snap['total_s'] * 1e3:.0f} ms (again: {snap2['first_s'] * 1e3:.0f} / "
                f"{snap2['total_s'] * 1e3:.0f} ms)"
            )
            print(
                f"    pings from another process meanwhile: longest "
                f"{max(stalls, default=0) / 1e6:.0f} ms, "
                f"{sum(1 for x in stalls if x > 10e6)} over 10 ms; "
                f"GC: {gc_line(daemon, t_snap, t_snap_end)}"
            )
            if args.settle > 0:
                time.sleep(args.settle)
                with daemon.client() as client:
                    client.daemon_ping()  # the reply cache purges on a request
                    stats = client.daemon_stats()
                rss2 = daemon.rss_kb()
                per2 = (rss2 - rss0) * 1024 / max(1, stats["sessions"])
                print(
                    f"  after {args.settle:g} s more: VmRSS {rss2 / 1024:.1f} MiB, reply cache "
                    f"{stats.get('reply_cache')} entries, {per2 / 1000:.1f} KB per session"
                )
            if args.hold > 0:
                print(
                    f"  holding the daemon (pid {daemon.pid}, MAPID_RUNTIME_DIR="
                    f"{daemon.runtime}) for {args.hold:g} s",
                    flush=True,
                )
                time.sleep(args.hold)
        finally:
            for child in procs:
                child.join(2)
                if child.is_alive():
                    child.terminate()
                    child.join(5)
            daemon.close()
        stopped = (
            "did not stop (killed)"
            if daemon.exit_code is None
            else (f"exit code {daemon.exit_code}")
        )
        print(
            f"  SIGTERM with all sessions live: {stopped} after "
            f"{daemon.stop_seconds or 0:.2f} s (DESIGN.md 10: code 0 within 5 s)"
        )


if __name__ == "__main__":
    main()
