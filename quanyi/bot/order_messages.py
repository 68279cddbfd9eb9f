"""The outbox kinds of orders and payments, rendered for chat: a delivery's codes and links, an
order that expired, failed or was refunded, a recharge's outcome, a payment kept for review, a
low-stock alert, a bulk purchase's CSV, and a pending order's Pay and Cancel buttons taken off
once it is not pending. Core hands over plain data; nothing here reads the database or decrypts.
"""

from __future__ import annotations

from collections.abc import Mapping

from quanyi.bot.outbox_sender import ButtonsOff, Document, Part, QrPhoto, Renderer
from quanyi.bot.render import QR_LIMIT, delivery_messages, mask_account, method_label, money, status_label, undone_text
from quanyi.bot.words import supplier_reason, word
from quanyi.core.platform import export
from quanyi.core.platform.outbox import Outgoing
from quanyi.core.platform.outbox_views import OrderFacts, RechargeFacts
from quanyi.core.sales import redeem
from quanyi.core.services import Core
from quanyi.i18n import raw_t, t


def _order_id(message: Outgoing) -> int:
    order_id = message.payload.get("order_id")
    if order_id is None:
        raise LookupError(f"outbox {message.id}: order missing")
    return int(str(order_id))


def _support_line(core: Core, lang: str) -> str:
    contact = core.settings.support_contact
    return t(lang, "support_line", contact=contact) if contact else ""


async def delivery_texts(core: Core, message: Outgoing) -> tuple[list[str], list[str]]:
    """A delivery's texts (its codes and links, decrypted by core for this send) and the links
    to send as QR codes."""
    sent = await core.platform.outbox_delivery(_order_id(message))
    public_url = core.settings.public_url
    texts = delivery_messages(
        message.language,
        sent.number,
        sent.lines,
        sent.links,
        public_url=public_url,
        tz=core.settings.timezone,
        qr_limit=QR_LIMIT if any(sent.links) else None,
    )
    return texts, [redeem.link(public_url, issued.token) for links in sent.links for issued in links]


async def delivery(core: Core, message: Outgoing) -> list[Part]:
    texts, urls = await delivery_texts(core, message)
    return [*texts, *(QrPhoto(url) for url in urls[:QR_LIMIT])]


async def bulk_delivery(core: Core, message: Outgoing) -> Document:
    """A bulk purchase's codes as one ``serial,secret`` CSV file, captioned with the order."""
    sent = await core.platform.outbox_delivery(_order_id(message), purpose="export", links=False)
    # A code starting like a formula ("-AB12") is written "'-AB12": the buyer drops one
    # leading quote to read it (quanyi.core.platform.export).
    rows: list[list[export.Cell]] = [["serial", "secret"]]
    rows += [[code.serial or "", code.secret] for line in sent.lines for code in line.codes]
    caption = t(
        message.language,
        "agent.bulk_caption",
        number=sent.number,
        name=", ".join(line.name for line in sent.lines),
        quantity=sum(line.quantity for line in sent.lines),
        total=money(sent.amount, sent.currency),
    )
    return Document(f"{sent.number}.csv", export.csv_bytes(rows, line_end="\n"), caption)


async def stock_low(core: Core, message: Outgoing) -> list[Part]:
    return [stock_low_text(message.language, message.payload)]


def stock_low_text(lang: str, payload: Mapping[str, object]) -> str:
    """One wording for operators and for the distributor owning the allocation: it names the channel."""
    values = {k: payload.get(k, "") for k in ("name", "sku", "left", "threshold")}
    channel = payload.get("channel")
    if channel is None:
        return t(lang, "ops.stock_low_pool", **values)
    return t(lang, "ops.stock_low_channel", channel=channel, **values)


async def recharge(core: Core, message: Outgoing) -> list[Part]:
    """A direct recharge's outcome, for its buyer or for the operators."""
    order = await core.platform.outbox_order(_order_id(message))
    if order.recharge is None:
        raise LookupError(f"outbox {message.id}: order has no lines")
    return [_recharge_text(core, message, order, order.recharge)]


def _recharge_text(core: Core, message: Outgoing, order: OrderFacts, line: RechargeFacts) -> str:
    lang = message.language
    values = {"number": order.number, "name": line.name, "account": mask_account(line.account)}
    amount = money(line.amount, order.currency)
    if message.kind == "recharge_success":
        return t(lang, "deliver.recharge_success", **values)
    if message.kind == "admin_recharge_late_success":
        return t(
            lang,
            "deliver.admin_recharge_late_success",
            amount=amount,
            user=order.user_id,
            resolution=word(lang, "recharge_resolution", line.resolution) if line.resolution else "-",
            **values,
        )
    if message.kind == "admin_recharge_failed":
        return t(
            lang,
            "deliver.admin_recharge_failed",
            amount=amount,
            user=order.user_id,
            reason=failure_reason(lang, line.failure_reason),
            **values,
        )
    resolution = str(message.payload.get("resolution", "refund_pending"))
    if resolution == "refunded":
        outcome = t(lang, "deliver.failed_refunded", amount=amount)
    elif resolution == "fallback":
        outcome = t(lang, "deliver.failed_fallback")
    else:
        outcome = t(lang, "deliver.failed_refund_pending", amount=amount, support=_support_line(core, lang))
    reason = t(lang, "deliver.failed_reason", reason=failure_reason(lang, line.failure_reason))
    return "\n".join([t(lang, "deliver.recharge_failed", **values), reason, outcome.strip()])


# Reasons core writes itself; a supplier's own reason is shown as it gave it.
_OWN_REASONS = {"timed out": "timed_out", "supplier unreachable": "unreachable", "failed": "unknown", "": "unknown"}


def failure_reason(lang: str, reason: str | None) -> str:
    """Why a recharge failed, in words: core's own reasons and the codes suppliers send."""
    own = _OWN_REASONS.get((reason or "").strip().lower())
    return raw_t(lang, f"deliver.reason_{own}") if own else supplier_reason(lang, reason or "")


async def order_closed(core: Core, message: Outgoing) -> list[Part]:
    """An order that expired unpaid, or was paid and could not be filled."""
    lang = message.language
    order = await core.platform.outbox_order(_order_id(message))
    if message.kind == "order_expired":
        return [t(lang, "order_expired", number=order.number)]
    if message.kind == "order_failed":
        return [t(lang, "order_failed", number=order.number, support=_support_line(core, lang))]
    amount = money(order.amount, order.currency)
    return [t(lang, "admin_order_failed", number=order.number, amount=amount, user=order.user_id)]


async def refunded(core: Core, message: Outgoing) -> list[Part]:
    lang, payload = message.language, message.payload
    order = await core.platform.outbox_order(_order_id(message))
    amount = money(int(str(payload["amount"])), str(payload["currency"]))
    if message.kind == "refunded":
        return [_refunded_text(lang, payload, order.number, amount)]
    method = method_label(lang, str(payload.get("method", "")), "")
    text = t(lang, "admin_provider_refund", number=order.number, amount=amount, method=method)
    return [text + undone_text(lang, bool(payload.get("codes_voided")), bool(payload.get("links_revoked")))]


def _refunded_text(lang: str, payload: Mapping[str, object], number: str, amount: str) -> str:
    """Say what the refund did: codes voided, links revoked, or (a second payment given back)
    nothing to the order. A message queued before core told these facts keeps the old text."""
    if "codes_voided" not in payload:
        return t(lang, "refunded", number=number, amount=amount)
    if payload.get("payment_only"):
        return t(lang, "refund_payment", number=number, amount=amount)
    parts = [t(lang, "refund_done", number=number, amount=amount)]
    if payload.get("codes_voided"):
        parts.append(t(lang, "refund_codes_void"))
    if payload.get("links_revoked"):
        parts.append(t(lang, "refund_links_void"))
    return "\n".join(parts)


async def payment_review(core: Core, message: Outgoing) -> list[Part]:
    """Money for an order that could no longer take it, kept for an operator to decide."""
    lang = message.language
    order = await core.platform.outbox_order(_order_id(message), payment_id=int(str(message.payload["payment_id"])))
    payment = order.payment
    if payment is None:  # asked for by id: core raises when it is gone, so never here
        raise LookupError(f"outbox {message.id}: payment missing")
    values = {
        "number": order.number,
        "amount": money(payment.amount, payment.currency),
        "status": status_label(lang, order.status),
    }
    # A second payment for an order already paid: said as such, never as a failed delivery.
    twice = bool(message.payload.get("twice"))
    if message.kind == "payment_review":
        key = "taps.paid_twice" if twice else "payment_review"
        return [t(lang, key, support=_support_line(core, lang), **values)]
    method = method_label(lang, payment.method, "")
    key = "taps.admin_paid_twice" if twice else "admin_payment_review"
    return [t(lang, key, method=method, txn=payment.provider_txn_id, **values)]


async def buttons_off(core: Core, message: Outgoing) -> list[Part]:
    """An order left pending: its Pay and Cancel buttons come off each message that showed them."""
    ids = message.payload.get("message_ids")
    if not isinstance(ids, list):
        raise LookupError(f"outbox {message.id}: messages missing")
    return [ButtonsOff(int(str(message_id))) for message_id in ids]


RENDERERS: dict[str, Renderer] = {
    "order_buttons_off": buttons_off,
    "delivery": delivery,
    "stock_low": stock_low,
    "recharge_success": recharge,
    "recharge_failed": recharge,
    "admin_recharge_failed": recharge,
    "admin_recharge_late_success": recharge,
    "order_expired": order_closed,
    "order_failed": order_closed,
    "admin_order_failed": order_closed,
    "refunded": refunded,
    "admin_provider_refund": refunded,
    "payment_review": payment_review,
    "admin_payment_review": payment_review,
}
