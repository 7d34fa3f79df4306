"""The request socket: receive, check, dispatch, reply (docs/protocol.md 2, 3 and 4).

One ROUTER socket, read straight from its file descriptor on the event loop (not through
zmq.asyncio, whose future per receive and per send cost more than most ops: section 6 of
bench/RESULTS.md). An op outside any session lock runs inline; any other starts at once
under its session's lock (eager.py) and becomes a task only when it has to wait, for the
lock or for I/O. A client may have `max_in_flight` requests running, and every answer
is kept for 60 seconds per client identity and request id, so a resend is answered from the
cache instead of running twice. Nothing a client sends can stop the loop: every failure
becomes an error reply or, when no id can be read, a counted drop."""

from __future__ import annotations

import asyncio
import contextvars
import errno
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq

from mapid.daemon.bus import eager
from mapid.daemon.bus.registry import REGISTRY, OpContext, OpRegistry, OpSpec, Reply, is_int
from mapid.daemon.bus.reply_cache import Pending, ReplyCache, cache_key
from mapid.daemon.sessions.manager import SessionManager
from mapid.daemon.sessions.table_query import TableQuery
from mapid.daemon.system import logs, memory
from mapid.daemon.system.metrics import RESULT_OK, UNKNOWN_OP, Metrics
from mapid.errors import ErrorCode, MapiError
from mapid.wire import envelope
from mapid.wire.codec import MAX_PAYLOAD, MAX_STR, CodecError, pack, salvage_id, unpack, valid_id
from mapid.wire.envelope import PROTOCOL_VERSION
from mapid.wire.link import MORE as _MORE
from mapid.wire.link import NOBLOCK as _LAST
from mapid.wire.link import RCVMORE as _RCVMORE
from mapid.wire.link import readable

log = logging.getLogger("mapid.server")

SWEEP_S = 5.0
"""How often expired replies leave the cache, requests or not."""
GIVE_BACK_BYTES = 4 * 1024 * 1024
"""A sweep that freed this much of the cache while no request was running also returns
memory to the system (memory.give_back)."""
DRAIN_BATCH = 64
"""Requests read in one go before other callbacks of the loop get their turn."""
DRAIN_SLICE_S = 0.005
"""...or this long, whichever comes first: ops run inline up to their first wait, and 64
logons in a row held one callback for 130 ms while a ping from another client waited."""

_ZERO_COPY_MIN = 64 * 1024
"""Replies from this size go out without a copy (pyzmq's own copy threshold)."""


@dataclass
class Stats:
    requests: int = 0
    malformed: int = 0
    errors: int = 0


class RequestServer:
    def __init__(
        self,
        sock: zmq.Socket[bytes] | None,
        sessions: SessionManager,
        daemon: Any,
        *,
        epoch: str,
        max_in_flight: Callable[[], int],
        metrics: Metrics,
        registry: OpRegistry = REGISTRY,
    ) -> None:
        self.sock = sock
        self.sessions = sessions
        self.daemon = daemon
        self.epoch = epoch
        self.registry = registry
        self.max_in_flight = max_in_flight
        self.stats = Stats()
        self.metrics = metrics
        self._outcome = RESULT_OK
        """The `result` label of the reply `_ok` or `_error` built last: read at once, with
        no await between, by `_count`."""
        self.cache = ReplyCache()
        self.in_flight: dict[bytes, int] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_pending = False

    # -- sending -------------------------------------------------------------------------
    def _send(self, identity: bytes, data: bytes) -> None:
        sock = self.sock
        if sock is None:
            return
        try:
            # ROUTER never blocks: at the high-water mark, or for a client gone, it drops.
            # Frame by frame with int flags: send_multipart's enum arithmetic costs more.
            sock.send(identity, _MORE)
            sock.send(b"", _MORE)
            sock.send(data, _LAST, copy=len(data) < _ZERO_COPY_MIN)
        except zmq.ZMQError as exc:
            log.debug("reply to a client not sent: %s", exc)
            return
        # A send may take in the descriptor's signal of a request (link.readable).
        if not self._drain_pending and readable(sock):
            self._schedule_drain()

    def send_notification(self, identity: bytes, payload: dict[str, Any]) -> None:
        self._send(identity, pack(payload))

    def _error(self, req_id: object, error: MapiError) -> bytes:
        self.stats.errors += 1
        self._outcome = error.code.name
        return pack(envelope.error_reply(req_id, self.epoch, error))

    # -- receiving -----------------------------------------------------------------------
    async def run(self) -> None:
        """Serve until cancelled: the socket's descriptor wakes `_drain`."""
        sock = self.sock
        assert sock is not None
        loop = asyncio.get_running_loop()
        fd = int(sock.getsockopt(zmq.FD))
        self._loop = loop
        loop.add_reader(fd, self._on_readable)
        try:
            self._drain()
            while True:  # until cancelled
                await asyncio.sleep(SWEEP_S)
                self.sweep()
        finally:
            loop.remove_reader(fd)
            self._loop = None

    def sweep(self) -> int:
        """Drop expired replies; return memory to the system after a burst has ended."""
        freed = self.cache.purge()
        if freed >= GIVE_BACK_BYTES and not self.in_flight:
            memory.give_back()
            log.debug("reply cache: %d bytes freed, memory given back", freed)
        return freed

    def _on_readable(self) -> None:
        """The descriptor's wake-up: a drain already scheduled reads what it signals."""
        if not self._drain_pending:
            self._drain()

    def _schedule_drain(self) -> None:
        """One drain at a time waits in the loop's queue. Without the guard, every wake-up
        of the descriptor under load started one more drain that rescheduled itself: at
        3 000 logons a second the loop's queue held thousands, each step of the loop took
        seconds, and the tasks the logons started (their spoolers) waited for it while
        the requests went on being read: a backlog that ran after the burst, with a 100 ms
        stall (bench/scale.py at 100 000 sessions)."""
        if not self._drain_pending and self._loop is not None:
            self._drain_pending = True
            self._loop.call_soon(self._scheduled_drain)

    def _scheduled_drain(self) -> None:
        self._drain_pending = False
        self._drain()

    def _drain(self) -> None:
        """Read what has arrived, up to DRAIN_BATCH requests, then yield to the loop."""
        sock = self.sock
        if sock is None or self._loop is None:
            return
        until = time.perf_counter() + DRAIN_SLICE_S
        for _ in range(DRAIN_BATCH):
            if time.perf_counter() > until:
                break
            try:
                if not readable(sock):
                    return  # nothing waits (no zmq.Again raised and caught per wake-up)
                frames = [sock.recv(_LAST)]
                while sock.getsockopt(_RCVMORE):
                    frames.append(sock.recv(_LAST))
            except zmq.ZMQError as exc:  # closed at shutdown
                log.debug("request socket: %s", exc)
                return
            try:
                self.handle_frames(frames)
            except Exception:  # nothing a client sends may stop the loop
                log.exception("request dropped")
        self._schedule_drain()

    def handle_frames(self, frames: list[bytes]) -> None:
        start = time.perf_counter()
        self.stats.requests += 1
        if len(frames) != 3 or frames[1] != b"":
            self.stats.malformed += 1
            return
        identity, data = frames[0], frames[2]
        try:
            payload = unpack(data)
        except CodecError as exc:
            req_id = salvage_id(data)
            if req_id is None:
                self.stats.malformed += 1
            else:
                error = MapiError(ErrorCode.MAPI_E_INVALID_PARAMETER, f"malformed payload: {exc}")
                self._send(identity, self._error(req_id, error))
                self._count(UNKNOWN_OP, start)
            return
        if not isinstance(payload, dict) or not valid_id(payload.get("id")):
            self.stats.malformed += 1
            return
        req_id = payload["id"]
        key = cache_key(identity, req_id)
        cached = self.cache.get(key)
        if isinstance(cached, bytes):
            self._send(identity, cached)
            return
        if isinstance(cached, Pending):
            cached.duplicates += 1
            return
        if self.in_flight.get(identity, 0) >= self.max_in_flight():
            error = MapiError(
                ErrorCode.MAPI_E_BUSY,
                f"more than {self.max_in_flight()} requests in flight from this client",
            )
            self._send(identity, self._error(req_id, error))
            self._count(self._op_label(payload), start)
            return
        try:
            spec, ctx, args = self._check(identity, req_id, payload)
        except MapiError as exc:
            data = self._error(req_id, exc)
            self._count(self._op_label(payload), start)
            self._finish(key, identity, data, counted=False)
            return
        self.cache.start(key)
        self.in_flight[identity] = self.in_flight.get(identity, 0) + 1
        session = ctx.session
        if not spec.is_async and (session is None or not spec.locks_session):
            data = self._run_inline(spec, ctx, args)
            self._count(spec.name, start)
            self._finish(key, identity, data)
            return
        # Under the session lock even when it never waits: the lock's queue keeps the
        # session's requests in order (eager.start runs it at once when the lock is free).
        # Its own context: its log lines (and its tasks') name the session.
        context = contextvars.copy_context()
        context.run(logs.enter_request, spec.name, session)
        deadline_ms = payload.get("deadline_ms")
        coro = self._run(key, spec, ctx, args, deadline_ms, start)
        if deadline_ms is None:
            task = eager.start(coro, context)  # None: it has answered already
        else:  # wait_for needs a task around it
            task = asyncio.get_running_loop().create_task(coro, context=context)
        if task is not None:
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def _check(
        self, identity: bytes, req_id: object, payload: dict[str, Any]
    ) -> tuple[OpSpec, OpContext, dict[str, Any]]:
        """The checks of docs/protocol.md 3, in its order, up to the handle (checked under lock)."""
        version = payload.get("v")
        if not is_int(version):
            raise MapiError(ErrorCode.MAPI_E_INVALID_PARAMETER, "v must be an int")
        if version != PROTOCOL_VERSION:
            raise MapiError(
                ErrorCode.MAPI_E_VERSION,
                f"protocol version {version} is not spoken here; this daemon speaks "
                f"{PROTOCOL_VERSION}",
                details={"supported": [PROTOCOL_VERSION]},
            )
        name = payload.get("op")
        if not isinstance(name, str):
            raise MapiError(ErrorCode.MAPI_E_INVALID_PARAMETER, "op must be a str")
        spec = self.registry.get(name)
        if spec is None:
            raise MapiError(ErrorCode.MAPI_E_NO_SUPPORT, f"no operation {name!r}")
        ctx = OpContext(self.daemon, identity, req_id)
        if spec.token or (spec.token_optional and payload.get("token") is not None):
            ctx.session, ctx.member = self.sessions.lookup(payload.get("token"))
        try:
            args = spec.parse_args(payload.get("args"))
            if spec.table:
                ctx.table = TableQuery.parse(args)
            deadline = payload.get("deadline_ms")
            if deadline is not None and (not is_int(deadline) or deadline < 0):
                raise MapiError(
                    ErrorCode.MAPI_E_INVALID_PARAMETER, "deadline_ms must be an int >= 0"
                )
        except MapiError as exc:
            if ctx.session is not None:
                ctx.session.last_error = exc
            raise
        if ctx.member is not None:
            self.sessions.touch(ctx.member)
        return spec, ctx, args

    def _run_inline(self, spec: OpSpec, ctx: OpContext, args: dict[str, Any]) -> bytes:
        """A synchronous op that takes no session lock."""
        session = ctx.session
        mark = logs.enter_request(spec.name, session)
        try:
            return self._ok(ctx.req_id, spec.handler(ctx, args))
        except MapiError as exc:
            if session is not None:
                session.last_error = exc
            return self._error(ctx.req_id, exc)
        except OSError as exc:
            error = _os_error(spec.name, exc)
            if session is not None:
                session.last_error = error
            return self._error(ctx.req_id, error)
        except Exception:
            log.exception("op %s failed", spec.name)
            return self._error(ctx.req_id, _internal(spec.name))
        finally:
            logs.leave_request(mark)

    async def _run(
        self,
        key: bytes,
        spec: OpSpec,
        ctx: OpContext,
        args: dict[str, Any],
        deadline_ms: int | None,
        start: float,
    ) -> None:
        try:
            coro = self._execute(spec, ctx, args)
            if deadline_ms is not None:
                result = await asyncio.wait_for(coro, deadline_ms / 1000)
            else:
                result = await coro
            data = self._ok(ctx.req_id, result)
        except MapiError as exc:
            if ctx.session is not None:
                ctx.session.last_error = exc
            data = self._error(ctx.req_id, exc)
        except TimeoutError:
            error = MapiError(ErrorCode.MAPI_E_TIMEOUT, f"deadline of {deadline_ms} ms passed")
            if ctx.session is not None:
                ctx.session.last_error = error
            data = self._error(ctx.req_id, error)
        except asyncio.CancelledError:
            self.cache.forget(key)
            self._release(ctx.identity)
            raise
        except OSError as exc:
            error = _os_error(spec.name, exc)
            if ctx.session is not None:
                ctx.session.last_error = error
            data = self._error(ctx.req_id, error)
        except Exception:
            log.exception("op %s failed", spec.name)
            data = self._error(ctx.req_id, _internal(spec.name))
        self._count(spec.name, start)
        self._finish(key, ctx.identity, data)

    async def _execute(self, spec: OpSpec, ctx: OpContext, args: dict[str, Any]) -> Any:
        session = ctx.session
        if session is None or not spec.locks_session:
            return await _call(spec, ctx, args)
        async with session.lock:
            if not session.alive or (ctx.member and ctx.member.token not in session.members):
                raise MapiError(ErrorCode.MAPI_E_END_OF_SESSION, "the session has ended")
            if spec.handle:
                ctx.obj = session.handles.get(args["handle"])
            return await _call(spec, ctx, args)

    def _ok(self, req_id: object, result: Any) -> bytes:
        if isinstance(result, Reply):
            msg = envelope.ok_reply(req_id, self.epoch, result.result, warning=result.warning)
        else:
            msg = envelope.ok_reply(req_id, self.epoch, result or {})
        data = pack(msg)
        if len(data) > MAX_PAYLOAD:
            error = MapiError(
                ErrorCode.MAPI_E_TABLE_TOO_BIG,
                f"the reply would be {len(data)} bytes, over the {MAX_PAYLOAD}-byte limit; "
                "ask for fewer rows or columns (limit, offset, columns)",
            )
            return self._error(req_id, error)
        if len(data) > MAX_STR:
            # Only a reply this big can hold a value over the 1 MiB limit; decoding it as a
            # client would is the one check that cannot disagree with the client.
            try:
                unpack(data)
            except CodecError as exc:
                error = MapiError(
                    ErrorCode.MAPI_E_TOO_BIG,
                    f"the reply breaks a limit of docs/protocol.md 2 ({exc}); ask for fewer "
                    "columns or rows, or leave the large property out",
                )
                return self._error(req_id, error)
        self._outcome = RESULT_OK
        return data

    def _count(self, op: str, start: float) -> None:
        """/metrics: one request answered, with the result of the reply just built."""
        self.metrics.request(op, self._outcome, time.perf_counter() - start)

    def _op_label(self, payload: dict[str, Any]) -> str:
        """The request's op for a label: a name the daemon serves, else UNKNOWN_OP (a
        client's made-up names must not make new series)."""
        name = payload.get("op")
        if isinstance(name, str) and self.registry.get(name) is not None:
            return name
        return UNKNOWN_OP

    def _release(self, identity: bytes) -> None:
        left = self.in_flight.get(identity, 1) - 1
        if left > 0:
            self.in_flight[identity] = left
        else:
            self.in_flight.pop(identity, None)

    def _finish(self, key: bytes, identity: bytes, data: bytes, counted: bool = True) -> None:
        if counted:
            self._release(identity)
        duplicates = self.cache.finish(key, data)
        for _ in range(duplicates + 1):
            self._send(identity, data)

    async def drain(self, timeout: float) -> None:
        """Let running requests finish (at shutdown), up to `timeout` seconds."""
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=timeout)


async def _call(spec: OpSpec, ctx: OpContext, args: dict[str, Any]) -> Any:
    result = spec.handler(ctx, args)
    if asyncio.iscoroutine(result):
        return await result
    return result


_ACCESS_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


def _os_error(op: str, exc: OSError) -> MapiError:
    """A file the daemon may not write (a read-only /etc/mapid under the system unit's
    ProtectSystem=strict, a folder of another user) is the caller's MAPI_E_NO_ACCESS."""
    if exc.errno not in _ACCESS_ERRNOS:
        log.error("op %s failed: %s", op, exc)
        return _internal(op)
    where = f" {exc.filename}" if exc.filename else ""
    return MapiError(
        ErrorCode.MAPI_E_NO_ACCESS,
        f"{op}: the daemon cannot write{where} ({exc.strerror}); under the system unit "
        "/etc/mapid is read-only to the daemon: edit its files as root, then `mapictl reload`",
    )


def _internal(op: str) -> MapiError:
    return MapiError(
        ErrorCode.MAPI_E_CALL_FAILED,
        f"{op} failed inside the daemon; it keeps serving (details are in its log)",
    )
