"""trace model: trace fields, spans, messages, tool calls, retrieved chunks,
tool definitions, feedback, exports

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23

Mirrors ``traces.models``. Works on SQLite (batch mode for the new columns of
``traces``) and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TZ = sa.DateTime(timezone=True)


def _trace_fk() -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["trace_id"], ["traces.id"], ondelete="CASCADE")


def upgrade() -> None:
    op.create_table(
        "tool_definitions",
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", _TZ, nullable=False),
        sa.Column("tools", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("hash"),
    )
    with op.batch_alter_table("traces") as batch:
        batch.add_column(sa.Column("user_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("app_release", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("prompt_template", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("prompt_template_version", sa.String(length=64),
                                   nullable=True))
        batch.add_column(sa.Column("total_tokens", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("finish_reason", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("consent", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
        batch.add_column(sa.Column("tool_definitions_hash", sa.String(length=64),
                                   nullable=True))
        batch.create_foreign_key("fk_traces_tool_definitions_hash", "tool_definitions",
                                 ["tool_definitions_hash"], ["hash"])
        batch.create_index("ix_traces_user_hash", ["user_hash"])
        batch.create_index("ix_traces_model", ["model"])
        batch.create_index("ix_traces_status", ["status"])

    op.create_table(
        "trace_spans",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("trace_id", sa.String(length=36), nullable=False),
        sa.Column("parent_id", sa.String(length=36), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("started_at", _TZ, nullable=False),
        sa.Column("ended_at", _TZ, nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attributes", sa.JSON(), nullable=False),
        _trace_fk(),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_trace_spans_trace_id", "trace_spans", ["trace_id"])
    op.create_table(
        "trace_messages",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("trace_id", sa.String(length=36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("tool_call_id", sa.String(length=64), nullable=True),
        sa.Column("tool_calls", sa.JSON(), nullable=True),
        sa.Column("is_output", sa.Boolean(), nullable=False, server_default=sa.false()),
        _trace_fk(),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("trace_id", "position", name="uq_trace_messages_pos"),
    )
    op.create_index("ix_trace_messages_trace_id", "trace_messages", ["trace_id"])
    op.create_table(
        "trace_tool_calls",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("trace_id", sa.String(length=36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("arguments", sa.Text(), nullable=False),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        _trace_fk(),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_trace_tool_calls_trace_id", "trace_tool_calls", ["trace_id"])
    op.create_table(
        "trace_retrieved_chunks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("trace_id", sa.String(length=36), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("chunk_id", sa.String(length=64), nullable=False),
        sa.Column("doc_id", sa.String(length=64), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("rerank_score", sa.Float(), nullable=True),
        sa.Column("in_prompt", sa.Boolean(), nullable=False),
        sa.Column("cited", sa.Boolean(), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        _trace_fk(),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_trace_retrieved_chunks_trace_id", "trace_retrieved_chunks",
                    ["trace_id"])
    op.create_table(
        "feedback",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("trace_id", sa.String(length=36), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("created_at", _TZ, nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("author_hash", sa.String(length=64), nullable=True),
        sa.Column("thumbs", sa.Integer(), nullable=True),
        sa.Column("rating", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(length=255), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("correction", sa.Text(), nullable=True),
        sa.Column("review_status", sa.String(length=16), nullable=False),
        sa.Column("reviewed_by", sa.String(length=64), nullable=True),
        sa.Column("reviewed_at", _TZ, nullable=True),
        sa.Column("review_note", sa.Text(), nullable=True),
        _trace_fk(),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_feedback_trace_id", "feedback", ["trace_id"])
    op.create_index("ix_feedback_tenant", "feedback", ["tenant"])
    op.create_table(
        "exports",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("created_at", _TZ, nullable=False),
        sa.Column("finished_at", _TZ, nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("format", sa.String(length=32), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=True),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_exports_tenant", "exports", ["tenant"])


def downgrade() -> None:
    op.drop_index("ix_exports_tenant", table_name="exports")
    op.drop_table("exports")
    op.drop_index("ix_feedback_tenant", table_name="feedback")
    op.drop_index("ix_feedback_trace_id", table_name="feedback")
    op.drop_table("feedback")
    for table in ("trace_retrieved_chunks", "trace_tool_calls", "trace_messages",
                  "trace_spans"):
        op.drop_index(f"ix_{table}_trace_id", table_name=table)
        op.drop_table(table)
    with op.batch_alter_table("traces") as batch:
        batch.drop_index("ix_traces_status")
        batch.drop_index("ix_traces_model")
        batch.drop_index("ix_traces_user_hash")
        batch.drop_constraint("fk_traces_tool_definitions_hash", type_="foreignkey")
        for column in ("tool_definitions_hash", "consent", "finish_reason", "total_tokens",
                       "prompt_template_version", "prompt_template", "app_release",
                       "user_hash"):
            batch.drop_column(column)
    op.drop_table("tool_definitions")
