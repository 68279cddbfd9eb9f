"""Catalogue pages: the product list, a new product of any kind (a bundle with its parts), and one
product's page where its name, prices, floor and ceiling, Stars price, texts, category, sale state
and the options of its kind are changed. The same use cases as ``quanyi product`` and ``quanyi
bundle`` (core.catalog), so the same rules refuse the same input; every change is on the trail."""

from __future__ import annotations

from typing import Any

from quart import redirect, request, url_for
from werkzeug.datastructures import MultiDict

from quanyi.core.catalog.admin_views import UNCAPPED
from quanyi.core.catalog.console_views import ProductDetail
from quanyi.core.catalog.service import KindOptions, NewProduct, ProductChanges
from quanyi.core.errors import NotFound, QuanyiError
from quanyi.core.money import Money, format_minor
from quanyi.core.staff.roles import Area
from quanyi.webhooks.console import blueprint
from quanyi.webhooks.console.shell import core, guard, message, page, reason, text

KINDS = ("card_key", "redeem_link", "direct_recharge", "manual", "bundle")
# Which options each kind's form carries (the others are refused by core for that kind).
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "redeem_link": ("entitlement", "max_uses", "valid_days"),
    "direct_recharge": ("supplier", "supplier_code", "account_pattern", "account_hint", "fallback_sku"),
    "manual": ("deadline", "account_pattern", "account_hint"),
}
TEXT_OPTIONS = ("entitlement", "supplier", "supplier_code", "account_pattern", "account_hint", "fallback_sku")
NUMBER_OPTIONS = ("max_uses", "valid_days")


class BadForm(Exception):
    """Input the form should not have sent (a word where a number goes): a 400 with these words."""


# --- the list and a new product --------------------------------------------------------------


@blueprint.get("/products")
@guard(Area.CATALOG)
async def products() -> Any:
    return await _list_page()


async def _list_page(*, error: str = "", values: dict[str, str] | None = None, status: int = 200) -> Any:
    rows = await core().catalog.product_list()
    defaults = {"kind": "card_key", "currency": core().settings.currency}
    return await page(
        "console/products.html",
        status=status,
        rows=rows,
        uncapped=UNCAPPED,
        kinds=KINDS,
        values={**defaults, **(values or {})},
        error=error,
    )


@blueprint.post("/products")
@guard(Area.CATALOG, write=True)
async def product_add() -> Any:
    form = await request.form
    try:
        sku = await _create(form)
    except BadForm as exc:
        return await _list_page(error=str(exc), values=_typed(form), status=400)
    except QuanyiError as exc:
        return await _list_page(error=reason(exc), values=_typed(form), status=400)
    return redirect(url_for("console.product", sku=sku, saved=1), 303)


async def _create(form: MultiDict[str, str]) -> str:
    sku, name, kind = _field(form, "sku"), _field(form, "name"), _field(form, "kind")
    price = _field(form, "price")
    currency = (_field(form, "currency") or core().settings.currency).upper()
    description, category = _text(form, "description"), _field(form, "category") or None
    if kind == "bundle":
        if _field(form, "stars_price") or _text(form, "instructions"):
            raise BadForm(text("console_catalog.bundle_later"))
        await core().catalog.create_bundle(
            sku,
            name=name,
            price=price,
            parts=_field(form, "parts"),
            currency=currency,
            description=description,
            category=category,
        )
        return sku
    if _field(form, "parts"):
        raise BadForm(text("console_catalog.parts_bundle_only"))
    stars = _number(form, "stars_price")
    await core().catalog.add_product(
        NewProduct(
            sku=sku,
            name=name,
            kind=kind,
            price=Money.parse(price, currency),
            description=description,
            instructions=_text(form, "instructions"),
            stars_price=stars,
            category=category,
            options=_options(form),
        )
    )
    return sku


# --- one product -------------------------------------------------------------------------------


@blueprint.route("/products/<sku>", methods=["GET", "POST"])
@guard(Area.CATALOG)
async def product(sku: str) -> Any:
    if request.method == "POST":
        return await _product_post(sku)
    try:
        detail = await core().catalog.product_detail(sku)
    except NotFound as exc:
        return await message(text("console_catalog.missing_title"), reason(exc), status=404, bad=True)
    notice = text("console_catalog.saved") if request.args.get("saved") else ""
    return await _product_page(detail, notice=notice)


async def _product_page(
    detail: ProductDetail, *, error: str = "", notice: str = "", typed: dict[str, str] | None = None, status: int = 200
) -> Any:
    return await page(
        "console/product.html",
        status=status,
        p=detail,
        values={**_values(detail), **(typed or {})},
        fields=KIND_FIELDS.get(detail.kind, ()),
        uncapped=UNCAPPED,
        error=error,
        notice=notice,
    )


@guard(Area.CATALOG, write=True)
async def _product_post(sku: str) -> Any:
    form = await request.form
    try:
        detail = await core().catalog.product_detail(sku)
    except NotFound as exc:
        return await message(text("console_catalog.missing_title"), reason(exc), status=404, bad=True)
    try:
        changes = _changes(detail, form)
        if changes is not None:
            await core().catalog.update_product(sku, changes)
    except BadForm as exc:
        return await _product_page(detail, error=str(exc), typed=_typed(form), status=400)
    except QuanyiError as exc:
        return await _product_page(detail, error=reason(exc), typed=_typed(form), status=400)
    return redirect(url_for("console.product", sku=sku, saved=1), 303)


@blueprint.post("/products/<sku>/parts")
@guard(Area.CATALOG, write=True)
async def product_parts(sku: str) -> Any:
    form = await request.form
    try:
        detail = await core().catalog.product_detail(sku)
    except NotFound as exc:
        return await message(text("console_catalog.missing_title"), reason(exc), status=404, bad=True)
    try:
        await core().catalog.set_bundle_parts(sku, _field(form, "parts"))
    except QuanyiError as exc:
        return await _product_page(detail, error=reason(exc), typed={"parts": _field(form, "parts")}, status=400)
    return redirect(url_for("console.product", sku=sku, saved=1), 303)


# --- reading the forms -------------------------------------------------------------------------


def _changes(detail: ProductDetail, form: MultiDict[str, str]) -> ProductChanges | None:
    """What the form changes against what the product is now; None when it changes nothing."""
    was = _values(detail)
    changed: dict[str, Any] = {}
    for name in ("name", "price", "floor", "ceiling", "category"):
        if name in form and _field(form, name) != was[name]:
            changed[name] = _field(form, name)
    for name in ("instructions", "description"):
        if name in form and _text(form, name) != was[name]:
            changed[name] = _text(form, name)
    if "stars_price" in form and _field(form, "stars_price") != was["stars_price"]:
        stars = _number(form, "stars_price")
        changed["stars_price" if stars is not None else "clear_stars_price"] = stars if stars is not None else True
    active = form.get("active") == "1"
    if active != detail.active:
        changed["active"] = active
    options: dict[str, Any] = {}
    for name in KIND_FIELDS.get(detail.kind, ()):
        if name in form and _field(form, name) != was[name]:
            options[name] = _option(form, name)
    if not changed and not options:
        return None
    return ProductChanges(**changed, options=KindOptions(**options))


def _options(form: MultiDict[str, str]) -> KindOptions:
    """A new product's kind options: those filled in (core refuses one of another kind)."""
    given = {name: _option(form, name) for name in (*TEXT_OPTIONS, *NUMBER_OPTIONS, "deadline") if _field(form, name)}
    return KindOptions(**given)


def _option(form: MultiDict[str, str], name: str) -> Any:
    if name in NUMBER_OPTIONS:
        number = _number(form, name)
        return 0 if number is None and name == "valid_days" else number  # empty: links never expire
    return _field(form, name)


def _field(form: MultiDict[str, str], name: str) -> str:
    return (form.get(name) or "").strip()


def _text(form: MultiDict[str, str], name: str) -> str:
    """A multi-line text as typed (a browser sends its line breaks as CRLF)."""
    return (form.get(name) or "").replace("\r\n", "\n").strip()


def _number(form: MultiDict[str, str], name: str) -> int | None:
    raw = _field(form, name)
    if not raw:
        return None
    if not raw.isdecimal() or len(raw) > 12:
        raise BadForm(text("console_catalog.bad_number", field=text(f"console_catalog.field_{name}"), value=raw[:40]))
    return int(raw)


def _typed(form: MultiDict[str, str]) -> dict[str, str]:
    """What the person typed, shown again with the refusal (nothing of it was saved)."""
    typed = {key: form.get(key, "") for key in form if key != "csrf"}
    typed["active"] = "1" if form.get("active") == "1" else ""
    return typed


def _money(minor: int | None, currency: str) -> str:
    return format_minor(minor, currency) if minor is not None else ""


def _values(p: ProductDetail) -> dict[str, str]:
    """The product as its edit form shows it: each field as text."""
    currency = p.price.currency
    return {
        "name": p.name,
        "price": p.price.format_plain(),
        "stars_price": str(p.stars_price) if p.stars_price is not None else "",
        "floor": _money(p.floor_price, currency),
        "ceiling": _money(p.ceiling_price, currency),
        "category": p.category or "",
        "instructions": p.instructions,
        "description": p.description,
        "active": "1" if p.active else "",
        "entitlement": p.entitlement,
        "max_uses": str(p.redeem_max_uses or 1),
        "valid_days": str(p.redeem_valid_days or ""),
        "supplier": p.supplier or "",
        "supplier_code": p.supplier_product_code or "",
        "account_pattern": p.account_pattern or "",
        "account_hint": p.account_hint or "",
        "fallback_sku": p.fallback_sku or "",
        "deadline": p.deadline_text,
        "parts": p.parts_text,
    }
