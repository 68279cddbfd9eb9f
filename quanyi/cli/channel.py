"""``quanyi channel add``, ``list`` and ``price``: sales channels and their prices."""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING, Any

from quanyi.cli._common import price_or_remove, print_table, with_core

if TYPE_CHECKING:
    from quanyi.core.services import Core


def cmd_channel_add(args: argparse.Namespace) -> int:
    async def run(core: Core) -> int:
        channel = await core.stock.add_channel(args.code, args.name, args.kind)
        print(f"added channel {channel.code}: {channel.name} ({channel.kind})")
        return 0

    return asyncio.run(with_core(run))


def cmd_channel_list(args: argparse.Namespace) -> int:
    async def run(core: Core) -> int:
        rows = [[c.code, c.kind, "yes" if c.active else "no", c.name] for c in await core.stock.channels()]
        print_table(["code", "kind", "active", "name"], rows)
        return 0

    return asyncio.run(with_core(run))


def cmd_channel_price(args: argparse.Namespace) -> int:
    from quanyi.core.money import Money

    price_text = price_or_remove(args.price, args.remove)

    async def run(core: Core) -> int:
        priced = await core.stock.set_channel_price(args.channel, args.sku, price_text)
        listed = Money(priced.list_price, priced.currency)
        if priced.price is None:
            print(f"{priced.channel}: removed its price of {priced.sku}; it sells at the list price {listed}")
        else:
            price = Money(priced.price, priced.currency)
            print(f"{priced.channel}: sells {priced.sku} at {price} (list price {listed})")
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
