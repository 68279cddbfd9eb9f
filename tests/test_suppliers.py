"""Recharge suppliers: the generic signed JSON adapter against the simulator, over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from quanyi.core.errors import CallbackRejected, ConfigError, InvalidInput, SupplierError, SupplierOrderUnknown
from quanyi.core.suppliers import (
    RechargeRequest,
    RechargeState,
    SupplierResult,
    advance,
    build_supplier_hub,
    callback_url,
)
from quanyi.core.suppliers.generic import GenericSupplier, encode, query_body, sign, signed_headers
from quanyi.core.suppliers.sim import SimOptions, SupplierSim
from tests.conftest import make_settings

SECRET = "test-supplier-secret"
NOW = 1_740_787_200
QUANYI = str(Path(sys.executable).with_name("quanyi"))


class Receiver:
    """Our callback endpoint as the next layer will run it: verify, read, answer."""

    def __init__(self, supplier: GenericSupplier) -> None:
        self.supplier = supplier
        self.results: list[SupplierResult] = []
        self.arrived: list[float] = []
        self.rejected: list[str] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            result = self.supplier.parse_callback(request.headers, body)
        except CallbackRejected as exc:
            self.rejected.append(exc.message)
            return web.json_response({"error": exc.code}, status=401)
        self.results.append(result)
        self.arrived.append(time.monotonic())
        return web.json_response({"ok": True})

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Receiver]:
        app = web.Application()
        app.router.add_post("/recharge/{supplier}/callback", self.handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = callback_url(f"http://127.0.0.1:{sock.getsockname()[1]}", "generic")
        await web.SockSite(runner, sock).start()
        try:
            yield self
        finally:
            await runner.cleanup()

    def states(self, order_number: str) -> list[RechargeState]:
        return [r.state for r in self.results if r.order_number == order_number]


@dataclasses.dataclass
class Rig:
    sim: SupplierSim
    supplier: GenericSupplier
    receiver: Receiver

    def request(self, number: str = "Q250301K7M2P9XA-1", **changes: Any) -> RechargeRequest:
        values: dict[str, Any] = {
            "order_number": number,
            "product_code": "IQIYI-VIP-1M",
            "account": "13800138000",
            "amount": 1500,
            "currency": "CNY",
            "callback_url": self.receiver.url,
        }
        return RechargeRequest(**{**values, **changes})

    async def settle(self) -> None:
        async with asyncio.timeout(5):
            await self.sim.idle()


@pytest.fixture
async def rig() -> AsyncIterator[Callable[..., Awaitable[Rig]]]:
    async with contextlib.AsyncExitStack() as stack:

        async def make(**options: Any) -> Rig:
            sim = await stack.enter_async_context(SupplierSim(SimOptions(secret=SECRET, **options)))
            supplier = GenericSupplier("generic", sim.base_url, SECRET, timeout_seconds=1.0)
            receiver = await stack.enter_async_context(Receiver(supplier).running())
            return Rig(sim, supplier, receiver)

        yield make


# --- round trips ---------------------------------------------------------------------------------


async def test_a_placed_recharge_succeeds_and_its_signed_callback_and_query_say_so(rig):
    r = await rig()
    placed = await r.supplier.place(r.request())
    assert placed.state == "processing" and placed.order_number == "Q250301K7M2P9XA-1"
    assert placed.supplier_order_id and not placed.terminal
    assert placed.raw["amount"] == 1500 and placed.raw["account"] == "13800138000"

    await r.settle()
    (callback,) = r.receiver.results
    assert (callback.order_number, callback.supplier_order_id, callback.state) == (
        placed.order_number,
        placed.supplier_order_id,
        "success",
    )
    assert callback.terminal and callback.reason is None
    assert r.receiver.rejected == []
    queried = await r.supplier.query(placed.order_number)
    assert (queried.state, queried.supplier_order_id) == ("success", placed.supplier_order_id)
    assert r.sim.credited(placed.order_number) == 1
    assert [c.status for c in r.sim.callbacks] == [200]


async def test_placing_the_same_order_number_again_returns_the_first_order_and_never_credits_twice(rig):
    r = await rig()
    first = await r.supplier.place(r.request())
    again = await r.supplier.place(r.request())
    at_once = await asyncio.gather(*(r.supplier.place(r.request()) for _ in range(5)))
    assert {x.supplier_order_id for x in [again, *at_once]} == {first.supplier_order_id}
    other = await r.supplier.place(r.request("Q250301K7M2P9XA-2"))
    assert other.supplier_order_id != first.supplier_order_id

    await r.settle()
    assert r.sim.place_calls["Q250301K7M2P9XA-1"] == 7
    assert r.sim.credited("Q250301K7M2P9XA-1") == 1
    assert r.sim.credited("Q250301K7M2P9XA-2") == 1
    assert r.receiver.states("Q250301K7M2P9XA-1") == ["success"]


async def test_a_repeat_with_other_terms_is_refused_and_changes_nothing(rig):
    r = await rig(complete_after=None)
    first = await r.supplier.place(r.request())
    for changed in ({"amount": 3000}, {"account": "13900139000"}, {"product_code": "YOUKU-VIP-1M"}):
        with pytest.raises(SupplierError, match="other terms"):
            await r.supplier.place(r.request(**changed))
    # A new callback URL (the shop moved) is not a change of terms.
    moved = await r.supplier.place(r.request(callback_url="https://new.example.com/recharge/generic/callback"))
    assert moved.supplier_order_id == first.supplier_order_id
    assert r.sim.orders[first.order_number].request.amount == 1500


async def test_a_failed_recharge_reports_failed_with_its_reason_and_credits_nothing(rig):
    r = await rig(fail_rate=1.0)
    placed = await r.supplier.place(r.request())
    await r.settle()
    (callback,) = r.receiver.results
    assert (callback.state, callback.reason) == ("failed", "simulated_failure")
    queried = await r.supplier.query(placed.order_number)
    assert (queried.state, queried.reason) == ("failed", "simulated_failure")
    assert r.sim.credited(placed.order_number) == 0


async def test_an_order_stays_processing_until_decided_and_a_decided_order_never_changes(rig):
    r = await rig(complete_after=None)
    placed = await r.supplier.place(r.request())
    assert (await r.supplier.query(placed.order_number)).state == "processing"
    await r.settle()
    assert r.sim.callbacks == []

    r.sim.finish(placed.order_number, "success")
    r.sim.finish(placed.order_number, "failed", "too_late")
    await r.settle()
    assert (await r.supplier.query(placed.order_number)).state == "success"
    assert r.receiver.states(placed.order_number) == ["success"]
    assert r.sim.credited(placed.order_number) == 1


async def test_querying_an_order_the_supplier_never_received_says_so(rig):
    r = await rig()
    with pytest.raises(SupplierOrderUnknown):
        await r.supplier.query("Q250301NEVERSENT-1")
    with pytest.raises(InvalidInput):
        await r.supplier.query("../orders")


# --- callbacks as configured ---------------------------------------------------------------------


async def test_without_callbacks_the_outcome_is_learned_by_query(rig):
    r = await rig(callbacks=False)
    placed = await r.supplier.place(r.request())
    await r.settle()
    assert r.receiver.results == [] and r.sim.callbacks == []
    assert (await r.supplier.query(placed.order_number)).state == "success"


async def test_duplicate_callbacks_arrive_twice_for_one_credit(rig):
    r = await rig(duplicate_callbacks=True)
    placed = await r.supplier.place(r.request())
    await r.settle()
    assert r.receiver.states(placed.order_number) == ["success", "success"]
    assert len({x.supplier_order_id for x in r.receiver.results}) == 1
    assert r.sim.credited(placed.order_number) == 1


async def test_a_stale_processing_callback_after_success_leaves_the_order_succeeded(rig):
    r = await rig(out_of_order=True)
    placed = await r.supplier.place(r.request())
    await r.settle()
    received = r.receiver.states(placed.order_number)
    assert received == ["success", "processing"]
    state: RechargeState = "processing"
    for reported in received:
        state = advance(state, reported)
    assert state == "success"
    assert advance("failed", "success") == "failed" and advance("processing", "failed") == "failed"


async def test_late_callbacks_come_after_the_configured_delay(rig):
    r = await rig(callback_delay=0.4)
    started = time.monotonic()
    placed = await r.supplier.place(r.request())
    await asyncio.sleep(0.15)
    assert r.receiver.results == []
    assert (await r.supplier.query(placed.order_number)).state == "success"  # done, not yet told
    await r.settle()
    assert r.receiver.states(placed.order_number) == ["success"]
    assert r.receiver.arrived[0] - started >= 0.4


# --- timeouts ------------------------------------------------------------------------------------


async def test_a_hanging_supplier_times_out_quickly_and_the_retry_gets_the_same_order(rig):
    r = await rig(timeout_rate=1.0, hang_seconds=20)
    started = time.monotonic()
    with pytest.raises(SupplierError) as raised:
        await r.supplier.place(r.request())
    assert time.monotonic() - started < 2
    assert "TimeoutError" in raised.value.message
    assert r.sim.base_url not in raised.value.message and SECRET not in raised.value.message
    with pytest.raises(SupplierError):
        await r.supplier.query("Q250301K7M2P9XA-1")

    # The supplier took the order before it hung: the retry must get that order, not a second one.
    r.sim.options = dataclasses.replace(r.sim.options, timeout_rate=0.0)
    retried = await r.supplier.place(r.request())
    assert retried.supplier_order_id == r.sim.orders["Q250301K7M2P9XA-1"].supplier_order_id
    await r.settle()
    assert r.sim.credited("Q250301K7M2P9XA-1") == 1
    assert r.sim.place_calls["Q250301K7M2P9XA-1"] == 2


async def test_a_seeded_simulator_fails_the_same_orders_whatever_the_arrival_order(rig):
    numbers = [f"Q250301SEED{n:04d}-1" for n in range(16)]

    async def failed_under(seed: int, order: list[str]) -> set[str]:
        r = await rig(seed=seed, fail_rate=0.5, callbacks=False)
        for number in order:
            await r.supplier.place(r.request(number))
        await r.settle()
        return {n for n, o in r.sim.orders.items() if o.state == "failed"}

    first = await failed_under(7, numbers)
    assert 0 < len(first) < len(numbers)
    assert await failed_under(7, numbers[::-1]) == first
    assert await failed_under(8, numbers) != first


# --- signatures ----------------------------------------------------------------------------------


def callback_body(**changes: Any) -> bytes:
    order = {
        "order_number": "Q250301K7M2P9XA-1",
        "supplier_order_id": "SUP-778899",
        "state": "success",
        "reason": None,
        "amount": 1500,
        "currency": "CNY",
    }
    return encode({**order, **changes})


@pytest.fixture
def ours() -> GenericSupplier:
    return GenericSupplier("generic", "http://127.0.0.1:9", SECRET, clock=lambda: NOW)


def test_a_signed_callback_is_read_and_header_names_are_case_insensitive(ours):
    body = callback_body()
    result = ours.parse_callback(signed_headers(SECRET, body, NOW), body)
    assert (result.order_number, result.supplier_order_id, result.state) == (
        "Q250301K7M2P9XA-1",
        "SUP-778899",
        "success",
    )
    lower = {k.lower(): v.upper() for k, v in signed_headers(SECRET, body, NOW).items()}
    assert ours.parse_callback(lower, body).state == "success"


@pytest.mark.parametrize(("skew", "accepted"), [(-300, True), (300, True), (-301, False), (301, False)])
def test_callbacks_are_accepted_within_300_seconds_either_way_and_refused_beyond(ours, skew, accepted):
    body = callback_body()
    headers = signed_headers(SECRET, body, NOW + skew)
    if accepted:
        assert ours.parse_callback(headers, body).state == "success"
    else:
        with pytest.raises(CallbackRejected, match="window"):
            ours.parse_callback(headers, body)


def test_tampered_wrongly_signed_and_unsigned_callbacks_are_refused(ours):
    body = callback_body(state="failed", reason="account_not_found")
    headers = signed_headers(SECRET, body, NOW)
    tampered = body.replace(b'"failed"', b'"success"')
    with pytest.raises(CallbackRejected, match="bad signature"):
        ours.parse_callback(headers, tampered)
    with pytest.raises(CallbackRejected, match="bad signature"):
        ours.parse_callback(signed_headers("another-secret-123", body, NOW), body)
    for missing in headers:
        with pytest.raises(CallbackRejected, match="missing"):
            ours.parse_callback({k: v for k, v in headers.items() if k != missing}, body)
    fractional = {**headers, "X-Quanyi-Timestamp": f"{NOW}.0"}
    fractional["X-Quanyi-Signature"] = sign(SECRET, f"{NOW}.0", body)
    with pytest.raises(CallbackRejected, match="whole seconds"):
        ours.parse_callback(fractional, body)
    with pytest.raises(CallbackRejected, match="hex"):
        ours.parse_callback({**headers, "X-Quanyi-Signature": "not-hex"}, body)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe",
        b'["a", "list"]',
        b'{"order_number": "Q1-1", "supplier_order_id": "S1", "state": "success", "amount": NaN}',
        callback_body(supplier_order_id=""),
        callback_body(state="done"),
        callback_body(order_number="../x"),
        callback_body(amount=15.0),
        callback_body(amount=True),
        callback_body(reason=["x"]),
    ],
)
def test_a_correctly_signed_but_malformed_callback_is_refused(ours, body):
    with pytest.raises(CallbackRejected):
        ours.parse_callback(signed_headers(SECRET, body, NOW), body)


def test_the_worked_examples_in_docs_sign_as_documented():
    doc = (Path(__file__).parent.parent / "docs" / "suppliers.md").read_text()
    body = encode(
        {
            "order_number": "Q250301K7M2P9XA-1",
            "product_code": "IQIYI-VIP-1M",
            "account": "13800138000",
            "amount": 1500,
            "currency": "CNY",
            "callback_url": "https://shop.example.com/recharge/generic/callback",
        }
    )
    assert body.decode() in doc
    assert sign("example-secret-1234", "1740787200", body) in doc
    assert sign("example-secret-1234", "1740787200", query_body("Q250301K7M2P9XA-1")) in doc


async def test_the_simulator_refuses_requests_with_a_wrong_secret_or_a_stale_timestamp(rig):
    r = await rig()
    wrong = GenericSupplier("generic", r.sim.base_url, "not-the-secret-1", timeout_seconds=1)
    stale = GenericSupplier("generic", r.sim.base_url, SECRET, timeout_seconds=1, clock=lambda: time.time() - 301)
    for supplier in (wrong, stale):
        with pytest.raises(SupplierError, match="HTTP 401 \\(bad_signature\\)") as raised:
            await supplier.place(r.request())
        assert r.sim.base_url not in raised.value.message and "not-the-secret" not in raised.value.message
        with pytest.raises(SupplierError, match="401"):
            await supplier.query("Q250301K7M2P9XA-1")
    assert r.sim.orders == {} and r.sim.place_calls == {}


@pytest.mark.parametrize(
    "changes",
    [
        {"amount": 15.0},
        {"amount": True},
        {"amount": 0},
        {"order_number": "../orders"},
        {"order_number": "x" * 65},
        {"account": ""},
        {"account": "138\n0013"},
        {"currency": "cny"},
        {"callback_url": "ftp://example.com/cb"},
    ],
)
def test_a_recharge_request_refuses_what_no_supplier_should_be_sent(changes):
    values: dict[str, Any] = {
        "order_number": "Q250301K7M2P9XA-1",
        "product_code": "IQIYI-VIP-1M",
        "account": "13800138000",
        "amount": 1500,
        "currency": "CNY",
        "callback_url": "https://shop.example.com/recharge/generic/callback",
    }
    with pytest.raises(InvalidInput):
        RechargeRequest(**{**values, **changes})


def test_the_generic_supplier_is_configured_by_url_and_secret_together(tmp_path):
    assert build_supplier_hub(make_settings(tmp_path)).names() == []
    with pytest.raises(ConfigError, match="not configured"):
        build_supplier_hub(make_settings(tmp_path)).get("generic")
    hub = build_supplier_hub(
        make_settings(tmp_path, supplier_generic_url="http://127.0.0.1:8090/", supplier_generic_secret=SECRET)
    )
    supplier = hub.get("generic")
    assert isinstance(supplier, GenericSupplier) and supplier.base_url == "http://127.0.0.1:8090"
    assert SECRET not in repr(supplier)
    with pytest.raises(ConfigError, match="together"):
        build_supplier_hub(make_settings(tmp_path, supplier_generic_url="http://127.0.0.1:8090"))
    with pytest.raises(ConfigError, match="placeholder"):
        build_supplier_hub(
            make_settings(tmp_path, supplier_generic_url="http://127.0.0.1:8090", supplier_generic_secret="changeme")
        )


# --- the command line ----------------------------------------------------------------------------


def quanyi_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("QUANYI_")}


def test_supplier_sim_help_names_its_knobs_and_a_bad_rate_fails_in_one_line():
    done = subprocess.run([QUANYI, "supplier-sim", "--help"], capture_output=True, text=True, env=quanyi_env())
    assert done.returncode == 0
    for option in ("--fail-rate", "--callback-delay", "--duplicate-callbacks", "--out-of-order", "--no-callbacks"):
        assert option in done.stdout
    for option in ("--timeout-rate", "--seed", "--port", "--secret"):
        assert option in done.stdout
    bad = subprocess.run(
        [QUANYI, "supplier-sim", "--fail-rate", "2"], capture_output=True, text=True, env=quanyi_env(), timeout=30
    )
    assert bad.returncode != 0
    assert bad.stderr.strip() == "quanyi: fail-rate is a share between 0 and 1"


async def test_supplier_sim_command_serves_the_protocol_until_terminated():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        *[QUANYI, "supplier-sim", "--port", str(port), "--secret", SECRET, "--complete-after", "0", "--seed", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=quanyi_env(),
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(20):
            first = (await proc.stdout.readline()).decode()
        assert f"listening on http://127.0.0.1:{port}" in first
        supplier = GenericSupplier("generic", f"http://127.0.0.1:{port}", SECRET, timeout_seconds=5)
        with pytest.raises(SupplierOrderUnknown):
            await supplier.query("Q250301K7M2P9XA-1")
        request = RechargeRequest(
            "Q250301K7M2P9XA-1", "IQIYI-VIP-1M", "13800138000", 1500, "CNY", "http://127.0.0.1:9/cb"
        )
        placed = await supplier.place(request)
        assert placed.state == "processing"
        states = []
        for _ in range(50):
            states.append((await supplier.query(placed.order_number)).state)
            if states[-1] != "processing":
                break
            await asyncio.sleep(0.05)
        assert states[-1] == "success"

        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            out, err = await proc.communicate()
        assert proc.returncode == 0, err
        assert b"supplier simulator stopped" in out
        assert SECRET.encode() not in out + err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
