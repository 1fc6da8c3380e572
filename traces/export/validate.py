"""Checks that exported records are usable for fine-tuning.

- ``mistral``: every record passes mistral_common's request validator in
  finetuning mode (tool-call ids of 9 characters [a-zA-Z0-9], each call
  answered by a tool message, last message from the assistant), and
  assistant tool-call turns carry no content.
- every other format: the file loads with ``datasets``; chat records render
  with the model's chat template (``apply_chat_template``), and the rendered
  text holds every message's text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sirocco.errors import ExportInvalidError as RecordInvalid

Conversation = tuple[list[dict[str, Any]], list[dict[str, Any]] | None]


def mistral_validator() -> Any:
    """mistral_common's validator for Mistral's v3 tokenizer (tool calls with
    9-character ids) in finetuning mode."""
    from mistral_common.protocol.instruct.validator import (
        MistralRequestValidatorV3,
        ValidationMode,
    )

    return MistralRequestValidatorV3(mode=ValidationMode.finetuning)


def validate_mistral(record: dict[str, Any], *, validator: Any | None = None) -> None:
    """Raise ``RecordInvalid`` unless ``record`` is a valid Mistral fine-tuning record."""
    from mistral_common.protocol.instruct.request import ChatCompletionRequest

    messages = record.get("messages") or []
    for i, m in enumerate(messages):
        if m.get("role") == "assistant" and m.get("tool_calls") and m.get("content"):
            raise RecordInvalid(f"message {i}: an assistant tool-call turn has content")
    try:
        request: Any = ChatCompletionRequest.model_validate(
            {"messages": messages, "tools": record.get("tools")})
        (validator or mistral_validator()).validate_request(request)
    except Exception as exc:
        raise RecordInvalid(f"mistral_common refused the record: {exc}") from exc


def conversations(fmt: str, record: dict[str, Any]) -> list[Conversation]:
    """The chats a record of ``fmt`` stands for (DPO: prompt + chosen and
    prompt + rejected), as OpenAI-style messages; none for non-chat formats."""
    if fmt in ("mistral", "openai", "trl-sft"):
        return [(record["messages"], record.get("tools"))]
    if fmt == "openai-dpo":
        prompt = record["input"]["messages"]
        tools = record["input"].get("tools")
        return [(prompt + record["preferred_output"], tools),
                (prompt + record["non_preferred_output"], tools)]
    if fmt == "trl-dpo":
        return [(record["prompt"] + record["chosen"], record.get("tools")),
                (record["prompt"] + record["rejected"], record.get("tools"))]
    if fmt == "trl-kto":
        return [(record["prompt"] + record["completion"], record.get("tools"))]
    if fmt == "sharegpt":
        roles = {"human": "user", "gpt": "assistant", "function_call": "assistant",
                 "observation": "tool"}
        system = [{"role": "system", "content": record["system"]}] if record.get("system") else []
        return [(system + [{"role": roles[t["from"]], "content": t["value"]}
                           for t in record["conversations"]],
                 json.loads(record.get("tools") or "[]") or None)]
    return []


def _renderable(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    # Templates concatenate content: a tool-call turn without one gets "".
    return [{**m, "content": m.get("content") or ""} for m in messages]


def render(tokenizer: Any, conversation: Conversation) -> str:
    """The chat rendered with the tokenizer's chat template."""
    messages, tools = conversation
    text: str = tokenizer.apply_chat_template(_renderable(messages), tools=tools,
                                              tokenize=False)
    return text


def count_tokens(tokenizer: Any, record_conversations: Sequence[Conversation]) -> int:
    """Tokens of the longest of a record's chats, chat template applied."""
    return max((len(tokenizer(render(tokenizer, c), add_special_tokens=False)["input_ids"])
                for c in record_conversations), default=0)


def check_render(tokenizer: Any, conversation: Conversation) -> None:
    """Raise ``RecordInvalid`` when the template fails or drops a message's text."""
    try:
        text = render(tokenizer, conversation)
    except Exception as exc:
        raise RecordInvalid(f"the chat template failed: {exc}") from exc
    for m in conversation[0]:
        if m.get("content") and m["content"] not in text:
            raise RecordInvalid(f"the chat template dropped a {m['role']} message")


def load_with_datasets(path: Path) -> int:
    """Rows of a JSONL file as ``datasets`` loads it (0 for an empty file)."""
    if path.stat().st_size == 0:
        return 0
    import tempfile

    from datasets import load_dataset

    # A throw-away cache: nothing but the export files is left in its folder.
    with tempfile.TemporaryDirectory(prefix="sirocco-datasets-") as cache:
        try:
            dataset = load_dataset("json", data_files=str(path), split="train",
                                   cache_dir=cache)
        except Exception as exc:
            raise RecordInvalid(f"datasets could not load {path.name}: {exc}") from exc
        return len(dataset)


def validate_file(fmt: str, path: Path, *, tokenizer: Any | None) -> dict[str, Any]:
    """Validate every record of one exported file; returns what was checked."""
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
               if line.strip()]
    report: dict[str, Any] = {"records": len(records)}
    if fmt == "mistral":
        validator = mistral_validator()
        for i, record in enumerate(records):
            try:
                validate_mistral(record, validator=validator)
            except RecordInvalid as exc:
                raise RecordInvalid(f"{path.name} line {i + 1}: {exc.message}") from exc
        report["mistral_common"] = "finetuning"
    report["datasets_rows"] = load_with_datasets(path)
    if report["datasets_rows"] != len(records):
        raise RecordInvalid(f"datasets loaded {report['datasets_rows']} rows of "
                            f"{len(records)} from {path.name}")
    if tokenizer is not None:
        rendered = 0
        for i, record in enumerate(records):
            for conversation in conversations(fmt, record):
                try:
                    check_render(tokenizer, conversation)
                except RecordInvalid as exc:
                    raise RecordInvalid(f"{path.name} line {i + 1}: {exc.message}") from exc
                rendered += 1
        report["chat_template_rendered"] = rendered
    return report
