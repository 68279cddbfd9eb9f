"""The partners' use cases: API accounts, partner orders and partner webhooks.

Each method is one use case: it takes plain values, opens and commits its own transaction and
returns plain values or frozen dataclasses (docs/architecture.md)."""

from __future__ import annotations

import logging
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.errors import InvalidInput, NotFound
from quanyi.core.models import Partner, utcnow
from quanyi.core.partners import accounts, apisign, console_views, orders, views
from quanyi.core.sales import redeem

if TYPE_CHECKING:
    from quanyi.core.wiring import Wiring

log = logging.getLogger(__name__)

MAX_STATEMENT_DAYS = 93
DEFAULT_STATEMENT_DAYS = 7


class PartnerService:
    def __init__(self, wiring: Wiring) -> None:
        self._wiring = wiring
        self._db = wiring.db

    # --- operators: accounts, keys, balance, webhook ------------------------------------------

    async def partners(self) -> list[views.PartnerRow]:
        async with self._db.read() as session:
            return await views.partner_rows(session)

    async def partner(self, code: str) -> views.PartnerDetail:
        async with self._db.read() as session:
            return await views.partner_detail(session, code)

    async def add_partner(
        self, code: str, name: str, *, currency: str | None = None, webhook_url: str | None = None
    ) -> views.AddedPartner:
        """A partner, its partner channel and its first key; the balance currency defaults to the shop's."""
        async with self._db.transaction() as session:
            added = await accounts.add_partner(
                session,
                self._wiring.keyring,
                code,
                name,
                currency=currency or self._wiring.settings.currency,
                webhook_url=webhook_url,
            )
            p = added.partner
            return views.AddedPartner(
                p.code, p.name, added.channel.code, p.currency, p.webhook_url, added.key.access_key, added.key.secret
            )

    async def add_key(self, code: str) -> views.IssuedKey:
        async with self._db.transaction() as session:
            partner = await accounts.get(session, code, lock=True)
            key = await accounts.add_key(session, self._wiring.keyring, partner)
            return views.IssuedKey(partner.code, key.access_key, key.secret)

    async def revoke_key(self, code: str, access_key: str) -> views.RevokedKey:
        async with self._db.transaction() as session:
            key = await accounts.revoke_key(session, code, access_key)
            left = sum(1 for k in await accounts.keys_of(session, key.partner_id) if k.active)
            return views.RevokedKey(code, key.access_key, left)

    async def top_up(self, code: str, amount: str, *, note: str = "") -> views.ToppedUp:
        """``amount`` is decimal text in the partner's currency: ``100.00`` adds, ``-20.00`` takes back."""
        async with self._db.transaction() as session:
            partner = await accounts.get(session, code)
            minor = accounts.parse_signed_amount(amount, partner.currency)
            after = await accounts.top_up(session, code, minor, note=note)
            return views.ToppedUp(partner.code, partner.currency, minor, after)

    async def set_webhook(self, code: str, url: str | None) -> views.PartnerState:
        """Order events go to ``url``; None posts none."""
        async with self._db.transaction() as session:
            return views.state_of(await accounts.set_webhook(session, code, url))

    async def set_active(self, code: str, active: bool) -> views.PartnerState:
        async with self._db.transaction() as session:
            return views.state_of(await accounts.set_active(session, code, active))

    # --- the signed API -----------------------------------------------------------------------

    async def authenticate(
        self, presented: apisign.Presented, method: str, path: str, query: str, body: bytes
    ) -> views.Caller:
        """Check a request's signature against its key's secret and record its nonce;
        ``apisign.SignatureError`` says why not (a replayed nonce is refused)."""
        async with self._db.read() as session:
            found = await accounts.secret_of(session, self._wiring.keyring, presented.access_key)
        if found is None:
            raise apisign.SignatureError("unauthorized", "unknown or revoked access key")
        partner, secret = found
        if not apisign.matches(secret, presented, method, path, query, body):
            log.warning("api: bad signature for key %s", presented.access_key)
            raise apisign.SignatureError("bad_signature", "the signature does not match the request")
        async with self._db.transaction() as session:
            now = utcnow()
            fresh = await accounts.remember_nonce(session, presented.access_key, presented.nonce, now)
            if fresh:
                await accounts.mark_used(session, presented.access_key, now)
        if not fresh:
            raise apisign.SignatureError("replayed_nonce", "this nonce was used already")
        return views.Caller(partner.id, partner.code, presented.access_key)

    async def products(self, partner_id: int) -> list[dict[str, Any]]:
        """What the partner can buy: its prices and what its allocation has left (None: no cap)."""
        async with self._db.read() as session:
            return await orders.products(session, await _partner(session, partner_id))

    async def place_order(self, partner_id: int, body: object) -> views.PlacedOrder:
        """Place, pay and fulfil an API order from its JSON body (``orders.parse_request``);
        idempotent by the partner's ``order_no``."""
        req = orders.parse_request(body)
        placed = await orders.create(self._wiring, partner_id, req)
        async with self._db.transaction() as session:
            partner = await _partner(session, partner_id)
            shown = await orders.view(self._wiring, session, partner, placed.order_id)
        return views.PlacedOrder(placed.created, shown)

    async def order(self, partner_id: int, order_no: str) -> dict[str, Any]:
        """An order by the partner's own number, with its codes once delivered (decrypting them is audited)."""
        async with self._db.transaction() as session:
            partner = await _partner(session, partner_id)
            order_id = await orders.find(session, partner_id, order_no)
            return await orders.view(self._wiring, session, partner, order_id)

    async def balance(self, code: str) -> views.Balance:
        async with self._db.read() as session:
            partner = await accounts.get(session, code)
            return views.Balance(partner.code, partner.currency, partner.balance)

    async def statement(
        self, code: str, first_day: date | None = None, last_day: date | None = None
    ) -> views.StatementPage:
        """Balance movements from ``first_day`` to ``last_day`` inclusive, days in the operator's
        time zone (default: the last seven days), at most ``MAX_STATEMENT_DAYS``."""
        tz = ZoneInfo(self._wiring.settings.timezone)
        today = datetime.now(tz).date()
        first = first_day if first_day is not None else today - timedelta(days=DEFAULT_STATEMENT_DAYS - 1)
        last = last_day if last_day is not None else today
        if last < first or (last - first).days >= MAX_STATEMENT_DAYS:
            raise InvalidInput(
                f"from..to: at most {MAX_STATEMENT_DAYS} days, from not after to",
                key="err_partners.bad_statement_period",
                most=MAX_STATEMENT_DAYS,
            )
        start = datetime.combine(first, time(), tzinfo=tz)
        end = datetime.combine(last + timedelta(days=1), time(), tzinfo=tz)
        async with self._db.read() as session:
            partner = await accounts.get(session, code)
            stmt = await orders.statement(session, partner, start=start, end=end)
        lines = tuple(views.StatementLine(ln.at, ln.kind, ln.amount, ln.order_no, ln.ref) for ln in stmt.lines)
        return views.StatementPage(stmt.currency, first, last, stmt.opening, stmt.closing, lines)

    async def inspect_link(self, token: str) -> redeem.TokenView:
        """What a redemption link grants and whether it can be used now; takes no use."""
        async with self._db.read() as session:
            return await redeem.inspect(session, self._wiring.keyring, token)

    async def consume_link(self, code: str, token: str) -> redeem.TokenView:
        """Take one use of a redemption link, recorded as ``partner:<code>`` via ``api``."""
        async with self._db.transaction() as session:
            return await redeem.consume(session, self._wiring.keyring, token, by=f"partner:{code}", channel="api")

    async def failing_deliveries(
        self, *, partner: str | None = None, limit: int = 50
    ) -> list[console_views.FailingDelivery]:
        """Webhook events tried and not acknowledged yet, with their last error."""
        async with self._db.read() as session:
            return await console_views.failing_deliveries(session, partner=partner, limit=limit)


async def _partner(session: AsyncSession, partner_id: int) -> Partner:
    partner = await session.get(Partner, partner_id)
    if partner is None:
        raise NotFound("no such partner", key="err_partners.no_such_partner")
    return partner
