"""Profile files: one TOML file per profile in the profiles directory (docs/design.md 3).

The file stem is the profile name. Each `[services.<key>]` table is one message service
instance: `service` names an installed service, the other keys are its configuration. A file
that fails to parse or validate is reported with its line and left out; the others load.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mapid import entryid
from mapid.daemon.config.credentials import check_file_secrecy
from mapid.daemon.config.daemon_config import (
    ConfigProblem,
    FileTooLarge,
    find_line,
    parse_toml,
    read_config_text,
)
from mapid.errors import ErrorCode, MapiError

MAX_PROFILE_NAME = 64

_TEMP_SUFFIXES = (
    "~",
    "#",
    ".swp",
    ".swx",
    ".swo",
    ".tmp",
    ".temp",
    ".bak",
    ".orig",
    ".part",
    ".kate-swp",
    ".dpkg-new",
    ".dpkg-old",
    ".dpkg-dist",
    ".rpmnew",
    ".rpmsave",
)


log = logging.getLogger("mapid.daemon")


def is_editor_temp(name: str) -> bool:
    """True for the files editors and tools leave next to the one being saved.

    vim: `x.toml~`, `.x.toml.swp`/`.swx`/`.swo`, `4913`; emacs: `.#x.toml` (lock),
    `#x.toml#` (autosave); kate: `.x.toml.kate-swp`; generic `*.tmp`, `*.bak`, `*.part`,
    package-manager leftovers; and any hidden file (temporary writers like `.x.toml.XXXXXX`).
    """
    return (
        not name or name.startswith((".", "#")) or name.endswith(_TEMP_SUFFIXES) or name == "4913"
    )


def is_profile_file_name(name: str) -> bool:
    """A file in `profiles/` that is (or would be) a profile: `<name>.toml`, not a dropping."""
    return name.endswith(".toml") and len(name) > len(".toml") and not is_editor_temp(name)


def check_profile_name(name: object) -> str:
    """MAPI's profile name rules (docs/mapi.md 3.1), plus no path separators."""
    if not isinstance(name, str) or not name:
        raise MapiError(ErrorCode.MAPI_E_INVALID_PARAMETER, "a profile name is a non-empty str")
    if len(name) > MAX_PROFILE_NAME:
        raise MapiError(
            ErrorCode.MAPI_E_INVALID_PARAMETER,
            f"profile name of {len(name)} characters; at most {MAX_PROFILE_NAME}",
        )
    if name != name.strip():
        raise MapiError(
            ErrorCode.MAPI_E_INVALID_PARAMETER, "a profile name has no leading or trailing space"
        )
    if "/" in name or "\0" in name or name.startswith((".", "#")):
        raise MapiError(ErrorCode.MAPI_E_INVALID_PARAMETER, f"{name!r} is not a usable name")
    return name


def provider_uid(profile: str, service_key: str, provider: str) -> bytes:
    """PR_PROVIDER_UID of one provider of a profile's service: stable, like the service's."""
    return entryid.uid_from_name("provider", profile, service_key, provider)


@dataclass(frozen=True)
class ServiceSection:
    """One `[services.<key>]` table of a profile."""

    key: str
    service: str
    config: dict[str, Any]
    uid: bytes
    """PR_SERVICE_UID: derived from profile name and key, so hand-written files need none."""


@dataclass(frozen=True)
class Profile:
    name: str
    path: Path
    autologon: bool = False
    services: tuple[ServiceSection, ...] = ()
    digest: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def service(self, key: str) -> ServiceSection | None:
        return next((s for s in self.services if s.key == key), None)


def parse_profile(path: Path, text: str) -> tuple[Profile | None, list[ConfigProblem]]:
    """Parse one profile file; on any problem, return None and what is wrong."""
    name = path.stem
    file = str(path)
    try:
        check_profile_name(name)
    except MapiError as exc:
        return None, [ConfigProblem(file, f"file name is not a profile name: {exc.message}")]
    data, problem = parse_toml(path, text)
    if data is None:
        assert problem is not None
        return None, [problem]
    problems: list[ConfigProblem] = []
    autologon = data.get("autologon", False)
    if not isinstance(autologon, bool):
        problems.append(
            ConfigProblem(file, "autologon must be true or false", find_line(text, "autologon"))
        )
    services_data = data.get("services", {})
    sections: list[ServiceSection] = []
    if not isinstance(services_data, dict):
        problems.append(ConfigProblem(file, "services must be a table of [services.<key>] tables"))
        services_data = {}
    for key, body in services_data.items():
        if not isinstance(body, dict):
            problems.append(ConfigProblem(file, f"services.{key} must be a table"))
            continue
        service = body.get("service")
        if not isinstance(service, str) or not service:
            line = _section_line(text, key)
            problems.append(ConfigProblem(file, f'[services.{key}] needs service = "<name>"', line))
            continue
        config = {k: v for k, v in body.items() if k != "service"}
        uid = entryid.uid_from_name("service", name, key)
        sections.append(ServiceSection(key, service, config, uid))
    primary = data.get("primary_identity")
    if primary is not None and not (
        isinstance(primary, str) and (primary == "" or any(sec.key == primary for sec in sections))
    ):
        line = find_line(text, "primary_identity")
        problems.append(ConfigProblem(file, "primary_identity must name a service key", line))
    order = data.get("transport_order")
    if order is not None and not (
        isinstance(order, list) and all(isinstance(u, str) for u in order)
    ):
        line = find_line(text, "transport_order")
        problems.append(
            ConfigProblem(file, "transport_order must be a list of provider UIDs", line)
        )
    secrecy = check_file_secrecy(path, [sec.config for sec in sections], text=text)
    if secrecy is not None:
        problems.append(secrecy)
    if problems:
        return None, problems
    extra = {k: v for k, v in data.items() if k not in ("autologon", "services")}
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return Profile(name, path, bool(autologon), tuple(sections), digest, extra), []


def _section_line(text: str, key: str) -> int | None:
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip().replace(" ", "")
        if stripped in (f"[services.{key}]", f'[services."{key}"]'):
            return number
    return None


def read_profiles(directory: Path) -> tuple[dict[str, Profile], list[ConfigProblem]]:
    """Every `*.toml` in `directory`, sorted by name; broken files are reported, not loaded."""
    profiles: dict[str, Profile] = {}
    problems: list[ConfigProblem] = []
    try:
        files = sorted(
            p for p in directory.iterdir() if is_profile_file_name(p.name) and p.is_file()
        )
    except FileNotFoundError:
        return {}, []
    except OSError as exc:
        return {}, [ConfigProblem(str(directory), f"cannot list: {exc.strerror}")]
    for path in files:
        try:
            text = read_config_text(path)
        except (OSError, UnicodeDecodeError, FileTooLarge) as exc:
            problems.append(ConfigProblem(str(path), f"cannot read: {exc}"))
            continue
        try:
            profile, found = parse_profile(path, text)
        except Exception as exc:  # one file's bug must not fail the reload of the others
            log.exception("reading profile %s failed", path)
            found = [ConfigProblem(str(path), f"cannot be read as a profile: {exc!r}")]
            profile = None
        problems.extend(found)
        if profile is not None:
            profiles[profile.name] = profile
    autologons = [p.name for p in profiles.values() if p.autologon]
    if len(autologons) > 1:
        for name in autologons[1:]:
            problems.append(
                ConfigProblem(
                    str(profiles[name].path),
                    f"autologon is already set by profile {autologons[0]!r}; at most one",
                    find_line(_text_or_empty(profiles[name].path), "autologon"),
                )
            )
            profiles[name] = _without_autologon(profiles[name])
    return profiles, problems


def _text_or_empty(path: Path) -> str:
    try:
        return read_config_text(path)
    except (OSError, UnicodeDecodeError, FileTooLarge):
        return ""


def _without_autologon(profile: Profile) -> Profile:
    return Profile(
        profile.name, profile.path, False, profile.services, profile.digest, profile.extra
    )


def diff(
    old: dict[str, Profile], new: dict[str, Profile]
) -> tuple[list[str], list[str], list[str]]:
    """Added, removed and changed profile names, by content."""
    added = sorted(set(new) - set(old))
    removed = sorted(set(old) - set(new))
    changed = sorted(n for n in set(old) & set(new) if old[n].digest != new[n].digest)
    return added, removed, changed


def names(profiles: Iterable[Profile]) -> list[str]:
    return sorted(p.name for p in profiles)
