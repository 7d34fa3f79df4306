"""1 000 messages through the spooler to aiosmtpd, beside plain smtplib to the same server.

An aiosmtpd server runs on 127.0.0.1 in its own process (so it does not share this
process's GIL), with a Sink-like handler that only counts: messages, duplicates (by
Subject, each unique) and the time of the last one (CLOCK_MONOTONIC, the same clock here).

- mapid: the real daemon, profile `alpha` (vCard with identity, Maildir) plus an `smtp`
  service pointing at that server. One client logs on, opens the default store with
  MDB_WRITE, and submits `--messages` messages (default 1 000) from the Outbox, each with
  PR_SUBJECT, PR_BODY and one To. Each client of `--clients` is measured in every round:
  - `sync`: the sync Client, each request sent when the one before has its reply, with
    MAPI's five requests a message: folder.create_message, object.set_props,
    message.modify_recipients, message.submit, object.release;
  - `sync-compact`: the same client with the compact requests (capabilities
    create_message.props and submit.release): folder.create_message with the props and
    recipients, then message.submit with release. Two round trips a message, not five;
  - `async-4`: four senders on one AsyncClient, each with the five requests, so four
    messages are in flight (the daemon still runs the session's requests one at a time).
  Timed from the first request to the server's last delivery (end to end), and also until
  Sent Items holds them all.
- smtplib: the same messages (same subjects, recipients, bodies), each built with
  email.message.EmailMessage and sent with send_message over one connection, as a good
  client does; timed from connect to the server's last delivery. smtplib and mapid take
  turns (`--rounds`, default 3, smtplib first and last); each mapid run is compared with
  the faster of the smtplib runs either side of it, and the median ratio is the verdict:
  on a shared 2-core VM a single run moves by 20% from one minute to the next.

Printed: messages/s for both, and the ratio mapid / smtplib for each client (target: at
least 0.7).

    python bench/spool.py [--messages 1000] [--rounds 3] [--clients sync,sync-compact,async-4]
                          [--dir /tmp] [--keep] [--py-spy out.svg]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import smtplib
import socket
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

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

from mapid.client import AsyncClient, Client

SENDER = "Ada Lovelace <ada@example.org>"
RECIPIENTS = [
    ("Grace Hopper", "grace@example.org"),
    ("Alan Turing", "alan@example.net"),
    ("Edsger Dijkstra", "edsger@example.com"),
]
BODY = (
    "Hello,\n\nthe figures for this week are in the shared folder.\n"
    "Let me know if anything looks wrong.\n\nBest regards,\nAda\n"
)


# --- the SMTP server, in its own process ------------------------------------------------


@dataclass
class Counters:
    """Shared with the server process."""

    count: Any  # multiprocessing.Value("q")
    duplicates: Any  # multiprocessing.Value("q")
    last: Any  # multiprocessing.Value("d"): time.monotonic() of the last message


def _serve(port: int, counters: Counters, ready: Any, stop: Any) -> None:
    from aiosmtpd.controller import Controller

    seen: set[bytes] = set()

    class CountingSink:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            content: bytes = b"\n" + (envelope.original_content or b"")
            start = content.find(b"\nSubject:")  # the header may be the first line
            subject = content[start : content.find(b"\n", start + 1)] if start >= 0 else b""
            with counters.count.get_lock():
                if subject in seen:
                    counters.duplicates.value += 1
                seen.add(subject)
                counters.count.value += 1
                counters.last.value = time.monotonic()
            return "250 2.0.0 OK"

    controller = Controller(CountingSink(), hostname="127.0.0.1", port=port)
    controller.start()
    ready.set()
    stop.wait()
    controller.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class SinkServer:
    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.port = free_port()
        self.counters = Counters(ctx.Value("q", 0), ctx.Value("q", 0), ctx.Value("d", 0.0))
        ready = ctx.Event()
        self._stop = ctx.Event()
        self.proc = ctx.Process(
            target=_serve, args=(self.port, self.counters, ready, self._stop), daemon=True
        )
        self.proc.start()
        if not ready.wait(20):
            raise RuntimeError("the aiosmtpd server did not start")

    def reset(self) -> None:
        with self.counters.count.get_lock():
            self.counters.count.value = 0
            self.counters.last.value = 0.0

    @property
    def count(self) -> int:
        return int(self.counters.count.value)

    def wait_for(self, count: int, timeout: float) -> float | None:
        """The monotonic time of the `count`-th message, or None after `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.counters.count.get_lock():
                if self.counters.count.value >= count:
                    return float(self.counters.last.value)
            time.sleep(0.002)
        return None

    def close(self) -> None:
        self._stop.set()
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()


# --- the two senders -----------------------------------------------------------------------


def subject(kind: str, i: int) -> str:
    return f"Weekly figures {i} [{kind}]"


def run_smtplib(server: SinkServer, n: int, kind: str) -> float:
    """Messages per second: connect, build and send_message each, wait for the last."""
    server.reset()
    started = time.monotonic()
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as smtp:
        for i in range(n):
            name, addr = RECIPIENTS[i % len(RECIPIENTS)]
            msg = EmailMessage()
            msg["From"] = SENDER
            msg["To"] = f"{name} <{addr}>"
            msg["Subject"] = subject(kind, i)
            msg["Date"] = formatdate(localtime=True)
            msg["Message-ID"] = make_msgid(domain="example.org")
            msg.set_content(BODY)
            smtp.send_message(msg)
    last = server.wait_for(n, 30)
    if last is None:
        raise RuntimeError(f"smtplib: only {server.count} of {n} messages arrived")
    return n / (last - started)


@dataclass
class MapidRun:
    submitted_s: float
    delivered_s: float
    sent_items_s: float | None
    sent_items: int
    daemon_cpu_s: float
    client_cpu_s: float
    op_ms: dict[str, list[float]]


def sent_items_count(client: Client, token: bytes, sent: int) -> int:
    page = client.container_contents_table(token, sent, {"columns": ["PR_ENTRYID"], "limit": 1})
    return int(page["total"])


MAPI_OPS = (
    "folder.create_message",
    "object.set_props",
    "message.modify_recipients",
    "message.submit",
    "object.release",
)
COMPACT_OPS = ("folder.create_message", "message.submit")
DEFAULT_CLIENTS = "sync,sync-compact,async-4"
"""With capabilities create_message.props and submit.release: props and recipients come
with the create, and the submit releases the handle."""


@dataclass(frozen=True)
class ClientKind:
    """How the bench's client submits: how many messages it keeps in flight (1: the sync
    Client, one request at a time; more: that many senders on one AsyncClient) and whether
    it uses the compact requests (2 a message) or MAPI's five."""

    inflight: int
    compact: bool

    @property
    def ops(self) -> tuple[str, ...]:
        return COMPACT_OPS if self.compact else MAPI_OPS

    @property
    def name(self) -> str:
        base = "sync" if self.inflight == 1 else f"async-{self.inflight}"
        return f"{base}-compact" if self.compact else base

    def describe(self) -> str:
        kind = (
            "one request at a time" if self.inflight == 1 else f"{self.inflight} messages in flight"
        )
        return f"{kind}, {len(self.ops)} requests a message"


def parse_clients(text: str) -> list[ClientKind]:
    kinds = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        base, compact = part.removesuffix("-compact"), part.endswith("-compact")
        if base == "sync":
            kinds.append(ClientKind(1, compact))
            continue
        count = base.removeprefix("async-")
        if base.startswith("async-") and count.isdigit() and int(count) >= 2:
            kinds.append(ClientKind(int(count), compact))
            continue
        raise argparse.ArgumentTypeError(
            f"unknown client {part!r}: sync, async-N (N >= 2), each with -compact or not"
        )
    if not kinds:
        raise argparse.ArgumentTypeError("name at least one client")
    return kinds


def recipient_row(i: int) -> dict[str, Any]:
    name, addr = RECIPIENTS[i % len(RECIPIENTS)]
    return {
        "PR_DISPLAY_NAME": name,
        "PR_EMAIL_ADDRESS": addr,
        "PR_ADDRTYPE": "SMTP",
        "PR_RECIPIENT_TYPE": 1,
    }


def message_props(tag: str, i: int) -> dict[str, Any]:
    return {"PR_SUBJECT": subject(tag, i), "PR_BODY": BODY}


def record(op_ms: dict[str, list[float]], ops: tuple[str, ...], marks: list[float]) -> None:
    for op, a, b in zip(ops, marks[:-1], marks[1:], strict=True):
        op_ms[op].append((b - a) * 1e3)


def submit_one(
    client: Client,
    token: bytes,
    outbox: int,
    i: int,
    op_ms: dict[str, list[float]],
    tag: str,
    compact: bool,
) -> None:
    """One message, each request sent when the one before has its reply."""
    marks = [time.perf_counter()]
    if compact:
        created = client.folder_create_message(
            token, outbox, message_props(tag, i), [recipient_row(i)]
        )
        marks.append(time.perf_counter())
        client.message_submit(token, created["handle"], release=True)
        marks.append(time.perf_counter())
        record(op_ms, COMPACT_OPS, marks)
        return
    handle = client.folder_create_message(token, outbox)["handle"]
    marks.append(time.perf_counter())
    client.object_set_props(token, handle, message_props(tag, i))
    marks.append(time.perf_counter())
    client.message_modify_recipients(token, handle, [recipient_row(i)])
    marks.append(time.perf_counter())
    client.message_submit(token, handle)
    marks.append(time.perf_counter())
    client.object_release(token, handle)
    marks.append(time.perf_counter())
    record(op_ms, MAPI_OPS, marks)


async def submit_pipelined(
    daemon: BenchDaemon,
    token: bytes,
    outbox: int,
    n: int,
    kind: ClientKind,
    op_ms: dict[str, list[float]],
    tag: str,
) -> None:
    """The same requests from `kind.inflight` concurrent senders on one AsyncClient (the
    same session), so round trips overlap and the daemon's own cost shows."""
    numbers = iter(range(n))
    async with AsyncClient(daemon.runtime, timeout=60.0) as client:

        async def sender() -> None:
            for i in numbers:
                marks = [time.perf_counter()]
                if kind.compact:
                    created = await client.folder_create_message(
                        token, outbox, message_props(tag, i), [recipient_row(i)]
                    )
                    marks.append(time.perf_counter())
                    await client.message_submit(token, created["handle"], release=True)
                    marks.append(time.perf_counter())
                    record(op_ms, COMPACT_OPS, marks)
                    continue
                handle = (await client.folder_create_message(token, outbox))["handle"]
                marks.append(time.perf_counter())
                await client.object_set_props(token, handle, message_props(tag, i))
                marks.append(time.perf_counter())
                await client.message_modify_recipients(token, handle, [recipient_row(i)])
                marks.append(time.perf_counter())
                await client.message_submit(token, handle)
                marks.append(time.perf_counter())
                await client.object_release(token, handle)
                marks.append(time.perf_counter())
                record(op_ms, MAPI_OPS, marks)

        await asyncio.gather(*(sender() for _ in range(kind.inflight)))


def run_mapid(
    daemon: BenchDaemon,
    server: SinkServer,
    n: int,
    spy: str | None,
    kind: ClientKind,
    tag: str = "mapid",
) -> MapidRun:
    server.reset()
    op_ms: dict[str, list[float]] = {op: [] for op in kind.ops}
    with daemon.client(timeout=60.0) as client:
        token: bytes = client.session_logon(PROFILE, ["MAPI_NEW_SESSION"])["token"]
        stores = client.session_msg_stores_table(token)["rows"]
        store_row = next((r for r in stores if r.get("PR_DEFAULT_STORE")), stores[0])
        store = client.session_open_msg_store(token, store_row["PR_ENTRYID"], ["MDB_WRITE"])
        props = store["props"]
        outbox = client.session_open_entry(token, props["PR_IPM_OUTBOX_ENTRYID"], ["MAPI_MODIFY"])
        sent = client.session_open_entry(token, props["PR_IPM_SENTMAIL_ENTRYID"])
        sent_before = sent_items_count(client, token, sent["handle"])
        cpu0, own0 = daemon.cpu_seconds(), time.process_time()
        with py_spy(daemon.pid, spy):
            started = time.monotonic()
            if kind.inflight > 1:
                asyncio.run(submit_pipelined(daemon, token, outbox["handle"], n, kind, op_ms, tag))
            else:
                for i in range(n):
                    submit_one(client, token, outbox["handle"], i, op_ms, tag, kind.compact)
            submitted = time.monotonic()
            last = server.wait_for(n, 300)
            if last is None:
                raise RuntimeError(
                    f"mapid: only {server.count} of {n} messages arrived in 300 s "
                    f"(log: {daemon.log_path})"
                )
        cpu1, own1 = daemon.cpu_seconds(), time.process_time()
        deadline = time.monotonic() + 60
        in_sent = sent_items_count(client, token, sent["handle"]) - sent_before
        while in_sent < n and time.monotonic() < deadline:
            time.sleep(0.01)
            in_sent = sent_items_count(client, token, sent["handle"]) - sent_before
        sent_s = time.monotonic() - started if in_sent >= n else None
        client.session_logoff(token)
    return MapidRun(
        submitted - started, last - started, sent_s, in_sent, cpu1 - cpu0, own1 - own0, op_ms
    )


SMTP_SECTION = """
[services.outgoing]
service = "smtp"
host = "127.0.0.1"
port = {port}
security = "none"
timeout = 30
"""


def file_create_us(directory: Path, count: int = 200) -> float:
    """Median µs to create (and write 400 bytes to) a file in `directory`: a submit makes
    one, and ext4 can take from 20 µs to half a millisecond for it, depending on how many
    inodes near the directory were freed in the last 60 to 300 s (ext4's
    `recently_deleted` check, RECENTCY_MIN/RECENTCY_DIRTY in fs/ext4/ialloc.c)."""
    directory.mkdir(parents=True, exist_ok=True)
    times = []
    for i in range(count):
        path = directory / f"probe-{i}"
        t0 = time.perf_counter()
        with open(path, "wb") as handle:
            handle.write(b"x" * 400)
        times.append(time.perf_counter() - t0)
    # The files stay (they go with the temp dir): freeing 200 inodes now would slow every
    # create of the next minutes, the run's included.
    return percentile(sorted(times), 50) * 1e6


def print_run(n: int, run: MapidRun) -> None:
    print(
        f"  mapid: {n} submitted in {run.submitted_s:.2f} s "
        f"({n / run.submitted_s:.0f}/s), last delivered after {run.delivered_s:.2f} s, "
        + (
            f"all in Sent Items after {run.sent_items_s:.2f} s"
            if run.sent_items_s is not None
            else f"only {run.sent_items} in Sent Items after 60 s more"
        )
    )
    print(
        f"  mapid CPU while submitting and sending: daemon {run.daemon_cpu_s:.2f} s "
        f"({run.daemon_cpu_s / n * 1e3:.2f} ms/message), this client {run.client_cpu_s:.2f} s"
    )
    print("  request latency while submitting (ms): p50 / p99")
    for op, values in run.op_ms.items():
        ordered = sorted(values)
        print(f"    {op:<28} {percentile(ordered, 50):7.2f} / {percentile(ordered, 99):7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument(
        "--clients",
        type=parse_clients,
        default=parse_clients(DEFAULT_CLIENTS),
        metavar="NAME[,NAME...]",
        help="the clients to measure, each in every round: sync (the sync Client, one "
        "request at a time) or async-N (N messages in flight on one AsyncClient), with "
        "MAPI's five requests a message or, with -compact, two (create_message with props "
        f"and recipients, submit with release); default {DEFAULT_CLIENTS}",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="smtplib and mapid take turns this many times (smtplib once more at the end); "
        "each mapid run is compared with the faster smtplib run beside it, and the "
        "median ratio is the verdict",
    )
    parser.add_argument(
        "--dir",
        default="/tmp",
        help="where the daemon's temp dir (and so the Maildir) goes: a test suite's churn in "
        "/tmp can make each file create 5-25 times dearer than on a quiet directory",
    )
    parser.add_argument("--keep", action="store_true", help="keep the daemon's temp dir")
    parser.add_argument("--py-spy", metavar="OUT", help="profile the daemon's first run")
    args = parser.parse_args()
    handle_sigterm()
    n = args.messages
    modes: list[ClientKind] = args.clients
    print(f"mapid spooler benchmark — {time.strftime('%Y-%m-%d %H:%M:%S')} — {machine()}")
    with interrupt_exit():
        server = SinkServer()
        daemon = BenchDaemon(keep=args.keep, parent=args.dir)
        try:
            profile = daemon.config_dir / "profiles" / f"{PROFILE}.toml"
            with profile.open("a", encoding="utf-8") as handle:
                handle.write(SMTP_SECTION.format(port=server.port))
            create_us = file_create_us(daemon.base / "probe")
            daemon.start()
            print(
                f"  aiosmtpd (counting sink) on 127.0.0.1:{server.port}; {n} messages a run; "
                f"a file create beside the Maildir takes {create_us:.0f} µs (median)"
            )
            smtplib_rates = [run_smtplib(server, n, "smtplib-0")]
            runs: dict[ClientKind, list[MapidRun]] = {mode: [] for mode in modes}
            for r in range(max(1, args.rounds)):
                for m, mode in enumerate(modes):
                    spy = args.py_spy if r == 0 and m == 0 else None
                    tag = f"mapid-{mode.name}-{r + 1}"
                    runs[mode].append(run_mapid(daemon, server, n, spy, mode, tag))
                smtplib_rates.append(run_smtplib(server, n, f"smtplib-{r + 1}"))
        finally:
            daemon.close()
            server.close()
        verdicts = []
        for mode in modes:
            ratios = []
            print(f"\n  {mode.name}: {mode.describe()}:")
            print(f"  {'round':<6} {'smtplib msg/s':>14} {'mapid msg/s':>12} {'ratio':>6}")
            for r, run in enumerate(runs[mode]):
                baseline = max(smtplib_rates[r], smtplib_rates[r + 1])
                rate = n / run.delivered_s
                ratios.append(rate / baseline)
                print(f"  {r + 1:<6} {baseline:14.0f} {rate:12.0f} {rate / baseline:6.2f}")
            middle = sorted(range(len(ratios)), key=lambda i: ratios[i])[len(ratios) // 2]
            print(f"  the median round ({middle + 1}):")
            print_run(n, runs[mode][middle])
            ratio = ratios[middle]
            mark = verdict(ratio >= 0.7) + ("" if ratio >= 0.7 else f" ({ratio / 0.7:.0%} of it)")
            verdicts.append(
                f"  {mode.name} ({mode.describe()}): mapid "
                f"{n / runs[mode][middle].delivered_s:.0f} msg/s, median ratio {ratio:.2f} "
                f"over {len(ratios)} rounds (target >= 0.7): {mark}"
            )
        print(f"\n  duplicates seen by the server: {int(server.counters.duplicates.value)}")
        print("  end to end, against smtplib beside it:")
        print("\n".join(verdicts))


if __name__ == "__main__":
    main()
