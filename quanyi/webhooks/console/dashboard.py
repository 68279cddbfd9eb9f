"""The dashboard (看板): today's and this month's sales beside yesterday's, per channel,
distributor, hour and day, the stock with its quotas, and what waits for an operator — each tile
a link to where it is handled. The figures are a fragment (``/admin/dashboard/live``) the page
fetches again every 5 seconds with htmx; the first load renders it inline, so it reads without
JavaScript. One core call (``books.dashboard``) makes every figure; ``/admin/outbox`` lists the
chat messages that wait."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from quanyi.core.books.dashboard import Dashboard
from quanyi.core.staff.roles import Area
from quanyi.webhooks.console import blueprint
from quanyi.webhooks.console.charts import bars, lines
from quanyi.webhooks.console.shell import core, guard, money, page, text

# Where each "needs attention" tile is handled (other areas' pages: plain paths).
ATTENTION = (
    ("review", "/admin/orders/review"),
    ("failed", "/admin/orders?attention=failed"),
    ("recharge_stuck", "/admin/orders?attention=recharge_stuck"),
    ("recharge_failed", "/admin/orders?attention=recharge_failed"),
    ("withdrawals", "/admin/books/withdrawals?status=pending"),
    ("risk_held", "/admin/risk#held"),
    ("webhooks_failing", "/admin/partners#webhooks"),
)


@blueprint.get("/")
@guard(Area.DASHBOARD)
async def dashboard() -> Any:
    return await page("console/dashboard.html", **await _figures())


@blueprint.get("/dashboard/live")
@guard(Area.DASHBOARD)
async def dashboard_live() -> Any:
    return await page("console/dashboard_live.html", **await _figures())


@blueprint.get("/outbox")
@guard(Area.DASHBOARD)
async def outbox() -> Any:
    backlog = await core().platform.outbox_backlog()
    return await page("console/outbox.html", backlog=backlog, age=age, shown_limit=200)


async def _figures() -> dict[str, Any]:
    board = await core().books.dashboard()
    return {
        "board": board,
        "hour_chart": _hour_chart(board),
        "day_chart": _day_chart(board),
        "attention": [(key, href, getattr(board.attention, key)) for key, href in ATTENTION],
        "age": age,
        "signed": signed,
    }


def _axis(minor: int, currency: str) -> str:
    return money(minor, currency)


def _hour_chart(board: Dashboard) -> str:
    return bars(
        text("console_dash.by_hour"),
        [f"{hour:02d}" for hour in range(24)],
        [board.hourly_yesterday, board.hourly_today],
        names=[text("console_dash.yesterday"), text("console_dash.today")],
        fmt=lambda minor: _axis(minor, board.currency),
        floor=100,
    )


def _day_chart(board: Dashboard) -> str:
    return lines(
        text("console_dash.by_day"),
        board.day_labels,
        [board.daily_paid, board.daily_net],
        names=[text("console_dash.paid"), text("console_dash.net")],
        fmt=lambda minor: _axis(minor, board.currency),
        floor=100,
    )


def signed(minor: int, currency: str | None = None) -> str:
    """A difference as money with its sign."""
    if minor < 0:
        return "-" + money(-minor, currency)
    return ("+" if minor else "") + money(minor, currency)


def age(moment: datetime | None) -> str:
    """How long ago, in the page's language, in its largest whole unit."""
    if moment is None:
        return "-"
    seconds = max(0, int((datetime.now(UTC) - moment).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return text(f"console_dash.age_{unit}", n=seconds // size)
    return text("console_dash.age_s", n=seconds)
