"""The README's shell examples, run line by line against a real daemon.

Every ```sh line that runs mapictl is run in order, through bash (so quoting, `~`, pipes
and continuation lines work as they do for a reader), with the `mapictl` on PATH, against
one daemon started as `./install.sh` leaves it: no configuration, so it writes the
embedded default profile and logs it on. A line must exit 0, or the code its comment
gives as `# exit N`; a line that follows until Ctrl-C (`status --watch`, `events`,
`notify`) must be running, show what it follows, and stop with 0 on SIGINT. So an edit of
the README that breaks an example fails here.

Not run, on purpose:
- lines that do not run mapictl: `./install.sh` and `./run-tests` (they install into
  .venv and run the whole suite), the systemd unit lines (`mkdir`, `mapid units`,
  `systemctl`: they need the user's systemd manager and write into ~/.config), and the
  dependency lines (`uv pip compile`, `./run-tests --lowest/--newest`, `.ci/newest`: they
  need the package index);
- `mapictl send ... --wait`, which waits for the spooler to hand the message to an SMTP
  server: a network peer the default profile does not have (report.pdf and notes.txt are
  placeholders too). tests/test_cli_mail.py sends through a real one.
"""

from __future__ import annotations

import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest

from conftest import DaemonFactory, DaemonProc

README = Path(__file__).resolve().parent.parent / "README.md"

NOT_MAPICTL = {"./install.sh", "./run-tests", "mkdir", "mapid", "systemctl", ".venv/bin/uv", "bash"}
"""The programs of README lines that are not run (see the module docstring); any other
program is an error, so a new kind of example is never skipped unnoticed."""

NEEDS_PEER = ("--wait",)
"""mapictl options that make a line need a network peer (an SMTP server)."""

RUN_TIMEOUT = 60.0
FOLLOW_TIMEOUT = 30.0

VCARDS = {
    "hopper.vcf": "BEGIN:VCARD\nVERSION:4.0\nUID:grace-1\nFN:Grace Hopper\n"
    "EMAIL:grace@example.org\nEND:VCARD\n",
    "kelly.vcf": "BEGIN:VCARD\nVERSION:3.0\nUID:grace-2\nFN:Grace Kelly\n"
    "EMAIL;TYPE=INTERNET:kelly@example.org\nEND:VCARD\n",
}
"""The README's `resolve Grace` is ambiguous between these two; `send --to Hopper` is not."""


@dataclass(frozen=True)
class Example:
    """One command of a ```sh block: where it is, what it runs, and what it should do."""

    line: int
    command: str
    expect: int
    skip: str | None = None
    follows: bool = False


_BLOCK = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)
_EXIT = re.compile(r"#.*\bexit (\d+)\b")


def examples(text: str) -> list[Example]:
    """The commands of the ```sh blocks of `text`, continuation lines joined."""
    found: list[Example] = []
    for block in _BLOCK.finditer(text):
        first = text.count("\n", 0, block.start(1)) + 1
        pending: list[str] = []
        start = first
        for offset, raw in enumerate(block.group(1).splitlines()):
            if not pending:
                start = first + offset
            if raw.endswith("\\"):
                pending.append(raw[:-1])
                continue
            command = " ".join([*pending, raw]).strip()
            pending = []
            if command and not command.startswith("#"):
                found.append(classify(start, command))
    return found


def classify(line: int, command: str) -> Example:
    """Whether a command is run, how it ends, or why it is not run."""
    words = shlex.split(command, comments=True)
    code = _EXIT.search(command)
    expect = int(code.group(1)) if code else 0
    if "mapictl" not in words:
        if words[0] not in NOT_MAPICTL:
            raise AssertionError(
                f"README.md:{line}: say in test_readme.py whether to run {command!r}"
            )
        return Example(line, command, expect, skip=f"runs {words[0]}, not mapictl")
    args = words[words.index("mapictl") + 1 :]
    if any(option in args for option in NEEDS_PEER):
        return Example(line, command, expect, skip="needs an SMTP server")
    follows = args[:1] in (["events"], ["notify"]) or (
        args[:1] == ["status"] and ("--watch" in args or "-w" in args)
    )
    return Example(line, command, expect, follows=follows)


# --- the world the README's examples assume ------------------------------------------------------


def mail_file(folder: Path, n: int, subject: str) -> None:
    """A message as an MTA leaves it in a Maildir folder's new/."""
    for sub in ("cur", "new", "tmp"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    msg = EmailMessage()
    msg["From"] = "Grace Hopper <grace@example.org>"
    msg["To"] = "Ada Lovelace <ada@example.org>"
    msg["Subject"] = subject
    msg["Date"] = "Mon, 01 Dec 2025 10:00:00 +0000"
    msg["Message-ID"] = f"<readme-{n}@example.org>"
    msg.set_content(f"Message {n} about an invoice.\n")
    name = f"{1764583200 + n}.R{n}P{os.getpid()}.readme"
    (folder / "tmp" / name).write_bytes(bytes(msg))
    (folder / "tmp" / name).rename(folder / "new" / name)


def embedded_daemon(make_daemon: DaemonFactory) -> DaemonProc:
    """A daemon with no configuration (it writes and logs on the embedded default
    profile), whose Maildir has an Inbox message and a Work/Projects folder and whose
    address book has two Graces."""
    proc = make_daemon(embedded=True, start=False)
    data = Path(proc.env["XDG_DATA_HOME"]) / "mapid"
    mail = data / "Mail"
    mail_file(mail, 1, "Your invoice")
    for folder in (".Work", ".Work.Projects"):
        mail_file(mail / folder, 2, "Project plan")
        (mail / folder / "maildirfolder").touch()
    (data / "contacts").mkdir(parents=True)
    for name, card in VCARDS.items():
        (data / "contacts" / name).write_text(card)
    return proc.start()


def shell_env(daemon: DaemonProc, home: Path) -> dict[str, str]:
    """The daemon's MAPID_* and XDG_* variables, a private HOME, and `mapictl` on PATH:
    the installed console script when there is one, else `python -m mapid.cli.app`."""
    env = dict(daemon.env)
    env.pop("COLUMNS", None)
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


# --- running ---------------------------------------------------------------------------------


def run_line(example: Example, env: dict[str, str], home: Path) -> tuple[str | None, str]:
    """Run one command: None when it did what the README says, else what went wrong; and
    its output."""
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", example.command],
        env=env,
        cwd=home,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    if done.returncode == example.expect:
        return None, done.stdout
    problem = f"exit {done.returncode}, README says {example.expect}:\n{done.stdout}{done.stderr}"
    return problem, done.stdout


def follow_line(
    example: Example, env: dict[str, str], home: Path, nudge: Callable[[], None]
) -> str | None:
    """Run a command that follows until Ctrl-C: it must show a line (`nudge` makes
    something happen for it to show; `status --watch` off a terminal shows its view when
    it stops), still be running, and exit 0 on SIGINT."""
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {example.command}"],
        env=env,
        cwd=home,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout

    def read() -> None:
        for line in stdout:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        watching = "--watch" in example.command
        deadline = time.monotonic() + FOLLOW_TIMEOUT
        while not watching and lines.empty() and time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            nudge()
            time.sleep(0.5)
        if watching:
            time.sleep(3.0)
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            return f"ended by itself with {proc.returncode}: {err}"
        if not watching and lines.empty():
            return f"showed nothing in {FOLLOW_TIMEOUT:g} s"
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(FOLLOW_TIMEOUT)
        reader.join(5)
        err = proc.stderr.read() if proc.stderr else ""
        if code != 0:
            return f"exit {code} on Ctrl-C: {err}"
        if watching and lines.empty():
            return f"showed nothing when it stopped: {err}"
        return None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run_examples(
    found: list[Example], daemon: DaemonProc, home: Path
) -> tuple[list[str], dict[str, str]]:
    """Run every example that is meant to run, in order: the failures, each with its line,
    and the output of each command that is not a follower."""
    env = shell_env(daemon, home)
    inbox = Path(daemon.env["XDG_DATA_HOME"]) / "mapid" / "Mail"
    count = iter(range(100, 10_000))

    def nudge() -> None:
        # What `events` and `notify --events newmail` follow: a reload event, new mail.
        subprocess.run(
            ["bash", "-c", "mapictl reload"], env=env, cwd=home, capture_output=True, timeout=30
        )
        mail_file(inbox, next(count), "Fresh mail")

    failures = []
    outputs: dict[str, str] = {}
    for example in found:
        if example.skip:
            continue
        if example.follows:
            problem = follow_line(example, env, home, nudge)
        else:
            problem, outputs[example.command] = run_line(example, env, home)
        if problem is not None:
            failures.append(f"README.md:{example.line}: {example.command}\n  {problem}")
    return failures, outputs


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def test_every_readme_example_does_what_the_text_says(
    make_daemon: DaemonFactory, home: Path
) -> None:
    found = examples(README.read_text(encoding="utf-8"))
    ran = [e for e in found if not e.skip]
    # The parser really finds the blocks: the status, services, profiles and mail lines.
    commands = " ".join(e.command for e in ran)
    for needed in (
        "mapictl status",
        "mapictl events --json",
        "mapictl services add vcard",
        "mapictl services configure",
        "mapictl services remove",
        "mapictl profiles create",
        "mapictl ls Inbox",
    ):
        assert needed in commands
    assert {e.skip for e in found if e.skip} == {
        "runs ./install.sh, not mapictl",
        "runs ./run-tests, not mapictl",
        "runs mkdir, not mapictl",
        "runs mapid, not mapictl",
        "runs systemctl, not mapictl",
        "runs .venv/bin/uv, not mapictl",
        "runs bash, not mapictl",
        "needs an SMTP server",
    }
    daemon = embedded_daemon(make_daemon)
    failures, outputs = run_examples(found, daemon, home)
    assert not failures, "\n".join(failures)
    # What the comments say of the services example: `services list` shows Key vcard.
    (listing,) = [out for cmd, out in outputs.items() if "services list --profile" in cmd]
    header, _rule, row = listing.splitlines()[:3]
    assert header.split()[0] == "Key" and row.split()[0] == "vcard"


def test_a_broken_example_fails(make_daemon: DaemonFactory, home: Path) -> None:
    """The example the README had: `services add vcard` makes the key vcard, so a
    configure of `contacts` in that profile is not found (exit 3), and this test says so."""
    text = (
        "```sh\n"
        "mapictl profiles create work\n"
        "mapictl services add vcard --profile work --set path=~/contacts \\\n"
        "    --set identity.display_name='Ada L.' --set identity.email=ada@example.org\n"
        "mapictl services configure contacts --profile work --set display_name=Work\n"
        "mapictl services resolve-me  # exit 2\n"
        "```\n"
    )
    found = examples(text)
    assert [e.line for e in found] == [2, 3, 5, 6]
    assert found[3].expect == 2
    failures, _outputs = run_examples(found, embedded_daemon(make_daemon), home)
    assert len(failures) == 1
    assert failures[0].startswith("README.md:5: mapictl services configure contacts")
    assert "exit 3, README says 0" in failures[0]


def test_examples_parsing() -> None:
    """Continuation lines, comments, exit codes and what is not run."""
    text = (
        "text\n```sh\n"
        "./install.sh        # install\n"
        "mapictl resolve Grace   # exit 1, ambiguous\n"
        "echo hi | mapictl send --to X --subject Y \\\n"
        "    --wait\n"
        "mapictl status --watch    # live\n"
        "```\n```toml\nmapictl = 1\n```\n"
    )
    found = examples(text)
    assert [(e.line, e.expect, e.skip, e.follows) for e in found] == [
        (3, 0, "runs ./install.sh, not mapictl", False),
        (4, 1, None, False),
        (5, 0, "needs an SMTP server", False),
        (7, 0, None, True),
    ]
    with pytest.raises(AssertionError, match="whether to run"):
        examples("```sh\ncurl https://example.org\n```\n")
