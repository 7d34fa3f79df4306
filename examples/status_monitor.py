"""A status monitor: every session's status table, then each change as it happens.

    python examples/status_monitor.py             # follow until Ctrl-C
    python examples/status_monitor.py --once      # print the tables and stop
    python examples/status_monitor.py --count 5   # stop after five changes

It finds the daemon as mapictl does ($MAPID_RUNTIME_DIR, else the user's runtime directory)
and keeps a live copy of the tables with `mapid.StatusMirror`, which follows the clone
recipe of docs/protocol.md 7.3 (subscribe, snapshot, apply events, re-snapshot on a gap).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from mapid import MapidError, StatusMirror
from mapid.constants import ResourceType, StatusCode

SHOWN = ("TABLE_ROW_ADDED", "TABLE_ROW_MODIFIED", "TABLE_ROW_DELETED", "logon", "logoff")


def show(mark: str, profile: str, row: dict[str, Any]) -> None:
    """One status row: its profile, name, resource type, status bits and status string."""
    kind = ResourceType(row["PR_RESOURCE_TYPE"]).name
    status = StatusCode(row["PR_STATUS_CODE"]).name or "-"
    name, text = row["PR_DISPLAY_NAME"], row.get("PR_STATUS_STRING", "")
    print(f"{mark} {profile:<8} {name:<18} {kind:<22} {status:<17} {text}".rstrip(), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description="Print the status tables and their changes.")
    parser.add_argument("--once", action="store_true", help="print the tables, then stop")
    parser.add_argument("--count", type=int, metavar="N", help="stop after N changes")
    args = parser.parse_args()
    changes = 0

    def on_event(topic: str, event: dict[str, Any]) -> None:
        """Called by the mirror for every event it applied (docs/protocol.md 7.1)."""
        nonlocal changes
        kind = event["type"]
        if changes == args.count or kind not in SHOWN:
            return
        changes += 1
        info = event.get("info") or mirror.sessions.get(event["session"], {})
        profile = info.get("profile", "?")
        if kind in ("logon", "logoff"):
            print(f"{kind} {profile} {event['session']}", flush=True)
        elif kind == "TABLE_ROW_DELETED":
            print(f"- {profile:<8} row {event['instance_key'].hex()}", flush=True)
        else:
            show("+" if kind == "TABLE_ROW_ADDED" else "~", profile, event["row"])

    try:
        with StatusMirror(on_event=on_event) as mirror:  # the status tables, kept current
            mirror.start()  # wait for the first heartbeat, then take the snapshot
            for session_id, info in mirror.sessions.items():
                for row in mirror.state.rows(session_id):
                    show(" ", info["profile"], row)
            print(f"-- {len(mirror.sessions)} session(s); following changes", flush=True)
            while not args.once and (args.count is None or changes < args.count):
                mirror.poll(0.5)  # apply what arrived (on_event for each), re-sync on a gap
    except MapidError as exc:  # no daemon running, or it stopped answering
        print(f"status_monitor: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
