"""Tool calls on the in-process vLLM engine.

Two ways to get a call out of the model:

- **native parser** (``settings.llm.tool_parser``, e.g. "mistral" for Mistral
  v0.3's ``[TOOL_CALLS][{...}]``): the model writes calls in its own format and
  vLLM's parser class (``ToolParserManager``) extracts them at the end.
- **structured outputs**: for ``tool_choice`` "required" or a named tool,
  decoding is constrained by ``SamplingParams(structured_outputs=
  StructuredOutputsParams(json=schema))`` so even a tiny model writes a call
  that matches the schema (``llm.tools.forced_call_schema``). The legacy
  ``guided_*`` request keys are ignored by vLLM 0.32: never use them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from llm.tools import TOOL_CALL_ID, ToolChoice, new_tool_call_id
from sirocco.errors import ConfigError
from sirocco.types import ToolCall

logger = logging.getLogger(__name__)


def structured_outputs(schema: Mapping[str, Any]) -> Any:
    """vLLM's ``StructuredOutputsParams`` constraining output to ``schema``
    (compact JSON: the engine runs with ``disable_any_whitespace``)."""
    from vllm.sampling_params import StructuredOutputsParams

    return StructuredOutputsParams(json=dict(schema))


def text_pattern(regex: str) -> Any:
    """vLLM's ``StructuredOutputsParams`` constraining the answer text to ``regex``
    (xgrammar, as for forced tool calls)."""
    from vllm.sampling_params import StructuredOutputsParams

    return StructuredOutputsParams(regex=regex)


class NativeToolParser:
    """A vLLM tool parser (by its registered name) used on a finished output."""

    def __init__(self, name: str, tokenizer: Any) -> None:
        from vllm.tool_parsers import ToolParserManager

        try:
            self._cls = ToolParserManager.get_tool_parser(name)
        except KeyError as exc:
            valid = ", ".join(sorted(ToolParserManager.list_registered()))
            raise ConfigError(f"unknown tool parser {name!r}; valid: {valid}") from exc
        self.name = name
        self._tokenizer = tokenizer
        # Probe once: a parser that cannot work with this tokenizer (no
        # [TOOL_CALLS] token ...) fails at start-up, not on the first call.
        try:
            parser = self._cls(tokenizer, None)
        except Exception as exc:
            raise ConfigError(f"tool parser {name!r} does not fit this model's tokenizer: "
                              f"{exc}") from exc
        #: The marker that opens a call in the model's output (None: unknown).
        self.start_marker: str | None = getattr(parser, "bot_token", None)

    def extract(self, text: str, tools: Sequence[Mapping[str, Any]],
                tool_choice: ToolChoice | None = "auto") -> tuple[str, list[ToolCall]]:
        """``(content, calls)`` from a complete model output. Ids are re-drawn when
        the parser's do not follow the 9-character rule."""
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

        # Validated like any request vLLM's server receives (the tools become its
        # protocol objects).
        request = ChatCompletionRequest.model_validate({
            "model": "sirocco", "messages": [{"role": "user", "content": ""}],
            "tools": [dict(t) for t in tools], "tool_choice": tool_choice or "auto"})
        parser = self._cls(self._tokenizer, list(request.tools or ()))
        info = parser.extract_tool_calls(text, request)
        if not info.tools_called:
            return text, []
        calls = []
        for call in info.tool_calls:
            call_id = call.id if call.id and TOOL_CALL_ID.match(call.id) else new_tool_call_id()
            arguments = call.function.arguments
            if not isinstance(arguments, str):
                arguments = json.dumps(arguments, ensure_ascii=False)
            calls.append(ToolCall(call_id, call.function.name, arguments))
        return info.content or "", calls


def held_back(text: str, marker: str | None) -> int:
    """How many trailing characters of ``text`` could start ``marker`` (kept from
    the stream until the next delta tells)."""
    if not marker:
        return 0
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0
