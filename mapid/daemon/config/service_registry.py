"""Installed message services: the `mapid.services` entry-point group (docs/design.md 4).

`pip install` a package and its services appear. A profile may also name a service by its
Python path, `"package.module:Class"`, which is handy for services under development. A
service that cannot be found or loaded is not an error of the daemon: the sessions that use
it get a row saying why.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from mapid.providers.base import MessageService

log = logging.getLogger("mapid.services")

ENTRY_POINT_GROUP = "mapid.services"


class ServiceUnavailable(Exception):
    """A profile names a service that is not installed or does not load."""


@dataclass(frozen=True)
class AvailableService:
    name: str
    cls: type[MessageService]
    entry_point: str


def _check(obj: object, where: str) -> type[MessageService]:
    if not (isinstance(obj, type) and issubclass(obj, MessageService)):
        raise ServiceUnavailable(f"{where} is not a MessageService class")
    if not obj.providers:
        raise ServiceUnavailable(f"{where} declares no providers")
    return obj


class ServiceRegistry:
    def __init__(self) -> None:
        self._entry_points: dict[str, EntryPoint] = {}
        self._loaded: dict[str, type[MessageService]] = {}
        self.refresh()

    def refresh(self) -> None:
        """Re-read the installed entry points (new packages may have been installed)."""
        self._entry_points = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
        self._loaded.clear()

    def preload(self) -> None:
        """Load every installed service once (the broken ones are logged and skipped)."""
        for name in self._entry_points:
            with contextlib.suppress(ServiceUnavailable):
                self.get(name)

    def names(self) -> list[str]:
        return sorted(self._entry_points)

    def entry_point_name(self, name: str) -> str:
        ep = self._entry_points.get(name)
        return ep.value if ep is not None else name

    def get(self, name: str) -> type[MessageService]:
        """The service class; raise `ServiceUnavailable` with a reason a user can act on."""
        cached = self._loaded.get(name)
        if cached is not None:
            return cached
        ep = self._entry_points.get(name)
        if ep is not None:
            try:
                cls = _check(ep.load(), f"entry point {name} ({ep.value})")
            except ServiceUnavailable:
                raise
            except Exception as exc:
                log.warning("service %s failed to load: %r", name, exc)
                raise ServiceUnavailable(f"service {name!r} failed to load: {exc}") from exc
        elif ":" in name:
            module_name, _, attr = name.partition(":")
            try:
                obj = getattr(importlib.import_module(module_name), attr)
            except Exception as exc:
                raise ServiceUnavailable(f"service {name!r} failed to load: {exc}") from exc
            cls = _check(obj, name)
        else:
            raise ServiceUnavailable(
                f"service {name!r} is not installed (see `mapictl services available`)"
            )
        self._loaded[name] = cls
        return cls

    def available(self) -> list[AvailableService]:
        """Every installed service that loads; the broken ones are logged and left out."""
        found: list[AvailableService] = []
        for name in self.names():
            try:
                found.append(AvailableService(name, self.get(name), self.entry_point_name(name)))
            except ServiceUnavailable as exc:
                log.warning("%s", exc)
        return found
