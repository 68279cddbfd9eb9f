"""What a distributor is told, as the outbox sender renders it: allocations and quota passed,
top-ups and debits, a sub-distributor joining, commission made available, and the digest of
its customers' orders (kinds written by ``quanyi.core.distributors.notices``).

The figures come from the payload, as they were when the change was made; only the digest is
read again (by its id), since it lists orders.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

from quanyi.bot.outbox_sender import Part, Renderer
from quanyi.bot.render import deadline_text, money
from quanyi.core.distributors.views import Digest, DigestOrder
from quanyi.core.platform.outbox import Outgoing
from quanyi.core.services import Core
from quanyi.i18n import raw_t, t

CHANGES = ("allocated", "taken_back", "shared", "passed_in")
ITEMS_SHOWN = 80  # characters of an order's items in a digest line


def _int(message: Outgoing, name: str) -> int:
    return int(str(message.payload.get(name, 0)))


def _str(message: Outgoing, name: str) -> str:
    return str(message.payload.get(name, ""))


async def render_allocation(core: Core, message: Outgoing) -> list[Part]:
    change = _str(message, "change")
    if change not in CHANGES:
        change = "allocated"
    values = {
        "name": _str(message, "name"),
        "units": _int(message, "units"),
        "left": _int(message, "left"),
        "other": _str(message, "other"),
    }
    return [t(message.language, f"distrib.{change}", **values)]


async def render_balance(core: Core, message: Outgoing) -> list[Part]:
    lang, currency, amount = message.language, _str(message, "currency"), _int(message, "amount")
    key = "distrib.topped_up" if amount > 0 else "distrib.debited"
    text = t(lang, key, amount=money(abs(amount), currency), balance=money(_int(message, "balance"), currency))
    note = _str(message, "note").strip()
    if note:
        text += "\n" + t(lang, "distrib.note", note=note)
    return [text]


async def render_sub_joined(core: Core, message: Outgoing) -> list[Part]:
    return [t(message.language, "distrib.sub_joined", name=_str(message, "name"), tier=_str(message, "tier"))]


async def render_commission_available(core: Core, message: Outgoing) -> list[Part]:
    lang, currency = message.language, _str(message, "currency")
    text = t(
        lang,
        "distrib.commission_available",
        amount=money(_int(message, "amount"), currency),
        day=_str(message, "day"),
        now=money(max(0, _int(message, "now")), currency),
    )
    if _int(message, "netted") > 0:
        text += "\n" + t(lang, "distrib.commission_netted", netted=money(_int(message, "netted"), currency))
    return [text]


def _digest_line(lang: str, order: DigestOrder, tz: ZoneInfo) -> str:
    items = ", ".join(f"{name} × {quantity}" for name, quantity in order.items)
    if len(items) > ITEMS_SHOWN:  # twenty lines stay well inside one message
        items = items[: ITEMS_SHOWN - 1] + "…"
    values = {
        "at": order.paid_at.astimezone(tz).strftime("%m-%d %H:%M"),
        "number": order.number,
        "items": items,
        "amount": money(order.amount, order.currency),
    }
    if order.status in ("refunded", "failed"):
        return t(lang, "distrib.digest_line_state", **values, state=raw_t(lang, f"distrib.state_{order.status}"))
    return t(lang, "distrib.digest_line", **values)


def digest_text(lang: str, digest: Digest, tz: ZoneInfo) -> str:
    if digest.since is not None:
        title = t(lang, "distrib.digest_title", since=deadline_text(digest.since, str(tz)))
    else:
        title = t(lang, "distrib.digest_title_first")
    total = " + ".join(money(amount, currency) for currency, amount in digest.totals)
    lines = [title, t(lang, "distrib.digest_summary", count=digest.count, total=total)]
    if digest.commission:
        earned = " + ".join(money(amount, currency) for currency, amount in digest.commission)
        lines.append(t(lang, "distrib.digest_commission", amount=earned))
    lines.append("")
    lines += [_digest_line(lang, order, tz) for order in digest.orders]
    if digest.count > len(digest.orders):
        lines.append(t(lang, "distrib.digest_more", more=digest.count - len(digest.orders)))
    return "\n".join(lines)


async def render_digest(core: Core, message: Outgoing) -> list[Part]:
    digest = await core.distributors.customer_digest(_int(message, "digest_id"))
    return [digest_text(message.language, digest, ZoneInfo(core.settings.timezone))]


# The outbox kinds this module owns, rendered for the sender (collected by ``bot.renderers``).
RENDERERS: dict[str, Renderer] = {
    "distributor_allocation": render_allocation,
    "distributor_balance": render_balance,
    "distributor_sub_joined": render_sub_joined,
    "commission_available": render_commission_available,
    "distributor_digest": render_digest,
}
