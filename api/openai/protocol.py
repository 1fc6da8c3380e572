"""Wire models of the OpenAI-compatible API (``/v1/models``, ``/v1/chat/completions``).

Only request/response shapes live here. Unknown request fields are ignored, as
OpenAI-compatible servers do, so existing clients work unchanged.

Sirocco's extensions, both optional:
- request ``sirocco``: ``{"rag": true, "top_k": 5, "filters": {...},
  "conversation_id": "...", "consent": true}`` (with the ``openai`` client:
  ``extra_body={"sirocco": {...}}``); RAG is on unless ``rag`` is false;
- response ``sirocco``: ``{"sources": [...], "citations": [...], "trace_id": "..."}``
  on the completion, and on the streamed chunk that carries ``finish_reason``.
  Each source/citation has ``n`` (the ``[n]`` marker), ``doc_id``, ``chunk_id``,
  ``title``, ``source``, ``page``, ``start_char``, ``end_char``, ``snippet``;
  a citation also has ``inferred`` (true: the model cited nothing, Sirocco
  attributed the answer to its top source) and ``supported`` (false: a
  sentence citing it shares too few words with the chunk; null: not checked),
  as in ``assistant.schemas.Citation``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas import ChatFilters
from assistant.schemas import Citation, Source


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class FunctionCall(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "get_weather", "arguments": '{"city": "Paris"}'}]}
    )

    name: str
    #: JSON text, as the model produced it.
    arguments: str


class ToolCall(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "a1B2c3D4e",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ]
        }
    )

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessageIn(BaseModel):
    """One message of ``messages``; content is text or a list of text parts."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"role": "user", "content": "Which class do I fly?"}]}
    )

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class FunctionDef(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "get_weather",
                    "description": "Weather of a city",
                    "parameters": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"],
                    },
                }
            ]
        }
    )

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    #: A JSON Schema of type object; checked against the JSON Schema meta-schema.
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDef(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "description": "Weather of a city",
                        "parameters": {
                            "type": "object",
                            "properties": {"city": {"type": "string"}},
                        },
                    },
                }
            ]
        }
    )

    type: Literal["function"]
    function: FunctionDef


class StreamOptions(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"include_usage": True}]})

    include_usage: bool = False


class SiroccoOptions(BaseModel):
    """Sirocco's request extension (``sirocco`` field)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "rag": True,
                    "top_k": 8,
                    "filters": {"tags": ["policy"]},
                    "conversation_id": "5b1d3c0e-8f2a-4c55-9a77-0d2f1e3b4a69",
                    "consent": True,
                }
            ]
        },
    )

    #: Retrieve from the caller's documents and answer from them (default).
    rag: bool = True
    top_k: int | None = Field(default=None, ge=1, le=50)
    filters: ChatFilters | None = None
    conversation_id: str | None = Field(default=None, max_length=64)
    #: The user agrees (or not) to this interaction's trace being used as
    #: training data; unset: the server's default, ``traces.default_consent``.
    consent: bool | None = None


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"model": "sirocco", "messages": [{"role": "user", "content": "What is the Zephyr "
                                           "project code?"}], "stream": True,
         "stream_options": {"include_usage": True}}]})

    model: str
    messages: list[ChatMessageIn] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[ToolDef] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**63)
    n: int = Field(default=1, ge=1)
    user: str | None = None
    sirocco: SiroccoOptions | None = None


class Usage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"prompt_tokens": 812, "completion_tokens": 41, "total_tokens": 853}]
        }
    )

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class SiroccoExtra(BaseModel):
    """Sirocco's response extension: what the answer was grounded on."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"sources": [], "citations": [], "trace_id": "0c6f1d2e-8a9b-4c5d-9e0f-1a2b3c4d5e6f"}
            ]
        }
    )

    sources: list[Source] = []
    citations: list[Citation] = []
    trace_id: str | None = None


class AssistantMessage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"role": "assistant", "content": "Economy class [1].", "tool_calls": None}]
        }
    )

    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCall] | None = None


class Choice(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Economy class [1]."},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ]
        }
    )

    index: int = 0
    message: AssistantMessage
    finish_reason: str | None
    logprobs: None = None


class ChatCompletion(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "chatcmpl-4f1e...",
                    "object": "chat.completion",
                    "created": 1795000000,
                    "model": "sirocco",
                    "choices": [
                        {
                            "index": 0,
                            "message": {
                                "role": "assistant",
                                "content": "Economy class for flights under six hours [1].",
                            },
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 812, "completion_tokens": 41, "total_tokens": 853},
                    "sirocco": {
                        "sources": [],
                        "citations": [],
                        "trace_id": "0c6f1d2e-8a9b-4c5d-9e0f-1a2b3c4d5e6f",
                    },
                }
            ]
        }
    )

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    sirocco: SiroccoExtra | None = None


class ToolCallDelta(BaseModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCall | None = None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    sirocco: SiroccoExtra | None = None


class Model(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"id": "sirocco", "object": "model", "created": 1795000000, "owned_by": "sirocco"}
            ]
        }
    )

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "sirocco"


class ModelList(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "object": "list",
                    "data": [
                        {
                            "id": "sirocco",
                            "object": "model",
                            "created": 1795000000,
                            "owned_by": "sirocco",
                        }
                    ],
                }
            ]
        }
    )

    object: Literal["list"] = "list"
    data: list[Model]


class ErrorDetail(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "message": "the model 'gpt-4' does not exist",
                    "type": "invalid_request_error",
                    "param": "model",
                    "code": "model_not_found",
                }
            ]
        }
    )

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error envelope, used by every ``/v1`` error."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": {
                        "message": "the model 'gpt-4' does not exist; this server serves 'sirocco'",
                        "type": "invalid_request_error",
                        "param": "model",
                        "code": "model_not_found",
                    }
                }
            ]
        }
    )

    error: ErrorDetail
