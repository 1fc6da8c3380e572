"""The answer evaluation's grading and thresholds (``assistant.evaluation``),
with a small double answering through the same event stream as the assistant."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from pathlib import Path

import pytest

from assistant.evaluation import (
    Outcome,
    QAItem,
    ask_all,
    baseline_settings,
    check_thresholds,
    deltas,
    grade,
    load_qa,
    report_of,
    summarize,
    token_f1,
    write_chart,
)
from assistant.prompts import NOT_FOUND_ANSWER
from assistant.request import AnswerRequest
from assistant.schemas import AnswerEvent, Citation, Source
from sirocco.errors import InvalidInputError
from sirocco.principal import Principal
from sirocco.settings import Settings

TRAVEL = QAItem(id="t", question="Hotel limit in London?", sources=("travel-policy.md",),
                keywords=("260", "EUR"), reference="260 EUR in London")
ZEPHYR = QAItem(id="z", question="Zephyr code?", unanswerable=True)


def _source(n: int, path: str) -> Source:
    return Source(n=n, chunk_id=f"c{n}", doc_id=f"d{n}", title=path.split("/")[-1], source=path,
                  snippet="", score=0.5)


def _outcome(answer: str, paths: list[str], cited: list[tuple[str, bool, bool | None]],
             ms: float = 100.0) -> Outcome:
    return Outcome(answer=answer, sources=[(p, p.split("/")[-1]) for p in paths],
                   citations=[{"source": p, "title": p.split("/")[-1], "inferred": inf,
                               "supported": sup} for p, inf, sup in cited],
                   finish_reason="stop", latency_ms=ms)


def test_a_cited_supported_answer_scores_on_every_measure() -> None:
    out = _outcome("The limit is 260 EUR in London [1].", ["docs/travel-policy.md", "x.md"],
                   [("docs/travel-policy.md", False, True)])
    g = grade(TRAVEL, out)
    assert (g.hit_k, g.hit_1, g.cited, g.supported, g.refused) == (True, True, True, True, False)
    assert g.keywords == 1.0
    assert 0.5 < (g.reference_f1 or 0) < 1


def test_an_inferred_citation_is_not_model_written() -> None:
    out = _outcome("It is 260.", ["x.md", "travel-policy.md"], [("x.md", True, None)])
    g = grade(TRAVEL, out)
    assert (g.hit_k, g.hit_1, g.cited, g.supported) == (True, False, False, None)
    assert g.keywords == 0.5


def test_one_unsupported_citation_makes_the_answer_unsupported() -> None:
    out = _outcome("A [1]. B [2].", ["travel-policy.md", "y.md"],
                   [("travel-policy.md", False, True), ("y.md", False, False)])
    assert grade(TRAVEL, out).supported is False


def test_refusals_are_right_on_unanswerable_and_false_on_answerable() -> None:
    refused = _outcome(NOT_FOUND_ANSWER + " Related: x.md", ["x.md"], [])
    answered = _outcome("The code is ZX-1 [1].", ["x.md"], [("x.md", False, True)])
    grades = [grade(ZEPHYR, refused), grade(TRAVEL, refused), grade(ZEPHYR, answered)]
    assert [g.refused for g in grades] == [True, True, False]
    metrics = summarize(grades)
    assert metrics["refusal"] == 0.5
    assert metrics["false_refusal"] == 1.0
    # A refused answerable question is not a cited one, even with a marker in it.
    assert grades[1].cited is False


def test_summary_and_thresholds() -> None:
    items = [TRAVEL, ZEPHYR]
    outs = [_outcome("260 EUR [1].", ["travel-policy.md"], [("travel-policy.md", False, True)],
                     ms=100), _outcome(NOT_FOUND_ANSWER, [], [], ms=300)]
    run = report_of("candidate", items, outs)
    assert run.metrics["hit_k"] == 1.0 and run.metrics["refusal"] == 1.0
    assert run.latency_ms_p50 == 200.0 and run.latency_ms_p95 >= 290
    assert check_thresholds(run.metrics, {"cited": 0.8, "refusal": 0.8},
                            {"false_refusal": 0.1}) == []
    worse = report_of("baseline", items, [_outcome("260 [1]", ["a.md"], [("a.md", True, None)]),
                                          _outcome("ZX", ["a.md"], [("a.md", True, None)])])
    failed = check_thresholds(worse.metrics, {"cited": 0.8, "refusal": 0.8, "supported": 0.7},
                              {"false_refusal": 0.0})
    assert failed == ["cited 0.000 < 0.8", "refusal 0.000 < 0.8", "supported n/a < 0.7"]
    change = deltas(run, worse)
    assert change["cited"] == 1.0 and change["refusal"] == 1.0 and change["supported"] is None


def test_expected_sources_match_by_file_name_or_title_not_by_substring() -> None:
    out = _outcome("x", ["src/old-travel-policy.md"], [])
    assert grade(TRAVEL, out).hit_k is False
    assert grade(TRAVEL, _outcome("x", ["travel-policy.md"], [])).hit_k is True


def test_token_f1() -> None:
    assert token_f1("260 EUR in London", "260 EUR in London") == 1.0
    assert token_f1("nothing", "260 EUR") == 0.0


def test_load_qa_checks_each_line(tmp_path: Path) -> None:
    good = tmp_path / "qa.jsonl"
    good.write_text(json.dumps({"question": "Q?", "sources": ["a.md"], "split": "dev"}) + "\n\n"
                    + json.dumps({"id": "u", "question": "U?", "unanswerable": True}) + "\n")
    items = load_qa(good)
    assert [(i.id, i.unanswerable, i.split) for i in items] == [("1", False, "dev"),
                                                                ("u", True, None)]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "Q?"}) + "\n")
    with pytest.raises(InvalidInputError, match="bad.jsonl:1: an answerable question needs"):
        load_qa(bad)


class _Double:
    """Answers through the assistant's event stream: the not-found sentence
    for the Zephyr question, else a cited answer."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    async def stream_answer(self, request: AnswerRequest, principal: Principal
                            ) -> AsyncGenerator[AnswerEvent, None]:
        self.asked.append((request.question, principal.tenant))
        src = _source(1, "docs/travel-policy.md")
        if "Zephyr" in request.question:
            yield AnswerEvent(type="delta", text=NOT_FOUND_ANSWER)
            yield AnswerEvent(type="done", citations=[], sources=[src], finish_reason="refused")
            return
        yield AnswerEvent(type="delta", text="260 EUR [1].")
        yield AnswerEvent(type="done", sources=[src], finish_reason="stop",
                          citations=[Citation(**src.model_dump(), supported=True)])


def test_ask_all_reads_the_event_stream(tmp_path: Path) -> None:
    double = _Double()
    outs = asyncio.run(ask_all(double, [TRAVEL, ZEPHYR], Principal(tenant="t1")))
    assert double.asked == [(TRAVEL.question, "t1"), (ZEPHYR.question, "t1")]
    run = report_of("candidate", [TRAVEL, ZEPHYR], outs)
    assert (run.metrics["cited"], run.metrics["supported"], run.metrics["refusal"]) == (
        1.0, 1.0, 1.0)
    write_chart([run], tmp_path / "r.png")
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_baseline_settings_turn_the_new_answer_path_off() -> None:
    settings = Settings(llm={"answer_format": "cited", "repetition_penalty": 1.2},
                        assistant={"refusal_min_score": 0.3})
    old = baseline_settings(settings)
    assert (old.llm.answer_format, old.llm.repetition_penalty,
            old.assistant.refusal_min_score) == ("free", 1.0, None)
    assert settings.llm.answer_format == "cited"


def test_the_threshold_is_chosen_on_dev_without_false_refusals_and_scored_on_test() -> None:
    from assistant.evaluation import calibrate

    def item(i: int, split: str, unanswerable: bool) -> QAItem:
        return QAItem(id=str(i), question="q", sources=("a",), unanswerable=unanswerable,
                      split=split)

    rows = [(0.1, "dev", True), (0.35, "dev", True), (0.3, "dev", False), (0.6, "dev", False),
            (0.2, "test", True), (0.32, "test", True), (0.28, "test", False),
            (0.7, "test", False)]
    items = [item(i, s, u) for i, (_, s, u) in enumerate(rows)]
    found = calibrate(items, [r for r, _, _ in rows])
    # 0.35 (unanswerable) is above 0.3 (answerable): refusing it would refuse
    # an answerable one, so the cut stays between 0.1 and 0.3.
    assert found["threshold"] == 0.2
    assert found["dev"] == {"questions": 4, "refusal": 0.5, "false_refusal": 0.0}
    assert found["test"] == {"questions": 4, "refusal": 0.0, "false_refusal": 0.0}
    lenient = calibrate(items, [r for r, _, _ in rows], max_false_refusal=0.5)
    assert lenient["threshold"] == 0.475 and lenient["dev"]["refusal"] == 1.0
    assert calibrate(items[:1], [0.1])["threshold"] is None
