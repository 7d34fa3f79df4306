"""Network rules every service that logs on to a server shares.

The one rule so far is where credentials may travel without TLS: only to this machine.
A service with `security = "none"` and a password or a token to any other host is
misconfigured (its check_config says so, naming the key); to a loopback host (a local
Dovecot, an SSH tunnel's end, a test server) the clear text never leaves the machine.
"""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback"]

_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain"})


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine, so credentials may cross to it unencrypted.

    True for "localhost" (and "localhost.localdomain"), any address of 127.0.0.0/8 and ::1,
    written bare or in brackets ("[::1]"). Any other name is not trusted to be local, even if
    it resolves so today: the rule is read from the configuration alone, without DNS.
    """
    if host.lower().rstrip(".") in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
