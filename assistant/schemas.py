"""What the assistant hands to its callers: answer events, sources, citations."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel


class Source(BaseModel):
    """A chunk shown to the model, under its number ``n`` (1-based) in the prompt."""

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


class Citation(Source):
    """A source the answer relies on. ``inferred`` is True when the model cited
    nothing and Sirocco attributed the answer to the top source itself."""

    inferred: bool = False


class AnswerUsage(BaseModel):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None


class AnswerEvent(BaseModel):
    """One item of ``Assistant.stream_answer``.

    type="delta": ``text`` holds new answer characters.
    type="done": always last on success; ``citations``, ``sources``,
        ``trace_id``, ``usage``, ``model``, ``finish_reason``.
    type="error": last on failure after output began; ``message`` (for the
        user), ``code`` (stable, from ``sirocco.errors``), ``trace_id``.
    """

    type: Literal["delta", "done", "error"]
    text: str | None = None
    message: str | None = None
    code: str | None = None
    citations: list[Citation] | None = None
    sources: list[Source] | None = None
    trace_id: str | None = None
    usage: AnswerUsage | None = None
    model: str | None = None
    finish_reason: str | None = None

    def to_wire(self) -> dict[str, Any]:
        """The JSON object sent to clients: event fields that do not apply are left
        out; nested objects keep all their keys (``page: null``)."""
        data = self.model_dump(mode="json")
        return {k: v for k, v in data.items() if v is not None}


class AnswerResult(BaseModel):
    """A complete (non-streamed) answer."""

    answer: str
    citations: list[Citation]
    sources: list[Source]
    trace_id: str | None
    usage: AnswerUsage | None
    model: str | None
