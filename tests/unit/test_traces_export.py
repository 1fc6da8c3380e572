"""Fine-tuning exports from recorded traces: every format validates; the
filters, corrections, negative feedback, PII scrub, deduplication, token cap
and the grouped split do what they promise. The tokenizer is a tiny local
one carrying the bundled model's chat template (the integration tier uses
the real one)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from sirocco.db import session_scope
from sirocco.errors import ExportInvalidError
from traces.access import TraceViewer
from traces.export import ExportFilters, ExportOptions, ExportRequest
from traces.export.service import run_export, split_groups
from traces.export.validate import validate_mistral
from traces.feedback import add_feedback, review_feedback
from traces.recorder import TraceRecorder
from traces.schemas import FeedbackCreate, ReviewUpdate

SMOL_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]
SYSTEM = {"role": "system", "content": "Answer only from the numbered sources."}
PII_QUESTION = ("I am John Smith (john.smith@example.com, +33 6 12 34 56 78). "
                "What is the mistral?")


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    out = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    out.chat_template = SMOL_TEMPLATE
    return out


def _rag_prompt(question: str, chunk: str) -> list[dict[str, Any]]:
    return [SYSTEM, {"role": "user",
                     "content": f"Sources:\n\n[1] {chunk}\n\nQuestion: {question}"}]


def _trace(recorder: TraceRecorder, question: str, answer: str, *, conversation: str,
           consent: bool = True, status: str = "ok", prompt: list[dict[str, Any]] | None = None,
           tool_calls: list[dict[str, Any]] | None = None, chunks: bool = True,
           citations: list[dict[str, Any]] | None = None) -> str:
    handle = recorder.start(question, tenant="acme", conversation_id=conversation,
                            user="ana", consent=consent)
    retrieved = [{"chunk_id": "k1", "doc_id": "d1", "score": 0.9, "rank": 1,
                  "text": f"About {question[:20]}: a cold wind.", "in_prompt": True},
                 {"chunk_id": "k2", "doc_id": "d2", "score": 0.3, "rank": 2,
                  "text": "Budget tables for Q3.", "in_prompt": False}] if chunks else []
    recorder.finish(
        handle, answer=answer, status=status, error="boom" if status == "error" else None,
        prompt=prompt or _rag_prompt(question, "A cold wind."), retrieved=retrieved,
        citations=citations if citations is not None
        else [{"n": 1, "chunk_id": "k1"}] if chunks and answer else [],
        model="m", prompt_tokens=10, completion_tokens=5, tool_calls=tool_calls or (),
        tools=TOOLS if tool_calls or (prompt and any(m.get("tool_calls") for m in prompt))
        else None, prompt_template="rag-answer", prompt_template_version="v1")
    return handle.trace_id


def _feedback(factory: sessionmaker[Session], trace_id: str, review: str = "approved",
              **data: Any) -> None:
    """Feedback on a trace, then a reviewer's decision on it (exports count
    approved feedback only, by default)."""
    with session_scope(factory) as session:
        feedback = add_feedback(session=session, trace_id=trace_id,
                                data=FeedbackCreate(**data),
                                viewer=TraceViewer(tenant="acme", user_hash=None, reviewer=True))
        review_feedback(session=session, feedback_id=feedback.id, tenant="acme",
                        update=ReviewUpdate(review_status=review), reviewer="r")


@pytest.fixture
def traces(factory: sessionmaker[Session]) -> dict[str, str]:
    r = TraceRecorder(factory)
    ids = {
        "liked": _trace(r, PII_QUESTION, "A cold northerly wind [1].", conversation="A"),
        "dup": _trace(r, PII_QUESTION, "A cold northerly wind [1].", conversation="A2"),
        "corrected": _trace(r, "When does it blow?", "Never.", conversation="C"),
        "disliked": _trace(r, "How fast is it?", "Slow.", conversation="D"),
        "no_consent": _trace(r, "Secret question?", "Secret answer.", conversation="E",
                             consent=False),
        "error": _trace(r, "Broken?", "Half an ans", conversation="F", status="error"),
    }
    question = "Weather in Nice?"
    call = {"id": "call_0123456789abcdef", "name": "get_weather", "arguments": '{"city": "Nice"}'}
    ids["tool_call"] = _trace(r, question, "", conversation="B", tool_calls=[call],
                              prompt=[{"role": "user", "content": question}], chunks=False)
    ids["tool_answer"] = _trace(r, question, "Sunny in Nice.", conversation="B", chunks=False,
                                prompt=[{"role": "user", "content": question},
                                        {"role": "assistant", "content": "", "tool_calls": [
                                            {"id": call["id"], "type": "function", "function": {
                                                "name": call["name"],
                                                "arguments": call["arguments"]}}]},
                                        {"role": "tool", "content": "sunny, 24C",
                                         "tool_call_id": call["id"]}])
    _feedback(factory, ids["liked"], thumbs=1)
    _feedback(factory, ids["dup"], thumbs=1)
    _feedback(factory, ids["corrected"], thumbs=-1, reason="wrong",
              correction="It blows in winter and spring [1].")
    _feedback(factory, ids["disliked"], rating=1, comment="useless")
    return ids


def _export(factory, tmp_path: Path, tokenizer, fmt: str, **kw: Any) -> tuple[dict, list]:
    filters = ExportFilters(**kw.pop("filters", {}))
    options = ExportOptions(**{"validation_fraction": 0.0, **kw})
    out = tmp_path / fmt
    manifest = run_export(ExportRequest(format=fmt, filters=filters, options=options),
                          session_factory=factory, out_dir=out, tokenizer=tokenizer)
    records = [json.loads(line) for name in ("train.jsonl", "validation.jsonl")
               for line in (out / name).read_text().splitlines()]
    return manifest, records


def test_mistral_records_validate_with_corrections_and_remapped_tool_ids(
        factory, tmp_path, tokenizer, traces) -> None:
    manifest, records = _export(factory, tmp_path, tokenizer, "mistral")
    # liked, corrected, tool_call, tool_answer; the disliked answer is left out,
    # the duplicate removed, no-consent and error traces filtered.
    assert len(records) == 4
    assert manifest["counts"]["skipped_negative"] == 1
    assert manifest["counts"]["duplicates_exact"] == 1
    assert manifest["validation"]["train.jsonl"]["mistral_common"] == "finetuning"
    assert manifest["validation"]["train.jsonl"]["chat_template_rendered"] == 4
    finals = [r["messages"][-1] for r in records]
    assert all(m["role"] == "assistant" for m in finals)
    assert {"role": "assistant", "content": "It blows in winter and spring [1]."} in finals
    assert not any(m.get("content") == "Never." for m in finals)
    call_only = next(r for r in records if "tool_calls" in r["messages"][-1])
    assert "content" not in call_only["messages"][-1]
    new_id = call_only["messages"][-1]["tool_calls"][0]["id"]
    assert len(new_id) == 9 and new_id.isalnum()
    answered = next(r for r in records if r["messages"][-1].get("content") == "Sunny in Nice.")
    assert answered["messages"][1]["tool_calls"][0]["id"] == new_id  # same call, same id
    assert answered["messages"][2]["tool_call_id"] == new_id
    assert answered["tools"] == TOOLS
    sha = manifest["files"]["train.jsonl"]["sha256"]
    import hashlib
    assert hashlib.sha256((tmp_path / "mistral" / "train.jsonl").read_bytes()).hexdigest() == sha


def test_mistral_validator_refuses_a_bad_record() -> None:
    bad = {"messages": [{"role": "user", "content": "q"},
                        {"role": "assistant", "tool_calls": [{"id": "call_0123456789", "type":
                         "function", "function": {"name": "f", "arguments": "{}"}}]},
                        {"role": "tool", "content": "r", "tool_call_id": "call_0123456789"},
                        {"role": "assistant", "content": "a"}]}
    with pytest.raises(ExportInvalidError, match="Tool call id"):
        validate_mistral(bad)
    with pytest.raises(ExportInvalidError, match="Expected last role Assistant"):
        validate_mistral({"messages": [{"role": "user", "content": "q"}]})


@pytest.mark.parametrize("fmt", ["openai", "trl-sft", "sharegpt"])
def test_sft_formats_load_and_render(factory, tmp_path, tokenizer, traces, fmt) -> None:
    manifest, records = _export(factory, tmp_path, tokenizer, fmt)
    assert len(records) == 4
    assert manifest["validation"]["train.jsonl"]["datasets_rows"] == 4
    text = json.dumps(records)
    assert "It blows in winter and spring" in text and "Slow." not in text


@pytest.mark.parametrize("fmt", ["openai-dpo", "trl-dpo"])
def test_preference_formats_pair_the_correction_against_the_answer(
        factory, tmp_path, tokenizer, traces, fmt) -> None:
    _, records = _export(factory, tmp_path, tokenizer, fmt)
    assert len(records) == 1
    rec = records[0]
    chosen = rec["preferred_output"] if fmt == "openai-dpo" else rec["chosen"]
    rejected = rec["non_preferred_output"] if fmt == "openai-dpo" else rec["rejected"]
    assert chosen[0]["content"] == "It blows in winter and spring [1]."
    assert rejected[0]["content"] == "Never."


def test_kto_labels(factory, tmp_path, tokenizer, traces) -> None:
    _, records = _export(factory, tmp_path, tokenizer, "trl-kto")
    labelled = sorted((r["completion"][0]["content"], r["label"]) for r in records)
    assert labelled == [("A cold northerly wind [1].", True), ("It blows in winter and "
                        "spring [1].", True), ("Never.", False), ("Slow.", False)]


def test_retrieval_triplets(factory, tmp_path, tokenizer, traces) -> None:
    _, records = _export(factory, tmp_path, tokenizer, "retrieval-triplets")
    # Cited chunks of the liked and corrected answers; the disliked one gives none.
    assert len(records) == 2
    assert all(r["negatives"] == ["Budget tables for Q3."] for r in records)
    assert {r["query"] for r in records} == {PII_QUESTION, "When does it blow?"}


def test_retrieval_triplets_take_only_model_written_supported_positives(
        factory, tmp_path, tokenizer) -> None:
    r = TraceRecorder(factory)
    ok = {"n": 1, "chunk_id": "k1", "inferred": False, "supported": True}
    _trace(r, "Inferred?", "A wind.", conversation="I",
           citations=[{**ok, "inferred": True, "supported": None}])
    _trace(r, "Unsupported?", "A wind [1].", conversation="U",
           citations=[{**ok, "supported": False}])
    _trace(r, "Model cited?", "A wind [1]. Budgets [2].", conversation="M",
           citations=[ok, {"n": 2, "chunk_id": "k2", "inferred": False, "supported": False}])
    _, records = _export(factory, tmp_path, tokenizer, "retrieval-triplets")
    # Only the model's supported citation is a positive; the chunk its unsupported
    # one names is no sure negative either.
    assert [(r["query"], r["positive"], r["negatives"]) for r in records] == [
        ("Model cited?", "About Model cited?: a cold wind.", [])]


def test_retrieval_triplets_reread_the_citations_of_older_traces(
        factory, tmp_path, tokenizer) -> None:
    from traces.models import TraceRetrievedChunk

    r = TraceRecorder(factory)
    inferred = _trace(r, "Inferred?", "A wind.", conversation="I", citations=[
        {"n": 1, "chunk_id": "k1", "inferred": True, "supported": None}])
    # Recorded before inferred citations stopped counting: its chunk is flagged cited.
    with session_scope(factory) as session:
        [chunk] = session.query(TraceRetrievedChunk).filter_by(trace_id=inferred,
                                                               chunk_id="k1").all()
        chunk.cited = True
    _trace(r, "Model cited?", "A wind [1].", conversation="M")
    _, records = _export(factory, tmp_path, tokenizer, "retrieval-triplets")
    assert [(r["query"], r["positive"]) for r in records] == [
        ("Model cited?", "About Model cited?: a cold wind.")]


def test_filters(factory, tmp_path, tokenizer, traces) -> None:
    def answers(**filters: Any) -> list[str]:
        _, records = _export(factory, tmp_path, tokenizer, "openai", filters=filters)
        return sorted(r["messages"][-1].get("content", "<call>") for r in records)

    assert answers(has_correction=True) == ["It blows in winter and spring [1]."]
    assert answers(tool_calls_only=True) == ["<call>", "Sunny in Nice."]
    assert answers(min_feedback=1) == ["A cold northerly wind [1]."]
    assert "Secret answer." in answers(consented_only=False)
    assert "Half an ans" in answers(exclude_errors=False)
    assert answers(tenant="globex") == []
    assert answers(model="other") == []


def test_unreviewed_corrections_stay_out_by_default(factory, tmp_path, tokenizer,
                                                    traces) -> None:
    r = TraceRecorder(factory)
    pending = _trace(r, "Where does it come from?", "From the sea.", conversation="P")
    _feedback(factory, pending, review="pending", thumbs=-1, correction="From the north [1].")

    def corrected(**filters: Any) -> list[str]:
        _, records = _export(factory, tmp_path, tokenizer, "openai",
                             filters={"has_correction": True, **filters})
        return sorted(r["messages"][-1]["content"] for r in records)

    assert ExportFilters().reviewed_only is True
    assert corrected() == ["It blows in winter and spring [1]."]
    assert corrected(reviewed_only=False) == ["From the north [1].",
                                              "It blows in winter and spring [1]."]


def test_pii_is_scrubbed(factory, tmp_path, tokenizer, traces) -> None:
    for fmt in ("mistral", "trl-kto", "retrieval-triplets"):
        manifest, records = _export(factory, tmp_path, tokenizer, fmt, scrub_pii=True)
        text = json.dumps(records, ensure_ascii=False)
        for secret in ("john.smith@example.com", "John Smith", "+33 6 12 34 56 78",
                       "12 34 56 78"):
            assert secret not in text, (fmt, secret)
        assert "{{EMAIL}}" in text and "{{NAME" in text and "{{PHONE" in text
        assert manifest["scrubber"]["library"].startswith("scrubadub ")
    # Without the option the PII is there (the test above can fail).
    _, records = _export(factory, tmp_path, tokenizer, "mistral")
    assert "john.smith@example.com" in json.dumps(records)


def test_without_context_the_sources_are_taken_out(factory, tmp_path, tokenizer,
                                                   traces) -> None:
    _, records = _export(factory, tmp_path, tokenizer, "openai", include_context=False)
    liked = next(r for r in records if r["messages"][-1].get("content", "").startswith("A cold"))
    assert liked["messages"][:-1] == [{"role": "user", "content": PII_QUESTION}]


def test_max_tokens_drops_long_records(factory, tmp_path, tokenizer, traces) -> None:
    manifest, records = _export(factory, tmp_path, tokenizer, "openai", max_tokens=40)
    assert manifest["counts"]["skipped_too_long"] > 0
    assert 0 < len(records) < 4


def test_split_keeps_each_conversation_on_one_side(factory, tmp_path, tokenizer) -> None:
    recorder = TraceRecorder(factory)
    for c in range(30):
        for turn in range(3):
            _trace(recorder, f"Question {turn} of conversation {c} about topic {c * 7}?",
                   f"Answer {turn} for {c}: detail {c * 13 + turn}.", conversation=f"conv-{c}")
    out = tmp_path / "split"
    request = ExportRequest(format="openai", options=ExportOptions(validation_fraction=0.2,
                                                                   seed=7, dedup=False))
    manifest = run_export(request, session_factory=factory, out_dir=out, tokenizer=tokenizer)

    def convs(name: str) -> set[str]:
        return {json.loads(line)["messages"][-1]["content"].split(": ")[0].split()[-1]
                for line in (out / name).read_text().splitlines()}

    train, val = convs("train.jsonl"), convs("validation.jsonl")
    assert train and val and not train & val
    assert len(val) == 6 and manifest["files"]["validation.jsonl"]["records"] == 18
    assert manifest["seed"] == 7
    keys = [f"k{i}" for i in range(30)]
    assert split_groups(keys, fraction=0.2, seed=7) == split_groups(keys, fraction=0.2, seed=7)
    assert split_groups(keys, fraction=0.2, seed=7) != split_groups(keys, fraction=0.2, seed=8)
