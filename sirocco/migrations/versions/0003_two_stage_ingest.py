"""two-stage ingestion: staged_chunks; documents.lease_until

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

Mirrors ``ingest.models.StagedChunks`` and ``Document.lease_until``: the parse
task stages a document's chunks in SQL, the embed task claims documents with
a lease and stores them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "staged_chunks",
        sa.Column("document_id", sa.String(length=36), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=True),
        sa.Column("chunk_count", sa.Integer(), nullable=False),
        sa.Column("chunks", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("mime_type", sa.String(length=128), nullable=True),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", _TZ, nullable=False),
        sa.PrimaryKeyConstraint("document_id"),
    )
    with op.batch_alter_table("documents") as batch:
        batch.add_column(sa.Column("lease_until", _TZ, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("documents") as batch:
        batch.drop_column("lease_until")
    op.drop_table("staged_chunks")
