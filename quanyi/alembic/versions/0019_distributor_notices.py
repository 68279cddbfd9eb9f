"""distributor notices: customers' order digests (each order told once), withdrawals marked paid

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 22:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import quanyi.core.models

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "distributor_digests",
        sa.Column("id", ID, nullable=False),
        sa.Column("distributor_id", ID, nullable=False),
        sa.Column("created_at", quanyi.core.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["distributor_id"], ["distributors.id"], name=op.f("fk_distributor_digests_distributor_id_distributors")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_distributor_digests")),
    )
    with op.batch_alter_table("distributor_digests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_distributor_digests_distributor_id"), ["distributor_id"], unique=False)
    op.create_table(
        "digested_orders",
        sa.Column("order_id", ID, nullable=False),
        sa.Column("digest_id", ID, nullable=False),
        sa.ForeignKeyConstraint(
            ["digest_id"], ["distributor_digests.id"], name=op.f("fk_digested_orders_digest_id_distributor_digests")
        ),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"], name=op.f("fk_digested_orders_order_id_orders")),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_digested_orders")),
    )
    with op.batch_alter_table("digested_orders", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_digested_orders_digest_id"), ["digest_id"], unique=False)
    with op.batch_alter_table("withdrawals", schema=None) as batch_op:
        batch_op.add_column(sa.Column("paid_at", quanyi.core.models.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("paid_by", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("withdrawals", schema=None) as batch_op:
        batch_op.drop_column("paid_by")
        batch_op.drop_column("paid_at")
    with op.batch_alter_table("digested_orders", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_digested_orders_digest_id"))
    op.drop_table("digested_orders")
    with op.batch_alter_table("distributor_digests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_distributor_digests_distributor_id"))
    op.drop_table("distributor_digests")
