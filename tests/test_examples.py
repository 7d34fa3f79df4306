"""The quickstart (docs/quickstart.md) and its programs (examples/) against a real daemon.

Every example runs as a reader runs it: a separate process with the daemon's environment
only (MAPID_RUNTIME_DIR, XDG_DATA_HOME ...), so it finds the daemon through the connection
file like any client. The quickstart's tested parts are its fenced blocks marked
`<!-- test: NAME -->`: shell blocks (the mail delivery, `mapictl logon`, the jq pipelines)
are run through bash exactly as written; output blocks are compared with what the example
printed, after putting the doc's home directory, dates and times in place of this run's;
`excerpt FILE` blocks must be that file's code, line for line. So an edit of either the doc
or an example that makes them disagree fails here.

Most tests use the daemon ./install.sh leaves a reader with: no configuration, so it writes
the embedded default profile (a Maildir and a vCard folder) and logs it on. The others use
the two standard profiles of conftest.py.

The Node.js monitor (examples/node) needs `node` and the packages `npm ci` installs there
(.ci/run does): without them its tests skip and say why, except under CI, where they fail.
So do the jq tests without jq.
"""

from __future__ import annotations

import os
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

from conftest import DaemonFactory, DaemonProc, wait_until

REPO = Path(__file__).resolve().parent.parent
QUICKSTART = REPO / "docs" / "quickstart.md"
EXAMPLES = REPO / "examples"
NODE_DIR = EXAMPLES / "node"
PYTHON_EXAMPLES = ("status_monitor.py", "list_inbox.py", "new_mail.py")

DOC_DATA_HOME = "/home/ada/.local/share"
"""The XDG_DATA_HOME of the quickstart's outputs (a reader's home directory)."""

WAIT = 15.0
"""The longest wait for one line or one exit; a passing test takes far less."""

_BLOCK = re.compile(
    r"^<!-- test: (?P<name>[^>]+?) -->\n```(?P<lang>\w*)\n(?P<body>.*?)^```$",
    re.MULTILINE | re.DOTALL,
)
_LINK = re.compile(r"\]\(([^)]+)\)")


def doc_blocks() -> list[tuple[str, str, str]]:
    """The marked blocks of the quickstart: (name, language, text)."""
    text = QUICKSTART.read_text(encoding="utf-8")
    return [(m["name"], m["lang"], m["body"]) for m in _BLOCK.finditer(text)]


def block(name: str) -> str:
    found = [body for n, _lang, body in doc_blocks() if n == name]
    assert len(found) == 1, f"docs/quickstart.md has {len(found)} blocks marked {name!r}"
    return found[0]


def normalise(text: str, env: dict[str, str]) -> str:
    """This run's output as the quickstart shows it: the doc's home for this daemon's data
    directory, placeholders for dates and times, no trailing blanks."""
    text = text.replace(env["XDG_DATA_HOME"], DOC_DATA_HOME)
    text = re.sub(r"\b\d{4}-\d\d-\d\d \d\d:\d\d\b", "<date>", text)
    text = re.sub(r"\b\d\d:\d\d:\d\d\b", "<time>", text)
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())


def need(what: str, missing: str | None) -> None:
    """Skip when a tool is missing, saying why; under CI fail instead."""
    if missing is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} cannot run under CI: {missing}", pytrace=False)
    pytest.skip(f"{what}: {missing}")


# --- the daemons and the reader's shell -------------------------------------------------------


def user_env(proc: DaemonProc, home: Path) -> dict[str, str]:
    """The daemon's MAPID_* and XDG_* variables, a private HOME, and `mapictl` on PATH (the
    installed console script, else a shim running `python -m mapid.cli.app`)."""
    env = dict(proc.env)
    env.pop("COLUMNS", None)
    home.mkdir(parents=True, exist_ok=True)
    env["HOME"] = str(home)
    bindir = Path(sys.executable).parent
    if not (bindir / "mapictl").exists():
        bindir = home / "bin"
        bindir.mkdir(exist_ok=True)
        shim = bindir / "mapictl"
        shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m mapid.cli.app "$@"\n')
        shim.chmod(0o755)
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    return env


def default_session(proc: DaemonProc) -> str:
    """Wait for the autologon session of the default profile to be up; its id."""
    client = proc.client()

    def active() -> str | None:
        for info in client.daemon_sessions()["sessions"]:
            if info["profile"] == "default" and info["state"] == "active":
                return str(info["session"])
        return None

    return wait_until(active, "the default profile's autologon session")


@pytest.fixture
def quick(make_daemon: DaemonFactory, tmp_path: Path) -> tuple[DaemonProc, dict[str, str]]:
    """The daemon as the quickstart's reader has it (embedded default profile, logged on),
    and the reader's environment."""
    proc = make_daemon(embedded=True)
    default_session(proc)
    return proc, user_env(proc, tmp_path / "home")


@pytest.fixture
def two(make_daemon: DaemonFactory, tmp_path: Path) -> tuple[DaemonProc, dict[str, str]]:
    """The standard daemon (profiles alpha, the default, and beta; no autologon)."""
    proc = make_daemon()
    return proc, user_env(proc, tmp_path / "home")


def node_exe() -> str:
    exe = shutil.which("node")
    missing = None
    if exe is None:
        missing = "node is not installed (apt install nodejs npm, then npm ci in examples/node)"
    else:
        for package in ("zeromq", "@msgpack/msgpack"):
            if not (NODE_DIR / "node_modules" / package / "package.json").exists():
                missing = f"examples/node lacks {package}: run `npm ci` there (.ci/run does)"
                break
    need("the Node.js example", missing)
    assert exe is not None
    return exe


def jq_present() -> None:
    need("the jq examples", None if shutil.which("jq") else "jq is not installed (apt install jq)")


MONITORS = ("python", "node")


def monitor_command(kind: str) -> list[str]:
    if kind == "node":
        return [node_exe(), str(NODE_DIR / "status_monitor.js")]
    return [sys.executable, str(EXAMPLES / "status_monitor.py")]


def example(name: str, *args: str) -> list[str]:
    return [sys.executable, str(EXAMPLES / name), *args]


def run(
    command: list[str], env: dict[str, str], timeout: float = WAIT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def bash(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A shell block of the quickstart, run as a reader pastes it."""
    done = run(["bash", "-euo", "pipefail", "-c", script], env)
    assert done.returncode == 0, (script, done.stdout, done.stderr)
    return done


class Follower:
    """A long-running example: its lines as they come, with a deadline on each wait."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            command,
            env=env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a pipeline's every process stops with it
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._lines: queue.Queue[tuple[str, str]] = queue.Queue()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(name, stream), daemon=True)
            for name, stream in (("out", self.proc.stdout), ("err", self.proc.stderr))
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, name: str, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put((name, line.rstrip("\n")))

    def wait_for(self, check: Callable[[str, str], bool], what: str) -> str:
        """Collect lines until one (stream name, line) passes `check`; that line."""
        deadline = time.monotonic() + WAIT
        while True:
            left = deadline - time.monotonic()
            try:
                name, line = self._lines.get(timeout=max(0.0, left))
            except queue.Empty:
                raise AssertionError(
                    f"no {what} within {WAIT} s; stdout {self.out}, stderr {self.err}"
                ) from None
            (self.out if name == "out" else self.err).append(line)
            if check(name, line):
                return line

    def finish(self) -> str:
        """Wait for a clean exit; all of stdout."""
        code = self.proc.wait(WAIT)
        for reader in self._readers:  # they end at the pipes' end, with the process
            reader.join(WAIT)
        while not self._lines.empty():
            name, line = self._lines.get()
            (self.out if name == "out" else self.err).append(line)
        assert code == 0, (code, self.out, self.err)
        return "\n".join(self.out)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


@pytest.fixture
def follow() -> Iterator[Callable[[list[str], dict[str, str]], Follower]]:
    started: list[Follower] = []

    def start(command: list[str], env: dict[str, str]) -> Follower:
        started.append(Follower(command, env))
        return started[-1]

    yield start
    for follower in started:
        follower.stop()


def ready(prefix: str) -> Callable[[str, str], bool]:
    return lambda name, line: name == "out" and line.startswith(prefix)


def drop_message(maildir: Path, sender: str, subject: str, *, read: bool, age: int = 0) -> None:
    """A message as mail software leaves it: an MTA's unread in new/, an IMAP sync's
    already read in cur/ (which is not new mail)."""
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    key = f"{int(time.time()) - age}.R{age}P{os.getpid()}.{socket.gethostname()}"
    (maildir / "tmp" / key).write_text(f"From: {sender}\nSubject: {subject}\n\nHello.\n")
    target = maildir / "cur" / f"{key}:2,S" if read else maildir / "new" / key
    (maildir / "tmp" / key).rename(target)


def inbox_count_is(proc: DaemonProc, count: int) -> None:
    """Wait until the default store's status row says the Inbox holds `count` messages."""
    client = proc.client()
    wanted = f": {count} message{'s' if count != 1 else ''} in Inbox"

    def seen() -> bool | None:
        for rows in client.daemon_snapshot()["status"].values():
            if any(wanted in str(row.get("PR_STATUS_STRING")) for row in rows):
                return True
        return None

    wait_until(seen, f"the store's row saying {wanted!r}")


# --- the doc itself ---------------------------------------------------------------------------


def test_quickstart_marks_every_tested_block() -> None:
    names = [name for name, _lang, _body in doc_blocks()]
    for wanted in (
        "deliver",
        "status-monitor",
        "logon",
        "list-inbox",
        "new-mail",
        "jq-status",
        "jq-status-output",
        "jq-events",
        "jq-events-output",
    ):
        assert names.count(wanted) == 1, (wanted, names)
    excerpts = {n.split(" ", 1)[1] for n in names if n.startswith("excerpt ")}
    assert excerpts == {f"examples/{name}" for name in PYTHON_EXAMPLES}


@pytest.mark.parametrize(
    "name, body",
    [(n, b) for n, _lang, b in doc_blocks() if n.startswith("excerpt ")],
    ids=lambda value: str(value).split("\n", 1)[0][:40],
)
def test_excerpt_is_the_example_code(name: str, body: str) -> None:
    """A code block of the doc is a run of lines of its file (indentation aside)."""
    source = (REPO / name.split(" ", 1)[1]).read_text(encoding="utf-8").splitlines()
    wanted = textwrap.dedent(body).splitlines()
    first = wanted[0].strip()
    for start, line in enumerate(source):
        if line.strip() == first:
            chunk = "\n".join(source[start : start + len(wanted)])
            if textwrap.dedent(chunk).splitlines() == wanted:
                return
    raise AssertionError(f"docs/quickstart.md quotes {name} in lines it does not have:\n{body}")


def anchors(markdown: Path) -> set[str]:
    """The anchors of a Markdown file's headings, as GitHub makes them."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", markdown.read_text(encoding="utf-8"), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


@pytest.mark.parametrize("doc", [QUICKSTART, EXAMPLES / "README.md"], ids=lambda p: p.name)
def test_links_stay_in_the_repository(doc: Path) -> None:
    """Every link names a file of the repository (and a heading there, when it has #)."""
    text = doc.read_text(encoding="utf-8")
    links = _LINK.findall(text)
    assert len(links) >= 2, "few links found: the pattern is wrong"
    for link in links:
        assert "://" not in link and not link.startswith("/"), link
        path, _, anchor = link.partition("#")
        target = (doc.parent / path).resolve()
        assert target.exists(), f"{doc.name} links to {link}, which does not exist"
        assert target.is_relative_to(REPO), link
        if anchor:
            assert anchor in anchors(target), f"{path} has no heading for #{anchor}"
    assert "../shared" not in text


# --- the Python examples ----------------------------------------------------------------------


@pytest.mark.parametrize("name", PYTHON_EXAMPLES)
def test_help(name: str) -> None:
    done = run(example(name, "--help"), dict(os.environ))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: {name}")
    assert ("--count" in done.stdout) or ("--limit" in done.stdout)


@pytest.mark.parametrize("kind", MONITORS)
def test_without_a_daemon_they_say_so(kind: str, tmp_path: Path) -> None:
    env = dict(os.environ, MAPID_RUNTIME_DIR=str(tmp_path / "nothing"))
    commands = [monitor_command(kind)]
    if kind == "python":
        commands += [example("list_inbox.py"), example("new_mail.py")]
    for command in commands:
        done = run(command, env)
        assert done.returncode == 1, (command, done.stdout, done.stderr)
        assert "no daemon is running" in done.stderr, done.stderr
        assert str(tmp_path / "nothing" / "mapid.json") in done.stderr


@pytest.mark.parametrize("kind", MONITORS)
def test_status_monitor_as_in_the_quickstart(
    kind: str, quick: tuple[DaemonProc, dict[str, str]], follow: Callable[..., Follower]
) -> None:
    """The monitor prints the default session's table, then the store's row when mail
    arrives: the quickstart's output, line for line."""
    _proc, env = quick
    monitor = follow([*monitor_command(kind), "--count", "1"], env)
    monitor.wait_for(ready("-- "), "the monitor's table")
    bash(block("deliver"), env)
    assert normalise(monitor.finish(), env) == normalise(block("status-monitor"), env)


@pytest.mark.parametrize("kind", MONITORS)
def test_status_monitor_once(kind: str, quick: tuple[DaemonProc, dict[str, str]]) -> None:
    _proc, env = quick
    done = run([*monitor_command(kind), "--once"], env)
    assert done.returncode == 0, done.stderr
    table = normalise(block("status-monitor"), env).splitlines()[:-1]  # not the change
    assert normalise(done.stdout, env).splitlines() == table


@pytest.mark.parametrize("kind", MONITORS)
def test_status_monitor_follows_a_logon_and_logoff(
    kind: str, quick: tuple[DaemonProc, dict[str, str]], follow: Callable[..., Follower]
) -> None:
    """The quickstart's `mapictl logon`: a logon line with its id and five rows added;
    then its logoff: five rows deleted and the logoff line."""
    _proc, env = quick
    monitor = follow(monitor_command(kind), env)
    monitor.wait_for(ready("-- "), "the monitor's table")
    logon = bash(block("logon"), env).stdout
    fields = dict(line.split(None, 1) for line in logon.splitlines() if line.strip())
    session, token = fields["session"], fields["token"]
    monitor.wait_for(ready("+ default  mail "), "the new session's store row")
    bash(f"mapictl logoff {token}", env)
    monitor.wait_for(ready("logoff "), "the logoff line")
    changes = monitor.out[monitor.out.index("-- 1 session(s); following changes") + 1 :]
    assert changes[0] == f"logon default {session}"
    assert changes[-1] == f"logoff default {session}"
    added = [line for line in changes if line.startswith("+ ")]
    assert [line.split()[2] for line in added] == ["default", "MAPI", "MAPI", "contacts", "mail"]
    # The second session's spooler stands by from its logon on (the first one sends the
    # store's Outbox): its row says so as it is added, and no change follows.
    (spooler,) = [line for line in added if "MAPI_SPOOLER" in line]
    assert spooler.endswith("sends this store's Outbox") and "standby: session " in spooler
    deleted = [line.split()[:3] for line in changes if line.startswith("- ")]
    assert len(deleted) == 5 and all(d[:2] == ["-", "default"] for d in deleted), changes
    assert len(changes) == 1 + 5 + 5 + 1, changes


def test_monitors_agree_on_two_profiles(two: tuple[DaemonProc, dict[str, str]]) -> None:
    """Sessions of two profiles: both providers of each, and Python and Node.js print the
    same lines."""
    proc, env = two
    client = proc.client()
    for profile in ("alpha", "beta"):
        client.session_logon(profile, ["MAPI_NEW_SESSION"])
    done = run([*monitor_command("python"), "--once"], env)
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    for profile in ("alpha", "beta"):
        mine = [row for row in rows if row[0] == profile]
        assert len(mine) == 5, rows
        assert ["contacts", "MAPI_AB_PROVIDER", "STATUS_AVAILABLE", "2", "contacts"] in [
            row[1:] for row in mine
        ]
        store = next(row for row in mine if row[1] == "mail")
        assert store[2:6] == ["MAPI_STORE_PROVIDER", "STATUS_AVAILABLE", "Maildir", "at"]
        assert store[6] == f"{proc.root / profile / 'Mail'}:"
    assert rows[-1] == ["--", "2", "session(s);", "following", "changes"]
    node = run([*monitor_command("node"), "--once"], env)
    assert node.returncode == 0, node.stderr
    assert node.stdout == done.stdout


def test_list_inbox_as_in_the_quickstart(quick: tuple[DaemonProc, dict[str, str]]) -> None:
    proc, env = quick
    bash(block("deliver"), env)
    inbox_count_is(proc, 1)
    done = run(example("list_inbox.py"), env)
    assert done.returncode == 0, done.stderr
    assert normalise(done.stdout, env) == normalise(block("list-inbox"), env)


def test_list_inbox_of_a_profile(two: tuple[DaemonProc, dict[str, str]]) -> None:
    """Newest first, the read flag from the Maildir's S, a profile by name, --limit."""
    proc, env = two
    maildir = proc.root / "alpha" / "Mail"
    drop_message(maildir, "Alan Turing <alan@example.org>", "Minutes", read=True, age=60)
    drop_message(maildir, "Grace Hopper <grace@example.org>", "Hello there", read=False)
    done = run(example("list_inbox.py"), env)  # alpha is the default profile
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "alpha: Inbox, 2 message(s)"
    assert lines[1].split("  ", 1)[1].split() == ["NEW", "Grace", "Hopper", "Hello", "there"]
    assert lines[2].split("  ", 1)[1].split() == ["read", "Alan", "Turing", "Minutes"]
    assert len(lines) == 3
    one = run(example("list_inbox.py", "alpha", "--limit", "1"), env)
    assert one.stdout.splitlines() == lines[:2], one.stderr
    beta = run(example("list_inbox.py", "beta"), env)
    assert beta.stdout.splitlines() == ["beta: Inbox, 0 message(s)"], beta.stderr
    nobody = run(example("list_inbox.py", "nobody"), env)
    assert nobody.returncode == 1
    assert nobody.stderr.startswith("list_inbox: MAPI_E_LOGON_FAILED"), nobody.stderr


def test_new_mail_as_in_the_quickstart(
    quick: tuple[DaemonProc, dict[str, str]], follow: Callable[..., Follower]
) -> None:
    """One line for the new message; none for one that arrives already read."""
    _proc, env = quick
    watcher = follow(example("new_mail.py", "--count", "1"), env)
    watcher.wait_for(ready("default: waiting"), "new_mail's first line")
    mail = Path(env["XDG_DATA_HOME"]) / "mapid" / "Mail"
    drop_message(mail, "Alan Turing <alan@example.org>", "Already read", read=True, age=60)
    bash(block("deliver"), env)
    assert normalise(watcher.finish(), env) == normalise(block("new-mail"), env)


# --- the shell: mapictl and jq ----------------------------------------------------------------


def test_jq_status(quick: tuple[DaemonProc, dict[str, str]]) -> None:
    jq_present()
    _proc, env = quick
    done = bash(block("jq-status"), env)
    assert normalise(done.stdout, env) == normalise(block("jq-status-output"), env)


def test_jq_events(
    quick: tuple[DaemonProc, dict[str, str]], follow: Callable[..., Follower]
) -> None:
    jq_present()
    _proc, env = quick
    pipeline = follow(["bash", "-o", "pipefail", "-c", block("jq-events")], env)
    pipeline.wait_for(lambda name, line: "following events" in line, "mapictl's first notice")
    bash(block("deliver"), env)
    line = pipeline.wait_for(ready("{"), "jq's line")
    assert normalise(line, env) == normalise(block("jq-events-output"), env)


# --- the Node.js example ----------------------------------------------------------------------


def test_node_example_is_locked() -> None:
    """The lock file is kept and the installed packages are not."""
    assert (NODE_DIR / "package-lock.json").is_file()
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(NODE_DIR / "node_modules" / "zeromq")],
        cwd=REPO,
        check=False,
    )
    assert ignored.returncode == 0, "examples/node/node_modules is not in .gitignore"


def test_node_help_and_bad_arguments() -> None:
    command = monitor_command("node")
    shown = run([*command, "--help"], dict(os.environ))
    assert shown.returncode == 0 and "--count N" in shown.stdout
    bad = run([*command, "--count", "zero"], dict(os.environ))
    assert bad.returncode == 2 and "usage:" in bad.stderr
