"""Orders (订单): the search by number, partner number, buyer or card key, with filters, paging,
sorting and the dashboard's attention lists; its CSV and XLSX export; payments kept for review.
The order's own page and its actions are in ``orders_file``."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any

from quart import Response, redirect, request, url_for

from quanyi.core.errors import Forbidden, NotFound, QuanyiError, RefundNotSupported
from quanyi.core.money import Money
from quanyi.core.platform import audit
from quanyi.core.platform.export import csv_bytes, xlsx_bytes
from quanyi.core.sales.console_orders import (
    ATTENTION,
    EXPORT_LIMIT,
    SORTS,
    STATUSES,
    XLSX_LIMIT,
    OrderListRow,
    OrderQuery,
)
from quanyi.core.staff.roles import Area
from quanyi.webhooks.console import blueprint
from quanyi.webhooks.console.shell import core, guard, me, message, page, reason, text, when

# The query string's names, as the dashboard links to them.
FILTERS = ("q", "status", "channel", "from", "to", "attention", "sort")


class BadQuery(ValueError):
    """A query string no search means: a date that is not one, a page that is not a number."""


def _day(raw: str, name: str) -> date | None:
    raw = raw.strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise BadQuery(text("console_orders.bad_date", field=name)) from None


def parse_query() -> OrderQuery:
    args = request.args
    page_text = args.get("page", "1").strip() or "1"
    if not page_text.isdigit():
        raise BadQuery(text("console_orders.bad_page"))
    return OrderQuery(
        text=args.get("q", "")[:512],
        status=args.get("status", "").strip(),
        channel=args.get("channel", "").strip()[:64],
        start=_day(args.get("from", ""), "from"),
        end=_day(args.get("to", ""), "to"),
        attention=args.get("attention", "").strip(),
        sort=args.get("sort", "").strip() or "-created",
        page=int(page_text[:7]),
    )


def current_args() -> dict[str, str]:
    """The filters of the current search, without the empty ones (for links that keep them)."""
    return {name: request.args[name] for name in FILTERS if request.args.get(name, "").strip()}


@blueprint.get("/orders")
@guard(Area.ORDERS)
async def orders() -> Any:
    try:
        query = parse_query()
        found = await core().sales.search_orders(query)
    except BadQuery as exc:
        return await _search_page(None, error=str(exc), status=400)
    except QuanyiError as exc:
        return await _search_page(None, error=reason(exc), status=400)
    return await _search_page(found)


async def _search_page(found: Any, *, error: str = "", status: int = 200) -> Any:
    args = current_args()

    def link(**changes: Any) -> str:
        merged = {**args, **{k: str(v) for k, v in changes.items() if v not in (None, "")}}
        for key, value in changes.items():
            if value in (None, ""):
                merged.pop(key, None)
        return str(url_for("console.orders", **merged))  # type: ignore[arg-type]

    return await page(
        "console/orders.html",
        status=status,
        found=found,
        error=error,
        args=args,
        link=link,
        export_args=args,
        export_limits=(EXPORT_LIMIT, XLSX_LIMIT),
        statuses=STATUSES,
        attentions=ATTENTION,
        sorts=SORTS,
        channels=await core().sales.order_channels(),
    )


# --- export --------------------------------------------------------------------------------------


def _headers() -> list[str]:
    return [
        text(f"console_orders.col_{name}")
        for name in (
            "number",
            "created",
            "status",
            "channel",
            "buyer",
            "username",
            "items",
            "amount",
            "currency",
            "method",
            "paid",
            "failure",
        )
    ]


def _cells(row: OrderListRow) -> list[Any]:
    return [
        row.number,
        when(row.created_at, "%Y-%m-%d %H:%M:%S"),
        text(f"status.{row.status}"),
        row.channel,
        row.user_id,
        row.username or "",
        row.items,
        Money(row.amount, row.currency),
        row.currency,
        row.payment_method,
        when(row.paid_at, "%Y-%m-%d %H:%M:%S") if row.paid_at else "",
        row.failure_reason or "",
    ]


async def _export_rows(limit: int) -> list[OrderListRow] | Any:
    try:
        return await core().sales.export_orders(parse_query(), limit=limit)
    except BadQuery as exc:
        return await message(text("console_orders.export_title"), str(exc), status=400, bad=True)
    except QuanyiError as exc:
        return await message(text("console_orders.export_title"), reason(exc), status=400, bad=True)


@blueprint.get("/orders/export.csv")
@guard(Area.ORDERS)
async def orders_export_csv() -> Any:
    rows = await _export_rows(EXPORT_LIMIT)
    if not isinstance(rows, list):
        return rows
    cells = [_headers(), *(_cells(row) for row in rows)]
    body = await asyncio.to_thread(csv_bytes, cells, bom=True)  # the loop keeps serving meanwhile
    return Response(body, 200, _download("csv", "text/csv; charset=utf-8"))


@blueprint.get("/orders/export.xlsx")
@guard(Area.ORDERS)
async def orders_export_xlsx() -> Any:
    rows = await _export_rows(XLSX_LIMIT)
    if not isinstance(rows, list):
        return rows
    cells = [_cells(row) for row in rows]
    body = await asyncio.to_thread(xlsx_bytes, text("console.nav.orders"), _headers(), cells)
    return Response(body, 200, _download("xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"))


def _download(ext: str, mimetype: str) -> dict[str, str]:
    return {"Content-Type": mimetype, "Content-Disposition": f'attachment; filename="orders.{ext}"'}


# --- payments kept for review ---------------------------------------------------------------------


@blueprint.get("/orders/review")
@guard(Area.ORDERS)
async def review() -> Any:
    return await _review_page()


async def _review_page(*, error: str = "", notice: str = "", manual_for: int | None = None, status: int = 200) -> Any:
    return await page(
        "console/orders_review.html",
        status=status,
        payments=await core().sales.payments_to_review(limit=100),
        error=error,
        notice=notice,
        manual_for=manual_for,
    )


@blueprint.post("/orders/review/<int:payment_id>/refund")
@guard(Area.ORDERS, write=True)
async def review_refund(payment_id: int) -> Any:
    form = await request.form
    why = form.get("reason", "").replace("\x00", "")  # PostgreSQL refuses a NUL in text
    manual = form.get("manual", "") == "1"
    try:
        await core().staff.require_payment_refund(me().user_id, payment_id)
        result = await core().sales.refund_payment(payment_id, reason=why, actor=me().actor, manual=manual)
    except RefundNotSupported:
        return await _review_page(error=text("console_orders.no_refund_api"), manual_for=payment_id, status=400)
    except Forbidden as exc:
        return await _review_page(error=reason(exc), status=403)
    except NotFound as exc:
        return await _review_page(error=reason(exc), status=404)
    except QuanyiError as exc:
        return await _review_page(error=reason(exc), status=400)
    await core().platform.record(
        audit.Entry(
            me().actor,
            "web",
            "web refund payment",
            "payment",
            str(payment_id),
            new={"status": result.status, "amount": result.amount, "manual": manual},
        )
    )
    return redirect(url_for("console.review", done=result.status), 303)
