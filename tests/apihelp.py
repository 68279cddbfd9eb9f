"""Signed calls to the partner API through Quart's test client (the signing is the real one)."""

from __future__ import annotations

import json as jsonlib
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from quanyi.core.money import Money
from quanyi.core.partners import accounts as partners
from quanyi.core.partners import apisign
from quanyi.core.services import Core
from quanyi.core.stock import allocations as channels


@dataclass(frozen=True)
class Creds:
    code: str
    partner_id: int
    access_key: str
    secret: str


async def new_partner(
    core: Core,
    code: str = "acme",
    *,
    balance: str | None = None,
    allocate: dict[str, int] | None = None,
    webhook_url: str | None = None,
    currency: str = "CNY",
) -> Creds:
    """A partner with a key; optionally a topped-up balance and quotas of products."""
    async with core.db.transaction() as session:
        added = await partners.add_partner(
            session, core.keyring, code, f"{code} shop", webhook_url=webhook_url, currency=currency
        )
        if balance is not None:
            await partners.top_up(session, code, Money.parse(balance, currency).minor)
        for sku, units in (allocate or {}).items():
            await channels.allocate(session, sku, code, units)
        return Creds(code, added.partner.id, added.key.access_key, added.key.secret)


def signed_headers(
    creds: Creds,
    method: str,
    target: str,
    body: bytes = b"",
    *,
    now: float | None = None,
    nonce: str | None = None,
    secret: str | None = None,
) -> dict[str, str]:
    parts = urlsplit(target)
    return apisign.headers(
        creds.access_key,
        secret or creds.secret,
        method,
        parts.path,
        parts.query,
        body,
        now=int(now if now is not None else time.time()),
        nonce=nonce,
    )


async def call(
    client: Any,
    creds: Creds,
    method: str,
    target: str,
    json: Any = None,
    *,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    **sign: Any,
) -> tuple[int, Any]:
    """One signed request; returns (status, parsed JSON body)."""
    body = data if data is not None else (jsonlib.dumps(json).encode() if json is not None else b"")
    all_headers = {"Content-Type": "application/json", **signed_headers(creds, method, target, body, **sign)}
    all_headers.update(headers or {})
    response = await client.open(target, method=method, data=body, headers=all_headers)
    payload = await response.get_data(as_text=True)
    return response.status_code, (jsonlib.loads(payload) if payload else None)
