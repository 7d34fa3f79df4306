"""Profile administration (IProfAdmin, docs/protocol.md 6.2): create, delete, copy, rename, default.

Every change is a file change (docs/design.md 8): the op writes the file, then the daemon reloads
as it would after a hand edit. Deleting or renaming a profile that live sessions use is
deferred as MAPI does: hidden (or renamed) at once for new logons and tables, while the file
stays until the last session on it ends. Pending changes are kept in the state directory so
that a restart carries them out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import tomlkit

from mapid.atomic_files import atomic_delete, atomic_rename, write_atomic
from mapid.daemon.config.profiles import Profile, check_profile_name
from mapid.daemon.config.writer import (
    edit_toml,
    remove_key,
    set_value,
    write_new_toml,
)
from mapid.errors import ErrorCode, MapiError

log = logging.getLogger("mapid.profiles")

PENDING_FILE = "pending.json"


@dataclass
class Pending:
    """Deferred deletions and renames, by file stem."""

    delete: set[str] = field(default_factory=set)
    rename: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, state_dir: Path) -> Pending:
        try:
            data = json.loads((state_dir / PENDING_FILE).read_text(encoding="utf-8"))
            return cls(set(data.get("delete", [])), dict(data.get("rename", {})))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.error("ignoring unreadable %s: %s", state_dir / PENDING_FILE, exc)
            return cls()

    def save(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = {"delete": sorted(self.delete), "rename": self.rename}
        write_atomic(state_dir / PENDING_FILE, json.dumps(data).encode("utf-8"))

    def __bool__(self) -> bool:
        return bool(self.delete or self.rename)


Reload = Callable[[str], Awaitable[Any]]


class ProfileAdmin:
    def __init__(
        self,
        profiles_dir: Path,
        config_file: Path,
        state_dir: Path,
        in_use: Callable[[Path], bool],
        reload: Reload,
    ) -> None:
        self.profiles_dir = profiles_dir
        self.config_file = config_file
        self.state_dir = state_dir
        self.in_use = in_use
        self.reload = reload
        self.pending = Pending.load(state_dir)

    # -- the view new logons and tables see ------------------------------------------------
    def visible(self, files: dict[str, Profile]) -> dict[str, Profile]:
        """Profiles by name as clients see them: pending deletions hidden, renames applied."""
        shown: dict[str, Profile] = {}
        for stem, profile in files.items():
            if stem in self.pending.delete:
                continue
            name = self.pending.rename.get(stem, stem)
            shown[name] = profile if name == stem else replace(profile, name=name)
        return shown

    def _path(self, name: str) -> Path:
        return self.profiles_dir / f"{name}.toml"

    def _stem_of(self, name: str, visible: dict[str, Profile]) -> str:
        profile = visible.get(name)
        if profile is None:
            raise MapiError(
                ErrorCode.MAPI_E_NOT_FOUND, f"no profile {name!r}", details={"profile": name}
            )
        return profile.path.stem

    def _check_free(self, name: str, visible: dict[str, Profile]) -> None:
        check_profile_name(name)
        taken = name in visible or self._path(name).exists() or name in self.pending.rename.values()
        if taken:
            raise MapiError(
                ErrorCode.MAPI_E_NO_ACCESS,
                f"a profile named {name!r} exists",
                details={"profile": name},
            )

    # -- the ops ---------------------------------------------------------------------------
    async def create(self, name: str, visible: dict[str, Profile]) -> None:
        self._check_free(name, visible)
        self.profiles_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        doc = tomlkit.document()
        doc.add(tomlkit.comment(f"Profile {name}, created by mapid. Add [services.<key>] tables."))
        doc.add("autologon", False)
        await asyncio.to_thread(write_new_toml, self._path(name), doc)
        await self.reload("profiles.create")

    async def copy(self, name: str, new_name: str, visible: dict[str, Profile]) -> None:
        source = self._path(self._stem_of(name, visible))
        self._check_free(new_name, visible)
        doc = tomlkit.parse(source.read_text(encoding="utf-8"))
        if "autologon" in doc:
            doc["autologon"] = False  # at most one profile logs on at start
        mode = source.stat().st_mode & 0o777
        await asyncio.to_thread(write_new_toml, self._path(new_name), doc, mode=mode)
        await self.reload("profiles.copy")

    async def delete(self, name: str, visible: dict[str, Profile], default: str | None) -> None:
        stem = self._stem_of(name, visible)
        self.pending.delete.add(stem)
        self.pending.rename.pop(stem, None)
        self.pending.save(self.state_dir)
        if default == name:
            await self.set_default(None, visible, reload=False)
        self.finish()
        await self.reload("profiles.delete")

    async def rename(
        self, name: str, new_name: str, visible: dict[str, Profile], default: str | None
    ) -> None:
        stem = self._stem_of(name, visible)
        self._check_free(new_name, visible)
        if new_name == stem:
            self.pending.rename.pop(stem, None)
        else:
            self.pending.rename[stem] = new_name
        self.pending.save(self.state_dir)
        if default == name:
            await self.set_default(new_name, {**visible, new_name: visible[name]}, reload=False)
        self.finish()
        await self.reload("profiles.rename")

    async def set_default(
        self, name: str | None, visible: dict[str, Profile], *, reload: bool = True
    ) -> None:
        if name is not None and name not in visible:
            raise MapiError(
                ErrorCode.MAPI_E_NOT_FOUND, f"no profile {name!r}", details={"profile": name}
            )

        def change(doc: tomlkit.TOMLDocument) -> None:
            if name is None:
                remove_key(doc, ["default_profile"])
            else:
                set_value(doc, ["default_profile"], name)

        await asyncio.to_thread(edit_toml, self.config_file, change, create=True)
        if reload:
            await self.reload("profiles.set_default")

    # -- carrying out what was deferred ----------------------------------------------------
    def finish(self) -> bool:
        """Carry out the pending changes whose profile no session uses; True if any."""
        done = False
        for stem in sorted(self.pending.delete):
            path = self._path(stem)
            if self.in_use(path):
                continue
            with contextlib.suppress(FileNotFoundError):  # already gone by hand
                atomic_delete(path)
            self.pending.delete.discard(stem)
            log.info("profile %s deleted (its last session ended)", stem)
            done = True
        for stem, new_name in sorted(self.pending.rename.items()):
            path = self._path(stem)
            if self.in_use(path):
                continue
            try:
                atomic_rename(path, self._path(new_name))
            except FileNotFoundError:
                pass
            except FileExistsError:
                log.error("cannot rename profile %s to %s: the file exists", stem, new_name)
                continue
            del self.pending.rename[stem]
            log.info("profile %s renamed to %s (its last session ended)", stem, new_name)
            done = True
        if done:
            self.pending.save(self.state_dir)
        return done
