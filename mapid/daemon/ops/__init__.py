"""The operations the daemon serves; importing this package registers them all."""

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
