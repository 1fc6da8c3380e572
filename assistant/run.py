"""One answer in progress (``AnswerRun``: what the trace is built from), and
the small mappings ``assistant.service`` uses to report it."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from assistant.prompts import SYSTEM_PROMPT, cited_answer_pattern, quoted_answer_pattern
from assistant.schemas import AnswerUsage, Source
from sirocco.errors import EngineError, SiroccoError, UnavailableError
from sirocco.settings import LLMSettings
from sirocco.types import GenerationOptions, SearchHit, Usage

SNIPPET_CHARS = 300
#: Recorded on traces: which prompt produced an answer, and which version of it
#: (a hash of the system prompt, so an edited prompt shows up in exports).
RAG_TEMPLATE = "rag-answer"
CITED_TEMPLATE = "rag-answer-cited"
PLAIN_TEMPLATE = "plain-chat"
TEMPLATE_VERSION = hashlib.sha256(SYSTEM_PROMPT.encode()).hexdigest()[:12]


@dataclass(slots=True)
class AnswerRun:
    """What one answer has produced so far: the trace is built from it."""

    phase: str = "retrieval"
    retrieved: list[dict[str, Any]] = field(default_factory=list)
    prompt: list[dict[str, Any]] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)
    model: str | None = None
    usage: Usage | None = None
    finish_reason: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    tools: list[dict[str, Any]] | None = None
    template: str | None = None
    #: The question is not covered: no source is close enough (a refusal).
    not_covered: bool = False
    #: The texts of the sources shown under a constrained answer format
    #: (``llm.answer_format`` "cited" or "quoted"; empty: free text).
    shown: list[str] = field(default_factory=list)

    @property
    def answer(self) -> str:
        return "".join(self.parts)

    def trace_fields(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "retrieved": self.retrieved,
            "prompt": self.prompt,
            "model": self.model,
            "prompt_tokens": self.usage.prompt_tokens if self.usage else None,
            "completion_tokens": self.usage.completion_tokens if self.usage else None,
            "tool_calls": self.tool_calls,
            "tools": self.tools,
            "finish_reason": self.finish_reason,
            "prompt_template": self.template,
            "prompt_template_version": TEMPLATE_VERSION if self.template else None,
        }


def source_of(n: int, hit: SearchHit) -> Source:
    """Source number ``n``: ``hit`` with a short snippet."""
    snippet = " ".join(hit.text.split())
    if len(snippet) > SNIPPET_CHARS:
        snippet = snippet[:SNIPPET_CHARS].rstrip() + "…"
    return Source(
        n=n, chunk_id=hit.chunk_id, doc_id=hit.doc_id, title=hit.title, source=hit.source,
        page=hit.page, start_char=hit.start_char, end_char=hit.end_char, snippet=snippet,
        score=float(hit.score), chunk_ids=list(hit.covers or (hit.chunk_id,)),
    )


def usage_of(usage: Usage | None) -> AnswerUsage:
    """The engine's token counts as the API reports them."""
    if usage is None:
        return AnswerUsage()
    return AnswerUsage(prompt_tokens=usage.prompt_tokens,
                       completion_tokens=usage.completion_tokens,
                       total_tokens=usage.total_tokens)


def domain_error(exc: Exception, phase: str) -> SiroccoError:
    """The error a user should see; unexpected exceptions get a generic message
    (details go to the log and the trace, not to the client)."""
    if isinstance(exc, SiroccoError):
        return exc
    if phase == "generation":
        return EngineError("the language model failed while generating the answer")
    return UnavailableError("searching the indexed documents failed; try again later")


def generation_options(llm: LLMSettings, requested: GenerationOptions | None,
                       shown: Sequence[str]) -> GenerationOptions:
    """The request's options (None: the configured ``max_tokens`` and
    ``temperature``), with the configured repetition controls unless the
    request set its own, and the answer pattern of ``llm.answer_format`` when
    sources were shown (``shown``: their texts, source 1 first)."""
    options = requested or GenerationOptions(max_tokens=llm.max_tokens,
                                             temperature=llm.temperature)
    if options.repetition_penalty == 1.0 and options.frequency_penalty == 0.0:
        options = replace(options, repetition_penalty=llm.repetition_penalty,
                          frequency_penalty=llm.frequency_penalty)
    if shown and options.regex is None and llm.answer_format != "free":
        options = replace(options, regex=cited_answer_pattern(len(shown))
                          if llm.answer_format == "cited" else quoted_answer_pattern(shown))
    return options
