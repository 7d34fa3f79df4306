"""The man pages mapid(1) and mapictl(1), written from the typer apps (mapid.cli.manpages).

Generated into a temporary folder, they must pass groff with every warning on, render with
`man -l`, and name every command and option the apps have, so a new command is documented
the day it is added. `python -m mapid.cli.manpages --user`, the step ./install.sh runs, puts
them where `man` finds them with no MANPATH: beside ~/.local/bin, where the commands are.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.main

from mapid.cli import manpages
from mapid.cli.app import app as mapictl_app

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "COMMANDS", "FILES", "ENVIRONMENT")


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing; .ci/run installs man-db")
        pytest.skip(f"{name} is not installed (apt-get install man-db)")
    return found


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("man") / "man1"
    written = manpages.write_pages(folder)
    return {path.stem: path for path in written}


def rendered(page: Path) -> str:
    """`man -l` as a reader sees it, 200 columns wide, minus signs and hyphens as ASCII."""
    result = subprocess.run(
        [tool("man"), "-l", str(page)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MANWIDTH": "200", "MAN_KEEP_FORMATTING": "", "MANPAGER": "cat"},
        check=False,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return result.stdout.replace("\u2212", "-").replace("\u2010", "-")


def commands(command: Any, prefix: str, ctx: typer.Context) -> Iterator[tuple[str, Any, Any]]:
    for name, sub in command.commands.items():
        sub_ctx = typer.Context(sub, info_name=name, parent=ctx)
        yield f"{prefix} {name}", sub, sub_ctx
        if hasattr(sub, "commands"):
            yield from commands(sub, f"{prefix} {name}", sub_ctx)


def test_both_pages_are_written_and_groff_finds_nothing_to_warn_about(
    pages: dict[str, Path],
) -> None:
    assert set(pages) == {"mapid", "mapictl"}
    for page in pages.values():
        result = subprocess.run(
            [tool("groff"), "-man", "-Tutf8", "-ww", "-z", str(page)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0 and result.stderr == "", (page, result.stderr)


def test_mapictl_page_has_every_command_and_option(pages: dict[str, Path]) -> None:
    text = rendered(pages["mapictl"])
    headings = re.findall(r"^([A-Z][A-Z ]+)$", text, re.MULTILINE)
    for section in (*SECTIONS, "SHELL COMPLETION", "SEE ALSO"):
        assert section in headings, (section, headings)
    assert text.startswith("MAPICTL(1)")
    assert "mapictl - control and watch mapid" in text
    root = typer.main.get_command(mapictl_app)
    ctx = typer.Context(root, info_name="mapictl", **root.context_settings)
    found = list(commands(root, "mapictl", ctx))
    assert len(found) > 30  # every command, the groups' too
    for title, command, _ctx in found:
        assert re.search(rf"^   {re.escape(title)} \[OPTIONS\]", text, re.MULTILINE), title
        for param in command.params:
            if param.param_type_name == "option" and not param.hidden:
                for opt in param.opts:
                    assert opt in text, (title, opt)
    for option in ("--runtime-dir PATH", "--install-completion", "--show-completion", "-h, --help"):
        assert option in text
    assert "MAPID_ENDPOINT" in text and "mapid(1)" in text
    assert "  0  ok\n" in text  # the exit codes keep their layout


def test_mapid_page_documents_the_daemon_and_its_journal_fields(pages: dict[str, Path]) -> None:
    text = rendered(pages["mapid"])
    assert text.startswith("MAPID(1)") and "mapid - the MAPI session daemon" in text
    for command in ("run", "check-config", "units", "version"):
        assert re.search(rf"^   mapid {command} \[OPTIONS\]", text, re.MULTILINE), command
    for option in ("--system", "--log-level LEVEL", "--user"):
        assert option in text
    for field in ("MAPID_SESSION", "MAPID_PROFILE", "MAPID_SERVICE", "MAPID_OP", "CODE_FILE"):
        assert field in text
    assert "journalctl --user -u mapid MAPID_PROFILE=Work" in " ".join(text.split())
    for name in ("MAPID_CONFIG_DIR", "MAPID_JOURNAL_SOCKET", "~/.config/mapid/mapid.toml"):
        assert name in text
    assert "mapictl(1), systemctl(1), journalctl(1)" in text


def test_roff_requests_in_help_text_stay_text() -> None:
    assert manpages.escape("a-b \\ `code`") == "a\\-b \\e \\fBcode\\fR"
    assert list(manpages.paragraphs(".starts like a request\nand goes on\n\n'quoted")) == [
        "\\&.starts like a request and goes on",
        "\\&'quoted",
    ]
    assert list(manpages.paragraphs("Table:\n\n\b\n  1  one\n  2  two")) == [
        "Table:",
        ".nf\n  1  one\n  2  two\n.fi",
    ]


def test_the_install_step_puts_them_where_man_finds_them(tmp_path: Path) -> None:
    """What ./install.sh does, with a home of its own: link the commands into ~/.local/bin
    and write the pages with `--user`; then `man -w` finds them through PATH alone."""
    install = (ROOT / "install.sh").read_text()
    assert ".venv/bin/python -m mapid.cli.manpages --user" in install
    assert 'ln -sf "$PWD/.venv/bin/mapictl" "$HOME/.local/bin/mapictl"' in install
    home = tmp_path / "home"
    bin_dir = home / ".local" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("mapid", "mapictl"):
        (bin_dir / name).symlink_to(Path(sys.executable).parent / name)
    env = {k: v for k, v in os.environ.items() if k not in ("MANPATH", "MANOPT")}
    env |= {"HOME": str(home), "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "mapid.cli.manpages", "--user"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    folder = home / ".local" / "share" / "man" / "man1"
    assert sorted(result.stdout.split()) == [str(folder / "mapictl.1"), str(folder / "mapid.1")]
    man = tool("man")
    for name in ("mapictl", "mapid"):
        where = subprocess.run(
            [man, "-w", name], capture_output=True, text=True, timeout=60, env=env, check=False
        )
        assert where.returncode == 0 and where.stdout.strip() == str(folder / f"{name}.1"), where
    # Without ~/.local/bin on PATH man does not look there: the pages belong to those commands.
    elsewhere = {**env, "PATH": "/usr/bin:/bin"}
    where = subprocess.run(
        [man, "-w", "mapictl"],
        capture_output=True,
        text=True,
        timeout=60,
        env=elsewhere,
        check=False,
    )
    assert str(folder) not in where.stdout
