"""Tool calls with side effects that wait for the user's confirmation.

The answering loop never runs a tool marked ``side_effects`` (a company HTTP
tool that opens a ticket, sends a mail ...): a document the model read could
have asked for it. The call ends the answer as a ``tool_pending`` event;
``PendingCalls.remember`` stores it for the caller (tenant, user) and gives it
a ``pending_id``; the user then confirms (the tool runs with the user's
permissions, checked again) or rejects it through
``POST /api/tool-calls/{pending_id}``. Another caller gets "not found". A call
not decided within ``PENDING_TTL`` expires.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator
from sqlalchemy import DateTime, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from assistant.schemas import AnswerEvent
from llm.tools import ToolResult
from sirocco.db import Base, session_scope, utcnow
from sirocco.errors import InvalidInputError, NotFoundError
from sirocco.principal import Principal
from sirocco.types import ToolCall

logger = logging.getLogger(__name__)

PENDING_TTL = timedelta(hours=24)
PendingStatus = Literal["pending", "done", "failed", "rejected", "expired"]


class PendingToolCall(Base):
    __tablename__ = "pending_tool_calls"

    id: Mapped[str] = mapped_column(String(36), primary_key=True,
                                    default=lambda: str(uuid.uuid4()))
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    user: Mapped[str] = mapped_column(String(255), index=True, default="")
    trace_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    call_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64))
    arguments: Mapped[str] = mapped_column(Text, default="{}")
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    result: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class PendingCallPublic(BaseModel):
    """A tool call waiting for (or given) the user's decision."""

    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [{
        "id": "7a1c...", "trace_id": "0c6f...", "name": "create_ticket",
        "arguments": '{"title": "Printer on floor 3"}', "status": "done",
        "result": '{"ticket": "IT-1042"}', "created_at": "2026-12-05T10:00:00Z",
        "decided_at": "2026-12-05T10:00:09Z"}]})

    id: str
    trace_id: str | None
    name: str
    arguments: str
    status: str
    result: str | None
    created_at: datetime
    decided_at: datetime | None

    @field_validator("created_at", "decided_at")
    @classmethod
    def _assume_utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _utc(value)


#: ``run(call) -> ToolResult``: the tool run with the deciding user's permissions.
RunTool = Callable[[ToolCall], Awaitable[ToolResult]]


class PendingCalls:
    """Caller-scoped storage and decisions of pending tool calls (synchronous
    storage methods: call them in a thread from async code)."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory

    def _owned(self, session: Session, pending_id: str, owner: Principal) -> PendingToolCall:
        row = session.get(PendingToolCall, pending_id)
        if row is None or row.tenant != owner.tenant or row.user != (owner.user or ""):
            raise NotFoundError(f"pending tool call {pending_id!r} not found")
        if row.status == "pending" and utcnow() - _utc(row.created_at) > PENDING_TTL:
            row.status, row.decided_at = "expired", utcnow()
        return row

    def add(self, calls: list[dict[str, Any]], *, owner: Principal,
            trace_id: str | None) -> list[str]:
        """Store ``calls`` ({"id", "name", "arguments"}) for the caller; their ids."""
        with session_scope(self._session_factory) as session:
            rows = [PendingToolCall(tenant=owner.tenant, user=owner.user or "", trace_id=trace_id,
                                    call_id=c["id"], name=c["name"],
                                    arguments=c.get("arguments") or "{}") for c in calls]
            session.add_all(rows)
            session.flush()
            return [r.id for r in rows]

    def list(self, *, owner: Principal,
             status: str | None = "pending") -> list[PendingCallPublic]:
        """The caller's calls (pending ones by default), newest first."""
        stmt = (select(PendingToolCall).where(PendingToolCall.tenant == owner.tenant,
                                              PendingToolCall.user == (owner.user or ""))
                .order_by(PendingToolCall.created_at.desc()).limit(100))
        if status is not None:
            stmt = stmt.where(PendingToolCall.status == status)
        with session_scope(self._session_factory) as session:
            return [PendingCallPublic.model_validate(r) for r in session.scalars(stmt)]

    async def decide(self, pending_id: str, *, approve: bool, owner: Principal,
                     run: RunTool) -> PendingCallPublic:
        """Confirm (run the tool now, through ``run``) or reject one of the
        caller's pending calls; ``InvalidInputError`` once it was decided."""
        def claim() -> PendingToolCall | None:
            with session_scope(self._session_factory) as session:
                row = self._owned(session, pending_id, owner)
                if row.status != "pending":
                    raise InvalidInputError(
                        f"pending tool call {pending_id!r} is {row.status} already")
                # Claimed before running: a second confirmation cannot run it twice.
                row.status, row.decided_at = ("running" if approve else "rejected"), utcnow()
                session.flush()
                session.expunge(row)
                return row if approve else None

        row = await asyncio.to_thread(claim)
        if row is not None:
            result = await run(ToolCall(id=row.call_id, name=row.name, arguments=row.arguments))
            await asyncio.to_thread(self._finish, pending_id, result)
        return await asyncio.to_thread(self._public, pending_id)

    def _finish(self, pending_id: str, result: ToolResult) -> None:
        with session_scope(self._session_factory) as session:
            row = session.get(PendingToolCall, pending_id)
            if row is not None:
                row.status = "failed" if result.is_error else "done"
                row.result = result.content

    def _public(self, pending_id: str) -> PendingCallPublic:
        with session_scope(self._session_factory) as session:
            return PendingCallPublic.model_validate(session.get(PendingToolCall, pending_id))

    async def remember(self, events: AsyncGenerator[AnswerEvent, None], *,
                       owner: Principal) -> AsyncGenerator[AnswerEvent, None]:
        """Pass ``events`` through, storing each ``tool_pending`` call for the
        caller and adding its ``pending_id``; the trace id comes with ``done``."""
        stored: list[str] = []
        async with aclosing(events):
            async for event in events:
                if event.type == "tool_pending" and event.tool_calls:
                    ids = await asyncio.to_thread(self.add, event.tool_calls, owner=owner,
                                                  trace_id=None)
                    stored += ids
                    event = event.model_copy(update={"tool_calls": [
                        {**c, "pending_id": i} for c, i in zip(event.tool_calls, ids,
                                                               strict=True)]})
                elif event.type == "done" and stored:
                    await asyncio.to_thread(self._link_trace, stored, event.trace_id)
                yield event

    def _link_trace(self, ids: builtins.list[str], trace_id: str | None) -> None:
        with session_scope(self._session_factory) as session:
            for row in session.scalars(select(PendingToolCall)
                                       .where(PendingToolCall.id.in_(ids))):
                row.trace_id = trace_id
