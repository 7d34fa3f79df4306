"""MAPI flags and enumerations, with the exact MAPI names and header values.

Member names are the MAPI names so that the wire form of a flags argument (a list of names,
docs/protocol.md 3), mapisvc.inf-style symbolic values and log output all use the words a
MAPI programmer already knows. Values come from MAPIDefS.h, MAPIX.h, MAPISPI.h and MAPIHook.h
(see docs/mapi.md); a few Outlook-era flags that the old headers lack are taken from
the Outlook MAPI reference and noted where they appear.

Bitmasks are `enum.IntFlag`, one-of-a-list values are `enum.IntEnum`. Several MAPI flags share
a value with a different meaning per call (0x1 is MAPI_MODIFY, MDB_NO_DIALOG, AB_NO_DIALOG ...),
so each call gets its own class and a name is only valid where MAPI allows it.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from typing import TypeVar, cast

from mapid.errors import ErrorCode, MapiError

__all__ = [
    "ENTRYID_MIN_LENGTH",
    "FL_FULLSTRING",
    "MAPIUID_LENGTH",
    "MAPI_COMPOUND",
    "MAPI_ERROR_VERSION",
    "MAPI_INIT_VERSION",
    "MAPI_ONE_OFF_NO_RICH_INFO",
    "MAPI_ONE_OFF_UID",
    "MAPI_ONE_OFF_UNICODE",
    "MAPI_SIMPLE_DEFAULT",
    "MAPI_SIMPLE_EXPLICIT",
    "MUID_PROFILE_INSTANCE",
    "PB_GLOBAL_PROFILE_SECTION_GUID",
    "PROFILE_NAME_MAX",
    "STATUSROW_UPDATE",
    "UI_READONLY",
    "AbContainerFlags",
    "AbFlags",
    "Access",
    "AccessLevel",
    "AttachMethod",
    "BitmaskOp",
    "DefaultStoreFlag",
    "DisplayType",
    "EntryIdFlags",
    "FlagStatus",
    "FlushFlags",
    "FolderType",
    "FuzzyLevel",
    "Importance",
    "InitFlags",
    "LogoffFlags",
    "LogonFlags",
    "MdbFlags",
    "MessageFlags",
    "NotificationEvent",
    "ObjectType",
    "OpenFlags",
    "Priority",
    "RecipientType",
    "RelOp",
    "ResourceFlags",
    "ResourceMethods",
    "ResourceType",
    "RestrictionType",
    "Sensitivity",
    "ServiceContext",
    "ServiceEntryFlags",
    "ServiceFlags",
    "SpoolerNotify",
    "StatusCode",
    "StoreLogoffFlags",
    "StoreSupport",
    "TableEvent",
    "TableStatus",
    "TableType",
    "ValidFolderMask",
    "ValidateStateFlags",
    "flag_names",
    "parse_flags",
]


# --- Session lifecycle ---------------------------------------------------------------------


class InitFlags(enum.IntFlag):
    """MAPIINIT_0.ulFlags (docs/mapi.md 1.1)."""

    MAPI_MULTITHREAD_NOTIFICATIONS = 0x00000001
    MAPI_NO_COINIT = 0x00000008
    MAPI_NT_SERVICE = 0x00010000


MAPI_INIT_VERSION = 0
MAPI_ERROR_VERSION = 0
PROFILE_NAME_MAX = 64  # cchProfileNameMax


class LogonFlags(enum.IntFlag):
    """MAPILogonEx flFlags (docs/mapi.md 1.2)."""

    MAPI_LOGON_UI = 0x00000001
    MAPI_NEW_SESSION = 0x00000002
    MAPI_APP_PROFILE = 0x00000004
    MAPI_ALLOW_OTHERS = 0x00000008
    MAPI_EXPLICIT_PROFILE = 0x00000010
    MAPI_EXTENDED = 0x00000020
    MAPI_USE_DEFAULT = 0x00000040
    MAPI_FORCE_DOWNLOAD = 0x00001000
    MAPI_SERVICE_UI_ALWAYS = 0x00002000
    MAPI_NO_MAIL = 0x00008000
    MAPI_NT_SERVICE = 0x00010000
    MAPI_PASSWORD_UI = 0x00020000
    MAPI_TIMEOUT_SHORT = 0x00100000
    MAPI_BG_SESSION = 0x00200000
    MAPI_UNICODE = 0x80000000


# Simple MAPI convenience combinations (MAPIX.h); plain ints so they stay out of flag_names().
MAPI_SIMPLE_DEFAULT = int(
    LogonFlags.MAPI_LOGON_UI | LogonFlags.MAPI_FORCE_DOWNLOAD | LogonFlags.MAPI_ALLOW_OTHERS
)
MAPI_SIMPLE_EXPLICIT = int(
    LogonFlags.MAPI_NEW_SESSION | LogonFlags.MAPI_FORCE_DOWNLOAD | LogonFlags.MAPI_EXPLICIT_PROFILE
)


class LogoffFlags(enum.IntFlag):
    """IMAPISession::Logoff ulFlags (docs/mapi.md 1.6)."""

    MAPI_LOGOFF_SHARED = 0x00000001
    MAPI_LOGOFF_UI = 0x00000002


# --- Opening objects -----------------------------------------------------------------------


class OpenFlags(enum.IntFlag):
    """OpenEntry / OpenProfileSection ulFlags (docs/mapi.md 2).

    MAPI_CACHE_OK is left out: the docs name it for IAddrBook::OpenEntry but no public header
    we could check gives its value.
    """

    MAPI_MODIFY = 0x00000001
    SHOW_SOFT_DELETES = 0x00000002
    MAPI_DEFERRED_ERRORS = 0x00000008
    MAPI_BEST_ACCESS = 0x00000010
    MAPI_NO_CACHE = 0x00000200  # Outlook cached mode; not in the old MAPIDefS.h
    MAPI_CACHE_ONLY = 0x00004000  # Outlook cached mode; not in the old MAPIDefS.h
    MAPI_FORCE_ACCESS = 0x00080000  # value from a docs code sample (docs/mapi.md 12)


class MdbFlags(enum.IntFlag):
    """IMAPISession::OpenMsgStore ulFlags (docs/mapi.md 2, 7.4)."""

    MDB_NO_DIALOG = 0x00000001
    MDB_WRITE = 0x00000004
    MAPI_DEFERRED_ERRORS = 0x00000008
    MAPI_BEST_ACCESS = 0x00000010
    MDB_TEMPORARY = 0x00000020
    MDB_NO_MAIL = 0x00000080
    MDB_ONLINE = 0x00000100  # Outlook cached mode; not in the old MAPIDefS.h


class AbFlags(enum.IntFlag):
    """IMAPISession::OpenAddressBook ulFlags."""

    AB_NO_DIALOG = 0x00000001


class DefaultStoreFlag(enum.IntEnum):
    """IMAPISession::SetDefaultStore ulFlags: one value, not a mask."""

    MAPI_DEFAULT_STORE = 1
    MAPI_SIMPLE_STORE_TEMPORARY = 2
    MAPI_SIMPLE_STORE_PERMANENT = 3
    MAPI_PRIMARY_STORE = 4
    MAPI_SECONDARY_STORE = 5


class ObjectType(enum.IntEnum):
    """PR_OBJECT_TYPE and OpenEntry's lpulObjType (docs/mapi.md 9)."""

    MAPI_STORE = 0x1
    MAPI_ADDRBOOK = 0x2
    MAPI_FOLDER = 0x3
    MAPI_ABCONT = 0x4
    MAPI_MESSAGE = 0x5
    MAPI_MAILUSER = 0x6
    MAPI_ATTACH = 0x7
    MAPI_DISTLIST = 0x8
    MAPI_PROFSECT = 0x9
    MAPI_STATUS = 0xA
    MAPI_SESSION = 0xB
    MAPI_FORMINFO = 0xC


class StoreLogoffFlags(enum.IntFlag):
    """IMsgStore::StoreLogoff in (low word) and out (high word) flags (docs/mapi.md 7.7)."""

    LOGOFF_NO_WAIT = 0x00000001
    LOGOFF_ORDERLY = 0x00000002
    LOGOFF_PURGE = 0x00000004
    LOGOFF_ABORT = 0x00000008
    LOGOFF_QUIET = 0x00000010
    LOGOFF_COMPLETE = 0x00010000
    LOGOFF_INBOUND = 0x00020000
    LOGOFF_OUTBOUND = 0x00040000
    LOGOFF_OUTBOUND_QUEUE = 0x00080000


# --- Entry IDs -----------------------------------------------------------------------------


class EntryIdFlags(enum.IntFlag):
    """Bits of ENTRYID.abFlags[0] (docs/mapi.md 7.1); 0 means long-term."""

    MAPI_NOTRESERVED = 0x08
    MAPI_NOW = 0x10
    MAPI_THISSESSION = 0x20
    MAPI_NOTRECIP = 0x40
    MAPI_SHORTTERM = 0x80


MAPI_COMPOUND = 0x80  # abFlags[1], not abFlags[0]
MAPIUID_LENGTH = 16
ENTRYID_MIN_LENGTH = 4 + MAPIUID_LENGTH  # flags + provider MAPIUID (docs/protocol.md 5)

MAPI_ONE_OFF_UID = bytes(
    [0x81, 0x2B, 0x1F, 0xA4, 0xBE, 0xA3, 0x10, 0x19, 0x9D, 0x6E, 0x00, 0xDD, 0x01, 0x0F, 0x54, 0x02]
)
MAPI_ONE_OFF_UNICODE = 0x8000
MAPI_ONE_OFF_NO_RICH_INFO = 0x0001

# Profile section holding the profile's PR_SEARCH_KEY; a MAPIUID is a GUID in Intel byte order.
MUID_PROFILE_INSTANCE = uuid.UUID("00020385-0000-0000-C000-000000000046").bytes_le
# pbGlobalProfileSectionGuid (EdkMdb.h): the bytes as listed, not a GUID to be reordered.
PB_GLOBAL_PROFILE_SECTION_GUID = bytes.fromhex("13DBB0C8AA05101A9BB000AA002FC45A")


# --- Status table and status objects -------------------------------------------------------


class ResourceType(enum.IntEnum):
    """PR_RESOURCE_TYPE (docs/mapi.md 4.3)."""

    MAPI_STORE_PROVIDER = 33
    MAPI_AB = 34
    MAPI_AB_PROVIDER = 35
    MAPI_TRANSPORT_PROVIDER = 36
    MAPI_SPOOLER = 37
    MAPI_PROFILE_PROVIDER = 38
    MAPI_SUBSYSTEM = 39
    MAPI_HOOK_PROVIDER = 40


class StatusCode(enum.IntFlag):
    """PR_STATUS_CODE: low word common, high word transport-specific (docs/mapi.md 4.4)."""

    STATUS_AVAILABLE = 0x00000001
    STATUS_OFFLINE = 0x00000002
    STATUS_FAILURE = 0x00000004
    STATUS_INBOUND_ENABLED = 0x00010000
    STATUS_INBOUND_ACTIVE = 0x00020000
    STATUS_INBOUND_FLUSH = 0x00040000
    STATUS_OUTBOUND_ENABLED = 0x00100000
    STATUS_OUTBOUND_ACTIVE = 0x00200000
    STATUS_OUTBOUND_FLUSH = 0x00400000
    STATUS_REMOTE_ACCESS = 0x00800000


class ResourceFlags(enum.IntFlag):
    """PR_RESOURCE_FLAGS of a provider, status row or store-table row (docs/mapi.md 4.5).

    The message-service table uses the same property with other meanings: see ServiceFlags.
    """

    STATUS_DEFAULT_OUTBOUND = 0x00000001
    STATUS_DEFAULT_STORE = 0x00000002
    STATUS_PRIMARY_IDENTITY = 0x00000004
    STATUS_SIMPLE_STORE = 0x00000008
    STATUS_XP_PREFER_LAST = 0x00000010
    STATUS_NO_PRIMARY_IDENTITY = 0x00000020
    STATUS_NO_DEFAULT_STORE = 0x00000040
    STATUS_TEMP_SECTION = 0x00000080
    STATUS_OWN_STORE = 0x00000100
    HOOK_INBOUND = 0x00000200  # MAPIHook.h
    HOOK_OUTBOUND = 0x00000400  # MAPIHook.h
    STATUS_NEED_IPM_TREE = 0x00000800
    STATUS_PRIMARY_STORE = 0x00001000
    STATUS_SECONDARY_STORE = 0x00002000


class ServiceFlags(enum.IntFlag):
    """PR_RESOURCE_FLAGS of a message service (service table and section; docs/mapi.md 4.5)."""

    SERVICE_DEFAULT_STORE = 0x00000001
    SERVICE_SINGLE_COPY = 0x00000002
    SERVICE_CREATE_WITH_STORE = 0x00000004
    SERVICE_PRIMARY_IDENTITY = 0x00000008
    SERVICE_NO_PRIMARY_IDENTITY = 0x00000020


class ResourceMethods(enum.IntFlag):
    """PR_RESOURCE_METHODS: which IMAPIStatus methods an object supports (docs/mapi.md 4.6)."""

    STATUS_VALIDATE_STATE = 0x00000001
    STATUS_SETTINGS_DIALOG = 0x00000002
    STATUS_CHANGE_PASSWORD = 0x00000004
    STATUS_FLUSH_QUEUES = 0x00000008


class ValidateStateFlags(enum.IntFlag):
    """IMAPIStatus::ValidateState ulFlags (docs/mapi.md 5.2)."""

    SUPPRESS_UI = 0x00000001
    REFRESH_XP_HEADER_CACHE = 0x00010000
    PROCESS_XP_HEADER_CACHE = 0x00020000
    FORCE_XP_CONNECT = 0x00040000
    FORCE_XP_DISCONNECT = 0x00080000
    CONFIG_CHANGED = 0x00100000
    ABORT_XP_HEADER_OPERATION = 0x00200000
    SHOW_XP_SESSION_UI = 0x00400000


class FlushFlags(enum.IntFlag):
    """IMAPIStatus::FlushQueues ulFlags (docs/mapi.md 5.3)."""

    FLUSH_UPLOAD = 0x00000002
    FLUSH_DOWNLOAD = 0x00000004
    FLUSH_FORCE = 0x00000008
    FLUSH_NO_UI = 0x00000010
    FLUSH_ASYNC_OK = 0x00000020


UI_READONLY = 0x00000001  # IMAPIStatus::SettingsDialog ulFlags

# IMAPISupport::ModifyStatusRow: merge the given columns instead of replacing the row.
STATUSROW_UPDATE = 0x10000000


class SpoolerNotify(enum.IntFlag):
    """IMAPISupport::SpoolerNotify ulFlags (docs/mapi.md 5.5)."""

    NOTIFY_NEWMAIL = 0x00000001
    NOTIFY_READYTOSEND = 0x00000002
    NOTIFY_SENTDEFERRED = 0x00000004
    NOTIFY_CRITSEC = 0x00001000
    NOTIFY_NONCRIT = 0x00002000
    NOTIFY_CONFIG_CHANGE = 0x00004000
    NOTIFY_CRITICAL_ERROR = 0x10000000
    NOTIFY_NEWMAIL_RECEIVED = 0x20000000


# --- Message services ----------------------------------------------------------------------


class ServiceContext(enum.IntEnum):
    """ulContext of a message service entry point (docs/mapi.md 3.7)."""

    MSG_SERVICE_INSTALL = 1
    MSG_SERVICE_CREATE = 2
    MSG_SERVICE_CONFIGURE = 3
    MSG_SERVICE_DELETE = 4
    MSG_SERVICE_UNINSTALL = 5
    MSG_SERVICE_PROVIDER_CREATE = 6
    MSG_SERVICE_PROVIDER_DELETE = 7


class ServiceEntryFlags(enum.IntFlag):
    """ulFlags of the service entry point, ConfigureMsgService and CreateMsgService (3.3, 3.7).

    UI_SERVICE is MAPI's older name for SERVICE_UI_ALWAYS (same value) and is not a member.
    """

    SERVICE_UI_ALWAYS = 0x00000002
    UI_CURRENT_PROVIDER_FIRST = 0x00000004
    MSG_SERVICE_UI_READ_ONLY = 0x00000008
    SERVICE_UI_ALLOWED = 0x00000010
    SERVICE_LOGON_FAILED = 0x00000020
    SERVICE_NO_RESTART_WARNING = 0x00000080  # CreateMsgService only
    MAPI_UNICODE = 0x80000000


# --- Notifications and tables --------------------------------------------------------------


class NotificationEvent(enum.IntFlag):
    """NOTIFICATION.ulEventType and Advise event masks (docs/mapi.md 8.1)."""

    fnevCriticalError = 0x00000001
    fnevNewMail = 0x00000002
    fnevObjectCreated = 0x00000004
    fnevObjectDeleted = 0x00000008
    fnevObjectModified = 0x00000010
    fnevObjectMoved = 0x00000020
    fnevObjectCopied = 0x00000040
    fnevSearchComplete = 0x00000080
    fnevTableModified = 0x00000100
    fnevStatusObjectModified = 0x00000200  # internal to MAPI; clients cannot register for it
    fnevIndexing = 0x00010000
    fnevReservedForMapi = 0x40000000
    fnevExtended = 0x80000000


class TableEvent(enum.IntEnum):
    """TABLE_NOTIFICATION.ulTableEvent (docs/mapi.md 8.3)."""

    TABLE_CHANGED = 1
    TABLE_ERROR = 2
    TABLE_ROW_ADDED = 3
    TABLE_ROW_DELETED = 4
    TABLE_ROW_MODIFIED = 5
    TABLE_SORT_DONE = 6
    TABLE_RESTRICT_DONE = 7
    TABLE_SETCOL_DONE = 8
    TABLE_RELOAD = 9


class TableStatus(enum.IntEnum):
    """IMAPITable::GetStatus table status."""

    TBLSTAT_COMPLETE = 0
    TBLSTAT_QCHANGED = 7
    TBLSTAT_SORTING = 9
    TBLSTAT_SORT_ERROR = 10
    TBLSTAT_SETTING_COLS = 11
    TBLSTAT_SETCOL_ERROR = 13
    TBLSTAT_RESTRICTING = 14
    TBLSTAT_RESTRICT_ERROR = 15


class TableType(enum.IntEnum):
    """IMAPITable::GetStatus table type."""

    TBLTYPE_SNAPSHOT = 0
    TBLTYPE_KEYSET = 1
    TBLTYPE_DYNAMIC = 2


class RestrictionType(enum.IntEnum):
    """SRestriction.rt (docs/mapi.md 8.4, MAPIDefS.h)."""

    RES_AND = 0x0
    RES_OR = 0x1
    RES_NOT = 0x2
    RES_CONTENT = 0x3
    RES_PROPERTY = 0x4
    RES_COMPAREPROPS = 0x5
    RES_BITMASK = 0x6
    RES_SIZE = 0x7
    RES_EXIST = 0x8
    RES_SUBRESTRICTION = 0x9
    RES_COMMENT = 0xA
    RES_COUNT = 0xB
    RES_ANNOTATION = 0xC


class RelOp(enum.IntEnum):
    """Relational operators of property, compare-props and size restrictions."""

    RELOP_LT = 0
    RELOP_LE = 1
    RELOP_GT = 2
    RELOP_GE = 3
    RELOP_EQ = 4
    RELOP_NE = 5
    RELOP_RE = 6


class BitmaskOp(enum.IntEnum):
    """SBitMaskRestriction.relBMR."""

    BMR_EQZ = 0
    BMR_NEZ = 1


class FuzzyLevel(enum.IntFlag):
    """SContentRestriction.ulFuzzyLevel: low word the match kind, high word modifiers."""

    FL_SUBSTRING = 0x00000001
    FL_PREFIX = 0x00000002
    FL_IGNORECASE = 0x00010000
    FL_IGNORENONSPACE = 0x00020000
    FL_LOOSE = 0x00040000


FL_FULLSTRING = 0x00000000  # the zero match kind; a plain int so flag_names() never shows it


# --- Property values -----------------------------------------------------------------------


class RecipientType(enum.IntEnum):
    """PR_RECIPIENT_TYPE (the low bits; MAPI_P1 0x10000000 and MAPI_SUBMITTED 0x80000000 can
    be or-ed in by transports)."""

    MAPI_ORIG = 0
    MAPI_TO = 1
    MAPI_CC = 2
    MAPI_BCC = 3


class StoreSupport(enum.IntFlag):
    """PR_STORE_SUPPORT_MASK."""

    STORE_ENTRYID_UNIQUE = 0x00000001
    STORE_READONLY = 0x00000002
    STORE_SEARCH_OK = 0x00000004
    STORE_MODIFY_OK = 0x00000008
    STORE_CREATE_OK = 0x00000010
    STORE_ATTACH_OK = 0x00000020
    STORE_OLE_OK = 0x00000040
    STORE_SUBMIT_OK = 0x00000080
    STORE_NOTIFY_OK = 0x00000100
    STORE_MV_PROPS_OK = 0x00000200
    STORE_CATEGORIZE_OK = 0x00000400
    STORE_RTF_OK = 0x00000800
    STORE_RESTRICTION_OK = 0x00001000
    STORE_SORT_OK = 0x00002000
    STORE_PUBLIC_FOLDERS = 0x00004000
    STORE_UNCOMPRESSED_RTF = 0x00008000
    STORE_HTML_OK = 0x00010000
    STORE_ANSI_OK = 0x00020000
    STORE_UNICODE_OK = 0x00040000


class MessageFlags(enum.IntFlag):
    """PR_MESSAGE_FLAGS."""

    MSGFLAG_READ = 0x00000001
    MSGFLAG_UNMODIFIED = 0x00000002
    MSGFLAG_SUBMIT = 0x00000004
    MSGFLAG_UNSENT = 0x00000008
    MSGFLAG_HASATTACH = 0x00000010
    MSGFLAG_FROMME = 0x00000020
    MSGFLAG_ASSOCIATED = 0x00000040
    MSGFLAG_RESEND = 0x00000080
    MSGFLAG_RN_PENDING = 0x00000100
    MSGFLAG_NRN_PENDING = 0x00000200


class MsgStatus(enum.IntFlag):
    """PR_MSG_STATUS: a message's status within its folder (IMAPIFolder::SetMessageStatus)."""

    MSGSTATUS_HIGHLIGHTED = 0x00000001
    MSGSTATUS_TAGGED = 0x00000002
    MSGSTATUS_HIDDEN = 0x00000004
    MSGSTATUS_DELMARKED = 0x00000008
    MSGSTATUS_REMOTE_DOWNLOAD = 0x00001000
    MSGSTATUS_REMOTE_DELETE = 0x00002000


class FlagStatus(enum.IntEnum):
    """PR_FLAG_STATUS: a message's follow-up flag (IMAP \\Flagged, Maildir F)."""

    followupComplete = 0x00000001
    followupFlagged = 0x00000002


class FolderType(enum.IntEnum):
    """PR_FOLDER_TYPE."""

    FOLDER_ROOT = 0
    FOLDER_GENERIC = 1
    FOLDER_SEARCH = 2


class ValidFolderMask(enum.IntFlag):
    """PR_VALID_FOLDER_MASK: which well-known folder entry IDs of a store are valid."""

    FOLDER_IPM_SUBTREE_VALID = 0x00000001
    FOLDER_IPM_INBOX_VALID = 0x00000002
    FOLDER_IPM_OUTBOX_VALID = 0x00000004
    FOLDER_IPM_WASTEBASKET_VALID = 0x00000008
    FOLDER_IPM_SENTMAIL_VALID = 0x00000010
    FOLDER_VIEWS_VALID = 0x00000020
    FOLDER_COMMON_VIEWS_VALID = 0x00000040
    FOLDER_FINDER_VALID = 0x00000080


class AccessLevel(enum.IntFlag):
    """PR_ACCESS_LEVEL: 0 is read-only; MAPIDefS.h reuses MAPI_MODIFY for read/write."""

    MAPI_MODIFY = 0x00000001


class Access(enum.IntFlag):
    """PR_ACCESS on folders and messages."""

    MAPI_ACCESS_MODIFY = 0x00000001
    MAPI_ACCESS_READ = 0x00000002
    MAPI_ACCESS_DELETE = 0x00000004
    MAPI_ACCESS_CREATE_HIERARCHY = 0x00000008
    MAPI_ACCESS_CREATE_CONTENTS = 0x00000010
    MAPI_ACCESS_CREATE_ASSOCIATED = 0x00000020


class AbContainerFlags(enum.IntFlag):
    """PR_CONTAINER_FLAGS of address book containers."""

    AB_RECIPIENTS = 0x00000001
    AB_SUBCONTAINERS = 0x00000002
    AB_MODIFIABLE = 0x00000004
    AB_UNMODIFIABLE = 0x00000008
    AB_FIND_ON_OPEN = 0x00000010
    AB_NOT_DEFAULT = 0x00000020


class DisplayType(enum.IntEnum):
    """PR_DISPLAY_TYPE of address book rows: mail users and lists, then containers."""

    DT_MAILUSER = 0x0
    DT_DISTLIST = 0x1
    DT_FORUM = 0x2
    DT_AGENT = 0x3
    DT_ORGANIZATION = 0x4
    DT_PRIVATE_DISTLIST = 0x5
    DT_REMOTE_MAILUSER = 0x6
    # Of address book containers (hierarchy-table rows).
    DT_MODIFIABLE = 0x00010000
    DT_GLOBAL = 0x00020000
    DT_LOCAL = 0x00030000
    DT_WAN = 0x00040000
    DT_NOT_SPECIFIC = 0x00050000


class AttachMethod(enum.IntEnum):
    """PR_ATTACH_METHOD."""

    NO_ATTACHMENT = 0
    ATTACH_BY_VALUE = 1
    ATTACH_BY_REFERENCE = 2
    ATTACH_BY_REF_RESOLVE = 3
    ATTACH_BY_REF_ONLY = 4
    ATTACH_EMBEDDED_MSG = 5
    ATTACH_OLE = 6


class Importance(enum.IntEnum):
    """PR_IMPORTANCE."""

    IMPORTANCE_LOW = 0
    IMPORTANCE_NORMAL = 1
    IMPORTANCE_HIGH = 2


class Priority(enum.IntEnum):
    """PR_PRIORITY (signed)."""

    PRIO_NONURGENT = -1
    PRIO_NORMAL = 0
    PRIO_URGENT = 1


class Sensitivity(enum.IntEnum):
    """PR_SENSITIVITY."""

    SENSITIVITY_NONE = 0
    SENSITIVITY_PERSONAL = 1
    SENSITIVITY_PRIVATE = 2
    SENSITIVITY_COMPANY_CONFIDENTIAL = 3


# --- Parsing and naming --------------------------------------------------------------------

F = TypeVar("F", bound="enum.IntFlag | enum.IntEnum")

_UINT32_MAX = 0xFFFFFFFF


def _members(enum_cls: type[F]) -> Mapping[str, F]:
    # typeshed types __members__ by the TypeVar's bound, not by F itself.
    return cast("Mapping[str, F]", enum_cls.__members__)


def _canonical_members(enum_cls: type[F]) -> Mapping[str, F]:
    """Member names without aliases, so every value has one name."""
    return {name: m for name, m in _members(enum_cls).items() if m.name == name}


def _known_bits(enum_cls: type[F]) -> int:
    mask = 0
    for member in _members(enum_cls).values():
        mask |= int(member)
    return mask


def _bad_type(enum_cls: type[F], value: object, field: str, expected: str) -> MapiError:
    return MapiError(
        ErrorCode.MAPI_E_INVALID_PARAMETER,
        f"{field}: expected {expected} for {enum_cls.__name__}, got {type(value).__name__}",
        details={"field": field},
    )


def parse_flags(enum_cls: type[F], value: object, *, field: str = "flags") -> F:
    """Turn a wire flags argument into a MAPI flag value.

    Accepts None (meaning 0), a non-negative 32-bit int, one member name, or (for bitmasks) a
    list of member names, as docs/protocol.md 3.6 allows. Unknown bits, values or names raise
    MAPI_E_UNKNOWN_FLAGS, as MAPI does for unknown flags; a value of the wrong type raises
    MAPI_E_INVALID_PARAMETER. For one-of-a-list classes None is only accepted when 0 is a
    member.
    """
    is_mask = issubclass(enum_cls, enum.Flag)
    members = _members(enum_cls)
    kind = "an int, a name or a list of names" if is_mask else "an int or a name"

    if value is None:
        value = 0
    if isinstance(value, str):
        if is_mask:
            value = [value]
        elif value in members:
            return members[value]
        else:
            raise MapiError(
                ErrorCode.MAPI_E_UNKNOWN_FLAGS,
                f"{field}: unknown {enum_cls.__name__} name {value}",
                details={"field": field, "names": [value]},
            )

    if isinstance(value, bool):
        raise _bad_type(enum_cls, value, field, kind)

    if isinstance(value, int):
        if value < 0 or value > _UINT32_MAX:
            raise MapiError(
                ErrorCode.MAPI_E_INVALID_PARAMETER,
                f"{field}: {value} is not an unsigned 32-bit value",
                details={"field": field},
            )
        if is_mask:
            unknown = value & ~_known_bits(enum_cls)
            if unknown:
                raise MapiError(
                    ErrorCode.MAPI_E_UNKNOWN_FLAGS,
                    f"{field}: unknown {enum_cls.__name__} bits 0x{unknown:08X}",
                    details={"field": field, "bits": unknown},
                )
            return enum_cls(value)
        for member in members.values():
            if int(member) == value:
                return member
        raise MapiError(
            ErrorCode.MAPI_E_UNKNOWN_FLAGS,
            f"{field}: {value} is not a {enum_cls.__name__} value",
            details={"field": field, "value": value},
        )

    if is_mask and isinstance(value, (list, tuple)):
        result = 0
        unknown_names: list[str] = []
        for item in value:
            if not isinstance(item, str):
                raise _bad_type(enum_cls, item, field, "flag names (str)")
            if item in members:
                result |= int(members[item])
            else:
                unknown_names.append(item)
        if unknown_names:
            raise MapiError(
                ErrorCode.MAPI_E_UNKNOWN_FLAGS,
                f"{field}: unknown {enum_cls.__name__} name(s) {', '.join(unknown_names)}",
                details={"field": field, "names": unknown_names},
            )
        return enum_cls(result)

    raise _bad_type(enum_cls, value, field, kind)


def flag_names(enum_cls: type[F], value: int) -> list[str]:
    """Names of the bits set in `value` (or the one name of an enum value), for logs and the
    wire; bits or values no member covers come out as one "0x…" string so nothing is hidden.
    Negative values are read as signed 32-bit LONGs, as MAPI stores PT_LONG."""
    if value < 0:
        value &= _UINT32_MAX
    canonical = _canonical_members(enum_cls)
    if not issubclass(enum_cls, enum.Flag):
        for name, member in canonical.items():
            if int(member) == value:
                return [name]
        return [f"0x{value:08X}"]
    names: list[str] = []
    covered = 0
    for name, member in sorted(canonical.items(), key=lambda item: int(item[1])):
        bits = int(member)
        if bits and value & bits == bits:
            names.append(name)
            covered |= bits
    rest = value & ~covered
    if rest:
        names.append(f"0x{rest:08X}")
    return names
