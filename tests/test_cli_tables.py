"""mapictl's tables fit the width they are shown in, the way systemctl's do: the terminal's,
COLUMNS when set, else 80 columns; long cells end in an ellipsis, key columns stay whole,
and `--json` always holds the full values.

The commands run as real processes against a real daemon, with stdout a pipe (or a
pseudo-terminal of a known size), since the width depends on exactly that.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import io
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from mapid.cli.output import format_since, status_table
from mapid.cli.tables import Col, FitTable, fit_widths

from conftest import DaemonFactory, DaemonProc

LONG_NAME = "An Extremely Long Display Name For The Message Store That Goes On And On Forever"
LONG_DIR = "a-directory-with-a-name-long-enough-to-push-any-table-off-the-screen-" * 2


@pytest.fixture
def wide(make_daemon: DaemonFactory, tmp_path: Path) -> DaemonProc:
    """A daemon whose autologon profile has a store with a very long display name and a
    very long path (which its status string repeats)."""
    mail = tmp_path / LONG_DIR / "Mail"
    profile = (
        "autologon = true\n"
        "[services.mail]\n"
        'service = "maildir"\n'
        f'path = "{mail}"\n'
        f'display_name = "{LONG_NAME}"\n'
        "primary_store = true\n"
    )
    return make_daemon(profiles={"alpha": profile})


def mapictl(
    daemon: DaemonProc, *args: str, columns: str | None = None
) -> subprocess.CompletedProcess[str]:
    """mapictl as a process with stdout a pipe; COLUMNS only when given."""
    env = dict(os.environ)
    env.pop("COLUMNS", None)
    if columns is not None:
        env["COLUMNS"] = columns
    done = subprocess.run(
        [sys.executable, "-m", "mapid.cli.app", "--runtime-dir", str(daemon.runtime), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    return done


def longest(text: str) -> int:
    return max(len(line) for line in text.splitlines())


COMMANDS = [("status",), ("services", "list", "--profile", "alpha")]


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_a_pipe_gets_80_columns_and_an_ellipsis(wide: DaemonProc, args: tuple[str, ...]) -> None:
    out = mapictl(wide, *args).stdout
    assert longest(out) <= 80, out
    assert "An Extremely Long" in out and "\u2026" in out  # shortened, not wrapped
    assert LONG_NAME not in out
    assert not [line for line in out.splitlines() if line != line.rstrip()]  # no padding


def test_status_keeps_the_key_columns_whole(wide: DaemonProc) -> None:
    out = mapictl(wide, "status").stdout
    for name in ("STATUS_AVAILABLE", "STATUS_DEFAULT_STORE", "STATUS_VALIDATE_STATE"):
        assert name in out
    assert "MAPI_STORE_PROVIDER (maildir)" in out


def test_services_list_keeps_the_key_whole(wide: DaemonProc) -> None:
    out = mapictl(wide, "services", "list", "--profile", "alpha").stdout
    header, _rule, row, *_ = out.splitlines()
    assert header.split()[0] == "Key" and row.split()[:1] == ["mail"]
    assert "maildir" in row.split()


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_columns_wins(wide: DaemonProc, args: tuple[str, ...]) -> None:
    out = mapictl(wide, *args, columns="200").stdout
    assert 80 < longest(out) <= 200
    assert LONG_NAME in out
    narrow = mapictl(wide, *args, columns="60").stdout
    assert longest(narrow) <= 60


def test_json_is_never_shortened(wide: DaemonProc) -> None:
    view = json.loads(mapictl(wide, "--json", "status").stdout)
    rows = [row for s in view["sessions"] for row in s["status"]]
    store = next(r for r in rows if r["PR_RESOURCE_TYPE"] == "MAPI_STORE_PROVIDER")
    assert store["PR_DISPLAY_NAME"] == LONG_NAME
    assert LONG_DIR in store["PR_STATUS_STRING"]
    listed = json.loads(mapictl(wide, "--json", "services", "list", "-p", "alpha").stdout)
    assert listed["services"][0]["name"] == LONG_NAME
    assert listed["services"][0]["key"] == "mail"


def on_terminal(daemon: DaemonProc, columns: int, *args: str) -> str:
    """mapictl's output with stdout a pseudo-terminal `columns` wide (no COLUMNS)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = dict(os.environ)
    env.pop("COLUMNS", None)
    env["TERM"] = "xterm"  # not "dumb", which rich gives 80 columns whatever the size
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mapid.cli.app", "--runtime-dir", str(daemon.runtime), *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=subprocess.PIPE,
        )
        os.close(slave)
        chunks: list[bytes] = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(30) == 0
    finally:
        os.close(master)
    return b"".join(chunks).decode()


def plain(text: str) -> str:
    """Terminal output without its colour codes and carriage returns."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text).replace("\r", "")


def test_a_terminal_gets_its_own_width(wide: DaemonProc) -> None:
    out = plain(on_terminal(wide, 100, "status"))
    assert 80 < longest(out) <= 100, out
    assert "\u2026" in out


# --- the layout, without a daemon ---------------------------------------------------------------


def render(renderable: Any, width: int) -> str:
    console = Console(width=width, file=io.StringIO(), record=True)
    console.print(renderable)
    return console.export_text()


def test_fit_widths_shrinks_free_text_first() -> None:
    cols = [Col("Key", keep=True), Col("Name"), Col("Note")]
    assert fit_widths([10, 50, 30], cols, 100) == [10, 50, 30]  # fits: untouched
    assert fit_widths([10, 50, 30], cols, 60) == [10, 25, 25]  # the widest gives way first
    assert fit_widths([10, 50, 30], cols, 34) == [10, 12, 12]  # down to their minimums
    assert fit_widths([10, 50, 30], cols, 18) == [10, 4, 4]  # then further, key still whole
    assert fit_widths([10, 50, 30], cols, 6) == [2, 2, 2]  # only then the key is cut


def test_fit_table_cuts_with_an_ellipsis_and_pads_nothing() -> None:
    table = FitTable(Col("Key", keep=True), Col("Text"))
    table.add_row("short", "x" * 100)
    table.add_row("a-longer-key", "two\nlines")
    text = render(table, 40)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 40
    assert lines[0].split() == ["Key", "Text"]
    assert lines[2].startswith("short ") and lines[2].endswith("x\u2026")
    assert lines[3].startswith("a-longer-key  two") and lines[4].strip() == "lines"
    assert all(line == line.rstrip() for line in lines)
    wide = render(table, 200)
    assert "x" * 100 in wide and "\u2026" not in wide


def test_status_table_stacks_names_and_flags() -> None:
    row = {
        "PR_ROWID": 5,
        "PR_DISPLAY_NAME": LONG_NAME,
        "PR_RESOURCE_TYPE": "MAPI_STORE_PROVIDER",
        "PR_PROVIDER_DLL_NAME": "maildir",
        "PR_STATUS_STRING": "Maildir at /" + LONG_DIR,
        "PR_STATUS_CODE": ["STATUS_AVAILABLE"],
        "PR_RESOURCE_FLAGS": ["STATUS_DEFAULT_STORE", "STATUS_PRIMARY_STORE"],
        "PR_RESOURCE_METHODS": ["STATUS_VALIDATE_STATE"],
    }
    text = render(status_table([row]), 80)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert lines[2].startswith("5  An Extremely") and lines[2].endswith("STATUS_AVAILABLE")
    assert lines[3].endswith("flags   STATUS_DEFAULT_STORE")
    assert lines[4].endswith("        STATUS_PRIMARY_STORE")
    assert lines[5].endswith("methods STATUS_VALIDATE_STATE")


def test_status_table_puts_the_accounts_state_first() -> None:
    row = {
        "PR_ROWID": 2,
        "PR_DISPLAY_NAME": "Work mail",
        "PR_RESOURCE_TYPE": "MAPI_STORE_PROVIDER",
        "PR_STATUS_STRING": "cannot reach imap.example.org:993: connection refused",
        "PR_STATUS_CODE": ["STATUS_AVAILABLE", "STATUS_OFFLINE"],
        "state": "offline",
    }
    lines = render(status_table([row]), 80).splitlines()
    assert lines[2].startswith("2  Work mail") and lines[2].endswith("offline")
    assert lines[3].endswith("STATUS_AVAILABLE") and lines[4].endswith("STATUS_OFFLINE")


def test_sessions_fit_and_say_since_when(wide: DaemonProc) -> None:
    out = mapictl(wide, "sessions").stdout
    assert longest(out) <= 80, out
    assert out.splitlines()[0].split() == [
        "Session",
        "Profile",
        "Shared",
        "Members",
        "State",
        "Flags",
        "Since",
    ]
    assert "MAPI_NEW_SESSION" in out  # the autologon session's flags, whole


def test_format_since_is_as_short_as_ps() -> None:
    now = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
    earlier = now - dt.timedelta(minutes=5)
    assert format_since(earlier, now) == earlier.astimezone().strftime("%H:%M:%S")
    assert format_since(now - dt.timedelta(days=40), now) == "2025-04-22"
    assert format_since(None) == "-"
