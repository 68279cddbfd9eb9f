"""The books' use cases: ledger, commissions, settlement, reconciliation, withdrawals, reports.

Each method is one use case: it takes plain values, opens and commits its own transaction and
returns plain values or frozen dataclasses (docs/architecture.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import date, datetime, timedelta

    from quanyi.core.books import console_views as books_console
    from quanyi.core.books import views as books_views
    from quanyi.core.books.dashboard import Dashboard
    from quanyi.core.books.ledger import CheckReport
    from quanyi.core.books.reconcile import Report
    from quanyi.core.distributors.views import Available, CommissionReport, WithdrawalView
    from quanyi.core.wiring import Wiring


class BooksService:
    def __init__(self, wiring: Wiring) -> None:
        self._wiring = wiring
        self._db = wiring.db

    # == withdrawals, commissions, distributor balances (helper: distributor doors) ==

    async def withdrawable(self, user_id: int) -> Available:
        """What the distributor may withdraw from each source; ``Forbidden`` for anyone else."""
        from quanyi.core.books import withdrawals
        from quanyi.core.distributors import accounts

        async with self._db.read() as session:
            distributor = await accounts.require(session, user_id)
            return await withdrawals.available(session, distributor)

    async def request_withdrawal(
        self, *, user_id: int, source: str, amount: int, payout_account: str, request_key: str | None
    ) -> WithdrawalView:
        """Freeze ``amount`` of the caller's commission or balance and ask the operators."""
        from quanyi.core.books import withdrawals
        from quanyi.core.distributors import views

        async with self._db.transaction() as session:
            withdrawal = await withdrawals.request(
                session,
                user_id=user_id,
                source=source,
                amount=amount,
                payout_account=payout_account,
                request_key=request_key,
                admin_ids=self._wiring.settings.admin_id_list,
            )
            requested = await views.view_of(session, withdrawal)
        self._wiring.outbox_wakeup.set()
        return requested

    async def list_withdrawals(self, *, status: str | None = None, limit: int = 50) -> list[WithdrawalView]:
        """Withdrawals, newest first, of one status or all."""
        from quanyi.core.books import withdrawals
        from quanyi.core.distributors import views

        async with self._db.read() as session:
            rows = await withdrawals.list_withdrawals(session, status=status, limit=limit)
        return [views.withdrawal_view(w, d) for w, d in rows]

    async def withdrawal(self, withdrawal_id: int) -> WithdrawalView:
        from quanyi.core.books import withdrawals
        from quanyi.core.distributors import views

        async with self._db.read() as session:
            return views.withdrawal_view(*await withdrawals.get(session, withdrawal_id))

    async def open_withdrawal(self, withdrawal_id: int) -> WithdrawalView:
        """A withdrawal still to decide; ``WithdrawalDecided`` (details: status) once it is not."""
        from quanyi.core.books import withdrawals

        found = await self.withdrawal(withdrawal_id)
        if not found.open:
            raise withdrawals.WithdrawalDecided(
                f"withdrawal {withdrawal_id} was {found.status} already", status=found.status
            )
        return found

    async def approve_withdrawal(self, withdrawal_id: int, *, actor: str) -> WithdrawalView:
        """Approve paying the frozen amount out; the distributor is told it is approved, to be paid."""
        from quanyi.core.books import withdrawals
        from quanyi.core.distributors import views

        async with self._db.transaction() as session:
            approved = await views.view_of(session, await withdrawals.approve(session, withdrawal_id, actor=actor))
        self._wiring.outbox_wakeup.set()
        return approved

    async def mark_withdrawal_paid(self, withdrawal_id: int, *, actor: str) -> WithdrawalView:
        """An approved withdrawal's money was sent; the distributor is told it is paid."""
        from quanyi.core.books import withdrawals
        from quanyi.core.distributors import views

        async with self._db.transaction() as session:
            paid = await views.view_of(session, await withdrawals.mark_paid(session, withdrawal_id, actor=actor))
        self._wiring.outbox_wakeup.set()
        return paid

    async def reject_withdrawal(self, withdrawal_id: int, *, actor: str, reason: str) -> WithdrawalView:
        """Unfreeze the amount back where it came from; the distributor is told why."""
        from quanyi.core.books import withdrawals
        from quanyi.core.distributors import views

        async with self._db.transaction() as session:
            withdrawal = await withdrawals.reject(session, withdrawal_id, actor=actor, reason=reason)
            rejected = await views.view_of(session, withdrawal)
        self._wiring.outbox_wakeup.set()
        return rejected

    async def set_commission_rate(self, level: int, rate_bp: int) -> None:
        """Commission for chain level ``level`` (1 = the buyer's own distributor), in basis points."""
        from quanyi.core.books import commissions

        async with self._db.transaction() as session:
            await commissions.set_rate(session, level, rate_bp)

    async def commission_rates(self) -> dict[int, int]:
        """Basis points per chain level."""
        from quanyi.core.books import commissions

        async with self._db.read() as session:
            return await commissions.rates(session)

    async def commission_report(
        self, *, distributor: str | None = None, order_number: str | None = None, limit: int = 500
    ) -> CommissionReport:
        """Commission rows, newest first, of one distributor (by reference) and/or one order,
        with their totals per status and currency."""
        from quanyi.core.books import commissions
        from quanyi.core.distributors import accounts, views

        async with self._db.read() as session:
            found = await accounts.resolve(session, distributor) if distributor else None
            rows = await commissions.list_commissions(
                session, distributor_id=found.id if found else None, order_number=order_number, limit=limit
            )
            return views.commission_report(rows)

    # == ledger, settlement, statements, reports, reconciliation (helper: books doors) ==

    async def check_ledger(self) -> CheckReport:
        """Prove the ledger: every entry sums to zero per currency and the balances agree."""
        from quanyi.core.books import ledger

        async with self._db.read() as session:
            return await ledger.check(session)

    async def balances(self, prefix: str = "", *, include_zero: bool = False) -> list[books_views.Balance]:
        """Account balances (debit positive), of the accounts starting with ``prefix``."""
        from quanyi.core.books import views as books_views

        async with self._db.read() as session:
            return await books_views.balances(session, prefix, include_zero=include_zero)

    async def settle(self, day: date | None = None) -> books_views.Settled:
        """Settle ``day`` (default: yesterday in QUANYI_TIMEZONE) once; a run that settled it
        pins the audit chain, as the scheduler's does."""
        from quanyi.core.books import settlement
        from quanyi.core.books import views as books_views

        result = await settlement.settle(self._wiring, day)
        pinned = await settlement.pin(self._wiring, [result])
        return books_views.Settled(result, self._wiring.settings.timezone, pinned)

    async def statement(self, day: str, distributor_id: int | None = None) -> books_views.Statement:
        """A settled day's figures (``YYYY-MM-DD``), all of them or one distributor's."""
        from datetime import date

        from quanyi.core.books import views as books_views

        async with self._db.read() as session:
            return await books_views.statement(session, date.fromisoformat(day), distributor_id)

    async def sales_overview(self, *, days: int, top: int) -> books_views.SalesOverview:
        """Today's and the last ``days`` days' sales, the ``top`` products and net per day."""
        from quanyi.core.books import views as books_views

        settings = self._wiring.settings
        async with self._db.read() as session:
            return await books_views.sales_overview(
                session, tz=settings.timezone, currency=settings.currency, days=days, top=top
            )

    async def sales_report(
        self,
        view: str,
        *,
        days: int = 30,
        start: date | None = None,
        end: date | None = None,
        limit: int = 10,
        chart_days: int | None = None,
    ) -> books_views.SalesReport:
        """A report (one of ``reports.VIEWS``) of the last ``days`` business days or ``start``..``end``."""
        from quanyi.core.books import reports
        from quanyi.core.books import views as books_views

        settings = self._wiring.settings
        span = reports.period(settings.timezone, days=days, start=start, end=end)
        async with self._db.read() as session:
            return await books_views.sales_report(
                session, view, span, currency=settings.currency, limit=limit, chart_days=chart_days
            )

    async def reconcile(self, statement: bytes, provider: str, *, margin: timedelta | None = None) -> Report:
        """A payment provider's statement (CSV) held against our payments by that method."""
        from quanyi.core.books import reconcile

        settings = self._wiring.settings
        return await reconcile.reconcile_statement(
            self._db,
            statement,
            provider,
            methods=self._wiring.payments.names(),
            default_currency=settings.currency,
            tz=settings.timezone,
            margin=reconcile.DEFAULT_MARGIN if margin is None else margin,
        )

    # == the web console's finance screens (helper: console) ==

    async def settled_days(self, *, limit: int = 60) -> list[books_console.SettledDay]:
        """Settled business days, newest first, with their totals per currency."""
        from quanyi.core.books import console_views

        async with self._db.read() as session:
            return await console_views.settled_days(session, limit=limit)

    async def withdrawal_detail(self, withdrawal_id: int) -> books_console.WithdrawalDetail:
        """A withdrawal (``NotFound``) with its distributor's accounts and what it posted."""
        from quanyi.core.books import console_views

        async with self._db.read() as session:
            return await console_views.withdrawal_detail(session, withdrawal_id)

    async def account_postings(self, account: str, *, limit: int = 100) -> list[books_console.PostingLine]:
        """An account's newest postings, with their journal entries."""
        from quanyi.core.books import console_views

        async with self._db.read() as session:
            return await console_views.account_postings(session, account, limit=limit)

    # == the console's dashboard ==

    async def dashboard(self, *, now: datetime | None = None) -> Dashboard:
        """Today's and this month's sales beside yesterday's, per channel, distributor, hour and
        day; each pool with its quotas; what waits for an operator (``books.dashboard``)."""
        from datetime import timedelta

        from quanyi.core.books import dashboard

        settings = self._wiring.settings
        async with self._db.read() as session:
            return await dashboard.dashboard(
                session,
                tz=settings.timezone,
                currency=settings.currency,
                recharge_slow=timedelta(seconds=settings.recharge_query_after_seconds),
                now=now,
            )
