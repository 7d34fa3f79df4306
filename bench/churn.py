"""The daemon's memory under connection churn, and whether it gives memory back (issue 19).

An attack run found the daemon growing 140 -> 193 -> 225 MB over waves of 3 000 short DEALER
connections (connect, one `daemon.hello`, close), 124 -> 661 MB over waves of 10 000, and
59 -> 116 MB over a burst of 100 000 pings on one socket, none of it coming back. This
reproduces both loads against a real daemon and prints its resident set (VmRSS):

- before: the daemon after start and one warm-up wave of 100 connections;
- after each wave of `--connections` short connections (each its own DEALER with a fresh
  identity, one hello, wait for the reply, close), and after a burst of `--pings` pings with
  distinct ids on one socket;
- idle: after `--idle` seconds without requests (longer than the 60 s reply cache).

The baseline in the same run is a raw pyzmq ROUTER echo doing the same waves, so the figure
that matters is the daemon's growth next to what libzmq itself keeps. The verdict: idle RSS
within 20 % of `before`.

    python bench/churn.py [--waves 3] [--connections 3000] [--pings 100000] [--idle 70]
                          [--tracemalloc FILE]

`--tracemalloc FILE` runs the daemon under tracemalloc (a sitecustomize; daemon code is
untouched) and writes the 25 biggest allocation sites to FILE after the burst and when idle.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import signal
import sys
import time
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path

import zmq
from _daemon import BenchDaemon, handle_sigterm, interrupt_exit, machine, verdict

from mapid.wire import envelope
from mapid.wire.codec import pack

_TRACE_PROBE = """\
# Written by bench/churn.py: tracemalloc in the daemon, top sites on SIGUSR2.
import os, signal, tracemalloc
tracemalloc.start(4)
def _dump(signum, frame):
    top = tracemalloc.take_snapshot().statistics("traceback")[:25]
    with open(os.environ["MAPID_BENCH_TRACE"], "a") as out:
        out.write("--- %d KiB traced\\n" % (tracemalloc.get_traced_memory()[0] // 1024))
        for stat in top:
            out.write("%8d KiB %7d blocks\\n" % (stat.size // 1024, stat.count))
            for line in stat.traceback.format()[-6:]:
                out.write("    " + line + "\\n")
signal.signal(signal.SIGUSR2, _dump)
"""


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _echo(endpoint: str, ready: MpEvent) -> None:
    """A raw ROUTER that answers every request with a hello-sized reply."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(endpoint)
    ready.set()
    reply = b"x" * 400
    while True:
        frames = sock.recv_multipart()
        if frames[-1] == b"STOP":
            break
        sock.send_multipart([frames[0], b"", reply])
    sock.close()
    ctx.term()


def wave(ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, connections: int, tag: str) -> None:
    """`connections` short DEALER connections, one hello each, one after the other."""
    data = pack(envelope.request(f"{tag}-hello", "daemon.hello"))
    for _ in range(connections):
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        sock.send_multipart([b"", data])
        if not sock.poll(10_000):
            raise RuntimeError("no reply within 10 s")
        sock.recv_multipart()
        sock.close()


def burst(ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, pings: int) -> None:
    """`pings` pings with distinct ids on one socket, 64 in flight."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    sent = received = 0
    while received < pings:
        while sent < pings and sent - received < 64:
            sock.send_multipart([b"", pack(envelope.request(f"p{sent:09d}", "daemon.ping"))])
            sent += 1
        if not sock.poll(10_000):
            raise RuntimeError("no reply within 10 s")
        sock.recv_multipart()
        received += 1
    sock.close()


def run_load(pid: int, endpoint: str, args: argparse.Namespace, label: str) -> dict[str, int]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    figures: dict[str, int] = {}
    wave(ctx, endpoint, 100, f"{label}-warm")
    time.sleep(1.0)
    figures["before"] = _rss_kb(pid)
    for number in range(1, args.waves + 1):
        wave(ctx, endpoint, args.connections, f"{label}-w{number}")
        figures[f"wave {number}"] = _rss_kb(pid)
    if args.pings:
        burst(ctx, endpoint, args.pings)
        figures["ping burst"] = _rss_kb(pid)
    if args.tracemalloc and label == "mapid":
        os.kill(pid, signal.SIGUSR2)
    time.sleep(args.idle)
    figures["idle"] = _rss_kb(pid)
    if args.tracemalloc and label == "mapid":
        os.kill(pid, signal.SIGUSR2)
        time.sleep(2.0)
    ctx.term()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--waves", type=int, default=3)
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--pings", type=int, default=100_000)
    parser.add_argument("--idle", type=float, default=70.0, help="seconds idle at the end")
    parser.add_argument("--tracemalloc", metavar="FILE", help="top allocation sites to FILE")
    args = parser.parse_args()
    handle_sigterm()
    print(f"# bench/churn.py on {machine()}")
    print(
        f"# {args.waves} waves of {args.connections} connections, a burst of {args.pings}"
        f" pings, then {args.idle:g} s idle; RSS in MiB"
    )
    results: dict[str, dict[str, int]] = {}
    with interrupt_exit():
        endpoint = f"ipc:///tmp/mapid-churn-echo-{os.getpid()}.sock"
        ready = mp.Event()
        echo = mp.Process(target=_echo, args=(endpoint, ready), daemon=True)
        echo.start()
        ready.wait(10)
        try:
            assert echo.pid is not None
            results["raw pyzmq echo"] = run_load(echo.pid, endpoint, args, "echo")
        finally:
            stop = zmq.Context.instance().socket(zmq.DEALER)
            stop.connect(endpoint)
            stop.send_multipart([b"", b"STOP"])
            echo.join(5)
            stop.close(0)
        daemon = BenchDaemon()
        if args.tracemalloc:
            probe = daemon.base / "traceprobe"
            probe.mkdir()
            (probe / "sitecustomize.py").write_text(_TRACE_PROBE)
            daemon.env["MAPID_BENCH_TRACE"] = os.path.abspath(args.tracemalloc)
            daemon.env["PYTHONPATH"] = str(probe)
        with daemon:
            request, _events = daemon.endpoints()
            results["mapid daemon"] = run_load(daemon.pid, request, args, "mapid")
    columns = list(results["mapid daemon"])
    print(f"{'':16}" + "".join(f"{c:>12}" for c in columns))
    for name, figures in results.items():
        print(f"{name:16}" + "".join(f"{figures[c] / 1024:12.1f}" for c in columns))
    daemon_figures = results["mapid daemon"]
    ratio = daemon_figures["idle"] / daemon_figures["before"]
    peak = max(daemon_figures.values()) / daemon_figures["before"]
    ok = ratio <= 1.2
    print(f"daemon idle / before: {ratio:.2f} (peak {peak:.2f}); target <= 1.20: {verdict(ok)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
