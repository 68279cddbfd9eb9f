"""Scheduler jobs (APScheduler 3) run inside ``quanyi serve``.

Replicas may run side by side on PostgreSQL: each job first renews a database lease,
and only the lease holder does the work.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from quanyi.core.books import settlement
from quanyi.core.distributors import digest
from quanyi.core.models import utcnow
from quanyi.core.partners import accounts as partners
from quanyi.core.partners import webhooks as partner_webhooks
from quanyi.core.payments.queries import query_pending
from quanyi.core.platform import audit, audit_chain, leases, outbox
from quanyi.core.sales import manual, paid_notices, recharge
from quanyi.core.sales.orders import expire_due
from quanyi.core.stock.alerts import StockAlert, check_stock
from quanyi.core.wiring import Wiring

log = logging.getLogger(__name__)
LEASE = "scheduler"
PAID_NOTICE_SECONDS = 10  # QUANYI_OPERATOR_ORDER_NOTICE=each: how soon operators hear of a paid order


class Jobs:
    def __init__(self, core: Wiring, holder: str | None = None) -> None:
        self.core = core
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.lease_ttl = timedelta(seconds=max(60, core.settings.expiry_job_seconds * 3))
        self._running: set[asyncio.Task[Any]] = set()

    def tracked(self, job: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
        """``job`` as the scheduler runs it: its run is known to ``finish``."""

        async def run() -> Any:
            task = asyncio.current_task()
            if task is not None:
                self._running.add(task)
            try:
                return await job()
            finally:
                if task is not None:
                    self._running.discard(task)

        return run

    async def finish(self, within: float) -> None:
        """Let the runs in flight end (for at most ``within`` seconds): a stop right after start
        must not cut a settlement short and log its cancellation as a failed job."""
        if self._running:
            await asyncio.wait(set(self._running), timeout=within)

    async def is_leader(self) -> bool:
        return await leases.acquire(self.core.db, LEASE, self.holder, self.lease_ttl)

    async def expire_orders(self) -> list[str]:
        """Cancel unpaid orders past their reservation and return their stock."""
        if not await self.is_leader():
            return []
        cancelled: list[str] = []
        while True:
            async with self.core.db.transaction() as session:
                batch = await expire_due(session)
            cancelled.extend(batch)
            if len(batch) < 200:
                break
        if cancelled:
            log.info("expired %d unpaid orders", len(cancelled))
            self.core.outbox_wakeup.set()
        return cancelled

    async def query_payments(self) -> list[str]:
        """Ask providers about orders whose payment callback never came."""
        if not await self.is_leader():
            return []
        results = await query_pending(
            self.core, older_than=timedelta(minutes=self.core.settings.epay_query_after_minutes)
        )
        settled = [r.order_number for r in results if r.outcome not in ("unpaid", "error", "duplicate")]
        if settled:
            self.core.outbox_wakeup.set()
        return settled

    async def stock_alerts(self) -> list[StockAlert]:
        """Tell operators (and distributors, of their own allocations) when stock runs low."""
        if not await self.is_leader():
            return []
        async with self.core.db.transaction() as session:
            raised = await check_stock(session, self.core.settings.admin_id_list)
        if raised:
            log.info("low-stock alerts: %s", ", ".join(f"{a.sku}@{a.channel or 'pool'}" for a in raised))
            self.core.outbox_wakeup.set()
        return raised

    async def paid_orders(self) -> int:
        """Tell operators of the orders paid since the last run: one message each, or one digest
        (QUANYI_OPERATOR_ORDER_NOTICE); returns how many orders were told."""
        settings = self.core.settings
        if settings.operator_order_notice == "off" or not await self.is_leader():
            return 0
        told = 0
        while True:
            async with self.core.db.transaction() as session:
                batch = await paid_notices.tell_paid(
                    session, settings.admin_id_list, digest=settings.operator_order_notice == "digest"
                )
            told += batch
            if batch < paid_notices.BATCH:
                break
        if told:
            self.core.outbox_wakeup.set()
        return told

    async def recharges(self) -> dict[str, str]:
        """Re-query recharges that went quiet, fail those past the give-up limit, and refund
        failures no worker resolved (a crash between a failure and its refund)."""
        if not await self.is_leader():
            return {}
        outcomes = {number: str(outcome) for number, outcome in (await recharge.requery(self.core)).items()}
        for number in await recharge.resolve_failures(self.core):
            outcomes.setdefault(number, "resolved")
        if outcomes:
            log.info("recharge re-query: %s", ", ".join(f"{n} {o}" for n, o in outcomes.items()))
        return outcomes

    async def manual_deadlines(self) -> list[int]:
        """Refund manual orders not done by their product's deadline (buyer and operators told),
        and failures no run refunded yet; returns the task ids."""
        if not await self.is_leader():
            return []
        expired = await manual.expire_due(self.core)
        resolved = await manual.resolve_due(self.core)
        if expired or resolved:
            log.info("manual tasks: %d past their deadline, %d failures refunded", len(expired), len(resolved))
        return expired + resolved

    async def settle(self) -> list[str]:
        """Settle every closed business day not settled yet (at start too: days missed while
        the service was down are caught up, oldest first)."""
        if not await self.is_leader():
            return []
        results = await settlement.settle_due(self.core)
        settled = [r.day.isoformat() for r in results if not r.already]
        if settled:
            log.info("settled %s", ", ".join(settled))
        pinned = await settlement.pin(self.core, results)
        if pinned is not None:
            log.info("audit chain anchored at record %d", pinned.seq)
        return settled

    async def anchor_audit(self) -> audit_chain.Anchor | None:
        """Pin the audit chain's head outside the database (after each settlement)."""
        settings = self.core.settings
        pinned = await audit_chain.anchor(self.core.db, settings.data_dir, settings.admin_id_list)
        if pinned is not None:
            log.info("audit chain anchored at record %d", pinned.seq)
            self.core.outbox_wakeup.set()
        return pinned

    async def audit_verify(self) -> audit.VerifyReport | None:
        """Nightly: walk the audit chain, against the anchors in the data directory; a broken one
        alerts operators (``admin_audit_broken``)."""
        if not await self.is_leader():
            return None
        report = await audit_chain.verify_anchored(self.core.db, self.core.settings.data_dir)
        if not report.ok:
            log.error("audit chain broken at record %s: %s", report.first_bad_seq, report.problem)
            async with self.core.db.transaction() as session:
                await outbox.enqueue_admins(
                    session,
                    self.core.settings.admin_id_list,
                    "admin_audit_broken",
                    {"seq": report.first_bad_seq, "checked": report.checked},
                )
            self.core.outbox_wakeup.set()
        return report

    async def partner_webhooks(self) -> dict[str, int]:
        """Tell partners' webhooks what became of their API orders, retry those not yet
        acknowledged, and forget API nonces too old to be replayed."""
        if not await self.is_leader():
            return {}
        found = await partner_webhooks.detect(self.core.db)
        sent = await partner_webhooks.deliver_due(self.core)
        async with self.core.db.transaction() as session:
            forgotten = await partners.forget_nonces(session, utcnow())
        if found or sent["delivered"] or sent["failed"]:
            log.info("partner webhooks: %d new, %d delivered, %d failed", found, sent["delivered"], sent["failed"])
        return {"found": found, **sent, "nonces_forgotten": forgotten}

    async def distributor_digests(self) -> list[int]:
        """Send each distributor one summary of its customers' orders paid since its last one."""
        if not await self.is_leader():
            return []
        made = await digest.send_due(self.core)
        if made:
            log.info("customers' order digests: %d distributors", len(made))
        return made

    async def resign(self) -> None:
        await leases.release(self.core.db, LEASE, self.holder)


def build_scheduler(jobs: Jobs) -> AsyncIOScheduler:
    scheduler = AsyncIOScheduler(timezone=jobs.core.settings.timezone)
    settings = jobs.core.settings
    every = {
        jobs.expire_orders: settings.expiry_job_seconds,
        jobs.query_payments: settings.payment_query_job_seconds,
        jobs.stock_alerts: settings.stock_alert_job_seconds,
        jobs.recharges: settings.recharge_job_seconds,
        jobs.manual_deadlines: settings.expiry_job_seconds,
        jobs.partner_webhooks: settings.partner_webhook_job_seconds,
    }
    for job, seconds in every.items():
        scheduler.add_job(
            jobs.tracked(job), "interval", seconds=seconds, id=job.__name__, max_instances=1, coalesce=True
        )
    if settings.operator_order_notice != "off":
        # Each paid order within seconds; a digest every QUANYI_OPERATOR_DIGEST_MINUTES.
        digest = settings.operator_order_notice == "digest"
        seconds = settings.operator_digest_minutes * 60 if digest else PAID_NOTICE_SECONDS
        scheduler.add_job(
            jobs.tracked(jobs.paid_orders),
            "interval",
            seconds=seconds,
            id="paid_orders",
            max_instances=1,
            coalesce=True,
        )
    if settings.distributor_digest_minutes:
        scheduler.add_job(
            jobs.tracked(jobs.distributor_digests),
            "interval",
            minutes=settings.distributor_digest_minutes,
            id="distributor_digests",
            max_instances=1,
            coalesce=True,
        )
    # First run at start, then every settle_job_seconds: a day is settled soon after midnight.
    scheduler.add_job(
        jobs.tracked(jobs.settle),
        "interval",
        seconds=settings.settle_job_seconds,
        id="settle",
        max_instances=1,
        coalesce=True,
        next_run_time=datetime.now(UTC),
    )
    # Once a day, in the quiet hours of QUANYI_TIMEZONE.
    scheduler.add_job(
        jobs.tracked(jobs.audit_verify), "cron", hour=3, minute=30, id="audit_verify", max_instances=1, coalesce=True
    )
    return scheduler
