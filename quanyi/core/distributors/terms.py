"""The terms a distributor starts and works with: an invite only with a tier that has cost prices
(or the operator's explicit word), and quota a parent passes down to its own sub-distributors."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.distributors import accounts, notices
from quanyi.core.errors import Forbidden, QuanyiError
from quanyi.core.models import Channel, CostPrice
from quanyi.core.stock import allocations


class NoMargin(QuanyiError):
    """An invite with a tier that has no cost prices: its distributor would pay the list price
    for everything and have no margin to sell at."""

    code = "no_margin"


async def check_margin(session: AsyncSession, tier: str) -> None:
    """Refuse (``NoMargin``, details: tier) a tier without a single cost price."""
    tier = (tier or "").strip().lower()
    priced = await session.scalar(select(func.count()).select_from(CostPrice).where(CostPrice.scope == f"tier:{tier}"))
    if not priced:
        raise NoMargin(
            f"tier {tier} has no cost prices: a distributor invited with it pays the list price and earns no "
            f"margin. Set them first (quanyi distributor price SKU PRICE --tier {tier}), or invite anyway "
            "(--allow-no-margin)",
            key="err_distributors.no_margin",
            tier=tier,
        )


@dataclass(frozen=True)
class QuotaPassed:
    sku: str
    name: str
    units: int
    left: int  # what the parent holds after
    sub_left: int  # what the sub holds after
    sub_name: str


async def pass_quota(session: AsyncSession, user_id: int, sub_user_id: int, sku: str, units: int) -> QuotaPassed:
    """The caller passes ``units`` of its own quota of ``sku`` to one of its direct
    sub-distributors, within what it holds (``AllocationShort``), never to anyone else's
    (``Forbidden``). The sub is told; the caller acted in its chat and is answered there."""
    parent = await accounts.require(session, user_id)
    sub = await accounts.get_by_user(session, sub_user_id)
    if sub is None or sub.parent_id != parent.id:
        raise Forbidden(
            "quota goes only to your own sub-distributors", key="err_distributors.not_your_sub", sub="not_yours"
        )
    if not sub.active:
        raise Forbidden(f"{sub.name} is not active", key="err_distributors.sub_inactive", sub="inactive", name=sub.name)
    frm = await session.get(Channel, parent.channel_id)
    to = await session.get(Channel, sub.channel_id)
    assert frm is not None and to is not None
    product, source, target = await allocations.pass_units(session, sku, frm, to, units)
    await notices.allocation_changed(session, to, product, target, "passed_in", units, other=parent.name)
    return QuotaPassed(
        product.sku,
        product.name,
        units,
        source.allocated - source.reserved - source.sold,
        target.allocated - target.reserved - target.sold,
        sub.name,
    )
