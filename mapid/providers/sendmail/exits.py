"""How a sendmail program ended, for the spooler: its exit status (sysexits.h) as success,
a temporary failure (the message stays queued and is retried) or a permanent one (a
non-delivery report at once).

The rule: what is wrong with the message or its addresses, which a retry would meet again,
is permanent; what is wrong on the way to the mail system (the relay offline or refusing
for now, a login refused, a broken local configuration, a full disk), which the user, the
administrator or the network mends, is temporary. Two of the codes are read the way
msmtp, the usual sendmail of a desktop, uses them rather than as Postfix's table does:
EX_NOHOST is msmtp's "cannot locate host" for its relay (a machine offline) and
EX_UNAVAILABLE its answer to a 4xx reply and to refused data alike.

An SMTP reply with its enhanced status code in the program's output ("451 4.3.0 ...",
"550 5.1.1 ...", as msmtp quotes its server) is more precise than those two: a 4xx makes
any failure temporary, and the reply's class decides for EX_UNAVAILABLE and for a status
outside sysexits.h. A 5xx does not make the other codes permanent: msmtp quotes "535
5.7.8" beside EX_NOPERM for a wrong password, which the user mends.

A temporary failure of a message also holds the later ones back (the spooler stops the
batch there), so a code that means "this message will never go" must not be temporary.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from mapid.providers.base import TransportFailure

__all__ = [
    "EXIT_STATUSES",
    "EX_UNAVAILABLE",
    "OUTPUT_LIMIT",
    "ExitStatus",
    "failure_of",
    "output_words",
]

OUTPUT_LIMIT = 2048
"""Bytes of the program's output kept for the failure's words; the rest is read and dropped."""


@dataclass(frozen=True)
class ExitStatus:
    """One code of sysexits.h and what it means for the message."""

    name: str
    meaning: str
    status: str
    """RFC 3463 status for the report; its class (4 or 5) says temporary or permanent."""

    @property
    def permanent(self) -> bool:
        return self.status.startswith("5")


EXIT_STATUSES: Mapping[int, ExitStatus] = {
    64: ExitStatus("EX_USAGE", "command line usage error", "5.3.0"),
    65: ExitStatus("EX_DATAERR", "data format error", "5.6.0"),
    66: ExitStatus("EX_NOINPUT", "cannot open input", "5.3.0"),
    67: ExitStatus("EX_NOUSER", "user unknown", "5.1.1"),
    68: ExitStatus("EX_NOHOST", "host name unknown", "4.4.3"),
    69: ExitStatus("EX_UNAVAILABLE", "service unavailable", "4.3.0"),
    70: ExitStatus("EX_SOFTWARE", "internal software error", "5.3.0"),
    71: ExitStatus("EX_OSERR", "system resource problem", "4.3.0"),
    72: ExitStatus("EX_OSFILE", "critical OS file missing", "4.3.5"),
    73: ExitStatus("EX_CANTCREAT", "cannot create output file", "4.3.1"),
    74: ExitStatus("EX_IOERR", "input/output error", "4.3.0"),
    75: ExitStatus("EX_TEMPFAIL", "temporary failure", "4.3.0"),
    76: ExitStatus("EX_PROTOCOL", "remote error in protocol", "4.5.0"),
    77: ExitStatus("EX_NOPERM", "permission denied", "4.7.0"),
    78: ExitStatus("EX_CONFIG", "local configuration error", "4.3.5"),
}
"""Every code of sysexits.h. Any other non-zero status is permanent (as Postfix reads one)."""

_REPLY = re.compile(r"(?<![\d.])([45])\d\d[ -]([45])\.\d{1,3}\.\d{1,3}(?![\d.])")
"""An SMTP reply and its enhanced status code ("550 5.1.1", "451-4.7.1"); only one whose
two classes agree counts."""
EX_UNAVAILABLE = 69
"""msmtp's status for a 4xx reply and for refused data alike: its reply decides."""


def output_words(output: bytes, truncated: bool = False) -> str:
    """The program's output on one line ("line one; line two"), for a row and a report."""
    text = output.decode("utf-8", "replace")
    words = "; ".join(line.strip() for line in text.splitlines() if line.strip())
    return words + " [...]" if truncated and words else words


def failure_of(program: str, status: int, said: str) -> TransportFailure:
    """The failure for a non-zero exit `status` (negative: killed by that signal) of
    `program`, which printed `said`."""
    words = f": {said}" if said else ""
    if status < 0:
        return TransportFailure(f"{program} was killed by signal {-status}{words}")
    known = EXIT_STATUSES.get(status)
    reply = next((m for m in _REPLY.finditer(said) if m[1] == m[2]), None)
    if reply is not None and (reply[1] == "4" or known is None or status == EX_UNAVAILABLE):
        permanent = reply[1] == "5"
    else:
        permanent = known.permanent if known is not None else True
    if known is None:
        what = ""
    elif reply is not None and (reply[1] == "5") == permanent:
        what = f" ({known.name})"  # the server's status stands, for the report too
    else:
        what = f" ({known.name}: {known.meaning}, {known.status})"
    return TransportFailure(
        f"{program} exited with status {status}{what}{words}", permanent=permanent
    )
