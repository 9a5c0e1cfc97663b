"""Order owners: the customer who placed each order.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None


def upgrade() -> None:
    """Create ``order_owners``."""
    op.create_table(
        "order_owners",
        sa.Column("order_id", sa.String(255), primary_key=True),
        sa.Column("customer_id", sa.String(255), nullable=False),
    )


def downgrade() -> None:
    """Drop it."""
    op.drop_table("order_owners")
