"""Offers and prices (优惠与定价): coupons (create, enable or disable, named codes, batches of
one-use codes and the codes' CSV — codes are as good as money, so a download is an audited
write), promotions (create, enable or disable) and the bundles, each linking to its product
page. The use cases of ``quanyi coupon`` / ``promotion`` and the admin chat's pricing menu."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from quart import Response, redirect, request, url_for

from quanyi.core.books.commissions import format_rate
from quanyi.core.catalog.admin_views import (
    MAX_CODES_FILE,
    CodesFile,
    CouponView,
    DiscountKind,
    PromotionKind,
    PromotionView,
)
from quanyi.core.catalog.pricing_input import COUPON_KEYS, PROMOTION_KEYS
from quanyi.core.catalog.service import NewCoupon
from quanyi.core.errors import QuanyiError
from quanyi.core.staff.roles import Area
from quanyi.webhooks.console import blueprint
from quanyi.webhooks.console.people_forms import (
    BadForm,
    done_notice,
    field,
    optional_whole,
    required,
    status_of,
    whole,
)
from quanyi.webhooks.console.shell import core, guard, money, page, reason, text

MOST_CODES = 10_000  # one batch from the page; the CLI makes larger ones
USES_SHOWN = 50
IMPORT_SUFFIXES = (".csv", ".txt")
STACKINGS = ("best_of", "stack", "exclusive")


@blueprint.get("/pricing")
@guard(Area.PRICING)
async def pricing() -> Any:
    return await _pricing_page()


async def _pricing_page(error: str = "", status: int = 200, *, values: dict[str, str] | None = None) -> Any:
    catalog = core().catalog
    return await page(
        "console/pricing.html",
        status=status,
        coupons=await catalog.coupon_list(),
        promotions=await catalog.promotion_list(),
        bundles=await catalog.bundle_list(),
        coupon_rule=coupon_rule,
        promotion_rule=promotion_rule,
        scope=scope,
        window=window,
        stackings=STACKINGS,
        currency=core().settings.currency,
        most_codes=MOST_CODES,
        error=error,
        notice=done_notice(),
        values=values or {},
    )


# --- coupons -----------------------------------------------------------------------------------


@blueprint.post("/pricing/coupons")
@guard(Area.PRICING, write=True)
async def coupon_create() -> Any:
    form = await request.form
    values = {name: field(form, name) for name in (*COUPON_KEYS, "currency", "code", "code_uses", "generate", "prefix")}
    try:
        code = field(form, "code") or None
        made = await core().catalog.create_coupon(
            NewCoupon(
                fields={name: field(form, name) or None for name in COUPON_KEYS},
                currency=field(form, "currency") or None,
                code=code,
                code_uses=optional_whole(form, "code_uses", least=1) if code else None,
                generate=_how_many(form),
                prefix=field(form, "prefix"),
            )
        )
    except BadForm as exc:
        return await _pricing_page(exc.text(), 400, values=values)
    except QuanyiError as exc:
        return await _pricing_page(reason(exc), status_of(exc), values=values)
    if made.generated is not None:
        return _codes_csv(made.generated)
    return redirect(url_for("console.pricing", done="coupon_created"), 303)


def _how_many(form: Any) -> int:
    count = whole(form, "generate", default=0)
    if count > MOST_CODES:
        raise BadForm("too_many", most=MOST_CODES)
    return count


@blueprint.post("/pricing/coupons/<int(max=9223372036854775807):coupon_id>/active")
@guard(Area.PRICING, write=True)
async def coupon_active(coupon_id: int) -> Any:
    form = await request.form
    state = field(form, "active")
    if state not in ("1", "0"):
        return await _pricing_page(BadForm("choice", field=state).text(), 400)
    try:
        await core().catalog.set_coupon_active(coupon_id, state == "1")
    except QuanyiError as exc:
        return await _pricing_page(reason(exc), status_of(exc))
    return redirect(url_for("console.pricing", done="coupon_on" if state == "1" else "coupon_off"), 303)


@blueprint.post("/pricing/coupons/<int(max=9223372036854775807):coupon_id>/codes")
@guard(Area.PRICING, write=True)
async def coupon_codes(coupon_id: int) -> Any:
    """A named code (``code``), or a batch of one-use codes answered as their CSV."""
    form = await request.form
    try:
        named = field(form, "code")
        if named:
            uses = optional_whole(form, "uses", least=1)
            await core().catalog.add_code(coupon_id, named, max_uses=uses)
            return redirect(url_for("console.pricing", done="code_added"), 303)
        count = _how_many(form)
        if count < 1:
            raise BadForm("whole", field=text("console_people.field.generate"), least=1)
        made = await core().catalog.generate_codes(coupon_id, count, prefix=field(form, "prefix"))
    except BadForm as exc:
        return await _pricing_page(exc.text(), 400)
    except QuanyiError as exc:
        return await _pricing_page(reason(exc), status_of(exc))
    return _codes_csv(made)


@blueprint.post("/pricing/coupons/<int(max=9223372036854775807):coupon_id>/export")
@guard(Area.PRICING, write=True)
async def coupon_export(coupon_id: int) -> Any:
    """Every code of the campaign as CSV; ``export_codes`` puts the download on the audit trail."""
    try:
        codes = await core().catalog.export_codes(coupon_id)
    except QuanyiError as exc:
        return await _pricing_page(reason(exc), status_of(exc))
    return _codes_csv(codes)


def _codes_csv(codes: CodesFile) -> Response:
    # The CSV comes from core.platform.export: a cell a spreadsheet would run is neutralised.
    return Response(
        codes.csv,
        mimetype="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="coupon-{codes.coupon_id}-codes.csv"',
            "Cache-Control": "no-store",
        },
    )


@blueprint.get("/pricing/coupons/<int(max=9223372036854775807):coupon_id>")
@guard(Area.PRICING)
async def coupon(coupon_id: int) -> Any:
    """One campaign with its most recent uses, and a file of codes to add."""
    try:
        detail = await core().catalog.coupon_detail(coupon_id, uses=USES_SHOWN)
    except QuanyiError as exc:
        return await _pricing_page(reason(exc), status_of(exc))
    return await page(
        "console/coupon.html",
        detail=detail,
        coupon_rule=coupon_rule,
        scope=scope,
        window=window,
        most_mb=MAX_CODES_FILE // 1_000_000,
        notice=done_notice(),
    )


@blueprint.post("/upload/coupons/<int(max=9223372036854775807):coupon_id>")
@guard(Area.PRICING, write=True)
async def coupon_import(coupon_id: int) -> Any:
    """A text or CSV file of codes sent as the raw body (console.js ``data-upload``); all or
    nothing, as ``import_codes`` decides. The file is small (``MAX_CODES_FILE``): read whole."""
    if not request.args.get("filename", "").lower().endswith(IMPORT_SUFFIXES):
        return await _imported(error=text("console_people.import_not_text"))
    data = bytearray()
    async for chunk in request.body:
        data += chunk
        if len(data) > MAX_CODES_FILE:
            return await _imported(error=text("console_people.import_too_big", mb=MAX_CODES_FILE // 1_000_000))
    try:
        report = await core().catalog.import_codes(coupon_id, bytes(data))
    except QuanyiError as exc:
        return await _imported(error=reason(exc), status=status_of(exc))
    if report.rejected:
        lines = ", ".join(str(number) for number, _ in report.rejected[:20])
        return await _imported(error=text("console_people.import_rejected", count=len(report.rejected), lines=lines))
    return await _imported(added=report.added, duplicates=report.duplicates)


async def _imported(*, error: str = "", status: int = 400, added: int = 0, duplicates: int = 0) -> Any:
    return await page(
        "console/coupon_imported.html", status=status if error else 200, error=error, added=added, duplicates=duplicates
    )


# --- promotions --------------------------------------------------------------------------------


@blueprint.post("/pricing/promotions")
@guard(Area.PRICING, write=True)
async def promotion_create() -> Any:
    form = await request.form
    values = {name: field(form, name) for name in (*PROMOTION_KEYS, "currency")}
    try:
        required(form, "name")
        fields = {name: field(form, name) or None for name in PROMOTION_KEYS}
        await core().catalog.add_promotion(fields, currency=field(form, "currency") or None)
    except BadForm as exc:
        return await _pricing_page(exc.text(), 400, values=values)
    except QuanyiError as exc:
        return await _pricing_page(reason(exc), status_of(exc), values=values)
    return redirect(url_for("console.pricing", done="promotion_created"), 303)


@blueprint.post("/pricing/promotions/<int(max=9223372036854775807):promotion_id>/active")
@guard(Area.PRICING, write=True)
async def promotion_active(promotion_id: int) -> Any:
    form = await request.form
    state = field(form, "active")
    if state not in ("1", "0"):
        return await _pricing_page(BadForm("choice", field=state).text(), 400)
    try:
        await core().catalog.set_promotion_active(promotion_id, state == "1")
    except QuanyiError as exc:
        return await _pricing_page(reason(exc), status_of(exc))
    return redirect(url_for("console.pricing", done="promotion_on" if state == "1" else "promotion_off"), 303)


# --- how a rule reads --------------------------------------------------------------------------


def coupon_rule(coupon: CouponView) -> str:
    if coupon.kind == DiscountKind.PERCENT:
        rate = format_rate(coupon.value)
        if coupon.cap is None:
            return text("pricing_ops.rule.percent", rate=rate)
        return text("pricing_ops.rule.percent_cap", rate=rate, cap=money(coupon.cap, coupon.currency))
    return text("pricing_ops.rule.amount", amount=money(coupon.value, coupon.currency))


def promotion_rule(promotion: PromotionView) -> str:
    spend = money(promotion.threshold, promotion.currency)
    if promotion.kind == PromotionKind.SPEND_OFF:
        return text("pricing_ops.rule.spend_off", spend=spend, off=money(promotion.value, promotion.currency))
    if promotion.kind == PromotionKind.SPEND_PERCENT:
        rate = format_rate(promotion.value)
        if promotion.cap is None:
            return text("pricing_ops.rule.spend_percent", spend=spend, rate=rate)
        cap = money(promotion.cap, promotion.currency)
        return text("pricing_ops.rule.spend_percent_cap", spend=spend, rate=rate, cap=cap)
    whole_units, hundredths = divmod(promotion.value, 100)
    pay = f"{whole_units}" if not hundredths else f"{whole_units}.{hundredths:02d}".rstrip("0")
    return text("pricing_ops.rule.units_price", units=promotion.threshold, pay=pay)


def scope(row: CouponView | PromotionView) -> str:
    parts = [
        text(f"pricing_ops.scope.{what}", values=", ".join(values))
        for what, values in (("skus", row.skus), ("categories", row.categories), ("channels", row.channels))
        if values
    ]
    return " · ".join(parts) or text("pricing_ops.scope.all")


def window(row: CouponView | PromotionView) -> str:
    tz = ZoneInfo(core().settings.timezone)

    def local(moment: datetime | None) -> str:
        return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M") if moment else ""

    starts, ends = row.starts_at, row.ends_at
    key = "between" if starts and ends else "from" if starts else "until" if ends else "always"
    return text(f"pricing_ops.window.{key}", starts=local(starts), ends=local(ends))
