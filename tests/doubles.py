"""Test doubles for the assistant's ports (engine, store, embedder).

Deterministic and dependency-free, for unit tests of the assistant and API.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sirocco.types import (
    ChatMessage,
    Chunk,
    EngineEvent,
    GenerationOptions,
    SearchHit,
    ToolCall,
    Usage,
)

DEFAULT_USAGE = Usage(prompt_tokens=42, completion_tokens=5)


class ScriptedEngine:
    """Streams ``chunks`` as text events, then a finish event with ``usage``.

    ``fail_at=i`` raises ``error`` instead of emitting chunk ``i`` (``len(chunks)``:
    after the last chunk). ``delay`` sleeps before each chunk. Records the
    messages of every call in ``calls`` (tools offered in ``tools``,
    ``tool_choice`` in ``choices``) and counts closed streams.

    ``steps``: a script per call (the n-th call plays ``steps[n]``, calls past
    the script play ``chunks``): strings are text, ``ToolCall``s tool calls.
    """

    model_name = "scripted-model"

    def __init__(
        self,
        chunks: Sequence[str] = ("The answer [1].",),
        *,
        fail_at: int | None = None,
        error: BaseException | None = None,
        usage: Usage | None = DEFAULT_USAGE,
        delay: float = 0.0,
        steps: Sequence[Sequence[str | ToolCall]] = (),
    ) -> None:
        self.chunks = list(chunks)
        self.steps = [list(step) for step in steps]
        self.tools: list[list[dict[str, Any]] | None] = []
        self.choices: list[Any] = []
        self.fail_at = fail_at
        self.error = error or RuntimeError("engine exploded")
        self.usage = usage
        self.delay = delay
        self.calls: list[list[ChatMessage]] = []
        self.options: list[GenerationOptions] = []
        self.emitted = 0
        self.streams_closed = 0

    async def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        options: GenerationOptions,
        tools: Sequence[dict[str, Any]] | None = None,
        tool_choice: Any = None,
        request_id: str | None = None,
    ) -> AsyncIterator[EngineEvent]:
        step = len(self.calls)
        self.calls.append(list(messages))
        self.options.append(options)
        self.tools.append(list(tools) if tools is not None else None)
        self.choices.append(tool_choice)
        script = self.steps[step] if step < len(self.steps) else self.chunks
        called = False
        try:
            for i, item in enumerate(script):
                if self.fail_at == i:
                    raise self.error
                if self.delay:
                    await asyncio.sleep(self.delay)
                self.emitted += 1
                if isinstance(item, ToolCall):
                    called = True
                    yield EngineEvent(kind="tool_call", tool_call=item)
                else:
                    yield EngineEvent(kind="text", text=item)
            if self.fail_at == len(script):
                raise self.error
            yield EngineEvent(kind="finish", finish_reason="tool_calls" if called else "stop",
                              usage=self.usage)
        finally:
            self.streams_closed += 1

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def close(self) -> None:
        return None


class StaticStore:
    """Returns the first ``top_k`` of ``hits`` for every search; records searches."""

    def __init__(self, hits: Sequence[SearchHit] = ()) -> None:
        self.hits = list(hits)
        self.searches: list[dict[str, Any]] = []

    def ensure_collection(self, dim: int) -> None:
        return None

    def upsert(self, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]]) -> None:
        return None

    def delete_document(self, doc_id: str) -> None:
        return None

    def replace_documents(self, doc_ids: Sequence[str], chunks: Sequence[Chunk],
                          vectors: Sequence[Sequence[float]]) -> None:
        return None

    def search(
        self,
        vector: Sequence[float] | None,
        *,
        top_k: int,
        tenant: str | None = None,
        doc_ids: Sequence[str] | None = None,
        text: str | None = None,
        mode: str | None = None,
        filter: Any = None,
    ) -> list[SearchHit]:
        if tenant is None and filter is not None:
            tenant = filter.caller.tenant if filter.caller is not None else filter.tenant
        self.searches.append({"vector": list(vector or ()), "top_k": top_k, "tenant": tenant,
                              "text": text, "mode": mode, "filter": filter})
        return self.hits[:top_k]

    def count(self, *, doc_id: str | None = None) -> int:
        return len(self.hits)

    def close(self) -> None:
        return None


class ConstantEmbedder:
    """Embeds every text as the same unit vector; records queries."""

    dim = 4
    model_id = "constant"

    def __init__(self) -> None:
        self.queries: list[str] = []

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        return [[1.0, 0.0, 0.0, 0.0] for _ in texts]

    def embed_query(self, text: str) -> list[float]:
        self.queries.append(text)
        return [1.0, 0.0, 0.0, 0.0]


def make_hit(n: int, *, score: float = 0.9, text: str | None = None,
             title: str | None = None, page: int | None = None) -> SearchHit:
    """A search hit for chunk ``n`` of document ``doc-<n>``."""
    body = text if text is not None else f"Fact number {n} is written here."
    return SearchHit(
        chunk_id=f"chunk-{n}", doc_id=f"doc-{n}", chunk_index=0, text=body,
        title=title if title is not None else f"Title {n}", source=f"/docs/file{n}.pdf",
        score=score, start_char=10 * n, end_char=10 * n + len(body), page=page,
    )
