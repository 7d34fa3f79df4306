"""The provider API: message services, their providers, and the support object.

A message service is a class registered under the `mapid.services` entry-point group (the
MAPISVC.INF of this world). It names its providers; the daemon creates one instance of each
provider per session and hands it a `ProviderSupport` (MAPI's IMAPISupport), through which
the provider reads its configuration, updates its status row, registers its MAPIUID and
raises notifications. Providers never import the daemon.

Like aiosmtpd's handlers, every hook has a sensible default, so a provider overrides only
what it does. Hooks are coroutines; blocking work goes through `support.run_blocking`.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

import jsonschema

from mapid.constants import (
    FlushFlags,
    NotificationEvent,
    ObjectType,
    ResourceFlags,
    ResourceMethods,
    ResourceType,
    ServiceFlags,
    SpoolerNotify,
    StatusCode,
    ValidateStateFlags,
)
from mapid.errors import ErrorCode, MapiError

T = TypeVar("T")


@dataclass(frozen=True)
class Identity:
    """The user a service stands for (PR_IDENTITY_* in its status rows)."""

    display_name: str
    email: str
    addrtype: str = "SMTP"


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with a service's configuration, for `details.errors`."""

    key: str
    message: str


SECRET_KEYS: frozenset[str] = frozenset(
    {"password", "password_command", "keyring", "oauth2_token_command"}
)
"""Configuration keys whose values never appear in a log, event, table or message."""


@functools.lru_cache(maxsize=64)
def _validator(schema_json: str) -> jsonschema.protocols.Validator:
    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema)


def schema_problems(
    schema: Mapping[str, Any],
    config: Mapping[str, Any],
    secret_keys: frozenset[str] = SECRET_KEYS,
) -> list[ConfigProblem]:
    """Check `config` against a JSON Schema; each problem names its key (`identity.email`).

    A subschema may carry `x-error`, a plain sentence used instead of the validator's
    message (which quotes regular expressions at the user) for any failure but a wrong type.
    """
    key = (id(schema), secret_keys, json.dumps(config, sort_keys=True, default=str))
    hit = _CHECKED.get(key)
    if hit is not None and hit[0] is schema:  # the same section, logged on once more
        return list(hit[1])
    problems = _check(schema, config, secret_keys)
    if len(_CHECKED) >= _CHECKED_MAX:
        _CHECKED.pop(next(iter(_CHECKED)))
    _CHECKED[key] = (schema, tuple(problems))
    return problems


_CHECKED_MAX = 1024
"""Configurations whose check is remembered: a logon of a profile checks each service's
section, and 100 000 logons of one profile must not validate it 100 000 times."""
_Checked = tuple[Mapping[str, Any], tuple[ConfigProblem, ...]]
_CHECKED: dict[tuple[int, frozenset[str], str], _Checked] = {}


def _check(
    schema: Mapping[str, Any], config: Mapping[str, Any], secret_keys: frozenset[str]
) -> list[ConfigProblem]:
    validator = _validator(json.dumps(schema, sort_keys=True))
    problems: list[ConfigProblem] = []
    for error in sorted(validator.iter_errors(dict(config)), key=lambda e: list(e.path)):
        path = [str(part) for part in error.absolute_path]
        wanted = error.validator_value
        if error.validator == "required" and isinstance(error.instance, Mapping):
            missing = (
                [k for k in wanted if k not in error.instance] if isinstance(wanted, list) else []
            )
            for key in missing:
                problems.append(ConfigProblem(".".join([*path, key]), "required"))
            continue
        message = error.message
        if secret_keys & set(path):  # the validator quotes the value: never a secret's
            message = f"is not a valid value ({error.validator} {error.validator_value!r})"
        custom = error.schema.get("x-error") if isinstance(error.schema, Mapping) else None
        if error.validator != "type" and isinstance(custom, str):
            message = custom  # the schema's own words for a value of the right type
        problems.append(ConfigProblem(".".join(path) or "(config)", message))
    return problems


class ProviderSupport(Protocol):
    """What the daemon gives each provider instance (MAPI's IMAPISupport)."""

    profile_name: str
    service_key: str
    """The key of the service's section in the profile file (`[services.<key>]`)."""
    service_uid: bytes
    provider_uid: bytes
    logger: logging.Logger

    def config(self) -> Mapping[str, Any]:
        """The service's section of the profile, as last loaded (read my profile section)."""
        ...

    def resolve_path(self, value: str) -> Path:
        """A path from the configuration: `~` expanded, relative to the config directory."""
        ...

    def state_dir(self) -> Path:
        """My private directory for what I keep between runs (a cache, a local queue): one
        for this service of this profile, under the daemon's state directory, mode 0700,
        created on first use, the same across sessions and restarts. Every provider of the
        service shares it; a service removed from the profile leaves it behind."""
        ...

    def modify_status_row(self, props: Mapping[str, Any], *, update: bool = True) -> None:
        """Change my status row: merge `props` (STATUSROW_UPDATE) or replace my columns."""
        ...

    def set_provider_uid(self, uid: bytes) -> None:
        """Register a MAPIUID: entry IDs carrying it are routed to this provider."""
        ...

    def notify(
        self, event: NotificationEvent, *, entryid: bytes | None = None, **fields: Any
    ) -> int:
        """Raise a notification to the advise sinks registered on `entryid` (or all of mine).

        Returns how many sinks it reached.
        """
        ...

    async def run_blocking(self, fn: Callable[..., T], /, *args: Any) -> T:
        """Run blocking I/O in the daemon's bounded thread pool."""
        ...

    async def password(self) -> str | None:
        """The service's secret: its `password_command`, the Secret Service (`keyring`) or a
        `password` in a file only its owner reads; None when it names none. Failures raise
        MapiError(MAPI_E_LOGON_FAILED) with a message that never holds the secret."""
        ...

    async def oauth2_token(self, *, refresh: bool = False) -> str | None:
        """An OAuth2 access token from the service's `oauth2_token_command`; None when it
        names none. The token of the last call comes back again (it stays good for the next
        connection) until `refresh` asks for a fresh one: pass it after the server rejected
        the token, once, then report the failure. The token is printable ASCII without
        spaces. Failures raise MapiError (MAPI_E_LOGON_FAILED: the command failed, timed out
        or printed no token; MAPI_E_INVALID_PARAMETER: the configuration names a password
        too) with a message that never holds the token. Never log or show the token."""
        ...

    def watch_directory(
        self, path: Path, callback: Callable[[set[Path]], None]
    ) -> Callable[[], None]:
        """Call `callback` on the event loop with the paths that changed in the directory
        `path` (not recursive; events are coalesced for about 100 ms). Returns a function that
        stops the watch. The daemon shares one inotify watch among all who watch a path and
        falls back to polling where inotify runs out; providers never start observers."""
        ...

    def spooler_notify(self, flags: SpoolerNotify) -> None:
        """IMAPISupport::SpoolerNotify: NOTIFY_READYTOSEND after a store queued a message or a
        transport recovered, NOTIFY_CONFIG_CHANGE after a transport's address types changed."""
        ...


class MapiObject:
    """An object a provider hands out through `open_entry` (a store, folder, mail user...)."""

    object_type: ClassVar[ObjectType]

    async def get_props(self, tags: list[str] | None) -> dict[str, Any]:
        """Properties by tag name; with `tags` None, all of them. Absent ones are left out."""
        return {}

    async def set_props(self, props: Mapping[str, Any]) -> dict[str, str]:
        """Set properties; returns the problems, tag -> error code name ({} when all went)."""
        raise MapiError(ErrorCode.MAPI_E_NO_ACCESS, "this object is read-only")

    async def delete_props(self, tags: list[str]) -> dict[str, str]:
        raise MapiError(ErrorCode.MAPI_E_NO_ACCESS, "this object is read-only")

    async def save_changes(self) -> None:
        """Commit pending changes; objects without transactions have nothing to do."""

    async def release(self) -> None:
        """The client released its handle."""


def pick_props(props: Mapping[str, Any], tags: list[str] | None) -> dict[str, Any]:
    """The properties named by `tags` that `props` has (all of them for None)."""
    if tags is None:
        return dict(props)
    return {tag: props[tag] for tag in tags if tag in props}


class PropsObject(MapiObject):
    """A read-only object whose properties are fixed when it is opened."""

    def __init__(self, props: Mapping[str, Any]) -> None:
        self.props = dict(props)

    async def get_props(self, tags: list[str] | None) -> dict[str, Any]:
        return pick_props(self.props, tags)


Row = Mapping[str, Any]
"""A table row: properties by tag name; every row carries PR_INSTANCE_KEY."""


class Container(MapiObject):
    """An object with children (IMAPIContainer): a folder, a store's root, an AB container.

    Tables come back as whole row lists in the container's natural order; the daemon applies
    the table arguments (columns, restriction, sort, offset, limit) to them, so every table
    filters and pages alike. Return the same list object while nothing changed: a folder of
    100 000 messages must not be rebuilt for every page. The daemon never mutates rows.
    """

    async def hierarchy_rows(self) -> Sequence[Row]:
        """Rows of the child containers (container.hierarchy_table)."""
        return ()

    async def contents_rows(self) -> Sequence[Row]:
        """Rows of the contents: messages of a folder, mail users of an AB container."""
        return ()

    async def open_child(self, entryid: bytes | None, flags: int) -> MapiObject:
        """container.open_entry: an object inside this container; None is the root of the
        provider's tree (a store's root folder). `flags` holds MAPI_MODIFY when the handle
        it was opened from is writable."""
        raise MapiError(ErrorCode.MAPI_E_NO_SUPPORT, "this container opens nothing")


class Folder(Container):
    """A message folder (IMAPIFolder). The daemon checks write access before calling the
    methods that change things: a provider never sees them on a read-only handle."""

    async def create_folder(self, name: str) -> tuple[Folder, bytes]:
        """A new sub-folder: (its object, its entry ID). A taken name: MAPI_E_COLLISION."""
        raise MapiError(ErrorCode.MAPI_E_NO_SUPPORT, "this folder cannot hold folders")

    async def create_message(self) -> Message:
        """A new, unsaved message in this folder; object.save_changes stores it."""
        raise MapiError(ErrorCode.MAPI_E_NO_SUPPORT, "this folder cannot hold messages")

    async def import_message(self, mime: bytes) -> bytes:
        """Store an RFC 5322 message as it is; returns its entry ID."""
        raise MapiError(ErrorCode.MAPI_E_NO_SUPPORT, "this folder cannot hold messages")

    async def delete_messages(self, entryids: Sequence[bytes]) -> None:
        """Delete messages of this folder (MAPI deletes them for good; the daemon moves them
        to Deleted Items through copy_messages(move=True) where the store has one)."""
        raise MapiError(ErrorCode.MAPI_E_NO_SUPPORT, "this folder holds no messages")

    async def copy_messages(
        self, entryids: Sequence[bytes], dest: bytes, move: bool
    ) -> list[bytes]:
        """Copy or move messages of this folder into the folder `dest` of the same store;
        returns the new entry IDs in order. Another store's folder: MAPI_E_NO_SUPPORT (the
        daemon then copies through MIME)."""
        raise MapiError(ErrorCode.MAPI_E_NO_SUPPORT, "this folder holds no messages")


class Message(MapiObject):
    """A message (IMessage): properties, recipients, MIME, submission."""

    async def get_mime(self) -> bytes:
        """The message as RFC 5322 bytes (what message.get_mime returns)."""
        raise MapiError(ErrorCode.MAPI_E_NO_SUPPORT, "this message has no MIME form")

    async def recipients_rows(self) -> Sequence[Row]:
        """Rows of the recipient table: PR_DISPLAY_NAME, PR_EMAIL_ADDRESS, PR_ADDRTYPE,
        PR_RECIPIENT_TYPE, PR_ROWID, PR_INSTANCE_KEY and whatever the client passed."""
        return ()

    async def modify_recipients(self, recipients: Sequence[Mapping[str, Any]]) -> None:
        """Replace the recipients (MODRECIP_* collapsed to "set them all"), pending until
        save_changes; each map has at least PR_EMAIL_ADDRESS and PR_RECIPIENT_TYPE."""
        raise MapiError(ErrorCode.MAPI_E_NO_SUPPORT, "this message has no recipients")

    async def submit(self, *, sender: Identity | None = None) -> bytes:
        """Save pending changes and queue the message: move it to the store's Outbox marked
        for the spooler. Returns the entry ID of the queued message.

        `sender` is the session's primary identity (None: it has none). A store writes it
        as the sender (From, PR_SENT_REPRESENTING_*) of a message that names none, as
        MAPI's spooler stamps the sender on submit: what is queued is then the message as
        it will be sent, and the store may file that very message in Sent Items."""
        raise MapiError(ErrorCode.MAPI_E_NO_SUPPORT, "this message cannot be submitted")


@dataclass(frozen=True)
class Recipient:
    """One recipient of a message the spooler sends."""

    address: str
    display_name: str = ""
    addrtype: str = "SMTP"
    recipient_type: int = 1
    """MAPI_TO (1), MAPI_CC (2), MAPI_BCC (3)."""


@dataclass(frozen=True)
class OutgoingMessage:
    """A queued message as the spooler hands it to a transport."""

    entryid: bytes
    mime: bytes
    """RFC 5322 bytes with From set and Bcc removed, ready for the wire."""
    recipients: tuple[Recipient, ...]
    sender: Identity | None = None
    """The envelope sender the spooler chose (the session's identity), if any."""


@dataclass(frozen=True)
class QueuedMessage:
    """What a store tells the spooler about one message of its Outbox."""

    entryid: bytes
    mime: bytes
    """The message as stored (From may be missing, Bcc present)."""
    recipients: tuple[Recipient, ...]
    delete_after_submit: bool = False
    submitted: datetime | None = None


@dataclass(frozen=True)
class SendResult:
    """What a transport's send did. Recipients not named in `refused` were accepted."""

    refused: Mapping[str, str] = field(default_factory=dict)
    """Address -> the server's words (e.g. "550 5.1.1 no such user"): permanent refusals."""
    response: str = ""
    """The server's last reply, for the status row and the log."""


class TransportFailure(Exception):
    """A send that failed as a whole. `permanent` failures (a 5xx reply) give a non-delivery
    report at once; the others (a connection refused, a 4xx, a time-out) are retried."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent


class Provider:
    """Base of every provider. Subclass one of the three kinds below."""

    resource_type: ClassVar[ResourceType]
    name: ClassVar[str] = "provider"
    """The provider's name within its service (e.g. "contacts")."""
    display: ClassVar[str] = "mapid"
    """PR_PROVIDER_DISPLAY: who made it."""
    resource_methods: ClassVar[ResourceMethods] = ResourceMethods.STATUS_VALIDATE_STATE
    resource_flags: ClassVar[ResourceFlags] = ResourceFlags(0)
    shared: ClassVar[bool] = False
    """True: one logon serves every session of a profile (docs/providers.md, "Shared
    providers"). The provider then keeps nothing for one session: its status row, its
    notifications and its spooler calls reach every session that holds it."""

    def __init__(self, support: ProviderSupport) -> None:
        self.support = support

    def display_name(self) -> str:
        """PR_DISPLAY_NAME of the status row; the section's `display_name`, else the key."""
        value = self.support.config().get("display_name")
        return value if isinstance(value, str) and value else self.support.service_key

    def status_props(self) -> dict[str, Any]:
        """The provider's own columns of its first status row (status code, path, ...)."""
        return {"PR_STATUS_CODE": int(StatusCode.STATUS_AVAILABLE)}

    async def logon(self) -> None:
        """Log on. Raise MAPI_E_UNCONFIGURED to have the service configured and retried once,
        MAPI_E_FAILONEPROVIDER to disable only this provider; any other error disables the
        whole service for the session."""

    async def logoff(self) -> None:
        """Log off: drop connections and objects. The daemon removes the status row."""

    async def open_entry(self, entryid: bytes, flags: int) -> MapiObject:
        raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, "no object with that entry ID")

    def compare_entryids(self, a: bytes, b: bytes) -> bool:
        """Whether two of my entry IDs name the same object (default: the same bytes)."""
        return a == b

    async def advise(self, entryid: bytes, event_mask: NotificationEvent) -> None:
        """Accept or refuse a registration for events on one of my objects."""
        raise MapiError(ErrorCode.MAPI_E_NO_SUPPORT, "this provider raises no notifications")

    async def validate_state(self, flags: ValidateStateFlags) -> None:
        """IMAPIStatus::ValidateState on my status object."""

    async def flush_queues(self, flags: FlushFlags) -> None:
        raise MapiError(ErrorCode.MAPI_E_NO_SUPPORT, "this provider has no queues")

    async def change_password(self, old: str, new: str) -> None:
        raise MapiError(ErrorCode.MAPI_E_NO_SUPPORT, "this provider has no password")


class AddressBookProvider(Provider):
    resource_type = ResourceType.MAPI_AB_PROVIDER

    def identity(self) -> Identity | None:
        """The identity this provider supplies, if any (PR_IDENTITY_* in its row)."""
        return None

    def identity_entryid(self) -> bytes | None:
        """An entry ID of mine for the identity; None lets the daemon build a one-off."""
        return None

    def top_containers(self) -> list[Row]:
        """Hierarchy rows of my top-level containers in the integrated address book
        (PR_ENTRYID, PR_DISPLAY_NAME, PR_OBJECT_TYPE = MAPI_ABCONT, PR_CONTAINER_FLAGS,
        PR_DEPTH, PR_INSTANCE_KEY); session.open_address_book lists them all."""
        return []

    async def resolve_names(self, name: str) -> list[tuple[int, Row]]:
        """ab.resolve_names for one name: (rank, mail-user props) pairs, best first.

        Rank 0 is an exact match of the display name or an address, 1 a prefix, 2 a
        substring, all case-insensitive. The props are a recipient row: PR_ENTRYID,
        PR_DISPLAY_NAME, PR_EMAIL_ADDRESS, PR_ADDRTYPE, PR_SEARCH_KEY, PR_OBJECT_TYPE,
        PR_DISPLAY_TYPE. The daemon merges every provider's answer and decides ambiguity.
        """
        return []

    # Writing (IABContainer::CreateEntry and DeleteEntries, SetProps + SaveChanges on a mail
    # user). The daemon checks the handle's write access first; a provider that cannot write
    # keeps these defaults, so its containers answer MAPI_E_NO_ACCESS.

    async def create_entry(self, container: bytes, props: Mapping[str, Any]) -> bytes:
        """Create a mail user in the container `container` (its entry ID) from `props` (tag
        names, canonical); returns the new entry's entry ID."""
        raise MapiError(ErrorCode.MAPI_E_NO_ACCESS, "this address book is read-only")

    async def modify_entry(
        self, entryid: bytes, props: Mapping[str, Any], delete: Sequence[str] = ()
    ) -> Mapping[str, Any]:
        """Set `props` and remove the properties `delete` of the entry `entryid`, at once;
        returns the entry's properties as they are now (what its object shows next)."""
        raise MapiError(ErrorCode.MAPI_E_NO_ACCESS, "this address book is read-only")

    async def delete_entries(self, container: bytes, entryids: Sequence[bytes]) -> None:
        """Delete entries of the container `container`: all of them, or none when one cannot
        go (unknown: MAPI_E_NOT_FOUND; another provider's: MAPI_E_UNKNOWN_ENTRYID)."""
        raise MapiError(ErrorCode.MAPI_E_NO_ACCESS, "this address book is read-only")


class StoreProvider(Provider):
    """A message store. Besides open_entry, it serves the store table and the spooler."""

    resource_type = ResourceType.MAPI_STORE_PROVIDER

    def store_entryid(self) -> bytes:
        """The long-term entry ID of the store (msg_stores_table's PR_ENTRYID)."""
        raise MapiError(ErrorCode.MAPI_E_CALL_FAILED, "this store has no entry ID")

    def store_props(self) -> dict[str, Any]:
        """The store object's properties; the store table's row takes its columns from it."""
        return {}

    async def open_store(self, flags: int) -> MapiObject:
        """The store object (IMsgStore), for session.open_msg_store; `flags` are MdbFlags."""
        return await self.open_entry(self.store_entryid(), flags)

    # The spooler's side (docs/design.md 7): the Outbox is the queue, on disk.

    async def queued(self) -> list[bytes]:
        """Entry IDs of the messages submitted and not yet sent, oldest first."""
        return []

    async def queued_message(self, entryid: bytes) -> QueuedMessage:
        """One queued message; MAPI_E_NOT_FOUND when it left the queue meanwhile."""
        raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, "this store queues nothing")

    async def finished(
        self, entryid: bytes, *, sent_mime: bytes | None, delete: bool
    ) -> bytes | None:
        """The spooler is done with a queued message: move it to Sent Items (stored as
        `sent_mime`, the bytes that went out, when given) or delete it (`delete`, from
        PR_DELETE_AFTER_SUBMIT or a failure already reported). Returns the Sent Items entry ID."""
        raise MapiError(ErrorCode.MAPI_E_NO_SUPPORT, "this store queues nothing")

    async def deliver(self, mime: bytes) -> bytes:
        """Put a message into the Inbox (a non-delivery report, or mail a transport received)
        and raise fnevNewMail; returns its entry ID."""
        raise MapiError(ErrorCode.MAPI_E_NO_SUPPORT, "this store takes no deliveries")


REMOTE_PROGRESS_IDLE = -1
"""PR_REMOTE_PROGRESS of a transport while nothing is being sent (0-100 while sending)."""


class TransportProvider(Provider):
    resource_type = ResourceType.MAPI_TRANSPORT_PROVIDER
    resource_methods = ResourceMethods.STATUS_VALIDATE_STATE | ResourceMethods.STATUS_FLUSH_QUEUES
    address_types: ClassVar[tuple[str, ...]] = ()

    def status_props(self) -> dict[str, Any]:
        code = StatusCode.STATUS_AVAILABLE | StatusCode.STATUS_OUTBOUND_ENABLED
        return {"PR_STATUS_CODE": int(code)}

    async def flush_queues(self, flags: FlushFlags) -> None:
        """A flush of my queue was asked for (status.flush_queues on my row). The spooler
        does the sending; a transport that keeps a connection may reconnect here."""

    def sender_override(self) -> Identity | None:
        """The From this transport sends as instead of the session's identity (smtp's `from`
        key); None: the spooler uses the session's identity. The spooler writes it in a
        message that names no sender, or the session's identity when no transport sends as
        that; a sender the client chose stays (see sender_addresses)."""
        return None

    def sender_addresses(self) -> tuple[str, ...]:
        """The addresses I send as, for a profile of several accounts: the spooler sends a
        message whose sender (its From, PR_SENT_REPRESENTING_EMAIL_ADDRESS) is one of them
        through me, whatever the transport order (compared on the address part, without
        regard to case; "Name <addr>" is read as addr). () means I send as the session's
        identity. This default: the address of sender_override(), if it names one."""
        own = self.sender_override()
        return (own.email,) if own is not None and own.email else ()

    async def send(self, message: OutgoingMessage) -> SendResult:
        """Send one message to its recipients (those of my address types). Raise
        TransportFailure for a failure of the whole send; permanent refusals of single
        recipients come back in SendResult.refused. The spooler keeps my status row's
        STATUS_OUTBOUND_ACTIVE and PR_REMOTE_PROGRESS; I say why I failed in my own row."""
        raise TransportFailure("this transport cannot send", permanent=True)

    async def send_batch(
        self, messages: Sequence[OutgoingMessage]
    ) -> Sequence[SendResult | TransportFailure]:
        """Send several queued messages, in order (the spooler hands over up to 16 that are
        all for me). Return the outcome of each message tried, in order: its SendResult, or
        the TransportFailure of that message alone. Stop after a temporary failure (the
        rest would fail the same way) or whenever the batch has taken long enough: the
        messages left out of a shorter list stay queued and come again at once. This
        default sends them one by one with send(); a transport that can do better (one
        trip to its thread for all) overrides it."""
        outcomes: list[SendResult | TransportFailure] = []
        for message in messages:
            try:
                outcomes.append(await self.send(message))
            except TransportFailure as failure:
                outcomes.append(failure)
                if not failure.permanent:
                    break
        return outcomes


class MessageService:
    """A message service: a named group of providers with one configuration section."""

    name: ClassVar[str]
    """The installed name, used as `service = "<name>"` in profiles."""
    display_name: ClassVar[str]
    flags: ClassVar[ServiceFlags] = ServiceFlags.SERVICE_NO_PRIMARY_IDENTITY
    providers: ClassVar[tuple[type[Provider], ...]] = ()
    config_schema: ClassVar[dict[str, Any]] = {"type": "object"}
    secret_keys: ClassVar[frozenset[str]] = SECRET_KEYS

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> list[ConfigProblem]:
        """Problems with a configuration: whatever breaks `config_schema`.

        A service with rules a schema cannot say overrides this and adds its own.
        """
        return schema_problems(cls.config_schema, config, SECRET_KEYS | cls.secret_keys)

    @classmethod
    async def configure(cls, config: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """MSG_SERVICE_CONFIGURE, called after a provider's logon said MAPI_E_UNCONFIGURED.

        Return a completed configuration to retry with, or None to retry unchanged.
        """
        return None

    @classmethod
    def identity(cls, config: Mapping[str, Any]) -> Identity | None:
        """The identity this service supplies under `config`, if it can supply one."""
        return None
