"""The catalogue's use cases: products, bundles, price lists, promotions, coupons, quotes.

Each method is one use case: it takes plain values, opens and commits its own transaction and
returns plain values or frozen dataclasses (docs/architecture.md)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from quanyi.core.catalog import admin_views as views
from quanyi.core.catalog import bundles, console_views, coupons, products, promotions
from quanyi.core.catalog.pricing_input import coupon_terms, promotion_terms
from quanyi.core.catalog.quote import quote_order
from quanyi.core.money import Money
from quanyi.core.platform import audit
from quanyi.core.stock.allocations import DEFAULT_CHANNEL

if TYPE_CHECKING:
    from quanyi.core.wiring import Wiring

# Called with new codes inside the transaction, before the commit: a place that cannot take them
# (a file that cannot be written) rolls the codes, and a new campaign, back.
HandOver = Callable[[views.CodesFile], object]


@dataclass(frozen=True)
class KindOptions:
    """The ``redeem_link``, ``direct_recharge`` and ``manual`` options; None = not given (unchanged).
    The account pattern and hint serve both kinds a buyer gives an account for."""

    entitlement: str | None = None
    max_uses: int | None = None
    valid_days: int | None = None
    supplier: str | None = None
    supplier_code: str | None = None
    account_pattern: str | None = None
    account_hint: str | None = None
    fallback_sku: str | None = None
    deadline: str | None = None  # manual: ``90m``, ``2h``, ``1d`` to fulfil a paid order by hand


@dataclass(frozen=True)
class NewProduct:
    sku: str
    name: str
    kind: str
    price: Money
    description: str = ""
    instructions: str = ""
    stars_price: int | None = None  # whole Stars; None = derived from the price at order time
    category: str | None = None
    options: KindOptions = field(default_factory=KindOptions)


@dataclass(frozen=True)
class ProductChanges:
    """What to change on a product; None = unchanged, ``""`` removes a floor, ceiling or text option."""

    name: str | None = None
    price: str | None = None  # decimal text in the product's currency
    stars_price: int | None = None
    clear_stars_price: bool = False
    instructions: str | None = None
    description: str | None = None
    active: bool | None = None
    floor: str | None = None
    ceiling: str | None = None
    category: str | None = None
    options: KindOptions = field(default_factory=KindOptions)


@dataclass(frozen=True)
class NewCoupon:
    """A campaign as an operator typed it (``pricing_input.COUPON_KEYS``), with its first codes."""

    fields: Mapping[str, str | None]
    currency: str | None = None  # None = the shop's currency
    code: str | None = None  # a named code, good for ``code_uses``
    code_uses: int | None = None
    generate: int = 0  # how many one-use codes to make
    prefix: str = ""


@dataclass(frozen=True)
class NewCampaign:
    coupon: views.CouponView
    code: views.CodeView | None
    generated: views.CodesFile | None


class CatalogService:
    def __init__(self, wiring: Wiring) -> None:
        self._wiring = wiring
        self._db = wiring.db

    def _currency(self, currency: str | None) -> str:
        return (currency or self._wiring.settings.currency).upper()

    # --- products -------------------------------------------------------------------------------

    async def add_product(self, request: NewProduct) -> views.ProductView:
        async with self._db.transaction() as session:
            product = await products.add_product(
                session,
                sku=request.sku,
                name=request.name,
                kind=request.kind,
                price=request.price,
                description=request.description,
                instructions=request.instructions,
                stars_price=request.stars_price,
                category=request.category,
                **asdict(request.options),
            )
            return views.product_view(product)

    async def update_product(self, sku: str, changes: ProductChanges) -> views.ProductView:
        """Orders already placed keep their own prices."""
        async with self._db.transaction() as session:
            product = await products.update_product(
                session,
                sku,
                name=changes.name,
                price=changes.price,
                stars_price=changes.stars_price,
                clear_stars_price=changes.clear_stars_price,
                instructions=changes.instructions,
                description=changes.description,
                active=changes.active,
                floor=changes.floor,
                ceiling=changes.ceiling,
                category=changes.category,
                **asdict(changes.options),
            )
            return views.product_view(product)

    async def product_list(self) -> list[views.ProductRow]:
        async with self._db.read() as session:
            return await views.product_rows(session)

    # --- coupons --------------------------------------------------------------------------------

    async def create_coupon(self, request: NewCoupon, *, hand_over: HandOver | None = None) -> NewCampaign:
        """A campaign with its named code and generated codes, in one transaction: a refused code
        or batch leaves no campaign behind."""
        settings = self._wiring.settings
        terms = coupon_terms(request.fields, currency=self._currency(request.currency), tz=settings.timezone)
        async with self._db.transaction() as session:
            coupon = await coupons.create_coupon(session, **terms)
            code = None
            if request.code is not None:
                row = await coupons.add_code(session, coupon.id, request.code, max_uses=request.code_uses)
                code = views.CodeView(row.code, row.max_uses)
            made = None
            if request.generate:
                codes = await coupons.generate_codes(session, coupon.id, request.generate, prefix=request.prefix)
                made = views.CodesFile(coupon.id, coupon.name, tuple(codes))
                if hand_over is not None:
                    hand_over(made)
            count = (1 if code is not None else 0) + (len(made.codes) if made else 0)
            return NewCampaign(views.coupon_view(coupon, count), code, made)

    async def add_code(self, coupon_id: int, code: str, *, max_uses: int | None = None) -> views.CodeView:
        """One named code such as ``SPRING10``; by default as often as the campaign allows."""
        async with self._db.transaction() as session:
            row = await coupons.add_code(session, coupon_id, code, max_uses=max_uses)
            return views.CodeView(row.code, row.max_uses)

    async def generate_codes(
        self,
        coupon_id: int,
        count: int,
        *,
        prefix: str = "",
        max_uses: int | None = 1,
        hand_over: HandOver | None = None,
    ) -> views.CodesFile:
        """``count`` new random codes for the campaign (one use each by default), unique across all coupons."""
        async with self._db.transaction() as session:
            coupon = await coupons.get_coupon(session, coupon_id)
            codes = await coupons.generate_codes(session, coupon_id, count, prefix=prefix, max_uses=max_uses)
            # Code rows are not on the trail one by one: the batch is, so a button press that made them is too.
            audit.note(session, "generate coupon codes", "coupon", coupon.id, None, {"codes": len(codes)})
            made = views.CodesFile(coupon.id, coupon.name, tuple(codes), max_uses)
            if hand_over is not None:
                hand_over(made)
            return made

    async def import_codes(self, coupon_id: int, data: bytes, *, max_uses: int | None = 1) -> views.CodeImport:
        """Codes from a text or CSV file; a file with a malformed line imports nothing."""
        async with self._db.transaction() as session:
            report = await coupons.import_codes(session, coupon_id, data, max_uses=max_uses)
            if report.added:
                # Code rows are not on the trail one by one: the file is, as a generated batch is.
                audit.note(session, "import coupon codes", "coupon", coupon_id, None, {"codes": report.added})
            return report

    async def export_codes(self, coupon_id: int) -> views.CodesFile:
        """The campaign's codes as CSV; who took them out is on the trail (a write transaction for that)."""
        async with self._db.transaction() as session:
            coupon = await coupons.get_coupon(session, coupon_id)
            text = await coupons.export_csv(session, coupon_id)
            audit.note(session, "export coupon codes", "coupon", coupon.id, None, {"codes": len(text.splitlines()) - 1})
        return views.CodesFile(coupon.id, coupon.name, exported=text)

    async def coupon_list(self) -> list[views.CouponView]:
        async with self._db.read() as session:
            return await views.coupon_list(session)

    async def coupon_detail(self, coupon_id: int, *, uses: int = 50) -> views.CouponDetail:
        """One campaign and its most recent ``uses`` uses."""
        async with self._db.read() as session:
            return await views.coupon_detail(session, coupon_id, limit=uses)

    async def set_coupon_active(self, coupon_id: int, active: bool) -> views.CouponView:
        async with self._db.transaction() as session:
            return views.coupon_view(await coupons.set_active(session, coupon_id, active))

    # --- promotions -----------------------------------------------------------------------------

    async def add_promotion(
        self, fields: Mapping[str, str | None], *, currency: str | None = None
    ) -> views.PromotionView:
        """A promotion as an operator typed it (``pricing_input.PROMOTION_KEYS``)."""
        tz = self._wiring.settings.timezone
        terms = promotion_terms(fields, currency=self._currency(currency), tz=tz)
        async with self._db.transaction() as session:
            return views.promotion_view(await promotions.add_promotion(session, **terms))

    async def promotion_list(self) -> list[views.PromotionView]:
        async with self._db.read() as session:
            return await views.promotion_list(session)

    async def set_promotion_active(self, promotion_id: int, active: bool) -> views.PromotionView:
        async with self._db.transaction() as session:
            return views.promotion_view(await promotions.set_active(session, promotion_id, active))

    # --- bundles --------------------------------------------------------------------------------

    async def create_bundle(
        self,
        sku: str,
        *,
        name: str,
        price: str,
        parts: str,
        currency: str | None = None,
        description: str = "",
        category: str | None = None,
    ) -> views.BundleView:
        """A bundle product at ``price`` (decimal text) made of ``parts`` (``SKU:N,SKU:N``)."""
        wanted = bundles.parse_parts(parts)
        currency = self._currency(currency)
        amount = Money.parse(price, currency)
        async with self._db.transaction() as session:
            await bundles.create_bundle(
                session,
                sku=sku,
                name=name,
                price=amount,
                parts=wanted,
                description=description,
                category=category,
            )
            return (await views.bundle_list(session, sku=sku))[0]

    async def set_bundle_parts(self, sku: str, parts: str) -> views.BundleView:
        """Replace a bundle's components (``SKU:N,SKU:N``); orders placed already keep theirs."""
        wanted = bundles.parse_parts(parts)
        async with self._db.transaction() as session:
            await bundles.set_parts(session, sku, wanted)
            return (await views.bundle_list(session, sku=sku))[0]

    async def bundle_list(self) -> list[views.BundleView]:
        async with self._db.read() as session:
            return await views.bundle_list(session)

    # --- the pricing home and quotes ------------------------------------------------------------

    async def pricing_overview(self) -> views.PricingOverview:
        async with self._db.read() as session:
            return await views.pricing_overview(session)

    async def quote(
        self,
        sku: str,
        quantity: int,
        *,
        channel: str = DEFAULT_CHANNEL,
        user_id: int | None = None,
        coupon_code: str | None = None,
    ) -> views.PriceQuote:
        """What ``quantity`` of ``sku`` would cost this buyer on ``channel`` now, and why."""
        async with self._db.read() as session:
            product = await products.get_product(session, sku)
            quote = await quote_order(
                session, product, quantity, channel=channel, user_id=user_id, coupon_code=coupon_code
            )
        return views.PriceQuote(
            product.sku, quote.quantity, quote.terms.unit_price, quote.terms.channel, quote.breakdown
        )

    # --- the web console ------------------------------------------------------------------------

    async def product_detail(self, sku: str) -> console_views.ProductDetail:
        """One product with everything the console's edit form shows; ``NotFound`` when there is none."""
        async with self._db.read() as session:
            return await console_views.product_detail(session, sku)
