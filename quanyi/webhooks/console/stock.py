"""Stock pages: every product's pool (available, reserved, sold, what quotas hold, the shared pool,
the sellable figure every door shows) with each channel's and distributor's allocation beside it,
levels at or under their threshold marked; one product's page allocates, takes back, shares and
sets thresholds (the use cases of ``quanyi stock allocate`` / ``threshold``), takes stock files
(``stock_upload``) and exports the unsold codes' serials — never a secret."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from quart import Response, redirect, request, url_for
from werkzeug.datastructures import MultiDict

from quanyi.core.errors import NotFound, QuanyiError
from quanyi.core.platform import audit, export
from quanyi.core.staff.roles import Area
from quanyi.core.stock.service import AllocationChange
from quanyi.core.stock.views import AllocationLevel, AllocationMode, Pool
from quanyi.webhooks.console import blueprint
from quanyi.webhooks.console.shell import core, guard, me, message, page, reason, text, when

ACTIONS = ("units", "take_back", "shared", "threshold")
SERIALS_HEADER: list[export.Cell] = ["item_id", "serial", "status", "batch", "file", "imported_at", "expires_at"]
SERIALS_PAGE = 2000


def pool_low(pool: Pool) -> bool:
    """The pool is at or under its alert threshold (the scheduler's alert counts the same codes)."""
    level = pool.level
    return bool(level.threshold) and not level.on_demand and level.available <= level.threshold


def allocation_low(allocation: AllocationLevel) -> bool:
    return (
        allocation.mode == AllocationMode.QUOTA
        and bool(allocation.threshold)
        and allocation.remaining <= allocation.threshold
    )


def _helpers() -> dict[str, Any]:
    return {"pool_low": pool_low, "allocation_low": allocation_low, "quota": AllocationMode.QUOTA.value}


@blueprint.get("/stock")
@guard(Area.STOCK)
async def stock() -> Any:
    return await page("console/stock.html", pools=await core().stock.pools(), **_helpers())


@blueprint.get("/stock/<sku>")
@guard(Area.STOCK)
async def stock_product(sku: str) -> Any:
    return await stock_product_page(sku, notice=text("console_catalog.saved") if request.args.get("saved") else "")


async def stock_product_page(sku: str, *, error: str = "", notice: str = "", status: int = 200) -> Any:
    try:
        (pool,) = await core().stock.pools(sku)
    except NotFound as exc:
        return await message(text("console_catalog.missing_title"), reason(exc), status=404, bad=True)
    detail = await core().catalog.product_detail(sku)
    channels = [c for c in await core().stock.channels() if c.active]
    return await page(
        "console/stock_product.html",
        status=status,
        pool=pool,
        kind=detail.kind,
        channels=channels,
        error=error,
        notice=notice,
        **_helpers(),
    )


@blueprint.post("/stock/<sku>/allocate")
@guard(Area.STOCK, write=True)
async def stock_allocate(sku: str) -> Any:
    form = await request.form
    try:
        change = _change(sku, form)
    except ValueError:
        return await stock_product_page(sku, error=text("console_catalog.bad_units"), status=400)
    try:
        await core().stock.change_allocation(change)
    except QuanyiError as exc:
        return await stock_product_page(sku, error=reason(exc), status=400)
    return redirect(url_for("console.stock_product", sku=sku, saved=1), 303)


def _change(sku: str, form: MultiDict[str, str]) -> AllocationChange:
    """The allocation change a form asks for; ValueError when its numbers are not whole numbers."""
    holder = (form.get("holder") or "").strip()
    action = form.get("action") or ""
    if action not in ACTIONS:
        raise ValueError(action)
    units = _whole(form.get("units"))
    threshold = _whole(form.get("threshold"))
    if action in ("units", "take_back") and units is None:
        raise ValueError("units")
    if action == "threshold" and threshold is None:
        raise ValueError("threshold")
    return AllocationChange(
        sku,
        holder,
        units=units if action == "units" else None,
        take_back=units if action == "take_back" else None,
        shared=action == "shared",
        threshold=threshold,
    )


def _whole(raw: str | None) -> int | None:
    raw = (raw or "").strip()
    if not raw:
        return None
    if not raw.isdecimal() or len(raw) > 9:
        raise ValueError(raw)
    return int(raw)


@blueprint.post("/stock/<sku>/threshold")
@guard(Area.STOCK, write=True)
async def stock_threshold(sku: str) -> Any:
    form = await request.form
    try:
        threshold = _whole(form.get("threshold"))
    except ValueError:
        threshold = None
    if threshold is None:
        return await stock_product_page(sku, error=text("console_catalog.bad_units"), status=400)
    try:
        await core().stock.set_threshold(sku, threshold)
    except QuanyiError as exc:
        return await stock_product_page(sku, error=reason(exc), status=400)
    return redirect(url_for("console.stock_product", sku=sku, saved=1), 303)


@blueprint.get("/stock/<sku>/serials.csv")
@guard(Area.STOCK)
async def stock_serials(sku: str) -> Any:
    """The unsold codes as CSV, streamed page by page: ids, serials, batches, dates — no secret.
    Who took the list out is on the trail."""
    try:
        first = await core().stock.unsold_serials(sku, limit=SERIALS_PAGE)
    except NotFound as exc:
        return await message(text("console_catalog.missing_title"), reason(exc), status=404, bad=True)
    await core().platform.record(audit.Entry(me().actor, "web", "export serials", "product", sku))

    async def rows() -> AsyncIterator[bytes]:
        batch = first
        yield export.csv_bytes([SERIALS_HEADER], bom=True)
        while batch:
            yield export.csv_bytes(
                [
                    [
                        row.item_id,
                        row.serial,
                        row.status,
                        row.batch_id,
                        row.source,
                        when(row.imported_at, "%Y-%m-%d %H:%M:%S"),
                        when(row.expires_at, "%Y-%m-%d %H:%M:%S") if row.expires_at else None,
                    ]
                    for row in batch
                ]
            )
            if len(batch) < SERIALS_PAGE:
                break
            batch = await core().stock.unsold_serials(sku, after=batch[-1].item_id, limit=SERIALS_PAGE)

    name = f"{sku}-unsold-serials.csv"
    headers = {"Content-Type": "text/csv; charset=utf-8", "Content-Disposition": f'attachment; filename="{name}"'}
    response = Response(_in_context(rows()), 200, headers)
    response.timeout = None  # a long list takes longer than Quart's 60 s for an answer
    return response


def _in_context(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """A streamed body that still sees the request (``core()``, ``when``) while it is sent."""
    from quart import stream_with_context

    @stream_with_context
    async def sent() -> AsyncIterator[bytes]:
        async for chunk in body:
            yield chunk

    return sent()
