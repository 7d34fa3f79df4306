"""Keeping the garbage collector's pauses short while the daemon holds many sessions.

A full collection scans every object the collector tracks: it took 300 ms at 10 000
sessions and 730 ms at 25 000, and every client waits that long. Sessions live long, and
what one holds is freed by reference counting when it logs off, so `HeapFreezer` moves the
long-lived heap out of the collector's sight with `gc.freeze()`:

- once start-up is done (modules, configuration, the autologon session);
- whenever FREEZE_EVERY more sessions are logged on than at the last freeze (a burst of
  logons), checked as each session goes public (a timer alone came seconds late while the
  loop was busy logging 3 000 sessions on a second, and a full collection of the unfrozen
  heap took 576 ms), after a young collection so that fresh garbage is not frozen with
  them.

What is frozen is never collected while frozen, so cyclic garbage of a frozen session that
logs off waits. When the sessions have fallen to half of what was frozen (and at least
UNFREEZE_MIN went), the heap is unfrozen and the collector sees it again: a smaller heap by
then, and the rare full collection that follows is the price of not leaking.

The young generation's threshold is YOUNG_THRESHOLD allocations rather than 700: a young
collection costs about the same per object either way, and a logon allocates thousands.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Callable

__all__ = ["CHECK_S", "FREEZE_EVERY", "UNFREEZE_MIN", "YOUNG_THRESHOLD", "HeapFreezer"]

log = logging.getLogger(__name__)

CHECK_S = 0.25
FREEZE_EVERY = 250
"""More sessions than at the last freeze that make the next one."""
UNFREEZE_MIN = 2_000
"""Fewer sessions than at the last freeze (and below half) that unfreeze the heap."""
YOUNG_THRESHOLD = 20_000


class HeapFreezer:
    """Freezes the heap after start-up and after bursts of logons (module docstring)."""

    def __init__(self, sessions: Callable[[], int]) -> None:
        self._sessions = sessions
        self._frozen_at = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        _gen0, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(YOUNG_THRESHOLD, gen1, gen2)
        self.freeze()
        self._task = asyncio.ensure_future(self._run())

    def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()

    def freeze(self) -> None:
        gc.collect(1)  # the young generations only: what is garbage now is not frozen
        gc.freeze()
        self._frozen_at = self._sessions()
        # Not gc.get_freeze_count(): it walks the whole frozen heap (O(heap) at every freeze,
        # most of the loop's time at 30 000 sessions, found with py-spy).
        log.debug("heap frozen at %d sessions", self._frozen_at)

    def step(self) -> None:
        """One check: as each session goes public, and every CHECK_S (for logoffs). Cheap:
        two counts compared."""
        now = self._sessions()
        if now - self._frozen_at >= FREEZE_EVERY:
            self.freeze()
        elif self._frozen_at - now >= UNFREEZE_MIN and now < self._frozen_at / 2:
            gc.unfreeze()
            log.debug("heap unfrozen: %d sessions, %d at the last freeze", now, self._frozen_at)
            self._frozen_at = now

    async def _run(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                await asyncio.sleep(CHECK_S)
                self.step()
