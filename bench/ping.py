"""Request round trips against a real daemon, beside a raw pyzmq echo server.

Measured, one request at a time over ipc:// with a blocking DEALER (p50/p99 in µs):

- `echo (blocking)`: a raw pyzmq ROUTER in its own process that answers every request with a
  pre-built reply of the daemon's ping-reply size: the floor for libzmq + ipc + Python;
- `echo (zmq.asyncio)`: the same echo on a zmq.asyncio loop, as the daemon runs its socket;
- `daemon.ping (raw DEALER)`: pre-packed ping payloads (distinct ids, so the reply cache
  never answers them) sent by a bare pyzmq DEALER: the daemon without client overhead;
- `daemon.ping (mapid.Client)`: the same through the client library;
- `logon+status_table+logoff`: a full session cycle through mapid.Client (and each op);
  the target is p50 1.5 ms or less (issue 18).

The pings are split over `--rounds` rounds in which the four variants take turns, so a
noisy neighbour on the machine hits them alike. It prints the ratio daemon.ping p50 /
echo p50; the target is 3x or less. Each target gets PASS or MISS beside it.

    python bench/ping.py [--pings 5000] [--rounds 5] [--cycles 300] [--py-spy out.txt]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path

import zmq
import zmq.asyncio
from _daemon import (
    BenchDaemon,
    handle_sigterm,
    interrupt_exit,
    machine,
    py_spy,
    summary_us,
    verdict,
)

from mapid.client import Client
from mapid.wire import envelope
from mapid.wire.codec import pack, unpack

CYCLE_TARGET_MS = 1.5
"""logon + status_table + logoff, p50 (issue 18)."""

# -- the echo server (its own process) ----------------------------------------------------


def _echo_blocking(endpoint: str, reply: bytes, ready: MpEvent) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(endpoint)
    ready.set()
    try:
        while True:
            frames = sock.recv_multipart()
            if frames[-1] == b"STOP":
                break
            sock.send_multipart([frames[0], b"", reply])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close(linger=0)
        ctx.term()


async def _echo_async_main(endpoint: str, reply: bytes, ready: MpEvent) -> None:
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(endpoint)
    ready.set()
    try:
        while True:
            frames = await sock.recv_multipart()
            if frames[-1] == b"STOP":
                break
            # As the daemon sends: NOBLOCK, not awaited.
            sock.send_multipart([frames[0], b"", reply], flags=zmq.NOBLOCK)
    finally:
        sock.close(linger=0)
        ctx.term()


def _echo_async(endpoint: str, reply: bytes, ready: MpEvent) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_echo_async_main(endpoint, reply, ready))


# -- measuring ------------------------------------------------------------------------------


class RawDealer:
    """A bare blocking DEALER that sends pre-packed payloads and times the round trips."""

    def __init__(self, endpoint: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVTIMEO, 10_000)
        self.sock.connect(endpoint)

    def round_trips(self, payloads: list[bytes]) -> list[int]:
        samples: list[int] = []
        clock = time.perf_counter_ns
        sock = self.sock
        for data in payloads:
            t0 = clock()
            sock.send_multipart([b"", data])
            sock.recv_multipart()
            samples.append(clock() - t0)
        return samples

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()


def timed(fn: Callable[[], object], n: int) -> list[int]:
    clock = time.perf_counter_ns
    samples = []
    for _ in range(n):
        t0 = clock()
        fn()
        samples.append(clock() - t0)
    return samples


def ping_payloads(n: int, tag: str) -> list[bytes]:
    """n ping requests with distinct ids of one width (same size each)."""
    return [pack(envelope.request(f"{tag}{i:09d}", "daemon.ping")) for i in range(n)]


def row(name: str, samples: list[int]) -> dict[str, float]:
    s = summary_us(samples)
    print(
        f"  {name:<34} n={int(s['n']):>6}  p50={s['p50']:>9.1f}  p99={s['p99']:>9.1f}  "
        f"mean={s['mean']:>9.1f}  max={s['max']:>10.1f}"
    )
    return s


class EchoServer:
    """An echo ROUTER in its own (spawned) process on an ipc:// endpoint in a temp dir."""

    def __init__(self, target: Callable[[str, bytes, MpEvent], None], reply: bytes) -> None:
        spawn = mp.get_context("spawn")
        self.tmp = Path(tempfile.mkdtemp(prefix="mapid-echo-", dir="/tmp"))
        self.endpoint = f"ipc://{self.tmp / 'echo.sock'}"
        ready = spawn.Event()
        self.proc = spawn.Process(target=target, args=(self.endpoint, reply, ready), daemon=True)
        self.proc.start()
        if not ready.wait(20):
            self.close()
            raise RuntimeError("echo server did not start")

    def close(self) -> None:
        if self.proc.is_alive():
            ctx = zmq.Context()
            stop = ctx.socket(zmq.DEALER)
            stop.setsockopt(zmq.LINGER, 100)
            stop.connect(self.endpoint)
            stop.send_multipart([b"", b"STOP"])
            stop.close()
            ctx.term()
            self.proc.join(3)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(3)
        shutil.rmtree(self.tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pings", type=int, default=5000, help="measured pings per variant")
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds the pings are split over (variants alternate)"
    )
    parser.add_argument("--cycles", type=int, default=300, help="measured logon cycles")
    parser.add_argument("--warmup", type=int, default=500, help="warm-up pings per variant")
    parser.add_argument("--warmup-cycles", type=int, default=20)
    parser.add_argument("--log-level", default=None, help="the daemon's log_level")
    parser.add_argument("--py-spy", metavar="OUT", help="profile the daemon during its pings")
    parser.add_argument("--keep", action="store_true", help="keep the daemon's temp dir")
    args = parser.parse_args()
    handle_sigterm()
    rounds = max(1, args.rounds)
    per_round = max(1, args.pings // rounds)
    print(f"mapid ping benchmark — {time.strftime('%Y-%m-%d %H:%M:%S')} — {machine()}")
    print(
        f"  {per_round * rounds} pings per variant in {rounds} rounds (variants take turns), "
        f"after {args.warmup} warm-up each; {args.cycles} cycles"
    )
    print("  latency in µs, one request in flight, blocking DEALER over ipc://")
    servers: list[EchoServer] = []
    dealers: list[RawDealer] = []
    client: Client | None = None
    with interrupt_exit(), BenchDaemon(log_level=args.log_level, keep=args.keep) as daemon:
        try:
            request_ep, _ = daemon.endpoints()
            # The size of the daemon's reply to a ping, for the echo servers to match.
            probe = RawDealer(request_ep)
            dealers.append(probe)
            probe.sock.send_multipart(
                [b"", pack(envelope.request("probe-000000000", "daemon.ping"))]
            )
            reply = probe.sock.recv_multipart()[1]
            decoded = unpack(reply)
            assert decoded.get("ok") is True and decoded["id"] == "probe-000000000", decoded
            echo_reply = b"x" * len(reply)  # the client times bytes, it does not decode them
            servers.append(EchoServer(_echo_blocking, echo_reply))
            servers.append(EchoServer(_echo_async, echo_reply))
            echo = RawDealer(servers[0].endpoint)
            echo_async = RawDealer(servers[1].endpoint)
            raw = RawDealer(request_ep)
            dealers += [echo, echo_async, raw]
            client = daemon.client()
            total = args.warmup + per_round * rounds
            daemon_payloads = iter(ping_payloads(total, "raw-"))
            echo_payloads = ping_payloads(args.warmup + per_round, "echo")
            print(
                f"  request {len(echo_payloads[0])} B, daemon reply {len(reply)} B, "
                f"echo reply {len(echo_reply)} B; daemon pid {daemon.pid}"
            )
            samples: dict[str, list[int]] = {
                "echo": [],
                "echo_async": [],
                "ping_raw": [],
                "ping_client": [],
            }
            echo.round_trips(echo_payloads[: args.warmup])
            echo_async.round_trips(echo_payloads[: args.warmup])
            raw.round_trips([next(daemon_payloads) for _ in range(args.warmup)])
            timed(client.daemon_ping, args.warmup)
            cpu_raw = 0.0
            with py_spy(daemon.pid, args.py_spy):
                for _ in range(rounds):
                    samples["echo"] += echo.round_trips(echo_payloads[:per_round])
                    samples["echo_async"] += echo_async.round_trips(echo_payloads[:per_round])
                    batch = [next(daemon_payloads) for _ in range(per_round)]
                    cpu0 = daemon.cpu_seconds()
                    samples["ping_raw"] += raw.round_trips(batch)
                    cpu_raw += daemon.cpu_seconds() - cpu0
                    samples["ping_client"] += timed(client.daemon_ping, per_round)
            results = {
                "echo": row("echo (blocking ROUTER)", samples["echo"]),
                "echo_async": row("echo (zmq.asyncio ROUTER)", samples["echo_async"]),
                "ping_raw": row("daemon.ping (raw DEALER)", samples["ping_raw"]),
                "ping_client": row("daemon.ping (mapid.Client)", samples["ping_client"]),
            }
            print(
                f"  daemon CPU per raw ping: {cpu_raw / (per_round * rounds) * 1e6:.0f} µs "
                "(from /proc/<pid>/stat, 10 ms ticks)"
            )
        finally:
            if client is not None:
                client.close()
            for dealer in dealers:
                dealer.close()
            for server in servers:
                server.close()

        with daemon.client() as cycler:
            parts: dict[str, list[int]] = {"logon": [], "status_table": [], "logoff": []}
            totals: list[int] = []
            clock = time.perf_counter_ns
            pid = os.getpid()
            for i in range(args.warmup_cycles + args.cycles):
                t0 = clock()
                token = cycler.session_logon("alpha", client={"name": "bench.ping", "pid": pid})[
                    "token"
                ]
                t1 = clock()
                rows = cycler.session_status_table(token)["rows"]
                t2 = clock()
                cycler.session_logoff(token)
                t3 = clock()
                if len(rows) < 5:
                    raise RuntimeError(f"status table has {len(rows)} rows: {rows}")
                if i >= args.warmup_cycles:
                    totals.append(t3 - t0)
                    parts["logon"].append(t1 - t0)
                    parts["status_table"].append(t2 - t1)
                    parts["logoff"].append(t3 - t2)
        results["cycle"] = row("logon+status_table+logoff", totals)
        for name, part in parts.items():
            row(f"  {name}", part)
        cycle_ms = results["cycle"]["p50"] / 1e3
        print(
            f"  logon+status_table+logoff p50 {cycle_ms:.2f} ms "
            f"{verdict(cycle_ms <= CYCLE_TARGET_MS, f'p50 <= {CYCLE_TARGET_MS:g} ms')}"
        )

        echo50 = results["echo"]["p50"]
        print("ratios to the blocking echo p50 (target: daemon.ping within 3x):")
        for key, name in (
            ("echo_async", "echo (zmq.asyncio)"),
            ("ping_raw", "daemon.ping raw DEALER"),
            ("ping_client", "daemon.ping mapid.Client"),
        ):
            ratio = results[key]["p50"] / echo50
            mark = "" if key == "echo_async" else "  " + verdict(ratio <= 3, "<= 3x")
            print(f"  {name:<28} p50 ratio {ratio:5.2f}x{mark}")
    if daemon.exit_code != 0:
        print(f"daemon exit code {daemon.exit_code}:\n{daemon.log_tail()}", file=sys.stderr)


if __name__ == "__main__":
    main()
