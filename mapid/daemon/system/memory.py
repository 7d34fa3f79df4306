"""Giving memory back to the system once a burst is over (issue 19).

CPython returns an arena of small objects to the system only when it is wholly free, and
glibc keeps freed heap memory for reuse unless asked: after a burst of 100 000 requests the
daemon's resident size stayed where the burst left it. `give_back` asks glibc
(`malloc_trim`, a public libc call) to return what it can. It runs no garbage collection:
what a purge frees holds no cycles and is gone by reference counting, and a full collection
over a daemon holding many sessions would stall the loop. The server calls it only after
a purge that freed a good deal while idle.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from typing import cast


def _load_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        function = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None  # not glibc (musl has no malloc_trim): collecting is all we can do
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return cast("Callable[[int], int]", function)


_malloc_trim = _load_malloc_trim()


def give_back() -> None:
    """Hand freed heap pages back to the system."""
    if _malloc_trim is not None:
        _malloc_trim(0)
