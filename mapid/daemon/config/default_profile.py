"""The embedded default: with no configuration at all, `mapid run` writes a ready profile.

It holds a Maildir and a vCard folder under `$XDG_DATA_HOME/mapid/`, is the default profile,
and logs on at start, so a new user sees a live session without configuring anything.
"""

from __future__ import annotations

import getpass
import os
import pwd
import socket
from pathlib import Path

from mapid import paths
from mapid.daemon.config.daemon_config import CONFIG_FILE, PROFILES_DIR

DEFAULT_PROFILE_NAME = "default"


def _toml_str(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _user_identity() -> tuple[str, str]:
    user = getpass.getuser()
    try:
        gecos = pwd.getpwnam(user).pw_gecos.split(",", 1)[0].strip()
    except KeyError:
        gecos = ""
    return gecos or user, f"{user}@{socket.gethostname() or 'localhost'}"


def needs_default(config_dir: Path) -> bool:
    """True when there is no configuration at all: no mapid.toml and no profile file."""
    if (config_dir / CONFIG_FILE).exists():
        return False
    profiles = config_dir / PROFILES_DIR
    return not (profiles.is_dir() and any(profiles.glob("*.toml")))


def write_default(config_dir: Path, data_dir: Path | None = None) -> Path:
    """Write mapid.toml and profiles/default.toml; return the profile's path."""
    data = data_dir or paths.data_dir()
    name, email = _user_identity()
    profiles = config_dir / PROFILES_DIR
    profiles.mkdir(parents=True, exist_ok=True, mode=0o700)
    (data / "Mail").mkdir(parents=True, exist_ok=True, mode=0o700)
    (data / "contacts").mkdir(parents=True, exist_ok=True, mode=0o700)
    daemon_config = (
        "# mapid daemon configuration (created by `mapid run` on first start).\n"
        f"default_profile = {_toml_str(DEFAULT_PROFILE_NAME)}\n"
        "# lease_s = 60          # drop a client that is silent this long (0: never)\n"
        "# events_hwm = 10000    # events queued per subscriber before it loses some\n"
        '# log_level = "info"\n'
        '# watch = "auto"        # "poll" on network file systems; "off": reload by hand\n'
        "# spooler_retry_s = 30  # first wait after a temporary send failure (doubles)\n"
    )
    profile = (
        "# The embedded default profile (created by `mapid run` on first start).\n"
        "# Edit freely: the daemon re-reads profiles when they change.\n"
        "autologon = true\n"
        "\n"
        "[services.mail]\n"
        'service = "maildir"\n'
        f"path = {_toml_str(str(data / 'Mail'))}\n"
        "primary_store = true\n"
        "\n"
        "[services.contacts]\n"
        'service = "vcard"\n'
        f"path = {_toml_str(str(data / 'contacts'))}\n"
        f"identity = {{ display_name = {_toml_str(name)}, email = {_toml_str(email)} }}\n"
        "\n"
        "# To send mail, name your SMTP server (mail submitted without a transport comes\n"
        "# back as a non-delivery report in the Inbox):\n"
        "# [services.outgoing]\n"
        '# service = "smtp"\n'
        '# host = "smtp.example.org"\n'
        '# security = "starttls"          # "none", "starttls" (587) or "tls" (465)\n'
        f"# username = {_toml_str(email)}\n"
        '# password_command = "pass show mail/example"\n'
    )
    _write_new(config_dir / CONFIG_FILE, daemon_config)
    target = profiles / f"{DEFAULT_PROFILE_NAME}.toml"
    _write_new(target, profile)
    return target


def _write_new(path: Path, text: str) -> None:
    """Create `path` with mode 0600 unless it exists (never overwrite a user's file)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
