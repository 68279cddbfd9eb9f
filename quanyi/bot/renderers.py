"""The outbox kinds rendered by the modules that own them, collected in one table for the sender.

Each owner keeps a ``RENDERERS`` table beside its handlers; nothing registers itself at import
time, so what the sender can render is written here, once.
"""

from __future__ import annotations

from quanyi.bot.buyer import manual as buyer_manual
from quanyi.bot.buyer import support as buyer_support
from quanyi.bot.distributor import notices
from quanyi.bot.operator import (
    audit,
    manual,
    order_notices,
    partner_alerts,
    risk,
    statements,
    support,
    withdrawals,
)
from quanyi.bot.outbox_sender import Renderer

OWNERS = (
    audit,
    order_notices,
    partner_alerts,
    risk,
    statements,
    withdrawals,
    support,
    buyer_support,
    manual,
    buyer_manual,
    notices,
)


def owned_renderers() -> dict[str, Renderer]:
    table: dict[str, Renderer] = {}
    for module in OWNERS:
        for kind, renderer in module.RENDERERS.items():
            if kind in table:
                raise RuntimeError(f"outbox kind {kind!r} has two renderers")  # a programming error
            table[kind] = renderer
    return table
