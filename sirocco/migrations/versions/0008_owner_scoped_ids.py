"""owner-scoped conversation ids; one feedback per author, kind and trace

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05

Conversations: the client's id moves to ``client_id``, unique per (tenant,
user); the ``id`` column stays the row key that turns point to (existing rows
keep their id as both). Feedback: earlier duplicates of one author's
feedback of one kind on one trace are reduced to the newest before the unique
constraint is added. Works on SQLite (batch mode) and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("conversations", sa.Column("client_id", sa.String(length=64), nullable=True))
    op.execute("UPDATE conversations SET client_id = id")
    with op.batch_alter_table("conversations") as batch:
        batch.alter_column("client_id", existing_type=sa.String(length=64), nullable=False)
        batch.create_unique_constraint("uq_conversations_owner_id",
                                       ["tenant", "user", "client_id"])
    # Keep the newest feedback of each (trace, source, author); NULL authors
    # (auth off) are distinct under the constraint and stay.
    op.execute("""
        DELETE FROM feedback WHERE author_hash IS NOT NULL AND EXISTS (
            SELECT 1 FROM feedback AS newer
            WHERE newer.trace_id = feedback.trace_id AND newer.source = feedback.source
              AND newer.author_hash = feedback.author_hash
              AND (newer.created_at > feedback.created_at
                   OR (newer.created_at = feedback.created_at AND newer.id > feedback.id)))
    """)
    with op.batch_alter_table("feedback") as batch:
        batch.create_unique_constraint("uq_feedback_author",
                                       ["trace_id", "source", "author_hash"])


def downgrade() -> None:
    with op.batch_alter_table("feedback") as batch:
        batch.drop_constraint("uq_feedback_author", type_="unique")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_constraint("uq_conversations_owner_id", type_="unique")
        batch.drop_column("client_id")
