"""order messages: the chat messages showing a pending order's Pay and Cancel buttons, and the
order's pay link (shown again from /orders)

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 22:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import quanyi.core.models

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "order_messages",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("order_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", quanyi.core.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"], name=op.f("fk_order_messages_order_id_orders")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_messages")),
        sa.UniqueConstraint("chat_id", "message_id", name=op.f("uq_order_messages_chat_id")),
    )
    with op.batch_alter_table("order_messages", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_order_messages_order_id"), ["order_id"], unique=False)
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("payment_url", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_column("payment_url")
    with op.batch_alter_table("order_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_order_messages_order_id"))
    op.drop_table("order_messages")
