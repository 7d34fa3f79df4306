"""`mapictl status --watch`: the status view kept live by a `StatusMirror`.

The mirror does the hard part (the clone recipe of docs/protocol.md 7.3: it re-snapshots by
itself on a gap, a new epoch or a silent daemon); this module draws it with rich.live, or
prints one JSON line per change, and builds a fresh mirror when the daemon came back with a
new connection file, so a restart needs nothing from the person watching.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.live import Live
from rich.text import Text

from mapid.cli.output import console, emit_json, status_renderable, status_view
from mapid.client import Client
from mapid.errors import MapidError
from mapid.mirror import StatusMirror
from mapid.paths import client_runtime_dir, read_connection_file

POLL_INTERVAL = 0.25
MIRROR_TIMEOUT = 2.0
"""The mirror's own request time-out: short, so a dead daemon does not freeze the view."""


class Watch:
    """One mirror at a time, plus what the view needs that the mirror does not keep."""

    def __init__(
        self,
        runtime: Path | None,
        timeout: float,
        session_prefix: str | None = None,
        *,
        connect: Callable[[float], Client] | None = None,
        events_endpoint: str | None = None,
    ) -> None:
        """`connect(timeout)` and `events_endpoint` reach a remote daemon (--endpoint)."""
        self.runtime = runtime if runtime is not None else client_runtime_dir()
        self._new_client = connect or (lambda wait: Client(self.runtime, timeout=wait))
        self.events_endpoint = events_endpoint
        self.timeout = min(timeout, MIRROR_TIMEOUT)
        self.session_prefix = session_prefix
        self.mirror: StatusMirror | None = None
        self.hello: dict[str, Any] | None = None
        self.error: str | None = None

    def start(self, first_timeout: float) -> None:
        """Connect once with the command's own time-out, so a missing daemon is exit 4 and a
        hung one exit 5 (the errors propagate); later trouble only shows in the view."""
        with self._new_client(first_timeout) as probe:
            self.hello = dict(probe.daemon_hello())
        self._connect()

    def _connect(self) -> None:
        self.close()
        try:
            client = self._new_client(self.timeout)
        except MapidError as exc:
            self.error = str(exc)
            return
        try:
            mirror = StatusMirror(client=client, events_endpoint=self.events_endpoint)
        except MapidError as exc:
            client.close()
            self.error = str(exc)
            return
        mirror.start()
        self.mirror = mirror

    def close(self) -> None:
        if self.mirror is not None:
            self.mirror.close()
            self.mirror.client.close()
            self.mirror = None

    @property
    def synced(self) -> bool:
        return self.mirror is not None and self.mirror.synced

    def step(self) -> None:
        """Poll once; rebuild the mirror when a new daemon wrote a new connection file."""
        if self.mirror is None:
            self._connect()
            if self.mirror is None:
                time.sleep(POLL_INTERVAL)
                return
        mirror = self.mirror
        mirror.poll(POLL_INTERVAL)
        self.error = None if mirror.synced else mirror.last_error or "not synced"
        if not mirror.synced:
            info = read_connection_file(self.runtime)
            known = mirror.client.info
            if info is not None and (known is None or info.epoch != known.epoch):
                self._connect()
                return
        if mirror.synced and (self.hello is None or self.hello.get("epoch") != mirror.state.epoch):
            try:
                self.hello = dict(mirror.client.daemon_hello())
            except MapidError:
                self.hello = None

    def signature(self) -> tuple[object, ...]:
        """Changes exactly when the JSON form would say something new."""
        if self.mirror is None:
            return (False, self.error)
        state = self.mirror.state
        return (self.mirror.synced, state.epoch, state.last_seq, self.mirror.resyncs, self.error)

    def view(self) -> dict[str, Any]:
        """The status view (see output.status_view) with the mirror's health added."""
        if self.mirror is None:
            snapshot: Mapping[str, Any] = {}
            sessions: list[dict[str, Any]] = []
            tables: dict[str, list[dict[str, Any]]] = {}
            resyncs = 0
        else:
            state = self.mirror.state
            snapshot = {"epoch": state.epoch, "seq": state.last_seq, "config": state.config}
            sessions = [
                info
                for sid, info in state.sessions.items()
                if self.session_prefix is None or sid.startswith(self.session_prefix)
            ]
            tables = {s["session"]: state.rows(s["session"]) for s in sessions}
            resyncs = self.mirror.resyncs
        hello = self.hello if self.synced else None
        view = status_view(hello, snapshot, sessions, tables)
        view.update({"synced": self.synced, "error": self.error, "resyncs": resyncs})
        return view


def renderable(watch: Watch) -> RenderableType:
    view = watch.view()
    header = Text(f"watching {watch.runtime}", style="dim")
    header.append(f"  seq {view.get('seq')}  resyncs {view.get('resyncs')}  ", style="dim")
    header.append(dt.datetime.now().strftime("%H:%M:%S"), style="dim")
    parts: list[RenderableType] = [header]
    if not view["synced"]:
        parts.append(Text(f"not synced: {view.get('error')} (retrying)", style="bold red"))
    parts.append(status_renderable(view))
    return Group(*parts)


def run(
    runtime: Path | None,
    *,
    json_output: bool,
    timeout: float,
    session_prefix: str | None = None,
    connect: Callable[[float], Client] | None = None,
    events_endpoint: str | None = None,
) -> None:
    """Watch until interrupted (the caller turns Ctrl-C and SIGTERM into a clean exit)."""
    watch = Watch(
        runtime, timeout, session_prefix, connect=connect, events_endpoint=events_endpoint
    )
    try:
        watch.start(timeout)
        if json_output:
            last: tuple[object, ...] | None = None
            while True:
                signature = watch.signature()
                if signature != last:
                    emit_json(watch.view())
                    last = signature
                watch.step()
        with Live(
            renderable(watch), console=console(), refresh_per_second=4, transient=False
        ) as live:
            while True:
                watch.step()
                live.update(renderable(watch))
    finally:
        watch.close()
