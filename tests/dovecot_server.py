"""A private Dovecot IMAP server on loopback, reading a Maildir that mapid writes.

The `dovecot` fixture starts Debian's Dovecot 2.3 (`dovecot-imapd`) from its own config
file in a temp dir, on 127.0.0.1 and a free port, with one test user whose mail is the
Maildir the test names. It is the real peer of the interoperability tests: what mapid writes,
Dovecot must read, and the other way round.

Dovecot will not touch mail as root, so mail belongs to a dedicated system user
(`mapid-dovecot-test`, created when missing). mapid's daemon runs as root in the tests and
writes there regardless; `DovecotServer.imap()` hands the tree to the test user again
before each IMAP connection, since files mapid created meanwhile belong to root.

For the IMAP store's tests, `DovecotServer.imapclient()` is a logged-in IMAPClient (to
APPEND, CREATE, DELETE as another mail client would), and `stop()` then `start_again()`
take the server away and bring it back on the same port under a live session. A Junk
mailbox carries \\Junk once someone creates it (it is not made automatically, so the
Maildir trees of test_dovecot.py stay as they were).

For OAuth2, `dovecot.start(maildir, oauth2=("oauthbearer", "xoauth2"))` offers those SASL
mechanisms too, through Dovecot's `oauth2` passdb. It asks a token-introspection endpoint
(RFC 7662) about each token: `Introspection`, a small HTTP server on loopback that the test
owns (`server.introspection`), answering `{"active": true, "username": "ada"}` for the
tokens it was told to accept and `{"active": false}` (or, with `status`, an HTTP error) for
any other, so a test can have the first token rejected and the second accepted. The
password (`passwd-file`) passdb still serves PLAIN and LOGIN, so `imap()` and
`imapclient()` work as before.

Without Dovecot (or without root to run it) the tests skip and say why, except under CI
(the CI variable set): there a missing Dovecot fails them, so CI never skips them.
"""

from __future__ import annotations

import contextlib
import http.server
import imaplib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

TEST_USER = "mapid-dovecot-test"
"""The system user Dovecot accesses mail as (never root)."""
IMAP_USER = "ada"
IMAP_PASSWORD = "dovecot-test-password"  # a throwaway, on loopback

CONFIG = """\
# Written by tests/dovecot_server.py: a private Dovecot {version} for one test.
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login{oauth2_mechanisms}
first_valid_uid = {uid}
last_valid_uid = {uid}
first_valid_gid = {gid}
last_valid_gid = {gid}
mail_location = maildir:{maildir}:LAYOUT=maildir++
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {root}/passwd{passwd_mechanisms}
}}{oauth2_passdb}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home
}}
namespace inbox {{
  inbox = yes
  mailbox Sent {{
    special_use = \\Sent
    auto = create
  }}
  mailbox Trash {{
    special_use = \\Trash
    auto = create
  }}
  mailbox Drafts {{
    special_use = \\Drafts
    auto = create
  }}
  mailbox Junk {{
    special_use = \\Junk
  }}
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot ={anvil_penalty}
}}{capability}{settings}
"""
PLAIN_CAPABILITY = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE SORT MULTIAPPEND UNSELECT CHILDREN "
    "NAMESPACE LIST-EXTENDED LITERAL+ SPECIAL-USE"
)
"""A server of few extensions: no IDLE, CONDSTORE, QRESYNC, MOVE, UIDPLUS, NOTIFY."""
# Each `{` block opens on its own line with one setting a line: Dovecot rejects one-line
# blocks ("Garbage after '{'"). Dovecot 2.4 renamed the settings; this is the 2.3 syntax.

OAUTH2_PASSDB = """
passdb {{
  driver = oauth2
  mechanisms = {mechanisms}
  args = {root}/dovecot-oauth2.conf.ext
}}"""
# Each passdb answers only its own mechanisms: a password is never sent to the
# introspection endpoint, a token never compared with the password file.

NO_AUTH_PENALTY = """
  unix_listener anvil-auth-penalty {
    mode = 0
  }"""
# Dovecot delays every login from an address after a failed one (2 s, doubling to 15 s:
# its "auth penalty"); the OAuth2 tests fail logins on purpose, one after another, so an
# OAuth2 server turns the penalty off, Dovecot's documented way (the listener of mode 0).
# `auth_failure_delay` (2 s before each NO) stays.

OAUTH2_CONFIG = """\
# Written by tests/dovecot_server.py: ask the test's introspection endpoint (RFC 7662).
introspection_url = {url}
introspection_mode = post
username_attribute = username
active_attribute = active
active_value = true
timeout_msecs = 5000
"""
OAUTH2_MECHANISMS = ("oauthbearer", "xoauth2")


class Introspection:
    """A token-introspection endpoint (RFC 7662) on 127.0.0.1, in a thread of the test.

    Dovecot's oauth2 passdb POSTs `token=<token>`; a token in `accepted` gets
    `{"active": true, "username": <its user>}`, any other `{"active": false}` (with HTTP
    200, as RFC 7662 says), or the HTTP status `status` when a test sets it (a broken
    identity provider). `asked` lists every token Dovecot asked about, in order.
    """

    def __init__(self) -> None:
        self.accepted: dict[str, str] = {}
        self.asked: list[str] = []
        self.status: int | None = None
        self._lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode("ascii", "replace"))
                token = (form.get("token") or [""])[0]
                status, answer = owner.answer(token)
                body = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # never a token on the test's stderr

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="introspection", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/introspect"

    def accept(self, token: str, user: str = IMAP_USER) -> None:
        with self._lock:
            self.accepted[token] = user

    def answer(self, token: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.asked.append(token)
            if self.status is not None:
                return self.status, {"error": "server_error"}
            user = self.accepted.get(token)
        if user is None:
            return 200, {"active": False}
        return 200, {"active": True, "username": user, "scope": "mail", "token_type": "Bearer"}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def _unavailable(reason: str) -> None:
    """Skip with the reason; under CI fail instead, so a broken CI image cannot hide."""
    if os.environ.get("CI"):
        pytest.fail(f"Dovecot tests cannot run under CI: {reason}", pytrace=False)
    pytest.skip(f"Dovecot tests skipped: {reason}")


def find_dovecot() -> tuple[str, str]:
    """(path of the dovecot binary, its version), or skip/fail saying what is missing."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    exe = shutil.which("dovecot", path=search)
    if exe is None:
        _unavailable(
            "no `dovecot` binary (install Debian's dovecot-imapd: "
            "apt-get install --no-install-recommends dovecot-imapd; .ci/run does)"
        )
        raise AssertionError("unreachable")
    version = subprocess.run(
        [exe, "--version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout.strip()
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None or (int(match[1]), int(match[2])) != (2, 3):
        _unavailable(f"{exe} is version {version!r}; this fixture writes a Dovecot 2.3 config")
    return exe, version


def mail_user() -> pwd.struct_passwd:
    """The dedicated system user, created with useradd when missing (as root)."""
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        pass
    if os.geteuid() != 0:
        _unavailable(f"the system user {TEST_USER} is missing and only root can create it")
    subprocess.run(
        [
            "useradd",
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            "--comment",
            "mapid Dovecot tests",
            TEST_USER,
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return pwd.getpwnam(TEST_USER)


def descendants(pid: int) -> list[int]:
    """The processes below `pid` (from /proc), deepest last."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def chown_tree(path: Path, uid: int, gid: int) -> None:
    """Give `path` and everything below it to uid:gid (mapid, as root, still writes)."""
    os.chown(path, uid, gid)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


@dataclass
class DovecotServer:
    """One running Dovecot serving `maildir` as the INBOX of IMAP_USER."""

    root: Path
    maildir: Path
    port: int
    uid: int
    gid: int
    proc: subprocess.Popen[bytes]
    version: str
    exe: str
    connections: list[imaplib.IMAP4] = field(default_factory=list)
    clients: list[Any] = field(default_factory=list)
    """IMAPClient connections of the test (closed on stop)."""
    introspection: Introspection | None = None
    """The token-introspection endpoint of a server started with `oauth2`."""

    @property
    def log_path(self) -> Path:
        return self.root / "dovecot.log"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def chown_mail(self) -> None:
        chown_tree(self.maildir, self.uid, self.gid)

    def imap(self) -> imaplib.IMAP4:
        """A logged-in IMAP connection (closed with the fixture). Chowns the Maildir first."""
        self.chown_mail()
        conn = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        self.connections.append(conn)
        conn.login(IMAP_USER, IMAP_PASSWORD)
        return conn

    def imapclient(self) -> Any:
        """A logged-in IMAPClient on the server (closed when the server stops)."""
        from imapclient import IMAPClient

        self.chown_mail()
        client = IMAPClient("127.0.0.1", port=self.port, ssl=False, timeout=10)
        self.clients.append(client)
        client.login(IMAP_USER, IMAP_PASSWORD)
        return client

    def start_again(self, timeout: float = 15.0) -> None:
        """Start the stopped server again: the same config, the same port."""
        assert self.proc.poll() is not None, "the server is still running"
        with open(self.root / "dovecot.out", "ab") as out:
            self.proc = subprocess.Popen(
                [self.exe, "-F", "-c", str(self.root / "dovecot.conf")],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        wait_for_greeting(self, timeout)

    def stop(self, timeout: float = 10.0) -> None:
        for conn in self.connections:
            with contextlib.suppress(imaplib.IMAP4.error, OSError):
                conn.logout()
        self.connections.clear()
        for client in self.clients:
            with contextlib.suppress(Exception):
                client.shutdown()
        self.clients.clear()
        if self.proc.poll() is not None:
            return
        try:
            pid = int((self.root / "run" / "master.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            pid = self.proc.pid
        # Killed, children first, as a crashed server would be: the tests want its clients'
        # connections dropped at once (an imap process in IDLE outlives a SIGTERMed master
        # with Debian's 2.3.19), and a graceful shutdown costs 1.5 s a test.
        for child in descendants(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        # A killed master leaves its sockets, and start_again would take them for a live one.
        for leftover in (self.root / "run").rglob("*"):
            if leftover.is_socket() or leftover.name == "master.pid":
                leftover.unlink(missing_ok=True)


def start_dovecot(
    root: Path,
    maildir: Path,
    *,
    exe: str,
    version: str,
    timeout: float = 15.0,
    oauth2: Sequence[str] = (),
    capability: str | None = None,
    settings: Mapping[str, str] | None = None,
) -> DovecotServer:
    """Write the config into `root`, start Dovecot in the foreground, wait for its greeting.

    With `capability` (e.g. PLAIN_CAPABILITY), the server announces that list after login
    in place of its own (`imap_capability`): a client then uses only those extensions,
    which is how the tests play a server without IDLE, CONDSTORE, MOVE or UIDPLUS.
    `settings` are more top-level settings (bench/imap.py --dovecot-setting).

    With `oauth2` (SASL mechanisms among OAUTH2_MECHANISMS), the server also offers those,
    checking tokens with a new `Introspection` endpoint (the server's `introspection`)."""
    unknown = {m.lower() for m in oauth2} - set(OAUTH2_MECHANISMS)
    if unknown:
        raise ValueError(f"not an OAuth2 mechanism: {sorted(unknown)}")
    user = mail_user()
    uid, gid = user.pw_uid, user.pw_gid
    for sub in ("run", "state", "home"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    os.chown(root / "home", uid, gid)
    (root / "passwd").write_text(f"{IMAP_USER}:{IMAP_PASSWORD}\n")
    maildir.mkdir(parents=True, exist_ok=True)
    chown_tree(maildir, uid, gid)
    port = free_port()
    introspection = Introspection() if oauth2 else None
    mechanisms = " ".join(m.lower() for m in oauth2)
    if introspection is not None:
        (root / "dovecot-oauth2.conf.ext").write_text(OAUTH2_CONFIG.format(url=introspection.url))
    config = root / "dovecot.conf"
    config.write_text(
        CONFIG.format(
            version=version,
            root=root,
            maildir=maildir,
            uid=uid,
            gid=gid,
            port=port,
            oauth2_mechanisms=f" {mechanisms}" if oauth2 else "",
            passwd_mechanisms="\n  mechanisms = plain login" if oauth2 else "",
            oauth2_passdb=OAUTH2_PASSDB.format(mechanisms=mechanisms, root=root) if oauth2 else "",
            anvil_penalty=NO_AUTH_PENALTY if oauth2 else "",
            capability=f"\nimap_capability = {capability}" if capability else "",
            settings="".join(f"\n{k} = {v}" for k, v in (settings or {}).items()),
        )
    )
    with open(root / "dovecot.out", "ab") as out:
        proc = subprocess.Popen(
            [exe, "-F", "-c", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = DovecotServer(root, maildir, port, uid, gid, proc, version, exe)
    server.introspection = introspection
    try:
        wait_for_greeting(server, timeout)
    except BaseException:
        if introspection is not None:
            introspection.close()
        raise
    return server


def wait_for_greeting(server: DovecotServer, timeout: float) -> None:
    """Until the server greets on its port (or fail, saying what its log says)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            output = (server.root / "dovecot.out").read_text(errors="replace")
            raise RuntimeError(
                f"dovecot exited with {server.proc.returncode}:\n{output}{server.log()}"
            )
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=1.0) as sock:
                if sock.recv(200).startswith(b"* OK"):
                    return
        except OSError:
            pass
        time.sleep(0.02)
    server.stop()
    raise RuntimeError(
        f"dovecot did not answer on port {server.port} in {timeout} s:\n{server.log()}"
    )


class DovecotFactory:
    """What the `dovecot` fixture yields: `root`, a folder the test user can reach, to put
    the Maildir in (pytest's tmp_path is private to root), and `start(maildir)`."""

    def __init__(self, root: Path, exe: str, version: str) -> None:
        self.root = root
        self.exe = exe
        self.version = version
        self.servers: list[DovecotServer] = []

    def start(
        self, maildir: Path, *, oauth2: Sequence[str] = (), capability: str | None = None
    ) -> DovecotServer:
        """A server on `maildir`; with `oauth2` (e.g. ("oauthbearer", "xoauth2")) it offers
        those mechanisms as well, against its own introspection endpoint; `capability`
        replaces the extensions it announces (start_dovecot)."""
        for parent in maildir.resolve().parents:
            if not os.stat(parent).st_mode & 0o001:
                raise RuntimeError(
                    f"{TEST_USER} cannot reach {maildir}: {parent} is not searchable by "
                    "others; put the Maildir under dovecot.root"
                )
        server = start_dovecot(
            self.root / f"dovecot-{len(self.servers)}",
            maildir,
            exe=self.exe,
            version=self.version,
            oauth2=oauth2,
            capability=capability,
        )
        self.servers.append(server)
        return server


@pytest.fixture(name="dovecot")
def dovecot_fixture() -> Iterator[DovecotFactory]:
    """Start private Dovecot servers on Maildirs: `dovecot.start(dovecot.root / "Mail")`."""
    exe, version = find_dovecot()
    if os.geteuid() != 0:
        _unavailable("the tests start Dovecot as root (it then drops to its test user)")
    mail_user()
    root = Path(tempfile.mkdtemp(prefix="mapid-dc-", dir="/tmp"))
    os.chmod(root, 0o711)  # the test user passes through to the Maildir, lists nothing
    factory = DovecotFactory(root, exe, version)
    try:
        yield factory
    finally:
        for server in factory.servers:
            server.stop()
            if server.introspection is not None:
                server.introspection.close()
        shutil.rmtree(root, ignore_errors=True)
