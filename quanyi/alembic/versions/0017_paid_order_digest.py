"""paid order notices: when operators were told an order was paid

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 22:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import quanyi.core.models

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("operator_noticed_at", quanyi.core.models.UTCDateTime(), nullable=True))
        batch_op.create_index("ix_orders_operator_noticed", ["operator_noticed_at", "paid_at"], unique=False)
    # Orders paid before this revision are not news: operators are told of those paid from now on.
    op.execute("UPDATE orders SET operator_noticed_at = paid_at WHERE paid_at IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index("ix_orders_operator_noticed")
        batch_op.drop_column("operator_noticed_at")
