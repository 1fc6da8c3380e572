"""Domain types shared by every layer (no I/O here)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

# Namespace for deterministic chunk point ids: uuid5(NAMESPACE, f"{doc_id}:{index}").
CHUNK_NAMESPACE = uuid.UUID("6f1d3a3e-7c1b-4c55-9a57-5f6b2a0c9e11")


def chunk_point_id(doc_id: str, chunk_index: int) -> str:
    """The Qdrant point id of a chunk: the same inputs always give the same id."""
    return str(uuid.uuid5(CHUNK_NAMESPACE, f"{doc_id}:{chunk_index}"))


#: The ACL entry that lets every user of the tenant see a document.
EVERYONE = "*"


def user_acl_entry(user: str) -> str:
    """The ACL entry naming one user."""
    return f"user:{user}"


def group_acl_entry(group: str) -> str:
    """The ACL entry naming one group."""
    return f"group:{group}"


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a document, ready to embed and store.

    ``acl`` lists who may see it within ``tenant``: ``EVERYONE``, or
    ``user:<id>`` / ``group:<name>`` entries; it is copied from the document.
    """

    doc_id: str
    chunk_index: int
    text: str
    title: str
    source: str
    start_char: int
    end_char: int
    page: int | None = None
    headings: tuple[str, ...] = ()
    tenant: str = "default"
    acl: tuple[str, ...] = (EVERYONE,)
    source_id: str | None = None
    mime_type: str | None = None
    tags: tuple[str, ...] = ()
    #: The document's modification time (Unix seconds), for date filters.
    modified_at: float | None = None

    @property
    def id(self) -> str:
        return chunk_point_id(self.doc_id, self.chunk_index)


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A retrieved chunk with its similarity score."""

    chunk_id: str
    doc_id: str
    chunk_index: int
    text: str
    title: str
    source: str
    score: float
    start_char: int = 0
    end_char: int = 0
    page: int | None = None
    headings: tuple[str, ...] = ()
    #: Set when context packing merged several chunks into this one: their ids,
    #: in text order (``text`` and the offsets then span them all).
    covers: tuple[str, ...] = ()


Role = Literal["system", "user", "assistant", "tool"]


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the model produced it


@dataclass(slots=True)
class ChatMessage:
    role: Role
    content: str
    tool_call_id: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI chat message dict (what chat templates expect)."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_call_id:
            out["tool_call_id"] = self.tool_call_id
        if self.tool_calls:
            out["tool_calls"] = [
                {"id": c.id, "type": "function",
                 "function": {"name": c.name, "arguments": c.arguments}}
                for c in self.tool_calls
            ]
        return out


@dataclass(frozen=True, slots=True)
class GenerationOptions:
    """Sampling of one generation. ``repetition_penalty`` (1.0: off) and
    ``frequency_penalty`` (0: off) discourage loops; ``regex`` (None: free
    text) constrains the text to a regular expression (structured outputs)."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    regex: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class EngineEvent:
    """One item of an engine's output stream.

    kind="text": ``text`` holds the new characters.
    kind="tool_call": ``tool_call`` holds a complete call.
    kind="finish": ``finish_reason`` and ``usage`` are set; always the last event.
    """

    kind: Literal["text", "tool_call", "finish"]
    text: str = ""
    tool_call: ToolCall | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
