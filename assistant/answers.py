"""A whole answer from the assistant's event stream (the non-streamed APIs)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from assistant.citations import strip_markers
from assistant.schemas import AnswerEvent, AnswerResult
from sirocco.errors import EngineError


async def collect_answer(events: AsyncGenerator[AnswerEvent, None]) -> AnswerResult:
    """The whole answer from ``stream_answer``'s events; an ``error`` event (or no
    ``done``) raises ``EngineError``. Markers of sources the model never saw are
    taken out of the answer text."""
    parts: list[str] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []
    async with aclosing(events):
        async for event in events:
            if event.type == "delta":
                parts.append(event.text or "")
            elif event.type == "tool_call":
                calls += event.tool_calls or []
            elif event.type == "tool_result":
                results += event.tool_calls or []
            elif event.type == "tool_pending":
                pending += event.tool_calls or []
            elif event.type == "error":
                raise EngineError(event.message or "the answer failed")
            else:
                return AnswerResult(
                    answer=strip_markers("".join(parts), event.dropped_citations or []),
                    citations=event.citations or [], sources=event.sources or [],
                    trace_id=event.trace_id, usage=event.usage, model=event.model,
                    finish_reason=event.finish_reason, tool_calls=calls,
                    tool_results=results, pending_tool_calls=pending,
                    dropped_citations=event.dropped_citations or [],
                    query=event.query, conversation_id=event.conversation_id)
    raise EngineError("the answer ended without a result")
