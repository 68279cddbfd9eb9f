"""manual fulfilment: a product kind fulfilled by hand, its deadline, and the queue of tasks

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 22:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import quanyi.core.models

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "manual_tasks",
        sa.Column("id", ID, nullable=False),
        sa.Column("order_id", ID, nullable=False),
        sa.Column("order_line_id", ID, nullable=False),
        sa.Column("account", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("deadline_at", quanyi.core.models.UTCDateTime(), nullable=False),
        sa.Column("taken_by", sa.BigInteger(), nullable=True),
        sa.Column("taken_at", quanyi.core.models.UTCDateTime(), nullable=True),
        sa.Column("finished_at", quanyi.core.models.UTCDateTime(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("reason", sa.String(length=255), nullable=True),
        sa.Column("resolution", sa.String(length=32), nullable=True),
        sa.Column("claimed_until", quanyi.core.models.UTCDateTime(), nullable=True),
        sa.Column("created_at", quanyi.core.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"], name=op.f("fk_manual_tasks_order_id_orders")),
        sa.ForeignKeyConstraint(
            ["order_line_id"], ["order_lines.id"], name=op.f("fk_manual_tasks_order_line_id_order_lines")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_manual_tasks")),
        sa.UniqueConstraint("order_line_id", name=op.f("uq_manual_tasks_order_line_id")),
    )
    with op.batch_alter_table("manual_tasks", schema=None) as batch_op:
        batch_op.create_index("ix_manual_tasks_due", ["status", "deadline_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_manual_tasks_order_id"), ["order_id"], unique=False)
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.add_column(sa.Column("manual_deadline_minutes", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.drop_column("manual_deadline_minutes")
    op.drop_table("manual_tasks")
