"""Traces as demonstration data, end to end with the real stack: chats (RAG,
and tool calls forced with ``tool_choice`` then answered) through the real
vLLM engine over documents ingested into Qdrant (plus one trace recorded with
a model-written citation, since the bundled model rarely writes [n]),
recorded by the background trace writer; feedback and a correction; every
export format run by a real Celery worker as ``sirocco.traces.export``; each
file checked again here with mistral_common, ``datasets`` and the bundled
model's chat template. Also: concurrent chats store one trace each, an engine
failure mid-answer keeps the partial output, PII does not survive a scrubbed
export, and no conversation straddles the train/validation split.

Database: PostgreSQL (a throw-away schema of SIROCCO_TEST_DATABASE_URL) when
set, else SQLite; broker: the test Redis.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from assistant.service import Assistant
from llm.tools import Tool, ToolRegistry
from sirocco.db import session_scope
from sirocco.principal import Principal
from sirocco.types import ChatMessage, GenerationOptions, ToolCall
from tests.answering import ask
from tests.integration.stack import ingest_texts
from tests.integration.workerutil import (
    database_url,
    redis_or_skip,
    start_worker,
    stop_worker,
    worker_stack,
)
from traces.access import TraceViewer
from traces.citations import cited_chunk_ids
from traces.export import FORMATS, ExportFilters, ExportOptions, ExportRequest
from traces.export.jobs import create_export
from traces.export.service import load_tokenizer
from traces.export.validate import (
    check_render,
    conversations,
    load_with_datasets,
    validate_mistral,
)
from traces.feedback import add_feedback, review_feedback
from traces.models import ExportJob, Trace
from traces.recorder import TraceRecorder
from traces.schemas import FeedbackCreate, ReviewUpdate
from workers.app import create_celery
from workers.export_tasks import enqueue_export

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

WEATHER = {"type": "object",
           "properties": {"city": {"type": "string", "enum": ["Paris", "Lyon", "Nice"]}},
           "required": ["city"], "additionalProperties": False}
EMAIL, PHONE, NAME = "marie.curie@example.com", "+33 6 12 34 56 78", "Marie Curie"
PII_QUESTION = f"I am {NAME} ({EMAIL}, {PHONE}). What does fact number 1 say?"
TENANT = "acme"
FACTS = ("Fact number 1: the mistral blows in winter.", "Fact number 2: budgets are due in May.")
CITED_QUESTION, CITED_ANSWER = ("In which season does the mistral blow?",
                                "The mistral blows in winter [1].")
OPTIONS = GenerationOptions(max_tokens=24, temperature=0.0)
#: A forced call's JSON needs room to finish.
TOOL_OPTIONS = GenerationOptions(max_tokens=96, temperature=0.0)


def registry() -> ToolRegistry:
    reg = ToolRegistry()
    reg.register(Tool("get_weather", "The forecast for a French city.", WEATHER,
                      lambda city: {"city": city, "sky": "sunny", "celsius": 24}))
    return reg


class FailingEngine:
    """The real engine, interrupted after ``after`` text events (an engine that
    dies mid-answer)."""

    def __init__(self, inner: Any, after: int) -> None:
        self._inner, self._after = inner, after
        self.model_name = inner.model_name

    def count_tokens(self, text: str) -> int:
        return int(self._inner.count_tokens(text))

    async def generate(self, messages: Sequence[ChatMessage], **kw: Any
                       ) -> AsyncIterator[Any]:
        seen = 0
        stream = self._inner.generate(messages, **kw)
        try:
            async for event in stream:
                if event.kind == "text":
                    if seen == self._after:
                        raise RuntimeError("engine died mid-answer")
                    seen += 1
                yield event
        finally:
            await stream.aclose()


async def _collect(events: AsyncIterator[Any]) -> list[Any]:
    return [e async for e in events]


async def _tool_round_trip(assistant: Assistant, reg: ToolRegistry, question: str,
                           tool_choice: Any, conversation: str) -> tuple[str, str]:
    """Forced call -> run it -> the model's answer; returns both trace ids."""
    tools = reg.specs()
    first = await _collect(assistant.stream_answer(*ask(
        question, tenant=TENANT, user="ana", tools=tools, tool_choice=tool_choice,
        retrieve=False, conversation_id=conversation, consent=True, options=TOOL_OPTIONS)))
    calls = [c for e in first if e.type == "tool_call" for c in e.tool_calls or []]
    assert calls, f"no forced tool call: {first}"
    call = ToolCall(id=calls[0]["id"], name=calls[0]["name"], arguments=calls[0]["arguments"])
    result = await reg.execute(call)
    assert not result.is_error, result.content
    turns = [ChatMessage(role="assistant", content="", tool_calls=[call]), result.to_message()]
    second = await _collect(assistant.stream_answer(*ask(
        question, tenant=TENANT, user="ana", tools=tools, tool_turns=turns, retrieve=False,
        conversation_id=conversation, consent=True, options=OPTIONS)))
    assert second[-1].type == "done", second[-1]
    return str(first[-1].trace_id), str(second[-1].trace_id)


async def _recorded_cited_chat(store: Any, embedder: Any, recorder: TraceRecorder) -> None:
    """One trace whose ``[1]`` the model wrote itself, recorded through the real
    recorder over a real retrieval. The bundled model rarely writes [n], and an
    inferred citation credits no chunk: this makes sure the retrieval-triplets
    export has a positive (export is the subject here, not the model)."""
    from retrieval.store import SearchFilter

    hits = store.search(embedder.embed_query(CITED_QUESTION), top_k=5, text=CITED_QUESTION,
                        filter=SearchFilter(caller=Principal(tenant=TENANT, user="ana")))
    cited = next(h for h in hits if h.text == FACTS[0])
    handle = recorder.start(CITED_QUESTION, tenant=TENANT, user="ana",
                            conversation_id="conv-cited", consent=True)
    recorder.finish(
        handle, status="ok", answer=CITED_ANSWER, model="sirocco",
        prompt=[{"role": "user", "content": f"Sources:\n\n[1] {FACTS[0]}\n\n"
                                            f"Question: {CITED_QUESTION}"}],
        retrieved=[{"chunk_id": h.chunk_id, "doc_id": h.doc_id, "score": h.score,
                    "rank": r, "text": h.text, "in_prompt": True}
                   for r, h in enumerate(hits, start=1)],
        citations=[{"n": 1, "chunk_id": cited.chunk_id, "chunk_ids": [cited.chunk_id],
                    "doc_id": cited.doc_id, "inferred": False, "supported": True}])


def _check_triplets(factory: Any, triplets: list[dict[str, Any]]) -> None:
    """The recorded answer's cited chunk is a positive against the other one;
    every positive comes from an answer with a model-written, supported
    citation, never from an inferred one. Positives and negatives are the
    ingested facts (an answer that cited both facts has no negative left)."""
    assert triplets
    for r in triplets:
        assert r["positive"] in FACTS and r["positive"] not in r["negatives"]
        assert set(r["negatives"]) <= set(FACTS)
    assert {"query": CITED_QUESTION, "positive": FACTS[0], "negatives": [FACTS[1]]} in triplets
    with session_scope(factory) as s:
        credited = {t.query for t in s.scalars(select(Trace))
                    if cited_chunk_ids(t.citations or ())}
    assert {r["query"] for r in triplets} <= credited


def _wait_exports(factory, ids: list[str], proc, log: Path, timeout: float = 600
                  ) -> dict[str, ExportJob]:
    deadline = time.monotonic() + timeout
    while True:
        with session_scope(factory) as s:
            jobs = {j.id: j for j in s.scalars(select(ExportJob).where(ExportJob.id.in_(ids)))}
        if all(j.status in ("done", "failed") for j in jobs.values()):
            return jobs
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"exports not finished: { {j.format: j.status for j in jobs.values()} }"
                        f"\n{log.read_text()[-4000:]}")
        time.sleep(0.5)


@pytest.fixture
def stack(tmp_path: Path, request: pytest.FixtureRequest, engine_settings):
    redis_or_skip()
    url = database_url(tmp_path, request)
    models_dir = str(engine_settings.models_path)
    stack = worker_stack(tmp_path, url, name="export",
                         worker_env={"SIROCCO_MODELS_DIR": models_dir})
    stack.settings = stack.settings.model_copy(update={"models_dir": Path(models_dir),
                                                       "llm": engine_settings.llm})
    yield stack
    stack.close()


async def test_chats_to_validated_exports_in_every_format(vllm_engine, real_embedder, stack,
                                                         tmp_path):
    factory = stack.factory
    recorder = TraceRecorder(factory, background=True, spool_dir=tmp_path / "spool",
                             user_salt="salt")
    settings = stack.settings.model_copy(update={"retrieval": stack.settings.retrieval
                                                 .model_copy(update={"min_score": 0.0})})
    # The two facts as documents, through the real pipeline into Qdrant.
    store, _, _ = ingest_texts(settings, real_embedder, {"mistral.md": FACTS[0],
                                                         "budgets.md": FACTS[1]},
                               tenant=TENANT, factory=factory)
    assistant = Assistant(vllm_engine, store, real_embedder, recorder, settings)
    reg = registry()

    # RAG chats, one with PII in the question, one to correct, one disliked.
    rag = {}
    for key, question in (("pii", PII_QUESTION), ("corrected", "When does the mistral blow?"),
                          ("disliked", "What is due in May?")):
        events = await _collect(assistant.stream_answer(*ask(
            question, tenant=TENANT, user="ana", conversation_id=f"conv-{key}", consent=True,
            options=OPTIONS)))
        assert events[-1].type == "done", events[-1]
        rag[key] = str(events[-1].trace_id)
    await _recorded_cited_chat(store, real_embedder, recorder)
    # Tool calls forced (a named function), run, then answered.
    # (Named, not "required": the bundled model repeats the items of a "required"
    # call array until max_tokens, so the call never closes.)
    named = {"type": "function", "function": {"name": "get_weather"}}
    call_a, answer_a = await _tool_round_trip(assistant, reg, "Weather in Paris tomorrow?",
                                              named, "conv-tool-a")
    call_b, answer_b = await _tool_round_trip(assistant, reg, "Is it warm in Nice?", named,
                                              "conv-tool-b")

    # Concurrent load: every chat stores exactly one trace.
    load = 8
    results = await asyncio.gather(*(_collect(assistant.stream_answer(*ask(
        f"Load question {i}: what does fact number {i % 2 + 1} say?", tenant=TENANT,
        user="bob", conversation_id=f"load-{i}", consent=True, options=OPTIONS)))
        for i in range(load)))
    assert all(r[-1].type == "done" for r in results)

    # An engine failure mid-answer: an error trace with the partial output.
    broken = Assistant(FailingEngine(vllm_engine, after=3), store, real_embedder, recorder,
                       settings)
    failed = await _collect(broken.stream_answer(*ask("Tell me about fact number 1.",
                                                 tenant=TENANT, consent=True,
                                                 options=OPTIONS)))
    assert failed[-1].type == "error"
    partial = "".join(e.text or "" for e in failed if e.type == "delta")
    assert partial

    recorder.close()  # a normal shutdown drains the writer
    chats = 3 + 1 + 4 + load + 1
    with session_scope(factory) as s:
        assert s.scalar(select(func.count()).select_from(Trace)) == chats
        error = s.scalars(select(Trace).where(Trace.status == "error")).one()
        assert error.answer == partial and "engine died mid-answer" in (error.error or "")
        assert error.messages[-1].is_output and error.messages[-1].content == partial
        call_trace = s.get(Trace, call_a)
        assert call_trace is not None and call_trace.tool_calls[-1].name == "get_weather"
        assert call_trace.tool_definitions is not None
        assert {sp.kind for sp in call_trace.spans} == {"llm"}
        answered = s.get(Trace, answer_a)
        assert answered is not None and answered.tool_calls[0].status == "ok"
        assert answered.tool_calls[0].result and "sunny" in answered.tool_calls[0].result
        # A reviewer's feedback, approved: exports count reviewed feedback only.
        reviewer = TraceViewer(tenant=TENANT, user_hash=None, reviewer=True)
        given = [(rag["corrected"], FeedbackCreate(thumbs=-1, correction="In winter [1].")),
                 (rag["disliked"], FeedbackCreate(rating=1, comment="wrong")),
                 (rag["pii"], FeedbackCreate(thumbs=1)),
                 (answer_a, FeedbackCreate(rating=5)), (answer_b, FeedbackCreate(rating=5))]
        for trace_id, data in given:
            feedback = add_feedback(session=s, trace_id=trace_id, viewer=reviewer, data=data)
            review_feedback(session=s, feedback_id=feedback.id, tenant=TENANT,
                            update=ReviewUpdate(review_status="approved"), reviewer="lead")

    # Every format as a Celery job on a real worker; one scrubbed export too.
    requests = {fmt: ExportRequest(format=fmt, options=ExportOptions(
        validation_fraction=0.3, seed=11)) for fmt in FORMATS}
    requests["scrubbed"] = ExportRequest(format="mistral", options=ExportOptions(
        scrub_pii=True, validation_fraction=0.0))
    requests["errors"] = ExportRequest(format="openai", filters=ExportFilters(
        exclude_errors=False), options=ExportOptions(validation_fraction=0.0))
    with session_scope(factory) as s:
        ids = {name: create_export(session=s, tenant=TENANT, request=r).id
               for name, r in requests.items()}
    log = tmp_path / "worker.log"
    proc = start_worker(stack.env, stack.prefix, log)
    try:
        celery_app = create_celery(stack.settings)
        for export_id in ids.values():
            enqueue_export(celery_app, export_id)
        jobs = _wait_exports(factory, list(ids.values()), proc, log)
    finally:
        stop_worker(proc)
    failures = {n: jobs[i].error for n, i in ids.items() if jobs[i].status != "done"}
    assert not failures, failures

    tokenizer = load_tokenizer(stack.settings.models_path / "smollm2-mistral")
    records: dict[str, list[dict[str, Any]]] = {}
    for name, export_id in ids.items():
        job = jobs[export_id]
        manifest = job.manifest or {}
        folder = Path(job.path or "")
        assert manifest["tokenizer"]["path"].endswith("smollm2-mistral"), manifest["tokenizer"]
        fmt = job.format
        rows = []
        for file in ("train.jsonl", "validation.jsonl"):
            path = folder / file
            lines = [json.loads(line) for line in path.read_text().splitlines()]
            assert manifest["files"][file]["records"] == len(lines)
            assert load_with_datasets(path) == len(lines)
            for record in lines:
                if fmt == "mistral":
                    validate_mistral(record)
                for conversation in conversations(fmt, record):
                    check_render(tokenizer, conversation)
            rows += [(file, r) for r in lines]
        records[name] = [r for _, r in rows]
        if name in FORMATS and rows:
            # No conversation on both sides of the split: the sides' conversation
            # counts add up to the number of distinct conversations exported.
            files = manifest["files"]
            assert files["train.jsonl"]["conversations"] + \
                files["validation.jsonl"]["conversations"] == len(
                    set(_conversation_keys(factory, manifest["trace_ids"])))

    mistral = records["mistral"]
    # Tool-call turns: 9-character ids, no content; the call answered by its result.
    call_only = [r for r in mistral if "tool_calls" in r["messages"][-1]]
    assert len(call_only) == 2
    for r in call_only:
        assert "content" not in r["messages"][-1]
        assert len(r["messages"][-1]["tool_calls"][0]["id"]) == 9
    with_result = [r for r in mistral if any(m["role"] == "tool" for m in r["messages"])]
    assert len(with_result) == 2
    for r in with_result:
        ids_in = {m["tool_calls"][0]["id"] for m in r["messages"] if m.get("tool_calls")}
        assert {m["tool_call_id"] for m in r["messages"] if m["role"] == "tool"} == ids_in
        assert r["tools"] and r["tools"][0]["function"]["name"] == "get_weather"
    finals = [r["messages"][-1].get("content") for r in mistral]
    assert "In winter [1]." in finals  # the correction replaced the answer
    assert len(records["trl-dpo"]) == 1 and records["trl-dpo"][0]["chosen"][0]["content"] == \
        "In winter [1]."
    assert {r["label"] for r in records["trl-kto"]} == {True, False}
    _check_triplets(factory, records["retrieval-triplets"])
    assert any(partial == r["messages"][-1].get("content") for r in records["errors"])
    assert not any(partial == r["messages"][-1].get("content") for r in records["openai"])

    # PII: present in the plain export, gone from the scrubbed one.
    assert EMAIL in json.dumps(mistral)
    scrubbed = json.dumps(records["scrubbed"], ensure_ascii=False)
    for secret in (EMAIL, PHONE, NAME, "12 34 56 78"):
        assert secret not in scrubbed, secret
    scrubber = jobs[ids["scrubbed"]].manifest["scrubber"]  # type: ignore[index]
    assert scrubber["library"].startswith("scrubadub ")


def _conversation_keys(factory, trace_ids: list[str]) -> list[str]:
    with session_scope(factory) as s:
        return [t.conversation_id or t.id for t in
                s.scalars(select(Trace).where(Trace.id.in_(trace_ids)))]
