"""pending tool calls: calls of tools with side effects waiting for their user

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05

Mirrors ``assistant.pending``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "pending_tool_calls",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("user", sa.String(length=255), nullable=False),
        sa.Column("trace_id", sa.String(length=36), nullable=True),
        sa.Column("call_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("arguments", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("created_at", _TZ, nullable=False),
        sa.Column("decided_at", _TZ, nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_pending_tool_calls_tenant", "pending_tool_calls", ["tenant"])
    op.create_index("ix_pending_tool_calls_user", "pending_tool_calls", ["user"])
    op.create_index("ix_pending_tool_calls_status", "pending_tool_calls", ["status"])


def downgrade() -> None:
    op.drop_index("ix_pending_tool_calls_status", table_name="pending_tool_calls")
    op.drop_index("ix_pending_tool_calls_user", table_name="pending_tool_calls")
    op.drop_index("ix_pending_tool_calls_tenant", table_name="pending_tool_calls")
    op.drop_table("pending_tool_calls")
