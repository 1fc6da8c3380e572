"""Context packing: near-duplicates, merging adjacent chunks, the token budget."""

from __future__ import annotations

from retrieval.packing import drop_near_duplicates, merge_adjacent, pack
from sirocco.types import SearchHit

FULL = ("Mount the unit behind the seat. Connect the main cable to the power supply. "
        "Check every screw. Use only shielded cables. Unshielded cables cause drift.")


def _hit(doc: str, idx: int, start: int, end: int, text: str | None = None,
         score: float = 1.0) -> SearchHit:
    return SearchHit(chunk_id=f"{doc}:{idx}", doc_id=doc, chunk_index=idx,
                     text=FULL[start:end] if text is None else text, title=doc,
                     source=f"/{doc}", score=score, start_char=start, end_char=end)


def test_overlapping_and_consecutive_chunks_become_one_continuous_source():
    a, b, c = _hit("g", 0, 0, 75), _hit("g", 1, 60, 120), _hit("g", 2, 121, len(FULL))
    other = _hit("m", 0, 0, 20, text="Turbine service.")
    # Ranked: b, other, c, a -> the merged guide sits at b's rank, first.
    merged = merge_adjacent([b, other, c, a])
    assert [h.doc_id for h in merged] == ["g", "m"]
    g = merged[0]
    # The overlap is written once; the whitespace gap before c becomes a break.
    assert g.text == FULL[:120] + "\n\n" + FULL[121:]
    assert (g.start_char, g.end_char) == (0, len(FULL))
    assert g.covers == ("g:0", "g:1", "g:2") and g.chunk_id == "g:1"
    assert merged[1].covers == ()  # a single chunk stays as it was


def test_chunks_far_apart_in_a_document_stay_separate():
    far = merge_adjacent([_hit("g", 0, 0, 30), _hit("g", 5, 120, len(FULL))])
    assert len(far) == 2 and all(h.covers == () for h in far)


def test_near_duplicates_of_other_documents_are_dropped():
    text = "The bora maintenance window starts Friday at 22:00 in the harbour."
    hits = [_hit("mail", 0, 0, 10, text=text),
            _hit("fwd", 0, 0, 10, text="Fwd: " + text),
            _hit("other", 0, 0, 10, text="The harbour office opens at seven.")]
    assert [h.doc_id for h in drop_near_duplicates(hits)] == ["mail", "other"]


def test_pack_keeps_the_best_sources_that_fit_the_budget():
    hits = [_hit("a", 0, 0, 30), _hit("b", 0, 60, 90), _hit("c", 0, 120, 150)]
    kept = pack(hits, count_tokens=lambda h: 10, budget=25)
    assert [h.doc_id for h in kept] == ["a", "b"]
