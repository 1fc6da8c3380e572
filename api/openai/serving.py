"""The OpenAI-compatible chat completions, served by the assistant.

A request is checked first (model, limits, tool schemas, message shapes):
every problem is an ``InvalidInputError`` / ``ModelNotFoundError`` naming the
``param`` at fault, which the error handler turns into a 4xx in OpenAI's
envelope. Then the last user message becomes the question, the messages
before it the history and those after it (tool calls and results) the tail;
the assistant retrieves with the caller's ACL (unless ``sirocco.rag`` is
false) and streams the answer, which is mapped to OpenAI's completion or
chunk objects, with the sources in the ``sirocco`` extension field.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from api.errors import error_payload, openai_error_body, status_for
from api.openai.protocol import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessageIn,
    Choice,
    ChunkChoice,
    Delta,
    FunctionCall,
    Model,
    ModelList,
    SiroccoExtra,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from api.sse import DONE_FRAME, sse_frame
from assistant.request import AnswerRequest, RetrievalSpec, ToolSpec
from assistant.schemas import AnswerEvent, AnswerUsage
from sirocco.errors import EngineError, InvalidInputError, ModelNotFoundError, SiroccoError
from sirocco.settings import Settings
from sirocco.types import ChatMessage, GenerationOptions
from sirocco.types import ToolCall as EngineToolCall

MAX_STOP = 4
_STARTED = int(time.time())


def served_model(settings: Settings, engine: Any | None) -> str:
    """The one model name this server answers to."""
    return getattr(engine, "model_name", None) or settings.llm.served_model_name


def list_models(settings: Settings, engine: Any | None) -> ModelList:
    """``GET /v1/models``: the served model."""
    return ModelList(data=[Model(id=served_model(settings, engine), created=_STARTED)])


def _text(message: ChatMessageIn, i: int) -> str:
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for j, part in enumerate(content):
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise InvalidInputError("only text content parts are supported",
                                    param=f"messages[{i}].content[{j}]")
        parts.append(part["text"])
    return "".join(parts)


def _convert(message: ChatMessageIn, i: int, max_chars: int) -> ChatMessage:
    text = _text(message, i)
    if len(text) > max_chars:
        raise InvalidInputError(
            f"message {i} has {len(text)} characters; the limit is {max_chars}",
            param=f"messages[{i}].content")
    role = "system" if message.role == "developer" else message.role
    if role == "tool" and not message.tool_call_id:
        raise InvalidInputError("a tool message needs tool_call_id",
                                param=f"messages[{i}].tool_call_id")
    calls = [EngineToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments)
             for c in message.tool_calls or []]
    return ChatMessage(role=role, content=text, tool_call_id=message.tool_call_id,
                       tool_calls=calls)


def _check_tools(request: ChatCompletionRequest, max_tools: int) -> list[dict[str, Any]] | None:
    tools = request.tools or []
    if len(tools) > max_tools:
        raise InvalidInputError(f"{len(tools)} tools sent; at most {max_tools} per request",
                                param="tools")
    names = [t.function.name for t in tools]
    if len(set(names)) != len(names):
        raise InvalidInputError("tool names must be unique", param="tools")
    for i, tool in enumerate(tools):
        schema = tool.function.parameters
        if schema is None:
            continue
        param = f"tools[{i}].function.parameters"
        if schema.get("type", "object") != "object":
            raise InvalidInputError("tool parameters must be a JSON Schema of type object",
                                    param=param)
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            raise InvalidInputError(f"invalid JSON Schema for tool {tool.function.name!r}: "
                                    f"{exc.message}", param=param) from None
    choice = request.tool_choice
    if isinstance(choice, dict):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if choice.get("type", "function") != "function" or name not in names:
            raise InvalidInputError(f"tool_choice names an unknown tool {name!r}",
                                    param="tool_choice")
    if not tools or choice == "none":
        return None
    return [t.model_dump(exclude_none=True) for t in tools]


def prepare(request: ChatCompletionRequest, *, settings: Settings, engine: Any | None
            ) -> AnswerRequest:
    """Check ``request`` and map it onto an ``AnswerRequest``; raises
    ``ModelNotFoundError`` or ``InvalidInputError`` (with ``param``)."""
    model = served_model(settings, engine)
    if request.model != model:
        raise ModelNotFoundError(f"the model {request.model!r} does not exist; this server "
                                 f"serves {model!r} (GET /v1/models)", param="model")
    if request.n != 1:
        raise InvalidInputError("only n=1 is supported", param="n")
    stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    if len(stop) > MAX_STOP:
        raise InvalidInputError(f"at most {MAX_STOP} stop sequences", param="stop")
    limits = settings.api
    tools = _check_tools(request, limits.max_tools)
    last_user = max((i for i, m in enumerate(request.messages) if m.role == "user"), default=None)
    if last_user is None:
        raise InvalidInputError("messages need at least one user message", param="messages")
    messages = [_convert(m, i, limits.max_question_chars)
                for i, m in enumerate(request.messages)]
    question, history, tail = (messages[last_user].content, messages[:last_user],
                               messages[last_user + 1:])
    if not question.strip():
        raise InvalidInputError("the last user message is empty",
                                param=f"messages[{last_user}].content")
    if any(m.role not in ("assistant", "tool") for m in tail) or (tail and tail[-1].role != "tool"):
        raise InvalidInputError("after the last user message only the assistant's tool calls "
                                "and their tool results may follow", param="messages")
    if len(history) + len(tail) > limits.max_history_messages:
        raise InvalidInputError(
            f"{len(history) + len(tail)} earlier messages sent; at most "
            f"{limits.max_history_messages}", param="messages")
    llm = settings.llm
    options = GenerationOptions(
        max_tokens=min(request.max_completion_tokens or request.max_tokens or llm.max_tokens,
                       llm.max_model_len),
        temperature=llm.temperature if request.temperature is None else request.temperature,
        top_p=1.0 if request.top_p is None else request.top_p,
        stop=tuple(stop), seed=request.seed)
    ext = request.sirocco
    choice = request.tool_choice if tools and request.tool_choice not in (None, "auto") else None
    return AnswerRequest.of(
        question, history=history, tool_turns=tail, options=options,
        conversation_id=ext.conversation_id if ext else None,
        consent=ext.consent if ext else None,
        retrieval=RetrievalSpec(
            enabled=ext.rag if ext else True, top_k=ext.top_k if ext else None,
            filters=ext.filters.to_search_filter() if ext and ext.filters else None),
        tools=ToolSpec(client=tuple(tools or ()), choice=choice))


def _usage(usage: AnswerUsage | None) -> Usage:
    if usage is None:
        return Usage()
    p, c = usage.prompt_tokens or 0, usage.completion_tokens or 0
    return Usage(prompt_tokens=p, completion_tokens=c, total_tokens=p + c)


def _finish(reason: str | None, tool_calls: bool) -> str:
    if tool_calls:
        return "tool_calls"
    return reason if reason in ("stop", "length", "content_filter") else "stop"


def _tool_call(call: dict[str, str]) -> ToolCall:
    return ToolCall(id=call["id"], function=FunctionCall(name=call["name"],
                                                         arguments=call["arguments"]))


async def complete(events: AsyncGenerator[AnswerEvent, None], *, model: str) -> ChatCompletion:
    """A whole ``chat.completion`` from the assistant's events."""
    parts: list[str] = []
    calls: list[dict[str, str]] = []
    done: AnswerEvent | None = None
    async with aclosing(events):
        async for event in events:
            if event.type == "delta":
                parts.append(event.text or "")
            elif event.type == "tool_call":
                calls += event.tool_calls or []
            elif event.type == "error":
                raise EngineError(event.message or "the answer failed")
            else:
                done = event
    done = done or AnswerEvent(type="done")
    text = "".join(parts)
    message = AssistantMessage(content=text if text or not calls else None,
                               tool_calls=[_tool_call(c) for c in calls] or None)
    return ChatCompletion(
        id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()), model=model,
        choices=[Choice(message=message, finish_reason=_finish(done.finish_reason, bool(calls)))],
        usage=_usage(done.usage),
        sirocco=SiroccoExtra(sources=done.sources or [], citations=done.citations or [],
                             trace_id=done.trace_id))


def _chunk_bytes(chunk: ChatCompletionChunk) -> bytes:
    return sse_frame(chunk.model_dump(mode="json", exclude_none=True))


async def stream_chunks(
    events: AsyncGenerator[AnswerEvent, None],
    *,
    model: str,
    include_usage: bool,
    is_disconnected: Callable[[], Awaitable[bool]] | None = None,
) -> AsyncGenerator[bytes, None]:
    """``chat.completion.chunk`` frames for the assistant's events, then
    ``[DONE]``. A failure after the first byte is sent as an OpenAI error
    object (``{"error": {...}}``) before ``[DONE]``; ``events`` is always closed."""
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    def chunk(delta: Delta, finish: str | None = None, **extra: Any) -> bytes:
        return _chunk_bytes(ChatCompletionChunk(
            id=cid, created=created, model=model,
            choices=[ChunkChoice(delta=delta, finish_reason=finish)], **extra))

    n_calls = 0
    try:
        yield chunk(Delta(role="assistant", content=""))
        async for event in events:
            if is_disconnected is not None and await is_disconnected():
                return
            if event.type == "delta":
                yield chunk(Delta(content=event.text or ""))
            elif event.type == "tool_call":
                deltas = []
                for call in event.tool_calls or []:
                    deltas.append(ToolCallDelta(
                        index=n_calls, id=call["id"], type="function",
                        function=FunctionCall(name=call["name"], arguments=call["arguments"])))
                    n_calls += 1
                yield chunk(Delta(tool_calls=deltas))
            elif event.type == "error":
                status = 502 if event.code == "engine_error" else 500
                yield sse_frame(openai_error_body(event.message or "the answer failed", status,
                                                  event.code))
            else:
                yield chunk(Delta(), _finish(event.finish_reason, n_calls > 0),
                            sirocco=SiroccoExtra(sources=event.sources or [],
                                                 citations=event.citations or [],
                                                 trace_id=event.trace_id))
                if include_usage:
                    yield _chunk_bytes(ChatCompletionChunk(
                        id=cid, created=created, model=model, choices=[],
                        usage=_usage(event.usage)))
    except Exception as exc:
        payload = error_payload(exc)
        status = status_for(exc) if isinstance(exc, SiroccoError) else 500
        yield sse_frame(openai_error_body(payload["message"], status, payload["code"]))
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
    yield DONE_FRAME
