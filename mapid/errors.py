"""MAPI status codes and the exceptions the mapid library raises.

Values are the unsigned 32-bit HRESULTs of MAPICode.h (and winerror.h for the five codes MAPI
borrows from COM), so they can be compared with what a Windows MAPI client would see. This
module imports nothing else from the package, so every other module may depend on it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

__all__ = [
    "RETRYABLE",
    "DaemonUnreachable",
    "ErrorCode",
    "MapiError",
    "MapidError",
    "RequestTimedOut",
    "is_error",
    "is_warning",
]

_SEVERITY_ERROR = 0x80000000


class ErrorCode(enum.IntEnum):
    """Every MAPI error and warning code (MAPICode.h), by its MAPI name."""

    S_OK = 0x00000000

    # General errors; the first five are the COM codes MAPI aliases (winerror.h).
    MAPI_E_CALL_FAILED = 0x80004005  # E_FAIL
    MAPI_E_NOT_ENOUGH_MEMORY = 0x8007000E  # E_OUTOFMEMORY
    MAPI_E_INVALID_PARAMETER = 0x80070057  # E_INVALIDARG
    MAPI_E_INTERFACE_NOT_SUPPORTED = 0x80004002  # E_NOINTERFACE
    MAPI_E_NO_ACCESS = 0x80070005  # E_ACCESSDENIED

    MAPI_E_NO_SUPPORT = 0x80040102
    MAPI_E_BAD_CHARWIDTH = 0x80040103
    MAPI_E_STRING_TOO_LONG = 0x80040105
    MAPI_E_UNKNOWN_FLAGS = 0x80040106
    MAPI_E_INVALID_ENTRYID = 0x80040107
    MAPI_E_INVALID_OBJECT = 0x80040108
    MAPI_E_OBJECT_CHANGED = 0x80040109
    MAPI_E_OBJECT_DELETED = 0x8004010A
    MAPI_E_BUSY = 0x8004010B
    MAPI_E_NOT_ENOUGH_DISK = 0x8004010D
    MAPI_E_NOT_ENOUGH_RESOURCES = 0x8004010E
    MAPI_E_NOT_FOUND = 0x8004010F
    MAPI_E_VERSION = 0x80040110
    MAPI_E_LOGON_FAILED = 0x80040111
    MAPI_E_SESSION_LIMIT = 0x80040112
    MAPI_E_USER_CANCEL = 0x80040113
    MAPI_E_UNABLE_TO_ABORT = 0x80040114
    MAPI_E_NETWORK_ERROR = 0x80040115
    MAPI_E_DISK_ERROR = 0x80040116
    MAPI_E_TOO_COMPLEX = 0x80040117
    MAPI_E_BAD_COLUMN = 0x80040118
    MAPI_E_EXTENDED_ERROR = 0x80040119
    MAPI_E_COMPUTED = 0x8004011A
    MAPI_E_CORRUPT_DATA = 0x8004011B
    MAPI_E_UNCONFIGURED = 0x8004011C
    MAPI_E_FAILONEPROVIDER = 0x8004011D
    MAPI_E_UNKNOWN_CPID = 0x8004011E
    MAPI_E_UNKNOWN_LCID = 0x8004011F

    # Flavours of E_ACCESSDENIED used at logon.
    MAPI_E_PASSWORD_CHANGE_REQUIRED = 0x80040120
    MAPI_E_PASSWORD_EXPIRED = 0x80040121
    MAPI_E_INVALID_WORKSTATION_ACCOUNT = 0x80040122
    MAPI_E_INVALID_ACCESS_TIME = 0x80040123
    MAPI_E_ACCOUNT_DISABLED = 0x80040124
    # Connection state (Outlook-era additions, documented, not in the old MAPICode.h).
    MAPI_E_RECONNECTED = 0x80040125
    MAPI_E_OFFLINE = 0x80040126

    # MAPI base functions and status objects.
    MAPI_E_END_OF_SESSION = 0x80040200
    MAPI_E_UNKNOWN_ENTRYID = 0x80040201
    MAPI_E_MISSING_REQUIRED_COLUMN = 0x80040202
    MAPI_W_NO_SERVICE = 0x00040203

    # Properties.
    MAPI_E_BAD_VALUE = 0x80040301
    MAPI_E_INVALID_TYPE = 0x80040302
    MAPI_E_TYPE_NO_SUPPORT = 0x80040303
    MAPI_E_UNEXPECTED_TYPE = 0x80040304
    MAPI_E_TOO_BIG = 0x80040305
    MAPI_E_DECLINE_COPY = 0x80040306
    MAPI_E_UNEXPECTED_ID = 0x80040307
    MAPI_W_ERRORS_RETURNED = 0x00040380

    # Tables.
    MAPI_E_UNABLE_TO_COMPLETE = 0x80040400
    MAPI_E_TIMEOUT = 0x80040401
    MAPI_E_TABLE_EMPTY = 0x80040402
    MAPI_E_TABLE_TOO_BIG = 0x80040403
    MAPI_E_INVALID_BOOKMARK = 0x80040405
    MAPI_W_POSITION_CHANGED = 0x00040481
    MAPI_W_APPROX_COUNT = 0x00040482

    # Transports.
    MAPI_E_WAIT = 0x80040500
    MAPI_E_CANCEL = 0x80040501
    MAPI_E_NOT_ME = 0x80040502
    MAPI_W_CANCEL_MESSAGE = 0x00040580

    # Message stores, folders and messages.
    MAPI_E_CORRUPT_STORE = 0x80040600
    MAPI_E_NOT_IN_QUEUE = 0x80040601
    MAPI_E_NO_SUPPRESS = 0x80040602
    MAPI_E_COLLISION = 0x80040604
    MAPI_E_NOT_INITIALIZED = 0x80040605
    MAPI_E_NON_STANDARD = 0x80040606
    MAPI_E_NO_RECIPIENTS = 0x80040607
    MAPI_E_SUBMITTED = 0x80040608
    MAPI_E_HAS_FOLDERS = 0x80040609
    MAPI_E_HAS_MESSAGES = 0x8004060A
    MAPI_E_FOLDER_CYCLE = 0x8004060B
    MAPI_W_PARTIAL_COMPLETION = 0x00040680

    # Address book.
    MAPI_E_AMBIGUOUS_RECIP = 0x80040700


def is_warning(code: int) -> bool:
    """A MAPI warning is a success (HR_FAILED is false) that still carries news."""
    return code != 0 and not code & _SEVERITY_ERROR


def is_error(code: int) -> bool:
    """True when the severity bit is set, i.e. HR_FAILED(code)."""
    return bool(code & _SEVERITY_ERROR)


# Codes for which resending the same request unchanged may succeed later. The daemon's reply
# cache makes a resend with the same `id` safe (docs/protocol.md 3.4).
# - BUSY: too many requests in flight, or a concurrent ValidateState/FlushQueues.
# - TIMEOUT: deadline_ms passed, or the logon lock was held (MAPI_TIMEOUT_SHORT).
# - NETWORK_ERROR, OFFLINE, RECONNECTED, WAIT: a transport or server link is down or
#   reconnecting; the docs tell clients to retry RECONNECTED.
# Deliberately not retryable: NOT_ENOUGH_RESOURCES (the daemon's per-session handle cap; a
# blind retry loops until the caller releases handles) and END_OF_SESSION (needs a new logon).
RETRYABLE: frozenset[ErrorCode] = frozenset(
    {
        ErrorCode.MAPI_E_BUSY,
        ErrorCode.MAPI_E_TIMEOUT,
        ErrorCode.MAPI_E_NETWORK_ERROR,
        ErrorCode.MAPI_E_WAIT,
        ErrorCode.MAPI_E_RECONNECTED,
        ErrorCode.MAPI_E_OFFLINE,
    }
)


_BY_VALUE: dict[int, ErrorCode] = {int(c): c for c in ErrorCode}


def _default_message(code: ErrorCode) -> str:
    if code is ErrorCode.S_OK:
        return "success"
    name = code.name
    for prefix in ("MAPI_E_", "MAPI_W_"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    return name.lower().replace("_", " ")


class MapidError(Exception):
    """Base of every exception the mapid library raises, so callers can catch them all."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class MapiError(MapidError):
    """A failure with a MAPI status code; the same shape travels as the wire ERROR map."""

    code: ErrorCode
    hresult: int
    retryable: bool
    details: dict[str, object]

    def __init__(
        self,
        code: ErrorCode,
        message: str = "",
        *,
        details: Mapping[str, object] | None = None,
        retryable: bool | None = None,
    ) -> None:
        code = ErrorCode(code)
        super().__init__(message or _default_message(code))
        self.code = code
        self.hresult = int(code)
        self.retryable = code in RETRYABLE if retryable is None else bool(retryable)
        self.details = dict(details) if details else {}

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.name}, {self.message!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep details and retryable across pickling (multiprocessing, test runners).
        return (
            type(self),
            (self.code, self.message),
            {"details": self.details, "retryable": self.retryable},
        )

    def to_wire(self) -> dict[str, object]:
        """The ERROR map of docs/protocol.md 3.3."""
        return {
            "code": self.code.name,
            "hresult": self.hresult,
            "message": self.message,
            "retryable": self.retryable,
            "details": dict(self.details),
        }

    @classmethod
    def from_wire(cls, payload: object) -> MapiError:
        """Rebuild an error from a reply; never raises, since a newer daemon may send codes
        or shapes this client does not know."""
        if not isinstance(payload, Mapping):
            return cls(
                ErrorCode.MAPI_E_CALL_FAILED,
                f"malformed error from the daemon ({type(payload).__name__})",
            )

        details: dict[str, object] = {}
        raw_details = payload.get("details")
        if isinstance(raw_details, Mapping):
            details = {str(k): v for k, v in raw_details.items()}

        raw_code = payload.get("code")
        raw_hresult = payload.get("hresult")
        code = ErrorCode.MAPI_E_CALL_FAILED
        if isinstance(raw_code, str) and raw_code in ErrorCode.__members__:
            code = ErrorCode.__members__[raw_code]
        elif raw_code is None and type(raw_hresult) is int and raw_hresult in _BY_VALUE:
            code = _BY_VALUE[raw_hresult]
        elif raw_code is not None:
            details["code"] = raw_code  # a name this client does not know; keep it
        if raw_hresult is not None and raw_hresult != int(code):
            details["hresult"] = raw_hresult

        raw_message = payload.get("message")
        message = raw_message if isinstance(raw_message, str) else ""
        raw_retryable = payload.get("retryable")
        retryable = raw_retryable if isinstance(raw_retryable, bool) else None
        return cls(code, message, details=details, retryable=retryable)


class DaemonUnreachable(MapidError):
    """No daemon answered: not running, wrong runtime directory, or a stale connection file."""

    def __init__(self, message: str = "", *, endpoint: str | None = None) -> None:
        if not message:
            message = f"no daemon answers at {endpoint}" if endpoint else "no daemon answers"
        super().__init__(message)
        self.endpoint = endpoint


class RequestTimedOut(MapidError):
    """The daemon did not answer in time; the request may still have run (resend the same id)."""

    def __init__(
        self, message: str = "", *, op: str | None = None, timeout: float | None = None
    ) -> None:
        if not message:
            what = f"{op!r}" if op else "the request"
            within = f" within {timeout:g} s" if timeout is not None else " in time"
            message = f"the daemon did not answer {what}{within}"
        super().__init__(message)
        self.op = op
        self.timeout = timeout
