"""The daemon: wires the sockets, sessions, publisher and configuration together and runs them.

One asyncio loop owns all state (docs/design.md 2). Start-up binds both sockets in the checked
runtime directory, then writes the connection file; SIGTERM or SIGINT ends every session,
removes the connection file and returns, well within five seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import secrets
import signal
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

import mapid
from mapid import paths
from mapid.constants import LogonFlags
from mapid.daemon import ops
from mapid.daemon.bus import runtime_dir
from mapid.daemon.bus.curve import CurveError, RemoteAccess
from mapid.daemon.bus.publisher import Publisher
from mapid.daemon.bus.registry import REGISTRY
from mapid.daemon.bus.server import RequestServer
from mapid.daemon.bus.snapshot import SnapshotStore
from mapid.daemon.config import default_profile
from mapid.daemon.config.daemon_config import ConfigProblem, DaemonConfig, load_daemon_config
from mapid.daemon.config.file_watch import shared_watcher
from mapid.daemon.config.profile_admin import ProfileAdmin
from mapid.daemon.config.profile_sections import SectionLocks
from mapid.daemon.config.profiles import Profile, diff, read_profiles
from mapid.daemon.config.service_admin import ServiceAdmin
from mapid.daemon.config.service_registry import ServiceRegistry
from mapid.daemon.config.watcher import ConfigWatcher
from mapid.daemon.sessions.manager import SessionManager
from mapid.daemon.sessions.session import Session, SessionEnv, SessionState
from mapid.daemon.sessions.slots import ProviderSlot
from mapid.daemon.spool.spooler import Spooler
from mapid.daemon.system.desktop import DesktopNotifier, sender_and_subject
from mapid.daemon.system.heap import HeapFreezer
from mapid.daemon.system.metrics import LiveState, Metrics
from mapid.daemon.system.sd_notify import Notifier
from mapid.errors import MapiError
from mapid.paths import ConnectionInfo
from mapid.wire import envelope
from mapid.wire.codec import MAX_PAYLOAD

log = logging.getLogger("mapid.daemon")

STOP_BUDGET = 3.5
"""Seconds from SIGTERM to the end of the logoffs; sessions still logged on then are ended
without their providers' goodbyes. The rest of the 5 s is for the sockets and the exit."""
DRAIN_BUDGET = 0.5
"""Seconds running requests get to answer at shutdown, before sessions are ended."""
MAX_IPC_PATH = 107
STATUS_INTERVAL = 2.0
"""How often systemd's STATUS= line (sessions, last reload) is brought up to date."""

assert ops  # importing the package registers every op


def _listening(path: Path) -> bool:
    """Whether a process accepts connections on the Unix socket at `path`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


class StartupError(Exception):
    """The daemon cannot start; the message says why and how to fix it."""


class Daemon:
    version = mapid.__version__

    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.epoch = secrets.token_hex(8)
        self.started = datetime.now(UTC)
        self.config_gen = 0
        self.last_reload: dict[str, Any] | None = None
        self.reloads = 0
        self.config_problems: list[ConfigProblem] = []
        self.registry = ServiceRegistry()
        self.profile_files: dict[str, Profile] = {}
        """Every profile file that loaded, by file stem."""
        self.profiles: dict[str, Profile] = {}
        """What clients see: pending deletions hidden, pending renames applied."""
        self.section_locks = SectionLocks()
        self.service_admin = ServiceAdmin(
            self.registry, reload=lambda trigger: self.reload(trigger=trigger)
        )
        self.admin = ProfileAdmin(
            config.profiles_dir,
            config.config_file,
            config.state_dir,
            in_use=self._path_in_use,
            reload=lambda trigger: self.reload(trigger=trigger),
        )
        self.metrics = Metrics()
        """Counted always; served at /metrics when mapid.toml sets metrics_listen."""
        self.desktop = DesktopNotifier()
        """Desktop notifications (desktop_notifications in mapid.toml; user mode only)."""
        self.publisher = Publisher(None, self.epoch)
        self.publisher.heartbeat_fields = lambda: {
            "sessions": self.sessions.public_count,
            "config_gen": self.config_gen,
        }
        env = SessionEnv(
            publish=self.publisher.publish,
            forget_topics=self.publisher.forget_topics,
            send_notification=self._send_notification,
            registry=self.registry,
            config_dir=config.config_dir,
            state_dir=config.state_dir,
            provider_timeout=config.provider_timeout,
            max_handles=config.max_handles,
            make_spooler=lambda session: Spooler(session, self.metrics),
            on_new_mail=self._new_mail,
            on_send_failed=self.desktop.send_failed,
            on_stuck_mail=self.desktop.stuck_mail,
        )
        self.sessions = SessionManager(
            env,
            profiles=lambda: self.profiles,
            default_profile=lambda: self.config.default_profile,
            lease_s=lambda: self.config.lease_s,
        )
        self.server = RequestServer(
            None,
            self.sessions,
            self,
            epoch=self.epoch,
            max_in_flight=lambda: self.config.max_in_flight,
            metrics=self.metrics,
        )
        self.snapshots = SnapshotStore(
            self.publisher, self.sessions.every_session, self.config_info
        )
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._ctx: zmq.asyncio.Context | None = None
        self.watcher: ConfigWatcher | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.connection: ConnectionInfo | None = None
        self.remote: RemoteAccess | None = None
        """The TCP endpoints with CURVE, when `[remote]` configures them."""
        self.notifier = Notifier()
        self.log_level_fixed = False
        """`mapid run --log-level` was given: mapid.toml's log_level does not apply."""

    # -- configuration -------------------------------------------------------------------
    def load_initial_config(self) -> None:
        # The machine's daemon has no user to make a default for: /etc/mapid is the admin's.
        if not self.config.system and default_profile.needs_default(self.config.config_dir):
            path = default_profile.write_default(self.config.config_dir)
            log.info("no configuration: wrote the embedded default profile %s", path)
        self.config, problems = load_daemon_config(self.config)
        self.admin.finish()  # what a restart must carry out: no session uses anything yet
        profiles, profile_problems = read_profiles(self.config.profiles_dir)
        self.profile_files = profiles
        self.profiles = self.admin.visible(profiles)
        self.sessions.on_session_end.append(self._session_ended)
        self.heap = HeapFreezer(lambda: self.sessions.public_count)
        self.sessions.on_session_start.append(lambda _session: self.heap.step())
        self.config_problems = problems + profile_problems
        self.config_gen = 1
        self._apply_config()
        # Import the installed services now, before the loop serves anyone: the first
        # logon would otherwise stall the loop (about 150 ms) importing them.
        self.registry.preload()
        for problem in self.config_problems:
            log.error("configuration: %s", problem)
        self.last_reload = self._report([], [], [], self.config_problems, ok=not problems)

    def _path_in_use(self, path: Path) -> bool:
        return any(
            s.profile.path == path and s.state is not SessionState.CLOSED
            for s in self.sessions.sessions.values()
        )

    def _session_ended(self, session: Session) -> None:
        """A profile whose deletion or rename waited for its last session: do it now."""
        if self.admin.pending and self.admin.finish():
            task = asyncio.get_running_loop().create_task(self.reload(trigger="deferred"))
            self._tasks.append(task)

    def _apply_config(self) -> None:
        """Hand the settings that sessions read to their environment."""
        if not self.log_level_fixed:  # log_level follows the file on reload as well
            logging.getLogger().setLevel(self.config.log_level.upper())
        env = self.sessions.env
        env.provider_timeout = self.config.provider_timeout
        env.max_handles = self.config.max_handles
        env.spooler_retry_s = self.config.spooler_retry_s
        env.spooler_retry_max_s = self.config.spooler_retry_max_s
        env.outbox_alert_s = self.config.outbox_alert_s
        env.shared_linger_s = self.config.shared_linger_s
        self.desktop.configure(self.config.desktop_notifications and not self.config.system)
        # Providers' directory watches (Maildir new/, vCard folders) follow `watch` too.
        shared_watcher().set_polling(self.config.watch == "poll")

    def _live_state(self) -> LiveState:
        """What a scrape of /metrics reads of the daemon, on its loop (system/metrics.py)."""
        return LiveState(
            sessions=self.sessions.public_count,
            events_published=self.publisher.published,
            event_drops=self.publisher.dropped,
            config_generation=self.config_gen,
            providers=self.sessions.service_availability(),
        )

    async def _serve_metrics(self) -> None:
        """Serve /metrics where metrics_listen says (nowhere without it); off the loop,
        since stopping the old server waits for its thread."""
        listen = self.config.metrics_listen
        if listen != self.metrics.listen:
            await asyncio.to_thread(self.metrics.serve, listen)

    def config_info(self) -> dict[str, Any]:
        watcher = self.watcher
        return {
            "gen": self.config_gen,
            "last_reload": self.last_reload,
            "watcher": watcher.mode if watcher is not None else "off",
            "watcher_warning": watcher.warning if watcher is not None else None,
            "mail_watcher": shared_watcher().mode,
            "mail_watcher_warning": shared_watcher().warning,
        }

    def capabilities(self) -> list[str]:
        return [
            "snapshot.cursor",
            "logon.lease",
            "create_message.props",
            "submit.release",
            *REGISTRY.names(),
        ]

    def _report(
        self,
        added: list[str],
        removed: list[str],
        changed: list[str],
        problems: list[ConfigProblem],
        *,
        ok: bool | None = None,
    ) -> dict[str, Any]:
        return {
            "gen": self.config_gen,
            "ok": not problems if ok is None else ok,
            "added": added,
            "removed": removed,
            "changed": changed,
            "errors": [p.to_wire() for p in problems],
            "ts": datetime.now(UTC),
        }

    async def reload(
        self, *, check: bool = False, trigger: str = "request", quiet_if_same: bool = False
    ) -> dict[str, Any]:
        """Re-read every file; a broken file keeps its last good version (docs/design.md 8).

        With `quiet_if_same` (the watcher's reloads), a reload that finds exactly what is
        already in force applies and publishes nothing: an explicit reload may have applied
        the same change while the watcher was waiting out its debounce.
        """
        async with self._reload_lock, self._notify_reload(check, trigger):
            config, problems = load_daemon_config(self.config)
            fresh, profile_problems = await asyncio.to_thread(
                read_profiles, self.config.profiles_dir
            )
            problems += profile_problems
            broken = {Path(p.file).stem for p in profile_problems}
            for stem in broken:
                if stem in self.profile_files and stem not in fresh:
                    fresh[stem] = self.profile_files[stem]  # keep the last good version
            visible = self.admin.visible(fresh)
            added, removed, changed = diff(self.profiles, visible)
            if self.remote is not None:  # the allow-list is re-read by every reload
                problems += await self.remote.reload(config.remote, check=check)
            elif config.remote is not None and not check:
                log.warning("[remote] is configured: the TCP endpoints open at the next restart")
            if check:
                return self._report(added, removed, changed, problems)
            same_errors = [p.to_wire() for p in problems] == [
                p.to_wire() for p in self.config_problems
            ]
            nothing_new = not (added or removed or changed) and config == self.config
            if quiet_if_same and nothing_new and same_errors:
                if self.watcher is not None:
                    await asyncio.to_thread(self.watcher.prime)
                return self.last_reload or self._report([], [], [], problems)
            self.config = config
            self._apply_config()
            await self._serve_metrics()
            self.profile_files = fresh
            self.profiles = visible
            by_path = {p.path: p for p in fresh.values()}
            for session in self.sessions.public_sessions():
                now = by_path.get(session.profile.path)
                # A profile file deleted by hand leaves its sessions running, orphaned.
                if now is None and session.state is SessionState.ACTIVE:
                    session.transition(SessionState.ORPHANED)
                    session.publish_session("orphaned")
                elif now is not None and now.digest != session.profile.digest:
                    await self.sessions.follow_profile(session, now)
            if self.watcher is not None:  # what we just read is no news to the watcher
                await asyncio.to_thread(self.watcher.prime)
            self.config_gen += 1
            self.reloads += 1
            self.config_problems = problems
            report = self._report(added, removed, changed, problems)
            self.last_reload = report
            if not report["ok"]:
                self.metrics.reload_failures.inc()
            kind = "reloaded" if report["ok"] else "reload_failed"
            self.publisher.publish(envelope.TOPIC_DAEMON, kind, trigger=trigger, **report)
            log.info(
                "reload %d (%s): added %s removed %s changed %s errors %d",
                self.config_gen,
                trigger,
                added,
                removed,
                changed,
                len(problems),
            )
            return report

    @contextlib.asynccontextmanager
    async def _notify_reload(self, check: bool, trigger: str) -> AsyncIterator[None]:
        """RELOADING=1 before a reload that may apply something, READY=1 after (sd_notify)."""
        if check:
            yield
            return
        self.notifier.reloading(f"reloading ({trigger})")
        try:
            yield
        finally:
            self.notifier.ready(self.status_line())

    def status_line(self) -> str:
        """What `systemctl status` shows: the sessions and the last reload."""
        count = self.sessions.public_count
        text = f"{count} session{'' if count == 1 else 's'}, config gen {self.config_gen}"
        report = self.last_reload
        if report is not None and self.reloads:
            when = report["ts"].strftime("%H:%M:%S UTC")
            errors = len(report["errors"])
            outcome = "ok" if not errors else f"{errors} error{'' if errors == 1 else 's'}"
            text += f", last reload {when} {outcome}"
        elif self.config_problems:
            text += f", {len(self.config_problems)} configuration error(s)"
        return text

    async def _watchdog_loop(self, interval: float) -> None:
        """WATCHDOG=1 from the loop itself: a loop that is stuck sends none (WatchdogSec)."""
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    async def _status_loop(self) -> None:
        last = ""
        while True:
            line = self.status_line()
            if line != last:
                self.notifier.status(line)
                last = line
            await asyncio.sleep(STATUS_INTERVAL)

    # -- sockets -------------------------------------------------------------------------
    def _send_notification(self, identity: bytes, payload: dict[str, Any]) -> None:
        self.server.send_notification(identity, payload)

    def _new_mail(self, slot: ProviderSlot, entryid: bytes) -> None:
        """fnevNewMail from a store, to the desktop (which reads the sender and subject
        only when the message is alone in its burst)."""
        store = slot.provider
        if store is not None:
            self.desktop.new_mail(entryid, lambda: sender_and_subject(store, entryid))

    def check_can_start(self) -> None:
        """Raise StartupError for whatever would refuse this start, writing nothing.

        `mapid run` calls it before `load_initial_config`, which may write the embedded
        default profile: a refused start leaves the configuration directory as it was.
        `_bind` runs it again, since another daemon may have started meanwhile.
        """
        rdir = self.config.runtime_dir
        try:
            runtime_dir.check(rdir, self.config.system)
        except runtime_dir.RuntimeDirError as exc:
            raise StartupError(str(exc)) from exc
        other = runtime_dir.live_daemon_pid(rdir)
        if other is not None:
            raise StartupError(
                f"another mapid daemon (pid {other}) already runs on {rdir}; stop it first, "
                "or set MAPID_RUNTIME_DIR to run one more"
            )
        for path in (rdir / paths.REQUEST_SOCKET, rdir / paths.EVENTS_SOCKET):
            if len(str(path)) > MAX_IPC_PATH:
                raise StartupError(
                    f"socket path {path} is longer than {MAX_IPC_PATH} bytes, the limit of "
                    "Unix sockets; use a shorter MAPID_RUNTIME_DIR"
                )
            if _listening(path):
                raise StartupError(
                    f"another mapid daemon listens on {path}; stop it first, or set "
                    "MAPID_RUNTIME_DIR to run one more"
                )

    def _bind(self) -> None:
        refused = [p for p in self.config_problems if p.blocks_start]
        if refused:
            raise StartupError("; ".join(str(p) for p in refused))
        self.check_can_start()
        rdir = self.config.runtime_dir
        try:
            runtime_dir.prepare(rdir, self.config.system)
        except runtime_dir.RuntimeDirError as exc:
            raise StartupError(str(exc)) from exc
        request_path = rdir / paths.REQUEST_SOCKET
        events_path = rdir / paths.EVENTS_SOCKET
        for path in (request_path, events_path):
            path.unlink(missing_ok=True)  # a stale socket of a daemon that died
        self._ctx = zmq.asyncio.Context()
        # The request and events sockets are plain ones on the same context: RequestServer
        # and Publisher read them from their descriptors (server.py, publisher.py); ZAP
        # stays asyncio.
        plain: zmq.Context[zmq.Socket[bytes]] = zmq.Context.shadow(self._ctx.underlying)
        router: zmq.Socket[bytes] = plain.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.MAXMSGSIZE, MAX_PAYLOAD)
        router.setsockopt(zmq.SNDHWM, 10_000)
        router.setsockopt(zmq.RCVHWM, 10_000)
        xpub: zmq.Socket[bytes] = plain.socket(zmq.XPUB)
        xpub.setsockopt(zmq.LINGER, 200)
        xpub.setsockopt(zmq.SNDHWM, self.config.events_hwm)
        xpub.setsockopt(zmq.XPUB_VERBOSE, 1)
        xpub.setsockopt(zmq.MAXMSGSIZE, 64 * 1024)
        request_ep = f"ipc://{request_path}"
        events_ep = f"ipc://{events_path}"
        router.bind(request_ep)
        xpub.bind(events_ep)
        for path in (request_path, events_path):
            os.chmod(path, 0o660 if self.config.system else 0o600)
        if self.config.remote is not None:  # after the ipc binds: those stay without CURVE
            self.remote = RemoteAccess(
                self._ctx,
                self.config.remote,
                self.config.state_dir,
                self.config.config_dir,
                watch_keys=self.config.watch != "off",
            )
            try:
                for problem in self.remote.start(router, xpub):
                    log.error("configuration: %s", problem)
                    self.config_problems.append(problem)
            except CurveError as exc:
                router.close(linger=0)
                xpub.close(linger=0)
                self.remote.stop()
                raise StartupError(str(exc)) from exc
        self.server.sock = router
        self.publisher.sock = xpub
        self.connection = ConnectionInfo(
            protocol=envelope.PROTOCOL_VERSION,
            version=self.version,
            pid=os.getpid(),
            epoch=self.epoch,
            request=request_ep,
            events=events_ep,
            curve_server_key=self.remote.public_key.decode() if self.remote else None,
        )

    # -- life cycle ----------------------------------------------------------------------
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._bind()
        except StartupError as exc:
            self.notifier.status(f"cannot start: {exc}")
            raise
        self.publisher.publish(
            envelope.TOPIC_DAEMON, "started", version=self.version, pid=os.getpid()
        )
        # The request loop must stay first: _shutdown stops it before the rest.
        for runner in (self.server.run(), self.publisher.run(), self.sessions.run_leases()):
            self._tasks.append(loop.create_task(runner))
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGINT, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self._sighup)
        self.metrics.attach(loop, self._live_state)
        await self._serve_metrics()
        self._start_watcher()
        self.notifier.status("starting: logging on the autologon profile")
        await self._autologon()
        self.heap.start()  # what start-up built lives as long as the daemon: out of gc's sight
        # Clients find the daemon through this file: only once the autologon session is up,
        # so that the first logon attaching to the shared session finds it.
        assert self.connection is not None
        runtime_dir.write_connection_file(
            self.config.runtime_dir, self.connection, self.config.system
        )
        if self.notifier.enabled:
            self.notifier.ready(self.status_line())
            self._tasks.append(loop.create_task(self._status_loop()))
            if self.notifier.watchdog_s is not None:
                interval = self.notifier.watchdog_s / 2
                self._tasks.append(loop.create_task(self._watchdog_loop(interval)))
        log.info(
            "mapid %s ready on %s (pid %d, epoch %s)",
            self.version,
            self.config.runtime_dir,
            os.getpid(),
            self.epoch,
        )
        try:
            await self._stop.wait()
        finally:
            await self._shutdown()

    def _start_watcher(self) -> None:
        """Reload when a file changes on disk (docs/design.md 8); polling if inotify is short."""
        self.config.config_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

        async def changed(paths: set[Path]) -> None:
            log.debug("configuration changed on disk: %d file(s)", len(paths))
            await self.reload(trigger="watcher", quiet_if_same=True)

        if self.config.watch == "off":
            log.info('not watching %s (watch = "off")', self.config.config_dir)
            return
        use_polling = self.config.watch == "poll"
        self.watcher = ConfigWatcher(self.config.config_dir, changed, use_polling=use_polling)
        try:
            self.watcher.start()
        except OSError as exc:
            log.error(
                "cannot watch %s: %s; use SIGHUP or mapictl reload", self.config.config_dir, exc
            )
            self.watcher = None
        else:
            if self.watcher.warning:
                log.warning("%s", self.watcher.warning)

    def stop(self) -> None:
        if not self._stop.is_set():
            self.notifier.stopping()
        self._stop.set()

    def _sighup(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload(trigger="sighup"))
        self._tasks.append(task)

    async def _autologon(self) -> None:
        chosen = [p for p in self.profiles.values() if p.autologon]
        if not chosen:
            return
        flags = LogonFlags.MAPI_NEW_SESSION | LogonFlags.MAPI_ALLOW_OTHERS
        try:
            session, _member = await self.sessions.logon(
                chosen[0].name, flags, {"name": "mapid (autologon)", "pid": os.getpid()}, None, 0
            )
            log.info("autologon: profile %s is session %s", chosen[0].name, session.id)
        except MapiError as exc:
            log.error("autologon of profile %s failed: %s", chosen[0].name, exc)

    async def _shutdown(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_BUDGET
        # Exiting: a full collection of a big heap now would only stall the goodbyes.
        gc.disable()
        self.heap.stop()
        log.info("stopping")
        metrics_closed = asyncio.ensure_future(asyncio.to_thread(self.metrics.close))
        self.publisher.publish(envelope.TOPIC_DAEMON, "stopping")
        # Take no new request, let the running ones answer, then end the sessions.
        self._tasks[0].cancel()  # the request loop (started first in run())
        await self.server.drain(DRAIN_BUDGET)
        ended, total = await self.sessions.end_all(deadline)
        if ended < total:
            log.warning(
                "%d of %d sessions logged off within %.1f s; the other %d ended without "
                "their providers' goodbyes",
                ended,
                total,
                STOP_BUDGET,
                total - ended,
            )
        elif total:
            log.info("%d session(s) logged off", total)
        if self.admin.pending and self.admin.finish():  # deletions that waited for a session
            log.info("pending profile changes done at the stop")
        if self.watcher is not None:
            await self.watcher.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for task in list(self.server.tasks):
            task.cancel()
        await metrics_closed
        await self.desktop.close()
        runtime_dir.remove_connection_file(self.config.runtime_dir, os.getpid())
        if self.server.sock is not None:
            self.server.sock.close(linger=0)
        if self.publisher.sock is not None:
            self.publisher.sock.close(linger=200)
        for name in (paths.REQUEST_SOCKET, paths.EVENTS_SOCKET):
            (self.config.runtime_dir / name).unlink(missing_ok=True)
        if self.remote is not None:  # ZAP ends only after the CURVE sockets closed
            self.remote.stop()
        if self._ctx is not None:
            self._ctx.term()
        log.info("stopped")
