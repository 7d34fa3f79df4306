"""Follow new mail: print a line for each message that arrives in the Inbox.

    python examples/new_mail.py               # the default profile, until Ctrl-C
    python examples/new_mail.py work          # the profile called "work"
    python examples/new_mail.py --count 1     # stop after the first new message

It logs on, finds the Inbox (as examples/list_inbox.py does) and registers for
`fnevNewMail` there with `session.advise`. Notifications are private to the session: they
arrive on the client's own request socket (docs/protocol.md 7.4), and
`Client.recv_notification` hands them out. Mail that an MTA, fetchmail or getmail drops
into the Maildir's new/ raises one each; mail that arrives already read does not.
"""

from __future__ import annotations

import argparse
import sys
import time

from list_inbox import find_inbox  # examples/list_inbox.py, beside this file

from mapid import Client, MapidError

LEASE_S = 60.0
"""A member that says nothing for this long is logged off (docs/protocol.md 8): renew."""


def main() -> int:
    parser = argparse.ArgumentParser(description="Print each new message of the Inbox.")
    parser.add_argument("profile", nargs="?", help="the profile (default: the default profile)")
    parser.add_argument("--count", type=int, metavar="N", help="stop after N new messages")
    args = parser.parse_args()
    try:
        with Client() as client:
            flags = [] if args.profile else ["MAPI_USE_DEFAULT"]
            logon = client.session_logon(args.profile, flags, lease_s=LEASE_S)
            token = logon["token"]
            advise = client.session_advise(token, ["fnevNewMail"], find_inbox(client, token))
            print(f"{logon['profile']}: waiting for new mail in the Inbox", flush=True)
            seen = 0
            while args.count is None or seen < args.count:
                note = client.recv_notification(timeout=LEASE_S / 3)
                client.session_renew(token)  # any call renews the lease; this one says so
                if note is None or note["event"] != "fnevNewMail":
                    continue
                seen += 1
                message = client.session_open_entry(token, note["entryid"])
                props = message["props"]
                client.object_release(token, message["handle"])
                sender, subject = props.get("PR_SENDER_NAME", "?"), props.get("PR_SUBJECT", "")
                print(f"{time.strftime('%H:%M:%S')}  {sender}: {subject}", flush=True)
            client.session_unadvise(token, advise["connection"])
            client.session_logoff(token)
    except MapidError as exc:
        print(f"new_mail: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
