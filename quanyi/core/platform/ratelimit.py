"""Sliding-window rate limits: at most ``limit`` events per key in any ``window`` seconds.

One interface for every edge (redemption pages, callbacks and the partner API per IP, chat
messages per user): ``await limiter.hit(key)`` counts one event and returns 0, or refuses it
and returns the seconds to wait. ``SlidingWindow`` counts in this process; with
``QUANYI_REDIS_URL`` set, ``RedisWindow`` keeps the counts in Redis so every process behind a
load balancer shares one limit (and falls back to counting in this process, loudly, while
Redis is unreachable — a limit is never a reason to fail a request).
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Limiter(Protocol):
    async def hit(self, key: str) -> int:
        """Count one event for ``key``: 0 when allowed, else whole seconds until it may retry."""
        ...


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

    async def hit(self, key: str) -> int:
        return 0 if self.allow(key) else self.retry_after(key)

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


# Atomic per key: drop events older than the window, refuse when full (answering the seconds
# until the oldest leaves), else add this one. Redis's own clock: every process agrees.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(1, math.ceil((tonumber(oldest[2]) + window - now) / 1000))
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
return 0
"""


class RedisWindow:
    """``SlidingWindow`` with its counts in Redis, shared by every process using ``name``."""

    def __init__(self, client: Any, name: str, limit: int, window: float = 60.0) -> None:
        from redis.exceptions import RedisError

        self.client, self.name, self.limit, self.window = client, name, limit, window
        self._unreachable: tuple[type[BaseException], ...] = (RedisError, OSError)
        self.fallback = SlidingWindow(limit, window)
        self._script = client.register_script(_SCRIPT)
        self._failing = False

    async def hit(self, key: str) -> int:
        try:
            wait = await self._script(
                keys=[f"quanyi:limit:{self.name}:{key}"],
                args=[int(self.window * 1000), self.limit, secrets.token_hex(8)],
            )
        except self._unreachable as exc:
            if not self._failing:
                log.warning(
                    "rate limit %s: Redis unreachable (%s); counting in this process", self.name, type(exc).__name__
                )
                self._failing = True
            return await self.fallback.hit(key)
        if self._failing:
            log.warning("rate limit %s: Redis reachable again", self.name)
            self._failing = False
        return int(wait)


# One client (one connection pool) per Redis URL and event loop: a pool's connections belong to
# the loop that opened them, so a client made in a loop that has since closed is never reused.
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Any]] = weakref.WeakKeyDictionary()


def make_limiter(redis_url: str, name: str, limit: int, window: float = 60.0) -> Limiter:
    """A Redis-shared limiter when ``redis_url`` is set, else one counting in this process."""
    if not redis_url:
        return SlidingWindow(limit, window)
    try:
        clients = _clients.setdefault(asyncio.get_running_loop(), {})
    except RuntimeError:  # built outside a loop: a client of its own
        clients = {}
    client = clients.get(redis_url)
    if client is None:
        from redis.asyncio import Redis

        client = clients[redis_url] = Redis.from_url(
            redis_url, socket_connect_timeout=0.5, socket_timeout=0.5, retry_on_timeout=False
        )
    return RedisWindow(client, name, limit, window)
