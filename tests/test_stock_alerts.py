"""Low-stock alerts: one per downward crossing of a pool's or an allocation's threshold, to
every operator and to the distributor holding the allocation; a refill re-arms them."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path

import pytest
from sqlalchemy import select

from quanyi.core.models import OutboxMessage
from quanyi.core.platform.config import Settings
from quanyi.core.services import Core
from quanyi.core.stock import alerts
from quanyi.core.stock import allocations as channels
from quanyi.core.stock.alerts import StockAlert
from quanyi.core.stock.items import import_stock
from tests.conftest import make_settings
from tests.helpers import new_order, product_with_stock
from tests.test_allocations import partner, sell
from tests.test_distributors import make_distributor, refer

ADMINS = [9000, 9001]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, admin_ids=",".join(map(str, ADMINS)))


async def check(core: Core, runs: int = 1) -> list[StockAlert]:
    """``runs`` scheduler runs at once (replicas, or a slow run overlapping the next)."""

    async def one() -> list[StockAlert]:
        async with core.db.transaction() as session:
            return await alerts.check_stock(session, core.settings.admin_id_list)

    return [alert for raised in await asyncio.gather(*(one() for _ in range(runs))) for alert in raised]


async def sent(core: Core) -> list[tuple[int, str, dict[str, object]]]:
    async with core.db.read() as session:
        found = await session.scalars(
            select(OutboxMessage).where(OutboxMessage.kind == "stock_low").order_by(OutboxMessage.id)
        )
        return [(m.chat_id, m.language, json.loads(m.payload)) for m in found]


async def refill(core: Core, tmp_path: Path, units: int, sku: str = "VIP") -> None:
    path = tmp_path / f"refill-{secrets.token_hex(3)}.txt"
    path.write_text("".join(f"{sku}-{secrets.token_hex(10)}\n" for _ in range(units)))
    await import_stock(core.db, core.keyring, sku, path)


async def test_the_pool_alerts_once_per_crossing_and_again_after_a_refill(core, tmp_path):
    await product_with_stock(core, tmp_path, units=10)
    async with core.db.transaction() as session:
        await channels.set_threshold(session, "VIP", 3)
    assert await check(core) == []
    await new_order(core, quantity=6, user_id=1)  # 4 left
    assert await check(core) == []

    await new_order(core, quantity=1, user_id=2)  # 3 left: crossed
    assert await check(core, runs=3) == [StockAlert("VIP", None, 3, 3)]
    payload = {"sku": "VIP", "name": "VIP membership", "channel": None, "left": 3, "threshold": 3}
    assert await sent(core) == [(9000, "zh", payload), (9001, "zh", payload)]

    # Staying low is not news.
    await new_order(core, quantity=1, user_id=3)
    assert await check(core) == [] and await check(core, runs=2) == []
    assert len(await sent(core)) == 2

    await refill(core, tmp_path, 5)  # 7 left: re-armed, quietly
    assert await check(core) == []
    assert len(await sent(core)) == 2
    await new_order(core, quantity=4, user_id=4)  # 3 left: crossed again
    assert await check(core, runs=2) == [StockAlert("VIP", None, 3, 3)]
    assert [chat for chat, _, _ in await sent(core)] == [9000, 9001, 9000, 9001]


async def test_an_allocation_alerts_operators_and_its_distributor_once_per_crossing(core, tmp_path):
    await product_with_stock(core, tmp_path, units=30)
    agent = await make_distributor(core, 501, language="en")
    await partner(core, "pa", units=5)
    async with core.db.transaction() as session:
        await channels.allocate(session, "VIP", "501", 10)
        await channels.set_threshold(session, "VIP", 2, holder="501")
        await channels.set_threshold(session, "VIP", 1, holder="pa")
    await refer(core, 7001, agent)

    await new_order(core, quantity=7, user_id=7001)  # the agent's customer: 3 left of 10
    await sell(core, "pa", 8001, quantity=3)  # 2 left of 5
    assert await check(core, runs=3) == []

    await new_order(core, quantity=1, user_id=7001)  # 2 left: crossed
    await sell(core, "pa", 8002, quantity=1)  # 1 left: crossed
    raised = await check(core, runs=3)
    assert sorted(raised, key=lambda a: a.channel or "") == [
        StockAlert("VIP", "agent-501", 2, 2),
        StockAlert("VIP", "pa", 1, 1),
    ]
    agent_payload = {"sku": "VIP", "name": "VIP membership", "channel": "agent-501", "left": 2, "threshold": 2}
    partner_payload = {"sku": "VIP", "name": "VIP membership", "channel": "pa", "left": 1, "threshold": 1}
    messages = await sent(core)
    # The partner has no chat: only operators hear of its quota. The agent hears of its own,
    # in its own language.
    assert sorted(messages, key=lambda m: (m[2]["channel"], m[0])) == [
        (501, "en", agent_payload),
        (9000, "zh", agent_payload),
        (9001, "zh", agent_payload),
        (9000, "zh", partner_payload),
        (9001, "zh", partner_payload),
    ]

    await new_order(core, quantity=1, user_id=7001)  # 1 left: still low
    assert await check(core, runs=2) == []

    async with core.db.transaction() as session:
        await channels.allocate(session, "VIP", "501", 5)  # 6 left: re-armed, quietly
    assert await check(core) == []
    await new_order(core, quantity=4, user_id=7001)  # 2 left: crossed again
    assert await check(core, runs=2) == [StockAlert("VIP", "agent-501", 2, 2)]
    assert [chat for chat, _, p in await sent(core) if p["channel"] == "agent-501"] == [9000, 9001, 501] * 2
    # The pool itself has no threshold: no pool alert however low it goes.
    assert all(p["channel"] is not None for _, _, p in await sent(core))
