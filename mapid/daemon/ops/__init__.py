"""The operations the daemon serves (docs/protocol.md 4 to 8); importing this package registers
them all.

Each module is one section of the protocol: thin adapters that check nothing the registry
already checked, find the session or object, and call the room below that does the work.
common.py holds what they share about the wire (the request's session, member, handle and
table, and the reply for a new handle); no op module imports another.

May import: `mapid`'s shared modules, `mapid.providers` and every room of the daemon but
the app (tests/test_layout.py).
"""

from mapid.daemon.ops import (
    ab_ops,
    container_ops,
    daemon_ops,
    object_ops,
    profile_ops,
    service_ops,
    session_ops,
    store_ops,
)

__all__ = [
    "ab_ops",
    "container_ops",
    "daemon_ops",
    "object_ops",
    "profile_ops",
    "service_ops",
    "session_ops",
    "store_ops",
]
