"""What the assistant hands to its callers: answer events, sources, citations."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

#: One source as the examples of several models show it.
SOURCE_EXAMPLE: dict[str, Any] = {
    "n": 1,
    "chunk_id": "c5f1...-3",
    "doc_id": "3f0c2a9e-1b7d-4c1e-9d55-0a1b2c3d4e5f",
    "title": "Travel policy",
    "source": "/srv/handbook/travel.pdf",
    "page": 2,
    "start_char": 1200,
    "end_char": 2100,
    "snippet": "Economy class is required for flights under 6 hours...",
    "score": 0.81,
    "chunk_ids": ["c5f1...-3"],
}


class Source(BaseModel):
    """A chunk shown to the model, under its number ``n`` (1-based) in the prompt."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [SOURCE_EXAMPLE]
        }
    )

    n: int
    chunk_id: str
    doc_id: str
    title: str
    source: str
    page: int | None = None
    start_char: int = 0
    end_char: int = 0
    snippet: str
    score: float
    #: The chunks this source stands for when packing merged adjacent ones.
    chunk_ids: list[str] = []


class CitedClaim(BaseModel):
    """One sentence of the answer citing a source, checked against that source.

    ``support``: share of the sentence's content terms (stemmed, negations
    kept) found in the cited chunk; 0 for a sentence without content words or
    whose negation the best matching chunk sentence does not share (or the
    other way round). ``supported``: at least ``assistant.citation_min_support``.
    Lexical overlap, not entailment.
    ``snippet``: the chunk passage that best supports it, at document character
    offsets ``snippet_start``..``snippet_end`` (None when unknown).
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "sentence": "Flights under six hours are booked in economy.",
                    "support": 0.83,
                    "supported": True,
                    "snippet": "Economy class is required for flights under 6 hours.",
                    "snippet_start": 1388,
                    "snippet_end": 1440,
                }
            ]
        }
    )

    sentence: str
    support: float
    supported: bool
    snippet: str
    snippet_start: int | None = None
    snippet_end: int | None = None


class Citation(Source):
    """A source the answer relies on.

    ``inferred``: False when the model wrote the ``[n]`` marker itself; True
    when the model cited nothing and Sirocco attributed the answer to the top
    source (a guess, never checked; the not-found answer gets none). Clients
    should show it as such ("inferred"), not as the model's citation. Its
    ``snippet`` (at ``snippet_start``..``snippet_end``) is then the sentence of
    the source sharing most words with the answer: located, not checked.

    ``supported``: whether every sentence citing this source shares enough of
    its content words with the chunk (``assistant.citation_min_support``, with
    negations required to agree; see ``claims``). A *lexical overlap* check, not
    entailment: True means the words are there, not that the claim follows;
    False ("not supported") means the citation likely points at the wrong
    chunk or the claim is not in it. None when nothing was checked (inferred
    citations). ``snippet`` is then the supporting passage, at
    ``snippet_start``..``snippet_end``.

    Only model-written citations that are not unsupported mark their chunks
    as cited in the trace (and as positives of ``retrieval-triplets``).
    """

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "n": 1, "chunk_id": "3f0c...-0", "doc_id": "3f0c...", "title": "Travel policy",
        "source": "/srv/handbook/travel.pdf", "page": 2, "start_char": 1200,
        "end_char": 2100, "snippet": "Economy class is required for flights under 6 hours.",
        "snippet_start": 1388, "snippet_end": 1440, "score": 0.81, "chunk_ids": ["3f0c...-0"],
        "inferred": False, "supported": True, "support": 0.83,
        "claims": [{"sentence": "Flights under six hours are booked in economy.",
                    "support": 0.83, "supported": True,
                    "snippet": "Economy class is required for flights under 6 hours.",
                    "snippet_start": 1388, "snippet_end": 1440}]}]})

    inferred: bool = False
    supported: bool | None = None
    support: float | None = None
    snippet_start: int | None = None
    snippet_end: int | None = None
    claims: list[CitedClaim] = []


class AnswerUsage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"prompt_tokens": 812, "completion_tokens": 41, "total_tokens": 853}]
        }
    )

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None


class AnswerEvent(BaseModel):
    """One item of ``Assistant.stream_answer``.

    type="delta": ``text`` holds new answer characters.
    type="done": always last on success; ``citations``, ``sources``,
        ``trace_id``, ``usage``, ``model``, ``finish_reason``.
    type="tool_call": the model called one of the caller's tools;
        ``tool_calls`` holds ``{"id", "name", "arguments"}`` (arguments: JSON text).
    type="tool_result": a server tool ran (``assistant.tools``); ``tool_calls``
        holds ``{"id", "name", "arguments", "content", "is_error"}``.
    type="tool_pending": the model called a tool with side effects, which
        only runs once the user confirms it; ``tool_calls`` holds ``{"id",
        "name", "arguments"}`` (and ``pending_id`` on the native chat, for
        ``POST /api/tool-calls/{pending_id}``). The answer ends after it.
    type="error": last on failure after output began; ``message`` (for the
        user), ``code`` (stable, from ``sirocco.errors``), ``trace_id``.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"type": "delta", "text": "Economy class"},
                {
                    "type": "tool_result",
                    "tool_calls": [
                        {
                            "id": "a1B2c3D4e",
                            "name": "search_documents",
                            "arguments": '{"query": "parking"}',
                            "content": '{"results": []}',
                            "is_error": False,
                        }
                    ],
                },
                {
                    "type": "done",
                    "citations": [],
                    "sources": [],
                    "trace_id": "0c6f1d2e-...",
                    "conversation_id": "5b1d3c0e-...",
                    "usage": {"prompt_tokens": 812, "completion_tokens": 41, "total_tokens": 853},
                    "model": "sirocco",
                    "finish_reason": "stop",
                    "dropped_citations": [],
                },
                {
                    "type": "error",
                    "message": "the language model failed while generating the answer",
                    "code": "engine_error",
                    "trace_id": "0c6f1d2e-...",
                },
            ]
        }
    )

    type: Literal["delta", "tool_call", "tool_result", "tool_pending", "done", "error"]
    text: str | None = None
    message: str | None = None
    code: str | None = None
    citations: list[Citation] | None = None
    sources: list[Source] | None = None
    trace_id: str | None = None
    usage: AnswerUsage | None = None
    model: str | None = None
    finish_reason: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    #: done: cited numbers of no source shown to the model (removed from citations).
    dropped_citations: list[int] | None = None
    #: done: the standalone query retrieval used, when the question was rewritten.
    query: str | None = None
    #: done (native chat): the conversation this turn was stored in.
    conversation_id: str | None = None

    def to_wire(self) -> dict[str, Any]:
        """The JSON object sent to clients: event fields that do not apply are left
        out; nested objects keep all their keys (``page: null``)."""
        data = self.model_dump(mode="json")
        return {k: v for k, v in data.items() if v is not None}


class AnswerResult(BaseModel):
    """A complete (non-streamed) answer."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "answer": "Flights under six hours are booked in economy class [1].",
                    "citations": [
                        {
                            **SOURCE_EXAMPLE,
                            "inferred": False,
                            "supported": True,
                            "support": 0.83,
                            "claims": [],
                        }
                    ],
                    "sources": [SOURCE_EXAMPLE],
                    "trace_id": "0c6f1d2e-8a9b-4c5d-9e0f-1a2b3c4d5e6f",
                    "usage": {"prompt_tokens": 812, "completion_tokens": 41, "total_tokens": 853},
                    "model": "sirocco",
                    "finish_reason": "stop",
                    "tool_calls": [],
                    "tool_results": [],
                    "dropped_citations": [],
                    "query": None,
                    "conversation_id": "5b1d3c0e-8f2a-4c55-9a77-0d2f1e3b4a69",
                }
            ]
        }
    )

    answer: str
    citations: list[Citation]
    sources: list[Source]
    trace_id: str | None
    usage: AnswerUsage | None
    model: str | None
    finish_reason: str | None = None
    #: Calls of the caller's tools, when tools were offered (``tool_call`` events).
    tool_calls: list[dict[str, Any]] = []
    #: Server tools that ran, with their results (``tool_result`` events).
    tool_results: list[dict[str, Any]] = []
    #: Calls of tools with side effects waiting for the user (``tool_pending``).
    pending_tool_calls: list[dict[str, Any]] = []
    #: Cited numbers of no source shown to the model: removed from ``answer``.
    dropped_citations: list[int] = []
    #: The standalone query retrieval used, when the question was rewritten.
    query: str | None = None
    #: The conversation this turn was stored in (native chat).
    conversation_id: str | None = None
