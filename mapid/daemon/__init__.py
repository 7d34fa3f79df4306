"""The daemon: the service that owns MAPI sessions (docs/design.md 2 to 9).

Its rooms, lowest first; each imports only rooms below it:

- `system/`: systemd notification, units, logs, memory;
- `config/`: mapid.toml, profile files and their edits, the watcher;
- `sessions/`: sessions, logon, status tables, handles, the address book;
- `spool/`: the spooler, outgoing messages, NDRs;
- `bus/`: the request and event sockets, the op registry, CURVE, the runtime directory;
- `ops/`: the operations, thin adapters from the wire to the rooms below.

On top, `app.py` wires the rooms into one `Daemon` and `main.py` is the `mapid` command.
docs/architecture.md walks through them.

May import: `mapid` (the shared modules) and `mapid.providers` (the provider API and the
built-in services). Nothing outside the daemon imports it but `mapid.__main__`
(tests/test_layout.py checks).
"""
