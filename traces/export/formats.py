"""Records of each export format, built from ``Example``s.

- ``mistral``: mistral-finetune / La Plateforme JSONL, ``{"messages", "tools"}``;
  tool-call ids remapped to 9 characters [a-zA-Z0-9] consistently within a
  record, assistant tool-call turns without content, last message from the
  assistant.
- ``openai``: chat fine-tuning JSONL ``{"messages", "tools"}``.
- ``openai-dpo``: ``{"input": {"messages", "tools"}, "preferred_output",
  "non_preferred_output"}``.
- ``trl-sft`` / ``trl-dpo`` / ``trl-kto``: TRL's conversational formats
  (``messages``; ``prompt``/``chosen``/``rejected``; ``prompt``/``completion``/
  ``label``); tool-call arguments as objects, as chat templates expect.
- ``sharegpt``: ``{"conversations": [{"from", "value"}], "system", "tools"}``
  (human / gpt / function_call / observation).
- ``retrieval-triplets``: ``{"query", "positive", "negatives"}``: a chunk cited
  by a model-written, not unsupported citation, and retrieved chunks that were
  not cited (or were cited by a rejected answer); chunks that only inferred or
  unsupported citations name are neither (``traces.citations``).

Corrections replace answers; negatively rated answers are left out of the
supervised formats and become ``rejected`` in the preference ones.
"""

from __future__ import annotations

import hashlib
import json
import string
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from sirocco.errors import InvalidInputError
from traces.export.examples import Example

Record = dict[str, Any]
_ALPHABET = string.ascii_letters + string.digits


class IdMap:
    """Original tool-call id -> a 9-character [a-zA-Z0-9] id, one per original,
    derived from it (so the same call keeps its id across records)."""

    def __init__(self) -> None:
        self._ids: dict[str, str] = {}

    def __call__(self, original: str) -> str:
        if original not in self._ids:
            n = int.from_bytes(hashlib.sha256(original.encode()).digest()[:8], "big")
            salt = 0
            while True:
                value, chars = n + salt, []
                for _ in range(9):
                    value, r = divmod(value, len(_ALPHABET))
                    chars.append(_ALPHABET[r])
                new = "".join(chars)
                if new not in self._ids.values():
                    break
                salt += 1
            self._ids[original] = new
        return self._ids[original]


def _arguments_object(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments) if arguments else {}
    except json.JSONDecodeError:
        return {"_raw": arguments}
    return value if isinstance(value, dict) else {"_value": value}


def _mistral_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    ids = IdMap()
    out = []
    for m in messages:
        if m["role"] == "assistant" and m.get("tool_calls"):
            # Content and tool calls are exclusive for Mistral: the calls win.
            out.append({"role": "assistant", "tool_calls": [
                {"id": ids(c["id"]), "type": "function",
                 "function": {"name": c["function"]["name"],
                              "arguments": c["function"].get("arguments") or "{}"}}
                for c in m["tool_calls"]]})
        elif m["role"] == "tool":
            out.append({"role": "tool", "content": m.get("content") or "",
                        "tool_call_id": ids(m.get("tool_call_id") or "")})
        else:
            out.append({"role": m["role"], "content": m.get("content") or ""})
    return out


def _openai_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for m in messages:
        msg: dict[str, Any] = {"role": m["role"]}
        if m["role"] == "assistant" and m.get("tool_calls"):
            if m.get("content"):
                msg["content"] = m["content"]
            msg["tool_calls"] = [{"id": c["id"], "type": "function",
                                  "function": {"name": c["function"]["name"],
                                               "arguments": c["function"].get("arguments")
                                               or "{}"}} for c in m["tool_calls"]]
        else:
            msg["content"] = m.get("content") or ""
        if m["role"] == "tool":
            msg["tool_call_id"] = m.get("tool_call_id") or ""
        out.append(msg)
    return out


def _trl_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for m in messages:
        msg: dict[str, Any] = {"role": m["role"], "content": m.get("content") or ""}
        if m["role"] == "assistant" and m.get("tool_calls"):
            msg["tool_calls"] = [{"type": "function", "function": {
                "name": c["function"]["name"],
                "arguments": _arguments_object(c["function"].get("arguments") or "")}}
                for c in m["tool_calls"]]
        if m["role"] == "tool":
            msg["tool_call_id"] = m.get("tool_call_id") or ""
        out.append(msg)
    return out


def _with_tools(record: Record, tools: list[dict[str, Any]] | None) -> Record:
    if tools:
        record["tools"] = tools
    return record


def _sft(examples: Sequence[Example], counts: dict[str, int]) -> list[Example]:
    kept = []
    for ex in examples:
        if ex.negative and not ex.correction:
            counts["skipped_negative"] = counts.get("skipped_negative", 0) + 1
            continue
        kept.append(ex)
    return kept


def _text(message: dict[str, Any]) -> str | None:
    """The text of an assistant message that made no tool call."""
    return None if message.get("tool_calls") else (message.get("content") or None)


def preference_pairs(examples: Sequence[Example],
                     counts: dict[str, int]) -> list[tuple[Example, str, str]]:
    """(example, chosen text, rejected text): a correction against the answer it
    corrects (when that answer was not liked), and a liked answer against a
    disliked one to the same prompt."""
    pairs = []
    liked: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        if ex.positive and _text(ex.output) and not ex.correction:
            liked[_prompt_key(ex)].append(ex)
    for ex in examples:
        original = _text(ex.output)
        if ex.correction and original and ex.correction.strip() != original.strip():
            pairs.append((ex, ex.correction, original))
        elif ex.negative and original and liked.get(_prompt_key(ex)):
            pairs.append((ex, _text(liked[_prompt_key(ex)][0].output) or "", original))
    counts["pairs"] = len(pairs)
    return pairs


def _prompt_key(ex: Example) -> str:
    return json.dumps(ex.prompt, sort_keys=True)


def _kto(examples: Sequence[Example]) -> list[tuple[Example, str, bool]]:
    out = []
    for ex in examples:
        original = _text(ex.output)
        if ex.correction:
            out.append((ex, ex.correction, True))
            if original and ex.negative:
                out.append((ex, original, False))
        elif original and ex.has_feedback and ex.score != 0:
            out.append((ex, original, ex.positive))
    return out


def _sharegpt(ex: Example) -> Record:
    messages = [*ex.prompt, ex.chosen()]
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    turns = []
    for m in messages:
        if m["role"] == "system":
            continue
        if m["role"] == "assistant" and m.get("tool_calls"):
            for c in m["tool_calls"]:
                turns.append({"from": "function_call", "value": json.dumps(
                    {"name": c["function"]["name"],
                     "arguments": _arguments_object(c["function"].get("arguments") or "")},
                    ensure_ascii=False)})
        elif m["role"] == "tool":
            turns.append({"from": "observation", "value": m.get("content") or ""})
        else:
            turns.append({"from": "human" if m["role"] == "user" else "gpt",
                          "value": m.get("content") or ""})
    record: Record = {"conversations": turns, "system": system}
    record["tools"] = json.dumps(ex.tools or [], ensure_ascii=False)
    return record


def _triplets(examples: Sequence[Example]) -> list[tuple[Example, Record]]:
    out = []
    for ex in examples:
        chunks = [c for c in ex.chunks if c.get("text")]
        rejected_answer = ex.negative and not ex.correction
        positives = [] if rejected_answer else [c for c in chunks if c["cited"]]
        # A chunk only an inferred or unsupported citation names is neither:
        # it may well be relevant, so it is no safe negative either.
        negatives = [c["text"] for c in chunks
                     if (not c["cited"] or rejected_answer) and not c.get("doubtful")]
        for pos in positives:
            out.append((ex, {"query": ex.query, "positive": pos["text"],
                             "negatives": [n for n in negatives if n != pos["text"]]}))
    return out


def build_records(fmt: str, examples: Sequence[Example],
                  counts: dict[str, int]) -> list[tuple[Example, Record]]:
    """(example, record) pairs of ``fmt``; ``counts`` says what was left out."""
    builders: dict[str, Callable[[], list[tuple[Example, Record]]]] = {
        "mistral": lambda: [(ex, _with_tools(
            {"messages": _mistral_messages([*ex.prompt, ex.chosen()])}, ex.tools))
            for ex in _sft(examples, counts)],
        "openai": lambda: [(ex, _with_tools(
            {"messages": _openai_messages([*ex.prompt, ex.chosen()])}, ex.tools))
            for ex in _sft(examples, counts)],
        "trl-sft": lambda: [(ex, _with_tools(
            {"messages": _trl_messages([*ex.prompt, ex.chosen()])}, ex.tools))
            for ex in _sft(examples, counts)],
        "sharegpt": lambda: [(ex, _sharegpt(ex)) for ex in _sft(examples, counts)],
        "openai-dpo": lambda: [(ex, {
            "input": _with_tools({"messages": _openai_messages(ex.prompt)}, ex.tools),
            "preferred_output": [{"role": "assistant", "content": chosen}],
            "non_preferred_output": [{"role": "assistant", "content": rejected}]})
            for ex, chosen, rejected in preference_pairs(examples, counts)],
        "trl-dpo": lambda: [(ex, {
            "prompt": _trl_messages(ex.prompt),
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}]})
            for ex, chosen, rejected in preference_pairs(examples, counts)],
        "trl-kto": lambda: [(ex, {
            "prompt": _trl_messages(ex.prompt),
            "completion": [{"role": "assistant", "content": text}], "label": label})
            for ex, text, label in _kto(examples)],
        "retrieval-triplets": lambda: _triplets(examples),
    }
    if fmt not in builders:
        raise InvalidInputError(f"unknown format {fmt!r}; valid: {', '.join(builders)}",
                                param="format")
    return builders[fmt]()
