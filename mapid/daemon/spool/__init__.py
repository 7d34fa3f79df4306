"""The MAPI spooler: sending what sessions submit (docs/design.md 7).

spooler.py runs each session's queue over its transports with retries and progress rows;
routing.py picks the transport of each message (by its sender, then the address type);
outgoing.py prepares a queued message for sending (headers, recipients); ndr.py writes the
non-delivery report when a send fails for good; stuck.py says when mail has waited in the
Outbox longer than `outbox_alert_s`; wakeup.py is the one-waiter flag the spooler's loop
waits on; pass_records.py the records of a pass (the message in hand, a backoff, a
sending period).

May import: `mapid`'s shared modules, `mapid.providers`, `system`, `config` and
`sessions`. Never the bus, the ops or the app (tests/test_layout.py).
"""
