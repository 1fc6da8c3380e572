"""Building an ``AnswerRequest`` and its ``Principal`` in one call, for tests
that ask the assistant directly: ``assistant.stream_answer(*ask("q?", user="ana"))``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from assistant.request import AnswerRequest, RetrievalSpec, ToolSpec
from retrieval.store import SearchFilter
from sirocco.principal import Principal
from sirocco.types import ChatMessage, GenerationOptions


def ask(question: str, *, tenant: str = "default", user: str | None = None,
        groups: Sequence[str] = (), is_admin: bool = False, top_k: int | None = None,
        filters: SearchFilter | None = None, retrieve: bool = True,
        history: Sequence[ChatMessage] = (), tool_turns: Sequence[ChatMessage] = (),
        tools: Sequence[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None, server_tools: Sequence[str] = (),
        options: GenerationOptions | None = None, consent: bool | None = None,
        conversation_id: str | None = None) -> tuple[AnswerRequest, Principal]:
    """``(request, principal)`` for ``Assistant.stream_answer`` / ``answer``."""
    request = AnswerRequest.of(
        question, history=history, tool_turns=tool_turns, conversation_id=conversation_id,
        consent=consent, options=options,
        retrieval=RetrievalSpec(enabled=retrieve, top_k=top_k, filters=filters),
        tools=ToolSpec(server=tuple(server_tools), client=tuple(tools or ()),
                       choice=tool_choice))
    return request, Principal(tenant=tenant, user=user, groups=tuple(groups), is_admin=is_admin)
