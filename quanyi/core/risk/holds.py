"""Held orders in the operators' chat: only an open hold is decided there, and its buyer hears
the decision (outbox kinds ``risk_hold_approved``, ``risk_hold_rejected``)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.errors import InvalidInput, NotFound
from quanyi.core.models import RiskDecision, User
from quanyi.core.platform import outbox

# The decision keeps the operator's reason, which its buyer is told, up to this many characters.
REASON_LIMIT = 255


def reason_for_buyer(text: str) -> str:
    """The operator's typed reason, trimmed; ``InvalidInput`` (field ``reason``) when empty or too long."""
    reason = text.strip()
    if not 1 <= len(reason) <= REASON_LIMIT:
        raise InvalidInput(
            f"give a reason of 1 to {REASON_LIMIT} characters",
            key="err_risk.reason_length",
            field="reason",
            most=REASON_LIMIT,
        )
    return reason


async def open_hold(session: AsyncSession, decision_id: int) -> RiskDecision:
    """The hold ``decision_id`` while it waits for an operator (``NotFound`` otherwise)."""
    decision = await session.get(RiskDecision, decision_id)
    if decision is None or decision.action != "hold" or decision.status != "open":
        raise NotFound(f"no open hold {decision_id}", key="err_risk.no_open_hold", decision=decision_id)
    return decision


async def tell_buyer(session: AsyncSession, decision: RiskDecision, kind: str) -> None:
    """The buyer hears of the operator's decision in the private chat (chat id = user id)."""
    if decision.user_id is None:
        return
    language = await session.scalar(select(User.language).where(User.id == decision.user_id)) or "zh"
    payload = {"decision_id": decision.id}
    outbox.enqueue(session, chat_id=decision.user_id, kind=kind, payload=payload, language=language)
