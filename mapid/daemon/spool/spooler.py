"""The spooler (docs/design.md 7, docs/mapi.md 5.5): the default store's Outbox to the
transports, then Sent Items.

One spooler per session while a member is mail-enabled. The queue is the store's Outbox on
disk and nothing else: a pass reads `queued()` oldest first, sends each message through the
transport that sends as its sender, else through the first active transport (in transport
order) that takes its recipients' address type (routing.py), then hands it back with
`finished()`. A daemon killed between a send and `finished()` sends that message again
after restart (at least once, never lost).

Consecutive messages that all go to one transport go to it together, up to BATCH_MAX in one
`send_batch` (the smtp transport sends them in one trip to its worker thread, where a trip
cost about as much as a loopback SMTP transaction); each still gets its own outcome, in
queue order, and a temporary failure leaves that message and the later ones queued.

Outcomes of one message:
- every recipient accepted: Sent Items (or deleted, PR_DELETE_AFTER_SUBMIT);
- some refused: Sent Items, and a non-delivery report for the refused ones in the Inbox;
- nobody reached (a 5xx, every recipient refused, no transport for the type, no sender):
  the report goes to the Inbox holding the original, then the original leaves the Outbox;
- a temporary failure (connection refused, 4xx, time-out, a transport's bug): the message
  stays queued and that transport is retried with exponential backoff.

A message with recipients for several transports remembers, in memory, which of them are
done while another waits, so a retry does not send to them twice within one daemon run.
The store files a sent message (Sent Items, fsync) while the next one is being sent.

A spooler runs a pass when it starts (so a restart sends what a killed daemon left), when it
is kicked (message.submit, a provider's spooler_notify, a takeover), when a transport's
backoff ends, and for status.flush_queues, which ignores the backoff.

Two sessions with the same default store (the same MAPIUID: one Maildir) never both send it:
`queue_claims` lets the first run the queue and the others stand by.

The status rows show a sending period, not each pass: the transport's row goes
STATUS_OUTBOUND_ACTIVE with the first message and back SETTLE_S after the last pass that
sent, so a client that submits a message every few milliseconds does not make four row
events a message (progress in between at most every PROGRESS_INTERVAL_S).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

from mapid import entryid as eid
from mapid.constants import ResourceFlags, ResourceType, SpoolerNotify, StatusCode
from mapid.daemon.sessions.identity import primary_identity
from mapid.daemon.sessions.logon import ProviderHost
from mapid.daemon.sessions.session import SPOOLER_ROW
from mapid.daemon.sessions.slots import ProviderSlot, SlotState
from mapid.daemon.spool import ndr
from mapid.daemon.spool.outgoing import NoSender, Prepared, header_address, prepare, split_header
from mapid.daemon.spool.pass_records import Backoff, Busy, Flush, Job, Pass, Progress
from mapid.daemon.spool.routing import Router, Routes
from mapid.daemon.spool.stuck import StuckWatch
from mapid.daemon.spool.wakeup import Wakeup
from mapid.daemon.system import metrics as m
from mapid.errors import ErrorCode, MapiError
from mapid.providers.base import (
    REMOTE_PROGRESS_IDLE,
    Identity,
    OutgoingMessage,
    QueuedMessage,
    Recipient,
    SendResult,
    StoreProvider,
    TransportFailure,
    TransportProvider,
)

if TYPE_CHECKING:
    from mapid.daemon.sessions.session import Session

log = logging.getLogger("mapid.spooler")
T = TypeVar("T")

STOP_GRACE = 1.0
"""Seconds a stopping spooler lets the message in hand finish before it is cancelled (the
message then stays queued and is sent again later)."""
BATCH_MAX = 16
"""Queued messages for one transport handed over in one send_batch (one trip to its
thread for all of them). A daemon killed mid-batch sends those again after restart."""
FINISH_AHEAD = BATCH_MAX
"""Sent messages the store may still be filing while the spooler sends the next ones (a
whole batch, which the Maildir store files in one trip)."""
NO_TRANSPORT_STATUS = "5.1.0"
NO_SENDER_STATUS = "5.1.7"
NO_RECIPIENT_STATUS = "5.1.3"
_FAILED_AS = {
    NO_TRANSPORT_STATUS: m.SPOOL_NO_TRANSPORT,
    NO_SENDER_STATUS: m.SPOOL_NO_SENDER,
    NO_RECIPIENT_STATUS: m.SPOOL_NO_RECIPIENT,
}
"""/metrics' reason for a report of mapid's own making; a server's refusal is SPOOL_REFUSED."""


class SpoolerState(enum.Enum):
    IDLE = "idle"
    """Nothing queued that it could send now."""
    SENDING = "sending"
    WAITING_RETRY = "waiting_retry"
    """Messages wait for a transport: a backoff timer, or a transport that is not logged on."""
    STANDBY = "standby"
    """Another session sends this store's queue."""
    STOPPED = "stopped"


_TRANSITIONS: dict[SpoolerState, frozenset[SpoolerState]] = {
    SpoolerState.IDLE: frozenset(
        {SpoolerState.SENDING, SpoolerState.STANDBY, SpoolerState.STOPPED}
    ),
    SpoolerState.SENDING: frozenset(
        {
            SpoolerState.IDLE,
            SpoolerState.WAITING_RETRY,
            SpoolerState.STANDBY,
            SpoolerState.STOPPED,
        }
    ),
    SpoolerState.WAITING_RETRY: frozenset(
        {SpoolerState.SENDING, SpoolerState.IDLE, SpoolerState.STANDBY, SpoolerState.STOPPED}
    ),
    SpoolerState.STANDBY: frozenset(
        {SpoolerState.SENDING, SpoolerState.IDLE, SpoolerState.STOPPED}
    ),
    SpoolerState.STOPPED: frozenset(),
}


PROGRESS_INTERVAL_S = 0.25
"""The rows show a pass's progress at most this often (and always its first and last step)."""
SETTLE_S = 0.1
"""How long the rows keep saying "sending" after a pass that sent, for the next message of
a burst: a client submitting a message every few milliseconds then sees one sending
period, not an active/idle flicker of four row events a message."""
GATHER_S = 0.02
"""In a sending period, a message waits at most this long for others to join its batch
(see Spooler._gather; the first message of a burst goes at once). Mail is not timed in
milliseconds; the daemon's CPU per message in bench/spool.py is."""


def _addrtype(recipient: Recipient) -> str:
    return (recipient.addrtype or "SMTP").upper()


class Spooler:
    def __init__(self, session: Session, metrics: m.Metrics) -> None:
        self.session = session
        self._metrics = metrics
        self.state = SpoolerState.IDLE
        self.status_string = "idle"
        """What the spooler's row says; "idle" from the start, so a logon whose queue is
        empty publishes its rows once, not again when the first pass finds nothing."""
        self._wake = Wakeup()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._flushes: list[Flush] = []
        self._backoff: dict[bytes, Backoff] = {}
        self._progress: dict[bytes, Progress] = {}
        self._router = Router()
        self._claimed: bytes | None = None
        self._next_try: float | None = None
        self._busy: Busy | None = None
        self._kicks = 0
        """Kicks since the last pass began (a submit kicks once)."""
        self._first_kick = 0.0
        self._go = Wakeup()
        self.stuck = StuckWatch(session, self._own_store, self._set_status)
        """Set when the next pass must not wait (a batch is queued, a flush, a stop)."""

    # -- state machine -------------------------------------------------------------------
    def _transition(self, new: SpoolerState) -> None:
        if new is self.state:
            return
        if new not in _TRANSITIONS[self.state]:
            raise MapiError(
                ErrorCode.MAPI_E_CALL_FAILED,
                f"spooler of session {self.session.id} cannot go from {self.state.value} "
                f"to {new.value}",
            )
        self.state = new

    def _enter(self, new: SpoolerState, text: str) -> None:
        self._transition(new)
        self._set_status(text)

    def _set_status(self, text: str) -> None:
        self.status_string = text = self.stuck.decorate(text)  # stuck mail first (stuck.py)
        row = self.session.mapi_rows.get(SPOOLER_ROW)
        if row is not None and self.session.transports_on:
            self.session.table.modify(row, {"PR_STATUS_STRING": text})

    # -- what others call ----------------------------------------------------------------
    @property
    def label(self) -> str:
        return f"session {self.session.id}"

    def start(self) -> None:
        """Run a pass at once (start-up sends what a killed daemon left in the Outbox), or,
        when another session sends this store's queue, stand by at once."""
        self.refresh_address_types()
        if self._stand_by_at_start():
            return
        self._wake.set()
        self._ensure_task()

    def _stand_by_at_start(self) -> bool:
        """A new session of a store whose Outbox another session's spooler sends: in line
        now, before the session is public, with no pass (the sender's send what is queued):
        the logon's table has the right row, and a logon starts no task and no row event."""
        queue = self._queue()
        uid = None if isinstance(queue, str) else queue[1]
        owner = None if uid is None else self.session.env.queue_claims.owner(uid)
        if uid is None or owner is None or owner is self or self._claim(uid):
            return False  # ours, free or none: the pass at once sees to it
        self._enter(SpoolerState.STANDBY, f"standby: {owner.label} sends this store's Outbox")
        return True

    def _queue(self) -> tuple[StoreProvider, bytes] | str:
        """The default store and its MAPIUID (its queue's key), or why the spooler idles."""
        store = self._default_store()
        if store is None:
            return "idle"  # no store, no Outbox: nothing to send
        try:
            return store, eid.uid_of(store.store_entryid())
        except MapiError as exc:  # a store that keeps no queue (no entry ID, no Outbox)
            return f"idle: the default store queues nothing ({exc})"

    def _ensure_task(self) -> None:
        """The loop runs while there is something to do: a kick, a flush, a retry timer.
        With nothing to do it ends (`_run`), so the many spoolers in standby or idle hold no
        task, coroutine and timer each; the next kick starts it again."""
        if self._stopping or (self._task is not None and not self._task.done()):
            return
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"spooler-{self.session.id}"
        )
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if self._task is task:
            self._task = None  # a finished loop is not kept (one spooler a session)
        if task.cancelled() or task.exception() is None:
            return
        log.error(
            "spooler of session %s stopped on a bug", self.session.id, exc_info=task.exception()
        )
        for request in self._flushes:  # nobody waits for a pass that will not come
            if not request.done.done():
                request.done.set_exception(
                    MapiError(ErrorCode.MAPI_E_CALL_FAILED, "the spooler stopped on a bug")
                )
        self._flushes.clear()

    def kick(self) -> None:
        """Start a pass now (non-blocking; in a sending period, see GATHER_S); transports
        in backoff keep waiting."""
        if self._stopping:
            return
        self._kicks += 1
        if self._kicks == 1:
            self._first_kick = time.monotonic()
        if self._kicks >= BATCH_MAX:
            self._go.set()
        self._wake.set()
        self._ensure_task()

    async def _gather(self) -> None:
        """In a sending period, the next pass waits until a batch is queued or the first
        message since the last pass has waited GATHER_S: a client that submits one message
        after another then has them sent in batches, while a queue that keeps up a batch
        at a time never waits (the clock runs while the pass before is sending)."""
        delay = self._first_kick + GATHER_S - time.monotonic()
        if self._kicks and delay > 0 and not self._go.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._go.wait(), delay)

    def took_over(self) -> None:
        """The session that sent this store's queue let go: it is ours now."""
        self.kick()

    def notify(self, slot: ProviderSlot | None, flags: SpoolerNotify) -> None:
        """IMAPISupport::SpoolerNotify from a provider: NOTIFY_READYTOSEND from a transport
        that recovered ends its backoff; NOTIFY_CONFIG_CHANGE re-reads address types."""
        if flags & SpoolerNotify.NOTIFY_CONFIG_CHANGE:
            self.refresh_address_types()
        if flags & SpoolerNotify.NOTIFY_READYTOSEND and slot is not None and slot.is_transport:
            self._backoff.pop(slot.provider_uid, None)
        if flags & (SpoolerNotify.NOTIFY_READYTOSEND | SpoolerNotify.NOTIFY_CONFIG_CHANGE):
            self.kick()

    def refresh_address_types(self) -> None:
        """IXPLogon::AddressTypes of every transport, asked again (CONFIG_CHANGED)."""
        self._router.refresh(ProviderHost(self.session).transport_slots())

    async def flush(self, only: ProviderSlot | None = None) -> None:
        """status.flush_queues: a pass now that ignores the backoff (of `only`, or of every
        transport), sending only what `only` takes when given; returns when it is done."""
        if self._stopping:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flushes.append(Flush(only.provider_uid if only is not None else None, done))
        self._go.set()
        self._wake.set()
        self._ensure_task()
        await done

    async def stop(self) -> None:
        """Let the message in hand finish (or cancel it after STOP_GRACE), release the queue.
        What is still queued stays in the Outbox on disk."""
        if self.state is SpoolerState.STOPPED:
            return
        self._stopping = True
        self._go.set()
        self._wake.set()
        task = self._task
        if task is not None and not task.done():
            _done, pending = await asyncio.wait({task}, timeout=STOP_GRACE)
            if pending:
                task.cancel()
                await asyncio.wait({task})
        self._settle_now()
        self._release()
        self._metrics.spool_forget(self)
        for request in self._flushes:
            if not request.done.done():
                request.done.set_result(None)
        self._flushes.clear()
        self._transition(SpoolerState.STOPPED)
        self.status_string = "stopped"
        self.stuck.stop()

    # -- the loop ------------------------------------------------------------------------
    async def _run(self) -> None:
        while not self._stopping:
            if not self._wake.is_set():
                if self._next_try is None:
                    return  # nothing to do until a kick (_ensure_task)
                timeout = max(0.0, self._next_try - time.monotonic())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
            if self._stopping:
                break
            if self._busy is not None and not self._flushes:
                await self._gather()
                if self._stopping:
                    break
            self._kicks = 0
            self._go.clear()
            self._wake.clear()
            flushes, self._flushes = self._flushes, []
            failure: BaseException | None = None
            try:
                await self._pass(flushes)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("spooler of session %s: a pass failed", self.session.id)
                failure = exc
                self._next_try = time.monotonic() + self.session.env.spooler_retry_s
                retry = _seconds(self.session.env.spooler_retry_s)
                self._set_status(f"spooler error: {_reason(exc)}; next try in {retry} s")
            finally:
                for request in flushes:
                    if request.done.done():
                        continue
                    if failure is None:
                        request.done.set_result(None)
                    else:
                        request.done.set_exception(
                            MapiError(ErrorCode.MAPI_E_CALL_FAILED, f"flush failed: {failure}")
                        )

    def _release(self) -> None:
        if self._claimed is not None:
            self.session.env.queue_claims.release(self._claimed, self)
            self._claimed = None

    def _claim(self, uid: bytes) -> bool:
        if self._claimed is not None and self._claimed != uid:
            self._release()  # the default store changed: let the old queue go
        if self.session.env.queue_claims.claim(uid, self):
            self._claimed = uid
            self.stuck.start()  # only the sender of a queue watches it (no task per session)
            return True
        self._claimed = uid  # in line for it; release() takes us out of the line
        self.stuck.stop()
        return False

    def _own_store(self) -> StoreProvider | None:
        """The default store while this spooler sends its Outbox (stuck.py looks at it)."""
        owner = self.session.env.queue_claims.owner(self._claimed or b"")
        return self._default_store() if owner is self else None

    def _default_store(self) -> StoreProvider | None:
        table = self.session.table
        for instance in self.session.services:
            for slot in instance.slots:
                if slot.state != SlotState.ACTIVE or slot.row is None:
                    continue
                if slot.resource_type != ResourceType.MAPI_STORE_PROVIDER:
                    continue
                row = table.get(slot.row) or {}
                if int(row.get("PR_RESOURCE_FLAGS", 0)) & ResourceFlags.STATUS_DEFAULT_STORE:
                    provider = slot.provider
                    return provider if isinstance(provider, StoreProvider) else None
        return None

    async def _bounded(self, aw: Awaitable[T], calls: int = 1) -> T:
        """`aw` within the provider time-out (`calls` times it, for a batch)."""
        # asyncio.timeout, not wait_for: no task for each call (the spooler runs as a task).
        async with asyncio.timeout(self.session.env.provider_timeout * calls):
            return await aw

    async def _pass(self, flushes: list[Flush]) -> None:
        if flushes and all(f.only is not None for f in flushes):
            only: set[bytes] | None = {f.only for f in flushes if f.only is not None}
            forced: set[bytes] | None = set(only or ())
        else:
            only = None
            forced = None if flushes else set()
        run = Pass(forced=forced, only=only, flush=bool(flushes))
        self._next_try = None
        busy = self._take_busy()
        if busy is not None:  # the sending period goes on: no new "first" row events
            run.used, run.shown_at, run.continued = busy.used, busy.shown_at, True
        try:
            await self._queue_pass(run)
        except BaseException:
            self._end_transports(run)
            raise
        if self.state is SpoolerState.STANDBY:  # the queue's owner counts it
            self._metrics.spool_forget(self)
        else:
            oldest = min(run.stamps.values(), default=None)
            self._metrics.spool_queue(self, run.total - run.handled, oldest)
        if run.used and (self._busy is None or self._busy.used is not run.used):
            self._end_transports(run)  # it stopped midway: no sending period goes on

    async def _queue_pass(self, run: Pass) -> None:
        """The pass proper; it leaves the rows of the transports it used to _after_pass,
        or ends them itself when it returns early."""
        queue = self._queue()
        if isinstance(queue, str):
            self._end_transports(run)
            self._enter(SpoolerState.IDLE, queue)
            return
        store, uid = queue
        if not self._claim(uid):
            self._end_transports(run)
            owner = self.session.env.queue_claims.owner(uid)
            who = owner.label if owner is not None else "another session"
            self._enter(SpoolerState.STANDBY, f"standby: {who} sends this store's Outbox")
            if owner is not None:  # what this session queued, the owner sends
                if run.flush:
                    await owner.flush()  # its whole queue: our transports are not its own
                else:
                    owner.kick()
            return
        # Ranked once per pass (it reads the profile): the backoff check and the sends share it.
        transports = ProviderHost(self.session).transport_slots()
        run.routes = self._router.routes(transports, primary_identity(self.session))
        forced = run.forced
        if forced is not None and not forced and await self._all_waiting(store, transports, run):
            self._end_transports(run)
            return  # a submit while every transport waits out its backoff: nothing to try
        entryids = await self._bounded(store.queued())
        for gone in set(self._progress) - set(entryids):
            del self._progress[gone]
        run.total = len(entryids)
        if not entryids:
            self._end_transports(run)
            self._enter(SpoolerState.IDLE, "idle")
            return
        self._transition(SpoolerState.SENDING)
        try:
            batch: list[Job] = []  # consecutive messages that all go to one transport
            for run.index, entryid in enumerate(entryids, 1):
                if self._stopping:
                    return
                message = await self._read_queued(store, entryid, run)
                if message is None:
                    continue
                if message.submitted is not None:
                    run.stamps[entryid] = message.submitted.timestamp()
                job = self._plan(message, run.routes, run)
                if job is None:
                    continue
                slot = job.single_slot()
                if batch and (
                    slot is None
                    or slot.provider_uid != batch[0].sends[0][0].provider_uid
                    or len(batch) >= BATCH_MAX
                ):
                    await self._send_batch(store, batch, run)
                    batch = []
                if slot is not None:
                    batch.append(job)
                    continue
                for target, _recipients in job.sends:  # recipients for several transports
                    await self._send_all(target, [job], run)
                await self._conclude(store, job, run)
            if batch and not self._stopping:
                await self._send_batch(store, batch, run)
        finally:
            if run.finishing:  # even when cancelled: a hand-back is not left half done
                await asyncio.wait(set(run.finishing))
        self._after_pass(run)
        if run.only is not None:
            self.kick()  # the other transports' messages follow the ordinary rules

    async def _all_waiting(
        self, store: StoreProvider, transports: list[ProviderSlot], run: Pass
    ) -> bool:
        """Whether every logged-on transport is in backoff; if so, count the queue for the
        spooler's row and leave the messages to the retry timer. Reading each queued
        message only to find its transport waiting cost milliseconds a submit."""
        now = time.monotonic()
        active = [s for s in transports if s.state == SlotState.ACTIVE]
        waits = [self._backoff.get(s.provider_uid) for s in active]
        if not active or any(w is None or w.until <= now for w in waits):
            return False
        first = min((w for w in waits if w is not None), key=lambda w: w.until)
        count = run.total = len(await self._bounded(store.queued()))
        self._next_try = first.until
        delay = _seconds(max(0.0, first.until - now))
        self._enter(
            SpoolerState.WAITING_RETRY, f"{count} queued; next try in {delay} s: {first.reason}"
        )
        return True

    def _after_pass(self, run: Pass) -> None:
        if self._stopping:
            self._end_transports(run)
            return
        if not run.waiting:
            if run.used and not run.flush:  # the rows settle a moment later, unless more comes
                settle = asyncio.get_running_loop().call_later(SETTLE_S, self._settle_now)
                self._busy = Busy(run.used, run.shown_at, settle)
                return
            self._end_transports(run)
            self._enter(SpoolerState.IDLE, "idle")
            return
        self._end_transports(run)
        now = time.monotonic()
        tries = [b.until for b in self._backoff.values()]
        self._next_try = min(tries) if tries else None
        queued = f"{run.waiting} queued"
        if self._next_try is not None:
            delay = max(0.0, self._next_try - now)
            text = f"{queued}; next try in {_seconds(delay)} s: {run.reason}"
        else:
            text = f"{queued}: {run.reason}"
        self._enter(SpoolerState.WAITING_RETRY, text)

    # -- one message ---------------------------------------------------------------------
    async def _read_queued(
        self, store: StoreProvider, entryid: bytes, run: Pass
    ) -> QueuedMessage | None:
        """The queued message, or None when it left the queue or cannot be read (one
        unreadable file must not stop the queue)."""
        try:
            return await self._bounded(store.queued_message(entryid))
        except MapiError as exc:
            if exc.code == ErrorCode.MAPI_E_NOT_FOUND:
                return None  # it left the queue meanwhile
            log.warning("cannot read queued message: %s", exc)
            run.wait(f"cannot read a queued message: {_reason(exc)}")
        except Exception as exc:
            log.exception("the store failed to read a queued message")
            run.wait(f"cannot read a queued message: {_reason(exc)}")
        return None

    def _plan(self, message: QueuedMessage, routes: Routes, run: Pass) -> Job | None:
        """Which transport takes which of the recipients still to do (by the sender, then
        the address type); None when a flush of another transport's queue leaves this
        message alone."""
        progress = self._progress.setdefault(message.entryid, Progress())
        groups: dict[str, list[Recipient]] = {}
        seen: set[str] = set()
        for recipient in message.recipients:
            key = recipient.address.casefold()
            if key in seen or progress.done(recipient.address):
                continue
            seen.add(key)
            groups.setdefault(_addrtype(recipient), []).append(recipient)
        if not message.recipients:
            progress.failures["(none)"] = ndr.Failure(
                "(none)", "", "the message has no recipients", NO_RECIPIENT_STATUS
            )
        fields, _rest = split_header(message.mime)
        sender = header_address(fields, "From")
        chosen = {kind: routes.route(kind, sender) for kind in groups}
        if run.only is not None and not any(
            isinstance(r, ProviderSlot) and r.provider_uid in run.only for r in chosen.values()
        ):
            return None
        job = Job(run.index, message, progress, sender, routes.keeps_from(sender))
        by_slot: dict[bytes, tuple[ProviderSlot, list[Recipient]]] = {}
        for kind, recipients in groups.items():
            route = chosen[kind]
            if route is None:
                reason = f"no transport of this profile takes address type {kind}"
                self._fail(progress, recipients, reason, NO_TRANSPORT_STATUS)
            elif isinstance(route, str):
                job.hold(route)
            else:
                by_slot.setdefault(route.provider_uid, (route, []))[1].extend(recipients)
        job.sends = list(by_slot.values())
        return job

    async def _send_batch(self, store: StoreProvider, jobs: list[Job], run: Pass) -> None:
        """Messages that all go to one transport: as many as it takes in one send_batch,
        then the rest; each is handed back in queue order."""
        slot = jobs[0].sends[0][0]
        while jobs:
            handled = await self._send_all(slot, jobs, run)
            for job in jobs[:handled]:
                await self._conclude(store, job, run)
            jobs = jobs[handled:]
            if self._stopping:
                return  # the rest stays queued

    async def _send_all(self, slot: ProviderSlot, jobs: list[Job], run: Pass) -> int:
        """Send each job's recipients of `slot`: one send() for one message, one
        send_batch() for more. Returns how many jobs, from the first, are dealt with; the
        others the transport did not get to (a batch it cut short)."""
        uid = slot.provider_uid
        name = slot.service.section.key
        backoff = self._backoff.get(uid)
        if uid in run.failed_now or (
            backoff is not None and backoff.until > time.monotonic() and not run.is_forced(slot)
        ):
            assert backoff is not None
            for job in jobs:
                job.hold(backoff.reason)
            return len(jobs)
        transport, routes = slot.provider, run.routes
        assert isinstance(transport, TransportProvider) and routes is not None
        override, identity = routes.override(slot), routes.identity
        ready: list[tuple[int, list[Recipient], Prepared]] = []
        for position, job in enumerate(jobs):
            recipients = job.recipients_for(slot)
            own = None if job.keep_from else override
            try:
                prepared = prepare(job.message.mime, override=own, identity=identity)
            except NoSender as exc:
                self._fail(job.progress, recipients, str(exc), NO_SENDER_STATUS)
                continue
            except Exception as exc:  # it would fail the same way every time: report it
                log.exception("cannot prepare a queued message for sending")
                self._fail(job.progress, recipients, f"cannot prepare the message: {_reason(exc)}")
                continue
            ready.append((position, recipients, prepared))
        if not ready:
            return len(jobs)
        run.index = jobs[ready[0][0]].index
        self._show_progress(slot, run, sent=False)
        outgoing = [
            OutgoingMessage(jobs[i].message.entryid, p.mime, tuple(r), p.sender)
            for i, r, p in ready
        ]
        outcomes: list[SendResult | TransportFailure] = []
        try:
            if len(outgoing) == 1:
                outcomes = [await self._bounded(transport.send(outgoing[0]))]
            else:
                batch = transport.send_batch(outgoing)
                outcomes = list(await self._bounded(batch, len(outgoing)))
        except TransportFailure as exc:  # the first message's failure (all of a send())
            outcomes = [exc]
        except TimeoutError:
            timeout = _seconds(self.session.env.provider_timeout * len(outgoing))
            self._defer(slot, f"{name}: no answer in {timeout} s", run)
        except MapiError as exc:
            self._defer(slot, f"{name}: {_reason(exc)}", run)
        except Exception as exc:
            log.exception("transport %s failed to send", slot.key)
            self._defer(slot, f"{name}: {_reason(exc)}", run)
        if not outcomes and uid not in run.failed_now:  # it must say something of the first
            log.error("transport %s returned no outcome for a batch", slot.key)
            self._defer(slot, f"{name}: a bug in the transport (see the log)", run)
        failed_at = 0  # in `ready`: the first message a temporary failure leaves queued
        for at, ((position, recipients, prepared), outcome) in enumerate(
            zip(ready, outcomes, strict=False)
        ):
            job = jobs[position]
            run.index = job.index
            if isinstance(outcome, SendResult):
                self._backoff.pop(uid, None)
                self._record(job, recipients, prepared, outcome)
            elif isinstance(outcome, TransportFailure) and outcome.permanent:
                self._fail(job.progress, recipients, outcome.message)
                self._backoff.pop(uid, None)
            elif isinstance(outcome, TransportFailure):
                failed_at = at
                self._defer(slot, f"{name}: {outcome.message}", run)
                break
            else:
                failed_at = at
                log.error("transport %s gave %r for a message, not a result", slot.key, outcome)
                self._defer(slot, f"{name}: a bug in the transport (see the log)", run)
                break
        self._show_progress(slot, run, sent=True)
        if uid in run.failed_now:  # a temporary failure: this message and the rest wait
            self._metrics.spooler_failed.labels(m.SPOOL_TEMPORARY).inc(len(ready) - failed_at)
            reason = self._backoff[uid].reason
            for position, _recipients, _prepared in ready[failed_at:]:
                jobs[position].hold(reason)
            return len(jobs)
        if len(outcomes) >= len(ready):
            return len(jobs)
        return ready[len(outcomes)][0]  # cut short: the transport did not get to these

    def _record(
        self, job: Job, recipients: list[Recipient], prepared: Prepared, result: SendResult
    ) -> None:
        progress = job.progress
        refused = {a.casefold(): words for a, words in result.refused.items()}
        for r in recipients:
            words = refused.get(r.address.casefold())
            if words is None:
                progress.accepted.add(r.address.casefold())
            else:
                progress.failures[r.address.casefold()] = ndr.Failure(
                    r.address, r.display_name, words
                )
        if progress.accepted and progress.sent_mime is None:
            progress.sent_mime = prepared.record

    async def _conclude(self, store: StoreProvider, job: Job, run: Pass) -> None:
        """A message whose sends are all done goes back to the store (Sent Items, a report)
        while the next ones are sent; one that waits for a transport stays queued."""
        if job.waiting:
            run.wait(job.waiting)
            return
        run.handled += 1
        task = asyncio.get_running_loop().create_task(
            self._finish(store, job.message, job.progress, job.own_from, run)
        )
        run.finishing.add(task)
        task.add_done_callback(run.finishing.discard)
        if len(run.finishing) >= FINISH_AHEAD:
            await asyncio.wait(set(run.finishing), return_when=asyncio.FIRST_COMPLETED)

    @staticmethod
    def _fail(
        progress: Progress, recipients: list[Recipient], reason: str, status: str = ""
    ) -> None:
        for r in recipients:
            progress.failures[r.address.casefold()] = ndr.Failure(
                r.address, r.display_name, reason, status
            )

    def _defer(self, slot: ProviderSlot, reason: str, run: Pass) -> None:
        env = self.session.env
        before = self._backoff.get(slot.provider_uid)
        first = env.spooler_retry_s
        cap = max(first, env.spooler_retry_max_s)
        delay = first if before is None else min(before.delay * 2, cap)
        self._backoff[slot.provider_uid] = Backoff(delay, time.monotonic() + delay, reason)
        run.failed_now.add(slot.provider_uid)
        log.info("session %s: %s; next try in %s s", self.session.id, reason, _seconds(delay))

    async def _finish(
        self,
        store: StoreProvider,
        message: QueuedMessage,
        progress: Progress,
        own_from: Identity | None,
        run: Pass,
    ) -> None:
        """Report the failures, then let the message leave the Outbox: the report goes
        first, so a crash in between repeats the report rather than lose it."""
        delivered = bool(progress.accepted)
        failures = list(progress.failures.values())
        try:
            if failures and not progress.reported:
                report = ndr.build(
                    message.mime,
                    failures,
                    to=own_from or primary_identity(self.session),
                    delivered_to_others=delivered,
                )
                report_id = await self._bounded(store.deliver(report))
                progress.reported = True
                tell = self.session.env.on_send_failed  # the desktop (system/desktop.py)
                ndr.announce(tell, message.mime, failures, delivered, report_id)
            delete = message.delete_after_submit if delivered else True
            sent = progress.sent_mime if delivered else None
            try:
                await self._bounded(store.finished(message.entryid, sent_mime=sent, delete=delete))
            except MapiError as exc:
                if exc.code != ErrorCode.MAPI_E_NOT_FOUND:
                    raise  # NOT_FOUND: deleted from the Outbox meanwhile, nothing to move
        except Exception as exc:
            if not isinstance(exc, MapiError | TimeoutError):
                log.exception("the store failed to take back a sent message")
            # Tried again next pass; what was sent is not sent again (this run remembers).
            run.wait(f"the store did not take the message back: {_reason(exc)}")
            run.handled -= 1
            return
        self._progress.pop(message.entryid, None)
        run.stamps.pop(message.entryid, None)
        if delivered:
            self._metrics.spooler_sent.inc()
        if failures:
            reason = _FAILED_AS.get(failures[0].status, m.SPOOL_REFUSED)
            self._metrics.spooler_failed.labels(reason).inc()

    # -- transport rows ------------------------------------------------------------------
    def _show_progress(self, slot: ProviderSlot, run: Pass, *, sent: bool) -> None:
        """ "sending 3 of 10" in the spooler's row; in the transport's, the share of the pass
        done (before the send of message 3: 20 %, after it: 30 %)."""
        total = max(run.total, 1)
        text = f"sending {run.index} of {total}"
        first = slot.provider_uid not in run.used
        now = time.monotonic()
        last = run.index >= total and not run.continued
        if not first and not last and now - run.shown_at < PROGRESS_INTERVAL_S:
            return  # a queue of a thousand must not publish two thousand row events
        run.shown_at = now
        if not sent:
            self._set_status(text)
        if slot.row is None:
            return
        done = run.index if sent else run.index - 1
        props: dict[str, Any] = {
            "PR_REMOTE_PROGRESS": min(100, done * 100 // total),
            "PR_REMOTE_PROGRESS_TEXT": text,
        }
        if first:  # its first message of the pass
            run.used[slot.provider_uid] = slot
            row = self.session.table.get(slot.row) or {}
            code = int(row.get("PR_STATUS_CODE", 0)) | StatusCode.STATUS_OUTBOUND_ACTIVE
            props["PR_STATUS_CODE"] = int(code)
        self.session.table.modify(slot.row, props)

    def _take_busy(self) -> Busy | None:
        busy, self._busy = self._busy, None
        if busy is not None:
            busy.settle.cancel()
        return busy

    def _settle_now(self) -> None:
        """The end of a sending period: the transports' rows and the spooler's go idle."""
        busy = self._take_busy()
        if busy is None:
            return
        self._end_used(busy.used)
        if not self._stopping and self.state is SpoolerState.SENDING:
            self._enter(SpoolerState.IDLE, "idle")

    def _end_transports(self, run: Pass) -> None:
        self._end_used(run.used)
        run.used = {}

    def _end_used(self, used: dict[bytes, ProviderSlot]) -> None:
        """Clear STATUS_OUTBOUND_ACTIVE and put back the idle progress of each transport
        the pass used; the transport's own PR_STATUS_STRING stays as it wrote it."""
        for slot in used.values():
            if slot.row is None:
                continue
            row = self.session.table.get(slot.row) or {}
            code = int(row.get("PR_STATUS_CODE", 0)) & ~StatusCode.STATUS_OUTBOUND_ACTIVE
            idle: Any = REMOTE_PROGRESS_IDLE
            if slot.provider is not None and slot.state == SlotState.ACTIVE:
                try:
                    idle = slot.provider.status_props().get("PR_REMOTE_PROGRESS", idle)
                except Exception:
                    log.exception("status_props of %s failed", slot.key)
            self.session.table.modify(
                slot.row,
                {
                    "PR_STATUS_CODE": int(code),
                    "PR_REMOTE_PROGRESS": idle,
                    "PR_REMOTE_PROGRESS_TEXT": None,
                },
            )


def _seconds(value: float) -> str:
    """Whole seconds, rounded up; tenths below one second ("0.5")."""
    return str(math.ceil(value)) if value >= 1 else f"{math.ceil(value * 10) / 10:.1f}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, MapiError):
        return f"{exc.code.name}: {exc.message}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"
