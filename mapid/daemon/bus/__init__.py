"""The bus: how clients reach the daemon (docs/protocol.md 1 to 3, 9, 10).

The request socket and its dispatch (server.py), the registry of operations and their
argument checks (registry.py), the reply cache that answers retried requests
(reply_cache.py), the event publisher and snapshots (publisher.py, snapshot.py), remote
TCP endpoints with CURVE and ZAP (curve.py), the private runtime directory and its
connection file (runtime_dir.py), and eager.py, which runs an op without a task until it
has to wait.

May import: `mapid`'s shared modules, `mapid.providers`, and the rooms below it
(`system`, `config`, `sessions`, `spool`). Never `ops` or the app (tests/test_layout.py).
"""
