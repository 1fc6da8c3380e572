"""What one answer is asked to do: ``AnswerRequest`` (with its retrieval and
tool parts), given to ``Assistant.stream_answer`` beside the caller's
``Principal``. The wire models build it (``ChatRequest.to_answer_request``,
the OpenAI layer's ``prepare``), so no caller assembles keyword lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from retrieval.store import SearchFilter, SearchMode
from sirocco.types import ChatMessage, GenerationOptions


@dataclass(frozen=True, slots=True)
class RetrievalSpec:
    """Whether and how to retrieve: ``enabled`` False is plain chat (no
    sources); ``top_k`` None is ``retrieval.top_k``; ``filters`` only narrow
    what the principal may see (sources, documents, types, tags, dates);
    ``mode`` (dense, sparse or hybrid) None is ``retrieval.mode``."""

    enabled: bool = True
    top_k: int | None = None
    filters: SearchFilter | None = None
    mode: SearchMode | None = None


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """The tools of one answer: ``server`` names server tools
    (``assistant.tools``) run here with the principal's permissions; ``client``
    are OpenAI tool definitions whose calls go back to the client; ``choice``
    ("required" or a named function) applies to the first turn."""

    server: tuple[str, ...] = ()
    client: tuple[dict[str, Any], ...] = ()
    choice: str | dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class AnswerRequest:
    """One question and everything about how to answer it.

    ``history``: earlier turns of the conversation; ``tool_turns``: turns after
    the question (the model's tool calls and their results); ``consent``: the
    user agrees that the trace may become training data (None: the server's
    default); ``options``: generation settings (None: the configured ones).
    """

    question: str
    history: tuple[ChatMessage, ...] = ()
    tool_turns: tuple[ChatMessage, ...] = ()
    conversation_id: str | None = None
    consent: bool | None = None
    retrieval: RetrievalSpec = field(default_factory=RetrievalSpec)
    tools: ToolSpec = field(default_factory=ToolSpec)
    options: GenerationOptions | None = None

    @classmethod
    def of(cls, question: str, *, history: Sequence[ChatMessage] = (),
           tool_turns: Sequence[ChatMessage] = (), **fields: Any) -> AnswerRequest:
        """A request with list arguments turned into the tuples it keeps."""
        return cls(question=question, history=tuple(history), tool_turns=tuple(tool_turns),
                   **fields)
