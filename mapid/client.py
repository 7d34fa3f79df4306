"""The client library: `Client` (blocking) and `AsyncClient` (asyncio).

Both speak docs/protocol.md over one DEALER socket with a stable routing id, so the daemon's
reply cache and private notifications follow the client across reconnects. Each has one
method per operation (named after the op: `session.status_table` is `session_status_table`)
and a generic `call`. Errors are distinct: `DaemonUnreachable` when no daemon is there,
`RequestTimedOut` when one is there but did not answer in time, and `MapiError` when it
answered with a MAPI error.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

import zmq

from mapid.errors import DaemonUnreachable, ErrorCode, MapidError, MapiError, RequestTimedOut
from mapid.paths import ConnectionInfo, client_runtime_dir, read_connection_file
from mapid.remote import KEY_HINT, HandshakeWatch, apply_curve
from mapid.wire import envelope
from mapid.wire.codec import CodecError, pack, unpack
from mapid.wire.link import EVENTS as _EVENTS
from mapid.wire.link import MORE as _MORE
from mapid.wire.link import NOBLOCK as _NOBLOCK
from mapid.wire.link import POLLIN as _POLLIN
from mapid.wire.link import RCVMORE as _RCVMORE

DEFAULT_TIMEOUT = 10.0
WATCH_INTERVAL_MS = 100
"""How often a CURVE client looks whether the daemon refused its key while it waits."""

Flags = int | str | Sequence[str] | None
TableArgs = Mapping[str, Any]


class Result(dict[str, Any]):
    """An op's result map; `warning` holds a MAPI warning such as `MAPI_W_NO_SERVICE`."""

    warning: str | None = None


def resolve_connection(
    runtime: str | os.PathLike[str] | None = None, endpoint: str | None = None
) -> tuple[str, ConnectionInfo | None, Path]:
    """Find the request endpoint: an explicit one, else the connection file's.

    With an explicit endpoint the local connection file describes that daemon only when it
    names the same endpoint (a remote daemon's pid means nothing here)."""
    directory = Path(runtime) if runtime is not None else client_runtime_dir()
    info = read_connection_file(directory)
    if endpoint is not None:
        return endpoint, info if info is not None and info.request == endpoint else None, directory
    if info is None:
        raise DaemonUnreachable(
            f"no daemon is running: no connection file {directory / 'mapid.json'} "
            "(start one with `mapid run`)"
        )
    return info.request, info, directory


def probe(endpoint: str, info: ConnectionInfo | None) -> str | None:
    """Why the daemon at `endpoint` cannot be reached, or None when something listens there."""
    if info is not None and info.pid > 0:
        try:
            os.kill(info.pid, 0)
        except ProcessLookupError:
            return f"the daemon (pid {info.pid}) is not running"
        except PermissionError:
            pass
    if endpoint.startswith("ipc://"):
        path = endpoint[len("ipc://") :]
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            try:
                sock.connect(path)
            except OSError as exc:
                return f"nothing listens at {endpoint}: {exc.strerror or exc}"
    elif endpoint.startswith("tcp://"):
        host, _, port = endpoint[len("tcp://") :].rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                pass
        except (OSError, ValueError) as exc:
            return f"nothing listens at {endpoint}: {exc}"
    return None


def _reply_result(payload: Mapping[str, Any]) -> Result:
    if payload.get("ok") is True:
        result = Result(payload.get("result") or {})
        warning = payload.get("warning")
        result.warning = warning if isinstance(warning, str) else None
        return result
    raise MapiError.from_wire(payload.get("error"))


def _open_dealer(
    context: zmq.Context[Any] | None, curve: Mapping[str, bytes] | None, endpoint: str
) -> tuple[zmq.Socket[bytes], HandshakeWatch | None]:
    """The client's DEALER, connected: a plain socket even on a zmq.asyncio context (the
    async client reads it from its descriptor), CURVE set up when `curve` is given."""
    ctx: zmq.Context[Any] = zmq.Context.shadow((context or zmq.Context.instance()).underlying)
    sock: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
    try:
        sock.setsockopt(zmq.ROUTING_ID, b"mapid-" + secrets.token_hex(8).encode())
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, -1)
        apply_curve(sock, endpoint, curve)
        watch = HandshakeWatch(sock) if curve else None
    except BaseException:
        sock.close(linger=0)
        raise
    sock.connect(endpoint)
    return sock, watch


def _no_reply(op: str, total: float, endpoint: str, watch: HandshakeWatch | None) -> MapidError:
    """The failure after a call got no reply: a refused handshake says so."""
    refused = watch.why() if watch is not None else None
    if refused is not None:
        return DaemonUnreachable(f"{endpoint}: {refused}", endpoint=endpoint)
    hint = f" from {endpoint}: {KEY_HINT}" if watch is not None else ""
    return RequestTimedOut(f"{op}: no reply within {total:g} s{hint}", op=op, timeout=total)


def _send_now(sock: zmq.Socket[Any], frames: list[bytes]) -> None:
    """Send without blocking: a socket with no peer yet (or refused) keeps the loop going."""
    with contextlib.suppress(zmq.Again):
        sock.send_multipart(frames, flags=zmq.NOBLOCK)


R = TypeVar("R")


class _Ops(Generic[R]):
    """One method per operation of docs/protocol.md 6, shared by both clients."""

    def call(
        self,
        op: str,
        args: Mapping[str, Any] | None = None,
        *,
        token: bytes | None = None,
        timeout: float | None = None,
        deadline_ms: int | None = None,
    ) -> R:
        raise NotImplementedError

    def _op(self, op: str, token: bytes | None = None, /, **args: Any) -> R:
        return self.call(op, {k: v for k, v in args.items() if v is not None}, token=token)

    def _table(self, op: str, token: bytes | None, table: TableArgs | None, **args: Any) -> R:
        merged = dict(table or {})
        merged.update({k: v for k, v in args.items() if v is not None})
        return self.call(op, merged, token=token)

    # 6.1 daemon
    def daemon_hello(self) -> R:
        return self._op("daemon.hello")

    def daemon_ping(self) -> R:
        return self._op("daemon.ping")

    def daemon_snapshot(self, prefix: str | None = None, cursor: str | None = None) -> R:
        return self._op("daemon.snapshot", None, prefix=prefix, cursor=cursor)

    def daemon_sessions(self) -> R:
        return self._op("daemon.sessions")

    def daemon_reload(self, check: bool | None = None) -> R:
        return self._op("daemon.reload", None, check=check)

    def daemon_stats(self) -> R:
        return self._op("daemon.stats")

    # 6.2 profiles
    def profiles_table(self, table: TableArgs | None = None) -> R:
        return self._table("profiles.table", None, table)

    def profiles_create(self, name: str) -> R:
        return self._op("profiles.create", None, name=name)

    def profiles_delete(self, name: str) -> R:
        return self._op("profiles.delete", None, name=name)

    def profiles_copy(self, name: str, new_name: str) -> R:
        return self._op("profiles.copy", None, name=name, new_name=new_name)

    def profiles_rename(self, name: str, new_name: str) -> R:
        return self._op("profiles.rename", None, name=name, new_name=new_name)

    def profiles_set_default(self, name: str | None) -> R:
        return self.call("profiles.set_default", {"name": name})

    # 6.4 session
    def session_logon(
        self,
        profile: str | None = None,
        flags: Flags = None,
        *,
        client: Mapping[str, Any] | None = None,
        lease_s: float | None = None,
    ) -> R:
        if client is None:
            client = {"name": "mapid.client", "pid": os.getpid()}
        return self._op(
            "session.logon", None, profile=profile, flags=flags, client=client, lease_s=lease_s
        )

    def session_logoff(self, token: bytes, flags: Flags = None) -> R:
        return self._op("session.logoff", token, flags=flags)

    def session_renew(self, token: bytes) -> R:
        return self._op("session.renew", token)

    def session_get_last_error(self, token: bytes) -> R:
        return self._op("session.get_last_error", token)

    def session_status_table(self, token: bytes, table: TableArgs | None = None) -> R:
        return self._table("session.status_table", token, table)

    def session_msg_stores_table(self, token: bytes, table: TableArgs | None = None) -> R:
        return self._table("session.msg_stores_table", token, table)

    def session_open_msg_store(self, token: bytes, entryid: bytes, flags: Flags = None) -> R:
        return self._op("session.open_msg_store", token, entryid=entryid, flags=flags)

    def session_open_address_book(self, token: bytes, flags: Flags = None) -> R:
        return self._op("session.open_address_book", token, flags=flags)

    def session_open_entry(self, token: bytes, entryid: bytes | None, flags: Flags = None) -> R:
        args: dict[str, Any] = {"entryid": entryid}
        if flags is not None:
            args["flags"] = flags
        return self.call("session.open_entry", args, token=token)

    def session_compare_entryids(self, token: bytes, a: bytes, b: bytes) -> R:
        return self._op("session.compare_entryids", token, a=a, b=b)

    def session_query_identity(self, token: bytes) -> R:
        return self._op("session.query_identity", token)

    def session_set_default_store(self, token: bytes, flags: Flags, entryid: bytes | None) -> R:
        return self.call(
            "session.set_default_store", {"flags": flags, "entryid": entryid}, token=token
        )

    def session_open_profile_section(self, token: bytes, uid: bytes, flags: Flags = None) -> R:
        return self._op("session.open_profile_section", token, uid=uid, flags=flags)

    def session_enum_adr_types(self, token: bytes) -> R:
        return self._op("session.enum_adr_types", token)

    def session_advise(self, token: bytes, event_mask: Flags, entryid: bytes | None = None) -> R:
        return self.call(
            "session.advise", {"entryid": entryid, "event_mask": event_mask}, token=token
        )

    def session_unadvise(self, token: bytes, connection: int) -> R:
        return self._op("session.unadvise", token, connection=connection)

    # 6.3 services
    def services_available(self) -> R:
        return self._op("services.available")

    def services_table(
        self,
        token: bytes | None = None,
        *,
        profile: str | None = None,
        table: TableArgs | None = None,
    ) -> R:
        return self._table("services.table", token, table, profile=profile)

    def services_providers(
        self,
        token: bytes | None = None,
        *,
        profile: str | None = None,
        service_uid: bytes | None = None,
        table: TableArgs | None = None,
    ) -> R:
        return self._table(
            "services.providers", token, table, profile=profile, service_uid=service_uid
        )

    def services_create(
        self,
        token: bytes | None = None,
        *,
        profile: str | None = None,
        service_name: str,
        display_name: str | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> R:
        return self._op(
            "services.create",
            token,
            profile=profile,
            service_name=service_name,
            display_name=display_name,
            config=config,
        )

    def services_configure(
        self,
        token: bytes | None = None,
        *,
        profile: str | None = None,
        service_uid: bytes,
        config: Mapping[str, Any],
    ) -> R:
        return self._op(
            "services.configure", token, profile=profile, service_uid=service_uid, config=config
        )

    def services_delete(
        self, token: bytes | None = None, *, profile: str | None = None, service_uid: bytes
    ) -> R:
        return self._op("services.delete", token, profile=profile, service_uid=service_uid)

    def services_copy(
        self,
        token: bytes | None = None,
        *,
        profile: str | None = None,
        service_uid: bytes,
        to_profile: str,
    ) -> R:
        return self._op(
            "services.copy", token, profile=profile, service_uid=service_uid, to_profile=to_profile
        )

    def services_set_primary_identity(
        self, token: bytes | None = None, *, profile: str | None = None, service_uid: bytes | None
    ) -> R:
        args: dict[str, Any] = {"service_uid": service_uid}  # nil: no identity at all
        if profile is not None:
            args["profile"] = profile
        return self.call("services.set_primary_identity", args, token=token)

    def services_transport_order(
        self,
        token: bytes | None = None,
        *,
        profile: str | None = None,
        provider_uids: Sequence[bytes],
    ) -> R:
        return self._op(
            "services.transport_order", token, profile=profile, provider_uids=list(provider_uids)
        )

    # 6.5 objects
    def object_get_props(self, token: bytes, handle: int, tags: Sequence[str] | None = None) -> R:
        return self._op("object.get_props", token, handle=handle, tags=tags)

    def object_set_props(self, token: bytes, handle: int, props: Mapping[str, Any]) -> R:
        return self._op("object.set_props", token, handle=handle, props=props)

    def object_delete_props(self, token: bytes, handle: int, tags: Sequence[str]) -> R:
        return self._op("object.delete_props", token, handle=handle, tags=tags)

    def object_save_changes(self, token: bytes, handle: int) -> R:
        return self._op("object.save_changes", token, handle=handle)

    def object_release(self, token: bytes, handle: int) -> R:
        return self._op("object.release", token, handle=handle)

    def container_hierarchy_table(
        self, token: bytes, handle: int, table: TableArgs | None = None
    ) -> R:
        return self._table("container.hierarchy_table", token, table, handle=handle)

    def container_contents_table(
        self, token: bytes, handle: int, table: TableArgs | None = None
    ) -> R:
        return self._table("container.contents_table", token, table, handle=handle)

    def container_open_entry(self, token: bytes, handle: int, entryid: bytes | None) -> R:
        return self.call(
            "container.open_entry", {"handle": handle, "entryid": entryid}, token=token
        )

    def folder_create_folder(self, token: bytes, handle: int, name: str) -> R:
        return self._op("folder.create_folder", token, handle=handle, name=name)

    def folder_create_message(
        self,
        token: bytes,
        handle: int,
        props: Mapping[str, Any] | None = None,
        recipients: Sequence[Mapping[str, Any]] | None = None,
    ) -> R:
        """`props` and `recipients` (capability `create_message.props`) are set in the same
        request, as object_set_props and message_modify_recipients would set them."""
        return self._op(
            "folder.create_message",
            token,
            handle=handle,
            props=dict(props) if props is not None else None,
            recipients=[dict(r) for r in recipients] if recipients is not None else None,
        )

    def folder_import_message(self, token: bytes, handle: int, mime: bytes) -> R:
        return self._op("folder.import_message", token, handle=handle, mime=mime)

    def folder_delete_messages(self, token: bytes, handle: int, entryids: Sequence[bytes]) -> R:
        return self._op("folder.delete_messages", token, handle=handle, entryids=list(entryids))

    def folder_copy_messages(
        self,
        token: bytes,
        handle: int,
        entryids: Sequence[bytes],
        dest: bytes,
        move: bool | None = None,
    ) -> R:
        return self._op(
            "folder.copy_messages",
            token,
            handle=handle,
            entryids=list(entryids),
            dest=dest,
            move=move,
        )

    def message_get_mime(self, token: bytes, handle: int) -> R:
        return self._op("message.get_mime", token, handle=handle)

    def message_modify_recipients(
        self, token: bytes, handle: int, recipients: Sequence[Mapping[str, Any]]
    ) -> R:
        return self._op(
            "message.modify_recipients",
            token,
            handle=handle,
            recipients=[dict(r) for r in recipients],
        )

    def message_recipients_table(
        self, token: bytes, handle: int, table: TableArgs | None = None
    ) -> R:
        return self._table("message.recipients_table", token, table, handle=handle)

    def message_submit(self, token: bytes, handle: int, release: bool | None = None) -> R:
        """`release` (capability `submit.release`): a submit that succeeded releases the
        handle too."""
        return self._op("message.submit", token, handle=handle, release=release)

    def ab_resolve_names(self, token: bytes, handle: int, names: Sequence[str]) -> R:
        return self._op("ab.resolve_names", token, handle=handle, names=list(names))

    def abcontainer_create_entry(self, token: bytes, handle: int, props: Mapping[str, Any]) -> R:
        """A new mail user in the container `handle` (opened with MAPI_MODIFY); -> `entryid`.
        Edit one with object_set_props + object_save_changes on a MAPI_MODIFY handle."""
        return self._op("abcontainer.create_entry", token, handle=handle, props=dict(props))

    def abcontainer_delete_entries(self, token: bytes, handle: int, entryids: Sequence[bytes]) -> R:
        return self._op("abcontainer.delete_entries", token, handle=handle, entryids=list(entryids))

    # 6.6 status objects
    def status_validate_state(self, token: bytes, handle: int, flags: Flags = 0) -> R:
        return self.call("status.validate_state", {"handle": handle, "flags": flags}, token=token)

    def status_flush_queues(self, token: bytes, handle: int, flags: Flags = 0) -> R:
        return self.call("status.flush_queues", {"handle": handle, "flags": flags}, token=token)

    def status_settings(
        self, token: bytes, handle: int, config: Mapping[str, Any] | None = None
    ) -> R:
        return self._op("status.settings", token, handle=handle, config=config)

    def status_change_password(self, token: bytes, handle: int, old: str, new: str) -> R:
        return self._op("status.change_password", token, handle=handle, old=old, new=new)


class Client(_Ops[Result]):
    """A blocking client. Not thread-safe: use one per thread.

    `timeout` bounds each call; within it the request is resent `retries` times with the
    same id (the daemon answers a resend from its reply cache, never running it twice).
    Private notifications that arrive meanwhile are kept for `recv_notification`.
    """

    def __init__(
        self,
        runtime: str | os.PathLike[str] | None = None,
        *,
        endpoint: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = 1,
        curve: Mapping[str, bytes] | None = None,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        self.endpoint, self.info, self.runtime_dir = resolve_connection(runtime, endpoint)
        self.timeout = timeout
        self.retries = max(0, retries)
        self._sock, self._watch = _open_dealer(context, curve, self.endpoint)
        self.curve = dict(curve) if curve else None
        """The CURVE keys, for the events socket of a StatusMirror on this client."""
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(4)
        self.notifications: collections.deque[dict[str, Any]] = collections.deque()

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
        self._sock.close(linger=0)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def new_id(self) -> str:
        return f"{self._prefix}-{next(self._ids)}"

    def call(
        self,
        op: str,
        args: Mapping[str, Any] | None = None,
        *,
        token: bytes | None = None,
        timeout: float | None = None,
        deadline_ms: int | None = None,
    ) -> Result:
        req_id = self.new_id()
        payload = envelope.request(req_id, op, args, token=token, deadline_ms=deadline_ms)
        return self.send_payload(pack(payload), req_id, timeout=timeout, op=op)

    def send_payload(
        self, data: bytes, req_id: object, *, timeout: float | None = None, op: str = "?"
    ) -> Result:
        """Send raw payload bytes and wait for the reply with `req_id` (also for tests)."""
        total = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + total
        interval = total / (self.retries + 1)
        frames = [b"", data]
        _send_now(self._sock, frames)
        next_send = time.monotonic() + interval
        while True:
            now = time.monotonic()
            if now >= deadline:
                break
            if now >= next_send:
                _send_now(self._sock, frames)
                next_send = now + interval
            wait_ms = max(1, int(1000 * (min(deadline, next_send) - now)))
            if self._watch is not None:  # a refused key never gets a reply: say so at once
                if self._watch.is_refused():
                    break
                wait_ms = min(wait_ms, WATCH_INTERVAL_MS)
            if not self._sock.poll(wait_ms, zmq.POLLIN):
                continue
            reply = self._read_one()
            if reply is not None and reply.get("id") == req_id:
                return _reply_result(reply)
        why = probe(self.endpoint, self.info)
        if why is not None:
            raise DaemonUnreachable(why)
        raise _no_reply(op, total, self.endpoint, self._watch)

    def _read_one(self) -> dict[str, Any] | None:
        frames = self._sock.recv_multipart()
        if len(frames) != 2 or frames[0] != b"":
            return None
        try:
            payload = unpack(frames[1])
        except CodecError:
            return None
        if not isinstance(payload, dict):
            return None
        if "notify" in payload and "id" not in payload:
            self.notifications.append(payload["notify"])
            return None
        return payload

    def recv_notification(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next private notification (docs/protocol.md 7.4), or None after `timeout` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.notifications:
            wait = -1 if deadline is None else int(1000 * max(0.0, deadline - time.monotonic()))
            if not self._sock.poll(wait, zmq.POLLIN):
                return None
            self._read_one()
        return self.notifications.popleft()


class AsyncClient(_Ops[Awaitable[Result]]):
    """An asyncio client; calls may run concurrently on the one socket.

    The socket is a plain one read from its descriptor on the running loop (as the daemon
    reads its own): zmq.asyncio's future per send and per receive cost more than a
    request's round trip otherwise does.
    """

    def __init__(
        self,
        runtime: str | os.PathLike[str] | None = None,
        *,
        endpoint: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = 1,
        curve: Mapping[str, bytes] | None = None,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        self.endpoint, self.info, self.runtime_dir = resolve_connection(runtime, endpoint)
        self.timeout = timeout
        self.retries = max(0, retries)
        self._sock, self._watch = _open_dealer(context, curve, self.endpoint)
        self.curve = dict(curve) if curve else None
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(4)
        self._waiting: dict[object, asyncio.Future[dict[str, Any]]] = {}
        self.notifications: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd = int(self._sock.getsockopt(zmq.FD))
        self._drain_pending = False

    async def close(self) -> None:
        self._unwatch()
        if self._watch is not None:
            self._watch.close()
        self._sock.close(linger=0)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _ensure_reader(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        self._unwatch()  # a loop before this one (asyncio.run twice)
        self._loop = loop
        loop.add_reader(self._fd, self._drain)
        self._drain_pending = True
        loop.call_soon(self._drain)

    def _unwatch(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None and not loop.is_closed():
            loop.remove_reader(self._fd)

    def _drain(self) -> None:
        """Hand every reply that has arrived to its caller (the descriptor is edge-triggered:
        read until ZMQ_EVENTS says nothing waits)."""
        self._drain_pending = False
        sock = self._sock
        try:
            while int(sock.getsockopt(_EVENTS)) & _POLLIN:
                frames = [sock.recv(_NOBLOCK)]
                while sock.getsockopt(_RCVMORE):
                    frames.append(sock.recv(_NOBLOCK))
                self._deliver(frames)
        except zmq.ZMQError:  # closed meanwhile
            return

    def _deliver(self, frames: list[bytes]) -> None:
        if len(frames) != 2 or frames[0] != b"":
            return
        try:
            payload = unpack(frames[1])
        except CodecError:
            return
        if not isinstance(payload, dict):
            return
        if "notify" in payload and "id" not in payload:
            self.notifications.put_nowait(payload["notify"])
            return
        fut = self._waiting.get(payload.get("id"))
        if fut is not None and not fut.done():
            fut.set_result(payload)

    def _send(self, data: bytes) -> None:
        sock = self._sock
        with contextlib.suppress(zmq.Again):  # no peer (yet): the caller waits out its interval
            sock.send(b"", _MORE)
            sock.send(data, _NOBLOCK)
        # A send may take in the descriptor's signal of a reply that arrived meanwhile.
        loop = self._loop
        if not self._drain_pending and loop is not None and int(sock.getsockopt(_EVENTS)) & _POLLIN:
            self._drain_pending = True
            loop.call_soon(self._drain)

    def call(
        self,
        op: str,
        args: Mapping[str, Any] | None = None,
        *,
        token: bytes | None = None,
        timeout: float | None = None,
        deadline_ms: int | None = None,
    ) -> Awaitable[Result]:
        return self._call(op, args, token, timeout, deadline_ms)

    async def _call(
        self,
        op: str,
        args: Mapping[str, Any] | None,
        token: bytes | None,
        timeout: float | None,
        deadline_ms: int | None,
    ) -> Result:
        self._ensure_reader()
        req_id = f"{self._prefix}-{next(self._ids)}"
        data = pack(envelope.request(req_id, op, args, token=token, deadline_ms=deadline_ms))
        total = self.timeout if timeout is None else timeout
        interval = total / (self.retries + 1)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[req_id] = fut
        try:
            for _attempt in range(self.retries + 1):
                self._send(data)
                reply = await self._reply_within(fut, interval)
                if reply is not None:
                    return _reply_result(reply)
                if self._watch is not None and self._watch.is_refused():
                    break  # a refused key never gets a reply
        finally:
            self._waiting.pop(req_id, None)
        why = await asyncio.to_thread(probe, self.endpoint, self.info)
        if why is not None:
            raise DaemonUnreachable(why)
        raise _no_reply(op, total, self.endpoint, self._watch)

    async def _reply_within(
        self, fut: asyncio.Future[dict[str, Any]], interval: float
    ) -> dict[str, Any] | None:
        """The reply within `interval` s, or None; a CURVE client stops early when refused."""
        loop = asyncio.get_running_loop()
        end = loop.time() + interval
        while (left := end - loop.time()) > 0:
            step = left if self._watch is None else min(left, WATCH_INTERVAL_MS / 1000)
            # asyncio.wait leaves `fut` alone on a time-out (no shield, no task around it).
            await asyncio.wait((fut,), timeout=step)
            if fut.done():
                return fut.result()
            if self._watch is not None and self._watch.is_refused():
                return None
        return None

    async def recv_notification(self, timeout: float | None = None) -> dict[str, Any] | None:
        self._ensure_reader()
        try:
            return await asyncio.wait_for(self.notifications.get(), timeout)
        except TimeoutError:
            return None


__all__ = [
    "AsyncClient",
    "Client",
    "DaemonUnreachable",
    "ErrorCode",
    "MapiError",
    "RequestTimedOut",
    "Result",
]
