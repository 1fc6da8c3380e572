"""document and source ACLs and tags

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23

Mirrors ``Document.acl``/``tags`` and ``Source.acl``/``tags`` (JSON lists; NULL
means everyone in the tenant / no tags).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("documents", "sources"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("acl", sa.JSON(), nullable=True))
            batch.add_column(sa.Column("tags", sa.JSON(), nullable=True))


def downgrade() -> None:
    for table in ("sources", "documents"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("tags")
            batch.drop_column("acl")
