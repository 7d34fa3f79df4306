"""Fixtures that start the real daemon (`python -m mapid run`) on private directories.

Each daemon gets its own config, state, data and runtime directories through the MAPID_*
variables, so tests run side by side; the runtime directory lives directly under /tmp to
keep socket paths short. `tests/` is put on the daemon's PYTHONPATH so that profiles can name
the services of `providers_for_tests.py` as `providers_for_tests:<Class>`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mapid.client import Client
from mapid.errors import MapidError
from mapid.paths import read_connection_file

TESTS_DIR = Path(__file__).resolve().parent

pytest_plugins = ["smtp_server"]  # smtp_server, make_smtp_server, tls_ca: a real aiosmtpd

DEFAULT_CONFIG = 'default_profile = "alpha"\nwatch = "off"\n'
"""Tests that edit files reload explicitly; the watcher would race them on a loaded machine.
tests/test_watch_reload.py turns it on."""

VCARD_ADA = """BEGIN:VCARD
VERSION:3.0
UID:ada-1
FN:Ada Lovelace
N:Lovelace;Ada;;;
EMAIL;TYPE=INTERNET:ada@example.org
END:VCARD
"""

VCARD_GRACE = """BEGIN:VCARD
VERSION:4.0
UID:grace-1
FN:Grace Hopper
EMAIL:grace@example.org
END:VCARD
"""


def standard_profile(root: Path, *, identity: bool = True, autologon: bool = False) -> str:
    """A profile with a vCard address book (with identity) and a Maildir store."""
    contacts = root / "contacts"
    contacts.mkdir(parents=True, exist_ok=True)
    (contacts / "ada.vcf").write_text(VCARD_ADA)
    (contacts / "grace.vcf").write_text(VCARD_GRACE)
    ident = 'identity = { display_name = "Ada Lovelace", email = "ada@example.org" }\n'
    return (
        f"autologon = {'true' if autologon else 'false'}\n"
        "[services.contacts]\n"
        'service = "vcard"\n'
        f'path = "{contacts}"\n' + (ident if identity else "") + "\n[services.mail]\n"
        'service = "maildir"\n'
        f'path = "{root / "Mail"}"\n'
        "primary_store = true\n"
    )


T = TypeVar("T")


def wait_until(check: Callable[[], T | None], what: str, timeout: float = 10.0) -> T:
    """Poll `check` until it returns something other than None (or fail naming `what`)."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@dataclass
class DaemonProc:
    root: Path
    runtime: Path
    config_dir: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    clients: list[Client] = field(default_factory=list)

    @property
    def state_dir(self) -> Path:
        return Path(self.env["MAPID_STATE_DIR"])

    @property
    def log_path(self) -> Path:
        return self.root / "daemon.log"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self, timeout: float = 15.0) -> DaemonProc:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mapid", "run"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            info = read_connection_file(self.runtime)
            if info is not None and info.pid == self.proc.pid:
                try:
                    with Client(self.runtime, timeout=2.0) as probe:
                        probe.daemon_ping()
                    return self
                except MapidError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"daemon did not come up in {timeout} s:\n{self.log()}")

    def client(self, **kwargs: Any) -> Client:
        kwargs.setdefault("timeout", 10.0)
        client = Client(self.runtime, **kwargs)
        self.clients.append(client)
        return client

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.clients.clear()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


DaemonFactory = Callable[..., DaemonProc]


def prepare_daemon(
    base: Path,
    *,
    profiles: dict[str, str] | None = None,
    config: str | None = None,
    embedded: bool = False,
    env: dict[str, str] | None = None,
) -> DaemonProc:
    root = base
    root.mkdir(parents=True, exist_ok=True)
    runtime_parent = Path(tempfile.mkdtemp(prefix="mapid-t-", dir="/tmp"))
    runtime = runtime_parent / "run"
    config_dir = root / "config"
    (config_dir / "profiles").mkdir(parents=True, exist_ok=True)
    if not embedded:
        (config_dir / "mapid.toml").write_text(config if config is not None else DEFAULT_CONFIG)
        if profiles is None:
            profiles = {
                "alpha": standard_profile(root / "alpha"),
                "beta": standard_profile(root / "beta", identity=False),
            }
        for name, text in profiles.items():
            (config_dir / "profiles" / f"{name}.toml").write_text(text)
    full_env = dict(os.environ)
    full_env.update(
        {
            "MAPID_CONFIG_DIR": str(config_dir),
            "MAPID_STATE_DIR": str(root / "state"),
            "MAPID_RUNTIME_DIR": str(runtime),
            "XDG_DATA_HOME": str(root / "data"),
            "XDG_CONFIG_HOME": str(root / "xdg-config"),
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(TESTS_DIR), full_env.get("PYTHONPATH", "")) if p
            ),
        }
    )
    full_env.update(env or {})
    return DaemonProc(root, runtime, config_dir, full_env)


@pytest.fixture
def make_daemon(tmp_path: Path) -> Iterator[DaemonFactory]:
    """Start daemons with custom profiles: `make_daemon(profiles={...}, config="...")`."""
    started: list[DaemonProc] = []

    def factory(**kwargs: Any) -> DaemonProc:
        name = kwargs.pop("name", f"d{len(started)}")
        start = kwargs.pop("start", True)
        proc = prepare_daemon(tmp_path / name, **kwargs)
        started.append(proc)
        return proc.start() if start else proc

    yield factory
    for proc in started:
        proc.close()
        shutil.rmtree(proc.runtime.parent, ignore_errors=True)


@pytest.fixture
def daemon(make_daemon: DaemonFactory) -> DaemonProc:
    """A daemon with profiles `alpha` (vCard with identity + Maildir, the default) and `beta`."""
    return make_daemon()


@pytest.fixture
def client(daemon: DaemonProc) -> Client:
    return daemon.client()
