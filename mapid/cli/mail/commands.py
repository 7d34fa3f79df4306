"""The mail commands, in the order `mapictl --help` lists them, and their registration."""

from __future__ import annotations

import typer

from mapid.cli.mail.notify import notify
from mapid.cli.mail.reading import folders, ls, show, stores
from mapid.cli.mail.sending import flush, identity, resolve, send

COMMANDS = (stores, folders, ls, show, send, resolve, identity, flush, notify)


def register(app: typer.Typer) -> None:
    """Add the mail commands to mapictl."""
    for command in COMMANDS:
        app.command(command.__name__)(command)


__all__ = ["COMMANDS", "register"]
