"""``quanyi channel add``, ``list`` and ``price``: sales channels and their prices."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from quanyi.cli._common import price_or_remove, print_table, with_core


def cmd_channel_add(args: argparse.Namespace) -> int:
    from quanyi.core.stock.allocations import add_channel

    async def run(core: Any) -> int:
        async with core.db.transaction() as session:
            channel = await add_channel(session, args.code, args.name, args.kind)
        print(f"added channel {channel.code}: {channel.name} ({channel.kind})")
        return 0

    return asyncio.run(with_core(run))


def cmd_channel_list(args: argparse.Namespace) -> int:
    from quanyi.core.stock.allocations import list_channels

    async def run(core: Any) -> int:
        async with core.db.transaction() as session:  # creates the bot channel on first use
            rows = [[c.code, c.kind, "yes" if c.active else "no", c.name] for c in await list_channels(session)]
        print_table(["code", "kind", "active", "name"], rows)
        return 0

    return asyncio.run(with_core(run))


def cmd_channel_price(args: argparse.Namespace) -> int:
    from quanyi.core.catalog.products import get_product
    from quanyi.core.money import Money
    from quanyi.core.stock.allocations import resolve_holder, set_channel_price

    price_text = price_or_remove(args.price, args.remove)

    async def run(core: Any) -> int:
        async with core.db.transaction() as session:
            product = await get_product(session, args.sku)
            price = Money.parse(price_text, product.currency) if price_text is not None else None
            await set_channel_price(session, args.channel, args.sku, price.minor if price else None)
            code = (await resolve_holder(session, args.channel)).code
            listed = Money(product.price, product.currency)
        if price is None:
            print(f"{code}: removed its price of {product.sku}; it sells at the list price {listed}")
        else:
            print(f"{code}: sells {product.sku} at {price} (list price {listed})")
        return 0

    return asyncio.run(with_core(run))


def add_parser(sub: Any) -> None:
    channel = sub.add_parser("channel", help="sales channels and their prices").add_subparsers(
        dest="channel_command", required=True
    )
    cadd = channel.add_parser("add", help="add a sales channel (partner API client, storefront)")
    cadd.add_argument("code", help="2-32 lowercase letters, digits, '_' or '-'")
    cadd.add_argument("--name", required=True)
    cadd.add_argument("--kind", choices=["partner", "distributor"], default="partner")
    cadd.set_defaults(fn=cmd_channel_add)
    channel.add_parser("list", help="all channels").set_defaults(fn=cmd_channel_list)
    cprice = channel.add_parser(
        "price", help="a channel's own price for a product (never under the product's floor), or --remove it"
    )
    cprice.add_argument("channel", help="channel code, or a distributor by user id or @username")
    cprice.add_argument("sku")
    cprice.add_argument("price", nargs="?", help="decimal text in the product's currency")
    cprice.add_argument("--remove", action="store_true", help="sell at the list price again")
    cprice.set_defaults(fn=cmd_channel_price)
