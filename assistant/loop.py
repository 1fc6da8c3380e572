"""The generation loop: the model answers, or calls tools, for a bounded number of turns.

Each turn streams one generation. Calls of the caller's own tools (OpenAI
``tools`` sent by a client) end the answer: they go back to the client as
``tool_call`` events, as before. Calls of server tools (``assistant.tools``)
run here, through the registry's checks, with what is left of the answer's
tool-time budget; each result is appended as a ``tool`` message, reported as
a ``tool_result`` event and recorded as a ``tool`` span, and the model gets
another turn. After ``max_tool_steps`` turns with tools, one last turn without
server tools makes the model answer with what it has. A call of a tool with
side effects (``Tool.side_effects``) is never run here, whatever the model was
told by a document: the answer ends with a ``tool_pending`` event and the user
confirms or rejects the call (``assistant.pending``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from assistant.schemas import AnswerEvent
from llm.engine import Engine
from llm.tools import ToolRegistry, ToolResult
from sirocco.principal import Principal
from sirocco.settings import AssistantSettings
from sirocco.types import ChatMessage, GenerationOptions, ToolCall, Usage

logger = logging.getLogger(__name__)


@dataclass
class Turns:
    """What the loop needs to know about tools for one answer."""

    #: Server tools (None: none offered); their calls run here.
    registry: ToolRegistry | None = None
    #: OpenAI ``tools`` entries of the server tools the caller may use.
    server_specs: Sequence[dict[str, Any]] = ()
    #: The client's own tools (OpenAI ``tools``); their calls go back to it.
    client_tools: Sequence[dict[str, Any]] = ()
    #: For the first turn: "required", a named function, or None (auto).
    tool_choice: str | dict[str, Any] | None = None
    context: Principal = Principal()

    @property
    def client_names(self) -> set[str]:
        return {str(t.get("function", t).get("name")) for t in self.client_tools}


def _choice_for(choice: str | dict[str, Any] | None,
                tools: Sequence[dict[str, Any]]) -> str | dict[str, Any] | None:
    """``choice`` if it still applies to ``tools`` (a named tool must be among them)."""
    if not tools or choice in (None, "auto"):
        return None
    if isinstance(choice, dict):
        name = choice.get("function", {}).get("name")
        if name not in {t.get("function", t).get("name") for t in tools}:
            return None
    return choice


def _add(a: Usage | None, b: Usage | None) -> Usage | None:
    if a is None or b is None:
        return b or a
    return Usage(a.prompt_tokens + b.prompt_tokens, a.completion_tokens + b.completion_tokens)


def _llm_attributes(run: Any, usage: Usage | None) -> dict[str, Any]:
    """OpenTelemetry GenAI attributes of a finished generation."""
    attrs: dict[str, Any] = {"gen_ai.response.model": run.model,
                             "gen_ai.response.finish_reasons": [run.finish_reason]}
    if usage is not None:
        attrs["gen_ai.usage.input_tokens"] = usage.prompt_tokens
        attrs["gen_ai.usage.output_tokens"] = usage.completion_tokens
    return attrs


async def converse(engine: Engine, messages: list[ChatMessage], *, run: Any, handle: Any,
                   options: GenerationOptions, turns: Turns,
                   settings: AssistantSettings) -> AsyncGenerator[AnswerEvent, None]:
    """Stream the answer to ``messages`` (extended in place with tool turns).

    ``run`` collects ``parts``, ``usage``, ``finish_reason``, ``tool_calls`` and
    ``prompt`` for the trace; ``handle`` is the open trace (spans).
    """
    steps = settings.max_tool_steps if turns.registry is not None else 0
    deadline = time.monotonic() + settings.max_tool_time_s
    client_names = turns.client_names
    for step in range(steps + 1):
        offered = [*turns.server_specs, *turns.client_tools] if step < steps else list(
            turns.client_tools)
        choice = _choice_for(turns.tool_choice if step == 0 else None, offered)
        # Only when set: engines without forced calls keep working.
        forced = {"tool_choice": choice} if choice is not None else {}
        span = handle.start_span("llm", f"chat {run.model}", **{
            "gen_ai.operation.name": "chat", "gen_ai.request.model": run.model,
            "gen_ai.request.max_tokens": options.max_tokens,
            "gen_ai.request.temperature": options.temperature, "sirocco.step": step})
        request_id = handle.trace_id if step == 0 else f"{handle.trace_id}-{step}"
        stream = engine.generate(messages, options=options, tools=offered or None,
                                 request_id=request_id, **forced)
        text: list[str] = []
        server_calls: list[ToolCall] = []
        pending: list[ToolCall] = []
        client_called = False
        async with aclosing(stream):
            async for event in stream:
                if event.kind == "text" and event.text:
                    handle.mark_first_token()
                    run.parts.append(event.text)
                    text.append(event.text)
                    yield AnswerEvent(type="delta", text=event.text)
                elif event.kind == "tool_call" and event.tool_call is not None:
                    call = event.tool_call
                    if turns.registry is not None and call.name not in client_names:
                        tool = turns.registry.get(call.name)
                        if tool is not None and tool.side_effects:
                            pending.append(call)  # whatever step: never run here
                        elif step < steps:
                            server_calls.append(call)
                        else:  # the last turn offered no server tools
                            logger.warning("tool call past max_tool_steps ignored",
                                           extra={"tool": call.name})
                        continue
                    handle.mark_first_token()
                    client_called = True
                    record = {"id": call.id, "name": call.name, "arguments": call.arguments}
                    run.tool_calls.append(record)
                    yield AnswerEvent(type="tool_call", tool_calls=[record])
                elif event.kind == "finish":
                    run.usage = _add(run.usage, event.usage)
                    run.finish_reason = event.finish_reason
                    handle.end_span(span, **_llm_attributes(run, event.usage))
                else:
                    logger.warning("ignoring engine event", extra={"kind": event.kind})
        if pending:
            # Tools with side effects wait for the user; nothing else runs now.
            records = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in pending]
            run.tool_calls.extend(records)
            yield AnswerEvent(type="tool_pending", tool_calls=records)
            return
        if not server_calls or client_called:
            return
        handle.mark_first_token()
        messages.append(ChatMessage(role="assistant", content="".join(text),
                                    tool_calls=server_calls))
        for call in server_calls:
            result = await run_tool(turns.registry, call, turns.context, handle=handle,
                                    deadline=deadline, max_chars=settings.max_tool_result_chars)
            messages.append(result.to_message())
            yield AnswerEvent(type="tool_result", tool_calls=[{
                "id": call.id, "name": call.name, "arguments": call.arguments,
                "content": result.content, "is_error": result.is_error}])
        run.prompt = [m.to_openai() for m in messages]


def _failed(call: ToolCall, message: str) -> ToolResult:
    return ToolResult(call.id, call.name, json.dumps({"error": message}), is_error=True)


async def run_tool(registry: ToolRegistry | None, call: ToolCall, context: Principal, *,
                   handle: Any, deadline: float, max_chars: int) -> ToolResult:
    """Run one server tool call within the time left before ``deadline``; every
    failure (refused, invalid, timed out, raised) is an error result for the model,
    and the call is recorded as a ``tool`` span (status "error" when it failed)."""
    span = handle.start_span("tool", f"execute_tool {call.name}", **{
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": call.name,
        "gen_ai.tool.call.id": call.id, "gen_ai.tool.call.arguments": call.arguments})
    left = deadline - time.monotonic()
    if registry is None:
        result = _failed(call, f"unknown tool {call.name!r}")
    elif left <= 0:
        result = _failed(call, "the time allowed for tools in this answer is spent")
    else:
        try:
            result = await asyncio.wait_for(registry.execute(call, context), timeout=left)
        except TimeoutError:
            result = _failed(call, f"tool {call.name!r} timed out after {left:.1f}s")
    error = json.loads(result.content).get("error") if result.is_error else None
    if len(result.content) > max_chars:
        result = ToolResult(result.call_id, result.name,
                            result.content[:max_chars] + " [truncated]", result.is_error)
    if error:
        logger.warning("tool call failed", extra={"tool": call.name, "tool_error": error,
                                                  "trace_id": handle.trace_id})
    handle.end_span(span, error=error, **{"sirocco.tool.result_chars": len(result.content)})
    return result
