"""mapid: the MAPI session subsystem as a Linux service.

The public surface for programs is small: `Client` and `AsyncClient` to call the daemon,
`StatusMirror` to follow its status tables, and the errors they raise. MAPI's constants are
in `mapid.constants`, property tags in `mapid.proptags`, entry IDs in `mapid.entryid`.
"""

from mapid.client import AsyncClient, Client, Result
from mapid.errors import DaemonUnreachable, ErrorCode, MapidError, MapiError, RequestTimedOut
from mapid.mirror import MirrorState, StatusMirror

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "Client",
    "DaemonUnreachable",
    "ErrorCode",
    "MapiError",
    "MapidError",
    "MirrorState",
    "RequestTimedOut",
    "Result",
    "StatusMirror",
    "__version__",
]
