"""``quanyi product add``, ``update`` and ``list``."""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING, Any

from quanyi.cli._common import money_or, print_table, with_core
from quanyi.core.errors import QuanyiError

if TYPE_CHECKING:
    from quanyi.core.catalog.admin_views import ProductView
    from quanyi.core.catalog.service import KindOptions


def cmd_product_add(args: argparse.Namespace) -> int:
    from quanyi.core.catalog.service import NewProduct
    from quanyi.core.money import Money

    async def run(core: Any) -> int:
        price = Money.parse(args.price, args.currency.upper())
        stars = Money.parse(args.stars_price, "XTR") if args.stars_price is not None else None
        product = await core.catalog.add_product(
            NewProduct(
                sku=args.sku,
                name=args.name,
                kind=args.kind,
                price=price,
                description=args.description or "",
                instructions=args.instructions or "",
                stars_price=stars.minor if stars else None,
                category=args.category,
                options=_kind_options(args),
            )
        )
        print(f"added {product.sku}: {product.name} ({product.kind}) at {price}" + (f" / {stars}" if stars else ""))
        for line in _kind_summary(product):
            print(f"  {line}")
        return 0

    return asyncio.run(with_core(run))


def cmd_product_update(args: argparse.Namespace) -> int:
    from quanyi.core.catalog.service import ProductChanges
    from quanyi.core.money import Money

    options = _kind_options(args)
    changes = [
        args.name,
        args.price,
        args.stars_price,
        args.instructions,
        args.description,
        args.active,
        args.floor,
        args.ceiling,
        args.category,
        *vars(options).values(),
    ]
    if all(change is None for change in changes) and not args.derived_stars_price:
        raise QuanyiError("nothing to change: give at least one option (see --help)")

    async def run(core: Any) -> int:
        stars = Money.parse(args.stars_price, "XTR").minor if args.stars_price is not None else None
        product = await core.catalog.update_product(
            args.sku,
            ProductChanges(
                name=args.name,
                price=args.price,
                stars_price=stars,
                clear_stars_price=args.derived_stars_price,
                instructions=args.instructions,
                description=args.description,
                active=args.active,
                floor=args.floor,
                ceiling=args.ceiling,
                category=args.category,
                options=options,
            ),
        )
        stars_text = f"{product.stars_price} ⭐" if product.stars_price else "Stars from the rate"
        state = "on sale" if product.active else "off sale"
        limits = ""
        if product.floor_price is not None or product.ceiling_price is not None:
            floor = money_or(product.floor_price, product.price.currency, "none")
            ceiling = money_or(product.ceiling_price, product.price.currency, "none")
            limits = f"; floor {floor}, ceiling {ceiling}"
        print(f"updated {product.sku}: {product.name} at {product.price} / {stars_text}, {state}{limits}")
        for line in _kind_summary(product):
            print(f"  {line}")
        return 0

    return asyncio.run(with_core(run))


def _kind_options(args: argparse.Namespace) -> KindOptions:
    """The redeem_link / direct_recharge / manual options given on the command line (None = not given)."""
    from quanyi.core.catalog.service import KindOptions

    return KindOptions(
        entitlement=args.entitlement,
        max_uses=args.max_uses,
        valid_days=args.valid_days,
        supplier=args.supplier,
        supplier_code=args.supplier_code,
        account_pattern=args.account_pattern,
        account_hint=args.account_hint,
        fallback_sku=args.fallback_sku,
        deadline=args.deadline,
    )


def _kind_summary(product: ProductView) -> list[str]:
    if product.kind == "redeem_link":
        expiry = f"valid {product.redeem_valid_days} days" if product.redeem_valid_days else "no expiry"
        grants = product.entitlement or product.name
        return [f"links: {product.redeem_max_uses or 1} use(s) each, {expiry}; grants: {grants}"]
    if product.kind == "direct_recharge":
        return [
            f"supplier: {product.supplier or '(none)'} code {product.supplier_product_code or '(none)'}",
            f"account pattern: {product.account_pattern or '(any)'}  hint: {product.account_hint or '(none)'}",
            f"fallback: {product.fallback_sku or '(refund)'}",
        ]
    if product.kind == "manual":
        minutes = product.manual_deadline_minutes or 0
        deadline = f"{minutes // 60}h{minutes % 60:02d}m" if minutes % 60 else f"{minutes // 60}h"
        return [
            f"fulfilled by hand within {deadline} of payment, else refunded",
            f"account pattern: {product.account_pattern or '(any)'}  hint: {product.account_hint or '(none)'}",
        ]
    return []


def _add_kind_arguments(parser: argparse.ArgumentParser, *, update: bool) -> None:
    clear = "; '' removes it" if update else ""
    parser.add_argument("--entitlement", help=f"redeem_link: what a link grants (default: the product name){clear}")
    parser.add_argument("--max-uses", type=int, help="redeem_link: uses per link (default 1)")
    parser.add_argument(
        "--valid-days",
        type=int,
        help="redeem_link: days a link stays valid" + ("; 0 = never expires" if update else ""),
    )
    parser.add_argument("--supplier", help=f"direct_recharge: supplier name, such as generic{clear}")
    parser.add_argument("--supplier-code", help=f"direct_recharge: the supplier's product code{clear}")
    parser.add_argument(
        "--account-pattern",
        help=f"direct_recharge, manual: regular expression the whole account must match{clear}",
    )
    parser.add_argument("--account-hint", help=f"direct_recharge, manual: what to enter, shown to the buyer{clear}")
    parser.add_argument(
        "--fallback-sku", help=f"direct_recharge: card_key product delivered instead when a recharge fails{clear}"
    )
    parser.add_argument(
        "--deadline",
        help="manual: time an operator has to fulfil a paid order before it is refunded, e.g. 90m, 2h, 1d"
        + ("" if update else " (default 1d)"),
    )


def cmd_product_list(args: argparse.Namespace) -> int:
    from quanyi.core.catalog.admin_views import UNCAPPED

    async def run(core: Any) -> int:
        rows = await core.catalog.product_list()
        print_table(
            ["sku", "kind", "price", "stars", "available", "sale", "category", "name"],
            [
                [
                    p.sku,
                    p.kind,
                    p.price.format_plain() + " " + p.price.currency,
                    p.stars_price or "rate",
                    "on-demand" if p.available >= UNCAPPED else p.available,  # as `stock show` says it
                    "on" if p.active else "off",
                    p.category or "-",
                    p.name,
                ]
                for p in rows
            ],
        )
        return 0

    return asyncio.run(with_core(run))


def add_parser(sub: Any) -> None:
    product = sub.add_parser("product", help="products").add_subparsers(dest="product_command", required=True)
    add = product.add_parser("add", help="add a product")
    add.add_argument("--sku", required=True)
    add.add_argument("--name", required=True)
    add.add_argument(
        "--kind", required=True, help="card_key, redeem_link, direct_recharge, manual (fulfilled by hand) or bundle"
    )
    add.add_argument("--price", required=True, help="decimal text such as 15.00")
    add.add_argument("--currency", default="CNY")
    add.add_argument(
        "--stars-price", help="price in whole Telegram Stars; default: price × QUANYI_STARS_RATE, rounded up"
    )
    add.add_argument("--description")
    add.add_argument("--instructions", help="redemption instructions sent with every delivery")
    add.add_argument(
        "--category", help="groups the bot's catalogue; coupons and promotions can be scoped to it, e.g. video"
    )
    _add_kind_arguments(add, update=False)
    add.set_defaults(fn=cmd_product_add)
    upd = product.add_parser("update", help="change a product's name, prices, texts or whether it is on sale")
    upd.add_argument("sku")
    upd.add_argument("--name")
    upd.add_argument("--price", help="decimal text in the product's currency; placed orders keep theirs")
    upd.add_argument("--stars-price", help="whole Telegram Stars")
    upd.add_argument("--derived-stars-price", action="store_true", help="use price × QUANYI_STARS_RATE again")
    upd.add_argument("--instructions")
    upd.add_argument("--description")
    upd.add_argument("--floor", help="lowest price any channel or distributor may sell at; '' removes it")
    upd.add_argument("--ceiling", help="highest resale price a distributor may set; '' removes it")
    upd.add_argument(
        "--category",
        help="groups the bot's catalogue (a button per category); coupons and promotions can be scoped to it; "
        "'' removes it",
    )
    sale = upd.add_mutually_exclusive_group()
    sale.add_argument("--on-sale", dest="active", action="store_true", default=None)
    sale.add_argument("--off-sale", dest="active", action="store_false", help="hide it from the catalogue")
    _add_kind_arguments(upd, update=True)
    upd.set_defaults(fn=cmd_product_update)
    product.add_parser("list", help="list products with units available").set_defaults(fn=cmd_product_list)
