"""A recharge supplier simulator speaking the generic protocol, for the demo and the tests.

It misbehaves on demand the way real suppliers do: it fails a share of orders, sends its
callbacks late, twice, out of order or never, and hangs past the caller's timeout on a
share of requests. Every random choice is derived from the seed and the order number, so
a seeded run decides the same way whatever order the requests arrive in. Orders live in
memory; an order number is credited at most once, however often it is placed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import socket
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from quanyi.core.errors import CallbackRejected, InvalidInput
from quanyi.core.money import format_minor
from quanyi.core.suppliers.base import RechargeRequest, RechargeState, check_order_number
from quanyi.core.suppliers.generic import decode, encode, query_body, signed_headers, verify_signature

log = logging.getLogger("quanyi.supplier_sim")

DEFAULT_SECRET = "quanyi-supplier-sim"
DEFAULT_PORT = 8090
CALLBACK_TIMEOUT = 10.0


@dataclass(frozen=True)
class SimOptions:
    secret: str = DEFAULT_SECRET
    # Shares between 0 and 1 of orders that end failed and of requests that hang.
    fail_rate: float = 0.0
    timeout_rate: float = 0.0
    # How long a hanging request waits before answering (longer than any client's timeout).
    hang_seconds: float = 60.0
    # Seconds from accepting an order to its outcome; None = it stays processing until
    # ``SupplierSim.finish`` decides it (tests that need an order caught mid-way).
    complete_after: float | None = 0.0
    callback_delay: float = 0.0
    duplicate_callbacks: bool = False
    # After the final callback, send a stale ``processing`` one.
    out_of_order: bool = False
    callbacks: bool = True
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("fail_rate", "timeout_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise InvalidInput(f"{name.replace('_', '-')} is a share between 0 and 1")
        for name in ("hang_seconds", "callback_delay"):
            if getattr(self, name) < 0:
                raise InvalidInput(f"{name.replace('_', '-')} cannot be negative")
        if self.complete_after is not None and self.complete_after < 0:
            raise InvalidInput("complete-after cannot be negative")
        if not self.secret:
            raise InvalidInput("the simulator needs a secret")


@dataclass
class SimOrder:
    request: RechargeRequest
    supplier_order_id: str
    state: RechargeState = "processing"
    reason: str | None = None
    created_at: int = field(default_factory=lambda: int(time.time()))
    updated_at: int = field(default_factory=lambda: int(time.time()))

    def as_json(self) -> dict[str, Any]:
        r = self.request
        return {
            "order_number": r.order_number,
            "supplier_order_id": self.supplier_order_id,
            "state": self.state,
            "reason": self.reason,
            "product_code": r.product_code,
            "account": r.account,
            "amount": r.amount,
            "currency": r.currency,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True)
class SentCallback:
    order_number: str
    state: RechargeState
    # The HTTP status answered; None when no answer came (refused connection, timeout).
    status: int | None
    at: float


class SupplierSim:
    """``async with SupplierSim(SimOptions(...)) as sim:`` serves on ``sim.base_url``."""

    def __init__(self, options: SimOptions | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.options = options or SimOptions()
        self.host = host
        self.port = port
        self.seed = self.options.seed if self.options.seed is not None else secrets.randbits(64)
        self.orders: dict[str, SimOrder] = {}
        self.credits: Counter[str] = Counter()
        self.place_calls: Counter[str] = Counter()
        self.query_calls: Counter[str] = Counter()
        self.callbacks: list[SentCallback] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None
        self._next_id = 0

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def __aenter__(self) -> SupplierSim:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> str:
        # Bound first: a busy port fails before anything needs cleaning up.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_post("/orders", self._place)
        app.router.add_get("/orders/{order_number}", self._query)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        self._client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CALLBACK_TIMEOUT))
        return self.base_url

    async def stop(self) -> None:
        self._closing.set()  # hanging requests answer now, so the server can close
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def idle(self) -> None:
        """Wait until every pending outcome and callback has happened (bound it with
        ``asyncio.timeout``)."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    def credited(self, order_number: str) -> int:
        return self.credits[order_number]

    def sent(self, order_number: str) -> list[RechargeState]:
        """The states of the callbacks sent for an order, in the order they were sent."""
        return [c.state for c in self.callbacks if c.order_number == order_number]

    def finish(self, order_number: str, state: RechargeState, reason: str | None = None) -> None:
        """Decide an order now (with ``complete_after=None``); a decided order stays as it is."""
        self._settle(self.orders[order_number], state, reason)

    async def _place(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verify_signature(request.headers, body, self.options.secret, time.time())
        except CallbackRejected as exc:
            return _error(401, "bad_signature", exc.message)
        try:
            order = _recharge_request(decode(body))
        except InvalidInput as exc:
            return _error(400, "invalid_request", exc.message)
        number = order.order_number
        attempt = self.place_calls[number]
        self.place_calls[number] += 1
        known = self.orders.get(number)
        if known is not None and _terms(known.request) != _terms(order):
            return _error(409, "order_number_conflict", "this order number was placed with other terms")
        if known is None:
            known = self._accept(order)
            status = 201
        else:
            status = 200
            log.info("place %s again: the same order %s, %s", number, known.supplier_order_id, known.state)
        await self._maybe_hang("place", number, attempt)
        return web.json_response(known.as_json(), status=status)

    async def _query(self, request: web.Request) -> web.Response:
        number = request.match_info["order_number"]
        try:
            verify_signature(request.headers, query_body(number), self.options.secret, time.time())
        except CallbackRejected as exc:
            return _error(401, "bad_signature", exc.message)
        attempt = self.query_calls[number]
        self.query_calls[number] += 1
        await self._maybe_hang("query", number, attempt)
        known = self.orders.get(number)
        if known is None:
            return _error(404, "not_found", "no such order")
        return web.json_response(known.as_json())

    def _accept(self, request: RechargeRequest) -> SimOrder:
        self._next_id += 1
        order = SimOrder(request, supplier_order_id=f"SIM{self._next_id:08d}")
        self.orders[request.order_number] = order
        log.info(
            "place %s: %s for %s, %s -> %s",
            request.order_number,
            request.product_code,
            request.account,
            _amount(request.amount, request.currency),
            order.supplier_order_id,
        )
        if self.options.complete_after is not None:
            self._spawn(self._complete_later(order, self.options.complete_after))
        return order

    async def _complete_later(self, order: SimOrder, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._roll("fail", order.request.order_number) < self.options.fail_rate:
            self._settle(order, "failed", "simulated_failure")
        else:
            self._settle(order, "success", None)

    def _settle(self, order: SimOrder, state: RechargeState, reason: str | None) -> None:
        if order.state != "processing" or state == "processing":
            return
        order.state, order.reason, order.updated_at = state, reason, int(time.time())
        number = order.request.order_number
        if state == "success":
            self.credits[number] += 1
        log.info("%s %s%s", number, state, f" ({reason})" if reason else "")
        if self.options.callbacks:
            self._spawn(self._send_callbacks(order))

    async def _send_callbacks(self, order: SimOrder) -> None:
        await asyncio.sleep(self.options.callback_delay)
        final = order.as_json()
        payloads = [final, final] if self.options.duplicate_callbacks else [final]
        if self.options.out_of_order:
            payloads.append({**final, "state": "processing", "reason": None, "updated_at": order.created_at})
        for payload in payloads:
            await self._send_callback(order.request.callback_url, payload)

    async def _send_callback(self, url: str, payload: dict[str, Any]) -> None:
        assert self._client is not None
        body = encode(payload)
        headers = {**signed_headers(self.options.secret, body, time.time()), "Content-Type": "application/json"}
        status: int | None = None
        try:
            async with self._client.post(url, data=body, headers=headers) as response:
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("callback %s %s: no answer (%s)", payload["order_number"], payload["state"], type(exc).__name__)
        else:
            log.info("callback %s %s: HTTP %s", payload["order_number"], payload["state"], status)
        self.callbacks.append(SentCallback(payload["order_number"], payload["state"], status, time.time()))

    async def _maybe_hang(self, kind: str, number: str, attempt: int) -> None:
        if self._roll("timeout", kind, number, str(attempt)) < self.options.timeout_rate:
            log.info("%s %s: hanging for %ss", kind, number, self.options.hang_seconds)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.options.hang_seconds)

    def _roll(self, *parts: str) -> float:
        # A string seed hashes the same in every process (unlike hash()).
        return random.Random("|".join([str(self.seed), *parts])).random()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _recharge_request(data: dict[str, Any] | None) -> RechargeRequest:
    if data is None:
        raise InvalidInput("the body is not a JSON object")
    fields = ("order_number", "product_code", "account", "amount", "currency", "callback_url")
    missing = [name for name in fields if name not in data]
    if missing:
        raise InvalidInput(f"missing {', '.join(missing)}")
    check_order_number(data["order_number"])
    return RechargeRequest(**{name: data[name] for name in fields})


def _amount(minor: int, currency: str) -> str:
    try:
        return f"{format_minor(minor, currency)} {currency}"
    except InvalidInput:  # a currency quanyi does not know: still a recharge to simulate
        return f"{minor} minor units of {currency}"


def _terms(request: RechargeRequest) -> tuple[str, str, int, str]:
    # The callback URL may move between retries (a new public URL); what is credited may not.
    return (request.product_code, request.account, request.amount, request.currency)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)
