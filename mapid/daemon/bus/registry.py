"""The registry of operations and the checking of their arguments (docs/protocol.md 3 and 6).

Each op declares whether it needs a session token, whether it works on a handle, and a
checker for each argument. The dispatcher checks in the order docs/protocol.md 3.5 gives before the
op's code runs, so handlers receive arguments of the right types and never re-check them.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mapid import entryid as eid
from mapid.constants import parse_flags
from mapid.daemon.sessions.table_query import TABLE_ARG_NAMES, TableQuery
from mapid.errors import ErrorCode, MapiError

if TYPE_CHECKING:
    from mapid.daemon.sessions.handles import OpenObject
    from mapid.daemon.sessions.session import Member, Session


def _bad(name: str, what: str) -> MapiError:
    return MapiError(
        ErrorCode.MAPI_E_INVALID_PARAMETER, f"argument {name!r} {what}", details={"arg": name}
    )


_MISSING = object()


@dataclass(frozen=True)
class Arg:
    """One argument: how to check it, and whether it must be there."""

    check: Callable[[object, str], Any]
    required: bool = False
    default: Any = None
    nullable: bool = False
    """Present but nil is allowed (and passed on as None)."""


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def Str(*, required: bool = False, nullable: bool = False, max_len: int = 1 << 20) -> Arg:
    def check(value: object, name: str) -> str:
        if not isinstance(value, str):
            raise _bad(name, "must be a str")
        if len(value) > max_len:
            raise _bad(name, f"is longer than {max_len} characters")
        return value

    return Arg(check, required, nullable=nullable)


def Int(*, required: bool = False, low: int | None = None, default: int | None = None) -> Arg:
    def check(value: object, name: str) -> int:
        if not is_int(value):
            raise _bad(name, "must be an int")
        assert isinstance(value, int)
        if low is not None and value < low:
            raise _bad(name, f"must be >= {low}")
        return value

    return Arg(check, required, default)


def Number(*, required: bool = False, low: float = 0) -> Arg:
    def check(value: object, name: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise _bad(name, "must be a number")
        if value < low:
            raise _bad(name, f"must be >= {low:g}")
        return float(value)

    return Arg(check, required)


def Bool(*, default: bool = False) -> Arg:
    def check(value: object, name: str) -> bool:
        if not isinstance(value, bool):
            raise _bad(name, "must be true or false")
        return value

    return Arg(check, False, default)


def Bin(*, required: bool = False, nullable: bool = False) -> Arg:
    def check(value: object, name: str) -> bytes:
        if not isinstance(value, bytes):
            raise _bad(name, "must be bin")
        return value

    return Arg(check, required, nullable=nullable)


def EntryId(*, required: bool = True, nullable: bool = False) -> Arg:
    """An entry ID: bin of at least 20 bytes (else MAPI_E_INVALID_ENTRYID)."""

    def check(value: object, name: str) -> bytes:
        if not isinstance(value, bytes):
            raise _bad(name, "must be bin (an entry ID)")
        return eid.check(value, name)

    return Arg(check, required, nullable=nullable)


def EntryIdList(*, required: bool = True, min_items: int = 1) -> Arg:
    """A list of entry IDs, each checked as `EntryId` is (`entryids[2]` names the bad one)."""

    def check(value: object, name: str) -> list[bytes]:
        if not isinstance(value, list):
            raise _bad(name, "must be a list of entry IDs (bin)")
        if len(value) < min_items:
            raise _bad(name, f"must hold at least {min_items} entry ID")
        out = []
        for i, item in enumerate(value):
            where = f"{name}[{i}]"
            if not isinstance(item, bytes):
                raise _bad(where, "must be bin (an entry ID)")
            out.append(eid.check(item, where))
        return out

    return Arg(check, required)


def Map(*, required: bool = False) -> Arg:
    def check(value: object, name: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise _bad(name, "must be a map")
        return value

    return Arg(check, required)


def Props(*, required: bool = False) -> Arg:
    """A PROPS map (docs/protocol.md 5): tag names to values; the provider judges each tag."""

    def check(value: object, name: str) -> dict[str, Any]:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise _bad(name, "must be a map of tag names to values")
        return value

    return Arg(check, required)


def StrList(*, required: bool = False) -> Arg:
    def check(value: object, name: str) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _bad(name, "must be a list of str")
        return value

    return Arg(check, required)


def Flags(enum_cls: type[enum.IntFlag] | type[enum.IntEnum], *, required: bool = False) -> Arg:
    """A flags argument: the integer bitmask or a list of names (docs/protocol.md 3.6)."""

    def check(value: object, name: str) -> Any:
        return parse_flags(enum_cls, value, field=name)

    default: Any = None
    if not required and (
        issubclass(enum_cls, enum.IntFlag) or any(member.value == 0 for member in enum_cls)
    ):
        default = enum_cls(0)
    return Arg(check, required, default)


def _table_check(value: object, name: str) -> object:
    return value


TABLE_ARGS: dict[str, Arg] = {name: Arg(_table_check) for name in TABLE_ARG_NAMES}


@dataclass
class Reply:
    """A handler's answer when it carries a MAPI warning."""

    result: dict[str, Any]
    warning: str | None = None


@dataclass
class OpContext:
    """Everything a handler may need about the request it serves."""

    daemon: Any
    identity: bytes
    req_id: object
    session: Session | None = None
    member: Member | None = None
    obj: OpenObject | None = None
    """The object `args.handle` names, for ops that take a handle."""
    table: TableQuery | None = None
    """The parsed table arguments, for ops that return rows."""


Handler = Callable[[OpContext, dict[str, Any]], Awaitable[Any] | Any]


@dataclass
class OpSpec:
    name: str
    handler: Handler
    token: bool
    args: dict[str, Arg]
    token_optional: bool = False
    """Takes a token or works without one (the `services.*` ops: token or args.profile)."""
    handle: bool = False
    table: bool = False
    is_async: bool = True
    locks_session: bool = True
    """Runs under the session's lock (every op but the few that must not wait)."""
    doc: str = ""

    def parse_args(self, raw: object) -> dict[str, Any]:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise MapiError(ErrorCode.MAPI_E_INVALID_PARAMETER, "args must be a map")
        parsed: dict[str, Any] = {}
        for name, spec in self.args.items():
            value = raw.get(name, _MISSING)
            if value is _MISSING or (value is None and not spec.nullable):
                if spec.required:
                    raise _bad(name, "is required")
                parsed[name] = spec.default
                continue
            parsed[name] = None if value is None else spec.check(value, name)
        return parsed


class OpRegistry:
    def __init__(self) -> None:
        self.ops: dict[str, OpSpec] = {}

    def op(
        self,
        name: str,
        *,
        token: bool,
        args: Mapping[str, Arg] | None = None,
        token_optional: bool = False,
        handle: bool = False,
        table: bool = False,
        locks_session: bool = True,
    ) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            specs = dict(args or {})
            if handle:
                specs["handle"] = Int(required=True, low=0)
            if table:
                specs.update(TABLE_ARGS)
            self.ops[name] = OpSpec(
                name,
                fn,
                token,
                specs,
                token_optional=token_optional,
                handle=handle,
                table=table,
                is_async=inspect.iscoroutinefunction(fn),
                locks_session=locks_session,
                doc=(fn.__doc__ or "").strip(),
            )
            return fn

        return register

    def get(self, name: str) -> OpSpec | None:
        return self.ops.get(name)

    def names(self) -> list[str]:
        return sorted(self.ops)


REGISTRY = OpRegistry()
op = REGISTRY.op
