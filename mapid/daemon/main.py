"""The `mapid` command: `mapid run` starts the daemon, `mapid check-config` checks files."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

import mapid
from mapid.daemon.app import Daemon, StartupError
from mapid.daemon.bus.curve import AUTHORIZED_DIR, read_authorized
from mapid.daemon.config.daemon_config import LOG_LEVELS, DaemonConfig, load_daemon_config
from mapid.daemon.config.profiles import read_profiles
from mapid.daemon.system import logs
from mapid.daemon.system import units as unit_text

log = logging.getLogger("mapid.daemon")

app = typer.Typer(
    help="The mapid daemon: MAPI sessions as a Linux service. Control it with `mapictl`.",
    invoke_without_command=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def main_group(ctx: typer.Context) -> None:
    """The mapid daemon: MAPI sessions as a Linux service. Control it with `mapictl`."""
    # No command is a usage error (2) whatever typer and click the machine has: their
    # no_args_is_help exited 0 before click 8.2 and 2 since.
    if ctx.invoked_subcommand is None and not ctx.resilient_parsing:
        typer.echo(ctx.get_help(), err=True)
        raise typer.Exit(2)


@app.command()
def run(
    system: Annotated[
        bool, typer.Option("--system", help="Run as the machine's daemon (/run/mapid, /etc/mapid).")
    ] = False,
    log_level: Annotated[
        str | None,
        typer.Option(
            "--log-level",
            metavar="LEVEL",
            help=f"One of {', '.join(LOG_LEVELS)}; overrides log_level.",
        ),
    ] = None,
) -> None:
    """Start the daemon in the foreground (systemd runs it this way).

    With no configuration at all it writes the embedded default profile (a Maildir and a
    vCard folder under $XDG_DATA_HOME/mapid/) and logs it on. SIGTERM or SIGINT stop it
    cleanly, SIGHUP re-reads the configuration.
    """
    if log_level is not None and log_level.lower() not in LOG_LEVELS:
        raise typer.BadParameter(f"use one of {', '.join(LOG_LEVELS)}", param_hint="--log-level")
    logs.setup(log_level or "info")
    daemon = Daemon(DaemonConfig.defaults(system))
    daemon.log_level_fixed = log_level is not None
    try:
        daemon.check_can_start()  # before load_initial_config, which may write a profile
        daemon.load_initial_config()
        logs.setup(log_level or daemon.config.log_level)
        _serve(daemon)
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        raise typer.Exit(1) from None


EXECUTOR_GRACE = 0.25
"""Seconds worker threads get at exit. One blocked on a silent server (smtplib waits out its
own time-out) is left behind: the stop must end within the unit's TimeoutStopSec, and the
message it was sending is still queued."""


def _serve(daemon: Daemon) -> None:
    """asyncio.run(daemon.run()), but the exit does not wait for worker threads stuck in I/O.

    asyncio.run joins the default executor's threads without a time-out, and so would the
    interpreter at exit; a stop must instead end within TimeoutStopSec.
    """
    executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="mapid-io")
    loop = asyncio.new_event_loop()
    loop.set_default_executor(executor)
    asyncio.set_event_loop(loop)
    clean = False
    try:
        loop.run_until_complete(daemon.run())
        clean = True
    finally:
        try:
            # After a clean stop, the sessions' own tasks (spoolers, watches) of sessions
            # dropped at the deadline are left to the exit: cancelling 200 000 of them
            # took seconds. After a failure, they get their cancellation as usual.
            pending = set() if clean else asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:  # a task may wait, shielded, for a thread blocked in I/O
                loop.run_until_complete(asyncio.wait(pending, timeout=EXECUTOR_GRACE))
            if not clean:
                loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
            asyncio.set_event_loop(None)
            if not clean:
                loop.close()
    deadline = time.monotonic() + EXECUTOR_GRACE
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [t for t in threading.enumerate() if t.is_alive() and not t.daemon]
    if len(stuck) > 1:  # more than the main thread
        # Python would join them at exit; everything of ours is closed and on disk.
        log.warning("exiting without %d worker thread(s) still blocked in I/O", len(stuck) - 1)
    # Everything of ours is closed and on disk. The interpreter's own teardown would free
    # every object one by one (seconds with 100 000 sessions) and join stuck threads.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@app.command("check-config")
def check_config(
    path: Annotated[
        Path | None,
        typer.Argument(help="A configuration directory (default: the daemon's)."),
    ] = None,
    system: Annotated[bool, typer.Option("--system", help="Check /etc/mapid.")] = False,
) -> None:
    """Check mapid.toml and every profile without starting anything (like `nginx -t`).

    Prints each problem as FILE:LINE: MESSAGE and exits 1 when there is any.
    """
    base = DaemonConfig.defaults(system)
    if path is not None:
        base = replace(base, config_dir=path)
    config, problems = load_daemon_config(base)
    profiles, profile_problems = read_profiles(config.profiles_dir)
    problems += profile_problems
    if config.remote is not None:  # the CURVE allow-list, as a reload would read it
        problems += read_authorized(config.config_dir / AUTHORIZED_DIR)[1]
    for problem in problems:
        typer.echo(str(problem), err=True)
    typer.echo(
        f"{config.config_dir}: {len(profiles)} profile(s) loaded, {len(problems)} problem(s)"
    )
    raise typer.Exit(1 if problems else 0)


@app.command()
def units(
    user: Annotated[bool, typer.Option("--user", help="The user unit (the default).")] = False,
    system: Annotated[bool, typer.Option("--system", help="The machine's system unit.")] = False,
) -> None:
    """Print the systemd unit for this install, with the real path of `mapid`.

    mapid units --user > ~/.config/systemd/user/mapid.service, then
    systemctl --user enable --now mapid. For the system unit see docs/admin.md.
    """
    if user and system:
        raise typer.BadParameter("give --user or --system, not both")
    try:
        programs = unit_text.installed_programs()
        if system:
            programs = unit_text.system_programs(programs)
    except unit_text.UnitError as exc:
        typer.echo(f"mapid units: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(unit_text.render(system, programs), nl=False)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(mapid.__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
