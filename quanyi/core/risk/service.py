"""The risk rules' use cases: rules, lists, held decisions and challenges.

Each method is one use case: it takes plain values, opens and commits its own transaction and
returns plain values or frozen dataclasses (docs/architecture.md)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from quanyi.core.models import RiskRule
from quanyi.core.risk import holds, views
from quanyi.core.risk import rules as risk
from quanyi.core.risk.views import BlockView, DecisionBoard, DecisionView, RuleView

if TYPE_CHECKING:
    from quanyi.core.wiring import Wiring


class RiskService:
    def __init__(self, wiring: Wiring) -> None:
        self._wiring = wiring
        self._db = wiring.db

    @property
    def _currency(self) -> str:
        # Money thresholds are in the shop's currency.
        return self._wiring.settings.currency

    # --- rules ---------------------------------------------------------------------------------

    async def rules(self) -> list[RuleView]:
        async with self._db.read() as session:
            return await views.rules(session, self._currency)

    async def add_rule(
        self,
        *,
        name: str,
        metric: str,
        threshold: int,
        action: str,
        window_seconds: int | None = None,
        channels: Iterable[str] = (),
        skus: Iterable[str] = (),
        languages: Iterable[str] = (),
    ) -> RuleView:
        async with self._db.transaction() as session:
            rule = await risk.add_rule(
                session,
                name=name,
                metric=metric,
                threshold=threshold,
                action=action,
                window_seconds=window_seconds,
                channels=channels,
                skus=skus,
                languages=languages,
            )
            return views.rule_view(rule, self._currency)

    async def set_rule(
        self,
        name: str,
        *,
        threshold: int | None = None,
        action: str | None = None,
        active: bool | None = None,
        window_seconds: int | None = None,
    ) -> RuleView:
        async with self._db.transaction() as session:
            rule = await risk.set_rule(
                session, name, threshold=threshold, action=action, active=active, window_seconds=window_seconds
            )
            return views.rule_view(rule, self._currency)

    async def edit_rule(self, name: str, changes: Sequence[str]) -> RuleView:
        """Change a rule by typed ``threshold=N action=A window=S`` words (``NotFound``: no such
        rule; ``InvalidInput``: a word that does not read)."""
        async with self._db.transaction() as session:
            metric = (await risk.rule_named(session, name)).metric
            threshold, action, window = risk.parse_changes(changes, metric, self._currency)
            rule = await risk.set_rule(session, name, threshold=threshold, action=action, window_seconds=window)
            return views.rule_view(rule, self._currency)

    async def toggle_rule(self, rule_id: int) -> RuleView | None:
        """Switch a rule on or off; None when there is no such rule."""
        async with self._db.transaction() as session:
            rule = await session.get(RiskRule, rule_id)
            if rule is None:
                return None
            rule = await risk.set_rule(session, rule.name, active=not rule.active)
            return views.rule_view(rule, self._currency)

    # --- the blocklist -------------------------------------------------------------------------

    async def block(self, kind: str, value: str, *, reason: str, actor: str) -> BlockView:
        async with self._db.transaction() as session:
            return views.block_view(await risk.block(session, kind, value, reason=reason, actor=actor))

    async def unblock(self, kind: str, value: str) -> bool:
        """Lift a block; False when it was not blocked."""
        async with self._db.transaction() as session:
            return await risk.unblock(session, kind, value)

    async def blocks(self) -> list[BlockView]:
        async with self._db.read() as session:
            return await views.blocks(session)

    # --- decisions -----------------------------------------------------------------------------

    async def decisions(self, *, status: str | None = None, limit: int = 50) -> list[DecisionView]:
        async with self._db.read() as session:
            return await views.decisions(session, status=status, limit=limit)

    async def decision_board(self) -> DecisionBoard:
        async with self._db.read() as session:
            return await views.decision_board(session)

    async def decision(self, decision_id: int) -> DecisionView | None:
        async with self._db.read() as session:
            return await views.decision(session, decision_id)

    async def refusal_rule(self, decision_id: int | None) -> RuleView | None:
        """The rule behind a refusal the buyer is told of; None for a blocklist entry's."""
        if not decision_id:
            return None
        async with self._db.read() as session:
            return await views.rule_of(session, decision_id, self._currency)

    async def approve(self, decision_id: int, *, actor: str) -> DecisionView:
        """Let a held order through: the buyer's next order of the product, once."""
        async with self._db.transaction() as session:
            return views.decision_view(await risk.approve(session, decision_id, actor=actor))

    async def reject(self, decision_id: int, *, actor: str, reason: str) -> DecisionView:
        """Refuse a held order or an open challenge."""
        async with self._db.transaction() as session:
            return views.decision_view(await risk.reject(session, decision_id, actor=actor, reason=reason))

    # --- holds in the operators' chat ----------------------------------------------------------

    async def open_hold(self, decision_id: int) -> DecisionView:
        """A hold still waiting for an operator (``NotFound`` otherwise)."""
        async with self._db.read() as session:
            return views.decision_view(await holds.open_hold(session, decision_id))

    async def approve_hold(self, decision_id: int, *, actor: str) -> DecisionView:
        """Approve an open hold from the chat; its buyer is told."""
        async with self._db.transaction() as session:
            decision = await holds.open_hold(session, decision_id)
            decision = await risk.approve(session, decision.id, actor=actor)
            await holds.tell_buyer(session, decision, "risk_hold_approved")
            approved = views.decision_view(decision)
        self._wiring.outbox_wakeup.set()
        return approved

    async def reject_hold(self, decision_id: int, *, actor: str, reason: str) -> DecisionView:
        """Reject an open hold from the chat with a reason written for the buyer, who is told
        (``InvalidInput`` with field ``reason``: none, or too long)."""
        reason = holds.reason_for_buyer(reason)
        async with self._db.transaction() as session:
            decision = await holds.open_hold(session, decision_id)
            decision = await risk.reject(session, decision.id, actor=actor, reason=reason)
            await holds.tell_buyer(session, decision, "risk_hold_rejected")
            rejected = views.decision_view(decision)
        self._wiring.outbox_wakeup.set()
        return rejected
