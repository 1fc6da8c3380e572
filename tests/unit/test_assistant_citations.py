"""Verified citations: each cited sentence is checked against its chunk."""

from __future__ import annotations

from assistant.citations import (
    SupportChecker,
    resolve_citations,
    says_not_found,
    split_sentences,
    strip_markers,
)
from assistant.prompts import NOT_FOUND_ANSWER
from assistant.schemas import Source
from tests.answering import ask

TRAVEL = ("Travel policy. Employees book economy class for flights shorter than six hours. "
          "Business class is allowed on longer flights with a manager's approval.")
PARKING = ("Parking. The garage on level -2 is reserved for visitors. Staff park on "
           "level -1 and must display their badge.")


def _source(n: int, text: str, start: int = 1000) -> Source:
    return Source(n=n, chunk_id=f"c{n}", doc_id=f"d{n}", title=f"T{n}", source=f"/s/{n}.pdf",
                  page=n, start_char=start, end_char=start + len(text), snippet=text[:40],
                  score=0.9)


def test_sentences_keep_their_markers_including_after_the_full_stop() -> None:
    got = split_sentences("Economy under 6.5 hours [1]. Visitors park on -2. [2] Done")
    assert [(s.text, s.cited) for s in got] == [
        ("Economy under 6.5 hours.", (1,)), ("Visitors park on -2.", (2,)), ("Done", ())]


def test_a_sentence_its_cited_chunk_does_not_support_is_flagged() -> None:
    # The draft cites [2] (parking) for a travel claim: a shifted citation.
    draft = ("Flights shorter than six hours are booked in economy class [1]. "
             "Business class on long flights needs a manager's approval [2].")
    sources = [_source(1, TRAVEL), _source(2, PARKING, start=5000)]
    citations, dropped = resolve_citations(draft, sources, {1: TRAVEL, 2: PARKING})

    assert dropped == []
    by_n = {c.n: c for c in citations}
    assert by_n[1].supported is True and by_n[1].support >= 0.8
    assert by_n[2].supported is False and by_n[2].support < 0.5
    assert by_n[2].claims[0].sentence.startswith("Business class on long flights")
    # The supporting passage of [1] is the economy sentence, at document offsets.
    economy = "Employees book economy class for flights shorter than six hours."
    assert by_n[1].snippet == economy
    assert by_n[1].snippet_start == 1000 + TRAVEL.index(economy)
    assert by_n[1].snippet_end == by_n[1].snippet_start + len(economy)
    assert (by_n[1].doc_id, by_n[1].title, by_n[1].source, by_n[1].page) == (
        "d1", "T1", "/s/1.pdf", 1)


def test_stemming_counts_inflected_words_as_support() -> None:
    checker = SupportChecker()
    assert checker.support("Employees booked economy flights", TRAVEL) == 1.0
    assert checker.support("Managers approve business flights", TRAVEL) == 1.0
    assert checker.support("Visitors reserve the garage", TRAVEL) == 0.0


def test_citations_to_chunks_not_in_the_context_are_removed() -> None:
    draft = "Economy for short flights [1, 7]. Parking is free [9]."
    citations, dropped = resolve_citations(draft, [_source(1, TRAVEL)], {1: TRAVEL})
    assert [c.n for c in citations] == [1]
    assert dropped == [7, 9]
    assert strip_markers(draft, dropped) == "Economy for short flights [1]. Parking is free."


def test_negations_are_terms_of_the_support_check() -> None:
    checker = SupportChecker()
    # "no" and "not" are stop words of the BM25 analyzer; here they count.
    assert {"not", "no", "never"} <= checker.terms("Not here, no, never.")
    assert "not" in checker.terms("Visitors can't park and aren't welcome.")


def test_a_negated_claim_is_not_supported_by_a_chunk_that_affirms_it() -> None:
    checker = SupportChecker()
    affirmed = "Business class is allowed on longer flights."
    denied = "Business class is not allowed on longer flights."
    assert checker.support(denied, TRAVEL) == 0.0
    assert checker.support(affirmed, "Business class isn't allowed on longer flights.") == 0.0
    # Same polarity on both sides: the negation is one more shared term.
    assert checker.support(denied, "Business class is never allowed. Not on longer "
                                   "flights either.") >= 0.8
    assert checker.support(affirmed, TRAVEL) == 1.0
    citations, _ = resolve_citations(f"{denied} [1]", [_source(1, TRAVEL)], {1: TRAVEL})
    assert [(c.n, c.supported, c.support) for c in citations] == [(1, False, 0.0)]


def test_a_claim_without_content_words_gets_no_support() -> None:
    checker = SupportChecker()
    assert checker.support("That is it.", TRAVEL) == 0.0
    assert checker.support("No, it is not.", TRAVEL) == 0.0
    citations, _ = resolve_citations("That is it [1].", [_source(1, TRAVEL)], {1: TRAVEL})
    assert [(c.n, c.inferred, c.supported) for c in citations] == [(1, False, False)]


def test_the_not_found_answer_gets_no_inferred_citation() -> None:
    sources = [_source(1, TRAVEL), _source(2, PARKING, start=5000)]
    for answer in (NOT_FOUND_ANSWER, f'"{NOT_FOUND_ANSWER}"',
                   "i couldn't find this in the indexed documents! Sorry."):
        assert says_not_found(answer), answer
        assert resolve_citations(answer, sources, {1: TRAVEL, 2: PARKING}) == ([], [])
    # Any other uncited answer is still attributed to the top source, as inferred.
    assert not says_not_found("Economy class. I could not find this in the indexed documents.")
    citations, _ = resolve_citations("Economy class.", sources, {1: TRAVEL, 2: PARKING})
    assert [(c.n, c.inferred, c.supported) for c in citations] == [(1, True, None)]


def test_an_inferred_citation_locates_the_passage_closest_to_the_answer() -> None:
    """Not checked (supported stays None, no claims), but the reader is shown
    where in the top source the answer's words are: the offsets a UI highlights."""
    sources = [_source(1, TRAVEL), _source(2, PARKING, start=5000)]
    [c], _ = resolve_citations("You may fly business class on longer flights.", sources,
                               {1: TRAVEL, 2: PARKING})
    assert (c.inferred, c.supported, c.support, c.claims) == (True, None, None, [])
    assert c.snippet.startswith("Business class is allowed")
    assert TRAVEL[c.snippet_start - 1000:c.snippet_end - 1000] == c.snippet
    # Without the texts (nothing to search) it keeps the source's own snippet.
    [c], _ = resolve_citations("You may fly business class.", sources)
    assert (c.snippet, c.snippet_start) == (TRAVEL[:40], None)


# ------------------------------------------------------------ through the assistant


async def test_the_answer_flags_an_unsupported_citation_in_response_and_trace(factory) -> None:
    from assistant.service import Assistant
    from sirocco.db import session_scope
    from sirocco.settings import Settings
    from tests.doubles import ConstantEmbedder, ScriptedEngine, StaticStore, make_hit
    from traces.recorder import TraceRecorder
    from traces.repository import get_trace

    store = StaticStore([make_hit(1, text=TRAVEL), make_hit(2, text=PARKING)])
    engine = ScriptedEngine(["Short flights are booked in economy class [1]. ",
                             "Business class needs a manager's approval [2]. Free lunch [5]."])
    assistant = Assistant(engine, store, ConstantEmbedder(), TraceRecorder(factory),
                          Settings(env="test", traces={"background": False}))
    result = await assistant.answer(*ask("Which class do I fly?"))

    assert [(c.n, c.supported) for c in result.citations] == [(1, True), (2, False)]
    assert result.dropped_citations == [5]
    assert "[5]" not in result.answer and "[2]" in result.answer
    with session_scope(factory) as session:
        trace = get_trace(session=session, trace_id=result.trace_id)
        stored = {c["n"]: c for c in trace.citations}
        cited = {c.chunk_id: c.cited for c in trace.chunks}
    assert stored[2]["supported"] is False and stored[2]["claims"][0]["support"] < 0.5
    assert stored[1]["supported"] is True
    # Only the supported citation marks its chunk cited.
    assert cited == {"chunk-1": True, "chunk-2": False}


async def test_the_model_saying_not_found_gets_no_citation_and_cites_no_chunk(factory) -> None:
    from assistant.service import Assistant
    from sirocco.db import session_scope
    from sirocco.settings import Settings
    from tests.doubles import ConstantEmbedder, ScriptedEngine, StaticStore, make_hit
    from traces.recorder import TraceRecorder
    from traces.repository import get_trace

    store = StaticStore([make_hit(1, text=TRAVEL), make_hit(2, text=PARKING)])
    engine = ScriptedEngine([NOT_FOUND_ANSWER])
    assistant = Assistant(engine, store, ConstantEmbedder(), TraceRecorder(factory),
                          Settings(env="test", traces={"background": False}))
    result = await assistant.answer(*ask("Who owns the moon?"))

    assert (result.answer, result.citations) == (NOT_FOUND_ANSWER, [])
    assert [s.n for s in result.sources] == [1, 2]
    with session_scope(factory) as session:
        trace = get_trace(session=session, trace_id=result.trace_id)
        assert trace.citations == []
        assert [(c.chunk_id, c.cited) for c in trace.chunks] == [
            ("chunk-1", False), ("chunk-2", False)]


async def test_a_follow_up_is_rewritten_into_a_standalone_query(factory) -> None:
    from assistant.service import Assistant
    from sirocco.settings import Settings
    from sirocco.types import ChatMessage
    from tests.doubles import ConstantEmbedder, ScriptedEngine, StaticStore, make_hit
    from traces.recorder import TraceRecorder

    store = StaticStore([make_hit(1, text=TRAVEL)])
    engine = ScriptedEngine(["Economy [1]."], steps=[
        ["Which travel class do contractors book for flights?"]])
    history = [ChatMessage("user", "Which travel class do employees book for flights?"),
               ChatMessage("assistant", "Economy class for short flights [1].")]
    result = await Assistant(engine, store, ConstantEmbedder(), TraceRecorder(factory),
                             Settings(env="test", traces={"background": False})).answer(*ask(
        "And for contractors?", history=history))
    assert store.searches[0]["text"] == "Which travel class do contractors book for flights?"
    assert result.query == "Which travel class do contractors book for flights?"
    # The answer itself is asked with the user's words, in the conversation.
    assert engine.calls[1][-1].content.endswith("Question: And for contractors?")
