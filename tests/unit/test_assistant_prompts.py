"""Prompt building and citation parsing."""

from __future__ import annotations

from assistant.citations import cited_numbers, resolve_citations
from assistant.prompts import SYSTEM_PROMPT, build_prompt
from assistant.schemas import Source
from tests.doubles import make_hit


def _sources(count: int) -> list[Source]:
    return [Source(n=n, chunk_id=f"c{n}", doc_id=f"d{n}", title="t", source="s", snippet="x",
                   score=1.0) for n in range(1, count + 1)]


def words(text: str) -> int:
    return len(text.split())


def test_cited_numbers_in_order_without_repeats() -> None:
    assert cited_numbers("A [2]. B [1, 3][2]. C [3,4] in [2023].") == [2, 1, 3, 4]
    assert cited_numbers("no markers [x] [] [1.5]") == []


def test_resolve_drops_out_of_range_and_keeps_order() -> None:
    got, dropped = resolve_citations("x [3] y [0] z [1] w [9]", _sources(3))
    assert [(c.n, c.chunk_id, c.inferred) for c in got] == [(3, "c3", False), (1, "c1", False)]
    assert dropped == [0, 9]


def test_resolve_infers_the_top_source_only_for_a_real_answer() -> None:
    got, _ = resolve_citations("plain", _sources(2))
    assert [(c.n, c.inferred) for c in got] == [(1, True)]
    assert resolve_citations("   ", _sources(2)) == ([], [])
    assert resolve_citations("plain [1]", []) == ([], [1])


def test_build_prompt_keeps_what_fits_the_budget() -> None:
    hits = [make_hit(n, text=" ".join(["word"] * 100)) for n in (1, 2, 3)]
    base = words(SYSTEM_PROMPT) + words("Sources: Question: q")
    prompt = build_prompt("q", hits, count_tokens=words, max_prompt_tokens=base + 2 * 110)
    assert [h.chunk_id for h in prompt.hits] == ["chunk-1", "chunk-2"]
    assert "[2] Title 2" in prompt.messages[1].content
    assert "[3]" not in prompt.messages[1].content


def test_build_prompt_cuts_the_first_source_when_nothing_fits() -> None:
    hits = [make_hit(1, text=" ".join(["word"] * 500))]
    base = words(SYSTEM_PROMPT) + words("Sources: Question: q")
    prompt = build_prompt("q", hits, count_tokens=words, max_prompt_tokens=base + 50)
    assert len(prompt.hits) == 1
    assert prompt.hits[0].text.endswith("[...]")
    assert words(prompt.messages[0].content) + words(prompt.messages[1].content) <= base + 50


def test_build_prompt_without_budget_keeps_everything() -> None:
    prompt = build_prompt("q", [make_hit(n) for n in range(1, 8)])
    assert len(prompt.hits) == 7 and "[7] Title 7" in prompt.messages[1].content
