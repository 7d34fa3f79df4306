"""What serving /metrics costs the daemon: ping latency with a Prometheus-style scraper
hitting /metrics every 100 ms, against no scraper, in the same run (issue 16).

One daemon with `metrics_listen` on a free loopback port, a logged-on session (so the
provider gauges have series) and some traffic of several ops (so the request counters and
histogram do). Then `--rounds` rounds of three variants, in an order that rotates through
all six, so drift and noisy neighbours hit them alike:

- no scraper;
- a scraper on the daemon's /metrics;
- the control: the same scraper on a stand-in, another process serving a /metrics of the
  same size from the same code (system/metrics.py). The machine does the same scrape work;
  only the daemon is spared it. On a small machine a third busy process moves the ping's
  latency by itself; the control shows how much of the difference is that.

Pings are pre-packed `daemon.ping` requests on a bare blocking DEALER (distinct ids: the
reply cache never answers them) and, after them, as many through mapid.Client. The scrapers
run in processes of their own (a thread in this one would take the GIL from the pinging
thread and charge the client's slowdown to the daemon). Each GETs /metrics every
`--interval` seconds, as a Prometheus server does, and parses nothing. The verdict: p50 of
the raw pings with the daemon scraped at most 5 % above p50 without.

It also times `Metrics.request()` in this process: what counting one request costs,
whether anything scrapes or not.

    python bench/metrics_cost.py [--pings 3000] [--rounds 12] [--interval 0.1] [--pin]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import socket
import statistics
import sys
import time
import urllib.request
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as MpEvent
from typing import Any

import zmq
from _daemon import BenchDaemon, handle_sigterm, interrupt_exit, machine, pin, summary_us

from mapid.client import Client
from mapid.errors import MapidError
from mapid.wire import envelope
from mapid.wire.codec import pack

TARGET = 1.05
"""p50 with the scraper / p50 without: at most 5 % slower."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- the scraper (its own process) ---------------------------------------------------------


def _scrape_loop(url: str, interval: float, on: MpEvent, done: MpEvent, out: Queue[Any]) -> None:
    """While `on` is set, GET `url` every `interval` s; at `done`, report (ms, bytes) each."""
    taken: list[tuple[float, int]] = []
    while not done.is_set():
        if not on.wait(0.05):
            continue
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=10) as response:
            size = len(response.read())
        taken.append(((time.perf_counter() - started) * 1e3, size))
        pause = interval - (time.perf_counter() - started)
        if pause > 0:
            done.wait(pause)
    out.put(taken)


class Scraper:
    def __init__(self, url: str, interval: float) -> None:
        spawn = mp.get_context("spawn")
        self.on = spawn.Event()
        self.done = spawn.Event()
        self.out: Queue[Any] = spawn.Queue()
        self.proc = spawn.Process(
            target=_scrape_loop, args=(url, interval, self.on, self.done, self.out), daemon=True
        )
        self.proc.start()

    def finish(self) -> list[tuple[float, int]]:
        self.on.clear()
        self.done.set()
        taken: list[tuple[float, int]] = self.out.get(timeout=30)
        self.proc.join(5)
        return taken

    def close(self) -> None:
        self.done.set()
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(3)


# -- the pings -----------------------------------------------------------------------------


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


class Payloads:
    """Ping requests with distinct ids of one width, made ahead of the timing."""

    def __init__(self) -> None:
        self.n = 0

    def take(self, count: int) -> list[bytes]:
        start, self.n = self.n, self.n + count
        return [pack(envelope.request(f"p{i:010d}", "daemon.ping")) for i in range(start, self.n)]


def client_pings(client: Client, count: int) -> list[int]:
    clock = time.perf_counter_ns
    samples = []
    for _ in range(count):
        t0 = clock()
        client.daemon_ping()
        samples.append(clock() - t0)
    return samples


def traffic(client: Client) -> None:
    """A session and a few ops, so the exposition has the series a daemon in use has."""
    token = client.session_logon("alpha", ["MAPI_NEW_SESSION"])["token"]
    for _ in range(20):
        client.session_status_table(token)
        client.session_msg_stores_table(token)
        client.daemon_hello()
    for _ in range(5):
        with contextlib.suppress(MapidError):
            client.call("no.such.op", {})


def counting_cost(n: int = 200_000) -> tuple[float, float]:
    """ns per Metrics.request() (counter + histogram) and per bare perf_counter() pair."""
    from mapid.daemon.system.metrics import Metrics

    metrics = Metrics()
    metrics.request("daemon.ping", "ok", 0.0001)
    clock = time.perf_counter
    t0 = clock()
    for _ in range(n):
        metrics.request("daemon.ping", "ok", 0.0001)
    per_call = (clock() - t0) / n * 1e9
    t0 = clock()
    for _ in range(n):
        clock() - clock()
    per_clock = (clock() - t0) / n * 1e9
    return per_call, per_clock


def _stand_in(port: int, ops: list[str], ready: MpEvent) -> None:
    """Another process serving a /metrics of the daemon's size from the same code (a
    `Metrics` with the daemon's ops counted), for the control variant."""
    from mapid.daemon.system.metrics import Metrics

    metrics = Metrics()
    for op in ops:
        for _ in range(10):
            metrics.request(op, "ok", 0.0002)
    metrics.serve(("127.0.0.1", port))
    ready.set()
    while True:
        time.sleep(3600)


class StandIn:
    def __init__(self, ops: list[str]) -> None:
        spawn = mp.get_context("spawn")
        self.port = free_port()
        ready = spawn.Event()
        self.proc = spawn.Process(target=_stand_in, args=(self.port, ops, ready), daemon=True)
        self.proc.start()
        if not ready.wait(20):
            raise RuntimeError("the stand-in /metrics did not start")

    def close(self) -> None:
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(3)


def row(name: str, samples: list[int]) -> dict[str, float]:
    s = summary_us(samples)
    print(
        f"  {name:<36} n={int(s['n']):>6}  p50={s['p50']:>8.1f}  p99={s['p99']:>8.1f}  "
        f"mean={s['mean']:>8.1f}  max={s['max']:>9.1f}"
    )
    return s


NONE, DAEMON, STAND_IN = "no scraper", "scraper on the daemon", "scraper on a stand-in"
VARIANTS = (NONE, DAEMON, STAND_IN)
ORDERS = [
    (NONE, DAEMON, STAND_IN),
    (STAND_IN, DAEMON, NONE),
    (DAEMON, NONE, STAND_IN),
    (STAND_IN, NONE, DAEMON),
    (NONE, STAND_IN, DAEMON),
    (DAEMON, STAND_IN, NONE),
]
"""Every order of the three, one a round in turn: each variant comes first, second and
third equally often."""


def ops_of(body: bytes) -> list[str]:
    found = []
    for line in body.decode().splitlines():
        if line.startswith("mapid_requests_total{"):
            op = line.split('op="', 1)[1].split('"', 1)[0]
            if op not in found:
                found.append(op)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pings", type=int, default=3000, help="pings per variant per round")
    parser.add_argument("--rounds", type=int, default=12, help="rounds (the variants rotate)")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between scrapes")
    parser.add_argument("--warmup", type=int, default=1000, help="warm-up pings")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="pin the daemon to the first CPU, this process and the scrapers to the second "
        "(steadier p50 on an idle machine; on a busy one, neighbours on those CPUs show)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the daemon's temp dir")
    args = parser.parse_args()
    handle_sigterm()
    cpus = sorted(os.sched_getaffinity(0))
    pinned = args.pin and len(cpus) >= 2
    if pinned:  # before any thread or child: the daemon, the scrapers and zmq's threads
        os.sched_setaffinity(0, {cpus[1]})
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    every = f"{args.interval * 1000:.0f} ms"
    print(f"mapid /metrics cost — {time.strftime('%Y-%m-%d %H:%M:%S')} — {machine()}")
    print(
        f"  {args.rounds} rounds x {args.pings} pings per variant (the order rotates), a "
        f"scraper every {every} in its own process; latency in µs, one request in flight"
    )
    scrapers: dict[str, Scraper] = {}
    stand_in: StandIn | None = None
    dealer: RawDealer | None = None
    client: Client | None = None
    extra = f'metrics_listen = "127.0.0.1:{port}"'
    with interrupt_exit(), BenchDaemon(extra_config=extra, keep=args.keep) as daemon:
        try:
            if pinned:
                pin(daemon.pid, {cpus[0]})
                print(
                    f"  pinned: the daemon to CPU {sorted(os.sched_getaffinity(daemon.pid))}, "
                    f"this process and the scrapers to CPU {sorted(os.sched_getaffinity(0))}"
                )
            request_ep, _ = daemon.endpoints()
            client = daemon.client()
            traffic(client)
            dealer = RawDealer(request_ep)
            payloads = Payloads()
            dealer.round_trips(payloads.take(args.warmup))
            client_pings(client, args.warmup // 2)
            with urllib.request.urlopen(url, timeout=10) as response:
                body = response.read()
            lines = [x for x in body.decode().splitlines() if x and not x.startswith("#")]
            stand_in = StandIn(ops_of(body))
            with urllib.request.urlopen(
                f"http://127.0.0.1:{stand_in.port}/metrics", timeout=10
            ) as response:
                other = response.read()
            print(
                f"  one scrape: {len(body)} bytes, {len(lines)} samples (the stand-in's: "
                f"{len(other)} bytes); daemon pid {daemon.pid}"
            )
            scrapers[DAEMON] = Scraper(url, args.interval)
            scrapers[STAND_IN] = Scraper(f"http://127.0.0.1:{stand_in.port}/metrics", args.interval)
            raw: dict[str, list[int]] = {v: [] for v in VARIANTS}
            via_client: dict[str, list[int]] = {v: [] for v in VARIANTS}
            round_p50: dict[str, list[float]] = {v: [] for v in VARIANTS}
            cpu: dict[str, float] = dict.fromkeys(VARIANTS, 0.0)
            for n in range(args.rounds):
                for variant in ORDERS[n % len(ORDERS)]:
                    scraper = scrapers.get(variant)
                    if scraper is not None:
                        scraper.on.set()
                        time.sleep(args.interval)  # the first scrape is under way
                    batch = payloads.take(args.pings)
                    cpu0 = daemon.cpu_seconds()
                    samples = dealer.round_trips(batch)
                    cpu[variant] += daemon.cpu_seconds() - cpu0
                    raw[variant] += samples
                    round_p50[variant].append(statistics.median(samples) / 1000)
                    via_client[variant] += client_pings(client, args.pings)
                    if scraper is not None:
                        scraper.on.clear()
            taken = scrapers[DAEMON].finish()
            scrapers[STAND_IN].finish()
            print("daemon.ping, raw DEALER:")
            p50 = {v: row(v, raw[v])["p50"] for v in VARIANTS}
            print("daemon.ping, mapid.Client:")
            c_p50 = {v: row(v, via_client[v])["p50"] for v in VARIANTS}
            for variant in (DAEMON, STAND_IN):
                ratios = [a / b for a, b in zip(round_p50[variant], round_p50[NONE], strict=True)]
                print(
                    f"  per-round p50 ratio, {variant} / none (raw): "
                    + " ".join(f"{r:.2f}" for r in ratios)
                    + f"; median {statistics.median(ratios):.3f}"
                )
            n = args.rounds * args.pings
            print(
                "  daemon CPU per raw ping (10 ms ticks): "
                + ", ".join(f"{v} {cpu[v] / n * 1e6:.0f} µs" for v in VARIANTS)
            )
            if taken:
                ms = sorted(t for t, _ in taken)
                print(
                    f"  scrapes of the daemon: {len(taken)}, {taken[-1][1]} bytes each at the "
                    f"end; time to the last byte p50 {statistics.median(ms):.2f} ms, "
                    f"max {ms[-1]:.2f} ms"
                )
            per_call, per_clock = counting_cost()
            print(
                f"  counting one request in-process (Metrics.request: counter + histogram): "
                f"{per_call:.0f} ns; two perf_counter() calls: {per_clock:.0f} ns"
            )
            ratio = p50[DAEMON] / p50[NONE]
            print(
                f"  p50 ratio, raw DEALER: daemon scraped / none {ratio:.3f}; stand-in scraped "
                f"/ none {p50[STAND_IN] / p50[NONE]:.3f} (the machine's share); daemon "
                f"scraped / stand-in scraped {p50[DAEMON] / p50[STAND_IN]:.3f} (the daemon's)"
            )
            print(
                f"  p50 ratio, mapid.Client: daemon scraped / none "
                f"{c_p50[DAEMON] / c_p50[NONE]:.3f}; stand-in / none "
                f"{c_p50[STAND_IN] / c_p50[NONE]:.3f}"
            )
            verdict = "PASS" if ratio <= TARGET else "MISS"
            print(
                f"  verdict: ping p50 with a scraper every {every} / without = {ratio:.3f} "
                f"(target <= {TARGET:.2f}): {verdict}"
            )
        finally:
            for scraper in scrapers.values():
                scraper.close()
            if stand_in is not None:
                stand_in.close()
            if dealer is not None:
                dealer.close()
            if client is not None:
                client.close()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
