"""sources and jobs: sources, jobs, job_items; documents.source_id, duplicate_of

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30

Mirrors ``ingest.models`` (``Source``, ``Job``, ``JobItem`` and the new
``Document`` columns). Defaults stay client-side, as in 0001. SQLite adds the
foreign key through batch mode (the table is recreated).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sources",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("created_at", _TZ, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant", "name", name="uq_sources_tenant_name"),
    )
    op.create_index("ix_sources_tenant", "sources", ["tenant"])

    with op.batch_alter_table("documents") as batch:
        batch.add_column(sa.Column("source_id", sa.String(length=36), nullable=True))
        batch.add_column(sa.Column("duplicate_of", sa.String(length=36), nullable=True))
        batch.create_foreign_key("fk_documents_source_id_sources", "sources",
                                 ["source_id"], ["id"])
        batch.create_index("ix_documents_source_id", ["source_id"])
        batch.create_index("ix_documents_duplicate_of", ["duplicate_of"])

    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("source_id", sa.String(length=36), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        *(sa.Column(n, sa.Integer(), nullable=False)
          for n in ("total", "done", "failed", "skipped", "cancelled", "removed")),
        sa.Column("created_at", _TZ, nullable=False),
        sa.Column("started_at", _TZ, nullable=True),
        sa.Column("finished_at", _TZ, nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_jobs_tenant", "jobs", ["tenant"])
    op.create_index("ix_jobs_source_id", "jobs", ["source_id"])
    op.create_index("ix_jobs_state", "jobs", ["state"])

    op.create_table(
        "job_items",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("document_id", sa.String(length=36), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("updated_at", _TZ, nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_job_items_job_id_jobs"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "document_id", name="uq_job_items_job_doc"),
    )
    op.create_index("ix_job_items_job_id", "job_items", ["job_id"])
    op.create_index("ix_job_items_document_id", "job_items", ["document_id"])


def downgrade() -> None:
    op.drop_index("ix_job_items_document_id", table_name="job_items")
    op.drop_index("ix_job_items_job_id", table_name="job_items")
    op.drop_table("job_items")
    op.drop_index("ix_jobs_state", table_name="jobs")
    op.drop_index("ix_jobs_source_id", table_name="jobs")
    op.drop_index("ix_jobs_tenant", table_name="jobs")
    op.drop_table("jobs")
    with op.batch_alter_table("documents") as batch:
        batch.drop_index("ix_documents_duplicate_of")
        batch.drop_index("ix_documents_source_id")
        batch.drop_constraint("fk_documents_source_id_sources", type_="foreignkey")
        batch.drop_column("duplicate_of")
        batch.drop_column("source_id")
    op.drop_index("ix_sources_tenant", table_name="sources")
    op.drop_table("sources")
