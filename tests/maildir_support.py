"""A small real ProviderSupport for the Maildir provider tests (no daemon).

Copied from tests/test_providers_unit.py's Support and extended with what the Maildir store
uses: notifications recorded as they are raised, a real directory watch (watchdog's
inotify observer handing events to the loop, as the daemon's is), and spooler_notify.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from mapid.constants import NotificationEvent, SpoolerNotify

T = TypeVar("T")


class _Forward(FileSystemEventHandler):
    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[set[Path]], None]):
        self._loop = loop
        self._callback = callback

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        path = Path(str(event.src_path))
        self._loop.call_soon_threadsafe(self._callback, {path})


@dataclass
class Support:
    """ProviderSupport for one provider instance, over a config dict and a config dir."""

    settings: dict[str, Any]
    config_dir: Path
    profile_name: str = "test"
    service_key: str = "svc"
    service_uid: bytes = b"\x00" * 16
    provider_uid: bytes = b"\x01" * 16
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("mapid.test"))
    rows: list[tuple[dict[str, Any], bool]] = field(default_factory=list)
    uids: list[bytes] = field(default_factory=list)
    notes: list[tuple[NotificationEvent, dict[str, Any]]] = field(default_factory=list)
    spooler: list[SpoolerNotify] = field(default_factory=list)
    watched: list[Path] = field(default_factory=list)
    _observer: Any = None

    def config(self) -> Mapping[str, Any]:
        return self.settings

    def resolve_path(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.config_dir / path

    def modify_status_row(self, props: Mapping[str, Any], *, update: bool = True) -> None:
        self.rows.append((dict(props), update))

    def set_provider_uid(self, uid: bytes) -> None:
        self.uids.append(uid)

    def notify(
        self, event: NotificationEvent, *, entryid: bytes | None = None, **fields: Any
    ) -> int:
        self.notes.append((event, {"entryid": entryid, **fields}))
        return 1

    async def password(self) -> str | None:
        return None

    async def run_blocking(self, fn: Callable[..., T], /, *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    def watch_directory(
        self, path: Path, callback: Callable[[set[Path]], None]
    ) -> Callable[[], None]:
        if self._observer is None:
            self._observer = Observer()
            self._observer.start()
        handler = _Forward(asyncio.get_running_loop(), callback)
        watch = self._observer.schedule(handler, str(path), recursive=False)
        self.watched.append(path)

        def stop() -> None:
            self._observer.unschedule(watch)
            self.watched.remove(path)

        return stop

    def spooler_notify(self, flags: SpoolerNotify) -> None:
        self.spooler.append(flags)

    def close(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join()
            self._observer = None

    def events(self, event: NotificationEvent) -> list[dict[str, Any]]:
        return [fields for ev, fields in self.notes if ev == event]
