"""Where a service's password comes from, and keeping it out of sight (docs/design.md 3 and 9).

A `[services.<key>]` table names its password in one of three ways:

- `password_command = "pass show mail/example"` (a string split like a shell would, or a list
  of strings): run without a shell, stdin from /dev/null, the daemon's environment, in its own
  process group, killed (with its children) when it takes longer than the time-out; the first
  line of its stdout is the password.
- `keyring = "<service name>"` with `username = "<user>"`: looked up in the Secret Service
  (gnome-keyring, KeePassXC, KWallet) through the optional `keyring` package
  (`pip install 'mapid[keyring]'`). keyring falls back silently to its "fail", "null" or
  keyrings.alt file back-ends when no D-Bus session is running; those are refused.
- `password = "..."` in the profile file itself, only when that file is readable by its owner
  alone (`check_file_secrecy`).

Only one of the three may be given; two or more is MAPI_E_INVALID_PARAMETER rather than a
silent order of preference, because a leftover `password` next to a `password_command` is a
mistake worth hearing about.

An OAuth2 account names no password but `oauth2_token_command`: a program that prints an access
token (oama, mutt_oauth2.py, `gcloud auth print-access-token`), run exactly as a
password_command is (no shell, same time-out, same care with its output). Helpers refresh the
token on each call, so asking again is running it again; `TokenSource` keeps the last token
for the next connection until the server rejects it. It excludes the three password keys:
giving both is MAPI_E_INVALID_PARAMETER too.

A password that cannot be had is MAPI_E_LOGON_FAILED: the provider cannot log on without it,
and the message says where (profile and service), which program, and why (exit status, time-out,
missing program, no Secret Service), never what the program printed on stdout and at most a
short first line of its stderr. A configuration of the wrong shape is MAPI_E_INVALID_PARAMETER.
Secrets never go into logs, events, tables or messages; `mask` is for anything that shows a
configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import shlex
import signal
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mapid.daemon.config.daemon_config import ConfigProblem, find_line
from mapid.errors import ErrorCode, MapiError
from mapid.providers.base import SECRET_KEYS

__all__ = [
    "MASK",
    "SECRET_KEYS",
    "TOKEN_COMMAND",
    "TokenSource",
    "check_file_secrecy",
    "mask",
    "resolve_oauth2_token",
    "resolve_password",
    "secret_problems",
]

"""Keys whose values are never shown: the password, and what leads to it."""

MASK = "********"

KEYRING_HINT = "pip install 'mapid[keyring]'"
_SOURCES = ("password_command", "keyring", "password")
TOKEN_COMMAND = "oauth2_token_command"
"""The key of the program that prints an OAuth2 access token."""
_COMMANDS = ("password_command", TOKEN_COMMAND)
_STDOUT_CAP = 64 * 1024
_STDERR_CAP = 8 * 1024
_STDERR_LINE_MAX = 120

# keyring back-ends that are no secret store: keyring picks them silently when no Secret Service
# answers (no D-Bus session), or a keyringrc.cfg / PYTHON_KEYRING_BACKEND names them. Matched on
# every class of the back-end's MRO, so subclasses (keyrings.cryptfile, ...) are caught too.
_REFUSED_MODULES = (
    "keyring.backends.fail",
    "keyring.backends.null",
    "keyring.backends.file",  # keyring < 10 kept the file back-ends itself
    "keyrings.alt.file",
    "keyrings.alt.file_base",
    "keyrings.alt.pyfs",
)
_REFUSED_NAME_PARTS = ("Plaintext", "Base64")


# --- Showing configurations ---------------------------------------------------------------


def mask(config: Mapping[str, Any], keys: Iterable[str] = SECRET_KEYS) -> dict[str, Any]:
    """A copy of `config` with the value of every secret key replaced by `MASK`.

    Nested tables and lists of tables are masked too. `keys` defaults to `SECRET_KEYS`; a
    service with secrets of its own passes `SECRET_KEYS | cls.secret_keys`.
    """
    hidden = frozenset(keys)
    return {str(k): (MASK if k in hidden else _mask_value(v, hidden)) for k, v in config.items()}


def _mask_value(value: Any, hidden: frozenset[str]) -> Any:
    if isinstance(value, Mapping):
        return mask(value, hidden)
    if isinstance(value, (list, tuple)):
        return [_mask_value(item, hidden) for item in value]
    return value


# --- Checking configurations --------------------------------------------------------------


def secret_problems(config: Mapping[str, Any]) -> list[str]:
    """What is wrong with the secret keys of one service's configuration (no values quoted).

    For `check_config` and reload reports; `resolve_password` raises the first of these.
    """
    given = [key for key in _SOURCES if key in config]
    if TOKEN_COMMAND in config and given:
        found = _and_list([TOKEN_COMMAND, *given])
        return [
            "give either oauth2_token_command (OAuth2) or one of password_command, keyring "
            f"and password, not both (found {found})"
        ]
    if len(given) > 1:
        found = _and_list(given)
        return [f"give only one of password_command, keyring and password (found {found})"]
    problems: list[str] = []
    if "password" in config and not isinstance(config["password"], str):
        problems.append("password must be a string")
    for key in _COMMANDS:
        if key in config:
            try:
                _command_argv(config[key], key)
            except ValueError as exc:
                problems.append(str(exc))
    if "keyring" in config:
        if not isinstance(config["keyring"], str) or not config["keyring"]:
            problems.append("keyring must be the Secret Service entry's service name (a string)")
        username = config.get("username")
        if not isinstance(username, str) or not username:
            problems.append('keyring needs username = "<user>" to look the password up')
    return problems


def _and_list(keys: list[str]) -> str:
    return ", ".join(keys[:-1]) + " and " + keys[-1] if len(keys) > 1 else "".join(keys)


def _command_argv(value: object, key: str = "password_command") -> list[str]:
    if isinstance(value, str):
        try:
            argv = shlex.split(value)
        except ValueError as exc:  # shlex names the fault, never the text
            raise ValueError(f"{key} is not a valid command line: {exc}") from None
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        argv = list(value)
    else:
        raise ValueError(f"{key} must be a string or a list of strings")
    if not argv or not argv[0]:
        raise ValueError(f"{key} is empty")
    return argv


def check_file_secrecy(
    path: Path, config_sections: Iterable[Mapping[str, Any]], *, text: str | None = None
) -> ConfigProblem | None:
    """Refuse a profile file that others can read while it holds a password (docs/design.md 9).

    `config_sections` are the file's `[services.<key>]` tables; a non-empty `password` at any
    depth in one of them counts. Such a file must be owned by the daemon's user (or root) and
    have no group or other bits (mode & 0o077 == 0). A file that runs a `password_command` or an
    `oauth2_token_command` may not be writable by group or others either, since whoever can
    write it chooses the program the daemon runs. `text` is the file's content if the caller
    has it (for the line number).
    """
    sections = list(config_sections)
    has_password = any(_holds(section, "password") for section in sections)
    commands = [key for key in _COMMANDS if any(_holds(section, key) for section in sections)]
    has_command = bool(commands)
    if not has_password and not has_command:
        return None
    file = str(path)
    try:
        st = path.stat()
    except OSError as exc:
        return ConfigProblem(file, f"cannot check its permissions: {exc.strerror}")
    mode = stat.S_IMODE(st.st_mode)
    owner_ok = st.st_uid in (os.geteuid(), 0)
    fix = f"run `chmod 600 {shlex.quote(file)}`"
    if has_password and (mode & 0o077 or not owner_ok):
        line = _line_of(path, text, "password")
        if not owner_ok:
            message = (
                f"holds a password but is owned by uid {st.st_uid}, not by the daemon's user "
                f"(uid {os.geteuid()}); run `chown {os.geteuid()} {shlex.quote(file)}` and "
                f"`chmod 600 {shlex.quote(file)}`, or use password_command"
            )
        else:
            how = "readable by" if mode & 0o044 else "open to"
            message = (
                f"holds a password but is {how} others (mode {mode:04o}); {fix}, "
                "or use password_command"
            )
        return ConfigProblem(file, message, line)
    if has_command and (mode & 0o022 or not owner_ok):
        line = _line_of(path, text, commands[0])
        whose = "writable by others" if mode & 0o022 else f"owned by uid {st.st_uid}"
        return ConfigProblem(
            file,
            f"runs {'an' if commands[0][0] in 'aeiou' else 'a'} {commands[0]} but is {whose} "
            f"(mode {mode:04o}); {fix}",
            line,
        )
    return None


def _holds(value: Any, key: str) -> bool:
    if isinstance(value, Mapping):
        found = value.get(key)
        if found is not None and found != "" and found != []:
            return True
        return any(_holds(v, key) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds(item, key) for item in value)
    return False


def _line_of(path: Path, text: str | None, key: str) -> int | None:
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
    return find_line(text, key)


# --- Resolving -----------------------------------------------------------------------------


async def resolve_password(
    config: Mapping[str, Any], *, where: str, timeout: float = 10.0
) -> str | None:
    """The password of one service's configuration, or None when it names none.

    `where` says whose password it is in messages, e.g. "profile work, service outgoing".
    Exactly one of `password_command`, `keyring` and `password` may be present (see the
    module docstring); more is MAPI_E_INVALID_PARAMETER, as is a value of the wrong type.
    Failing to get the password (the command fails, prints nothing or takes longer than
    `timeout` seconds; keyring is not installed, reaches no Secret Service, has no entry or
    takes longer than `timeout`) is MAPI_E_LOGON_FAILED.
    """
    problems = secret_problems(config)
    if problems:
        raise MapiError(
            ErrorCode.MAPI_E_INVALID_PARAMETER,
            f"{where}: {problems[0]}",
            details={"where": where},
        )
    if "password_command" in config:
        argv = _command_argv(config["password_command"])
        return await _run_command(argv, "password_command", "password", where, timeout)
    if "keyring" in config:
        return await _keyring_password(
            str(config["keyring"]), str(config["username"]), where=where, timeout=timeout
        )
    if "password" in config:
        return str(config["password"])
    return None


async def resolve_oauth2_token(
    config: Mapping[str, Any], *, where: str, timeout: float = 10.0
) -> str | None:
    """A fresh access token from the configuration's `oauth2_token_command`, or None when it
    names none. The command runs as a password_command does (see resolve_password, whose
    errors it shares); what it prints on its first line, stripped, is the token, which must
    be printable ASCII without spaces (RFC 6750's b64token is): anything else would break the
    SASL message it goes into."""
    problems = secret_problems(config)
    if problems:
        raise MapiError(
            ErrorCode.MAPI_E_INVALID_PARAMETER,
            f"{where}: {problems[0]}",
            details={"where": where},
        )
    if TOKEN_COMMAND not in config:
        return None
    argv = _command_argv(config[TOKEN_COMMAND], TOKEN_COMMAND)
    token = (await _run_command(argv, TOKEN_COMMAND, "access token", where, timeout)).strip()
    what = f"{TOKEN_COMMAND} {argv[0]!r}"
    if not token:
        raise _failed(where, TOKEN_COMMAND, f"{what} printed no access token on its first line")
    if not all("!" <= ch <= "~" for ch in token):
        raise _failed(
            where,
            TOKEN_COMMAND,
            f"{what} printed something that is no access token (spaces or characters other "
            "than printable ASCII on its first line)",
        )
    return token


class TokenSource:
    """The access token of one provider: its oauth2_token_command runs at the first ask and
    whenever the provider asks for a fresh one (the server rejected the last), and the token
    is kept in between, for the next connection. A changed command is run anew. One ask at a
    time: providers that connect twice at once run the command once."""

    def __init__(self, timeout: float = 10.0) -> None:
        self._timeout = timeout
        self._lock = asyncio.Lock()
        self._command: object = None
        self._token: str | None = None

    async def token(
        self, config: Mapping[str, Any], *, where: str, refresh: bool = False
    ) -> str | None:
        async with self._lock:
            command = config.get(TOKEN_COMMAND)
            if not refresh and self._token is not None and command == self._command:
                return self._token
            self._token = None
            token = await resolve_oauth2_token(config, where=where, timeout=self._timeout)
            self._command, self._token = command, token
            return token

    def forget(self) -> None:
        self._token = None


def _failed(where: str, source: str, message: str) -> MapiError:
    return MapiError(
        ErrorCode.MAPI_E_LOGON_FAILED,
        f"{where}: {message}",
        details={"where": where, "source": source},
    )


async def _run_command(argv: list[str], key: str, noun: str, where: str, timeout: float) -> str:
    """Run a password_command or oauth2_token_command (`key`); the first line it prints is
    the `noun` ("password", "access token") it gives."""
    program = argv[0]
    what = f"{key} {program!r}"
    a_noun = ("an " if noun[0] in "aeiou" else "a ") + noun
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group, so a time-out kills its children
        )
    except FileNotFoundError:
        raise _failed(where, key, f"{what}: no such program") from None
    except OSError as exc:
        raise _failed(where, key, f"{what} could not be started: {exc.strerror}") from None
    try:
        out, out_truncated, err, status = await asyncio.wait_for(_collect(proc), timeout)
    except TimeoutError:
        _kill_group(proc)
        await proc.wait()
        raise _failed(where, key, f"{what} timed out after {timeout:g} s") from None
    except BaseException:  # cancelled: leave nothing running behind
        _kill_group(proc)
        raise
    first, _, _ = out.partition(b"\n")
    first = first.removesuffix(b"\r")
    if status != 0:
        if status < 0:
            how = f"was killed by signal {_signal_name(-status)}"
        else:
            how = f"exited with status {status}"
        note = _stderr_line(err, first)
        raise _failed(where, key, f"{what} {how}" + (f": {note}" if note else ""))
    if out_truncated and b"\n" not in out:
        raise _failed(where, key, f"{what} printed a first line over {_STDOUT_CAP} bytes")
    if not first:
        raise _failed(where, key, f"{what} printed no {noun} on its first line")
    try:
        return first.decode("utf-8")
    except UnicodeDecodeError:
        raise _failed(where, key, f"{what} printed {a_noun} that is not UTF-8") from None


async def _collect(proc: asyncio.subprocess.Process) -> tuple[bytes, bool, bytes, int]:
    assert proc.stdout is not None and proc.stderr is not None
    (out, out_truncated), (err, _) = await asyncio.gather(
        _read_capped(proc.stdout, _STDOUT_CAP), _read_capped(proc.stderr, _STDERR_CAP)
    )
    status = await proc.wait()
    return out, out_truncated, err, status


async def _read_capped(stream: asyncio.StreamReader, cap: int) -> tuple[bytes, bool]:
    """Read to EOF, keeping the first `cap` bytes (the rest is drained so the child never
    blocks on a full pipe)."""
    kept = bytearray()
    truncated = False
    while chunk := await stream.read(65536):
        room = cap - len(kept)
        if room > 0:
            kept += chunk[:room]
        if len(chunk) > room:
            truncated = True
    return bytes(kept), truncated


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _stderr_line(err: bytes, secret: bytes) -> str:
    """The first non-blank line of stderr, printable characters only and cut short; nothing
    when it contains what the command printed as a password."""
    for raw in err.splitlines():
        if secret and secret in raw:
            return ""
        line = "".join(ch for ch in raw.decode("utf-8", "replace") if ch.isprintable()).strip()
        if line:
            if len(line) > _STDERR_LINE_MAX:
                line = line[: _STDERR_LINE_MAX - 1] + "…"
            return line
    return ""


# --- keyring ---------------------------------------------------------------------------------


async def _keyring_password(service: str, username: str, *, where: str, timeout: float) -> str:
    try:
        password = await asyncio.wait_for(
            asyncio.to_thread(_keyring_lookup, service, username, where), timeout
        )
    except TimeoutError:
        # The thread cannot be stopped; it ends when the Secret Service answers.
        raise _failed(
            where,
            "keyring",
            f"the Secret Service did not answer within {timeout:g} s "
            "(is it waiting for the keyring to be unlocked?)",
        ) from None
    if password is None:
        raise _failed(
            where,
            "keyring",
            f"the Secret Service has no password for service {service!r}, user {username!r}; "
            f"store one with `keyring set {shlex.quote(service)} {shlex.quote(username)}`",
        )
    return password


def _keyring_lookup(service: str, username: str, where: str) -> str | None:
    """The blocking part: import keyring, pick acceptable back-ends, ask them in turn."""
    try:
        keyring = importlib.import_module("keyring")
    except ImportError:
        raise _failed(
            where,
            "keyring",
            f"keyring = ... needs the keyring package: {KEYRING_HINT}, or use password_command",
        ) from None
    try:
        backend = keyring.get_keyring()
        usable, refused = _usable_backends(backend)
        if not usable:
            found = (
                f"keyring offers only {', '.join(refused)}, which is no secret store"
                if refused
                else "keyring found no back-end"
            )
            raise _failed(
                where,
                "keyring",
                f"no Secret Service is reachable ({found}): "
                "is a D-Bus session running (DBUS_SESSION_BUS_ADDRESS)? is gnome-keyring or "
                "KeePassXC's Secret Service integration on? Or use password_command",
            )
        for candidate in usable:
            password = candidate.get_password(service, username)
            if password is not None:
                return str(password)
        return None
    except MapiError:
        raise
    except Exception as exc:  # keyring and D-Bus errors of every kind
        reason = _stderr_line(str(exc).encode("utf-8", "replace"), b"")
        raise _failed(
            where,
            "keyring",
            f"the Secret Service lookup failed: {type(exc).__name__}"
            + (f": {reason}" if reason else ""),
        ) from None


def _usable_backends(backend: Any) -> tuple[list[Any], list[str]]:
    """The back-ends worth asking, and the names of those refused.

    keyring's ChainerBackend asks every viable back-end in turn; it is unpacked so that a real
    store in the chain is still used while a plaintext file beside it is not.
    """
    chain = [backend]
    if type(backend).__module__ == "keyring.backends.chainer":
        chain = list(getattr(backend, "backends", []))
    usable: list[Any] = []
    refused: list[str] = []
    for candidate in chain:
        if _refused(type(candidate)):
            refused.append(f"{type(candidate).__module__}.{type(candidate).__qualname__}")
        else:
            usable.append(candidate)
    return usable, refused


def _refused(cls: type) -> bool:
    for klass in cls.__mro__:
        module = klass.__module__
        if any(module == m or module.startswith(m + ".") for m in _REFUSED_MODULES):
            return True
        if any(part in klass.__name__ for part in _REFUSED_NAME_PARTS):
            return True
    return False
