"""``quanyi partner``: partner systems calling the signed HTTP API — their keys, prepaid balance,
webhook and whether they may call at all."""

from __future__ import annotations

import argparse
import asyncio
from datetime import datetime
from typing import Any

from quanyi.cli._common import print_table, with_core
from quanyi.core.errors import QuanyiError
from quanyi.core.money import format_minor

SIGNING_HINT = (
    "sign every /api/v1 request with this pair (HMAC-SHA256; headers X-Quanyi-Key, X-Quanyi-Timestamp, "
    "X-Quanyi-Nonce, X-Quanyi-Signature) as docs/api.md describes"
)
ADD_DESCRIPTION = (
    "Adds the partner, its partner channel (same code) and its first API key; the secret is printed this "
    "once. Then give it a balance (`quanyi partner topup CODE AMOUNT`), stock (`quanyi stock allocate SKU "
    "--to CODE --units N`) and, where it pays other than the list price, prices (`quanyi channel price CODE "
    "SKU PRICE`). How partners sign requests: docs/api.md."
)


def add_parser(sub: Any) -> None:
    partner = sub.add_parser("partner", help="partner systems calling the HTTP API").add_subparsers(
        dest="partner_command", required=True
    )
    add = partner.add_parser(
        "add",
        help="add a partner (and its partner channel); prints its key and secret once",
        description=ADD_DESCRIPTION,
    )
    add.add_argument("code", help="2-32 lowercase letters, digits, '_' or '-'")
    add.add_argument("--name", required=True)
    add.add_argument("--currency", default="CNY", help="currency of its balance and prices (default CNY)")
    add.add_argument("--webhook", metavar="URL", help="http(s) URL order events are posted to")
    add.set_defaults(fn=cmd_add)
    partner.add_parser("list", help="all partners with balance and key counts (never a secret)").set_defaults(
        fn=cmd_list
    )
    show = partner.add_parser("show", help="one partner: its keys (never their secrets) and allocations")
    show.add_argument("code")
    show.set_defaults(fn=cmd_show)

    key = partner.add_parser("key", help="API keys of a partner").add_subparsers(
        dest="partner_key_command", required=True
    )
    kadd = key.add_parser("add", help="a new key (for rotation); prints its secret once")
    kadd.add_argument("code")
    kadd.set_defaults(fn=cmd_key_add)
    krevoke = key.add_parser("revoke", help="stop accepting a key at once")
    krevoke.add_argument("code")
    krevoke.add_argument("access_key", metavar="ACCESS_KEY", help="ak_...")
    krevoke.set_defaults(fn=cmd_key_revoke)

    topup = partner.add_parser(
        "topup", help="add money received from the partner to its balance (negative: correct a top-up)"
    )
    topup.add_argument("code")
    topup.add_argument("amount", help="decimal text in the partner's currency, e.g. 100.00 or -20.00")
    topup.add_argument("--note", default="", help="a memo on the ledger entry")
    topup.set_defaults(fn=cmd_topup)
    webhook = partner.add_parser("webhook", help="set the URL order events are posted to, or --off")
    webhook.add_argument("code")
    webhook.add_argument("url", nargs="?", help="http(s) URL")
    webhook.add_argument("--off", action="store_true", help="post no events")
    webhook.set_defaults(fn=cmd_webhook)
    disable = partner.add_parser("disable", help="refuse its API calls (keys and balance stay)")
    disable.add_argument("code")
    disable.set_defaults(fn=cmd_disable)
    enable = partner.add_parser("enable", help="accept its API calls again")
    enable.add_argument("code")
    enable.set_defaults(fn=cmd_enable)


def _when(at: datetime | None) -> str:
    return f"{at:%Y-%m-%d %H:%M}" if at else "-"


def _left(allocation: Any) -> str:
    from quanyi.core.models import AllocationMode

    if allocation.mode != AllocationMode.QUOTA:
        return "pool"
    return str(allocation.allocated - allocation.reserved - allocation.sold)


def parse_signed_amount(text: str, currency: str) -> int:
    """``100.00`` or ``-20.00`` in minor units; zero is refused."""
    from quanyi.core.money import parse_minor

    text = text.strip()
    negative = text.startswith("-")
    minor = parse_minor(text[1:] if negative else text, currency)
    if minor == 0:
        raise QuanyiError("the amount must not be zero")
    return -minor if negative else minor


def _print_new_key(access_key: str, secret: str) -> None:
    print(f"access key: {access_key}")
    print(f"secret:     {secret}")
    print("the secret is shown this once: quanyi cannot show it again; keep it secret")
    print(SIGNING_HINT)


def cmd_add(args: argparse.Namespace) -> int:
    from quanyi.core.partners.accounts import add_partner

    async def run(core: Any) -> int:
        async with core.db.transaction() as session:
            added = await add_partner(
                session, core.keyring, args.code, args.name, currency=args.currency, webhook_url=args.webhook
            )
        p = added.partner
        webhook = f", webhook {p.webhook_url}" if p.webhook_url else ""
        print(f"added partner {p.code}: {p.name} (channel {added.channel.code}, {p.currency}{webhook})")
        _print_new_key(added.key.access_key, added.key.secret)
        print(f"next: quanyi partner topup {p.code} AMOUNT; quanyi stock allocate SKU --to {p.code} --units N")
        return 0

    return asyncio.run(with_core(run))


def cmd_list(args: argparse.Namespace) -> int:
    from sqlalchemy import func, select

    from quanyi.core.models import Channel, PartnerKey
    from quanyi.core.partners.accounts import list_partners

    async def run(core: Any) -> int:
        async with core.db.read() as session:
            partners = await list_partners(session)
            codes = {i: c for i, c in (await session.execute(select(Channel.id, Channel.code))).all()}
            active_keys = await session.execute(
                select(PartnerKey.partner_id, func.count())
                .where(PartnerKey.active.is_(True))
                .group_by(PartnerKey.partner_id)
            )
            keys = {partner_id: int(n) for partner_id, n in active_keys.all()}
        print_table(
            ["code", "channel", "active", "balance", "currency", "keys", "webhook", "name"],
            [
                [
                    p.code,
                    codes.get(p.channel_id, "") if p.channel_id else "",
                    "yes" if p.active else "no",
                    format_minor(p.balance, p.currency),
                    p.currency,
                    keys.get(p.id, 0),
                    "yes" if p.webhook_url else "no",
                    p.name,
                ]
                for p in partners
            ],
        )
        return 0

    return asyncio.run(with_core(run))


def cmd_show(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from quanyi.core.models import Allocation, Channel, ChannelPrice, Product
    from quanyi.core.partners import accounts as partners

    async def run(core: Any) -> int:
        async with core.db.read() as session:
            partner = await partners.get(session, args.code)
            channel = await session.get(Channel, partner.channel_id) if partner.channel_id else None
            keys = await partners.keys_of(session, partner.id)
            allocations = (
                await session.execute(
                    select(Product.sku, Allocation)
                    .join(Product, Product.id == Allocation.product_id)
                    .where(Allocation.channel_id == partner.channel_id)
                    .order_by(Product.sku)
                )
            ).all()
            prices = (
                await session.execute(
                    select(Product.sku, ChannelPrice.price, Product.currency)
                    .join(Product, Product.id == ChannelPrice.product_id)
                    .where(ChannelPrice.channel_id == partner.channel_id)
                    .order_by(Product.sku)
                )
            ).all()
        print(f"partner {partner.code}: {partner.name}")
        print(f"  channel:  {channel.code if channel else '-'}")
        print(f"  active:   {'yes' if partner.active else 'no'}")
        print(f"  balance:  {format_minor(partner.balance, partner.currency)} {partner.currency}")
        print(f"  webhook:  {partner.webhook_url or 'off'}")
        print(f"  created:  {_when(partner.created_at)} UTC")
        print("keys:")
        print_table(
            ["access key", "state", "created (UTC)", "last used (UTC)", "revoked (UTC)"],
            [
                [k.access_key, "active" if k.active else "revoked", _when(k.created_at), _when(k.last_used_at)]
                + [_when(k.revoked_at)]
                for k in keys
            ],
        )
        print("allocations:")
        print_table(
            ["sku", "mode", "allocated", "reserved", "sold", "left"],
            [[sku, a.mode, a.allocated, a.reserved, a.sold, _left(a)] for sku, a in allocations],
        )
        if prices:
            print("prices: " + ", ".join(f"{sku} {format_minor(price, cur)}" for sku, price, cur in prices))
        else:
            print("prices: list prices (set one with `quanyi channel price CODE SKU PRICE`)")
        return 0

    return asyncio.run(with_core(run))


def cmd_key_add(args: argparse.Namespace) -> int:
    from quanyi.core.partners import accounts as partners

    async def run(core: Any) -> int:
        async with core.db.transaction() as session:
            partner = await partners.get(session, args.code, lock=True)
            key = await partners.add_key(session, core.keyring, partner)
        print(f"new key for {partner.code}; its other active keys still work until revoked")
        _print_new_key(key.access_key, key.secret)
        return 0

    return asyncio.run(with_core(run))


def cmd_key_revoke(args: argparse.Namespace) -> int:
    from quanyi.core.partners import accounts as partners

    async def run(core: Any) -> int:
        async with core.db.transaction() as session:
            key = await partners.revoke_key(session, args.code, args.access_key)
            left = sum(1 for k in await partners.keys_of(session, key.partner_id) if k.active)
        print(f"revoked {key.access_key} of {args.code}; {left} active key(s) left")
        return 0

    return asyncio.run(with_core(run))


def cmd_topup(args: argparse.Namespace) -> int:
    from quanyi.core.partners import accounts as partners

    async def run(core: Any) -> int:
        async with core.db.transaction() as session:
            partner = await partners.get(session, args.code)
            amount = parse_signed_amount(args.amount, partner.currency)
            after = await partners.top_up(session, args.code, amount, note=args.note)
        cur = partner.currency
        verb = "added" if amount > 0 else "took back"
        print(
            f"{partner.code}: {verb} {format_minor(abs(amount), cur)} {cur}; balance {format_minor(after, cur)} {cur}"
        )
        return 0

    return asyncio.run(with_core(run))


def cmd_webhook(args: argparse.Namespace) -> int:
    from quanyi.core.partners import accounts as partners

    if args.off == (args.url is not None):
        raise QuanyiError("give a webhook URL or --off")

    async def run(core: Any) -> int:
        async with core.db.transaction() as session:
            partner = await partners.set_webhook(session, args.code, None if args.off else args.url)
        if partner.webhook_url:
            print(f"{partner.code}: order events go to {partner.webhook_url}")
        else:
            print(f"{partner.code}: webhook off")
        return 0

    return asyncio.run(with_core(run))


def _set_active(args: argparse.Namespace, active: bool) -> int:
    from quanyi.core.partners import accounts as partners

    async def run(core: Any) -> int:
        async with core.db.transaction() as session:
            partner = await partners.set_active(session, args.code, active)
        state = "enabled: its API calls are accepted" if active else "disabled: its API calls are refused"
        print(f"{partner.code} {state}")
        return 0

    return asyncio.run(with_core(run))


def cmd_disable(args: argparse.Namespace) -> int:
    return _set_active(args, False)


def cmd_enable(args: argparse.Namespace) -> int:
    return _set_active(args, True)
