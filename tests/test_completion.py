"""mapictl's shell completion, run through a real bash (and zsh and fish where installed).

The script comes from `mapictl --show-completion` as a user gets it (typer detects the
shell it runs in) and is sourced into `bash --norc`; the test sets COMP_WORDS, COMP_CWORD,
COMP_LINE and COMP_POINT as readline would and calls the completion function, then reads
COMPREPLY. Commands and options complete from mapictl itself; profile and service names
from the running daemon, and from no daemon nothing, quietly and quickly.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import DaemonFactory, standard_profile

BIN = Path(sys.executable).parent


def shell_env(runtime: Path | None = None, home: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    for name in ("MAPID_RUNTIME_DIR", "MAPID_ENDPOINT", "_MAPICTL_COMPLETE"):
        env.pop(name, None)
    if runtime is not None:
        env["MAPID_RUNTIME_DIR"] = str(runtime)
    if home is not None:
        env["HOME"] = str(home)
    return env


def bash_script() -> str:
    """`mapictl --show-completion` run from bash, as a user would."""
    result = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", "mapictl --show-completion; exit $?"],
        capture_output=True,
        text=True,
        timeout=30,
        env=shell_env(),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "complete -o default -F _mapictl_completion mapictl" in result.stdout
    return result.stdout


def complete(line: str, env: dict[str, str], script: str | None = None) -> list[str]:
    """COMPREPLY for the command line `line` (the cursor at its end), through bash."""
    words = shlex.split(line)
    if line.endswith(" "):
        words.append("")
    program = "\n".join(
        [
            script or bash_script(),
            f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)})",
            f"COMP_CWORD={len(words) - 1}",
            f"COMP_LINE={shlex.quote(line)}",
            f"COMP_POINT={len(line)}",
            # complete -F calls FUNCTION COMMAND WORD PREVIOUS-WORD
            f"_mapictl_completion mapictl {shlex.quote(words[-1])} "
            f"{shlex.quote(words[-2] if len(words) > 1 else '')}",
            "printf '%s\\n' \"${COMPREPLY[@]}\"",
        ]
    )
    result = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return [w for w in result.stdout.splitlines() if w]


def test_bash_completes_commands_and_options() -> None:
    script = bash_script()
    env = shell_env(runtime=Path("/nonexistent/mapid"))
    commands = complete("mapictl ", env, script)
    for name in ("status", "sessions", "events", "logon", "profiles", "services", "send"):
        assert name in commands, commands
    assert complete("mapictl pro", env, script) == ["profiles"]
    group = {"list", "create", "delete", "copy", "rename", "default"}
    assert set(complete("mapictl profiles ", env, script)) == group
    options = complete("mapictl --", env, script)
    for option in ("--json", "--runtime-dir", "--install-completion", "--show-completion"):
        assert option in options, options
    assert "--watch" in complete("mapictl status --w", env, script)


def test_bash_completes_profile_and_service_names_from_the_daemon(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    proc = make_daemon(
        profiles={
            "alpha": standard_profile(tmp_path / "a"),
            "beta": standard_profile(tmp_path / "b"),
            "Work": standard_profile(tmp_path / "w"),
        }
    )
    script = bash_script()
    env = shell_env(runtime=proc.runtime)
    assert complete("mapictl logon ", env, script) == ["Work", "alpha", "beta"]
    assert complete("mapictl logon W", env, script) == ["Work"]
    assert complete("mapictl profiles delete a", env, script) == ["alpha"]
    assert complete("mapictl stores --profile ", env, script) == ["Work", "alpha", "beta"]
    assert complete("mapictl services list -p b", env, script) == ["beta"]
    assert complete("mapictl services copy mail -p alpha --to W", env, script) == ["Work"]
    # Service keys come from the profile given with --profile; installed services from
    # services.available.
    assert complete("mapictl services remove --profile alpha ", env, script) == [
        "contacts",
        "mail",
    ]
    assert complete("mapictl services configure -p Work m", env, script) == ["mail"]
    assert complete("mapictl services remove ", env, script) == []  # no --profile yet
    installed = complete("mapictl services add ", env, script)
    assert {"maildir", "vcard", "smtp", "imap"} <= set(installed), installed
    # --runtime-dir on the command line instead of MAPID_RUNTIME_DIR.
    bare = shell_env(runtime=Path("/nonexistent/mapid"))
    line = f"mapictl --runtime-dir {proc.runtime} profiles rename "
    assert complete(line, bare, script) == ["Work", "alpha", "beta"]


def test_without_a_daemon_names_complete_to_nothing_quietly(tmp_path: Path) -> None:
    script = bash_script()
    empty = tmp_path / "run"
    empty.mkdir()
    start = time.monotonic()
    assert complete("mapictl logon ", shell_env(runtime=empty), script) == []
    assert complete("mapictl services remove -p alpha ", shell_env(runtime=empty), script) == []
    assert time.monotonic() - start < 10


def test_install_completion_for_bash_works_in_a_new_shell(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = shell_env(home=home)
    result = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", "mapictl --install-completion; exit $?"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "bash completion installed" in result.stdout
    assert "mapictl.sh" in (home / ".bashrc").read_text()
    # An interactive bash reads ~/.bashrc: mapictl completes there with nothing else done.
    shown = subprocess.run(
        ["bash", "-i", "-c", "complete -p mapictl"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert shown.stdout.strip() == "complete -o default -F _mapictl_completion mapictl", shown


def named_script(shell: str) -> str:
    """The script for `shell` named explicitly (typer's `_MAPICTL_COMPLETE=source_SHELL`)."""
    result = subprocess.run(
        [str(BIN / "mapictl")],
        capture_output=True,
        text=True,
        timeout=30,
        env={**shell_env(), "_MAPICTL_COMPLETE": f"source_{shell}"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_named_bash_script_is_the_one_show_completion_prints() -> None:
    assert named_script("bash").strip() == bash_script().strip()


@pytest.mark.parametrize(
    ("shell", "mark"),
    [("zsh", "compdef _mapictl_completion mapictl"), ("fish", "complete --command mapictl")],
)
def test_zsh_and_fish_get_their_scripts(shell: str, mark: str, tmp_path: Path) -> None:
    script = named_script(shell)
    assert mark in script and f"_MAPICTL_COMPLETE=complete_{shell}" in script
    program = shutil.which(shell)
    if program is None:
        pytest.skip(f"{shell} is not installed: the script is not parsed")
    path = tmp_path / f"mapictl.{shell}"
    path.write_text(script)
    checked = subprocess.run(
        [program, "-n", str(path)], capture_output=True, text=True, timeout=30, check=False
    )
    assert checked.returncode == 0, checked.stderr
    # Run from that shell, --show-completion detects it.
    shown = subprocess.run(
        [program, "-c", "mapictl --show-completion; exit $status"]
        if shell == "fish"
        else [program, "-f", "-c", "mapictl --show-completion; exit $?"],
        capture_output=True,
        text=True,
        timeout=30,
        env=shell_env(),
        check=False,
    )
    assert shown.returncode == 0 and mark in shown.stdout, shown
