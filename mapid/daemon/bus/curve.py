"""Remote access: the TCP endpoints with CURVE and the ZAP allow-list (docs/protocol.md 9).

The ROUTER and the XPUB are bound to their ipc paths first, with the NULL mechanism and no
ZAP domain, so the local sockets stay behind file permissions only. Only then are CURVE
server mode and the ZAP domain set and the TCP endpoints bound: libzmq takes a socket's
options when an endpoint is bound, so one socket serves both and the request server and
publisher do not know the difference.

ZAP answers from pyzmq's asyncio authenticator on the daemon's loop. It is started before
the first TCP bind and stopped after the sockets close: libzmq lets any key in while no ZAP
handler is bound. The allow-list is `authorized_keys.d/*.key` under the configuration
directory, read at start, on every reload and, unless `watch = "off"`, whenever a look
every second finds the directory changed. CURVE authenticates a connection once, at its
handshake, so when a reload finds a key gone the TCP endpoints are unbound and bound again:
that drops every remote connection, and the clients whose keys are still allowed reconnect
by themselves (ZeroMQ reconnects; the request ids and the reply cache make a resend safe).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import time
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator
from zmq.utils import z85

from mapid import curve_keys
from mapid.daemon.config.daemon_config import ConfigProblem
from mapid.daemon.config.remote_config import RemoteConfig
from mapid.wire.link import HEARTBEAT_IVL_MS, HEARTBEAT_TIMEOUT_MS

log = logging.getLogger("mapid.daemon.bus.curve")

DOMAIN = "mapid"
"""The ZAP domain of the TCP endpoints (never set on the ipc ones)."""
KEYS_DIR = "curve"
"""The daemon's key pair lives in this 0700 directory under the state directory."""
SERVER_NAME = "server"
AUTHORIZED_DIR = "authorized_keys.d"

DENIAL_LOG_INTERVAL = 60.0
"""Clients reconnect; log each key's handshakes at most once a minute."""
LOGGED_KEYS_MAX = 1_000
REBIND_TRIES = 50
KEYS_POLL_S = 1.0
"""How often authorized_keys.d/ is looked at between reloads."""


class CurveError(Exception):
    """Remote access cannot start; the message names the file or endpoint and the fix."""


def server_key_pair(state_dir: Path) -> tuple[bytes, bytes]:
    """The daemon's (public, secret) Z85 keys, made at first start; a secret file or a key
    directory that others can read is refused."""
    directory = state_dir / KEYS_DIR
    secret_path = directory / f"{SERVER_NAME}{curve_keys.SECRET_SUFFIX}"
    if not secret_path.exists():
        public_path, _ = curve_keys.write_key_pair(
            directory, SERVER_NAME, "The mapid daemon's public key: give it to remote clients."
        )
        log.info("made the daemon's CURVE key pair: public key %s", public_path)
    mode = stat.S_IMODE(os.stat(directory).st_mode)
    if mode & 0o077:
        raise CurveError(
            f"key directory {directory} is open to others (mode {mode:04o}); "
            f"run: chmod 700 {directory}"
        )
    try:
        return curve_keys.read_secret_key(secret_path)
    except curve_keys.KeyFileError as exc:
        raise CurveError(str(exc)) from None


def _loose(path: Path) -> str | None:
    """Why others could change what `path` allows, or None."""
    info = os.stat(path)
    if info.st_mode & 0o022:
        return (
            f"{path} is writable by others (mode {stat.S_IMODE(info.st_mode):04o}): "
            f"run: chmod go-w {path}"
        )
    if info.st_uid not in (0, os.geteuid()):
        return f"{path} belongs to uid {info.st_uid}, neither root nor the daemon's user"
    return None


def read_authorized(directory: Path) -> tuple[dict[bytes, str], list[ConfigProblem]]:
    """The allowed client keys (Z85, with their file names) and the files that were skipped."""
    if not directory.is_dir():
        return {}, []
    why = _loose(directory)
    if why is not None:
        return {}, [ConfigProblem(str(directory), f"no key is allowed: {why}")]
    keys: dict[bytes, str] = {}
    problems: list[ConfigProblem] = []
    for path in sorted(directory.glob(f"*{curve_keys.PUBLIC_SUFFIX}")):
        try:
            why = _loose(path)
            if why is not None:
                raise curve_keys.KeyFileError(f"skipped: {why}")
            keys[curve_keys.read_public_key(path)] = path.stem
        except (curve_keys.KeyFileError, OSError) as exc:
            problems.append(ConfigProblem(str(path), str(exc).removeprefix(f"{path}: ")))
    return keys, problems


def _fingerprint(directory: Path) -> tuple[tuple[str, int, int, int, int], ...]:
    """What changes when a key file in `directory` is added, removed, edited or chmod-ed."""
    try:
        found = [directory, *directory.glob(f"*{curve_keys.PUBLIC_SUFFIX}")]
        return tuple(
            sorted(
                (p.name, s.st_ino, s.st_mtime_ns, s.st_ctime_ns, s.st_size)
                for p in found
                if (s := _stat(p)) is not None
            )
        )
    except OSError:
        return ()


def _stat(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


class _Authenticator(AsyncioAuthenticator):
    """pyzmq's authenticator with the key file's name as User-Id, and every handshake it
    judged logged (at most once a minute per key: a client may reconnect often)."""

    def __init__(self, context: zmq.asyncio.Context) -> None:
        super().__init__(context, log=logging.getLogger("mapid.daemon.zap"))
        self.names: dict[bytes, str] = {}
        self._logged_at: dict[tuple[bytes, bool], float] = {}

    def curve_user_id(self, client_public_key: bytes) -> str:
        return self.names.get(z85.encode(client_public_key), "?")

    def _first_in_a_while(self, key: bytes, allowed: bool) -> bool:
        now = time.monotonic()
        if len(self._logged_at) > LOGGED_KEYS_MAX:  # strangers' keys must not pile up
            self._logged_at.clear()
        last = self._logged_at.get((key, allowed))
        if last is not None and now - last < DENIAL_LOG_INTERVAL:
            return False
        self._logged_at[(key, allowed)] = now
        return True

    async def _authenticate_curve(self, domain: str, client_key: bytes) -> tuple[bool, bytes]:
        allowed, reason = await super()._authenticate_curve(domain, client_key)
        key = z85.encode(client_key)
        if self._first_in_a_while(key, allowed):
            if allowed:
                log.info("CURVE client %s connected (key %s)", self.names.get(key), key.decode())
            else:
                log.warning(
                    "refused a CURVE client: key %s is not in %s", key.decode(), AUTHORIZED_DIR
                )
        return allowed, reason


class RemoteAccess:
    """The TCP endpoints of one daemon: keys, ZAP, binding, and re-reading the allow-list."""

    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        remote: RemoteConfig,
        state_dir: Path,
        config_dir: Path,
        *,
        watch_keys: bool = True,
    ) -> None:
        """With `watch_keys` (mapid.toml's watch is not "off") the allow-list is also
        re-read when a file in authorized_keys.d/ changes, within KEYS_POLL_S."""
        self.remote = remote
        self.watch_keys = watch_keys
        self._watch_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        """What was bound at start; a reload does not move the endpoints."""
        self._ctx = ctx
        self.state_dir = state_dir
        self.authorized_dir = config_dir / AUTHORIZED_DIR
        self.public_key = b""
        self._auth: _Authenticator | None = None
        self._bound: list[tuple[zmq.Socket[Any], str, str]] = []
        """(socket, configured endpoint, resolved endpoint) for every TCP bind."""

    @property
    def allowed(self) -> dict[bytes, str]:
        return self._auth.names if self._auth is not None else {}

    def start(self, router: zmq.Socket[Any], xpub: zmq.Socket[Any]) -> list[ConfigProblem]:
        """Keys, ZAP, then the TCP binds; the problems of single key files are returned."""
        public, secret = server_key_pair(self.state_dir)
        self.public_key = public
        self._auth = _Authenticator(self._ctx)
        self._auth.start()
        problems = self._apply(*read_authorized(self.authorized_dir))
        if not self.allowed:
            log.warning(
                "remote access is on but %s allows no key yet: no client can connect over "
                "TCP (add one with `mapictl keys new`, then mapictl reload)",
                self.authorized_dir,
            )
        for sock, endpoint in ((router, self.remote.request), (xpub, self.remote.events)):
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
            sock.setsockopt(zmq.CURVE_SECRETKEY, secret)
            sock.setsockopt(zmq.ZAP_DOMAIN, DOMAIN.encode())
            sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
            sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
            sock.setsockopt(zmq.IPV6, 1)
            try:
                sock.bind(endpoint)
            except zmq.ZMQError as exc:
                raise CurveError(
                    f"cannot bind [remote] {endpoint}: {exc.strerror}; choose another port "
                    "or stop what listens there"
                ) from None
            resolved = sock.getsockopt_string(zmq.LAST_ENDPOINT)
            self._bound.append((sock, endpoint, resolved))
            log.info("listening on %s with CURVE", endpoint)
        if self.watch_keys:
            self._watch_task = asyncio.get_running_loop().create_task(self._watch())
        return problems

    def _apply(self, keys: dict[bytes, str], problems: list[ConfigProblem]) -> list[ConfigProblem]:
        assert self._auth is not None
        # Not configure_curve(): on a directory it cannot read it keeps the old keys.
        self._auth.certs[DOMAIN] = dict.fromkeys(keys, True)
        self._auth.names = keys
        return problems

    async def reload(self, remote: RemoteConfig | None, check: bool = False) -> list[ConfigProblem]:
        """Re-read the allow-list; drop the remote connections when a key was removed.
        With `check`, only report the key files' problems."""
        keys, problems = await asyncio.to_thread(read_authorized, self.authorized_dir)
        if check:
            return problems
        if remote != self.remote:
            log.warning("[remote] changed: the TCP endpoints move at the next restart")
        async with self._lock:
            return await self._take(keys, problems)

    async def _take(
        self, keys: dict[bytes, str], problems: list[ConfigProblem]
    ) -> list[ConfigProblem]:
        before = set(self.allowed)
        problems = self._apply(keys, problems)
        removed = before - set(self.allowed)
        if removed:
            log.info(
                "%d CURVE key(s) no longer allowed: dropping the TCP connections", len(removed)
            )
            problems += await self._rebind()
        return problems

    async def _watch(self) -> None:
        """Poll authorized_keys.d/ (a few stats): a removed key is shut out without a reload,
        also on file systems without inotify."""
        seen = await asyncio.to_thread(_fingerprint, self.authorized_dir)
        while True:
            await asyncio.sleep(KEYS_POLL_S)
            now = await asyncio.to_thread(_fingerprint, self.authorized_dir)
            if now == seen:
                continue
            seen = now
            keys, problems = await asyncio.to_thread(read_authorized, self.authorized_dir)
            async with self._lock:
                problems = await self._take(keys, problems)
            log.info("%s changed: %d key(s) allowed", self.authorized_dir, len(self.allowed))
            for problem in problems:
                log.error("configuration: %s", problem)

    async def _rebind(self) -> list[ConfigProblem]:
        problems: list[ConfigProblem] = []
        for index, (sock, endpoint, resolved) in enumerate(self._bound):
            with contextlib.suppress(zmq.ZMQError):  # not bound if an earlier rebind failed
                sock.unbind(resolved)  # ends the connections this endpoint accepted
            for _ in range(REBIND_TRIES):  # the old listener closes in libzmq's I/O thread
                try:
                    sock.bind(endpoint)
                    break
                except zmq.ZMQError as exc:
                    if exc.errno != zmq.EADDRINUSE:
                        raise
                    await asyncio.sleep(0.02)
            else:
                message = f"cannot bind {endpoint} again after dropping its connections"
                log.error("%s", message)
                problems.append(ConfigProblem(str(self.authorized_dir), message))
                continue
            again = sock.getsockopt_string(zmq.LAST_ENDPOINT)
            self._bound[index] = (sock, endpoint, again)
        return problems

    def stop(self) -> None:
        """Stop answering ZAP: only once the TCP sockets are closed."""
        if self._watch_task is not None:
            self._watch_task.cancel()
            self._watch_task = None
        if self._auth is not None:
            if self._auth.zap_socket is not None:  # a reply still queued must not block term()
                self._auth.zap_socket.setsockopt(zmq.LINGER, 0)
            self._auth.stop()
            self._auth = None
