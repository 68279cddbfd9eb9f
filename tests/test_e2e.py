"""End to end: ``quanyi serve`` (hypercorn, aiogram, scheduler) against a fake Bot API server,
on a database built by the real migrations, driven as a buyer and a payment gateway would."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from sqlalchemy import func, select

from quanyi.app import serve
from quanyi.core.models import Order, OutboxMessage, Payment, StockItem
from quanyi.core.platform.config import Settings
from quanyi.core.platform.db import Database
from quanyi.core.platform.keycheck import init_keys
from quanyi.core.platform.migrate import upgrade
from quanyi.core.services import build_core
from quanyi.i18n import raw_t
from tests.conftest import PG_URL, make_settings
from tests.fakebot import BotMessage, FakeTelegram
from tests.helpers import product_with_stock

NUMBER = re.compile(r"Q\d{6}[A-Z2-9]{8}")
QUANYI = Path(sys.executable).with_name("quanyi")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


@pytest.fixture
async def database_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database of its own (serve() builds its engine from the URL)."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'e2e.db'}"
        return
    name = "quanyi_e2e_" + uuid.uuid4().hex[:12]
    dsn = PG_URL.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield PG_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


def e2e_settings(tmp_path: Path, url: str, tg: FakeTelegram, **overrides: object) -> Settings:
    port = free_port()
    return make_settings(
        tmp_path,
        database_url=url,
        bot_token=tg.token,
        telegram_api_base=tg.base,
        http_port=port,
        public_url=f"http://127.0.0.1:{port}",
        sandbox_pay=True,
        # The sandbox alone, as in the demo, is offered to every buyer (beside Stars, a real
        # method, it would be for operators only: test_sandbox_operators).
        stars_enabled=False,
        **overrides,
    )


async def migrated_with_stock(settings: Settings, tmp_path: Path, units: int) -> list[str]:
    """Schema from the migrations (not create_all) and keys, as `quanyi db upgrade` makes them, then a
    product with ``units`` codes."""
    db = Database(settings.resolved_database_url)
    try:
        await upgrade(db.engine)
        await init_keys(settings, db)
    finally:
        await db.dispose()
    core = build_core(settings)
    try:
        return await product_with_stock(core, tmp_path, units=units)
    finally:
        await core.close()


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[aiohttp.ClientSession]:
    """serve() running in this loop; yields an HTTP client once /healthz answers."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop=stop))
    base = f"http://127.0.0.1:{settings.http_port}"
    try:
        async with aiohttp.ClientSession(base_url=base, timeout=aiohttp.ClientTimeout(total=15)) as http:
            for _ in range(200):
                if task.done():
                    task.result()  # raises what made serve() stop
                try:
                    async with http.get("/healthz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the server did not come up")
            yield http
    finally:
        stop.set()
        try:
            assert await asyncio.wait_for(task, 20) == 0
        finally:
            for handler in list(root.handlers):  # serve() configures logging for the process
                root.removeHandler(handler)
            for handler in saved[0]:
                root.addHandler(handler)
            root.setLevel(saved[1])


async def counts(url: str, number: str) -> dict[str, object]:
    db = Database(url)
    try:
        async with db.read() as session:
            order = await session.scalar(select(Order).where(Order.number == number))
            assert order is not None
            return {
                "status": order.status,
                "payments": await session.scalar(select(func.count()).select_from(Payment)),
                "deliveries": await session.scalar(
                    select(func.count()).select_from(OutboxMessage).where(OutboxMessage.kind == "delivery")
                ),
                "sold": await session.scalar(
                    select(func.count()).select_from(StockItem).where(StockItem.status == "sold")
                ),
            }
    finally:
        await db.dispose()


async def buy_with_sandbox(tg: FakeTelegram, user_id: int, quantity: str) -> tuple[str, str]:
    """/start -> product -> quantity -> sandbox, as a buyer taps; returns (order number, pay URL)."""
    user = tg.user(user_id, "zh")
    await user.send("/start")
    catalogue = await user.expect(lambda m: bool(m.buttons()), timeout=10)
    await user.press(catalogue, "VIP membership")
    card = await user.expect(lambda m: m.kind == "edit")
    await user.press(card, quantity)
    methods = await user.expect(lambda m: m.kind == "edit")
    await user.press(methods, raw_t("zh", "method_sandbox"))
    created: BotMessage = await user.expect(lambda m: NUMBER.search(m.plain) is not None)
    number = NUMBER.search(created.plain).group(0)  # type: ignore[union-attr]
    return number, created.button("去支付")["url"]


async def test_buyer_orders_pays_in_the_sandbox_and_receives_every_code(backend, database_url, tmp_path, tg):
    settings = e2e_settings(tmp_path, database_url, tg)
    codes = await migrated_with_stock(settings, tmp_path, units=2)

    async with serving(settings) as http:
        number, pay_url = await buy_with_sandbox(tg, 1001, "2")
        assert pay_url == f"{settings.public_url}/pay/sandbox/{number}"
        assert (await counts(database_url, number))["status"] == "pending"

        # A forged callback is refused and changes nothing.
        forged = {"order_no": number, "txn_id": "FORGED-1", "amount": "30.00", "currency": "CNY", "sign": "0" * 64}
        async with http.post("/pay/sandbox/notify", data=forged) as response:
            assert (response.status, (await response.text()).strip()) == (400, "fail")
        assert await counts(database_url, number) == {"status": "pending", "payments": 0, "deliveries": 0, "sold": 0}

        async with http.get(pay_url) as page:
            body = await page.text()
            assert page.status == 200 and number in body and "¥30.00" in body and "<form" in body
        mark = tg.mark()
        async with http.post(pay_url) as paid:
            assert paid.status == 200

        # (the order message's Pay and Cancel buttons come off too: an edit, not a message)
        delivery = await tg.wait_for(
            lambda m: m.kind == "send" and number in m.plain, chat_id=1001, since=mark, timeout=10
        )
        assert "已发货" in delivery.plain
        assert all(code in delivery.plain for code in codes)
        assert await counts(database_url, number) == {"status": "delivered", "payments": 1, "deliveries": 1, "sold": 2}

        # The gateway repeats its genuine callback: acknowledged, nothing delivered twice.
        db = Database(database_url)
        try:
            async with db.read() as session:
                genuine = json.loads(await session.scalar(select(Payment.raw)))
        finally:
            await db.dispose()
        async with http.post("/pay/sandbox/notify", data=genuine) as response:
            assert (response.status, (await response.text()).strip()) == (200, "success")
        await asyncio.sleep(0.5)  # the sender would have woken for a new delivery by now
        assert await counts(database_url, number) == {"status": "delivered", "payments": 1, "deliveries": 1, "sold": 2}
        sent = [m for m in tg.messages[mark:] if m.kind == "send" and number in m.plain and m.chat_id == 1001]
        assert sent == [delivery]

        # The pay page of a paid order offers no button any more.
        async with http.get(pay_url) as page:
            assert "<form" not in await page.text()

    assert tg.calls_of("getUpdates")  # the bot really polled


async def test_webhook_mode_registers_the_webhook_and_takes_updates_only_with_the_secret(tmp_path, tg):
    secret = "wh-" + uuid.uuid4().hex
    settings = e2e_settings(
        tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'wh.db'}", tg, bot_mode="webhook", bot_webhook_secret=secret
    )
    await migrated_with_stock(settings, tmp_path, units=3)

    async with serving(settings) as http:
        registered = await tg.wait_call("setWebhook")
        assert registered.params["url"] == f"{settings.public_url}/telegram/webhook"
        assert registered.params["secret_token"] == secret
        assert {"message", "callback_query"} <= set(registered.params["allowed_updates"])

        intruder, buyer = tg.user(1001, "zh"), tg.user(1002, "en")
        for headers in ({}, {"X-Telegram-Bot-Api-Secret-Token": "wrong"}, {"X-Telegram-Bot-Api-Secret-Token": ""}):
            async with http.post("/telegram/webhook", json=intruder.message_update("/start"), headers=headers) as r:
                assert r.status == 403
        async with http.post(
            "/telegram/webhook",
            json=buyer.message_update("/start"),
            headers={"X-Telegram-Bot-Api-Secret-Token": secret},
        ) as response:
            assert response.status == 200

        catalogue = await tg.wait_for(chat_id=1002, timeout=5)
        assert "Catalogue" in catalogue.plain
        assert catalogue.buttons()[0]["text"] == "VIP membership · ¥15.00 · 3 left"
        await asyncio.sleep(0.2)
        assert tg.messages_to(1001) == []
    assert tg.calls_of("getUpdates") == []  # no polling beside the webhook


async def test_stopping_the_server_finishes_the_update_it_is_handling(tmp_path, tg):
    settings = e2e_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'stop.db'}", tg)
    await migrated_with_stock(settings, tmp_path, units=1)
    tg.slow_down("sendMessage", 1.0)
    async with serving(settings):
        await tg.user(1001, "en").send("/start")
        reply = await tg.wait_call("sendMessage", timeout=5)  # in flight when the stop comes
    await tg.finished(reply)
    assert reply.status == 200
    assert "Catalogue" in tg.messages_to(1001)[0].plain


async def test_quanyi_serve_process_starts_answers_health_and_stops_cleanly_on_sigterm(tmp_path, tg):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANYI_")}
    env.update(
        QUANYI_DATA_DIR=str(tmp_path / "data"),
        QUANYI_SANDBOX_PAY="1",
        QUANYI_HTTP_PORT=str(port),
        QUANYI_PUBLIC_URL=f"http://127.0.0.1:{port}",
        QUANYI_BOT_TOKEN=tg.token,
        QUANYI_TELEGRAM_API_BASE=tg.base,
    )

    async def run(*args: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            str(QUANYI), *args, env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, (args, out, err)

    await run("db", "upgrade")
    await run("demo")
    proc = await asyncio.create_subprocess_exec(
        str(QUANYI), "serve", env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            for _ in range(300):
                assert proc.returncode is None, await proc.stderr.read()  # type: ignore[union-attr]
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                        if response.status == 200:
                            assert await response.json() == {"status": "ok"}
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("quanyi serve did not answer /healthz")
        user = tg.user(1001, "en")
        await user.send("/start")
        catalogue = await user.expect(lambda m: bool(m.buttons()), timeout=10)
        # The demo catalogue: 4 card keys, a bundle of two of them, a link, a top-up.
        assert len(catalogue.buttons()) == 7

        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 15)
        assert proc.returncode == 0, err.decode()[-2000:]
        assert b"quanyi stopped" in err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
