"""The platform's use cases: the audit trail, the outbox, keys and health.

Each method is one use case: it takes plain values, opens and commits its own transaction and
returns plain values or frozen dataclasses (docs/architecture.md)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, timedelta
from typing import TYPE_CHECKING

from quanyi.core.models import utcnow
from quanyi.core.platform import (
    audit,
    audit_chain,
    audit_pages,
    audit_views,
    demo,
    outbox,
    outbox_views,
    readiness,
    rotation,
)
from quanyi.core.risk import rules as risk_rules

if TYPE_CHECKING:
    from quanyi.core.platform import outbox_backlog
    from quanyi.core.wiring import Wiring


class PlatformService:
    def __init__(self, wiring: Wiring) -> None:
        self._wiring = wiring
        self._db = wiring.db

    # == audit trail, keys (helper: partner and audit doors) ==

    async def audit_trail(
        self,
        *,
        actor: str | None = None,
        object_type: str | None = None,
        object_id: str | None = None,
        day: date | None = None,
        limit: int = 50,
    ) -> list[audit_views.TrailRecord]:
        """The latest records, newest first; ``day`` is a day in the operator's time zone."""
        async with self._db.read() as session:
            return await audit_views.trail(
                session,
                actor=actor,
                object_type=object_type,
                object_id=object_id,
                day=day,
                tz=self._wiring.settings.timezone,
                currency=self._wiring.settings.currency,
                limit=limit,
            )

    async def verify_audit(self, anchors: Sequence[audit_views.Anchor] = ()) -> audit_views.VerifyReport:
        """The chain checked against the anchors file and any anchors an operator gives."""
        return await audit_chain.verify_anchored(self._db, self._wiring.settings.data_dir, anchors)

    async def anchor_audit(self) -> audit_views.Pinned | None:
        """Pin the chain's head in the anchors file and in each operator's chat; None when it is empty."""
        settings = self._wiring.settings
        pinned = await audit_chain.anchor(self._db, settings.data_dir, settings.admin_id_list)
        if pinned is None:
            return None
        path = audit_chain.anchors_path(settings.data_dir)
        return audit_views.Pinned(pinned.seq, pinned.hash, path, len(settings.admin_id_list))

    async def key_status(self) -> audit_views.KeyStatus:
        """Which encryption keys exist, which is active and how many rows use each (never a key)."""
        settings, keyring = self._wiring.settings, self._wiring.keyring
        usage = await rotation.key_usage(self._db)
        rows = []
        for key_id in sorted({*keyring.enc_keys, *usage}):
            u = usage.get(key_id, rotation.KeyUsage(key_id, 0, 0))
            state = "active" if key_id == keyring.active else ("loaded" if key_id in keyring.enc_keys else "MISSING")
            rows.append(audit_views.KeyRow(key_id, state, u.card_keys, u.links, u.api_secrets))
        return audit_views.KeyStatus(
            from_env=bool(settings.card_keys or settings.lookup_key),
            active=keyring.active,
            keys=tuple(rows),
            unfinished=any(k != keyring.active and u.rows for k, u in usage.items()),
        )

    async def rotate_keys(
        self,
        *,
        batch: int = 500,
        resume: bool = False,
        max_batches: int | None = None,
        on_progress: rotation.Progress | None = None,
        on_start: Callable[[str | None, str, int], None] | None = None,
    ) -> audit_views.RotateOutcome:
        """A new active key (key file), every row re-encrypted under it, idle keys retired (``rotation.rotate``)."""
        return await rotation.rotate(
            self._db,
            self._wiring.settings,
            batch=batch,
            resume=resume,
            max_batches=max_batches,
            on_progress=on_progress,
            on_start=on_start,
        )

    async def record(self, entry: audit.Entry) -> None:
        """One record on the audit trail in its own transaction: a command or a button press, as it came."""
        await audit.append(self._db, entry)

    # == outbox delivery, health (helper: outbox sender) ==

    async def claim_outbox(self, *, limit: int, lease: timedelta) -> list[outbox.Outgoing]:
        """Due messages, each leased to the caller for ``lease`` so that no other sender takes it."""
        return await outbox.claim_due(self._db, limit=limit, lease=lease)

    async def outbox_sent(self, message_id: int) -> None:
        """Telegram accepted the whole message."""
        await outbox.mark_sent(self._db, message_id)

    async def outbox_part_sent(self, message_id: int, parts_sent: int) -> None:
        """Telegram accepted the first ``parts_sent`` parts: a retry resumes after them."""
        await outbox.mark_part_sent(self._db, message_id, parts_sent)

    async def outbox_retry(
        self, message_id: int, *, after: timedelta, error: str | None, count_attempt: bool = True
    ) -> None:
        """Send again ``after`` from now; ``count_attempt=False`` when it was only too soon for its chat."""
        at = utcnow() + after
        await outbox.reschedule(self._db, message_id, at=at, error=error, count_attempt=count_attempt)

    async def outbox_dead(self, message_id: int, error: str) -> None:
        """Telegram will never take it (the chat blocked the bot or is gone)."""
        await outbox.mark_dead(self._db, message_id, error)

    async def outbox_order(self, order_id: int, *, payment_id: int | None = None) -> outbox_views.OrderFacts:
        """The order a message is about (and the payment it names), as the message shows them."""
        async with self._db.read() as session:
            return await outbox_views.order_facts(session, order_id, payment_id=payment_id)

    async def outbox_delivery(
        self, order_id: int, *, purpose: str = "delivery", links: bool = True
    ) -> outbox_views.Delivery:
        """A delivered order's codes (and links), decrypted to be sent now."""
        async with self._db.transaction() as session:  # a write: each decryption goes on the audit trail
            return await outbox_views.delivery(session, self._wiring.keyring, order_id, purpose=purpose, links=links)

    async def alive(self) -> bool:
        """The liveness probe: the database answers a query."""
        try:
            await self._db.ping()
        except Exception:  # an unreachable database is an answer here, not an error
            return False
        return True

    async def unready_reason(self) -> str | None:
        """None when the database takes a write, the schema is current and the keyring matches;
        else why not, in words (``readiness.unready_reason``)."""
        return await readiness.unready_reason(self._db, self._wiring.keyring)

    async def load_demo(self) -> list[str]:
        """The demo catalogue with stock; the SKUs added (none when already present)."""
        return await demo.load_demo(self._db, self._wiring.keyring)

    async def prepare_to_serve(self) -> None:
        """Once before a server starts: a database upgraded before risk rules existed gets them."""
        async with self._db.transaction() as session:
            await risk_rules.ensure_defaults(session)

    # == the web console's audit page (helper: console) ==

    async def audit_page(
        self,
        *,
        actor: str | None = None,
        object_type: str | None = None,
        object_id: str | None = None,
        day: date | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> audit_pages.TrailPage:
        """A page of the trail, newest first, older than record ``before``; ``day`` in the operator's time zone."""
        async with self._db.read() as session:
            return await audit_pages.trail_page(
                session,
                actor=actor,
                object_type=object_type,
                object_id=object_id,
                day=day,
                before=before,
                tz=self._wiring.settings.timezone,
                currency=self._wiring.settings.currency,
                limit=limit,
            )

    # == the console's outbox page ==

    async def outbox_backlog(self, *, limit: int = 200) -> outbox_backlog.Backlog:
        """Chat messages not sent yet and those given up on, oldest first (never their payload)."""
        from quanyi.core.platform import outbox_backlog

        async with self._db.read() as session:
            return await outbox_backlog.backlog(session, limit=limit)
