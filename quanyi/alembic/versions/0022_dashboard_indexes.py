"""indexes for the console's dashboard: payments by outcome, refunds by completion, pool levels,
open risk decisions

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-08 02:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.create_index("ix_payments_outcome", ["outcome"], unique=False)
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.create_index("ix_refunds_completed_at", ["completed_at"], unique=False)
    with op.batch_alter_table("stock_items", schema=None) as batch_op:
        batch_op.create_index("ix_stock_items_levels", ["product_id", "status", "expires_at"], unique=False)
    with op.batch_alter_table("risk_decisions", schema=None) as batch_op:
        batch_op.create_index("ix_risk_decisions_open", ["status", "action"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("risk_decisions", schema=None) as batch_op:
        batch_op.drop_index("ix_risk_decisions_open")
    with op.batch_alter_table("stock_items", schema=None) as batch_op:
        batch_op.drop_index("ix_stock_items_levels")
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.drop_index("ix_refunds_completed_at")
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_index("ix_payments_outcome")
