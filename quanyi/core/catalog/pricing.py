"""The pricing engine: what an order costs and why.

Every order — chat, partner API, a distributor's bulk purchase — is priced here, so the
figures a buyer is shown, the amount a payment must match and the books agree.

1. Price resolution: the product's list price, overridden by the selling channel's price
   (or a distributor's cost price for its own purchases), never below the product's floor
   (``channels.sale_terms`` / ``resolve_cost``).
2. Promotions (满减 / 满折 / N件M价): the one that takes most off applies; promotions do not
   combine with each other.
3. A coupon, combined with that promotion as the promotion's ``stacking`` says: ``stack``
   (the coupon applies to what is left after the promotion), ``best_of`` (whichever takes
   more off, the other is shown as skipped) or ``exclusive`` (no coupon while it applies).

Rounding, the one rule: every percentage or fraction of an amount is computed on integer
minor units as ``floor(amount * numerator / denominator)``, so a discount is never more than
its exact value and never a fraction of a minor unit. Discounts stop at the order's floor
(the sum of its lines' floor prices, and at least one minor unit: an order always costs
something to pay). The breakdown is integers throughout: ``list - sum(discounts) == payable``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from quanyi.core.models import DiscountKind, PromotionKind, Stacking

BASIS_POINTS = 10_000


class Reason:
    """Why a coupon does not apply: stable codes the fronts translate."""

    UNKNOWN = "unknown"
    INACTIVE = "inactive"
    NOT_STARTED = "not_started"
    EXPIRED = "expired"
    CURRENCY = "currency"
    NOT_IN_SCOPE = "not_in_scope"
    CHANNEL = "channel"
    MIN_SPEND = "min_spend"
    USED_UP = "used_up"
    PER_BUYER = "per_buyer"
    NOT_COMBINABLE = "not_combinable"
    PROMOTION_BETTER = "promotion_better"
    AT_FLOOR = "at_floor"


@dataclass(frozen=True)
class PricedLine:
    """One thing being bought, its unit price already resolved for this buyer and channel."""

    sku: str
    quantity: int
    unit_price: int
    floor_price: int = 0
    category: str | None = None
    name: str = ""


@dataclass(frozen=True)
class PromotionRule:
    id: int
    name: str
    kind: str
    threshold: int
    value: int
    currency: str
    cap: int | None = None
    skus: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset()
    stacking: str = Stacking.STACK


@dataclass(frozen=True)
class CouponRule:
    id: int
    code_id: int
    code: str
    name: str
    kind: str
    value: int
    currency: str
    cap: int | None = None
    min_spend: int = 0
    skus: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Adjustment:
    """A discount that applied: ``amount`` minor units off, spread over ``lines``."""

    kind: str  # promotion | coupon
    ref: int
    name: str
    amount: int
    code: str | None = None
    capped: bool = False  # cut short so the order stays at its floor
    lines: tuple[int, ...] = ()  # each line's share, in line order


@dataclass(frozen=True)
class Skipped:
    """A rule that matched and did not apply, with the reason (``Reason``)."""

    kind: str
    ref: int
    name: str
    reason: str
    details: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Breakdown:
    currency: str
    lines: tuple[PricedLine, ...]
    list_amounts: tuple[int, ...]
    payables: tuple[int, ...]
    adjustments: tuple[Adjustment, ...]
    skipped: tuple[Skipped, ...]
    floor: int

    @property
    def list_amount(self) -> int:
        return sum(self.list_amounts)

    @property
    def discount_amount(self) -> int:
        return sum(a.amount for a in self.adjustments)

    @property
    def payable(self) -> int:
        return sum(self.payables)

    @property
    def coupon(self) -> Adjustment | None:
        return next((a for a in self.adjustments if a.kind == "coupon"), None)

    @property
    def coupon_refusal(self) -> Skipped | None:
        return next((s for s in self.skipped if s.kind == "coupon"), None)

    def snapshot(self, *, charged_currency: str | None = None, charged: int | None = None) -> str:
        """The breakdown as stored on the order (JSON); ``charged`` when paid in another currency."""
        data: dict[str, object] = {
            "currency": self.currency,
            "list": self.list_amount,
            "lines": [
                {"sku": ln.sku, "quantity": ln.quantity, "unit_price": ln.unit_price, "list": la, "payable": pa}
                for ln, la, pa in zip(self.lines, self.list_amounts, self.payables, strict=True)
            ],
            "adjustments": [
                {"kind": a.kind, "id": a.ref, "name": a.name, "amount": a.amount, "code": a.code, "capped": a.capped}
                for a in self.adjustments
            ],
            "skipped": [{"kind": s.kind, "id": s.ref, "name": s.name, "reason": s.reason} for s in self.skipped],
            "payable": self.payable,
        }
        if charged_currency is not None and charged_currency != self.currency:
            data["charged"] = {"currency": charged_currency, "amount": charged}
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def percent_of(amount: int, basis_points: int) -> int:
    """The rounding rule: floor(amount x bp / 10,000)."""
    return amount * basis_points // BASIS_POINTS


def _in_scope(line: PricedLine, skus: frozenset[str], categories: frozenset[str]) -> bool:
    if not skus and not categories:
        return True
    return line.sku in skus or (line.category is not None and line.category in categories)


def promotion_discount(rule: PromotionRule, lines: Sequence[PricedLine], amounts: Sequence[int]) -> int:
    """What ``rule`` takes off these lines (at their ``amounts``), before the floor."""
    eligible = [i for i, line in enumerate(lines) if _in_scope(line, rule.skus, rule.categories)]
    base = sum(amounts[i] for i in eligible)
    if not eligible or base <= 0:
        return 0
    if rule.kind == PromotionKind.SPEND_OFF:
        return min(rule.value, base) if base >= rule.threshold else 0
    if rule.kind == PromotionKind.SPEND_PERCENT:
        if base < rule.threshold:
            return 0
        off = percent_of(base, rule.value)
        return min(off, rule.cap) if rule.cap is not None else off
    if rule.kind == PromotionKind.UNITS_PRICE:
        # Every ``threshold`` units of one product cost ``value / 100`` units.
        # Rounded once, over all the lines it covers.
        free_hundredths = max(rule.threshold * 100 - rule.value, 0)
        groups = [lines[i].quantity // rule.threshold if rule.threshold > 0 else 0 for i in eligible]
        off = sum(lines[i].unit_price * g * free_hundredths for i, g in zip(eligible, groups, strict=True)) // 100
        return min(off, base)
    return 0


def coupon_discount(rule: CouponRule, base: int) -> int:
    if base <= 0:
        return 0
    if rule.kind == DiscountKind.AMOUNT:
        return min(rule.value, base)
    off = percent_of(base, rule.value)
    return min(off, rule.cap) if rule.cap is not None else off


def spread(amount: int, capacities: Sequence[int]) -> list[int]:
    """Split ``amount`` over lines in proportion to what each can give (largest remainder,
    earlier lines first on ties); no line gets more than its capacity when amount <= total."""
    total = sum(capacities)
    if amount <= 0 or total <= 0:
        return [0] * len(capacities)
    shares = [amount * c // total for c in capacities]
    rest = amount - sum(shares)
    order = sorted(range(len(capacities)), key=lambda i: (-(amount * capacities[i] % total), i))
    for i in order[:rest]:
        shares[i] += 1
    return shares


def compute(
    lines: Sequence[PricedLine],
    currency: str,
    promotions: Iterable[PromotionRule] = (),
    coupon: CouponRule | None = None,
    *,
    refused: Sequence[Skipped] = (),
) -> Breakdown:
    """Price ``lines``: pure arithmetic over rules already found to be in force.

    ``refused`` carries coupon refusals found while loading (unknown code, used up...)."""
    lines = tuple(lines)
    list_amounts = tuple(line.unit_price * line.quantity for line in lines)
    floors = [line.floor_price * line.quantity for line in lines]
    floor = max(sum(floors), 1)
    current = list(list_amounts)
    skipped: list[Skipped] = list(refused)
    adjustments: list[Adjustment] = []
    room = max(sum(list_amounts) - floor, 0)

    def can_take(off: int, skus: frozenset[str], categories: frozenset[str]) -> int:
        """``off`` cut to what the order and the lines it covers can give above their floors."""
        give = sum(max(list_amounts[i] - floors[i], 0) for i, ln in enumerate(lines) if _in_scope(ln, skus, categories))
        return min(off, room, give)

    # Rules are compared by what they can really take off: one blocked by floors does not apply.
    best: tuple[int, PromotionRule] | None = None
    for rule in promotions:
        if rule.currency != currency:
            continue
        off = can_take(promotion_discount(rule, lines, list_amounts), rule.skus, rule.categories)
        if off > 0 and (best is None or off > best[0] or (off == best[0] and rule.id < best[1].id)):
            best = (off, rule)

    use_promotion = best is not None
    if coupon is not None:
        scope = [i for i, line in enumerate(lines) if _in_scope(line, coupon.skus, coupon.categories)]
        scoped_list = sum(list_amounts[i] for i in scope)
        alone = can_take(coupon_discount(coupon, scoped_list), coupon.skus, coupon.categories)
        refusal = _coupon_refusal(coupon, currency, bool(scope), scoped_list, best, alone)
        if refusal is None and best is not None and best[1].stacking == Stacking.BEST_OF:
            # The coupon alone takes more than the promotion: it wins, the promotion steps aside.
            use_promotion = False
            skipped.append(Skipped("promotion", best[1].id, best[1].name, Reason.PROMOTION_BETTER))
        if refusal is not None:
            skipped.append(Skipped("coupon", coupon.id, coupon.code, refusal[0], refusal[1]))
            coupon = None

    def apply(kind: str, ref: int, name: str, off: int, eligible: list[int], code: str | None = None) -> bool:
        nonlocal room
        capacity = [current[i] - floors[i] if i in eligible else 0 for i in range(len(lines))]
        capped_off = min(off, room, sum(max(c, 0) for c in capacity))
        if capped_off <= 0:
            return False
        shares = spread(capped_off, [max(c, 0) for c in capacity])
        for i, share in enumerate(shares):
            current[i] -= share
        room -= capped_off
        adjustments.append(Adjustment(kind, ref, name, capped_off, code, capped_off < off, tuple(shares)))
        return True

    if best is not None and use_promotion:
        rule = best[1]
        eligible = [i for i, line in enumerate(lines) if _in_scope(line, rule.skus, rule.categories)]
        apply("promotion", rule.id, rule.name, promotion_discount(rule, lines, list_amounts), eligible)
    if coupon is not None:
        eligible = [i for i, line in enumerate(lines) if _in_scope(line, coupon.skus, coupon.categories)]
        off = coupon_discount(coupon, sum(current[i] for i in eligible))
        if not apply("coupon", coupon.id, coupon.name, off, eligible, coupon.code):
            skipped.append(Skipped("coupon", coupon.id, coupon.code, Reason.AT_FLOOR))
    return Breakdown(
        currency=currency,
        lines=lines,
        list_amounts=list_amounts,
        payables=tuple(current),
        adjustments=tuple(adjustments),
        skipped=tuple(skipped),
        floor=floor,
    )


def _coupon_refusal(
    coupon: CouponRule,
    currency: str,
    in_scope: bool,
    scoped_list: int,
    best: tuple[int, PromotionRule] | None,
    alone: int,
) -> tuple[str, dict[str, object]] | None:
    """Why ``coupon`` does not apply to this order (a ``Reason`` and its details), or None.

    ``best`` is the promotion that applies (what it takes off, the rule); ``alone`` what the
    coupon would take off by itself, which decides a ``best_of`` promotion."""
    if coupon.currency != currency:
        return Reason.CURRENCY, {"currency": coupon.currency}
    if not in_scope:
        return Reason.NOT_IN_SCOPE, {}
    if scoped_list < coupon.min_spend:
        return Reason.MIN_SPEND, {"min_spend": coupon.min_spend, "currency": currency}
    if best is not None and best[1].stacking == Stacking.EXCLUSIVE:
        return Reason.NOT_COMBINABLE, {"promotion": best[1].name}
    if best is not None and best[1].stacking == Stacking.BEST_OF and alone <= best[0]:
        return Reason.PROMOTION_BETTER, {"promotion": best[1].name}
    return None


def in_window(starts_at: datetime | None, ends_at: datetime | None, now: datetime) -> bool:
    return (starts_at is None or starts_at <= now) and (ends_at is None or now < ends_at)


def scope_set(text: str) -> frozenset[str]:
    return frozenset(part.strip() for part in (text or "").split(",") if part.strip())


def parse_time(text: str, tz: str) -> datetime:
    """``YYYY-MM-DD`` (midnight) or ``YYYY-MM-DD HH:MM`` in the business time zone -> aware UTC."""
    from zoneinfo import ZoneInfo

    from quanyi.core.errors import InvalidInput

    value = (text or "").strip().replace("T", " ")
    for fmt in ("%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            local = datetime.strptime(value, fmt)
        except ValueError:
            continue
        return local.replace(tzinfo=ZoneInfo(tz)).astimezone(UTC)
    raise InvalidInput(
        f"not a time: {text!r} (write 2026-12-01 or 2026-12-01 18:00)", key="err_catalog.bad_time", text=text
    )
