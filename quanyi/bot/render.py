"""Turning core results into chat texts (HTML parse mode) in the buyer's language."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from quanyi.core.books.commissions import format_rate
from quanyi.core.catalog.pricing import BASIS_POINTS, Breakdown, PromotionRule, Reason
from quanyi.core.catalog.views import PromotionKind, Stacking
from quanyi.core.errors import QuanyiError
from quanyi.core.money import Money
from quanyi.core.sales.views import DeliveredLine, IssuedLink, TokenState, link
from quanyi.i18n import raw_t, t

# Telegram refuses messages over 4096 characters; leave room for the header.
MESSAGE_LIMIT = 3800
# A delivery sends at most this many QR photos; past it the links come as text only.
QR_LIMIT = 10
_PHONE_LIKE = re.compile(r"\+?[\d][\d -]{6,}")


def method_label(lang: str, method: str, option: str) -> str:
    for key in (f"method_{method}_{option}", f"method_{method}"):
        try:
            return raw_t(lang, key)
        except KeyError:
            continue
    return option or method


def reason_in(lang: str, exc: QuanyiError) -> str:
    """Why core refused, in the reader's language and as plain text (the caller's ``t`` escapes
    it): the text ``exc.key`` names, filled from its details. Tests keep every refusal a chat
    can show keyed (tests/test_error_texts.py); an unkeyed one shows core's English message."""
    if exc.key:
        return raw_t(lang, exc.key, **exc.details)
    return exc.message


def status_label(lang: str, status: str) -> str:
    try:
        return raw_t(lang, f"status.{status}")
    except KeyError:
        return status


def delivery_messages(
    lang: str,
    number: str,
    lines: Sequence[DeliveredLine],
    links: Sequence[Sequence[IssuedLink]] = (),
    *,
    public_url: str = "",
    tz: str = "UTC",
    qr_limit: int | None = None,
) -> list[str]:
    """Every code and link of the order as text, split across messages when one would be too long.

    ``links`` runs parallel to ``lines`` (a card-key line has none). ``qr_limit`` says QR photos
    follow, so a note tells the buyer when some links come without one.
    """
    blocks: list[str] = []
    has_codes = False
    shown = 0
    for index, line in enumerate(lines):
        blocks.append(t(lang, "delivery_line", name=line.name, quantity=line.quantity))
        for code in line.codes:
            has_codes = True
            text = f"{code.serial} {code.secret}" if code.serial else code.secret
            blocks.append(f"<code>{_escape(text)}</code>")
        for issued in links[index] if index < len(links) else ():
            shown += 1
            blocks.append(link_block(lang, issued, public_url, tz))
        if line.instructions:
            blocks.append(t(lang, "delivery_instructions", text=line.instructions))
    if qr_limit is not None and shown > qr_limit:
        blocks.append(t(lang, "deliver.qr_limit", limit=qr_limit))
    blocks.append(t(lang, "delivery_footer" if has_codes or not shown else "deliver.links_footer"))
    messages: list[str] = []
    current = [t(lang, "delivery_header", number=number)]
    size = len(current[0])
    for block in blocks:
        if size + len(block) + 1 > MESSAGE_LIMIT:
            messages.append("\n".join(current))
            current = [t(lang, "delivery_continued", number=number, part=len(messages) + 1)]
            size = len(current[0])
        current.append(block)
        size += len(block) + 1
    messages.append("\n".join(current))
    return messages


def link_block(lang: str, issued: IssuedLink, public_url: str, tz: str) -> str:
    """A link with what it grants, its uses left and its expiry."""
    if issued.state == TokenState.VALID:
        uses = raw_t(lang, "deliver.uses_left", left=issued.uses_left, max=issued.max_uses)
    else:
        uses = raw_t(lang, f"deliver.state_{issued.state.value}")
    if issued.expires_at is None:
        expiry = raw_t(lang, "deliver.no_expiry")
    else:
        expiry = raw_t(lang, "deliver.valid_until", at=deadline_text(issued.expires_at, tz))
    url = link(public_url, issued.token)
    return (
        t(lang, "deliver.link", url=url)
        + "\n"
        + t(lang, "deliver.link_details", entitlement=issued.entitlement, uses=uses, expiry=expiry)
    )


def deadline_text(at: datetime, tz: str) -> str:
    """A moment as a buyer in the shop's time zone reads it, naming the zone: 2026-12-07 22:30 (UTC+8)."""
    local = at.astimezone(ZoneInfo(tz))
    minutes = int((local.utcoffset() or timedelta(0)).total_seconds()) // 60
    hours, rest = divmod(abs(minutes), 60)
    zone = "UTC" if minutes == 0 else f"UTC{'+' if minutes > 0 else '-'}{hours}" + (f":{rest:02d}" if rest else "")
    return f"{local:%Y-%m-%d %H:%M} ({zone})"


def mask_account(account: str) -> str:
    """A phone-like account with its middle hidden (first 3 and last 4 digits kept); others as given."""
    digits = sum(ch.isdigit() for ch in account)
    if not _PHONE_LIKE.fullmatch(account) or digits < 8:
        return account
    keep_tail = 4
    head = account[:3]
    return head + "*" * (len(account) - 3 - keep_tail) + account[-keep_tail:]


def money(amount: int, currency: str) -> str:
    return str(Money(amount, currency))


def promotion_text(lang: str, rule: PromotionRule) -> str:
    """A promotion as a buyer reads it: 满 ¥50.00 减 ¥8.00 / Spend ¥50.00, get ¥8.00 off."""
    threshold = money(rule.threshold, rule.currency)
    if rule.kind == PromotionKind.SPEND_OFF:
        key = "pricing.spend_off" if rule.threshold else "pricing.spend_off_any"
        text = t(lang, key, threshold=threshold, value=money(rule.value, rule.currency))
    elif rule.kind == PromotionKind.SPEND_PERCENT:
        key = "pricing.spend_percent" if rule.threshold else "pricing.spend_percent_any"
        # zh says what is paid (打9折), en what is taken off (10% off).
        rate = _zhe(rule.value) if lang == "zh" else format_rate(rule.value)
        text = t(lang, key, threshold=threshold, rate=rate)
        if rule.cap is not None:
            text += t(lang, "pricing.percent_cap", cap=money(rule.cap, rule.currency))
    else:
        text = t(lang, "pricing.units_price", n=rule.threshold, m=_hundredths(rule.value))
    if rule.stacking == Stacking.EXCLUSIVE:
        text += raw_t(lang, "pricing.exclusive")
    return raw_t(lang, "pricing.promotion_line", rule=text, name=_escape(rule.name))


def breakdown_lines(lang: str, breakdown: Breakdown | str | Mapping[str, Any]) -> list[str]:
    """List amount, each discount by name, and the payable (what is charged, when paid in
    another currency); from the engine's result or an order's ``pricing`` snapshot."""
    if isinstance(breakdown, Breakdown):
        breakdown = breakdown.snapshot()
    data: Mapping[str, Any] = json.loads(breakdown) if isinstance(breakdown, str) else breakdown
    currency = str(data["currency"])
    lines = [t(lang, "pricing.list_line", amount=money(int(data["list"]), currency))]
    for adjustment in data.get("adjustments", ()):
        key = "pricing.coupon_adjustment" if adjustment["kind"] == "coupon" else "pricing.promotion_adjustment"
        amount = money(int(adjustment["amount"]), currency)
        line = t(lang, key, name=adjustment["name"], code=adjustment.get("code") or "", amount=amount)
        if adjustment.get("capped"):
            line += raw_t(lang, "pricing.capped")
        lines.append(line)
    for skipped in data.get("skipped", ()):
        if skipped["kind"] == "promotion" and skipped["reason"] == Reason.PROMOTION_BETTER:
            lines.append(t(lang, "pricing.promotion_skipped", name=skipped["name"]))
    charged = data.get("charged")
    if charged:
        payable = money(int(charged["amount"]), str(charged["currency"]))
    else:
        payable = money(int(data["payable"]), currency)
    lines.append(t(lang, "pricing.payable_line", amount=payable))
    return lines


def coupon_refusal(
    lang: str, reason: str, details: Mapping[str, object], *, tz: str, need: int = 0, plain: bool = False
) -> str:
    """Why a coupon does not apply (a ``pricing.Reason``), in the buyer's language; ``need`` is
    what is missing to the minimum spend; ``plain`` for alerts (no HTML escaping)."""
    fill = raw_t if plain else t
    values: dict[str, object] = {}
    if reason == Reason.NOT_STARTED:
        values["at"] = _local_time(str(details.get("starts_at", "")), tz)
    elif reason == Reason.CURRENCY:
        values["currency"] = details.get("currency", "")
    elif reason == Reason.MIN_SPEND:
        currency = str(details.get("currency", ""))
        values["min"] = money(int(str(details.get("min_spend", 0))), currency)
        values["need"] = money(max(need, 0), currency)
    elif reason == Reason.PER_BUYER:
        values["n"] = details.get("per_buyer", "")
    elif reason in (Reason.NOT_COMBINABLE, Reason.PROMOTION_BETTER):
        values["promotion"] = details.get("promotion", "")
    try:
        return fill(lang, f"pricing.reason.{reason}", **values)
    except (KeyError, ValueError):
        return fill(lang, "pricing.reason.other")


def _zhe(basis_points_off: int) -> str:
    # 1000 bp off is 9折; odd rates name the percentage paid: 1250 bp off is 87.5折.
    paid = BASIS_POINTS - basis_points_off
    if paid % 1000 == 0:
        return str(paid // 1000)
    return format_rate(paid).removesuffix("%")


def _hundredths(value: int) -> str:
    whole, frac = divmod(value, 100)
    return str(whole) if not frac else f"{whole}.{frac:02d}".rstrip("0")


def _local_time(text: str, tz: str) -> str:
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return text
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return deadline_text(at, tz)


def _escape(text: str) -> str:
    import html

    return html.escape(text, quote=False)


def withdrawal_source(lang: str, source: str) -> str:
    return raw_t(lang, "withdraw.source_balance" if source == "balance" else "withdraw.source_commission")


def undone_text(lang: str, codes_voided: bool, links_revoked: bool) -> str:
    """What a refund undid, for operators: only what is true of this order."""
    parts = [t(lang, "admin_refund_codes_void")] if codes_voided else []
    if links_revoked:
        parts.append(t(lang, "admin_refund_links_void"))
    return "".join(parts)
