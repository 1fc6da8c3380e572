"""The standalone query: a follow-up question rewritten with the chat history.

"And for contractors?" retrieves nothing useful on its own. When the question
has history and reads like a follow-up (a pronoun or demonstrative, or only a
few content words), the model rewrites it as one self-contained question.
Small models sometimes return junk; a rewrite is kept only if it is a single
short line sharing a content word with the question or the recent turns,
otherwise the previous user question and this one are joined instead (cheap,
and still gives retrieval the missing subject).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from contextlib import aclosing
from typing import Literal

from llm.engine import Engine
from sirocco.types import ChatMessage, GenerationOptions

logger = logging.getLogger(__name__)

REWRITE_PROMPT = (
    "Rewrite the last question of the conversation as one standalone question that can be "
    "understood without the conversation. Reply with the question only."
)
_FOLLOW_UP = re.compile(
    r"\b(it|its|this|that|these|those|they|them|their|he|she|him|her|there|then|same|"
    r"above|previous|former|latter|one|ones|else|also|too)\b", re.IGNORECASE)
_WORD = re.compile(r"\w{3,}", re.UNICODE)
MAX_QUERY_CHARS = 400
RECENT_TURNS = 4


def needs_rewrite(question: str, history: Sequence[ChatMessage],
                  mode: Literal["off", "auto", "always"] = "auto") -> bool:
    """Whether ``question`` should be rewritten before retrieval."""
    if mode == "off" or not any(m.role == "user" for m in history):
        return False
    if mode == "always":
        return True
    return bool(_FOLLOW_UP.search(question)) or len(_WORD.findall(question)) <= 3


def _recent(history: Sequence[ChatMessage]) -> list[ChatMessage]:
    turns = [m for m in history if m.role in ("user", "assistant") and m.content.strip()]
    return turns[-RECENT_TURNS:]


def fallback_query(question: str, history: Sequence[ChatMessage]) -> str:
    """The previous user question joined with this one."""
    previous = [m.content.strip() for m in history if m.role == "user" and m.content.strip()]
    return f"{previous[-1]} {question}" if previous else question


def acceptable(rewrite: str, question: str, history: Sequence[ChatMessage]) -> bool:
    """A usable rewrite: one line, not too long, sharing a word with the conversation."""
    if not rewrite or "\n" in rewrite or len(rewrite) > MAX_QUERY_CHARS:
        return False
    known = {w.lower() for m in [*_recent(history), ChatMessage("user", question)]
             for w in _WORD.findall(m.content)}
    return bool(known & {w.lower() for w in _WORD.findall(rewrite)})


async def standalone_query(engine: Engine, question: str, history: Sequence[ChatMessage],
                           *, request_id: str | None = None) -> str:
    """``question`` rewritten to stand alone (greedy, at most 64 tokens), or the
    fallback query when the model's rewrite is not usable."""
    lines = [f"{m.role}: {' '.join(m.content.split())[:500]}" for m in _recent(history)]
    messages = [ChatMessage("system", REWRITE_PROMPT),
                ChatMessage("user", "Conversation:\n" + "\n".join(lines)
                            + f"\n\nLast question: {question}")]
    parts: list[str] = []
    stream = engine.generate(messages, options=GenerationOptions(max_tokens=64, temperature=0.0),
                             request_id=f"{request_id}-rewrite" if request_id else None)
    async with aclosing(stream):
        async for event in stream:
            if event.kind == "text":
                parts.append(event.text)
    rewrite = " ".join("".join(parts).strip().strip('"').split("\n")[0].split())
    if acceptable(rewrite, question, history):
        return rewrite
    logger.info("query rewrite not usable; joining with the previous question",
                extra={"rewrite": rewrite[:200]})
    return fallback_query(question, history)
