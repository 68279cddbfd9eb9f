"""The pricing engine's promises, checked on generated orders and on hand-worked examples:
the breakdown adds up exactly, never goes under the floor, every percentage is floor-rounded
in integer minor units, and promotions combine with coupons as their stacking says."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from quanyi.core.catalog.pricing import (
    Breakdown,
    CouponRule,
    PricedLine,
    PromotionRule,
    Reason,
    compute,
    spread,
)

SKUS = ("A", "B", "C", "D")
CATEGORIES = ("games", "music")


@st.composite
def priced_lines(draw: st.DrawFn) -> list[PricedLine]:
    skus = draw(st.lists(st.sampled_from(SKUS), min_size=1, max_size=4, unique=True))
    lines = []
    for sku in skus:
        price = draw(st.integers(1, 10**7))
        lines.append(
            PricedLine(
                sku=sku,
                quantity=draw(st.integers(1, 50)),
                unit_price=price,
                floor_price=draw(st.one_of(st.just(0), st.integers(0, price))),
                category=draw(st.sampled_from((None, *CATEGORIES))),
            )
        )
    return lines


scopes = st.tuples(
    st.frozensets(st.sampled_from(SKUS), max_size=2), st.frozensets(st.sampled_from(CATEGORIES), max_size=1)
)
spends = st.one_of(st.just(0), st.integers(1, 10**6), st.integers(1, 10**9))


@st.composite
def promotion_rules(draw: st.DrawFn, ident: int) -> PromotionRule:
    kind = draw(st.sampled_from(("spend_off", "spend_percent", "units_price")))
    cap = None
    if kind == "spend_off":
        threshold, value = draw(spends), draw(st.integers(1, 10**8))
    elif kind == "spend_percent":
        threshold, value = draw(spends), draw(st.integers(1, 9_999))
        cap = draw(st.one_of(st.none(), st.integers(1, 10**7)))
    else:
        threshold = draw(st.integers(2, 10))
        value = draw(st.integers(1, threshold * 100 - 1))
    skus, categories = draw(scopes)
    return PromotionRule(
        id=ident,
        name=f"promo{ident}",
        kind=kind,
        threshold=threshold,
        value=value,
        currency=draw(st.sampled_from(("CNY", "CNY", "CNY", "USD"))),
        cap=cap,
        skus=skus,
        categories=categories,
        stacking=draw(st.sampled_from(("stack", "best_of", "exclusive"))),
    )


@st.composite
def promotion_lists(draw: st.DrawFn) -> list[PromotionRule]:
    count = draw(st.integers(0, 4))
    return [draw(promotion_rules(i + 1)) for i in range(count)]


@st.composite
def coupon_rules(draw: st.DrawFn) -> CouponRule:
    kind = draw(st.sampled_from(("amount", "percent")))
    if kind == "amount":
        value, cap = draw(st.integers(1, 10**8)), None
    else:
        value, cap = draw(st.integers(1, 10_000)), draw(st.one_of(st.none(), st.integers(1, 10**7)))
    skus, categories = draw(scopes)
    return CouponRule(
        id=77,
        code_id=1,
        code="SAVE",
        name="save",
        kind=kind,
        value=value,
        currency=draw(st.sampled_from(("CNY", "CNY", "CNY", "USD"))),
        cap=cap,
        min_spend=draw(spends),
        skus=skus,
        categories=categories,
    )


def in_scope(line: PricedLine, skus: frozenset[str], categories: frozenset[str]) -> bool:
    return (not skus and not categories) or line.sku in skus or line.category in categories


def exact_promotion_value(rule: PromotionRule, lines: list[PricedLine]) -> Fraction:
    """An independent oracle: the rational value of a promotion before rounding and the floor."""
    eligible = [ln for ln in lines if in_scope(ln, rule.skus, rule.categories)]
    base = sum(ln.unit_price * ln.quantity for ln in eligible)
    if not eligible:
        return Fraction(0)
    if rule.kind == "spend_off":
        return Fraction(min(rule.value, base)) if base >= rule.threshold else Fraction(0)
    if rule.kind == "spend_percent":
        if base < rule.threshold:
            return Fraction(0)
        off = Fraction(base * rule.value, 10_000)
        return min(off, Fraction(rule.cap)) if rule.cap is not None else off
    saved = sum(
        Fraction(ln.unit_price * (ln.quantity // rule.threshold) * (rule.threshold * 100 - rule.value), 100)
        for ln in eligible
    )
    return min(saved, Fraction(base))


def check_sums(result: Breakdown, lines: list[PricedLine]) -> None:
    assert result.list_amount == sum(ln.unit_price * ln.quantity for ln in lines)
    assert result.list_amount - result.discount_amount == result.payable == sum(result.payables)
    floors = [ln.floor_price * ln.quantity for ln in lines]
    for payable, floor, list_amount in zip(result.payables, floors, result.list_amounts, strict=True):
        assert floor <= payable <= list_amount
    assert result.payable >= max(sum(floors), 1)
    assert result.floor == max(sum(floors), 1)
    for adjustment in result.adjustments:
        assert adjustment.amount > 0
        assert len(adjustment.lines) == len(lines)
        assert all(share >= 0 for share in adjustment.lines)
        assert sum(adjustment.lines) == adjustment.amount
    assert [a.kind for a in result.adjustments] in ([], ["promotion"], ["coupon"], ["promotion", "coupon"])


@settings(max_examples=400, deadline=None)
@given(priced_lines(), promotion_lists(), st.one_of(st.none(), coupon_rules()))
def test_the_breakdown_adds_up_and_stays_at_or_above_the_floor(lines, promotions, coupon):
    result = compute(lines, "CNY", promotions, coupon)
    check_sums(result, lines)

    values = {p.id: exact_promotion_value(p, lines) for p in promotions if p.currency == "CNY"}
    # What each promotion can really take: its value, within the order's room above its floor
    # and what the lines it covers can give above theirs.
    room = max(
        sum(ln.unit_price * ln.quantity for ln in lines) - max(sum(ln.floor_price * ln.quantity for ln in lines), 1), 0
    )
    effective = {
        p.id: min(
            int(values[p.id]),
            room,
            sum((ln.unit_price - ln.floor_price) * ln.quantity for ln in lines if in_scope(ln, p.skus, p.categories)),
        )
        for p in promotions
        if p.currency == "CNY"
    }
    promotion = next((a for a in result.adjustments if a.kind == "promotion"), None)
    if promotion is not None:
        rule = next(p for p in promotions if p.id == promotion.ref)
        # No discount is more than its exact value; the chosen promotion takes the most.
        assert promotion.amount <= values[rule.id]
        assert all(promotion.amount >= v for v in effective.values())
        if rule.kind == "spend_percent" and not promotion.capped:
            base = sum(ln.unit_price * ln.quantity for ln in lines if in_scope(ln, rule.skus, rule.categories))
            expected = base * rule.value // 10_000
            assert promotion.amount == (min(expected, rule.cap) if rule.cap is not None else expected)
    elif any(v >= 1 for v in effective.values()):
        # A promotion that can take something off stays off only when the coupon won (best_of).
        assert any(s.kind == "promotion" for s in result.skipped)

    applied = result.coupon
    if coupon is None:
        assert applied is None and result.coupon_refusal is None
        return
    # A coupon either applies or is reported with a reason, never silently dropped.
    assert (applied is None) != (result.coupon_refusal is None)
    if applied is not None:
        assert coupon.currency == "CNY"
        promo_shares = promotion.lines if promotion is not None else (0,) * len(lines)
        base = sum(
            ln.unit_price * ln.quantity - promo_shares[i]
            for i, ln in enumerate(lines)
            if in_scope(ln, coupon.skus, coupon.categories)
        )
        if coupon.kind == "percent":
            exact = Fraction(base * coupon.value, 10_000)
            assert applied.amount <= exact
            if not applied.capped:
                expected = base * coupon.value // 10_000
                assert applied.amount == (min(expected, coupon.cap) if coupon.cap is not None else expected)
        else:
            assert applied.amount <= coupon.value
            if not applied.capped:
                assert applied.amount == min(coupon.value, base)


@settings(max_examples=300, deadline=None)
@given(priced_lines(), promotion_lists(), coupon_rules())
def test_stacking_decides_whether_a_coupon_joins_the_promotion(lines, promotions, coupon):
    result = compute(lines, "CNY", promotions, coupon)
    promotion = next((a for a in result.adjustments if a.kind == "promotion"), None)
    applied = result.coupon
    stacking = {p.id: p.stacking for p in promotions}
    if promotion is not None and applied is not None:
        assert stacking[promotion.ref] == "stack"
    refusal = result.coupon_refusal
    if result.list_amount == result.floor:
        assert result.adjustments == ()  # nothing can come off an order at its floor
        return
    if refusal is not None and refusal.reason == Reason.NOT_COMBINABLE:
        assert promotion is not None and stacking[promotion.ref] == "exclusive"
    skipped_promotion = next((s for s in result.skipped if s.kind == "promotion"), None)
    if skipped_promotion is not None:
        # best_of chose the coupon: it takes at least as much as the promotion alone would.
        assert stacking[skipped_promotion.ref] == "best_of" and applied is not None
        assert skipped_promotion.reason == Reason.PROMOTION_BETTER
        alone = compute(lines, "CNY", promotions, None)
        assert applied.amount >= alone.discount_amount
    if refusal is not None and refusal.reason == Reason.PROMOTION_BETTER:
        assert promotion is not None and stacking[promotion.ref] == "best_of"
        alone = compute(lines, "CNY", [], coupon)
        assert promotion.amount >= alone.discount_amount


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10**9), st.lists(st.integers(0, 10**7), min_size=1, max_size=6))
def test_spread_splits_an_amount_exactly_within_each_capacity(amount, capacities):
    shares = spread(amount, capacities)
    assert len(shares) == len(capacities)
    if amount <= 0 or sum(capacities) <= 0:
        assert shares == [0] * len(capacities)
        return
    assert sum(shares) == amount
    if amount <= sum(capacities):
        assert all(0 <= s <= c for s, c in zip(shares, capacities, strict=True))


# --- worked examples, figures by hand ---------------------------------------------------------


def line(price: int, quantity: int = 1, floor: int = 0, sku: str = "A") -> PricedLine:
    return PricedLine(sku=sku, quantity=quantity, unit_price=price, floor_price=floor)


def promo(kind: str, threshold: int, value: int, *, cap: int | None = None, stacking: str = "stack") -> PromotionRule:
    return PromotionRule(1, "promo", kind, threshold, value, "CNY", cap=cap, stacking=stacking)


def coupon(kind: str, value: int, *, cap: int | None = None, min_spend: int = 0) -> CouponRule:
    return CouponRule(9, 90, "SAVE", "save", kind, value, "CNY", cap=cap, min_spend=min_spend)


SPEND_50_OFF_8 = promo("spend_off", 5000, 800)


def test_spend_50_get_8_off_on_60_costs_52():
    result = compute([line(6000)], "CNY", [SPEND_50_OFF_8])
    assert (result.list_amount, result.discount_amount, result.payable) == (6000, 800, 5200)


def test_spend_100_get_10_percent_off_capped_at_5_on_120_costs_115():
    result = compute([line(12000)], "CNY", [promo("spend_percent", 10000, 1000, cap=500)])
    # 10% of 120.00 is 12.00, the cap holds it to 5.00.
    assert result.payable == 11500
    assert result.adjustments[0].capped is False  # the cap is the rule's own, not the floor


def test_three_for_the_price_of_two_and_a_half_on_seven_units_of_9_99():
    result = compute([line(999, 7)], "CNY", [promo("units_price", 3, 250)])
    # 7 units make 2 groups of 3; each group saves half a unit: 2 x 4.995 = 9.99 off 69.93.
    assert (result.list_amount, result.discount_amount, result.payable) == (6993, 999, 5994)


def test_three_for_two_and_a_half_rounds_the_saving_down():
    result = compute([line(1001, 3)], "CNY", [promo("units_price", 3, 250)])
    # Half of 10.01 is 5.005: 5.00 off, never 5.01.
    assert result.discount_amount == 500


def test_stack_takes_the_coupon_percentage_of_what_the_promotion_left_rounded_down():
    result = compute([line(5999)], "CNY", [SPEND_50_OFF_8], coupon("percent", 1000))
    # 59.99 - 8.00 = 51.99; 10% of it is 5.199 -> 5.19; 51.99 - 5.19 = 46.80.
    assert [(a.kind, a.amount) for a in result.adjustments] == [("promotion", 800), ("coupon", 519)]
    assert result.payable == 4680


def test_best_of_keeps_the_promotion_when_it_takes_more():
    result = compute([line(6000)], "CNY", [promo("spend_off", 5000, 800, stacking="best_of")], coupon("percent", 1000))
    # The coupon alone would take 6.00, the promotion 8.00.
    assert [(a.kind, a.amount) for a in result.adjustments] == [("promotion", 800)]
    assert result.coupon_refusal is not None and result.coupon_refusal.reason == Reason.PROMOTION_BETTER
    assert result.payable == 5200


def test_best_of_takes_the_coupon_when_it_takes_more():
    result = compute([line(6000)], "CNY", [promo("spend_off", 5000, 800, stacking="best_of")], coupon("percent", 2000))
    # The coupon alone takes 12.00 > 8.00: the promotion is shown as skipped.
    assert [(a.kind, a.amount) for a in result.adjustments] == [("coupon", 1200)]
    assert [(s.kind, s.reason) for s in result.skipped] == [("promotion", Reason.PROMOTION_BETTER)]
    assert result.payable == 4800


def test_an_exclusive_promotion_refuses_the_coupon_as_not_combinable():
    result = compute([line(6000)], "CNY", [promo("spend_off", 5000, 800, stacking="exclusive")], coupon("amount", 3000))
    assert [(a.kind, a.amount) for a in result.adjustments] == [("promotion", 800)]
    refusal = result.coupon_refusal
    assert refusal is not None and refusal.reason == Reason.NOT_COMBINABLE
    assert refusal.details == {"promotion": "promo"}
    assert result.payable == 5200


def test_the_floor_cuts_a_coupon_short_and_marks_it_capped():
    result = compute([line(3000, 2, floor=2750)], "CNY", [], coupon("amount", 1000))
    # Floor 2 x 27.50 = 55.00: only 5.00 of the 10.00 applies.
    [applied] = result.adjustments
    assert (applied.amount, applied.capped, result.payable, result.floor) == (500, True, 5500, 5500)


def test_a_coupon_on_an_order_already_at_its_floor_is_refused_at_floor():
    result = compute([line(6000, floor=5500)], "CNY", [SPEND_50_OFF_8], coupon("amount", 100))
    # The promotion wanted 8.00 and got the 5.00 of room; nothing is left for the coupon.
    assert [(a.kind, a.amount, a.capped) for a in result.adjustments] == [("promotion", 500, True)]
    assert result.coupon_refusal is not None and result.coupon_refusal.reason == Reason.AT_FLOOR
    assert result.payable == 5500


def test_an_order_always_costs_at_least_one_minor_unit():
    result = compute([line(500)], "CNY", [], coupon("amount", 10_000))
    assert (result.discount_amount, result.payable) == (499, 1)


def test_a_coupon_below_its_minimum_spend_or_out_of_scope_is_refused():
    short = compute([line(4999)], "CNY", [], coupon("amount", 500, min_spend=5000))
    assert short.coupon_refusal is not None and short.coupon_refusal.reason == Reason.MIN_SPEND
    scoped = CouponRule(9, 90, "SAVE", "save", "amount", 500, "CNY", skus=frozenset({"B"}))
    elsewhere = compute([line(6000)], "CNY", [], scoped)
    assert elsewhere.coupon_refusal is not None and elsewhere.coupon_refusal.reason == Reason.NOT_IN_SCOPE
    assert short.payable == 4999 and elsewhere.payable == 6000


def test_spread_gives_the_remainder_to_the_largest_fractions_first():
    # 10 over 1:1:1 -> 3.33 each; the one unit left goes to the first line on the tie.
    assert spread(10, [1, 1, 1]) == [4, 3, 3]
    # 100 over 2:1 weights -> 66.67 and 33.33: the larger remainder gets the unit.
    assert spread(100, [2000, 1000]) == [67, 33]


def test_a_promotion_that_cannot_take_anything_off_does_not_block_the_coupon():
    # Line A is at its floor, so the exclusive promotion on A takes nothing; the coupon on the
    # whole order has 10.00 of room on line B and should apply. (Reachable only with several
    # lines: a single-line order's room is its line's room.)
    lines = [line(1000, floor=1000, sku="A"), line(1000, sku="B")]
    for stacking in ("exclusive", "best_of"):
        on_a = PromotionRule(1, "promo", "spend_off", 0, 800, "CNY", skus=frozenset({"A"}), stacking=stacking)
        result = compute(lines, "CNY", [on_a], coupon("amount", 300))
        assert [(a.kind, a.amount) for a in result.adjustments] == [("coupon", 300)], stacking
        assert result.payable == 1700
