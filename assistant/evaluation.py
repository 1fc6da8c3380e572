"""Answer evaluation: a QA set asked through ``Assistant.stream_answer`` (the
path of ``/api/chat``), graded per question and overall.

A QA set is JSONL, one question a line::

    {"id": "q1", "question": "...", "sources": ["travel-policy.md"],
     "keywords": ["180 EUR"], "reference": "...", "split": "dev"}
    {"id": "q2", "question": "...", "unanswerable": true}

``sources`` name the expected documents (a file name, matched against the end
of a source's display path, or a title); ``keywords`` must appear in the
answer (case-insensitive); ``reference`` is scored by token F1; ``split``
(optional) lets a threshold be chosen on one part and reported on another.

Measures (``summarize``), over answerable questions unless said otherwise:
``hit_k`` an expected document among the sources; ``hit_1`` the first
citation is an expected document; ``cited`` at least one model-written
(not ``inferred``) citation; ``supported`` of the cited answers, the share
whose model-written citations are all ``supported``; ``keywords`` mean share
of keywords found; ``reference_f1``; ``refusal`` share of unanswerable
questions answered with the not-found sentence; ``false_refusal`` share of
answerable ones refused; latency p50/p95 of the whole answer.
"""

from __future__ import annotations

import json
import re
import statistics
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from assistant.citations import says_not_found
from assistant.request import AnswerRequest
from assistant.schemas import AnswerEvent
from sirocco.errors import InvalidInputError
from sirocco.principal import Principal
from sirocco.settings import Settings

#: Overall measures, in report order; ``false_refusal`` is the one where lower is better.
MEASURES = ("hit_k", "hit_1", "cited", "supported", "keywords", "reference_f1", "refusal",
            "false_refusal")
LOWER_IS_BETTER = frozenset({"false_refusal"})
_TOKEN = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True, slots=True)
class QAItem:
    """One question of a QA set."""

    id: str
    question: str
    sources: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    reference: str | None = None
    unanswerable: bool = False
    split: str | None = None


@dataclass(slots=True)
class Outcome:
    """What the assistant answered to one question."""

    answer: str
    #: Display path and title of each source, in source order.
    sources: list[tuple[str, str]]
    #: Each citation: source path, title, inferred, supported.
    citations: list[dict[str, Any]]
    finish_reason: str | None
    latency_ms: float
    error: str | None = None


@dataclass(slots=True)
class Grade:
    """One question's grades (None: does not apply to this question)."""

    id: str
    unanswerable: bool
    refused: bool
    hit_k: bool | None = None
    hit_1: bool | None = None
    cited: bool | None = None
    supported: bool | None = None
    keywords: float | None = None
    reference_f1: float | None = None
    latency_ms: float = 0.0
    answer: str = ""
    error: str | None = None


@dataclass(slots=True)
class RunReport:
    """The grades and the overall measures of one run (one configuration)."""

    name: str
    grades: list[Grade]
    metrics: dict[str, float | None]
    latency_ms_p50: float
    latency_ms_p95: float
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "metrics": self.metrics,
                "latency_ms_p50": self.latency_ms_p50, "latency_ms_p95": self.latency_ms_p95,
                "settings": self.settings, "questions": [asdict(g) for g in self.grades]}


class Answerer(Protocol):
    """The part of ``Assistant`` the evaluation needs."""

    def stream_answer(self, request: AnswerRequest, principal: Principal
                      ) -> AsyncGenerator[AnswerEvent, None]: ...


def baseline_settings(settings: Settings) -> Settings:
    """``settings`` as answers were made before issue 20 (the peer of
    ``sirocco eval answers --baseline``): the free-form prompt, no refusal
    threshold, no repetition penalty."""
    llm = settings.llm.model_copy(update={"answer_format": "free", "repetition_penalty": 1.0,
                                          "frequency_penalty": 0.0})
    assistant = settings.assistant.model_copy(update={"refusal_min_score": None})
    return settings.model_copy(update={"llm": llm, "assistant": assistant})


# ------------------------------------------------------------------ loading


def load_qa(path: Path) -> list[QAItem]:
    """The QA set in ``path`` (JSONL); ``InvalidInputError`` names the first bad
    line (no question, or an answerable question with nothing to check)."""
    items: list[QAItem] = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"{path}:{number}: not JSON ({exc.msg})") from exc
        question = str(row.get("question") or "").strip()
        if not question:
            raise InvalidInputError(f"{path}:{number}: no question")
        item = QAItem(id=str(row.get("id") or number), question=question,
                      sources=tuple(row.get("sources") or ()),
                      keywords=tuple(row.get("keywords") or ()),
                      reference=row.get("reference"), unanswerable=bool(row.get("unanswerable")),
                      split=row.get("split"))
        if not item.unanswerable and not (item.sources or item.keywords or item.reference):
            raise InvalidInputError(f"{path}:{number}: an answerable question needs sources, "
                                    "keywords or a reference")
        items.append(item)
    if not items:
        raise InvalidInputError(f"{path}: no questions")
    return items


# ------------------------------------------------------------------ asking


async def ask_all(answerer: Answerer, items: Sequence[QAItem], principal: Principal,
                  make_request: Callable[[str], AnswerRequest] = AnswerRequest.of,
                  ) -> list[Outcome]:
    """Each question asked in turn (one at a time, so latency is the answer's own)."""
    return [await ask_one(answerer, make_request(item.question), principal) for item in items]


async def ask_one(answerer: Answerer, request: AnswerRequest, principal: Principal) -> Outcome:
    """One answer, collected from the event stream; a failure is recorded, not raised."""
    started = time.perf_counter()
    parts: list[str] = []
    done: AnswerEvent | None = None
    error: str | None = None
    try:
        async for event in answerer.stream_answer(request, principal):
            if event.type == "delta":
                parts.append(event.text or "")
            elif event.type == "done":
                done = event
            elif event.type == "error":
                error = event.message or "error"
    except Exception as exc:  # the gate reports a failed question, it does not stop
        error = f"{type(exc).__name__}: {exc}"
    latency = (time.perf_counter() - started) * 1000
    sources = [(s.source, s.title) for s in (done.sources or [])] if done else []
    citations = [{"source": c.source, "title": c.title, "inferred": c.inferred,
                  "supported": c.supported} for c in (done.citations or [])] if done else []
    return Outcome(answer="".join(parts), sources=sources, citations=citations,
                   finish_reason=done.finish_reason if done else None, latency_ms=latency,
                   error=error)


# ------------------------------------------------------------------ grading


def is_refusal(outcome: Outcome) -> bool:
    """The answer says the documents do not hold it (the not-found sentence)."""
    return outcome.error is None and says_not_found(outcome.answer)


def matches(expected: str, path: str, title: str) -> bool:
    """``expected`` (a file name or title) names the document at ``path`` / ``title``."""
    want = expected.strip().lower()
    p = path.strip().lower()
    return bool(want) and (p == want or p.endswith("/" + want) or title.strip().lower() == want)


def grade(item: QAItem, outcome: Outcome) -> Grade:
    """One question's grades: refusal for an unanswerable one, the rest for an
    answerable one (refused answerable questions count as not cited, no keyword)."""
    refused = is_refusal(outcome)
    g = Grade(id=item.id, unanswerable=item.unanswerable, refused=refused,
              latency_ms=round(outcome.latency_ms, 1), answer=outcome.answer,
              error=outcome.error)
    if item.unanswerable:
        return g
    model = [c for c in outcome.citations if not c["inferred"]]
    g.cited = bool(model) and not refused
    g.supported = all(c["supported"] is True for c in model) if g.cited else None
    if item.sources:
        g.hit_k = any(matches(e, p, t) for e in item.sources for p, t in outcome.sources)
        first = outcome.citations[0] if outcome.citations else None
        g.hit_1 = first is not None and any(matches(e, first["source"], first["title"])
                                            for e in item.sources)
    if item.keywords:
        text = outcome.answer.lower()
        g.keywords = sum(k.lower() in text for k in item.keywords) / len(item.keywords)
    if item.reference:
        g.reference_f1 = token_f1(outcome.answer, item.reference)
    return g


def token_f1(answer: str, reference: str) -> float:
    """SQuAD-style token F1 of ``answer`` against ``reference`` (lower-cased words)."""
    a = _TOKEN.findall(answer.lower())
    r = _TOKEN.findall(reference.lower())
    common = sum(min(a.count(t), r.count(t)) for t in set(r))
    if not a or not r or not common:
        return 0.0
    precision, recall = common / len(a), common / len(r)
    return round(2 * precision * recall / (precision + recall), 4)


def _mean(values: Sequence[float | bool | None]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return round(sum(present) / len(present), 4) if present else None


def summarize(grades: Sequence[Grade]) -> dict[str, float | None]:
    """The overall measures (None when no question applies)."""
    answerable = [g for g in grades if not g.unanswerable]
    unanswerable = [g for g in grades if g.unanswerable]
    return {
        "hit_k": _mean([g.hit_k for g in answerable]),
        "hit_1": _mean([g.hit_1 for g in answerable]),
        "cited": _mean([g.cited for g in answerable]),
        "supported": _mean([g.supported for g in answerable]),
        "keywords": _mean([g.keywords for g in answerable]),
        "reference_f1": _mean([g.reference_f1 for g in answerable]),
        "refusal": _mean([g.refused for g in unanswerable]),
        "false_refusal": _mean([g.refused for g in answerable]),
        "questions": float(len(grades)),
        "errors": float(sum(g.error is not None for g in grades)),
    }


def percentiles(latencies: Sequence[float]) -> tuple[float, float]:
    """p50 and p95 of ``latencies`` (ms)."""
    if not latencies:
        return 0.0, 0.0
    q = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else list(latencies) * 19
    return round(statistics.median(latencies), 1), round(q[18], 1)


def report_of(name: str, items: Sequence[QAItem], outcomes: Sequence[Outcome],
              settings: dict[str, Any] | None = None) -> RunReport:
    """Grade ``outcomes`` (one per item, in order) into a run report."""
    grades = [grade(i, o) for i, o in zip(items, outcomes, strict=True)]
    p50, p95 = percentiles([o.latency_ms for o in outcomes])
    return RunReport(name=name, grades=grades, metrics=summarize(grades), latency_ms_p50=p50,
                     latency_ms_p95=p95, settings=settings or {})


def deltas(run: RunReport, peer: RunReport) -> dict[str, float | None]:
    """``run`` minus ``peer`` per measure (None where either is missing)."""
    out: dict[str, float | None] = {}
    for m in MEASURES:
        a, b = run.metrics.get(m), peer.metrics.get(m)
        out[m] = None if a is None or b is None else round(a - b, 4)
    return out


def check_thresholds(metrics: dict[str, float | None], minimums: dict[str, float],
                     maximums: dict[str, float]) -> list[str]:
    """The thresholds ``metrics`` misses, as sentences (empty: all met). A
    measure that does not apply (None) misses any threshold set on it."""
    failed = []
    for name, low in minimums.items():
        value = metrics.get(name)
        if value is None or value < low:
            failed.append(f"{name} {_shown(value)} < {low:g}")
    for name, high in maximums.items():
        value = metrics.get(name)
        if value is None or value > high:
            failed.append(f"{name} {_shown(value)} > {high:g}")
    return failed


def _shown(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def calibrate(items: Sequence[QAItem], relevance: Sequence[float], *, dev: str = "dev",
              test: str = "test", max_false_refusal: float = 0.0) -> dict[str, Any]:
    """A refusal threshold on the closest chunk's dense similarity
    (``assistant.refusal_min_score``), chosen on the ``dev`` split and reported
    on ``test``: among the cuts midway between two observed dev values whose
    false refusals on dev stay within ``max_false_refusal`` (answering matters
    more than refusing), the one refusing most unanswerable dev questions,
    ties to the lowest cut."""
    dev_rows = [(r, i.unanswerable) for i, r in zip(items, relevance, strict=True)
                if i.split == dev]
    if not any(u for _, u in dev_rows) or all(u for _, u in dev_rows):
        return {"threshold": None, "reason": f"the {dev!r} split needs both kinds of question"}
    values = sorted({r for r, _ in dev_rows})
    cuts = [values[0] - 1e-4] + [round((a + b) / 2, 4) for a, b in zip(values, values[1:],
                                                                          strict=False)]
    allowed = [t for t in cuts if _rates(dev_rows, t)[1] <= max_false_refusal] or cuts[:1]
    best = max(allowed, key=lambda t: (_rates(dev_rows, t)[0], -t))
    out: dict[str, Any] = {"threshold": round(best, 4), "dev": _scored(dev_rows, best)}
    test_rows = [(r, i.unanswerable) for i, r in zip(items, relevance, strict=True)
                 if i.split == test]
    if test_rows:
        out["test"] = _scored(test_rows, best)
    return out


def _rates(rows: Sequence[tuple[float, bool]], cut: float) -> tuple[float, float]:
    """(refusal accuracy on unanswerable, false refusals on answerable) at ``cut``."""
    unanswerable = [r < cut for r, u in rows if u]
    answerable = [r < cut for r, u in rows if not u]
    return (sum(unanswerable) / len(unanswerable) if unanswerable else 0.0,
            sum(answerable) / len(answerable) if answerable else 0.0)


def _scored(rows: Sequence[tuple[float, bool]], cut: float) -> dict[str, float]:
    refusal, false_refusal = _rates(rows, cut)
    return {"questions": len(rows), "refusal": round(refusal, 4),
            "false_refusal": round(false_refusal, 4)}


def write_chart(runs: Sequence[RunReport], path: Path) -> None:
    """A bar chart of the measures per run (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4), dpi=110)
    width = 0.8 / max(1, len(runs))
    for i, run in enumerate(runs):
        values = [run.metrics.get(m) or 0.0 for m in MEASURES]
        xs = [j + i * width for j in range(len(MEASURES))]
        bars = ax.bar(xs, values, width, label=run.name)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks([j + width * (len(runs) - 1) / 2 for j in range(len(MEASURES))], MEASURES,
                  fontsize=8)
    ax.set_ylim(0, 1.1)
    questions = int(runs[0].metrics.get("questions") or 0) if runs else 0
    ax.set_title(f"answer evaluation ({questions} questions; false_refusal: lower is better)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
