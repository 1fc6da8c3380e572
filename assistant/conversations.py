"""Conversations of the native chat: stored turns, owned by one caller.

A conversation belongs to the (tenant, user) that started it, and its id is
unique per owner: every read, write and delete is scoped to that owner, and
another caller naming the same id reaches a conversation of its own (or "not
found"), never learning that the id is taken. The
native ``/api/chat`` loads the last turns as history for a follow-up
(``open``) and stores the new turn once the answer is done (``remember``);
clients of ``/v1`` send their own history instead.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator
from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship, sessionmaker

from assistant.schemas import AnswerEvent
from sirocco.db import Base, session_scope, utcnow
from sirocco.errors import InvalidInputError, NotFoundError
from sirocco.principal import Principal
from sirocco.types import ChatMessage
from traces.models import Trace

logger = logging.getLogger(__name__)

TITLE_CHARS = 120


class Conversation(Base):
    """A conversation: its id is the client's (``conversation_id``), unique per
    owner (tenant, user), so two callers choosing the same id get two
    conversations and learn nothing of each other's."""

    __tablename__ = "conversations"
    __table_args__ = (UniqueConstraint("tenant", "user", "client_id",
                                       name="uq_conversations_owner_id"),)

    #: Internal row key (column "id"; turns point to it). Rows made before
    #: ids were scoped per owner keep their client id here.
    key: Mapped[str] = mapped_column("id", String(64), primary_key=True,
                                     default=lambda: str(uuid.uuid4()))
    #: Chosen by the client (``conversation_id``) or a new UUID.
    id: Mapped[str] = mapped_column("client_id", String(64))
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    #: The owner within the tenant; "" for callers without a user (auth off).
    user: Mapped[str] = mapped_column(String(255), index=True, default="")
    title: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                 index=True)
    turns: Mapped[list[ConversationTurn]] = relationship(
        cascade="all, delete-orphan", order_by="ConversationTurn.position",
        passive_deletes=True)


class ConversationTurn(Base):
    """One question and the answer given to it."""

    __tablename__ = "conversation_turns"

    id: Mapped[str] = mapped_column(String(36), primary_key=True,
                                    default=lambda: str(uuid.uuid4()))
    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text, default="")
    citations: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    trace_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class TurnPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [{
        "position": 0, "question": "Which class do I fly?",
        "answer": "Economy for flights under six hours [1].",
        "citations": [{"n": 1, "doc_id": "3f0c...", "title": "Travel policy",
                       "supported": True}],
        "trace_id": "0c6f...", "created_at": "2026-11-23T10:00:04Z"}]})

    position: int
    question: str
    answer: str
    citations: list[dict[str, Any]]
    trace_id: str | None
    created_at: datetime

    @field_validator("created_at")
    @classmethod
    def _assume_utc(cls, value: datetime) -> datetime:
        return _utc(value)


class ConversationSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [{
        "id": "5b1d3c0e-8f2a-4c55-9a77-0d2f1e3b4a69", "title": "Which class do I fly?",
        "created_at": "2026-11-23T10:00:00Z", "updated_at": "2026-11-23T10:02:00Z",
        "turn_count": 2}]})

    id: str
    title: str
    created_at: datetime
    updated_at: datetime
    turn_count: int = 0

    @field_validator("created_at", "updated_at")
    @classmethod
    def _assume_utc(cls, value: datetime) -> datetime:
        return _utc(value)


class ConversationDetail(ConversationSummary):
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [{
        "id": "5b1d3c0e-8f2a-4c55-9a77-0d2f1e3b4a69", "title": "Which class do I fly?",
        "created_at": "2026-11-23T10:00:00Z", "updated_at": "2026-11-23T10:00:04Z",
        "turn_count": 1, "turns": [{
            "position": 0, "question": "Which class do I fly?",
            "answer": "Economy for flights under six hours [1].",
            "citations": [{"n": 1, "doc_id": "3f0c...", "title": "Travel policy",
                           "supported": True}],
            "trace_id": "0c6f...", "created_at": "2026-11-23T10:00:04Z"}]}]})

    turns: list[TurnPublic] = []


class Conversations:
    """Caller-scoped conversation storage over ``session_factory`` (synchronous
    methods: call them in a thread from async code, as ``remember`` does)."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory

    @staticmethod
    def _find(session: Session, conversation_id: str,
              owner: Principal) -> Conversation | None:
        return session.scalar(select(Conversation).where(
            Conversation.tenant == owner.tenant, Conversation.user == (owner.user or ""),
            Conversation.id == conversation_id))

    def _owned(self, session: Session, conversation_id: str,
               owner: Principal) -> Conversation:
        conv = self._find(session, conversation_id, owner)
        if conv is None:
            raise NotFoundError(f"conversation {conversation_id!r} not found")
        return conv

    def list(self, *, owner: Principal, limit: int = 50,
             offset: int = 0) -> list[ConversationSummary]:
        """The caller's conversations, most recently active first."""
        counts = (select(ConversationTurn.conversation_id,
                         func.count().label("n")).group_by(ConversationTurn.conversation_id)
                  .subquery())
        query = (select(Conversation, func.coalesce(counts.c.n, 0))
                 .outerjoin(counts, counts.c.conversation_id == Conversation.key)
                 .where(Conversation.tenant == owner.tenant,
                        Conversation.user == (owner.user or ""))
                 .order_by(Conversation.updated_at.desc(), Conversation.id)
                 .limit(limit).offset(offset))
        with session_scope(self._session_factory) as session:
            return [ConversationSummary.model_validate(conv).model_copy(
                update={"turn_count": n}) for conv, n in session.execute(query)]

    def get(self, conversation_id: str, *, owner: Principal) -> ConversationDetail:
        """One of the caller's conversations with its turns; ``NotFoundError`` otherwise."""
        with session_scope(self._session_factory) as session:
            conv = self._owned(session, conversation_id, owner)
            detail = ConversationDetail.model_validate(conv)
            return detail.model_copy(update={"turn_count": len(detail.turns)})

    def rename(self, conversation_id: str, *, owner: Principal,
               title: str) -> ConversationSummary:
        """Give one of the caller's conversations a new title (whitespace collapsed,
        at most ``TITLE_CHARS``); ``InvalidInputError`` for a blank one,
        ``NotFoundError`` for anyone else's."""
        title = " ".join(title.split())[:TITLE_CHARS]
        if not title:
            raise InvalidInputError("the title is blank; give it some text", param="title")
        with session_scope(self._session_factory) as session:
            conv = self._owned(session, conversation_id, owner)
            conv.title = title
            session.flush()
            return ConversationSummary.model_validate(conv).model_copy(
                update={"turn_count": len(conv.turns)})

    def delete(self, conversation_id: str, *, owner: Principal,
               with_traces: bool = False) -> int:
        """Delete one of the caller's conversations and its turns. Its traces
        stay (the trace store's retention, reviews, exports) unless
        ``with_traces``: then the traces of its turns go too, with their
        feedback. Returns the number of traces deleted."""
        with session_scope(self._session_factory) as session:
            conv = self._owned(session, conversation_id, owner)
            trace_ids = [t.trace_id for t in conv.turns if t.trace_id]
            session.delete(conv)
            if not (with_traces and trace_ids):
                return 0
            traces = session.scalars(select(Trace).where(Trace.id.in_(trace_ids),
                                                         Trace.tenant == owner.tenant)).all()
            for trace in traces:
                session.delete(trace)
            return len(traces)

    def history(self, conversation_id: str | None, *, owner: Principal,
                max_messages: int) -> builtins.list[ChatMessage]:
        """The last turns of an existing conversation of the caller as chat messages
        (at most ``max_messages``); [] for an id the caller has not used (another
        caller's conversation of that id is another conversation)."""
        if conversation_id is None or max_messages <= 0:
            return []
        with session_scope(self._session_factory) as session:
            conv = self._find(session, conversation_id, owner)
            if conv is None:
                return []
            messages: list[ChatMessage] = []
            for turn in conv.turns[-(max_messages // 2 or 1):]:
                messages += [ChatMessage("user", turn.question),
                             ChatMessage("assistant", turn.answer)]
            return messages[-max_messages:]

    def add_turn(self, conversation_id: str, *, owner: Principal, question: str,
                 answer: str, citations: builtins.list[dict[str, Any]],
                 trace_id: str | None) -> None:
        """Append a turn, creating the conversation (titled by its first question)."""
        with session_scope(self._session_factory) as session:
            conv = self._find(session, conversation_id, owner)
            if conv is None:
                conv = Conversation(id=conversation_id, tenant=owner.tenant, user=owner.user or "",
                                    title=" ".join(question.split())[:TITLE_CHARS])
                session.add(conv)
                session.flush()
            position = len(conv.turns)
            conv.turns.append(ConversationTurn(
                position=position, question=question, answer=answer, citations=citations,
                trace_id=trace_id))
            conv.updated_at = utcnow()

    async def remember(self, events: AsyncGenerator[AnswerEvent, None], *, conversation_id: str,
                       owner: Principal, question: str
                       ) -> AsyncGenerator[AnswerEvent, None]:
        """Pass ``events`` through; when the answer is done, store the turn and
        name the conversation in the ``done`` event. A storage failure is logged,
        never raised: the answer was already given."""
        parts: list[str] = []
        async with aclosing(events):
            async for event in events:
                if event.type == "delta":
                    parts.append(event.text or "")
                elif event.type == "done":
                    event = event.model_copy(update={"conversation_id": conversation_id})
                    try:
                        await asyncio.to_thread(
                            self.add_turn, conversation_id, owner=owner,
                            question=question, answer="".join(parts),
                            citations=[c.model_dump(mode="json")
                                       for c in event.citations or []],
                            trace_id=event.trace_id)
                    except Exception:
                        logger.exception("conversation turn not stored",
                                         extra={"conversation_id": conversation_id})
                yield event


def new_conversation_id() -> str:
    """A fresh conversation id."""
    return str(uuid.uuid4())
