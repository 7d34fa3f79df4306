"""The contents table of a 100 000-message Maildir Inbox, beside a plain `mailbox` scan.

Builds a Maildir of `--messages` messages (default 100 000) by writing the files straight
into `cur/`: From, To, Subject, Date, Message-ID and a short body, dates spread over three
years (the file's mtime and name carry the same delivery time, as an MTA leaves them),
varied subjects (some RFC 2047-encoded), about 70% read and 5% flagged. Then it starts the
real daemon on it (profile `alpha`, its Maildir service pointed at that tree) and measures:

1. Cold: `session.logon`, `session.open_msg_store`, the Inbox found through the IPM
   subtree's hierarchy table and opened, and its first page (`container.contents_table`,
   limit 50): the first open, which builds the index. The daemon's RSS afterwards.
2. Restart: the daemon stopped (SIGTERM) and started again, the same steps: the re-open
   from the persisted index. RSS again.
3. Pages, p50 (and max) over `--runs` calls each on the open Inbox: the first page (limit
   50); a page sorted by PR_MESSAGE_DELIVERY_TIME descending; a content restriction on
   PR_SUBJECT (substring "invoice", ignore case; about 2% match); a deep page (offset half
   the folder). Target: the first page under 200 ms once the folder has been opened.
   Meanwhile a thread pings the daemon every 2 ms on its own client; the `ping` column is
   the longest ping sent while a page of that kind was computed (how long the page
   held the daemon's event loop; an idle ping takes about 0.15 ms). The same pinger runs
   during the cold open and the re-open: the longest ping there.

Beside it, in the same run: a plain `mailbox.Maildir` scan of the same folder, as a program
without an index does it (iterate the keys, parse each file's headers, sort by Date, take
50; and the same scan filtered on the subject), timed `--scan-runs` times; the printed
ratios are mapid's p50 over the scan's. The files are in the page cache for both (they were
just written), unless `--drop-caches` (root) empties it before the cold open and the scan.

    python bench/contents.py [--messages 100000] [--runs 9] [--scan-runs 1] [--keep]
                             [--drop-caches] [--py-spy out.svg [--py-spy-phase pages]]
"""

from __future__ import annotations

import argparse
import email.parser
import email.policy
import functools
import mailbox
import os
import random
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from email.header import Header, decode_header, make_header
from email.utils import format_datetime, parsedate_to_datetime
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

from mapid.client import Client

PAGE = 50
COLUMNS = [
    "PR_ENTRYID",
    "PR_SUBJECT",
    "PR_SENDER_NAME",
    "PR_MESSAGE_DELIVERY_TIME",
    "PR_MESSAGE_FLAGS",
    "PR_MESSAGE_SIZE",
]
NEEDLE = "invoice"
"""The restriction's substring; only the "Invoice …" topic has it (1 topic in 50)."""

TOPICS = [
    "Quarterly report for Q{n}",
    "Meeting notes: design review {n}",
    "[builds] Pipeline failed on main (#{n})",
    "Lunch on Friday?",
    "Your order {n} has shipped",
    "Re: Holiday plans",
    "Invoice {n} from Example Hosting",
    "Fwd: slides for the all-hands",
    "Reminder: dentist appointment",
    "Weekly digest #{n}",
    "Re: Re: the flaky test",
    "Code review requested: patch {n}",
    "Photos from the weekend",
    "Password reset for your account",
    "[announce] Release 3.{n} is out",
    "Question about the API",
    "Travel itinerary {n}",
    "Re: Budget for next year",
    "Minutes of the board meeting",
    "New comment on issue {n}",
    "Draft: blog post on Maildir",
    "Re: Conference talk proposal",
    "Your subscription renews soon",
    "Happy birthday!",
    "Re: Moving to the new office",
    "Security advisory {n}",
    "Re: Contract renewal",
    "Seminar: distributed systems",
    "Book club: next month's pick",
    "Re: Patch v{n} for the parser",
    "Standup notes {n}",
    "Shipping delay notice",
    "Feedback on the prototype",
    "Re: Lost keys",
    "Invitation: team dinner",
    "Server maintenance window {n}",
    "Re: Thesis chapter {n}",
    "Welcome to the mailing list",
    "Newsletter: spring edition",
    "Re: Question about your pull request",
    "Receipt for your donation",
    "Re: Garden club schedule",
    "Outage report {n}",
    "Re: Recipe you asked for",
    "Call for papers {n}",
    "Re: Weekend hike",
    "Bug {n}: crash on start-up",
    "Re: Apartment viewing",
    "Status update",
    "Re: Piano lessons",
]
ENCODED_TOPICS = ["Grüße aus Köln {n}", "Réunion de l'équipe {n}", "Встреча в пятницу {n}"]
FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Linus"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson"]
LAST += ["Perlman", "Torvalds", "Ritchie", "Hamilton", "Goldberg", "Kay", "Wirth", "Backus"]
BODY_LINES = [
    "Hello,",
    "please find the details below.",
    "Let me know what you think.",
    "Thanks for the quick answer yesterday.",
    "The numbers are in the attached spreadsheet.",
    "I will be out of the office next week.",
    "Can we move this to Thursday?",
    "Best regards,",
]
START = datetime(2023, 1, 1, tzinfo=UTC)
SPAN_S = 3 * 365 * 86400


@dataclass(frozen=True)
class Built:
    path: Path
    messages: int
    matching: int
    """Messages whose subject contains NEEDLE."""
    seconds: float
    bytes: int


def build_maildir(root: Path, count: int, seed: int = 1) -> Built:
    """Write `count` messages into root/cur (plus the empty new/ and tmp/), fast."""
    rnd = random.Random(seed)
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    senders = [
        (f"{first} {last}", f"{first.lower()}.{last.lower()}@example.com")
        for first in FIRST
        for last in LAST
    ]
    zones = [timezone(timedelta(hours=h)) for h in (-8, -5, 0, 1, 2, 5, 9)]
    cur = os.fspath(root / "cur")
    started = time.perf_counter()
    matching = 0
    total_bytes = 0
    flags_choices = ["S"] * 14 + [""] * 5 + ["FS"]  # ~70% read, 5% flagged
    for i in range(count):
        when = START + timedelta(seconds=rnd.randrange(SPAN_S))
        ts = int(when.timestamp())
        name, addr = senders[rnd.randrange(len(senders))]
        if rnd.random() < 0.05:
            topic = rnd.choice(ENCODED_TOPICS).format(n=i)
            subject = Header(topic, "utf-8").encode()
        else:
            topic = rnd.choice(TOPICS).format(n=rnd.randrange(1, 500))
            subject = f"{topic} [{i}]"
        if NEEDLE in topic.lower():
            matching += 1
        body = "\r\n".join(rnd.sample(BODY_LINES, rnd.randint(2, 5)))
        text = (
            f"Return-Path: <{addr}>\r\n"
            f"From: {name} <{addr}>\r\n"
            "To: Ada Lovelace <ada@example.org>\r\n"
            f"Subject: {subject}\r\n"
            f"Date: {format_datetime(when.astimezone(rnd.choice(zones)))}\r\n"
            f"Message-ID: <{i}.{ts}@bench.example>\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "\r\n"
            f"{body}\r\n\r\n-- \r\n{name}\r\n"
        ).encode()
        total_bytes += len(text)
        flags = flags_choices[rnd.randrange(len(flags_choices))]
        path = f"{cur}/{ts}.M{i % 1000000:06d}P4242Q{i}.benchhost:2,{flags}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, text)
        finally:
            os.close(fd)
        os.utime(path, (ts, ts))
    return Built(root, count, matching, time.perf_counter() - started, total_bytes)


# --- the plain scan: what a program without an index does ---------------------------------


@dataclass(frozen=True)
class Scanned:
    date: datetime
    subject: str
    sender: str
    key: str


def plain_scan(root: Path) -> list[Scanned]:
    """Iterate the Maildir with `mailbox`, parse each message's headers."""
    box = mailbox.Maildir(root, factory=None, create=False)
    parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)
    found: list[Scanned] = []
    for key in box.iterkeys():
        with box.get_file(key) as handle:
            headers = parser.parse(handle)  # type: ignore[arg-type]
        raw_subject = headers.get("Subject", "")
        subject = (
            str(make_header(decode_header(raw_subject))) if "=?" in raw_subject else raw_subject
        )
        try:
            date = parsedate_to_datetime(headers.get("Date", ""))
        except (TypeError, ValueError):
            date = START
        found.append(Scanned(date, subject, headers.get("From", ""), key))
    return found


def scan_sorted(root: Path) -> list[Scanned]:
    rows = plain_scan(root)
    rows.sort(key=lambda r: r.date, reverse=True)
    return rows[:PAGE]


def scan_restricted(root: Path) -> tuple[list[Scanned], int]:
    rows = [r for r in plain_scan(root) if NEEDLE in r.subject.lower()]
    return rows[:PAGE], len(rows)


# --- mapid -------------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return (time.perf_counter() - started) * 1e3, result


@dataclass
class Opened:
    token: bytes
    inbox: int
    steps_ms: dict[str, float]
    first_page: dict[str, Any]
    loop_ms: float | None = None


def open_inbox(client: Client) -> Opened:
    """Log on, open the default store, find the Inbox under the IPM subtree, read page 1."""
    steps: dict[str, float] = {}
    ms, logon = timed(lambda: client.session_logon(PROFILE, ["MAPI_NEW_SESSION"]))
    steps["session.logon"] = ms
    token: bytes = logon["token"]
    ms, stores = timed(lambda: client.session_msg_stores_table(token))
    steps["session.msg_stores_table"] = ms
    store_row = next((r for r in stores["rows"] if r.get("PR_DEFAULT_STORE")), stores["rows"][0])
    ms, store = timed(lambda: client.session_open_msg_store(token, store_row["PR_ENTRYID"]))
    steps["session.open_msg_store"] = ms
    subtree_id = store["props"]["PR_IPM_SUBTREE_ENTRYID"]
    ms, subtree = timed(lambda: client.session_open_entry(token, subtree_id))
    steps["open IPM subtree"] = ms
    ms, folders = timed(lambda: client.container_hierarchy_table(token, subtree["handle"]))
    steps["hierarchy_table"] = ms
    inbox_row = next(r for r in folders["rows"] if r.get("PR_DISPLAY_NAME") == "Inbox")
    ms, inbox = timed(lambda: client.session_open_entry(token, inbox_row["PR_ENTRYID"]))
    steps["open Inbox"] = ms
    handle: int = inbox["handle"]
    ms, page = timed(
        lambda: client.container_contents_table(token, handle, {"columns": COLUMNS, "limit": PAGE})
    )
    steps["first page"] = ms
    return Opened(token, handle, steps, page)


def print_open(title: str, opened: Opened, rss_kb: int, messages: int) -> None:
    total = sum(opened.steps_ms.values())
    print(f"\n{title}: {total:.1f} ms from logon to the first page")
    for step, ms in opened.steps_ms.items():
        print(f"  {step:<28} {ms:10.1f} ms")
    page = opened.first_page
    print(f"  rows {len(page['rows'])}, total {page['total']} (expected {messages})")
    if opened.loop_ms is not None:
        print(f"  longest concurrent daemon.ping (2 ms pinger) {opened.loop_ms:.1f} ms")
    print(
        f"  daemon RSS {rss_kb / 1024:.1f} MiB ({rss_kb * 1024 / max(1, messages):.0f} B/message)"
    )


def drop_caches() -> None:
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as exc:
        print(f"  (cannot drop the page cache: {exc})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000, help="size of the Inbox")
    parser.add_argument("--runs", type=int, default=9, help="calls per page kind (p50)")
    parser.add_argument("--scan-runs", type=int, default=1, help="plain mailbox scans timed")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--drop-caches", action="store_true", help="cold page cache (root)")
    parser.add_argument("--keep", action="store_true", help="keep the daemon's temp dir")
    parser.add_argument("--py-spy", metavar="OUT", help="profile the daemon (py-spy record)")
    parser.add_argument(
        "--py-spy-phase",
        choices=["cold", "restart", "pages"],
        default="cold",
        help="which phase --py-spy profiles",
    )
    args = parser.parse_args()
    handle_sigterm()
    print(f"mapid contents-table benchmark — {time.strftime('%Y-%m-%d %H:%M:%S')} — {machine()}")
    with interrupt_exit():
        daemon = BenchDaemon(keep=args.keep)
        try:
            mail = daemon.base / PROFILE / "Mail"
            built = build_maildir(mail, args.messages, args.seed)
            print(
                f"  built {built.messages} messages in {built.seconds:.1f} s "
                f"({built.bytes / 1e6:.1f} MB; {built.matching} subjects contain {NEEDLE!r})"
            )
            if args.drop_caches:
                drop_caches()
            daemon.start()
            spy = {args.py_spy_phase: args.py_spy}
            with (
                daemon.client(timeout=600.0) as client,
                py_spy(daemon.pid, spy.get("cold")),
                Pinger(daemon.runtime) as pinger,
            ):
                cold = open_inbox(client)
            cold.loop_ms = pinger.longest_ms([(0.0, time.monotonic())])
            print_open("1. cold open (index built)", cold, daemon.rss_kb(), built.messages)

            daemon.stop()
            daemon.start()
            with daemon.client(timeout=600.0) as client:
                with py_spy(daemon.pid, spy.get("restart")), Pinger(daemon.runtime) as pinger:
                    warm = open_inbox(client)
                warm.loop_ms = pinger.longest_ms([(0.0, time.monotonic())])
                print_open(
                    "2. re-open after a daemon restart (persisted index)",
                    warm,
                    daemon.rss_kb(),
                    built.messages,
                )
                with py_spy(daemon.pid, spy.get("pages")), Pinger(daemon.runtime) as pinger:
                    pages = measure_pages(client, warm, args.runs, pinger)
                rss_after = daemon.rss_kb()
            daemon.stop()

            print(f"\n3. pages on the open Inbox, {args.runs} calls each (ms)")
            scans = measure_scan(mail, args.scan_runs, args.drop_caches)
            report(pages, scans, built, rss_after)
        finally:
            daemon.close()


@dataclass
class PageFigures:
    samples_ms: list[float]
    total: int
    subjects: list[str]
    loop_ms: float | None = None
    """The longest concurrent daemon.ping meanwhile (None: no ping was sent meanwhile)."""


class Pinger:
    """A thread pinging the daemon every 2 ms on its own client: the longest wait while a
    page is computed shows how long that page held the daemon's event loop."""

    def __init__(self, runtime: Path) -> None:
        self.runtime = runtime
        self.samples: list[tuple[float, float]] = []
        """(monotonic time sent, seconds to the reply)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pinger", daemon=True)

    def __enter__(self) -> Pinger:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=35)

    def _run(self) -> None:
        with Client(self.runtime, timeout=30.0) as client:
            while not self._stop.is_set():
                sent = time.monotonic()
                client.daemon_ping()
                self.samples.append((sent, time.monotonic() - sent))
                self._stop.wait(0.002)

    def longest_ms(self, windows: list[tuple[float, float]]) -> float | None:
        """The longest ping sent inside one of the windows (a ping sent while a page is
        computed waits for it; one sent before belongs to the page before)."""
        found = [d for t, d in list(self.samples) if any(a <= t <= b for a, b in windows)]
        return max(found) * 1e3 if found else None


def measure_pages(
    client: Client, opened: Opened, runs: int, pinger: Pinger
) -> dict[str, PageFigures]:
    token, handle = opened.token, opened.inbox
    kinds: dict[str, dict[str, Any]] = {
        "first page": {"columns": COLUMNS, "limit": PAGE},
        "sorted by delivery time desc": {
            "columns": COLUMNS,
            "sort": [["PR_MESSAGE_DELIVERY_TIME", "desc"]],
            "limit": PAGE,
        },
        f"subject contains {NEEDLE!r} (ignore case)": {
            "columns": COLUMNS,
            "restriction": {
                "content": "PR_SUBJECT",
                "value": NEEDLE,
                "match": "substring",
                "ignore_case": True,
            },
            "limit": PAGE,
        },
        "deep page (offset = half)": {
            "columns": COLUMNS,
            "offset": max(0, opened.first_page["total"] // 2),
            "limit": PAGE,
        },
    }
    figures = {name: PageFigures([], 0, []) for name in kinds}
    windows: dict[str, list[tuple[float, float]]] = {name: [] for name in kinds}
    for _ in range(runs):  # take turns, so drift hits every kind alike
        for name, table in kinds.items():
            start = time.monotonic()
            ms, page = timed(
                functools.partial(client.container_contents_table, token, handle, table)
            )
            windows[name].append((start, time.monotonic()))
            fig = figures[name]
            fig.samples_ms.append(ms)
            fig.total = page["total"]
            fig.subjects = [row.get("PR_SUBJECT", "") for row in page["rows"]]
    time.sleep(0.05)  # the last ping comes back
    for name, fig in figures.items():
        fig.loop_ms = pinger.longest_ms(windows[name])
    return figures


@dataclass
class ScanFigures:
    sorted_ms: list[float]
    restricted_ms: list[float]
    top: list[Scanned]
    matching: int


def measure_scan(root: Path, runs: int, cold: bool) -> ScanFigures:
    figs = ScanFigures([], [], [], 0)
    for _ in range(max(1, runs)):
        if cold:
            drop_caches()
        ms, top = timed(lambda: scan_sorted(root))
        figs.sorted_ms.append(ms)
        figs.top = top
        if cold:
            drop_caches()
        ms, (_, matching) = timed(lambda: scan_restricted(root))
        figs.restricted_ms.append(ms)
        figs.matching = matching
    return figs


def report(pages: dict[str, PageFigures], scans: ScanFigures, built: Built, rss_kb: int) -> None:
    scan_sorted_ms = statistics.median(scans.sorted_ms)
    scan_restricted_ms = statistics.median(scans.restricted_ms)
    baselines = {
        "first page": scan_sorted_ms,
        "sorted by delivery time desc": scan_sorted_ms,
        "deep page (offset = half)": scan_sorted_ms,
    }
    print(f"  {'':<40} {'p50':>9} {'max':>9}  {'total':>7}  {'ping':>7}  vs plain scan")
    for name, fig in pages.items():
        values = sorted(fig.samples_ms)
        p50 = percentile(values, 50)
        base = baselines.get(name, scan_restricted_ms)
        ping = "-" if fig.loop_ms is None else f"{fig.loop_ms:.1f}"
        print(
            f"  {name:<40} {p50:9.1f} {values[-1]:9.1f}  {fig.total:>7}  {ping:>7}  "
            f"{p50 / base:.2g}x ({base / p50:.0f} times faster)"
        )
    print(
        f"  {'plain mailbox scan + sort by Date, top 50':<40} {scan_sorted_ms:9.1f} "
        f"{max(scans.sorted_ms):9.1f}  {built.messages:>7}"
    )
    print(
        f"  {'plain mailbox scan + subject filter':<40} {scan_restricted_ms:9.1f} "
        f"{max(scans.restricted_ms):9.1f}  {scans.matching:>7}"
    )
    sorted_page = pages["sorted by delivery time desc"]
    agree = sorted_page.subjects == [s.subject for s in scans.top]
    restricted = next(fig for name, fig in pages.items() if name.startswith("subject"))
    print(
        f"\n  checks: sorted page equals the scan's top {PAGE}: {'yes' if agree else 'NO'}; "
        f"restriction total {restricted.total} (scan {scans.matching}, "
        f"built {built.matching}); RSS after the pages {rss_kb / 1024:.1f} MiB"
    )
    first = percentile(sorted(pages["first page"].samples_ms), 50)
    mark = verdict(first < 200) + ("" if first < 200 else f" by {first - 200:.0f} ms")
    print(f"  first page p50 {first:.1f} ms (target < 200 ms): {mark}")


if __name__ == "__main__":
    main()
