"""The operations the daemon serves; importing this package registers them all."""

from mapid.daemon.ops import daemon_ops, object_ops, profile_ops, service_ops, session_ops

__all__ = ["daemon_ops", "object_ops", "profile_ops", "service_ops", "session_ops"]
