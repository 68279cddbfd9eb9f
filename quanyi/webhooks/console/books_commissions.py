"""Commissions (佣金) in the console: the rate of each chain level (set by finance) and the rows
with their totals, of one distributor or one order — ``core.books.commission_rates``,
``set_commission_rate`` and ``commission_report``, as ``quanyi commission`` calls them."""

from __future__ import annotations

from typing import Any

from quart import redirect, request, url_for

from quanyi.core.distributors.views import format_rate, parse_rate
from quanyi.core.errors import QuanyiError
from quanyi.core.staff.roles import Area
from quanyi.webhooks.console import blueprint
from quanyi.webhooks.console.money_words import BadForm, say, status_of, whole
from quanyi.webhooks.console.shell import core, guard, page, reason, text

SHOWN = 300


@blueprint.get("/books/commissions")
@guard(Area.BOOKS)
async def commissions() -> Any:
    return await _page()


async def _page(error: str = "", status: int = 200) -> Any:
    distributor = request.args.get("distributor", "").strip()[:64]
    order = request.args.get("order", "").strip()[:64]
    report = None
    try:
        report = await core().books.commission_report(
            distributor=distributor or None, order_number=order or None, limit=SHOWN
        )
    except QuanyiError as exc:
        error, status = error or reason(exc), status if error else status_of(exc)
    rates = await core().books.commission_rates()
    return await page(
        "console/books_commissions.html",
        status=status,
        rates=sorted(rates.items()),
        rate_text=format_rate,
        report=report,
        distributor=distributor,
        order=order,
        say=say,
        error=error,
        notice=request.args.get("done", ""),
    )


@blueprint.post("/books/commissions/rate")
@guard(Area.BOOKS, write=True)
async def commission_rate() -> Any:
    form = await request.form
    try:
        level = whole(form.get("level"), text("console_money.level"), lowest=1)
        await core().books.set_commission_rate(level, parse_rate(form.get("rate", "")))
    except BadForm as exc:
        return await _page(str(exc), 400)
    except QuanyiError as exc:
        return await _page(reason(exc), status_of(exc))
    return redirect(url_for("console.commissions", done="1"), 303)
