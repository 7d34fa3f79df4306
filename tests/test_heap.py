"""The heap freezer (mapid/daemon/system/heap.py) on this process's real collector: it
freezes after start-up and after a burst of logons, and unfreezes once the sessions fell
to half, so a frozen session's cyclic garbage is not kept for ever."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from mapid.daemon.system.heap import FREEZE_EVERY, UNFREEZE_MIN, HeapFreezer


@pytest.fixture
def collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    gc.unfreeze()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_freezes_after_bursts_and_unfreezes_when_half_are_gone(collector: None) -> None:
    sessions = [0]
    freezer = HeapFreezer(lambda: sessions[0])
    freezer.freeze()  # what start() does first
    assert gc.get_freeze_count() > 0
    gc.unfreeze()

    sessions[0] = FREEZE_EVERY - 1
    freezer.step()
    assert gc.get_freeze_count() == 0  # not a burst yet

    many = 3 * max(FREEZE_EVERY, UNFREEZE_MIN)
    sessions[0] = many
    kept = [[object()] for _ in range(1000)]  # tracked objects a burst of logons made
    freezer.step()
    frozen = gc.get_freeze_count()
    assert frozen >= len(kept)

    sessions[0] = many - UNFREEZE_MIN + 1
    freezer.step()
    assert gc.get_freeze_count() == frozen  # fewer, but not half gone

    sessions[0] = many // 2 - 1
    freezer.step()
    assert gc.get_freeze_count() == 0  # half gone: the collector sees the heap again

    sessions[0] += FREEZE_EVERY - 1
    freezer.step()
    assert gc.get_freeze_count() == 0  # counted from the unfreeze, not from the old mark
