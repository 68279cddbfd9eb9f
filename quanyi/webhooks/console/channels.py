"""Channels (渠道): the list, adding one, and each channel's price list (a price per product, or
none: the list price) — the same use cases as ``quanyi channel`` and ``/channel_add``."""

from __future__ import annotations

from typing import Any

from quart import redirect, request, url_for

from quanyi.core.errors import QuanyiError
from quanyi.core.staff.roles import Area
from quanyi.webhooks.console import blueprint
from quanyi.webhooks.console.people_forms import BadForm, checked, done_notice, field, required, status_of
from quanyi.webhooks.console.shell import core, guard, page, reason

KINDS = ("partner", "distributor")


@blueprint.get("/channels")
@guard(Area.CHANNELS)
async def channels() -> Any:
    return await _channels_page()


async def _channels_page(error: str = "", status: int = 200, values: dict[str, str] | None = None) -> Any:
    return await page(
        "console/channels.html",
        status=status,
        channels=await core().stock.channels(),
        kinds=KINDS,
        error=error,
        notice=done_notice(),
        values=values or {},
    )


@blueprint.post("/channels")
@guard(Area.CHANNELS, write=True)
async def channel_add() -> Any:
    form = await request.form
    values = {name: field(form, name) for name in ("code", "name", "kind")}
    try:
        kind = field(form, "kind") or "partner"
        if kind not in KINDS:
            raise BadForm("choice", field=kind)
        added = await core().stock.add_channel(required(form, "code"), required(form, "name"), kind)
    except BadForm as exc:
        return await _channels_page(exc.text(), 400, values)
    except QuanyiError as exc:
        return await _channels_page(reason(exc), status_of(exc), values)
    return redirect(url_for("console.channel", code=added.code, done="channel_added"), 303)


@blueprint.get("/channels/<code>")
@guard(Area.CHANNELS)
async def channel(code: str) -> Any:
    return await _channel_page(code)


async def _channel_page(code: str, error: str = "", status: int = 200) -> Any:
    try:
        prices = await core().stock.price_list(code)
    except QuanyiError as exc:
        return await _channels_page(reason(exc), status_of(exc))
    return await page("console/channel.html", status=status, prices=prices, error=error, notice=done_notice())


@blueprint.post("/channels/<code>/prices")
@guard(Area.CHANNELS, write=True)
async def channel_price(code: str) -> Any:
    form = await request.form
    try:
        sku = required(form, "sku")
        price = None if checked(form, "remove") else required(form, "price")
        await core().stock.set_channel_price(code, sku, price)
    except BadForm as exc:
        return await _channel_page(code, exc.text(), 400)
    except QuanyiError as exc:
        return await _channel_page(code, reason(exc), status_of(exc))
    done = "price_removed" if price is None else "price_set"
    return redirect(url_for("console.channel", code=code, done=done), 303)
