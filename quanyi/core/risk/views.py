"""The risk screens' read side: rules, the blocklist and decisions as frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.models import BlockEntry, RiskDecision, RiskRule
from quanyi.core.money import format_minor
from quanyi.core.risk import rules as risk
from quanyi.core.risk.rules import ACTIONS, AMOUNT_METRICS, BLOCK_KINDS, METRICS

__all__ = ["ACTIONS", "AMOUNT_METRICS", "BLOCK_KINDS", "METRICS", "STATUSES"]

STATUSES = ("open", "passed", "approved", "rejected", "used")


@dataclass(frozen=True)
class RuleView:
    id: int
    name: str
    metric: str
    threshold: int
    threshold_text: str  # money for the amount metrics (``5000.00``), else the number
    action: str
    window_seconds: int | None
    channels: str  # comma-separated; empty: all
    skus: str
    languages: str | None
    active: bool


@dataclass(frozen=True)
class BlockView:
    kind: str
    value: str
    reason: str
    created_by: str
    created_at: datetime


@dataclass(frozen=True)
class DecisionView:
    id: int
    action: str
    status: str
    reason: str
    user_id: int | None
    client_ip: str | None
    device_id: str | None
    channel: str
    sku: str
    quantity: int
    amount: int
    currency: str
    created_at: datetime
    metric: str | None = None  # the rule's metric the reason names (None: an operator's own reason)
    limit: str = ""  # the limit the reason names, if any


@dataclass(frozen=True)
class DecisionBoard:
    """The operators' ``/decisions``: what waits for them, and what was decided lately."""

    open: list[DecisionView]
    recent: list[DecisionView]


def threshold_text(metric: str, threshold: int, currency: str) -> str:
    if metric in AMOUNT_METRICS:
        return format_minor(threshold, currency)
    return str(threshold)


def rule_view(rule: RiskRule, currency: str) -> RuleView:
    return RuleView(
        id=rule.id,
        name=rule.name,
        metric=rule.metric,
        threshold=rule.threshold,
        threshold_text=threshold_text(rule.metric, rule.threshold, currency),
        action=rule.action,
        window_seconds=rule.window_seconds,
        channels=rule.channels or "",
        skus=rule.skus or "",
        languages=rule.languages,
        active=rule.active,
    )


def block_view(entry: BlockEntry) -> BlockView:
    return BlockView(entry.kind, entry.value, entry.reason, entry.created_by, entry.created_at)


def decision_view(d: RiskDecision) -> DecisionView:
    metric, limit = risk.reason_metric(d.reason) or (None, "")
    return DecisionView(
        id=d.id,
        action=d.action,
        status=d.status,
        reason=d.reason,
        user_id=d.user_id,
        client_ip=d.client_ip,
        device_id=d.device_id,
        channel=d.channel,
        sku=d.sku,
        quantity=d.quantity,
        amount=d.amount,
        currency=d.currency,
        created_at=d.created_at,
        metric=metric,
        limit=limit,
    )


async def rules(session: AsyncSession, currency: str) -> list[RuleView]:
    return [rule_view(rule, currency) for rule in await risk.list_rules(session)]


async def blocks(session: AsyncSession) -> list[BlockView]:
    return [block_view(entry) for entry in await risk.list_blocks(session)]


async def decisions(session: AsyncSession, *, status: str | None = None, limit: int = 50) -> list[DecisionView]:
    return [decision_view(d) for d in await risk.decisions(session, status=status, limit=limit)]


async def decision_board(session: AsyncSession, *, shown: int = 20, recent: int = 10) -> DecisionBoard:
    """The open decisions (newest ``shown``) and the decided ones among the newest ``shown`` (``recent`` of them)."""
    waiting = await decisions(session, status="open", limit=shown)
    decided = [d for d in await decisions(session, limit=shown) if d.status != "open"][:recent]
    return DecisionBoard(waiting, decided)


async def decision(session: AsyncSession, decision_id: int) -> DecisionView | None:
    found = await session.get(RiskDecision, decision_id)
    return decision_view(found) if found is not None else None


async def rule_of(session: AsyncSession, decision_id: int, currency: str) -> RuleView | None:
    """The rule that made a decision; None for a blocklist entry's (or no such decision)."""
    found = await session.get(RiskDecision, decision_id)
    if found is None or found.rule_id is None:
        return None
    rule = await session.get(RiskRule, found.rule_id)
    return rule_view(rule, currency) if rule is not None else None
