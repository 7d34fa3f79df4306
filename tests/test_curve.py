"""Remote access over TCP with CURVE (docs/protocol.md 9), against the real daemon.

Each daemon binds its ipc sockets and, from `[remote]` in mapid.toml, two TCP endpoints on
127.0.0.1 with free ports. Clients are the library's (`Client`, `StatusMirror`), plain
ZeroMQ sockets for the clients the library would not make (no CURVE at all), and mapictl
as a real process. "Gets nothing" is checked beside a client that does get something in
the same time, so the waits are the same for both.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from mapid.client import AsyncClient, Client
from mapid.curve_keys import KeyFileError, load_client_keys, read_public_key, write_key_pair
from mapid.daemon.config.remote_config import RemoteConfig, parse
from mapid.errors import DaemonUnreachable, MapidError, RequestTimedOut
from mapid.mirror import StatusMirror
from mapid.paths import read_connection_file
from mapid.remote import apply_curve, events_endpoint_for
from mapid.wire import envelope
from mapid.wire.codec import pack

from conftest import DEFAULT_CONFIG, DaemonFactory, DaemonProc

SILENCE = 2.0
"""How long a refused client is listened to: two heartbeat periods of the daemon."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_pair() -> int:
    """A free port whose next port is free too: the layout mapictl derives events from."""
    for _ in range(50):
        port = free_port()
        if port < 65535:
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no two consecutive free ports")


class Remote:
    """A daemon with TCP endpoints, and the key pairs of its would-be clients."""

    allowed: Path
    """The secret key file of a client whose public key is in authorized_keys.d/."""
    unknown: Path
    """The secret key file of a client the daemon does not know."""

    def __init__(self, daemon: DaemonProc, request: str, events: str, keys: Path) -> None:
        self.daemon = daemon
        self.request = request
        self.events = events
        self.keys = keys
        self.authorized = daemon.config_dir / "authorized_keys.d"
        self.opened: list[Any] = []

    @property
    def pid(self) -> int:
        assert self.daemon.proc is not None
        return self.daemon.proc.pid

    @property
    def server_key_file(self) -> Path:
        return self.daemon.state_dir / "curve" / "server.key"

    def new_key(self, name: str, *, allow: bool) -> Path:
        """A client key pair; its public file goes to authorized_keys.d/ when `allow`."""
        public, secret = write_key_pair(self.keys, name, "test client")
        if allow:
            self.authorized.mkdir(exist_ok=True)
            shutil.copy(public, self.authorized / public.name)
        return secret

    def client(self, secret: Path, timeout: float = 5.0, retries: int = 1) -> Client:
        curve = load_client_keys(secret, str(self.server_key_file))
        client = Client(
            self.daemon.runtime,
            endpoint=self.request,
            curve=curve,
            timeout=timeout,
            retries=retries,
        )
        self.opened.append(client)
        return client

    def sub(self, curve: dict[str, bytes] | None) -> zmq.Socket[Any]:
        """A plain SUB on the TCP events endpoint, with CURVE keys or none at all."""
        sock: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            apply_curve(sock, self.events, curve)
        sock.connect(self.events)
        sock.setsockopt_string(zmq.SUBSCRIBE, "")
        self.opened.append(sock)
        return sock

    def close(self) -> None:
        for thing in self.opened:
            thing.close()


def remote_config(request: str, events: str, extra: str = "") -> str:
    return f'{DEFAULT_CONFIG}\n[remote]\nrequest = "{request}"\nevents = "{events}"\n{extra}'


@pytest.fixture
def remote(make_daemon: DaemonFactory, tmp_path: Path) -> Iterator[Remote]:
    """A running daemon with one allowed key (`remote.allowed`) and one unknown key."""
    port = free_port_pair()
    request, events = f"tcp://127.0.0.1:{port}", f"tcp://127.0.0.1:{port + 1}"
    daemon = make_daemon(config=remote_config(request, events), start=False)
    found = Remote(daemon, request, events, tmp_path / "client-keys")
    found.allowed = found.new_key("ada", allow=True)
    found.unknown = found.new_key("mallory", allow=False)
    daemon.start()
    yield found
    found.close()


def logged(daemon: DaemonProc, text: str, seconds: float = 5.0) -> bool:
    """Whether the daemon's log shows `text` within `seconds`."""
    deadline = time.monotonic() + seconds
    while text not in daemon.log():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def heartbeat_within(sock: zmq.Socket[Any], seconds: float) -> bool:
    """Whether a heartbeat arrives on `sock` within `seconds`."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if not sock.poll(max(1, int(1000 * left)), zmq.POLLIN):
            return False
        topic, _event = envelope.decode_event_frames(sock.recv_multipart())
        if topic == envelope.TOPIC_HEARTBEAT:
            return True
    return False


def test_libzmq_has_curve() -> None:
    """pyzmq's wheels bundle a libzmq with CURVE; a build without it must fail loudly here."""
    assert zmq.has("curve")


# --- the daemon's keys and the connection file --------------------------------------------


def test_server_key_pair_made_private_and_published(remote: Remote) -> None:
    directory = remote.daemon.state_dir / "curve"
    secret = directory / "server.key_secret"
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    info = read_connection_file(remote.daemon.runtime)
    assert info is not None
    assert info.request.startswith("ipc://")  # local clients keep the ipc sockets
    assert info.curve_server_key == read_public_key(remote.server_key_file).decode()
    assert b"secret-key" not in remote.server_key_file.read_bytes()


def test_no_remote_section_means_no_key_and_no_curve(make_daemon: DaemonFactory) -> None:
    daemon = make_daemon()
    info = read_connection_file(daemon.runtime)
    assert info is not None and info.curve_server_key is None
    assert not (daemon.state_dir / "curve").exists()


# --- an allowed key reaches everything -----------------------------------------------------


def test_allowed_key_gets_replies_and_events(remote: Remote) -> None:
    client = remote.client(remote.allowed)
    hello = client.daemon_hello()
    assert hello["pid"] == remote.pid
    assert client.daemon_ping() is not None
    curve = load_client_keys(remote.allowed, str(remote.server_key_file))
    assert heartbeat_within(remote.sub(curve), 5.0)
    assert logged(remote.daemon, "CURVE client ada connected")  # who, for the audit trail
    # The library's mirror over the same keys: the TCP events endpoint is derived or given.
    with StatusMirror(client=client, events_endpoint=remote.events) as mirror:
        mirror.start(timeout=5.0)
        assert mirror.synced
        assert mirror.state.epoch == hello["epoch"]


def test_library_clients_from_key_files(remote: Remote) -> None:
    """AsyncClient, and a StatusMirror that makes its own client and derives the events
    endpoint (request port + 1), with the `curve=` mapping of load_client_keys."""
    curve = load_client_keys(remote.allowed, str(remote.server_key_file))

    async def ping() -> dict[str, Any]:
        async with AsyncClient(endpoint=remote.request, curve=curve, timeout=5.0) as client:
            return dict(await client.daemon_hello())

    hello = asyncio.run(ping())
    assert hello["pid"] == remote.pid
    with StatusMirror(endpoint=remote.request, curve=curve) as mirror:
        mirror.start(timeout=5.0)
        assert mirror.synced and mirror.state.epoch == hello["epoch"]
        mirror.client.close()
    denied = load_client_keys(remote.unknown, str(remote.server_key_file))

    async def refused() -> None:
        async with AsyncClient(endpoint=remote.request, curve=denied, timeout=SILENCE) as client:
            await client.daemon_ping()

    with pytest.raises(DaemonUnreachable, match="refused this client's CURVE key"):
        asyncio.run(refused())


def test_unknown_key_gets_no_reply_and_no_event(remote: Remote) -> None:
    refused = remote.client(remote.unknown, timeout=SILENCE)
    with pytest.raises(DaemonUnreachable, match=r"authorized_keys\.d") as caught:
        refused.daemon_ping()
    assert "refused this client's CURVE key" in str(caught.value)
    allowed = load_client_keys(remote.allowed, str(remote.server_key_file))
    denied = load_client_keys(remote.unknown, str(remote.server_key_file))
    good, bad = remote.sub(allowed), remote.sub(denied)
    assert heartbeat_within(good, SILENCE)
    assert not bad.poll(int(1000 * SILENCE), zmq.POLLIN)
    assert logged(remote.daemon, "refused a CURVE client")


def test_plaintext_client_gets_nothing(remote: Remote) -> None:
    # The library refuses to speak plaintext to a TCP endpoint at all...
    with pytest.raises(MapidError, match="only with CURVE"):
        Client(remote.daemon.runtime, endpoint=remote.request)
    # ...and a plain ZeroMQ DEALER and SUB with no CURVE hear nothing.
    dealer: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    remote.opened.append(dealer)
    dealer.connect(remote.request)
    request = envelope.request("plain-1", "daemon.ping", None)
    dealer.send_multipart([b"", pack(request)], flags=zmq.NOBLOCK)
    sub = remote.sub(None)
    good = remote.sub(load_client_keys(remote.allowed, str(remote.server_key_file)))
    assert heartbeat_within(good, SILENCE)
    assert not dealer.poll(int(1000 * SILENCE), zmq.POLLIN)
    assert not sub.poll(0, zmq.POLLIN)


def test_wrong_server_key_gets_nothing(remote: Remote) -> None:
    curve = load_client_keys(remote.allowed, str(remote.server_key_file))
    other_public, _ = zmq.curve_keypair()
    curve["server_key"] = other_public
    client = Client(remote.daemon.runtime, endpoint=remote.request, curve=curve, timeout=SILENCE)
    remote.opened.append(client)
    with pytest.raises((DaemonUnreachable, RequestTimedOut), match="server key"):
        client.daemon_ping()


def test_local_ipc_clients_need_no_key(remote: Remote) -> None:
    with Client(remote.daemon.runtime, timeout=5.0) as local:
        assert local.daemon_ping() is not None


# --- reload re-reads authorized_keys.d -----------------------------------------------------


def test_removed_key_refused_after_reload(remote: Remote) -> None:
    grace = remote.new_key("grace", allow=False)
    with Client(remote.daemon.runtime, timeout=5.0) as local:
        # Added: allowed after the reload, for a new connection.
        shutil.copy(grace.with_suffix(".key"), remote.authorized / "grace.key")
        local.daemon_reload()
        ada = remote.client(remote.allowed, timeout=10.0, retries=4)
        kept = remote.client(grace, timeout=10.0, retries=4)
        assert ada.daemon_ping() is not None
        assert kept.daemon_ping() is not None
        # Removed: the reload drops the remote connections; grace's cannot come back.
        (remote.authorized / "grace.key").unlink()
        report = local.daemon_reload()
        assert report["ok"]
    with pytest.raises(DaemonUnreachable, match="refused"):
        remote.client(grace, timeout=SILENCE).daemon_ping()
    with pytest.raises((DaemonUnreachable, RequestTimedOut)):
        kept.call("daemon.ping", timeout=SILENCE)
    # The allowed key's old connection reconnects by itself, and a new one works.
    assert ada.daemon_ping() is not None
    assert remote.client(remote.allowed).daemon_ping() is not None


def test_removed_key_shut_out_without_reload_while_watching(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """With the watcher on, authorized_keys.d/ is looked at by itself: no reload needed."""
    port = free_port_pair()
    request, events = f"tcp://127.0.0.1:{port}", f"tcp://127.0.0.1:{port + 1}"
    config = remote_config(request, events).replace('watch = "off"', 'watch = "poll"')
    daemon = make_daemon(config=config, start=False)
    found = Remote(daemon, request, events, tmp_path / "client-keys")
    grace = found.new_key("grace", allow=True)
    daemon.start()
    try:
        client = found.client(grace, timeout=10.0, retries=4)
        assert client.daemon_ping() is not None
        (found.authorized / "grace.key").unlink()
        deadline = time.monotonic() + 15.0
        while True:
            assert time.monotonic() < deadline, "the removed key still reaches the daemon"
            try:
                client.call("daemon.ping", timeout=0.5)
            except DaemonUnreachable as exc:
                assert "refused this client's CURVE key" in str(exc)
                break
            except RequestTimedOut:
                pass
            time.sleep(0.1)
        assert logged(daemon, "authorized_keys.d changed: 0 key(s) allowed")
    finally:
        found.close()


def test_bad_key_file_is_reported_and_skipped(remote: Remote) -> None:
    (remote.authorized / "broken.key").write_text('curve\n    public-key = "short"\n')
    with Client(remote.daemon.runtime, timeout=5.0) as local:
        checked = local.daemon_reload(check=True)
        report = local.daemon_reload()
    assert not checked["ok"] and checked["errors"] == report["errors"]
    assert not report["ok"]
    assert any(e["file"].endswith("broken.key") for e in report["errors"])
    assert remote.client(remote.allowed).daemon_ping() is not None
    offline = subprocess.run(
        [sys.executable, "-m", "mapid", "check-config", str(remote.daemon.config_dir)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert offline.returncode == 1 and "broken.key" in offline.stderr


# --- start-up refusals ---------------------------------------------------------------------


def start_fails(daemon: DaemonProc) -> str:
    with pytest.raises(RuntimeError) as caught:
        daemon.start()
    return str(caught.value)


def test_curve_false_refuses_to_start(make_daemon: DaemonFactory) -> None:
    port = free_port()
    config = remote_config(
        f"tcp://127.0.0.1:{port}", f"tcp://127.0.0.1:{port + 1}", "curve = false\n"
    )
    daemon = make_daemon(config=config, start=False)
    log = start_fails(daemon)
    line = config.splitlines().index("curve = false") + 1
    assert f"mapid.toml:{line}: [remote] curve = false is refused" in log
    assert not (daemon.runtime / "mapid.json").exists()
    checked = subprocess.run(
        [sys.executable, "-m", "mapid", "check-config", str(daemon.config_dir)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 1
    assert f"mapid.toml:{line}: [remote] curve = false is refused" in checked.stderr


def test_loose_secret_key_refuses_to_start(remote: Remote) -> None:
    assert remote.daemon.stop() == 0  # a clean stop with the TCP endpoints and ZAP running
    secret = remote.daemon.state_dir / "curve" / "server.key_secret"
    os.chmod(secret, 0o644)
    log = start_fails(remote.daemon)
    assert f"chmod 600 {secret}" in log
    os.chmod(secret, 0o600)  # the fix the message names works, and the key stays the same
    remote.daemon.start()
    info = read_connection_file(remote.daemon.runtime)
    assert info is not None
    assert info.curve_server_key == read_public_key(remote.server_key_file).decode()


def test_remote_section_is_validated() -> None:
    good, problems = parse({"request": "tcp://*:5555", "events": "tcp://[::1]:5556"}, "")
    assert good == RemoteConfig("tcp://*:5555", "tcp://[::1]:5556") and problems == []
    text = '[remote]\nrequest = "ipc:///tmp/x"\nevents = "tcp://h:99999"\nplain = 1\n'
    none, problems = parse({"request": "ipc:///tmp/x", "events": "tcp://h:99999", "plain": 1}, text)
    assert none is None
    lines = {message.split(" ")[1]: line for message, line in problems}
    assert lines == {"has": 4, "request": 2, "events": 3}


# --- the client side: key files and mapictl ------------------------------------------------


def test_client_keys_are_private(tmp_path: Path) -> None:
    public, secret = write_key_pair(tmp_path / "keys", "laptop", "test")
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "keys").st_mode) == 0o700
    assert b"secret-key" not in public.read_bytes()
    with pytest.raises(KeyFileError, match="exists already"):
        write_key_pair(tmp_path / "keys", "laptop", "test")
    os.chmod(secret, 0o640)
    with pytest.raises(KeyFileError, match=f"chmod 600 {secret}"):
        load_client_keys(secret, str(public))
    assert events_endpoint_for("tcp://host:5555") == "tcp://host:5556"


def mapictl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mapid.cli.app", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


def test_mapictl_keys_new_and_remote_commands(remote: Remote, tmp_path: Path) -> None:
    made = mapictl("keys", "new", "--out", str(tmp_path / "mine"), "--name", "laptop")
    assert made.returncode == 0, made.stderr
    public = tmp_path / "mine" / "laptop.key"
    secret = tmp_path / "mine" / "laptop.key_secret"
    assert "authorized_keys.d" in made.stdout and str(public) in made.stdout
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    remote_args = [
        "--endpoint",
        remote.request,
        "--server-key",
        str(remote.server_key_file),
        "--client-key",
        str(secret),
        "--timeout",
        str(SILENCE),
    ]
    # Not allowed yet: the message says why it may be.
    refused = mapictl(*remote_args, "ping")
    assert refused.returncode == 4, refused.stderr
    assert "authorized_keys.d" in refused.stderr
    shutil.copy(public, remote.authorized / public.name)
    with Client(remote.daemon.runtime, timeout=5.0) as local:
        local.daemon_reload()
    remote_args[-1] = "10"
    ping = mapictl(*remote_args, "ping")
    assert ping.returncode == 0, ping.stderr
    assert f"at {remote.request}" in ping.stdout
    status = mapictl(*remote_args, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["daemon"]["pid"] == remote.pid
    # --endpoint also names a local ipc socket, which needs no key.
    via_ipc = mapictl("--endpoint", f"ipc://{remote.daemon.runtime}/request.sock", "ping")
    assert via_ipc.returncode == 0, via_ipc.stderr
    # The events endpoint from the environment; the key as a Z85 string.
    env = {
        "MAPID_ENDPOINT": remote.request,
        "MAPID_EVENTS_ENDPOINT": remote.events,
        "MAPID_SERVER_KEY": read_public_key(remote.server_key_file).decode(),
        "MAPID_CLIENT_KEY": str(secret),
    }
    events = mapictl("events", "daemon", "--heartbeats", "--count", "1", "--json", env=env)
    assert events.returncode == 0, events.stderr
    assert json.loads(events.stdout.splitlines()[0])["topic"] == envelope.TOPIC_HEARTBEAT
