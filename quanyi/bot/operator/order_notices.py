"""Operators' notices of paid orders: one per order, or a digest (outbox kinds rendered here;
core writes them, ``quanyi.core.sales.paid_notices``)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from zoneinfo import ZoneInfo

from quanyi.bot.outbox_sender import Part, Renderer
from quanyi.bot.render import method_label, money
from quanyi.core.platform.outbox import Outgoing
from quanyi.core.services import Core
from quanyi.i18n import raw_t, t


async def order_paid(core: Core, message: Outgoing) -> list[Part]:
    return [order_text(message.language, message.payload)]


async def orders_digest(core: Core, message: Outgoing) -> list[Part]:
    lang, payload = message.language, message.payload
    tz = ZoneInfo(core.settings.timezone)
    totals = payload.get("totals")
    shown_totals = " + ".join(
        money(int(amount), str(currency)) for currency, amount in (totals.items() if isinstance(totals, dict) else ())
    )
    count = int(str(payload.get("count", 0)))
    orders = payload.get("orders")
    listed = [o for o in (orders if isinstance(orders, list) else []) if isinstance(o, dict)]
    lines = [
        t(
            lang,
            "phoneops.digest_title",
            first=_local(payload.get("first"), tz),
            last=_local(payload.get("last"), tz),
            count=count,
            total=shown_totals or "-",
        )
    ]
    for order in listed:
        lines.append(
            t(
                lang,
                "phoneops.digest_row",
                number=order.get("number", "?"),
                items=_items(lang, order),
                amount=money(int(str(order.get("amount", 0))), str(order.get("currency", ""))),
                buyer=_buyer(lang, order),
            )
        )
    if count > len(listed):
        lines.append(t(lang, "phoneops.digest_more", more=count - len(listed)))
    return ["\n".join(lines)]


def order_text(lang: str, order: Mapping[str, object]) -> str:
    channel = str(order.get("channel", ""))
    return t(
        lang,
        "phoneops.order_paid",
        number=order.get("number", "?"),
        items=_items(lang, order),
        amount=money(int(str(order.get("amount", 0))), str(order.get("currency", ""))),
        channel=raw_t(lang, "phoneops.channel_bot") if channel == "bot" else channel,
        method=method_label(lang, str(order.get("method", "")), ""),
        buyer=_buyer(lang, order),
    )


def _items(lang: str, order: Mapping[str, object]) -> str:
    items = order.get("items")
    rows = [item for item in (items if isinstance(items, list) else []) if isinstance(item, list) and len(item) == 2]
    return raw_t(lang, "phoneops.item_sep").join(f"{name} × {quantity}" for name, quantity in rows) or "-"


def _buyer(lang: str, order: Mapping[str, object]) -> str:
    user_id, username = order.get("user_id"), order.get("username")
    if user_id is None:
        return raw_t(lang, "phoneops.no_buyer")
    return f"@{username} ({user_id})" if username else str(user_id)


def _local(value: object, tz: ZoneInfo) -> str:
    try:
        return f"{datetime.fromisoformat(str(value)).astimezone(tz):%m-%d %H:%M}"
    except ValueError:
        return "?"


# The outbox kinds this module owns, rendered for the sender (collected by ``bot.renderers``).
RENDERERS: dict[str, Renderer] = {
    "admin_order_paid": order_paid,
    "admin_orders_digest": orders_digest,
}
