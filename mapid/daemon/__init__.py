"""The daemon: the service that owns MAPI sessions (DESIGN.md 2 to 9).

It holds the request and event sockets (server.py, publisher), the sessions and their
logons (session.py, session_manager.py, logon.py), status tables, profiles and their
reload (profiles.py, watcher.py, config_writer.py), the spooler, systemd and CURVE support;
`ops/` holds the operations it serves.

May import: `mapid` (the shared modules: constants, proptags, errors, codec, envelope,
entryid, paths) and `mapid.providers` (the provider API and the built-in services). Nothing
outside the daemon imports it but `mapid.__main__` (tests/test_layout.py checks).
"""
