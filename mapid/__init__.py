"""mapid: the MAPI session subsystem as a Linux service.

The public surface for programs is small: `Client` and `AsyncClient` to call the daemon,
`StatusMirror` to follow its status tables, and the errors they raise. MAPI's constants are
in `mapid.constants`, property tags in `mapid.proptags`, entry IDs in `mapid.entryid`.

The modules directly in this package are shared by the daemon and its clients: they may
import one another and the standard library and dependencies, never `mapid.daemon`,
`mapid.providers` or `mapid.cli` (tests/test_layout.py checks; docs/architecture.md maps
the whole tree).
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
