"""Refusal when no source is close enough (``assistant.refusal_min_score``),
the cited answer format (``llm.answer_format``) and the repetition controls,
with scripted doubles."""

from __future__ import annotations

import re

import pytest

from assistant.prompts import (
    CITED_SYSTEM_PROMPT,
    NOT_FOUND_ANSWER,
    QUOTED_SYSTEM_PROMPT,
    SYSTEM_PROMPT,
    cited_answer_pattern,
    not_covered_answer,
    quoted_answer_pattern,
)
from assistant.service import Assistant
from sirocco.settings import Settings
from sirocco.types import GenerationOptions
from tests.answering import ask
from tests.doubles import ConstantEmbedder, ScriptedEngine, StaticStore, make_hit
from traces.recorder import TraceRecorder


def _settings(**assistant: object) -> Settings:
    return Settings(env="test", retrieval={"top_k": 3},
                    llm={"answer_format": "cited", "repetition_penalty": 1.15},
                    assistant=assistant)


async def _answer(factory, settings: Settings, engine: ScriptedEngine, store: StaticStore,
                  **kw):
    assistant = Assistant(engine, store, ConstantEmbedder(), TraceRecorder(factory), settings)
    return [e async for e in assistant.stream_answer(*ask("What is the Zephyr code?", **kw))]


async def test_no_close_source_refuses_without_the_model_and_lists_related(factory) -> None:
    engine = ScriptedEngine(["invented [1]."])
    store = StaticStore([make_hit(1, score=0.21, title="Travel policy"), make_hit(2, score=0.2)])
    events = await _answer(factory, _settings(refusal_min_score=0.3), engine, store)
    assert engine.calls == [], "a refusal never asks the model"
    assert [e.type for e in events] == ["delta", "done"]
    assert events[0].text == f"{NOT_FOUND_ANSWER} Related documents: Travel policy; Title 2."
    done = events[-1]
    assert done.citations == [] and done.finish_reason == "not_covered"
    assert [s.title for s in done.sources] == ["Travel policy", "Title 2"]
    # The relevance is the closest chunk by dense similarity, within the caller's filter.
    dense = [s for s in store.searches if s["mode"] == "dense"]
    assert dense and dense[0]["top_k"] == 1 and dense[0]["filter"].caller is not None


async def test_a_close_source_is_answered_with_the_cited_pattern(factory) -> None:
    engine = ScriptedEngine(["[1] The code is ZX-1."])
    store = StaticStore([make_hit(1, score=0.8), make_hit(2, score=0.5)])
    events = await _answer(factory, _settings(refusal_min_score=0.3), engine, store)
    assert events[-1].citations[0].inferred is False
    [options] = engine.options
    assert options.repetition_penalty == 1.15
    assert options.regex == cited_answer_pattern(2)
    assert engine.calls[0][0].content == CITED_SYSTEM_PROMPT


async def test_free_format_and_no_threshold_are_the_old_path(factory) -> None:
    settings = Settings(env="test", retrieval={"top_k": 3},
                        llm={"answer_format": "free", "repetition_penalty": 1.0},
                        assistant={"refusal_min_score": None})
    engine = ScriptedEngine(["Anything."])
    store = StaticStore([make_hit(1, score=0.01)])
    await _answer(factory, settings, engine, store)
    [options] = engine.options
    assert (options.regex, options.repetition_penalty) == (None, 1.0)
    assert engine.calls[0][0].content == SYSTEM_PROMPT
    assert all(s["mode"] != "dense" for s in store.searches)


async def test_a_request_with_its_own_penalty_keeps_it(factory) -> None:
    engine = ScriptedEngine(["X [1]."])
    store = StaticStore([make_hit(1, score=0.9)])
    await _answer(factory, _settings(), engine, store,
                  options=GenerationOptions(max_tokens=8, frequency_penalty=0.5))
    [options] = engine.options
    assert (options.frequency_penalty, options.repetition_penalty) == (0.5, 1.0)


@pytest.mark.parametrize(("text", "ok"), [
    ("[1] The code is ZX-4471.", True),
    ("[2] It costs 3.5 EUR under U.S.C § 1302.", True),
    (NOT_FOUND_ANSWER, False),                 # refusals are decided before
    ("The code is ZX-4471.", False),           # no marker
    ("[3] The code is ZX-4471.", False),       # no source 3
    ("[1] The code is ZX-4471", False),        # no full stop
    ("[1] A. B.", False),  # one sentence
    ("[1] A [2].", False),  # one marker
])
def test_the_cited_pattern(text: str, ok: bool) -> None:
    assert bool(re.fullmatch(cited_answer_pattern(2), text)) is ok


def test_the_refusal_names_each_related_document_once() -> None:
    assert not_covered_answer(["A", "B", "A", " "]) == (
        f"{NOT_FOUND_ANSWER} Related documents: A; B.")
    assert not_covered_answer([]) == NOT_FOUND_ANSWER


def test_the_quoted_pattern_allows_a_sentence_of_the_cited_source_only() -> None:
    pattern = quoted_answer_pattern(["Project Zephyr (ZX) is big.\nThe code is ZX-4471. ok",
                                     "Limit: 180 EUR [x] $5."])
    assert re.fullmatch(pattern, "[1] The code is ZX-4471.")
    assert re.fullmatch(pattern, "[1] Project Zephyr (ZX) is big.")
    assert re.fullmatch(pattern, "[2] Limit: 180 EUR [x] $5.")
    assert not re.fullmatch(pattern, "[2] The code is ZX-4471.")   # not in source 2
    assert not re.fullmatch(pattern, "[1] The code is ZX-4472.")   # not word for word
    assert not re.fullmatch(pattern, "[1] ok")                     # under three words


async def test_the_quoted_format_sends_the_shown_sources_pattern(factory) -> None:
    settings = Settings(env="test", retrieval={"top_k": 3}, llm={"answer_format": "quoted"})
    engine = ScriptedEngine(["[1] Fact number 1 is written here."])
    store = StaticStore([make_hit(1, score=0.8)])
    events = await _answer(factory, settings, engine, store)
    [options] = engine.options
    assert options.regex == quoted_answer_pattern(["Fact number 1 is written here."])
    assert engine.calls[0][0].content == QUOTED_SYSTEM_PROMPT
    [citation] = events[-1].citations
    assert (citation.inferred, citation.supported) == (False, True)


def test_the_bundled_model_defaults_and_a_model_of_ones_own() -> None:
    bundled = Settings(env="test")
    assert (bundled.llm.answer_format, bundled.llm.repetition_penalty) == ("quoted", 1.1)
    assert bundled.assistant.refusal_min_score == 0.299
    own = Settings(env="test", llm={"model": "mistralai/Mistral-7B-Instruct-v0.3"})
    assert (own.llm.answer_format, own.llm.repetition_penalty) == ("free", 1.0)
    remote = Settings(env="test", llm={"provider": "openai", "answer_format": "cited"})
    assert (remote.llm.answer_format, remote.llm.repetition_penalty) == ("cited", 1.0)


async def test_a_refusal_trace_is_a_conversation_for_the_exports(factory) -> None:
    from sirocco.db import session_scope
    from traces.repository import get_trace

    store = StaticStore([make_hit(1, score=0.1)])
    events = await _answer(factory, _settings(refusal_min_score=0.3), ScriptedEngine(), store)
    with session_scope(factory) as session:
        trace = get_trace(session=session, trace_id=events[-1].trace_id or "")
        assert trace.prompt == [{"role": "user", "content": "What is the Zephyr code?"}]
        assert trace.answer.startswith(NOT_FOUND_ANSWER)


def test_a_quoted_answer_is_offered_the_sentence_closest_to_the_question() -> None:
    from assistant.citations import SupportChecker
    from assistant.prompts import focus_sentences

    text = ("Project Zephyr is the internal program of the company.\n\n"
            "The Zephyr project code is ZX-4471.\n\nThe committee meets on Tuesdays.")
    terms = SupportChecker().terms
    assert focus_sentences("What is the Zephyr project code?", [text], terms) == [
        "The Zephyr project code is ZX-4471."]
    assert focus_sentences("When does the committee meet?", [text], terms, keep=2) == [
        "The committee meets on Tuesdays.\n\nProject Zephyr is the internal program of the "
        "company."]
