"""Log on to a profile, open its Inbox and list it: date, read flag, sender and subject.

    python examples/list_inbox.py              # the default profile
    python examples/list_inbox.py work         # the profile called "work"
    python examples/list_inbox.py --limit 5    # only the five newest messages

Each step is one operation of docs/protocol.md 6: `session.logon`, the default store from
`session.msg_stores_table`, `session.open_msg_store`, the IPM subtree (the folders a mail
reader shows) from the store's `PR_IPM_SUBTREE_ENTRYID`, the folder called "Inbox" in its
`container.hierarchy_table`, and the Inbox's `container.contents_table`, newest first.
"""

from __future__ import annotations

import argparse
import sys

from mapid import Client, MapidError
from mapid.constants import MessageFlags

COLUMNS = ["PR_MESSAGE_DELIVERY_TIME", "PR_MESSAGE_FLAGS", "PR_SENDER_NAME", "PR_SUBJECT"]


def find_inbox(client: Client, token: bytes) -> bytes:
    """The entry ID of the default store's Inbox (handles are released again)."""
    stores = client.session_msg_stores_table(token, {"columns": ["PR_ENTRYID", "PR_DEFAULT_STORE"]})
    store_id = next(row["PR_ENTRYID"] for row in stores["rows"] if row.get("PR_DEFAULT_STORE"))
    store = client.session_open_msg_store(token, store_id)
    subtree = client.session_open_entry(token, store["props"]["PR_IPM_SUBTREE_ENTRYID"])
    inbox = {"content": "PR_DISPLAY_NAME", "value": "Inbox", "match": "full"}
    folders = client.container_hierarchy_table(
        token, subtree["handle"], {"columns": ["PR_ENTRYID"], "restriction": inbox}
    )
    client.object_release(token, subtree["handle"])
    client.object_release(token, store["handle"])
    return bytes(folders["rows"][0]["PR_ENTRYID"])


def main() -> int:
    parser = argparse.ArgumentParser(description="List the Inbox of a profile.")
    parser.add_argument("profile", nargs="?", help="the profile (default: the default profile)")
    parser.add_argument("--limit", type=int, default=20, metavar="N", help="at most N messages")
    args = parser.parse_args()
    try:
        with Client() as client:  # finds the daemon as mapictl does
            # No profile named: MAPI_USE_DEFAULT, the default profile. Either way a running
            # shared session (the autologon profile's) is joined, as MAPI's logon does.
            flags = [] if args.profile else ["MAPI_USE_DEFAULT"]
            logon = client.session_logon(args.profile, flags)
            token = logon["token"]  # every session op carries it
            inbox = client.session_open_entry(token, find_inbox(client, token))
            table = client.container_contents_table(
                token,
                inbox["handle"],
                {
                    "columns": COLUMNS,
                    "sort": [["PR_MESSAGE_DELIVERY_TIME", "desc"]],
                    "limit": args.limit,
                },
            )
            print(f"{logon['profile']}: Inbox, {table['total']} message(s)")
            for row in table["rows"]:
                arrived = row.get("PR_MESSAGE_DELIVERY_TIME")  # a datetime, in UTC
                when = arrived.astimezone().strftime("%Y-%m-%d %H:%M") if arrived else "-"
                read = "read" if row["PR_MESSAGE_FLAGS"] & MessageFlags.MSGFLAG_READ else "NEW "
                sender = row.get("PR_SENDER_NAME", "?")
                print(f"{when}  {read}  {sender:<20.20}  {row.get('PR_SUBJECT', '')}")
            client.object_release(token, inbox["handle"])
            client.session_logoff(token)
    except MapidError as exc:  # no daemon, no such profile, no store ...
        print(f"list_inbox: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
