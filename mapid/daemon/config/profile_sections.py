"""Profile sections (IProfSect, docs/mapi.md 2 and 3.1; docs/protocol.md 6.4).

A service's section, opened by its PR_SERVICE_UID (or a provider's PR_PROVIDER_UID), is that
service's configuration: its keys are the section's properties, next to the MAPI ones
(PR_SERVICE_UID, PR_SERVICE_NAME, PR_DISPLAY_NAME, PR_PROFILE_NAME). Any other MAPIUID opened
with MAPI_MODIFY creates a section of its own, kept in the profile file as
`[sections.<uid hex>]`. Sections have no transactions: a write lands in the file at once and
is reloaded like a hand edit. Many readers or one writer, across all sessions.

A section reads its file itself, so what was just written is what the next read sees; the
reload that applies it to sessions runs as its own task, since the op that wrote holds the
session's lock that the reload must take to update that very session.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomlkit

from mapid.constants import ObjectType
from mapid.daemon.config.credentials import SECRET_KEYS, mask
from mapid.daemon.config.daemon_config import FileTooLarge, read_config_text
from mapid.daemon.config.profiles import Profile, ServiceSection, parse_profile, provider_uid
from mapid.daemon.config.service_registry import ServiceRegistry, ServiceUnavailable
from mapid.daemon.config.writer import edit_toml, remove_key, replace_service_config, set_value
from mapid.errors import ErrorCode, MapiError
from mapid.providers.base import MapiObject, pick_props

SECTIONS_KEY = "sections"
_MAPI_PROPS = ("PR_SERVICE_UID", "PR_SERVICE_NAME", "PR_DISPLAY_NAME", "PR_PROFILE_NAME")

Reload = Callable[[str], Awaitable[Any]]


def current_profile(path: Path) -> Profile | None:
    """The profile as its file says now (None when it is gone or does not parse)."""
    try:
        text = read_config_text(path)
    except (OSError, UnicodeDecodeError, FileTooLarge):
        return None
    profile, _problems = parse_profile(path, text)
    return profile


def _reload_soon(reload: Reload, why: str) -> None:
    task: asyncio.Future[Any] = asyncio.ensure_future(reload(why))
    _PENDING.add(task)
    task.add_done_callback(_PENDING.discard)


_PENDING: set[asyncio.Future[Any]] = set()


@dataclass
class _Lock:
    readers: int = 0
    writer: bool = False


class SectionLocks:
    """Many readers or one writer per section, daemon-wide (MAPI's rule)."""

    def __init__(self) -> None:
        self._locks: dict[tuple[Path, bytes], _Lock] = {}

    def acquire(self, key: tuple[Path, bytes], write: bool) -> None:
        lock = self._locks.setdefault(key, _Lock())
        if lock.writer or (write and lock.readers):
            what = "open for writing" if lock.writer else "open"
            raise MapiError(ErrorCode.MAPI_E_NO_ACCESS, f"the section is {what} elsewhere")
        if write:
            lock.writer = True
        else:
            lock.readers += 1

    def release(self, key: tuple[Path, bytes], write: bool) -> None:
        lock = self._locks.get(key)
        if lock is None:
            return
        if write:
            lock.writer = False
        else:
            lock.readers = max(0, lock.readers - 1)
        if not lock.writer and not lock.readers:
            del self._locks[key]


def find_service(profile: Profile, uid: bytes) -> ServiceSection | None:
    """The service a section UID names: its own PR_SERVICE_UID or a provider's UID."""
    for section in profile.services:
        if section.uid == uid:
            return section
    return None


class ProfileSection(MapiObject):
    object_type = ObjectType.MAPI_PROFSECT

    def __init__(
        self,
        path: Path,
        uid: bytes,
        writable: bool,
        *,
        registry: ServiceRegistry,
        locks: SectionLocks,
        reload: Reload,
    ) -> None:
        self.path = path
        self.uid = uid
        self.writable = writable
        self._registry = registry
        self._locks = locks
        self._reload = reload
        self._released = False

    def _profile(self) -> Profile:
        profile = current_profile(self.path)
        if profile is None:
            raise MapiError(ErrorCode.MAPI_E_INVALID_OBJECT, "the profile of this section is gone")
        return profile

    def _service(self, profile: Profile) -> ServiceSection | None:
        return find_service(profile, self.uid)

    async def get_props(self, tags: list[str] | None) -> dict[str, Any]:
        profile = self._profile()
        section = self._service(profile)
        props: dict[str, Any] = {"PR_PROFILE_NAME": profile.name}
        if section is not None:
            secret = set(SECRET_KEYS)
            with contextlib.suppress(ServiceUnavailable):
                secret |= self._registry.get(section.service).secret_keys
            props.update(mask(section.config, frozenset(secret)))
            props["PR_SERVICE_UID"] = section.uid
            props["PR_SERVICE_NAME"] = section.service
            props["PR_DISPLAY_NAME"] = section.config.get("display_name") or section.key
        else:
            own = (profile.extra.get(SECTIONS_KEY) or {}).get(self.uid.hex()) or {}
            props.update(own)
        return pick_props(props, tags)

    def _check_writable(self) -> None:
        if not self.writable:
            raise MapiError(ErrorCode.MAPI_E_NO_ACCESS, "opened without MAPI_MODIFY")

    async def set_props(self, props: Mapping[str, Any]) -> dict[str, str]:
        self._check_writable()
        problems = {k: ErrorCode.MAPI_E_COMPUTED.name for k in props if k in _MAPI_PROPS}
        changes = {k: v for k, v in props.items() if k not in _MAPI_PROPS}
        await self._write(changes, [])
        return problems

    async def delete_props(self, tags: list[str]) -> dict[str, str]:
        self._check_writable()
        problems = {k: ErrorCode.MAPI_E_COMPUTED.name for k in tags if k in _MAPI_PROPS}
        await self._write({}, [t for t in tags if t not in _MAPI_PROPS])
        return problems

    async def _write(self, changes: Mapping[str, Any], removed: list[str]) -> None:
        if not changes and not removed:
            return
        profile = self._profile()
        section = self._service(profile)
        if section is not None:
            config = {k: v for k, v in {**section.config, **changes}.items() if k not in removed}
            try:
                problems = self._registry.get(section.service).check_config(config)
            except ServiceUnavailable:
                problems = []
            if problems:
                raise MapiError(
                    ErrorCode.MAPI_E_INVALID_PARAMETER,
                    "; ".join(f"{p.key}: {p.message}" for p in problems),
                    details={"errors": [{"key": p.key, "message": p.message} for p in problems]},
                )
            await asyncio.to_thread(
                edit_toml, self.path, lambda doc: replace_service_config(doc, section.key, config)
            )
        else:
            where = [SECTIONS_KEY, self.uid.hex()]

            def change(doc: tomlkit.TOMLDocument) -> None:
                for key, value in changes.items():
                    set_value(doc, [*where, key], value)
                for key in removed:
                    remove_key(doc, [*where, key])

            await asyncio.to_thread(edit_toml, self.path, change)
        _reload_soon(self._reload, "profile section")

    async def release(self) -> None:
        if not self._released:
            self._released = True
            self._locks.release((self.path, self.uid), self.writable)


async def open_section(
    profile: Profile,
    uid: bytes,
    modify: bool,
    *,
    registry: ServiceRegistry,
    locks: SectionLocks,
    reload: Reload,
) -> ProfileSection:
    """MAPI's open: MAPI_MODIFY on an unknown UID creates the section; read-only is NOT_FOUND."""
    if len(uid) != 16:
        raise MapiError(ErrorCode.MAPI_E_INVALID_PARAMETER, "a section UID is a 16-byte MAPIUID")
    target = uid
    for section in profile.services:  # a provider's UID opens its service's section
        try:
            cls = registry.get(section.service)
        except ServiceUnavailable:
            continue
        if any(provider_uid(profile.path.stem, section.key, p.name) == uid for p in cls.providers):
            target = section.uid
    known = find_service(profile, target) is not None or target.hex() in (
        profile.extra.get(SECTIONS_KEY) or {}
    )
    if not known and not modify:
        raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, "no profile section with that UID")
    locks.acquire((profile.path, target), modify)
    if not known:
        try:
            await asyncio.to_thread(
                edit_toml,
                profile.path,
                lambda doc: set_value(doc, [SECTIONS_KEY, target.hex()], {}),
            )
            _reload_soon(reload, "profile section")
        except BaseException:
            locks.release((profile.path, target), modify)
            raise
    return ProfileSection(
        profile.path,
        target,
        modify,
        registry=registry,
        locks=locks,
        reload=reload,
    )
