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


def _left(left: int | None) -> str:
    return "pool" if left is None else str(left)


def _print_new_key(access_key: str, secret: str) -> None:
    print(f"access key: {access_key}")
    print(f"secret:     {secret}")
    print("the secret is shown this once: quanyi cannot show it again; keep it secret")
    print(SIGNING_HINT)


def cmd_add(args: argparse.Namespace) -> int:
    async def run(core: Any) -> int:
        p = await core.partners.add_partner(args.code, args.name, currency=args.currency, webhook_url=args.webhook)
        webhook = f", webhook {p.webhook_url}" if p.webhook_url else ""
        print(f"added partner {p.code}: {p.name} (channel {p.channel}, {p.currency}{webhook})")
        _print_new_key(p.access_key, p.secret)
        print(f"next: quanyi partner topup {p.code} AMOUNT; quanyi stock allocate SKU --to {p.code} --units N")
        return 0

    return asyncio.run(with_core(run))


def cmd_list(args: argparse.Namespace) -> int:
    async def run(core: Any) -> int:
        partners = await core.partners.partners()
        print_table(
            ["code", "channel", "active", "balance", "currency", "keys", "webhook", "name"],
            [
                [
                    p.code,
                    p.channel,
                    "yes" if p.active else "no",
                    format_minor(p.balance, p.currency),
                    p.currency,
                    p.active_keys,
                    "yes" if p.webhook_url else "no",
                    p.name,
                ]
                for p in partners
            ],
        )
        return 0

    return asyncio.run(with_core(run))


def cmd_show(args: argparse.Namespace) -> int:
    async def run(core: Any) -> int:
        partner = await core.partners.partner(args.code)
        print(f"partner {partner.code}: {partner.name}")
        print(f"  channel:  {partner.channel or '-'}")
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
                for k in partner.keys
            ],
        )
        print("allocations:")
        print_table(
            ["sku", "mode", "allocated", "reserved", "sold", "left"],
            [[a.sku, a.mode, a.allocated, a.reserved, a.sold, _left(a.left)] for a in partner.allocations],
        )
        if partner.prices:
            print("prices: " + ", ".join(f"{p.sku} {format_minor(p.price, p.currency)}" for p in partner.prices))
        else:
            print("prices: list prices (set one with `quanyi channel price CODE SKU PRICE`)")
        return 0

    return asyncio.run(with_core(run))


def cmd_key_add(args: argparse.Namespace) -> int:
    async def run(core: Any) -> int:
        key = await core.partners.add_key(args.code)
        print(f"new key for {key.code}; its other active keys still work until revoked")
        _print_new_key(key.access_key, key.secret)
        return 0

    return asyncio.run(with_core(run))


def cmd_key_revoke(args: argparse.Namespace) -> int:
    async def run(core: Any) -> int:
        revoked = await core.partners.revoke_key(args.code, args.access_key)
        print(f"revoked {revoked.access_key} of {args.code}; {revoked.active_left} active key(s) left")
        return 0

    return asyncio.run(with_core(run))


def cmd_topup(args: argparse.Namespace) -> int:
    async def run(core: Any) -> int:
        done = await core.partners.top_up(args.code, args.amount, note=args.note)
        cur = done.currency
        verb = "added" if done.amount > 0 else "took back"
        amount, balance = format_minor(abs(done.amount), cur), format_minor(done.balance, cur)
        print(f"{done.code}: {verb} {amount} {cur}; balance {balance} {cur}")
        return 0

    return asyncio.run(with_core(run))


def cmd_webhook(args: argparse.Namespace) -> int:
    if args.off == (args.url is not None):
        raise QuanyiError("give a webhook URL or --off")

    async def run(core: Any) -> int:
        partner = await core.partners.set_webhook(args.code, None if args.off else args.url)
        if partner.webhook_url:
            print(f"{partner.code}: order events go to {partner.webhook_url}")
        else:
            print(f"{partner.code}: webhook off")
        return 0

    return asyncio.run(with_core(run))


def _set_active(args: argparse.Namespace, active: bool) -> int:
    async def run(core: Any) -> int:
        partner = await core.partners.set_active(args.code, active)
        state = "enabled: its API calls are accepted" if active else "disabled: its API calls are refused"
        print(f"{partner.code} {state}")
        return 0

    return asyncio.run(with_core(run))


def cmd_disable(args: argparse.Namespace) -> int:
    return _set_active(args, False)


def cmd_enable(args: argparse.Namespace) -> int:
    return _set_active(args, True)
