"""The table arguments of docs/protocol.md 5: columns, restriction, sort, offset, limit.

Every op that returns rows parses its arguments with `TableQuery.parse` and answers with
`TableQuery.run`, so all tables filter, sort and page the same way. Arguments are checked
completely before any row is looked at: a bad restriction is an error even on an empty table.

Providers hand over whole row lists (a folder of 100 000 messages is one list), so `run` does
as little per row as it can: with no restriction and no sort only the page is copied, and a
sort computes each row's key once, in C where the column holds one plain type.
"""

from __future__ import annotations

import heapq
import itertools
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mapid.errors import ErrorCode, MapiError
from mapid.proptags import resolve_tag, tag_name

Row = Mapping[str, Any]
Predicate = Callable[[Row], bool]

TABLE_ARG_NAMES = ("columns", "restriction", "sort", "offset", "limit")
_RELOPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: bool(a == b),
    "ne": lambda a, b: bool(a != b),
    "lt": lambda a, b: bool(a < b),
    "le": lambda a, b: bool(a <= b),
    "gt": lambda a, b: bool(a > b),
    "ge": lambda a, b: bool(a >= b),
}


def _aware(value: datetime) -> datetime:
    """Times on the wire are UTC; a naive one from a provider is read as UTC too."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


_MATCHES = ("full", "prefix", "substring")
INSTANCE_KEY = "PR_INSTANCE_KEY"


def _bad(message: str) -> MapiError:
    return MapiError(ErrorCode.MAPI_E_INVALID_PARAMETER, message)


def canonical_tag(value: object, where: str) -> str:
    """The key rows use for a tag given by name or hex: its canonical name."""
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise _bad(f"{where}: a property tag is a name or an 8-digit hex string")
    try:
        return tag_name(resolve_tag(value))
    except MapiError as exc:
        raise _bad(f"{where}: {exc.message}") from None


def _comparable(a: object, b: object) -> bool:
    numeric = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    if isinstance(a, numeric) and isinstance(b, numeric):
        return True
    return type(a) is type(b)


def compile_restriction(node: object, path: str = "restriction") -> Predicate:
    """Turn a restriction map into a predicate, checking its shape on the way."""
    if not isinstance(node, Mapping):
        raise _bad(f"{path} must be a map")
    if "and" in node or "or" in node:
        kind = "and" if "and" in node else "or"
        children = node[kind]
        if not isinstance(children, list):
            raise _bad(f"{path}.{kind} must be a list of restrictions")
        preds = [compile_restriction(c, f"{path}.{kind}[{i}]") for i, c in enumerate(children)]
        if kind == "and":
            return lambda row: all(p(row) for p in preds)
        return lambda row: any(p(row) for p in preds)
    if "not" in node:
        inner = compile_restriction(node["not"], f"{path}.not")
        return lambda row: not inner(row)
    if "prop" in node:
        tag = canonical_tag(node["prop"], f"{path}.prop")
        op = node.get("op")
        if op not in _RELOPS:
            raise _bad(f"{path}.op must be one of {', '.join(_RELOPS)}")
        if "value" not in node:
            raise _bad(f"{path}.value is missing")
        value = node["value"]
        if isinstance(value, datetime):
            value = _aware(value)
        compare = _RELOPS[str(op)]

        def prop_pred(row: Row) -> bool:
            if tag not in row:
                return False
            have = row[tag]
            if not _comparable(have, value):
                return bool(op == "ne")
            if isinstance(have, datetime):
                have = _aware(have)
            return compare(have, value)

        return prop_pred
    if "bitmask" in node:
        tag = canonical_tag(node["bitmask"], f"{path}.bitmask")
        mask = node.get("mask")
        if not isinstance(mask, int) or isinstance(mask, bool):
            raise _bad(f"{path}.mask must be an int")
        test = node.get("test")
        if test not in ("nez", "eqz"):
            raise _bad(f"{path}.test must be 'nez' or 'eqz'")
        want_set = test == "nez"

        def bitmask_pred(row: Row) -> bool:
            have = row.get(tag)
            if not isinstance(have, int) or isinstance(have, bool):
                return False
            return bool(have & mask) is want_set

        return bitmask_pred
    if "exists" in node:
        tag = canonical_tag(node["exists"], f"{path}.exists")
        return lambda row: tag in row
    if "content" in node:
        tag = canonical_tag(node["content"], f"{path}.content")
        text = node.get("value")
        if not isinstance(text, (str, bytes)):
            raise _bad(f"{path}.value must be a str (or bin)")
        match = node.get("match", "full")
        if match not in _MATCHES:
            raise _bad(f"{path}.match must be one of {', '.join(_MATCHES)}")
        ignore_case = node.get("ignore_case", False)
        if not isinstance(ignore_case, bool):
            raise _bad(f"{path}.ignore_case must be a bool")
        return _content_predicate(tag, text, str(match), ignore_case)
    raise _bad(f"{path}: unknown restriction (use and, or, not, prop, bitmask, exists, content)")


def _content_predicate(tag: str, text: str | bytes, match: str, ignore_case: bool) -> Predicate:
    def fold(value: Any) -> Any:
        return value.casefold() if ignore_case and isinstance(value, str) else value

    needle = fold(text)

    def content_pred(row: Row) -> bool:
        have = row.get(tag)
        if not isinstance(have, type(text)):
            return False
        hay = fold(have)
        if match == "full":
            return bool(hay == needle)
        if match == "prefix":
            return bool(hay.startswith(needle))
        return needle in hay

    return content_pred


_TYPE_RANK: dict[type, int] = {bool: 0, int: 1, float: 1, str: 2, bytes: 3, datetime: 4}


def _value_key(value: Any) -> tuple[int, Any]:
    """Orders values of mixed types: by type first (bool, numbers, str, bin, time, other)."""
    kind = type(value)
    rank = _TYPE_RANK.get(kind)
    if rank is None:
        if isinstance(value, datetime):
            return (4, _aware(value).timestamp())
        return (9, repr(value))
    if rank == 4:
        return (4, _aware(value).timestamp())
    return (rank, value)


_MISSING = object()
_PLAIN = (int, float, str, bytes, bool)


def _sort_keys(values: list[Any]) -> list[Any]:
    """One key per value: the values themselves where they are of one orderable type (aware
    datetimes included: a naive one among them makes the sort fall back to `_value_key`)."""
    kinds = set(map(type, values))
    if len(kinds) == 1 and next(iter(kinds)) in _PLAIN:
        return values
    if kinds <= {int, float} or kinds == {datetime}:
        return values
    return [_value_key(v) for v in values]


def _monotone(keys: list[Any]) -> bool:
    """Whether the keys are already in order, either way (C-speed; stops at the first break)."""
    tail = itertools.islice(keys, 1, None)
    return all(map(operator.le, keys, tail)) or all(
        map(operator.ge, keys, itertools.islice(keys, 1, None))
    )


def _sort_by(rows: list[Row], tag: str, descending: bool, want: int | None) -> list[Row]:
    """Rows sorted by `tag` (stable, so earlier passes survive), those without it last.

    Each row is asked for the column once. With `want`, only the first `want` rows are
    needed: a heap finds them without sorting the rest (heapq.nsmallest is documented as
    `sorted(...)[:n]`, ties included).
    """
    values = [row.get(tag, _MISSING) for row in rows]
    if _MISSING in values:  # C-speed: an identity test before any ==
        present = [i for i, v in enumerate(values) if v is not _MISSING]
        keys = [values[i] for i in present]
        absent = [rows[i] for i, v in enumerate(values) if v is _MISSING]
    else:
        present, keys, absent = list(range(len(rows))), values, []
    keys = _sort_keys(keys)

    def order(keys: list[Any]) -> list[int]:
        if want is not None and want < len(keys) // 4 and not _monotone(keys):
            pick = heapq.nlargest if descending else heapq.nsmallest
            return pick(want, range(len(keys)), key=keys.__getitem__)
        # Timsort takes an ordered column (a folder by date, its natural order) in one pass,
        # where a heap would replace its top at every row.
        return sorted(range(len(keys)), key=keys.__getitem__, reverse=descending)

    try:
        picked = order(keys)
    except TypeError:  # naive beside aware times, or types that do not compare
        picked = order([_value_key(v) for v in keys])
    out = [rows[present[i]] for i in picked]
    return out if want is not None and len(out) >= want else out + absent


@dataclass(frozen=True)
class TableQuery:
    columns: tuple[str, ...] | None = None
    restriction: Predicate | None = None
    sort: tuple[tuple[str, bool], ...] = ()
    """(tag, descending) pairs, most significant first."""
    offset: int = 0
    limit: int | None = None

    @classmethod
    def parse(cls, args: Mapping[str, Any]) -> TableQuery:
        columns = args.get("columns")
        cols: tuple[str, ...] | None = None
        if columns is not None:
            if not isinstance(columns, list) or not columns:
                raise _bad("columns must be a non-empty list of property tags")
            cols = tuple(canonical_tag(c, f"columns[{i}]") for i, c in enumerate(columns))
        restriction = args.get("restriction")
        pred = None if restriction is None else compile_restriction(restriction)
        sort_arg = args.get("sort")
        sort: list[tuple[str, bool]] = []
        if sort_arg is not None:
            if not isinstance(sort_arg, list):
                raise _bad("sort must be a list of [tag, 'asc'|'desc']")
            for i, item in enumerate(sort_arg):
                if not isinstance(item, list) or len(item) != 2 or item[1] not in ("asc", "desc"):
                    raise _bad(f"sort[{i}] must be [tag, 'asc'|'desc']")
                sort.append((canonical_tag(item[0], f"sort[{i}]"), item[1] == "desc"))
        offset = args.get("offset", 0)
        if offset is None:
            offset = 0
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise _bad("offset must be an int >= 0")
        limit = args.get("limit")
        if limit is not None and (
            not isinstance(limit, int) or isinstance(limit, bool) or limit < 1
        ):
            raise _bad("limit must be an int >= 1 (MAPI's QueryRows takes no count of 0)")
        return cls(cols, pred, tuple(sort), offset, limit)

    def run(self, rows: Iterable[Row]) -> dict[str, Any]:
        """Filter, sort, page and project; `total` counts matches before paging."""
        end = None if self.limit is None else self.offset + self.limit
        if self.restriction is None and not self.sort:
            seq: Sequence[Row] = rows if isinstance(rows, Sequence) else list(rows)
            page = seq[self.offset : end]  # the rows are never copied, only the page
            return {"rows": [self.project(r) for r in page], "total": len(seq)}
        pred = self.restriction
        matched = list(rows) if pred is None else [r for r in rows if pred(r)]
        total = len(matched)
        passes = list(reversed(self.sort))  # least significant first, each pass stable
        for i, (tag, descending) in enumerate(passes):
            last = i == len(passes) - 1
            matched = _sort_by(matched, tag, descending, end if last else None)
        page = matched[self.offset : end]
        return {"rows": [self.project(r) for r in page], "total": total}

    def project(self, row: Row) -> dict[str, Any]:
        if self.columns is None:
            return dict(row)
        out = {c: row[c] for c in self.columns if c in row}
        if INSTANCE_KEY in row:
            out[INSTANCE_KEY] = row[INSTANCE_KEY]
        return out
