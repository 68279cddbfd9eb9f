"""Sliding-window rate limits: at most ``limit`` events per key in any ``window`` seconds.

One implementation for every edge (redemption pages, callbacks and the partner API per IP,
chat messages per user). Counts live in this process; each worker limits on its own.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable


class SlidingWindow:
    """At most ``limit`` events per key in any ``window`` seconds, in this process."""

    def __init__(
        self, limit: int, window: float = 60.0, *, max_keys: int = 50_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self.clock = clock
        self._events: dict[str, deque[float]] = {}

    def allow(self, key: str) -> bool:
        """Count one event for ``key``; False (and nothing counted) when over the limit."""
        now = self.clock()
        events = self._events.get(key)
        if events is None:
            if len(self._events) >= self.max_keys:
                self._prune(now)
            events = self._events[key] = deque()
        while events and events[0] <= now - self.window:
            events.popleft()
        if len(events) >= self.limit:
            return False
        events.append(now)
        return True

    def retry_after(self, key: str) -> int:
        """Whole seconds until ``key`` may send again (at least 1)."""
        events = self._events.get(key)
        if not events or len(events) < self.limit:
            return 1
        return max(1, math.ceil(events[0] + self.window - self.clock()))

    def _prune(self, now: float) -> None:
        # Forget clients quiet for a whole window; if a flood of addresses is still too
        # many, forget the oldest half rather than grow without bound.
        self._events = {k: v for k, v in self._events.items() if v and v[-1] > now - self.window}
        if len(self._events) >= self.max_keys:
            keep = sorted(self._events.items(), key=lambda item: item[1][-1])[len(self._events) // 2 :]
            self._events = dict(keep)
