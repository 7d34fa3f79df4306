"""Service passwords (daemon/config/credentials.py): password_command, keyring, a file.

Commands are real scripts in tmp_path run as real subprocesses; files get real modes; keyring
is exercised through its own real back-ends (null, fail, and a small in-memory one).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shlex
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mapid.daemon.config.credentials import (
    KEYRING_HINT,
    MASK,
    SECRET_KEYS,
    check_file_secrecy,
    mask,
    resolve_password,
    secret_problems,
)
from mapid.errors import ErrorCode, MapiError

WHERE = "profile work, service outgoing"
SECRET = "hunter2-Zq8"
HAVE_KEYRING = importlib.util.find_spec("keyring") is not None


def script(tmp_path: Path, body: str, name: str = "pw.sh") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o700)
    return path


def resolve(config: dict[str, Any], timeout: float = 10.0) -> str | None:
    return asyncio.run(resolve_password(config, where=WHERE, timeout=timeout))


def failure(config: dict[str, Any], timeout: float = 10.0) -> MapiError:
    with pytest.raises(MapiError) as info:
        resolve(config, timeout)
    return info.value


def assert_no_secret(exc: MapiError, *secrets: str) -> None:
    shown = " ".join([str(exc), repr(exc), repr(exc.to_wire())])
    for secret in secrets:
        assert secret not in shown


# --- password_command ----------------------------------------------------------------------


def test_command_first_line_of_stdout(tmp_path: Path) -> None:
    cmd = script(tmp_path, f"echo '{SECRET}'\necho second-line\n")
    assert resolve({"password_command": str(cmd)}) == SECRET


def test_command_keeps_spaces_and_strips_only_the_line_end(tmp_path: Path) -> None:
    cmd = script(tmp_path, "printf ' pass word \\r\\nnext\\n'\n")
    assert resolve({"password_command": [str(cmd)]}) == " pass word "


def test_command_without_trailing_newline(tmp_path: Path) -> None:
    cmd = script(tmp_path, f"printf '%s' '{SECRET}'\n")
    assert resolve({"password_command": str(cmd)}) == SECRET


def test_command_list_form_with_spaces_in_arguments(tmp_path: Path) -> None:
    cmd = script(tmp_path / "dir with space", 'printf "%s|%s\\n" "$1" "$2"\n')
    assert resolve({"password_command": [str(cmd), "a b", "c"]}) == "a b|c"


def test_command_string_form_is_split_like_a_shell(tmp_path: Path) -> None:
    cmd = script(tmp_path / "dir with space", 'printf "%s|%s\\n" "$1" "$2"\n')
    line = f"{shlex.quote(str(cmd))} 'a b' \"c d\""
    assert resolve({"password_command": line}) == "a b|c d"


def test_command_runs_without_a_shell(tmp_path: Path) -> None:
    marker = tmp_path / "touched"
    cmd = script(tmp_path, 'printf "%s\\n" "$1"\n')
    # `;` and `$(...)` reach the program as text; no shell interprets them.
    got = resolve({"password_command": f"{cmd} 'x; touch {marker}' "})
    assert got == f"x; touch {marker}"
    assert not marker.exists()
    assert resolve({"password_command": [str(cmd), "$(id -u)"]}) == "$(id -u)"


def test_command_gets_no_stdin(tmp_path: Path) -> None:
    cmd = script(tmp_path, "if read line; then echo got-input; else echo eof; fi\n")
    assert resolve({"password_command": str(cmd)}) == "eof"


def test_command_inherits_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAPID_TEST_PW", "from-env")
    cmd = script(tmp_path, 'echo "$MAPID_TEST_PW"\n')
    assert resolve({"password_command": str(cmd)}) == "from-env"


def test_command_non_zero_exit(tmp_path: Path) -> None:
    cmd = script(
        tmp_path,
        f"echo '{SECRET}'\n"
        "echo 'gpg: decryption failed: No secret key' >&2\n"
        "echo 'second stderr line' >&2\n"
        "exit 3\n",
    )
    exc = failure({"password_command": str(cmd)})
    assert exc.code is ErrorCode.MAPI_E_LOGON_FAILED
    assert WHERE in exc.message
    assert str(cmd) in exc.message
    assert "exited with status 3" in exc.message
    assert "gpg: decryption failed: No secret key" in exc.message
    assert "second stderr line" not in exc.message
    assert_no_secret(exc, SECRET)
    assert exc.details == {"where": WHERE, "source": "password_command"}


def test_command_stderr_is_cut_short_and_sanitized(tmp_path: Path) -> None:
    cmd = script(tmp_path, "printf '\\n  \\033[31mbad\\007 thing%0300d\\n' 0 >&2\nexit 1\n")
    exc = failure({"password_command": str(cmd)})
    assert "\x1b" not in exc.message and "\x07" not in exc.message
    assert "bad thing" in exc.message
    assert len(exc.message) < len(WHERE) + len(str(cmd)) + 200


def test_command_stderr_holding_the_password_is_not_shown(tmp_path: Path) -> None:
    cmd = script(tmp_path, f"echo '{SECRET}'\necho 'oops: {SECRET}' >&2\nexit 1\n")
    exc = failure({"password_command": str(cmd)})
    assert "exited with status 1" in exc.message
    assert_no_secret(exc, SECRET)


def test_command_killed_by_a_signal(tmp_path: Path) -> None:
    cmd = script(tmp_path, "kill -TERM $$\n")
    exc = failure({"password_command": str(cmd)})
    assert "killed by signal SIGTERM" in exc.message


def test_command_with_empty_output(tmp_path: Path) -> None:
    for body in ("exit 0\n", "echo\necho not-the-first-line\n"):
        cmd = script(tmp_path, body)
        exc = failure({"password_command": str(cmd)})
        assert exc.code is ErrorCode.MAPI_E_LOGON_FAILED
        assert "printed no password" in exc.message
        assert "not-the-first-line" not in exc.message


def test_command_missing_program(tmp_path: Path) -> None:
    for program in (str(tmp_path / "no-such-program"), "mapid-no-such-program-xyz"):
        exc = failure({"password_command": [program, "arg"]})
        assert exc.code is ErrorCode.MAPI_E_LOGON_FAILED
        assert WHERE in exc.message and program in exc.message
        assert "no such program" in exc.message


def test_command_not_executable(tmp_path: Path) -> None:
    cmd = script(tmp_path, "echo x\n")
    cmd.chmod(0o600)
    exc = failure({"password_command": str(cmd)})
    assert exc.code is ErrorCode.MAPI_E_LOGON_FAILED
    assert "could not be started" in exc.message


def _gone(pid: int) -> bool:
    """Not running: no such process, or a zombie that only its (foreign) parent can reap."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state == "Z"


def test_command_time_out_kills_and_reaps_the_child(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    cmd = script(tmp_path, f"echo $$ > {pid_file}\nexec sleep 30\n")
    start = time.monotonic()
    exc = failure({"password_command": str(cmd)}, timeout=0.5)
    assert time.monotonic() - start < 5
    assert exc.code is ErrorCode.MAPI_E_LOGON_FAILED
    assert "timed out after 0.5 s" in exc.message and str(cmd) in exc.message
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):  # killed and reaped: not even a zombie
        os.kill(pid, 0)


def test_command_time_out_kills_grandchildren(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    # The background sleep keeps stdout open; it must die with its parent.
    cmd = script(tmp_path, f"sleep 30 &\necho $! > {pid_file}\nwait\n")
    exc = failure({"password_command": str(cmd)}, timeout=0.5)
    assert "timed out" in exc.message
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while not _gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(grandchild)


def test_command_large_output_does_not_block(tmp_path: Path) -> None:
    cmd = script(tmp_path, "echo first\nhead -c 1000000 /dev/zero\nhead -c 100000 /dev/zero >&2\n")
    assert resolve({"password_command": str(cmd)}) == "first"


# --- choosing the source ---------------------------------------------------------------------


def test_no_source_is_none() -> None:
    assert resolve({"host": "smtp.example.org", "username": "ada"}) is None


def test_literal_password() -> None:
    assert resolve({"password": SECRET}) == SECRET


def test_two_sources_are_refused(tmp_path: Path) -> None:
    cmd = script(tmp_path, "echo x\n")
    exc = failure({"password": SECRET, "password_command": str(cmd)})
    assert exc.code is ErrorCode.MAPI_E_INVALID_PARAMETER
    assert "only one of" in exc.message and WHERE in exc.message
    assert_no_secret(exc, SECRET)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"password": 1234}, "password must be a string"),
        ({"password_command": ""}, "password_command is empty"),
        ({"password_command": []}, "password_command is empty"),
        ({"password_command": ["a", 1]}, "a string or a list of strings"),
        ({"password_command": "pass show 'x"}, "not a valid command line"),
        ({"keyring": "mail"}, "needs username"),
        ({"keyring": "", "username": "ada"}, "keyring must be"),
    ],
)
def test_bad_shapes(config: dict[str, Any], expected: str) -> None:
    assert any(expected in p for p in secret_problems(config))
    exc = failure(config)
    assert exc.code is ErrorCode.MAPI_E_INVALID_PARAMETER
    assert expected in exc.message


def test_good_shapes_have_no_problems() -> None:
    assert secret_problems({}) == []
    assert secret_problems({"password": "x"}) == []
    assert secret_problems({"password_command": ["pass", "show", "x"]}) == []
    assert secret_problems({"keyring": "mail", "username": "ada"}) == []


# --- mask -----------------------------------------------------------------------------------


def test_mask_nested() -> None:
    config = {
        "service": "smtp",
        "username": "ada",
        "password": SECRET,
        "auth": {"password_command": "pass show x", "port": 587, "more": [{"keyring": "m"}, 3]},
        "identity": {"display_name": "Ada"},
    }
    masked = mask(config)
    assert masked == {
        "service": "smtp",
        "username": "ada",
        "password": MASK,
        "auth": {"password_command": MASK, "port": 587, "more": [{"keyring": MASK}, 3]},
        "identity": {"display_name": "Ada"},
    }
    assert config["password"] == SECRET  # a copy; the original is untouched
    assert SECRET not in repr(masked)
    assert mask({"token": "t", "password": "p"}, SECRET_KEYS | {"token"}) == {
        "token": MASK,
        "password": MASK,
    }


# --- file secrecy -----------------------------------------------------------------------------

PROFILE_WITH_PASSWORD = f"""\
autologon = false

[services.mail]
service = "maildir"
path = "~/Mail"

[services.outgoing]
service = "smtp"
username = "ada"

password = "{SECRET}"
"""
PASSWORD_LINE = 11  # after a blank line, which a `^\s*key` search would skip to


def profile(tmp_path: Path, text: str, mode: int) -> tuple[Path, list[dict[str, Any]]]:
    path = tmp_path / "work.toml"
    path.write_text(text)
    path.chmod(mode)
    return path, list(tomllib.loads(text).get("services", {}).values())


def test_secrecy_owner_only_is_fine(tmp_path: Path) -> None:
    path, sections = profile(tmp_path, PROFILE_WITH_PASSWORD, 0o600)
    assert check_file_secrecy(path, sections) is None
    path.chmod(0o400)
    assert check_file_secrecy(path, sections) is None


@pytest.mark.parametrize("mode", [0o640, 0o644, 0o604])
def test_secrecy_readable_by_others(tmp_path: Path, mode: int) -> None:
    path, sections = profile(tmp_path, PROFILE_WITH_PASSWORD, mode)
    problem = check_file_secrecy(path, sections)
    assert problem is not None
    assert problem.file == str(path)
    assert problem.line == PASSWORD_LINE
    assert f"chmod 600 {path}" in problem.message
    assert f"mode {mode:04o}" in problem.message
    assert "readable by others" in problem.message
    assert SECRET not in str(problem) and SECRET not in repr(problem.to_wire())


def test_secrecy_line_with_text_given_and_nested_password(tmp_path: Path) -> None:
    text = (
        f'[services.outgoing]\nservice = "smtp"\nauth = {{ user = "ada", password = "{SECRET}" }}\n'
    )
    path, sections = profile(tmp_path, text, 0o644)
    problem = check_file_secrecy(path, sections, text=text)
    assert problem is not None and problem.line == 3
    assert SECRET not in problem.message


def test_secrecy_without_password(tmp_path: Path) -> None:
    text = '[services.mail]\nservice = "maildir"\npath = "~/Mail"\n'
    path, sections = profile(tmp_path, text, 0o644)
    assert check_file_secrecy(path, sections) is None
    text += 'password_command = "pass show mail"\npassword = ""\n'
    path, sections = profile(tmp_path, text, 0o644)
    assert check_file_secrecy(path, sections) is None


def test_secrecy_password_command_in_a_writable_file(tmp_path: Path) -> None:
    text = '[services.out]\nservice = "smtp"\n\npassword_command = "pass show mail"\n'
    path, sections = profile(tmp_path, text, 0o664)
    problem = check_file_secrecy(path, sections)
    assert problem is not None and problem.line == 4
    assert "writable by others" in problem.message and "chmod 600" in problem.message


def test_secrecy_outside_service_sections_is_not_checked(tmp_path: Path) -> None:
    path, _ = profile(tmp_path, PROFILE_WITH_PASSWORD, 0o644)
    assert check_file_secrecy(path, []) is None


# --- keyring ----------------------------------------------------------------------------------


@pytest.mark.skipif(HAVE_KEYRING, reason="the keyring package is installed")
def test_keyring_missing_says_how_to_install() -> None:
    exc = failure({"keyring": "mail", "username": "ada"})
    assert exc.code is ErrorCode.MAPI_E_LOGON_FAILED
    assert KEYRING_HINT in exc.message and "pip install 'mapid[keyring]'" in exc.message
    assert WHERE in exc.message


@pytest.fixture
def keyring_backend() -> Iterator[Any]:
    """The keyring module, with its current back-end put back afterwards."""
    keyring = pytest.importorskip("keyring")
    saved = keyring.get_keyring()
    yield keyring
    keyring.set_keyring(saved)


def _in_memory_backend(keyring: Any, name: str = "MemoryKeyring") -> Any:
    base = importlib.import_module("keyring.backend").KeyringBackend

    def get_password(self: Any, service: str, username: str) -> str | None:
        value: str | None = self.store.get((service, username))
        return value

    def set_password(self: Any, service: str, username: str, password: str) -> None:
        self.store[(service, username)] = password

    def delete_password(self: Any, service: str, username: str) -> None:
        del self.store[(service, username)]

    cls = type(
        name,
        (base,),
        {
            "priority": 1,
            "get_password": get_password,
            "set_password": set_password,
            "delete_password": delete_password,
        },
    )
    backend = cls()
    backend.store = {}
    return backend


@pytest.mark.parametrize("name", ["keyring.backends.null.Keyring", "keyring.backends.fail.Keyring"])
def test_keyring_refuses_null_and_fail(keyring_backend: Any, name: str) -> None:
    module, _, cls = name.rpartition(".")
    keyring_backend.set_keyring(getattr(importlib.import_module(module), cls)())
    exc = failure({"keyring": "mail", "username": "ada"})
    assert exc.code is ErrorCode.MAPI_E_LOGON_FAILED
    assert "no Secret Service is reachable" in exc.message
    assert "D-Bus" in exc.message and name in exc.message


def test_keyring_refuses_plaintext_files(keyring_backend: Any) -> None:
    plain = _in_memory_backend(keyring_backend, "PlaintextKeyring")
    plain.set_password("mail", "ada", SECRET)
    keyring_backend.set_keyring(plain)
    exc = failure({"keyring": "mail", "username": "ada"})
    assert "no Secret Service is reachable" in exc.message
    assert_no_secret(exc, SECRET)


def test_keyring_real_store(keyring_backend: Any) -> None:
    store = _in_memory_backend(keyring_backend)
    store.set_password("mail", "ada", SECRET)
    keyring_backend.set_keyring(store)
    assert resolve({"keyring": "mail", "username": "ada"}) == SECRET
    exc = failure({"keyring": "mail", "username": "grace"})
    assert exc.code is ErrorCode.MAPI_E_LOGON_FAILED
    assert "has no password" in exc.message and "keyring set mail grace" in exc.message


def test_keyring_null_backend_from_the_environment(tmp_path: Path) -> None:
    pytest.importorskip("keyring")
    code = (
        "import asyncio\n"
        "from mapid.daemon.config.credentials import resolve_password\n"
        "from mapid.errors import MapiError\n"
        "try:\n"
        "    asyncio.run(resolve_password({'keyring': 'mail', 'username': 'ada'}, where='p'))\n"
        "except MapiError as exc:\n"
        "    print(exc.code.name, exc.message)\n"
    )
    env = dict(os.environ, PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring")
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("MAPI_E_LOGON_FAILED p: no Secret Service is reachable")
