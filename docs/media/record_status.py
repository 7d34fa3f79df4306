"""Make docs/media/status-watch.svg, the README's first picture, from a real run.

Two IMAP accounts in one profile, each on a Dovecot of its own (tests/dovecot_server.py),
and a real daemon (bench/_daemon.py). The picture is what `mapictl status --watch` draws
(mapid.cli.watch: the same Watch and renderable), recorded by rich: once with both
accounts online, and once a moment after the "Home" server went away. Needs root and
Debian's dovecot-imapd, as the tests do.

    python docs/media/record_status.py [--out docs/media/status-watch.svg]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "tests")]

from _daemon import BenchDaemon  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.rule import Rule  # noqa: E402

from mapid.cli.watch import Watch, renderable  # noqa: E402
from mapid.constants import StatusCode  # noqa: E402

import dovecot_server as dc  # noqa: E402

OFFLINE = int(StatusCode.STATUS_OFFLINE)
WIDTH = 104


def account(name: str, display: str, server: dc.DovecotServer, primary: bool) -> str:
    return "\n".join(
        [
            f"[services.{name}]",
            'service = "imap"',
            f'display_name = "{display}"',
            'host = "127.0.0.1"',
            f"port = {server.port}",
            'security = "none"',
            f'username = "{dc.IMAP_USER}"',
            f'password_command = ["printf", "%s", "{dc.IMAP_PASSWORD}"]',
            f"primary_store = {'true' if primary else 'false'}",
            "timeout = 5",
            "",
        ]
    )


def wait(check: Callable[[], bool], watch: Watch, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"record_status: no {what} within {timeout} s")
        watch.step()


def imap_rows(watch: Watch) -> list[Mapping[str, Any]]:
    """The IMAP rows of every session, as the watch's mirror holds them."""
    if watch.mirror is None:
        return []
    state = watch.mirror.state
    rows = [r for sid in state.sessions for r in state.rows(sid)]
    return [r for r in rows if r.get("PR_PROVIDER_DLL_NAME") == "imap"]


def offline(row: Mapping[str, Any]) -> bool:
    return bool(int(row["PR_STATUS_CODE"]) & OFFLINE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("status-watch.svg"))
    args = parser.parse_args()
    exe, version = dc.find_dovecot()
    dc.mail_user()
    root = Path(tempfile.mkdtemp(prefix="mapid-svg-", dir="/tmp"))
    os.chmod(root, 0o711)
    servers: list[dc.DovecotServer] = []
    try:
        for name in ("work", "home"):
            server = dc.start_dovecot(root / name, root / f"{name}-mail", exe=exe, version=version)
            servers.append(server)
            imap = server.imapclient()
            for i in range(3 if name == "work" else 2):
                imap.append("INBOX", f"Subject: {name} {i}\r\n\r\nHello.\r\n".encode())
        daemon = BenchDaemon()
        (daemon.config_dir / "profiles" / "ada.toml").write_text(
            "autologon = false\n\n"
            + account("work", "Work", servers[0], True)
            + "\n"
            + account("home", "Home", servers[1], False)
        )
        with daemon:
            client = daemon.client(timeout=30)
            client.session_logon("ada", ["MAPI_NEW_SESSION"])
            watch = Watch(daemon.runtime, 5.0)
            watch.start(5.0)
            console = Console(
                record=True,
                file=io.StringIO(),  # recorded only
                width=WIDTH,
                force_terminal=True,
                color_system="truecolor",
            )
            wait(
                lambda: len(imap_rows(watch)) == 2 and not any(map(offline, imap_rows(watch))),
                watch,
                "two online accounts",
            )
            console.print(renderable(watch))
            servers[1].stop()
            wait(
                lambda: any(map(offline, imap_rows(watch))),
                watch,
                "offline row",
            )
            console.print(Rule("the Home server goes away: its row turns offline at once"))
            console.print(renderable(watch))
            watch.close()
            client.close()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        text = console.export_text(clear=False)
        console.save_svg(str(args.out), title="mapictl status --watch")
        print(text)
        print(f"record_status: wrote {args.out} ({args.out.stat().st_size} bytes)")
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
