"""A session's status table (docs/protocol.md 7.2): its rows and the events their changes make.

While the session logs on, the table is private and changes publish nothing; when the session
goes public, `publish_all` announces every row, and from then on each change is published as
it happens, so the event stream and `daemon.snapshot` always agree.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any

from mapid.constants import ObjectType
from mapid.wire import envelope

RowKey = bytes
Publish = Callable[..., int]

# Columns MAPI computes for every row; providers cannot change them.
_COMPUTED = frozenset({"PR_ENTRYID", "PR_INSTANCE_KEY", "PR_ROWID", "PR_OBJECT_TYPE"})


def changed_row(
    row: Mapping[str, Any],
    props: Mapping[str, Any],
    *,
    update: bool,
    keep: frozenset[str] = _COMPUTED,
) -> dict[str, Any]:
    """`row` after a provider's change: merged (STATUSROW_UPDATE) or replaced, keeping the
    columns in `keep`; a None value removes its column, and the computed ones never change."""
    new = dict(row) if update else {k: v for k, v in row.items() if k in keep}
    for k, v in props.items():
        if k in _COMPUTED:
            continue
        if v is None:
            new.pop(k, None)
        else:
            new[k] = v
    return new


SHARED_ROWS_MAX = 4096
"""Distinct rows kept for sharing (shared_row)."""
_SHARED: dict[tuple[Any, ...], dict[str, Any]] = {}


def shared_row(row: dict[str, Any]) -> dict[str, Any]:
    """The one copy of a row that many sessions have alike. The sessions of a profile
    number their rows alike, so each provider's row is the same in all of them, and
    100 000 sessions then hold one row each, not 100 000 copies. A row is never changed
    in place (`modify` makes a new one), so sharing it is safe."""
    try:
        key = tuple((k, v, type(v)) for k, v in row.items())  # True is not 1 here
        hit = _SHARED.get(key)
    except TypeError:  # an unhashable value (a list): this row stays its own
        return row
    if hit is not None:
        return hit
    if len(_SHARED) >= SHARED_ROWS_MAX:
        del _SHARED[next(iter(_SHARED))]  # the oldest: rows of sessions long gone
    _SHARED[key] = row
    return row


class StatusTable:
    __slots__ = ("_next_rowid", "_publish", "_rows", "session_id", "topic")

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.topic = envelope.status_topic(session_id)
        self._rows: dict[RowKey, dict[str, Any]] = {}
        self._next_rowid = 1
        self._publish: Publish | None = None

    def __len__(self) -> int:
        return len(self._rows)

    def rows(self) -> list[dict[str, Any]]:
        return list(self._rows.values())

    def get(self, key: RowKey) -> dict[str, Any] | None:
        return self._rows.get(key)

    def go_public(self, publish: Publish) -> None:
        """Publish every row as added, then publish each later change."""
        self._publish = publish
        for key, row in self._rows.items():
            self._emit("TABLE_ROW_ADDED", key, row)

    def add(self, entryid_for: Callable[[int], bytes], props: Mapping[str, Any]) -> RowKey:
        """Add a row; returns its key (its PR_INSTANCE_KEY)."""
        rowid = self._next_rowid
        self._next_rowid += 1
        row: dict[str, Any] = {
            k: v for k, v in props.items() if k not in _COMPUTED and v is not None
        }
        row["PR_ENTRYID"] = entryid_for(rowid)
        row["PR_INSTANCE_KEY"] = struct.pack(">I", rowid)
        row["PR_ROWID"] = rowid
        row["PR_OBJECT_TYPE"] = int(ObjectType.MAPI_STATUS)
        row = shared_row(row)
        key: RowKey = row["PR_INSTANCE_KEY"]  # the shared row's bytes: one copy for all
        self._rows[key] = row
        self._emit("TABLE_ROW_ADDED", key, row)
        return key

    def modify(self, key: RowKey, props: Mapping[str, Any], *, update: bool = True) -> bool:
        """Merge (STATUSROW_UPDATE) or replace a row's own columns; True when it changed."""
        row = self._rows.get(key)
        if row is None:
            return False
        new = changed_row(row, props, update=update)
        if new == row:
            return False
        new = shared_row(new)
        self._rows[key] = new
        self._emit("TABLE_ROW_MODIFIED", key, new)
        return True

    def delete(self, key: RowKey) -> bool:
        if self._rows.pop(key, None) is None:
            return False
        self._emit("TABLE_ROW_DELETED", key, None)
        return True

    def _emit(self, kind: str, key: RowKey, row: dict[str, Any] | None) -> None:
        if self._publish is None:
            return
        fields: dict[str, Any] = {"session": self.session_id, "instance_key": key}
        if row is not None:
            fields["row"] = row
        self._publish(self.topic, kind, **fields)
