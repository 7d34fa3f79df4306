"""`mapictl`: a client of the daemon that speaks only the protocol (docs/protocol.md).

app.py is the typer application; each command group has its module (admin.py,
contacts.py, keys.py, events.py, watch.py) or, for the mail commands, its package (mail/:
reading, sending, notify, with the logon in mail/session.py), with output.py and tables.py
for what people read and exits.py for the exit codes scripts rely on. completion.py
completes profile and service names from the daemon; manpages.py writes mapid(1) and
mapictl(1) from the typer apps at install time.

May import: `mapid`'s shared modules and the client library (`mapid.client`,
`mapid.mirror`). Never `mapid.daemon` or `mapid.providers` (tests/test_layout.py checks).
"""
