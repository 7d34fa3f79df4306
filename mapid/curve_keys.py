"""CURVE key files for remote access (docs/protocol.md 9), shared by clients and the daemon.

The files are pyzmq's `zmq.auth` certificates: `NAME.key` holds the Z85 public key and may
be copied anywhere; `NAME.key_secret` holds both keys and must stay private (0600 in a 0700
directory). Any ZeroMQ client can use them, and `zmq.auth.load_certificate` reads them.
"""

from __future__ import annotations

import os
import socket
import stat
from datetime import UTC, datetime
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85

from mapid import paths
from mapid.atomic_files import write_atomic
from mapid.errors import MapidError

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
Z85_KEY_LENGTH = 40
"""A 32-byte CURVE key in Z85."""

_PUBLIC_BANNER = """#   ****  Generated on {now} by mapid  ****
#   ZeroMQ CURVE Public Certificate (zmq.auth format)
#   {role}
"""
_SECRET_BANNER = """#   ****  Generated on {now} by mapid  ****
#   ZeroMQ CURVE **Secret** Certificate (zmq.auth format)
#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.
"""


class KeyFileError(MapidError):
    """A key or key file cannot be used; the message names the file and the fix."""


def default_key_dir() -> Path:
    """Where `mapictl keys new` puts a client's key pair: `keys/` in the config directory."""
    return paths.config_dir() / "keys"


def default_key_name() -> str:
    return socket.gethostname().split(".")[0] or "client"


def default_client_key() -> Path:
    """The secret key file mapictl uses without --client-key."""
    return default_key_dir() / f"{default_key_name()}{SECRET_SUFFIX}"


def is_z85_key(text: str | bytes) -> bool:
    """Whether `text` is a 40-character Z85 string that decodes to a 32-byte key."""
    raw = text.encode("ascii", "replace") if isinstance(text, str) else text
    if len(raw) != Z85_KEY_LENGTH:
        return False
    try:
        return len(z85.decode(raw)) == 32
    except (ValueError, KeyError, TypeError):
        return False


def read_public_key(path: Path) -> bytes:
    """The Z85 public key of a certificate file (public or secret)."""
    try:
        public, _secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"{path}: not a CURVE key file: {exc}") from None
    if not is_z85_key(public):
        raise KeyFileError(f"{path}: public-key is not a 40-character Z85 key")
    return public


def server_key(value: str) -> bytes:
    """The daemon's public key from a Z85 string or a file holding one: a `server.key`
    certificate, or any file whose first word is the key (`jq -r .curve_server_key`)."""
    text = value.strip()
    if is_z85_key(text):
        return text.encode("ascii")
    path = Path(text).expanduser()
    if not path.is_file():
        raise KeyFileError(
            f"server key {value!r} is neither a 40-character Z85 key nor a file; copy the "
            "daemon's server.key (or its curve_server_key from mapid.json)"
        )
    content = path.read_text(encoding="utf-8", errors="replace").strip()
    if is_z85_key(content.split()[0] if content else ""):
        return content.split()[0].encode("ascii")
    return read_public_key(path)


def check_private(path: Path) -> None:
    """Refuse a secret key file that others may read or that another user owns."""
    info = os.stat(path)
    if info.st_mode & 0o077:
        raise KeyFileError(
            f"secret key file {path} is readable by others (mode "
            f"{stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}"
        )
    if info.st_uid != os.geteuid():
        raise KeyFileError(
            f"secret key file {path} belongs to uid {info.st_uid}, not to this user "
            f"(uid {os.geteuid()}); run: chown {os.geteuid()} {path}"
        )


def read_secret_key(path: Path) -> tuple[bytes, bytes]:
    """(public, secret) Z85 keys of a private `.key_secret` file, after checking its mode."""
    if not path.is_file():
        raise KeyFileError(
            f"no secret key file {path}; make one with `mapictl keys new` (or name yours "
            "with --client-key)"
        )
    check_private(path)
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"{path}: not a CURVE key file: {exc}") from None
    if secret is None or not is_z85_key(secret) or not is_z85_key(public):
        raise KeyFileError(f"{path}: holds no secret-key; use the .key_secret file")
    return public, secret


def load_client_keys(secret_file: str | os.PathLike[str], server: str) -> dict[str, bytes]:
    """The `curve=` mapping of `Client`, `AsyncClient` and `StatusMirror`: this client's
    key pair from its `.key_secret` file and the daemon's public key (Z85 or a file)."""
    public, secret = read_secret_key(Path(secret_file).expanduser())
    return {"server_key": server_key(server), "public_key": public, "secret_key": secret}


def _write(path: Path, text: str) -> None:
    """Write `text` to `path` as 0600 in one rename, never readable by others on the way."""
    write_atomic(path, text.encode("utf-8"), mode=0o600)


def write_key_pair(directory: Path, name: str, role: str) -> tuple[Path, Path]:
    """A new key pair as `NAME.key` (0644) and `NAME.key_secret` (0600) in `directory`
    (made 0700 if new); existing files are never overwritten."""
    if not name or "/" in name or name.startswith("."):
        raise KeyFileError(f"key name {name!r} must be a plain file name")
    if not directory.exists():  # an existing directory (--out .) keeps its mode
        directory.mkdir(mode=0o700, parents=True)
        os.chmod(directory, 0o700)  # mkdir's mode passes through the umask
    public_path = directory / f"{name}{PUBLIC_SUFFIX}"
    secret_path = directory / f"{name}{SECRET_SUFFIX}"
    for path in (public_path, secret_path):
        if path.exists():
            raise KeyFileError(f"{path} exists already; choose another --name or remove it")
    public, secret = zmq.curve_keypair()
    now = datetime.now(UTC).isoformat(timespec="seconds")
    body = f'metadata\ncurve\n    public-key = "{public.decode()}"\n'
    _write(
        secret_path,
        _SECRET_BANNER.format(now=now) + body + f'    secret-key = "{secret.decode()}"\n',
    )
    _write(public_path, _PUBLIC_BANNER.format(now=now, role=role) + body)
    os.chmod(public_path, 0o644)
    return public_path, secret_path


__all__ = [
    "KeyFileError",
    "check_private",
    "default_client_key",
    "default_key_dir",
    "default_key_name",
    "is_z85_key",
    "load_client_keys",
    "read_public_key",
    "read_secret_key",
    "server_key",
    "write_key_pair",
]
