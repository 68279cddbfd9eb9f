"""The distributors' use cases: the tree, invites, prices, balances, bulk purchases.

Each method is one use case: it takes plain values, opens and commits its own transaction and
returns plain values or frozen dataclasses (docs/architecture.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quanyi.core.catalog.products import get_product
from quanyi.core.distributors import accounts, console_views, digest, notices, terms, views
from quanyi.core.errors import InvalidInput, RiskRefusal
from quanyi.core.models import StaffMember
from quanyi.core.money import Money
from quanyi.core.risk import rules as risk
from quanyi.core.sales.orders import Buyer, remember_user

if TYPE_CHECKING:
    from quanyi.core.wiring import Wiring


class DistributorService:
    def __init__(self, wiring: Wiring) -> None:
        self._wiring = wiring
        self._db = wiring.db

    # --- who is who ------------------------------------------------------------------------

    async def is_active(self, user_id: int) -> bool:
        """Whether ``user_id`` is an active distributor."""
        async with self._db.read() as session:
            distributor = await accounts.get_by_user(session, user_id)
        return distributor is not None and distributor.active

    async def chat_actor(self, user_id: int) -> str | None:
        """Who a chat user acts as on the audit trail: an operator, a distributor (active or
        not), or nobody the trail follows (None)."""
        if user_id in self._wiring.settings.admin_id_list:
            return f"operator:{user_id}"
        async with self._db.read() as session:
            if await session.get(StaffMember, user_id) is not None:  # staff of any role
                return f"operator:{user_id}"
            distributor = await accounts.get_by_user(session, user_id)
        return f"distributor:{user_id}" if distributor is not None else None

    async def list_distributors(self) -> list[views.DistributorView]:
        async with self._db.read() as session:
            return await views.all_distributors(session)

    async def update(
        self, ref: str, *, tier: str | None = None, invite_limit: int | None = None, active: bool | None = None
    ) -> views.DistributorView:
        """Change a distributor's tier, invite limit or whether it is active."""
        async with self._db.transaction() as session:
            distributor = await accounts.update_distributor(
                session, ref, tier=tier, invite_limit=invite_limit, active=active
            )
            return views.distributor_view(distributor)

    # --- invites ---------------------------------------------------------------------------

    async def create_invite(
        self,
        *,
        created_by: str,
        tier: str = "default",
        invite_limit: int = 0,
        hours: int | None = None,
        allow_no_margin: bool = False,
    ) -> views.InviteView:
        """The operator's one-time invite of a level-1 distributor (default validity: settings).
        A tier with no cost prices is refused (``NoMargin``) unless ``allow_no_margin``."""
        settings = self._wiring.settings
        hours = hours if hours is not None else settings.invite_hours
        async with self._db.transaction() as session:
            invite = await accounts.create_invite(
                session,
                created_by=created_by,
                tier=tier,
                invite_limit=invite_limit,
                hours=hours,
                max_depth=settings.max_distributor_depth,
            )
            if not allow_no_margin:
                await terms.check_margin(session, invite.tier)  # rolls the invite back
            return views.invite_view(invite, hours)

    async def invite_sub_distributor(self, user_id: int) -> views.InviteView:
        """A distributor's one-time invite of a sub-distributor, within its limits; refused
        (``NoMargin``) while its tier, which the sub inherits, has no cost prices."""
        settings = self._wiring.settings
        async with self._db.transaction() as session:
            distributor = await accounts.require(session, user_id)
            invite = await accounts.create_invite(
                session,
                created_by=f"distributor:{distributor.id}",
                parent_user_id=user_id,
                hours=settings.invite_hours,
                max_depth=settings.max_distributor_depth,
            )
            await terms.check_margin(session, invite.tier)  # rolls the invite back
            return views.invite_view(invite, settings.invite_hours)

    async def accept_invite(
        self, token: str, *, user_id: int, chat_id: int, language: str, username: str | None, name: str
    ) -> views.DistributorView:
        """Make the user a distributor with a one-time invite (``InviteInvalid`` says why not)."""
        # The user row first, in its own transaction: allocations find it by @username even
        # when the invite is refused.
        async with self._db.transaction() as session:
            await remember_user(session, Buyer(user_id, chat_id, language, username))
        async with self._db.transaction() as session:
            distributor = await accounts.accept_invite(
                session, token, user_id=user_id, name=name, currency=self._wiring.settings.currency
            )
            joined = views.distributor_view(distributor)
        self._wiring.outbox_wakeup.set()  # its parent, if any, is told
        return joined

    async def customer_digest(self, digest_id: int) -> digest.Digest:
        """One customers' orders digest as its distributor reads it (``NotFound`` when gone)."""
        async with self._db.read() as session:
            return await digest.digest_view(session, digest_id)

    async def pass_quota(self, user_id: int, sub_user_id: int, sku: str, units: int) -> views.QuotaPassed:
        """The caller passes part of its own quota to one of its sub-distributors (who is told)."""
        async with self._db.transaction() as session:
            passed = await terms.pass_quota(session, user_id, sub_user_id, sku, units)
        self._wiring.outbox_wakeup.set()
        return passed

    # --- the panel, prices and bulk purchases ----------------------------------------------

    async def panel(self, user_id: int) -> views.AgentPanel:
        """The caller's /agent panel; ``Forbidden`` when it is not an active distributor."""
        async with self._db.read() as session:
            settings = self._wiring.settings
            panel = await accounts.panel(
                session, user_id, tz=settings.timezone, confirm_days=settings.commission_confirm_days
            )
        return views.agent_panel(panel)

    async def set_resale_price(self, user_id: int, sku: str, price: int) -> None:
        """The distributor's price for its own customers (within floor, ceiling and its cost)."""
        async with self._db.transaction() as session:
            await accounts.set_resale_price(session, user_id, sku, price)

    async def set_cost_price(
        self, sku: str, price: str | None, *, tier: str | None = None, distributor: str | None = None
    ) -> views.CostPriceSet:
        """Set a tier's or one distributor's cost price (decimal text in the product's
        currency), or remove it with None."""
        async with self._db.transaction() as session:
            product = await get_product(session, sku)
            minor = Money.parse(price, product.currency).minor if price is not None else None
            await accounts.set_cost_price(session, sku, minor, tier=tier, distributor=distributor)
            return views.CostPriceSet(product.sku, minor, product.price, product.currency)

    async def bulk_buy(
        self, *, user_id: int, sku: str, quantity: int, chat_id: int, language: str, request_key: str | None
    ) -> views.BulkPurchase:
        """Buy ``quantity`` codes at cost from the balance; all or nothing. A risk refusal is
        recorded, then raised."""
        try:
            async with self._db.transaction() as session:
                order = await accounts.bulk_buy(
                    session,
                    user_id=user_id,
                    sku=sku,
                    quantity=quantity,
                    chat_id=chat_id,
                    language=language,
                    request_key=request_key,
                    risk_secret=self._wiring.keyring.lookup_key,
                )
                bought = views.BulkPurchase(order.number, order.amount)
        except RiskRefusal as exc:
            await risk.record(self._db, exc)
            raise
        self._wiring.outbox_wakeup.set()
        return bought

    # --- balances --------------------------------------------------------------------------

    async def credit(self, ref: str, amount: str, *, actor: str, note: str = "") -> views.BalanceChange:
        """Top up a distributor's prepaid balance by ``amount`` (decimal text, its currency)."""
        return await self._change_balance(ref, amount, sign=1, reason="top_up", actor=actor, note=note)

    async def debit(self, ref: str, amount: str, *, actor: str, note: str = "") -> views.BalanceChange:
        """Take ``amount`` from a distributor's balance (a correction); never below zero."""
        return await self._change_balance(ref, amount, sign=-1, reason="adjustment", actor=actor, note=note)

    async def _change_balance(
        self, ref: str, amount: str, *, sign: int, reason: str, actor: str, note: str
    ) -> views.BalanceChange:
        if amount.strip().startswith("-"):
            # The direction is the use case's; a signed amount would turn a credit into a debit.
            raise InvalidInput("the amount must be positive", key="err_distributors.amount_positive", negative=True)
        async with self._db.transaction() as session:
            distributor = await accounts.resolve(session, ref)
            minor = Money.parse(amount, distributor.currency).minor
            after = await accounts.adjust_balance(
                session, distributor, sign * minor, reason=reason, actor=actor, note=note
            )
            change = {"amount": sign * minor, "balance": after, "currency": distributor.currency, "note": note[:255]}
            await notices.tell(session, distributor.id, notices.BALANCE, change)
            changed = views.BalanceChange(distributor.user_id, distributor.name, minor, after, distributor.currency)
        self._wiring.outbox_wakeup.set()
        return changed

    # --- the operator console ---------------------------------------------------------------

    async def tree(self) -> list[console_views.TreeRow]:
        """Every distributor, parents before their subs."""
        async with self._db.read() as session:
            return await console_views.tree(session)

    async def card(self, ref: str) -> console_views.DistributorCard:
        """One distributor with its subs, quotas, recent balance entries and cost prices."""
        async with self._db.read() as session:
            return await console_views.card(session, ref)

    async def open_invites(self) -> list[console_views.OpenInvite]:
        async with self._db.read() as session:
            return await console_views.open_invites(session)

    async def tier_prices(self) -> list[console_views.CostLine]:
        async with self._db.read() as session:
            return await console_views.tier_prices(session)

    async def commission_page(
        self, *, status: str | None = None, distributor: str | None = None, page: int = 1, per_page: int = 50
    ) -> console_views.CommissionPage:
        """Commission rows a page at a time, with the totals of every row the filter matches."""
        async with self._db.read() as session:
            return await console_views.commission_page(
                session, status=status, distributor=distributor, page=page, per_page=per_page
            )

    async def create_sub_invite(
        self, parent: str, *, created_by: str, hours: int | None = None, allow_no_margin: bool = False
    ) -> views.InviteView:
        """The operator's invite of a sub-distributor under ``parent`` (a reference), within the
        parent's invite and depth limits, in the parent's tier (``NoMargin`` unless allowed)."""
        settings = self._wiring.settings
        hours = hours if hours is not None else settings.invite_hours
        async with self._db.transaction() as session:
            found = await accounts.resolve(session, parent)
            invite = await accounts.create_invite(
                session,
                created_by=created_by,
                parent_user_id=found.user_id,
                hours=hours,
                max_depth=settings.max_distributor_depth,
            )
            if not allow_no_margin:
                await terms.check_margin(session, invite.tier)  # rolls the invite back
            return views.invite_view(invite, hours)
