"""The remote engine: an OpenAI-compatible server (``vllm serve``, or any other)
behind the ``Engine`` port, by ``settings.llm.base_url`` + ``api_key``.

It streams ``/chat/completions`` (``stream_options.include_usage``) and turns
the chunks into the same ``EngineEvent``s as the in-process engine: text
deltas, complete tool calls (fragments joined by index; ids re-drawn to
Mistral's 9-character rule when the server's do not follow it), one
``finish`` with usage. ``tools`` and ``tool_choice`` go to the server as they
are: a vLLM server forces "required"/named calls with structured outputs
itself, and parses "auto" calls when started with ``--enable-auto-tool-choice
--tool-call-parser ...``.

Closing the stream early closes the HTTP response; vLLM's server aborts the
request when its client goes away.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx

from llm.tools import TOOL_CALL_ID, ToolChoice, new_tool_call_id
from sirocco.errors import ConfigError, EngineError, InvalidInputError, UnavailableError
from sirocco.settings import Settings
from sirocco.types import ChatMessage, EngineEvent, GenerationOptions, ToolCall, Usage

logger = logging.getLogger(__name__)


class RemoteEngine:
    """``Engine`` backed by an OpenAI-compatible HTTP server."""

    def __init__(self, base_url: str, *, model: str, model_name: str | None = None,
                 api_key: str | None = None, timeout_s: float = 600.0,
                 tokenizer_path: str | Path | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.model_name = model_name or model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=self.base_url, headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)), transport=transport)
        self._tokenizer_path = tokenizer_path
        self._tokenizer: Any = None

    @classmethod
    def from_settings(cls, settings: Settings) -> RemoteEngine:
        """The remote engine ``settings.llm`` describes (no request is sent yet)."""
        llm = settings.llm
        if not llm.base_url:
            raise ConfigError("llm.provider 'openai' needs llm.base_url "
                              "(SIROCCO_LLM__BASE_URL, e.g. http://vllm:8000/v1)")
        tokenizer: str | Path | None = llm.model
        if tokenizer is None:
            from llm.models import bundled_model_path

            try:
                tokenizer = bundled_model_path(settings, llm.bundled)
            except ConfigError:  # not prepared here: count tokens by estimate
                tokenizer = None
        return cls(llm.base_url, model=llm.model or llm.served_model_name,
                   model_name=llm.served_model_name, api_key=llm.api_key,
                   timeout_s=llm.timeout_s, tokenizer_path=tokenizer)

    def request_body(self, messages: Sequence[ChatMessage], options: GenerationOptions,
                     tools: Sequence[dict[str, Any]] | None,
                     tool_choice: ToolChoice | None) -> dict[str, Any]:
        """The JSON body of the streaming chat completion request."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [m.to_openai() for m in messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": options.max_tokens,
            "temperature": options.temperature,
            "top_p": options.top_p,
        }
        if options.stop:
            body["stop"] = list(options.stop)
        if options.seed is not None:
            body["seed"] = options.seed
        if options.frequency_penalty:
            body["frequency_penalty"] = options.frequency_penalty
        if options.repetition_penalty != 1.0:
            body["repetition_penalty"] = options.repetition_penalty  # a vLLM server's extra
        if options.regex and not tools:
            body["structured_outputs"] = {"regex": options.regex}  # a vLLM server's extra
        if tools:
            body["tools"] = list(tools)
            body["tool_choice"] = tool_choice or "auto"
        return body

    async def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        options: GenerationOptions,
        tools: Sequence[dict[str, Any]] | None = None,
        tool_choice: ToolChoice | None = None,
        request_id: str | None = None,
    ) -> AsyncGenerator[EngineEvent, None]:
        """Stream text deltas, then ``tool_call`` events, then one ``finish``.

        Closing the iterator early closes the HTTP stream (the server aborts).
        """
        body = self.request_body(messages, options, tools, tool_choice)
        headers = {"X-Request-Id": request_id} if request_id else {}
        pending: dict[int, dict[str, str]] = {}
        finish_reason: str | None = None
        usage: Usage | None = None
        try:
            async with self._client.stream("POST", "/chat/completions", json=body,
                                           headers=headers) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise _http_error(response)
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if chunk.get("usage"):
                        usage = Usage(prompt_tokens=chunk["usage"]["prompt_tokens"],
                                      completion_tokens=chunk["usage"]["completion_tokens"])
                    for choice in chunk.get("choices") or []:
                        delta = choice.get("delta") or {}
                        if delta.get("content"):
                            yield EngineEvent(kind="text", text=delta["content"])
                        for part in delta.get("tool_calls") or []:
                            _merge_tool_call(pending, part)
                        if choice.get("finish_reason"):
                            finish_reason = choice["finish_reason"]
        except httpx.TimeoutException as exc:
            raise UnavailableError(f"the LLM server at {self.base_url} timed out") from exc
        except httpx.TransportError as exc:
            raise UnavailableError(f"cannot reach the LLM server at {self.base_url}: "
                                   f"{exc}") from exc
        except json.JSONDecodeError as exc:
            raise EngineError(f"the LLM server sent a malformed chunk: {exc}") from exc
        for _, part in sorted(pending.items()):
            call_id = part["id"] if TOOL_CALL_ID.match(part["id"]) else new_tool_call_id()
            yield EngineEvent(kind="tool_call", tool_call=ToolCall(
                call_id, part["name"], part["arguments"] or "{}"))
        if finish_reason is None:
            raise EngineError("the LLM server's stream ended without a finish reason")
        yield EngineEvent(kind="finish", finish_reason=finish_reason,
                          usage=usage or Usage(prompt_tokens=0, completion_tokens=0))

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` under the model's tokenizer when it is available
        locally; otherwise an estimate (4 characters a token)."""
        if self._tokenizer is None:
            self._tokenizer = self._load_tokenizer()
        if self._tokenizer is False:
            return (len(text) + 3) // 4
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def _load_tokenizer(self) -> Any:
        if self._tokenizer_path is None:
            return False
        try:
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(str(self._tokenizer_path),
                                                 local_files_only=True)
        except Exception:
            logger.warning("no local tokenizer for %s; counting tokens by estimate",
                           self._tokenizer_path)
            return False

    async def close(self) -> None:
        """Close the HTTP client; idempotent."""
        with suppress(Exception):
            await self._client.aclose()


def _merge_tool_call(pending: dict[int, dict[str, str]], part: dict[str, Any]) -> None:
    slot = pending.setdefault(int(part.get("index", 0)), {"id": "", "name": "", "arguments": ""})
    if part.get("id"):
        slot["id"] = part["id"]
    function = part.get("function") or {}
    if function.get("name"):
        slot["name"] = function["name"]
    if function.get("arguments"):
        slot["arguments"] += function["arguments"]


def _http_error(response: httpx.Response) -> Exception:
    try:
        message = response.json().get("error", {}).get("message") or response.text
    except (ValueError, AttributeError):
        message = response.text
    status = response.status_code
    text = f"the LLM server answered {status}: {message}"
    if status in (400, 404, 413, 422):
        return InvalidInputError(text)
    if status in (429, 502, 503, 504):
        return UnavailableError(text)
    return EngineError(text)
