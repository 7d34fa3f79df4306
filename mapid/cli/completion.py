"""Shell completion of the names only the running daemon knows: profiles and services.

`mapictl --install-completion` (bash, zsh, fish) installs typer's completion script; each
TAB then runs mapictl with `_MAPICTL_COMPLETE` set, and these callbacks ask the local
daemon (the --runtime-dir given so far, else the usual one) with a short time-out. No
daemon, a slow one or any error completes nothing, quietly: a completion never prints an
error or waits long.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import typer

from mapid.client import Client

TIMEOUT = 0.5
"""Seconds a completion waits for the daemon."""


def _given(ctx: typer.Context, name: str) -> Any:
    """A parameter given so far on the command line, in this command or a group above it."""
    found: typer.Context | None = ctx
    while found is not None:
        value = found.params.get(name)
        if value is not None:
            return value
        found = found.parent  # type: ignore[assignment]
    return None


def _ask(ctx: typer.Context, question: Callable[[Client], Iterable[str]]) -> list[str]:
    runtime = _given(ctx, "runtime_dir")
    try:
        with Client(Path(runtime) if runtime else None, timeout=TIMEOUT, retries=0) as client:
            return sorted(set(question(client)))
    except Exception:  # no daemon, a time-out, an old daemon: complete nothing
        return []


def _starting(names: list[str], incomplete: str) -> list[str]:
    return [name for name in names if name.startswith(incomplete)]


def profile_names(ctx: typer.Context, incomplete: str) -> list[str]:
    """The daemon's profiles (profiles.table)."""

    def ask(client: Client) -> Iterable[str]:
        return (str(row["PR_DISPLAY_NAME"]) for row in client.profiles_table()["rows"])

    return _starting(_ask(ctx, ask), incomplete)


def service_keys(ctx: typer.Context, incomplete: str) -> list[str]:
    """The [services.KEY] keys of the profile given with --profile (services.table)."""
    profile = _given(ctx, "profile")
    if not profile:
        return []

    def ask(client: Client) -> Iterable[str]:
        rows = client.services_table(profile=str(profile))["rows"]
        return (row["PR_MAPID_SERVICE_KEY"] for row in rows if row.get("PR_MAPID_SERVICE_KEY"))

    return _starting(_ask(ctx, ask), incomplete)


def installed_services(ctx: typer.Context, incomplete: str) -> list[str]:
    """The message services installed in the daemon (services.available)."""

    def ask(client: Client) -> Iterable[str]:
        return (str(item["name"]) for item in client.services_available()["services"])

    return _starting(_ask(ctx, ask), incomplete)
