"""Chunker: exact offsets, token sizes with the model's tokenizer, overlap, no
section (page / heading) crossing, determinism."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.chunker import chunk_document, hf_token_spans, regex_token_spans
from ingest.parsers import ParsedDocument, Section, parse_file
from sirocco.errors import ConfigError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DOCS = ["guide.md", "latin1.txt", "page.html", "manual.pdf", "report.docx"]


@pytest.fixture(scope="module")
def tokenizer():
    """The embedding model's own tokenizer (tokenizers only, no torch model)."""
    from transformers import AutoTokenizer

    from ingest.embedding.model import bundled_model_path

    return AutoTokenizer.from_pretrained(str(bundled_model_path()), local_files_only=True)


def _long_doc() -> ParsedDocument:
    sentences = [
        f"Sentence number {i} talks about topic {i % 7} in some detail." for i in range(60)
    ]
    return ParsedDocument(
        title="Long",
        sections=(
            Section(" ".join(sentences[:30]), page=1),
            Section(" ".join(sentences[30:]), page=2),
            Section("A short third page.", page=3),
        ),
        format="pdf",
    )


def _n_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("name", DOCS)
def test_offsets_map_back_exactly(tokenizer, name):
    doc = parse_file(FIXTURES / name)
    chunks = chunk_document(
        doc, doc_id="d1", source=name, tokenizer=tokenizer, chunk_tokens=24, overlap_tokens=6
    )
    assert chunks
    for i, c in enumerate(chunks):
        assert c.chunk_index == i
        assert doc.full_text[c.start_char : c.end_char] == c.text
        assert c.text == c.text.strip()
        assert c.title == doc.title and c.source == name and c.doc_id == "d1"


def test_chunks_respect_token_budget_and_never_cross_sections(tokenizer):
    doc = _long_doc()
    chunks = chunk_document(
        doc, doc_id="d", source="s", tokenizer=tokenizer, chunk_tokens=40, overlap_tokens=10
    )
    bounds = [
        (s, s + len(sec.text), sec.page)
        for sec, s in zip(doc.sections, doc.section_starts, strict=True)
    ]
    for c in chunks:
        assert _n_tokens(tokenizer, c.text) <= 40
        inside = [p for s, e, p in bounds if s <= c.start_char and c.end_char <= e]
        assert inside == [c.page], f"chunk {c.chunk_index} crosses a page boundary"
    assert {c.page for c in chunks} == {1, 2, 3}
    assert chunks[-1].text == "A short third page."


def test_consecutive_chunks_overlap_and_cover_every_token(tokenizer):
    doc = _long_doc()
    chunks = chunk_document(
        doc, doc_id="d", source="s", tokenizer=tokenizer, chunk_tokens=40, overlap_tokens=10
    )
    page1 = [c for c in chunks if c.page == 1]
    assert len(page1) >= 3
    for a, b in zip(page1, page1[1:], strict=False):
        assert b.start_char < a.end_char, "no overlap"
        overlap = doc.full_text[b.start_char : a.end_char]
        assert 0 < _n_tokens(tokenizer, overlap) <= 10
    # Every token of the section lies inside some chunk.
    text = doc.sections[0].text
    covered = [(c.start_char, c.end_char) for c in page1]
    for s, e in hf_token_spans(tokenizer)(text):
        assert any(cs <= s and e <= ce for cs, ce in covered), text[s:e]


def test_windows_prefer_sentence_ends_and_starts(tokenizer):
    doc = _long_doc()
    # A sentence is 11 tokens: a 12-token overlap always holds a sentence start.
    chunks = chunk_document(
        doc, doc_id="d", source="s", tokenizer=tokenizer, chunk_tokens=40, overlap_tokens=12
    )
    for c in chunks:
        assert c.text.endswith("."), c.text
        assert c.text.startswith(("Sentence", "A short")), c.text


def test_overlap_never_starts_inside_a_word(tokenizer):
    text = " ".join(["gigawatt"] * 200)  # "gig ##awatt": two tokens per word
    doc = ParsedDocument(title="t", sections=(Section(text),), format="txt")
    chunks = chunk_document(
        doc, doc_id="d", source="s", tokenizer=tokenizer, chunk_tokens=15, overlap_tokens=5
    )
    assert len(chunks) > 5
    assert all(c.text.split(" ")[0] == "gigawatt" == c.text.split(" ")[-1] for c in chunks)


def test_no_overlap_means_adjacent_chunks(tokenizer):
    doc = _long_doc()
    chunks = chunk_document(
        doc, doc_id="d", source="s", tokenizer=tokenizer, chunk_tokens=40, overlap_tokens=0
    )
    page1 = [c for c in chunks if c.page == 1]
    for a, b in zip(page1, page1[1:], strict=False):
        assert b.start_char >= a.end_char


def test_headings_and_page_are_kept(tokenizer):
    doc = parse_file(FIXTURES / "report.docx")
    chunks = chunk_document(
        doc,
        doc_id="d",
        source="r",
        tenant="acme",
        tokenizer=tokenizer,
        chunk_tokens=200,
        overlap_tokens=20,
    )
    regions = [c for c in chunks if "| North | 8% |" in c.text]
    assert regions and regions[0].headings == ("Results", "Regions")
    assert all(c.tenant == "acme" for c in chunks)
    pdf = chunk_document(
        parse_file(FIXTURES / "manual.pdf"),
        doc_id="p",
        source="m",
        tokenizer=tokenizer,
        chunk_tokens=200,
        overlap_tokens=20,
    )
    assert [c.page for c in pdf] == [1, 2]


def test_deterministic(tokenizer):
    doc = _long_doc()
    kwargs = dict(doc_id="d", source="s", tokenizer=tokenizer, chunk_tokens=30, overlap_tokens=8)
    first = chunk_document(doc, **kwargs)
    assert first == chunk_document(doc, **kwargs)
    assert [c.id for c in first] == [c.id for c in chunk_document(doc, **kwargs)]


def test_regex_fallback_counts_words():
    doc = ParsedDocument(
        title="t", sections=(Section("one two three four five six seven."),), format="txt"
    )
    chunks = chunk_document(
        doc, doc_id="d", source="s", tokenizer=None, chunk_tokens=4, overlap_tokens=1
    )
    assert [c.text for c in chunks][0] == "one two three four"
    assert all(len(regex_token_spans(c.text)) <= 4 for c in chunks)
    assert chunks[-1].text.endswith("seven.")


def test_invalid_sizes_are_refused():
    doc = ParsedDocument(title="t", sections=(Section("x"),), format="txt")
    with pytest.raises(ConfigError, match="overlap_tokens"):
        chunk_document(doc, doc_id="d", source="s", chunk_tokens=10, overlap_tokens=10)
    with pytest.raises(ConfigError, match="chunk_tokens"):
        chunk_document(doc, doc_id="d", source="s", chunk_tokens=0, overlap_tokens=0)
