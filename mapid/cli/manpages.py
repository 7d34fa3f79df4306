"""The man pages mapid(1) and mapictl(1), written from the typer apps themselves.

`python -m mapid.cli.manpages --out DIR` writes DIR/mapid.1 and DIR/mapictl.1; `--user`
writes them into ~/.local/share/man/man1, where `man` finds the pages of the commands in
~/.local/bin (./install.sh does that).
Like click-man, it documents the console scripts of the installed `mapid` distribution:
each entry point's module holds its typer app as `app`, whose command tree
(typer.main.get_command) gives the synopsis, every command with its arguments and options,
and their help, so the pages say what `--help` says. This file adds what `--help` has no
room for: FILES, ENVIRONMENT, the journal's fields and SEE ALSO.

It is a build tool: mapictl never runs it, and it imports no app by name (the entry points
name them), so the CLI still imports nothing of the daemon (tests/test_layout.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import inspect
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import typer
import typer.main

import mapid

DISTRIBUTION = "mapid"


Item = str | tuple[str, str]
"""A paragraph, or a term with its text."""


@dataclass(frozen=True)
class Page:
    """What a page says beyond the app's own help, section by section."""

    summary: str
    sections: Mapping[str, Sequence[Item]] = field(default_factory=dict)
    see_also: Sequence[str] = ()


_DAEMON_FILES = [
    ("~/.config/mapid/mapid.toml", "The daemon's settings (/etc/mapid/mapid.toml with --system)."),
    (
        "~/.config/mapid/profiles/NAME.toml",
        "One file per profile: its message services (/etc/mapid/profiles with --system).",
    ),
    (
        "~/.config/mapid/authorized_keys.d/",
        "The CURVE public keys of the clients allowed over TCP (a [remote] table).",
    ),
    (
        "$XDG_RUNTIME_DIR/mapid/",
        "mapid.json (the connection file), request.sock and events.sock; /run/mapid with "
        "--system, /tmp/mapid-UID without XDG_RUNTIME_DIR.",
    ),
    ("~/.local/state/mapid/", "State: the CURVE key pair (/var/lib/mapid with --system)."),
    (
        "~/.local/share/mapid/",
        "The embedded default profile's Maildir (Mail) and vCard folder (contacts).",
    ),
]

_CLIENT_FILES = [
    (
        "$XDG_RUNTIME_DIR/mapid/mapid.json",
        "The running daemon's connection file; /run/mapid/mapid.json for the system daemon "
        "(readable by the group mapid).",
    ),
    (
        "~/.config/mapid/keys/HOST.key_secret",
        "This client's CURVE key pair from `mapictl keys new` (HOST.key is the public half).",
    ),
]

_JOURNAL_FIELDS = [
    (
        "MESSAGE",
        "The text: LEVEL, the logger, session=ID when there is one, the message; a "
        "traceback on lines of its own.",
    ),
    ("PRIORITY", "The syslog priority (3 error, 4 warning, 6 info, 7 debug)."),
    ("SYSLOG_IDENTIFIER", "mapid."),
    ("CODE_FILE, CODE_LINE, CODE_FUNC", "Where in the code the record was logged."),
    ("LOGGER, THREAD_NAME", "The Python logger and thread."),
    ("MAPID_SESSION", "The session the record is about (its id, as `mapictl sessions` shows)."),
    ("MAPID_PROFILE", "That session's profile, or the profile of a provider that failed."),
    ("MAPID_SERVICE", "The message service (the KEY of [services.KEY]) of a provider record."),
    ("MAPID_OP", "The request being served (session.logon, ...); tasks it started keep it."),
]

PAGES: dict[str, Page] = {
    "mapid": Page(
        summary="the MAPI session daemon",
        sections={
            "LOGGING": [
                "Under systemd (JOURNAL_STREAM names the daemon's standard error) every "
                "record goes to the journal with structured fields, so that, for example, "
                "`journalctl --user -u mapid MAPID_PROFILE=Work` shows one profile's records "
                "and `journalctl -u mapid -p warning` the warnings. Elsewhere the daemon "
                "writes one line a record to standard error, starting with a UTC timestamp. "
                "The fields of a record:",
                *_JOURNAL_FIELDS,
            ],
            "FILES": _DAEMON_FILES,
            "ENVIRONMENT": [
                ("MAPID_CONFIG_DIR", "The configuration directory instead of the default."),
                ("MAPID_STATE_DIR", "The state directory instead of the default."),
                ("MAPID_RUNTIME_DIR", "The runtime directory instead of the default."),
                (
                    "XDG_CONFIG_HOME, XDG_STATE_HOME, XDG_DATA_HOME, XDG_RUNTIME_DIR",
                    "The bases of the user daemon's directories.",
                ),
                (
                    "NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID",
                    "Set by systemd for Type=notify: READY, STATUS, RELOADING, STOPPING and "
                    "the watchdog go there.",
                ),
                ("JOURNAL_STREAM", "Set by systemd: the log goes to the journal."),
                (
                    "MAPID_JOURNAL_SOCKET",
                    "journald's socket instead of /run/systemd/journal/socket.",
                ),
            ],
        },
        see_also=[
            "mapictl(1)",
            "systemctl(1)",
            "journalctl(1)",
            "systemd.service(5)",
            "systemd.journal-fields(7)",
        ],
    ),
    "mapictl": Page(
        summary="control and watch mapid, the MAPI session daemon",
        sections={
            "SHELL COMPLETION": [
                "`mapictl --install-completion` installs completion for the shell it runs "
                "in (bash, zsh or fish); `mapictl --show-completion` prints the script "
                "instead. `_MAPICTL_COMPLETE=source_bash mapictl` (or source_zsh, "
                "source_fish) prints the script for a shell named explicitly. Commands and "
                "options complete from mapictl itself; profile and service names from the "
                "running daemon, when it answers within half a second."
            ],
            "FILES": _CLIENT_FILES,
            "ENVIRONMENT": [
                ("MAPID_RUNTIME_DIR", "The daemon's runtime directory (as --runtime-dir)."),
                ("XDG_RUNTIME_DIR", "The base of the user daemon's runtime directory."),
                ("MAPID_ENDPOINT", "As --endpoint."),
                ("MAPID_EVENTS_ENDPOINT", "As --events-endpoint."),
                ("MAPID_SERVER_KEY", "As --server-key."),
                ("MAPID_CLIENT_KEY", "As --client-key."),
                ("COLUMNS", "The width tables fit (else the terminal's, or 80)."),
            ],
        },
        see_also=["mapid(1)"],
    ),
}


# --- roff --------------------------------------------------------------------------------------


def escape(text: str) -> str:
    """Text for roff: backslashes and hyphens escaped (options stay copyable), `code` bold."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    text = re.sub(r"`([^`\n]+)`", r"\\fB\1\\fR", text)
    return text


def _line(text: str) -> str:
    """One input line: a leading `.` or `'` would be a request."""
    return f"\\&{text}" if text.startswith((".", "'")) else text


def paragraphs(help_text: str | None) -> Iterator[str]:
    """A help text as roff paragraphs: lines joined, a click `\\b` block kept as it is."""
    text = inspect.cleandoc(help_text or "")
    for block in re.split(r"\n\s*\n", text):
        if not block.strip():
            continue
        if block.startswith("\b"):
            lines = block.split("\n")[1:]
            yield ".nf\n" + "\n".join(_line(escape(x)) for x in lines) + "\n.fi"
        else:
            yield _line(escape(" ".join(x.strip() for x in block.split("\n"))))


def _para(help_text: str | None) -> list[str]:
    out: list[str] = []
    for n, part in enumerate(paragraphs(help_text)):
        if n:
            out.append(".PP")
        out.append(part)
    return out


def _items(items: Sequence[Item]) -> list[str]:
    out: list[str] = []
    for item in items:
        if isinstance(item, str):
            out += [".PP", *_para(item)]
        else:
            term, text = item
            out += [".TP", f"\\fB{escape(term)}\\fR", _line(escape(text))]
    return out


# --- the command tree ----------------------------------------------------------------------------


def _params(command: Any, ctx: typer.Context, with_help: bool = False) -> list[str]:
    """Arguments, then options (-h, --help last if `with_help`), each as a .TP entry."""
    out: list[str] = []
    options = [p for p in command.params if not getattr(p, "hidden", False)]
    help_option = command.get_help_option(ctx) if with_help else None
    if help_option is not None:
        options.append(help_option)
    for param in options:
        if param.param_type_name == "argument":
            name = param.metavar or (param.name or "").upper()
            text = getattr(param, "help", None) or ""
        else:
            record = param.get_help_record(ctx)
            if record is None:
                continue
            name, text = record
        out += [".TP", f"\\fB{escape(name)}\\fR", _line(escape(text))]
    return out


def _usage(command: Any, ctx: typer.Context) -> str:
    usage = str(command.get_usage(ctx)).strip()
    return usage.removeprefix("Usage:").strip()


def _commands(group: Any, ctx: typer.Context) -> list[str]:
    out: list[str] = []
    for name, command in group.commands.items():
        if getattr(command, "hidden", False):
            continue
        sub = typer.Context(command, info_name=name, parent=ctx)
        out += [f'.SS "{escape(_usage(command, sub))}"', *_para(command.help)]
        params = _params(command, sub)
        if params:
            out += [".PP", *params]
        if hasattr(command, "commands"):
            out += _commands(command, sub)
    return out


def render(app: typer.Typer, name: str, page: Page | None = None, date: str = "") -> str:
    """The man page of `app`, the program `name`, in section 1."""
    page = page or Page(summary=f"the {name} command")
    command = typer.main.get_command(app)
    ctx = typer.Context(command, info_name=name, **(command.context_settings or {}))
    title = name.upper()
    out = [
        f'.\\" Generated by mapid.cli.manpages from the typer app of {name}; do not edit.',
        f'.TH "{title}" "1" "{date}" "mapid {mapid.__version__}" "User Commands"',
        ".ad l",
        ".nh",
        ".SH NAME",
        f"{escape(name)} \\- {escape(page.summary)}",
        ".SH SYNOPSIS",
        f"\\fB{escape(name)}\\fR {escape(_usage(command, ctx).removeprefix(name).strip())}",
        ".SH DESCRIPTION",
        *_para(command.help),
        ".SH OPTIONS",
        *_params(command, ctx, with_help=True),
        ".PP",
        f"Every command takes \\fB\\-h\\fR, \\fB\\-\\-help\\fR too "
        f"(\\fB{escape(name)} \\fICOMMAND\\fB \\-\\-help\\fR).",
    ]
    if getattr(command, "commands", None):
        out += [".SH COMMANDS", *_commands(command, ctx)]
    for section, body in page.sections.items():
        out.append(f'.SH "{section}"' if " " in section else f".SH {section}")
        out += _items(body)[1:] if body and isinstance(body[0], str) else _items(body)
    if page.see_also:
        refs = [re.fullmatch(r"(.+)\((\w+)\)", ref) for ref in page.see_also]
        out += [".SH SEE ALSO", ",\n".join(f".BR {m[1]} ({m[2]})" for m in refs if m)]
    return "\n".join(out) + "\n"


# --- the programs --------------------------------------------------------------------------------


def programs() -> dict[str, typer.Typer]:
    """The console scripts of the installed mapid distribution, each with its typer app."""
    found: dict[str, typer.Typer] = {}
    for entry in metadata.distribution(DISTRIBUTION).entry_points:
        if entry.group != "console_scripts":
            continue
        app = getattr(importlib.import_module(entry.module), "app", None)
        if isinstance(app, typer.Typer):
            found[entry.name] = app
    return dict(sorted(found.items()))


def page_date() -> str:
    """SOURCE_DATE_EPOCH's date (reproducible builds), else today's."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = dt.datetime.fromtimestamp(int(epoch), dt.UTC) if epoch else dt.datetime.now(dt.UTC)
    return when.strftime("%Y-%m-%d")


def write_pages(out: Path, names: Sequence[str] = ()) -> list[Path]:
    """Write NAME.1 for each program (all of them by default) into `out`."""
    apps = programs()
    unknown = [n for n in names if n not in apps]
    if unknown:
        raise SystemExit(f"manpages: no such program: {', '.join(unknown)} (have {list(apps)})")
    out.mkdir(parents=True, exist_ok=True)
    date = page_date()
    written = []
    for name in names or list(apps):
        path = out / f"{name}.1"
        path.write_text(render(apps[name], name, PAGES.get(name), date), encoding="utf-8")
        written.append(path)
    return written


def user_man_dir() -> Path:
    """~/.local/share/man/man1: man-db searches ../share/man of every PATH entry, so the
    pages of commands in ~/.local/bin need no MANPATH."""
    return Path.home() / ".local" / "share" / "man" / "man1"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m mapid.cli.manpages",
        description="Write the man pages of mapid's commands (NAME.1) into a folder.",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", type=Path, help="the folder, e.g. man/man1")
    where.add_argument(
        "--user", action="store_true", help=f"into {user_man_dir()}, for ~/.local/bin"
    )
    parser.add_argument("programs", nargs="*", help="only these (default: mapid and mapictl)")
    args = parser.parse_args(argv)
    for path in write_pages(user_man_dir() if args.user else args.out, args.programs):
        print(path)


if __name__ == "__main__":
    main(sys.argv[1:])
