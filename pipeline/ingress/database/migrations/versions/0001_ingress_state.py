"""The ingress's state: order status, projection offsets, idempotency keys.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None


def upgrade() -> None:
    """Create the three tables."""
    op.create_table(
        "order_status",
        sa.Column("order_id", sa.String(255), primary_key=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("event_id", sa.String(255)),
        sa.Column("sequence", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(64)),
        sa.Column("reason", sa.Text),
        sa.Column("stage", sa.String(64)),
        sa.Column("updated_at_ms", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "projection_offsets",
        sa.Column("topic", sa.String(255), primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("applied_offset", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("idempotency_key", sa.Text, primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(32), nullable=False),
        sa.Column("event_id", sa.String(255)),
        sa.Column("lease_until_ms", sa.BigInteger, nullable=False),
        sa.Column("expires_at_ms", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_idempotency_keys_expires_at_ms", "idempotency_keys", ["expires_at_ms"])


def downgrade() -> None:
    """Drop them."""
    op.drop_table("idempotency_keys")
    op.drop_table("order_status")
    op.drop_table("projection_offsets")
