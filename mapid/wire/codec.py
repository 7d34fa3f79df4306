"""MessagePack encoding with the limits of docs/protocol.md 2.

Both sides use this module, so the limits the daemon enforces on untrusted input are the
same ones it keeps its own replies within.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any

import msgpack

MAX_PAYLOAD = 4 * 1024 * 1024
"""One payload at most (also set as ZeroMQ's MAXMSGSIZE on the daemon's sockets)."""
MAX_DEPTH = 32
MAX_STR = 1024 * 1024
"""A str or bin value at most, in bytes."""
MAX_ITEMS = 100_000
"""An array or map at most, in items."""
MAX_ID_BYTES = 64


class CodecError(ValueError):
    """A payload that breaks the encoding or one of the limits."""


def pack(obj: object) -> bytes:
    """Encode with spec 2.0 types: bytes as bin, str as UTF-8, datetimes as timestamps."""
    data: bytes = msgpack.packb(obj, use_bin_type=True, datetime=True)
    return data


def unpack(data: bytes) -> Any:
    """Decode untrusted bytes, enforcing every limit; raise `CodecError` saying which broke."""
    if len(data) > MAX_PAYLOAD:
        raise CodecError(f"payload of {len(data)} bytes exceeds {MAX_PAYLOAD}")
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            timestamp=3,
            strict_map_key=False,
            max_str_len=MAX_STR,
            max_bin_len=MAX_STR,
            max_array_len=MAX_ITEMS,
            max_map_len=MAX_ITEMS,
            max_ext_len=MAX_STR,
        )
    except msgpack.ExtraData as exc:
        raise CodecError("trailing bytes after the payload") from exc
    except UnicodeDecodeError as exc:
        raise CodecError("a str value is not valid UTF-8") from exc
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise CodecError(f"not valid MessagePack: {exc}") from exc
    if _containers_at_most(data) > MAX_DEPTH:  # else it cannot nest deeper: no walk
        _check_depth(obj)
    return obj


_CONTAINER_MARKS = bytes([*range(0x80, 0xA0), 0xDC, 0xDD, 0xDE, 0xDF])
"""The first bytes of msgpack's maps and arrays (fixmap, fixarray, array 16/32, map 16/32)."""


def _containers_at_most(data: bytes) -> int:
    """An upper bound of the maps and arrays in `data` (a string's bytes may look like
    one too): one pass in C, where walking the decoded payload costs microseconds."""
    return len(data) - len(data.translate(None, _CONTAINER_MARKS))


_SCALARS = frozenset({str, bytes, int, float, bool, type(None)})
"""What msgpack decodes most: never nested, so never pushed (an isinstance of Mapping on
each one was most of this check's cost, on every request)."""


def _check_depth(obj: object) -> None:
    # Iterative: a hostile payload must not be able to blow Python's own stack either.
    stack: list[tuple[object, int]] = [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, tuple)):
            children: Iterable[object] = item
        elif isinstance(item, Mapping):
            children = itertools.chain.from_iterable(item.items())
        else:
            continue
        if depth > MAX_DEPTH:
            raise CodecError(f"nesting deeper than {MAX_DEPTH}")
        stack.extend((child, depth + 1) for child in children if type(child) not in _SCALARS)


def valid_id(value: object) -> bool:
    """A request id is a str, an int or a bin of at most 64 bytes (docs/protocol.md 3.2)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass")) <= MAX_ID_BYTES
    if isinstance(value, bytes):
        return len(value) <= MAX_ID_BYTES
    return False


_NO_ID = object()


def salvage_id(data: bytes) -> object:
    """Read the `id` of a payload that broke a limit, so it can still get an error reply.

    Walks the top-level map key by key and skips the other values unread, so a value that
    broke a limit does not stop us. Returns the id, or `None` when no usable id is there.
    """
    if len(data) > MAX_PAYLOAD:
        return None
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, timestamp=3)
    unpacker.feed(data)
    try:
        count = unpacker.read_map_header()
        found: object = _NO_ID
        for _ in range(min(count, MAX_ITEMS)):
            key = unpacker.unpack()
            if key == "id":
                found = unpacker.unpack()
                break
            unpacker.skip()
    except Exception:  # any decoding failure means: no id we can trust
        return None
    if found is _NO_ID or not valid_id(found):
        return None
    return found
