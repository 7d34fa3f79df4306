"""The mail commands of `mapictl`: stores, folders, ls, show, send, resolve, identity, flush
and notify, and what they share.

- commands.py: the commands in the order `mapictl --help` lists them, and `register`,
  which adds them to the typer app (app.py calls it; re-exported here).
- reading.py: stores, folders, ls and show.
- sending.py: resolve, identity, send and flush.
- notify.py: notify, the event names it takes and the loop that prints notifications.
- common.py: the --store option, the command line's options, usage errors and remarks.
- session.py: one command's logon, and the stores, folders and messages it reaches.
- send.py: composing, submitting and following a message (SendRequest: send's options).
- format.py: how messages, headers, folder trees and notifications are shown.

May import: `mapid`'s shared modules, the client library (`mapid.client`, `mapid.mirror`)
and the other modules of `mapid.cli`. Never `mapid.daemon` or `mapid.providers`
(tests/test_layout.py checks).
"""

from mapid.cli.mail.commands import COMMANDS, register

__all__ = ["COMMANDS", "register"]
