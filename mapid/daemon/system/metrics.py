"""Prometheus metrics of the daemon, served at /metrics when mapid.toml sets `metrics_listen`
(docs/monitoring.md lists them).

One `Metrics` per daemon, on a `CollectorRegistry` of its own (not prometheus_client's
global one, so two daemons in one process never share counts), with prometheus_client's
process and platform collectors. Counters and the request histogram move on the daemon's
loop as things happen. What is state rather than events (the sessions, each provider's
status row, the spoolers' queues, the configuration generation, the publisher's counts) is
read at scrape time by one callback that the scrape thread runs on the loop and waits for
(`LiveState`): nothing is read from another thread while the loop changes it, and nothing
costs anything between scrapes.

prometheus_client's own `start_http_server` serves the registry from a thread of its own:
the exposition is rendered off the loop, which only runs the short state callback.
Label values are bounded: operation names the daemon registers (else `unknown`), MAPI error
names, profile names and their service keys, the spooler's failure reasons. No tokens,
subjects, addresses or session ids.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

log = logging.getLogger("mapid.metrics")

RESULT_OK = "ok"
"""`result` of a request answered without error; an error's is its MAPI name."""
UNKNOWN_OP = "unknown"
"""`op` of a request naming an operation the daemon does not serve (or none at all)."""

SPOOL_TEMPORARY = "temporary"
"""A send that failed for now (connection, 4xx, time-out): the message stays queued."""
SPOOL_REFUSED = "refused"
"""A message that left the Outbox with a non-delivery report: the server refused some or
all recipients, or the whole message (5xx)."""
SPOOL_NO_TRANSPORT = "no_transport"
SPOOL_NO_SENDER = "no_sender"
SPOOL_NO_RECIPIENT = "no_recipient"
SPOOL_FAILURES = (
    SPOOL_TEMPORARY,
    SPOOL_REFUSED,
    SPOOL_NO_TRANSPORT,
    SPOOL_NO_SENDER,
    SPOOL_NO_RECIPIENT,
)
"""Every `reason` of mapid_spooler_failed_total, each exported from the start (at 0)."""

DURATION_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
"""Seconds. Most ops answer in well under a millisecond; a logon or a send may take seconds."""

LIVE_TIMEOUT = 2.0
"""Seconds a scrape waits for the loop to read the live state; then the last one read is
served (a loop stuck that long shows as a stale state, not as a scrape that hangs)."""


@dataclass(frozen=True)
class LiveState:
    """What a scrape reads of the daemon's state, on its loop."""

    sessions: int = 0
    events_published: int = 0
    event_drops: int = 0
    config_generation: int = 0
    providers: Mapping[tuple[str, str], bool] = field(default_factory=dict)
    """(profile, service key) -> whether its providers are available (SessionManager)."""
    spool_queued: int = 0
    spool_oldest: float | None = None
    """When the oldest queued message was submitted (epoch seconds), if one is queued."""


class Metrics:
    """The daemon's metrics and the HTTP server that serves them."""

    def __init__(self) -> None:
        # No `_created` gauge beside every counter and histogram series: it would double
        # what a scrape carries for nothing alerts use. (A process-wide switch of
        # prometheus_client's; the daemon is its process.)
        disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in 0.26
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        reg = self.registry
        self.requests = Counter(
            "mapid_requests_total",
            'Requests answered, by operation and result ("ok" or the MAPI error name); '
            'op is "unknown" for a name the daemon does not serve.',
            ["op", "result"],
            registry=reg,
        )
        self.request_duration = Histogram(
            "mapid_request_duration_seconds",
            "Time from a request's arrival to its reply, by operation.",
            ["op"],
            buckets=DURATION_BUCKETS,
            registry=reg,
        )
        self.spooler_sent = Counter(
            "mapid_spooler_sent_total",
            "Messages the spooler sent and took out of an Outbox (some recipient accepted).",
            registry=reg,
        )
        self.spooler_failed = Counter(
            "mapid_spooler_failed_total",
            'Spooler failures: "temporary" counts each message a failed send left queued '
            "for a retry; the other reasons count messages that left the Outbox with a "
            "non-delivery report.",
            ["reason"],
            registry=reg,
        )
        for reason in SPOOL_FAILURES:
            self.spooler_failed.labels(reason)
        self.reload_failures = Counter(
            "mapid_reload_failures_total",
            "Configuration reloads that found a broken file (its last good version stays).",
            registry=reg,
        )
        reg.register(_LiveCollector(self))
        self._children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
        self._queues: dict[object, tuple[int, float | None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._source: Callable[[], LiveState] | None = None
        self._last = LiveState()
        self._serving = threading.Lock()
        """Held by serve() and close(): a reload and the shutdown may overlap."""
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.listen: tuple[str, int] | None = None
        """Where /metrics is served now (None: nowhere)."""

    # -- counting, on the loop -----------------------------------------------------------
    def request(self, op: str, result: str, seconds: float) -> None:
        """One request answered. `op` must be a registered name or UNKNOWN_OP."""
        pair = self._children.get((op, result))
        if pair is None:  # one pair of children a label set: .labels() locks and hashes
            pair = (self.requests.labels(op, result), self.request_duration.labels(op))
            self._children[(op, result)] = pair
        pair[0].inc()
        pair[1].observe(seconds)

    def spool_queue(self, owner: object, count: int, oldest: float | None) -> None:
        """A spooler's queue after a pass: `count` messages, the oldest submitted at
        `oldest` (epoch seconds; None when the pass read none of them: the last known
        stands, since the messages still queued are not younger than it was)."""
        if count <= 0:
            self._queues[owner] = (0, None)
            return
        if oldest is None:
            oldest = self._queues.get(owner, (0, None))[1]
        self._queues[owner] = (count, oldest)

    def spool_forget(self, owner: object) -> None:
        """A spooler that stopped, or stands by for another session's: it counts no queue."""
        self._queues.pop(owner, None)

    # -- the live state ------------------------------------------------------------------
    def attach(self, loop: asyncio.AbstractEventLoop, source: Callable[[], LiveState]) -> None:
        """Read the live state with `source`, on `loop` (call it from that loop)."""
        self._loop, self._source = loop, source
        self._loop_thread = threading.get_ident()

    def _take(self, source: Callable[[], LiveState]) -> LiveState:
        """On the loop: the daemon's state and the spoolers' queues."""
        state = source()
        queues = list(self._queues.values())
        stamps = [oldest for count, oldest in queues if count and oldest is not None]
        state = dataclasses.replace(
            state,
            spool_queued=sum(count for count, _oldest in queues),
            spool_oldest=min(stamps) if stamps else None,
        )
        self._last = state
        return state

    def read_live(self) -> LiveState:
        """The live state, read on the loop (from a scrape thread: waits for it)."""
        loop, source = self._loop, self._source
        if loop is None or source is None:
            return self._last
        if threading.get_ident() == self._loop_thread:
            return self._take(source)
        answer: concurrent.futures.Future[LiveState] = concurrent.futures.Future()

        def take() -> None:
            if not answer.set_running_or_notify_cancel():
                return  # the scrape stopped waiting
            try:
                answer.set_result(self._take(source))
            except Exception as exc:
                answer.set_exception(exc)

        try:
            loop.call_soon_threadsafe(take)
        except RuntimeError:  # the loop is closed: the daemon is stopping
            return self._last
        try:
            return answer.result(LIVE_TIMEOUT)
        except TimeoutError:
            answer.cancel()
            log.warning(
                "metrics: the loop did not answer in %.0f s; serving the last state", LIVE_TIMEOUT
            )
        except Exception:
            log.exception("metrics: reading the live state failed")
        return self._last

    # -- the HTTP server (call off the loop: stopping waits for its thread) --------------
    def serve(self, listen: tuple[str, int] | None) -> None:
        """Serve /metrics on `listen` ("host", port), or nowhere (None). A port that cannot
        be bound is logged, and the daemon goes on without it: the next reload tries again."""
        with self._serving:
            self._serve(listen)

    def _serve(self, listen: tuple[str, int] | None) -> None:
        if listen == self.listen and (listen is None or self._server is not None):
            return
        self._close()
        if listen is None:
            log.info("metrics: not serving /metrics (no metrics_listen)")
            return
        host, port = listen
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            self._server, self._thread = start_http_server(port, host, registry=self.registry)
        except OSError as exc:
            log.error(
                "metrics: cannot serve /metrics on %s: %s; the daemon runs without it "
                "(fix metrics_listen, or free the port, then reload)",
                where,
                exc.strerror or exc,
            )
            return
        self.listen = listen
        log.info("metrics: serving http://%s/metrics", where)

    def close(self) -> None:
        """Stop serving (within half a second: serve_forever's poll interval)."""
        with self._serving:
            self._close()

    def _close(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        self.listen = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(1.0)


class _LiveCollector:
    """The families read from the live state at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return _families(LiveState(), 0.0)

    def collect(self) -> Iterable[Metric]:
        return _families(self._metrics.read_live(), time.time())


def _families(state: LiveState, now: float) -> list[Metric]:
    providers = GaugeMetricFamily(
        "mapid_provider_available",
        "1 while the providers of a profile's service have STATUS_AVAILABLE without "
        "STATUS_OFFLINE in their status rows, in every live session of the profile; 0 "
        "otherwise. Absent while no session has the service loaded.",
        labels=["profile", "service"],
    )
    for (profile, service), up in sorted(state.providers.items()):
        providers.add_metric([profile, service], 1.0 if up else 0.0)
    oldest = 0.0 if state.spool_oldest is None else max(0.0, now - state.spool_oldest)
    return [
        GaugeMetricFamily(
            "mapid_sessions", "MAPI sessions logged on (public, not ended).", state.sessions
        ),
        CounterMetricFamily(
            "mapid_events_published",
            "Events the publisher sent on the event stream (heartbeats not counted).",
            state.events_published,
        ),
        CounterMetricFamily(
            "mapid_event_drops",
            "Events the event socket refused to take. A slow subscriber's own losses at "
            "its high-water mark are dropped by libzmq without telling the daemon: the "
            "subscriber sees them as a gap in seq.",
            state.event_drops,
        ),
        providers,
        GaugeMetricFamily(
            "mapid_spooler_queued_messages",
            "Messages waiting in the Outboxes the spoolers send, as of each spooler's last pass.",
            state.spool_queued,
        ),
        GaugeMetricFamily(
            "mapid_spooler_oldest_queued_seconds",
            "How long the oldest message still queued has waited since it was submitted "
            "(0 when nothing is queued).",
            oldest,
        ),
        GaugeMetricFamily(
            "mapid_config_generation",
            "The configuration generation: 1 at start, one more at each reload that applied.",
            state.config_generation,
        ),
    ]
