"""The LLM engine port and its factory.

An ``Engine`` turns chat messages into a stream of ``EngineEvent``s: text
deltas, complete tool calls, and one final ``finish`` event carrying usage. Two
adapters: ``llm.vllm_engine.VLLMEngine`` (in-process ``AsyncLLM``) and
``llm.remote_engine.RemoteEngine`` (an OpenAI-compatible server by URL + key).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Any, Protocol

from llm.tools import ToolChoice
from sirocco.errors import ConfigError
from sirocco.settings import Settings
from sirocco.types import ChatMessage, EngineEvent, GenerationOptions


class Engine(Protocol):
    #: The name clients see (OpenAI ``model`` field) and traces record.
    model_name: str

    def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        options: GenerationOptions,
        tools: Sequence[dict[str, Any]] | None = None,
        tool_choice: ToolChoice | None = None,
        request_id: str | None = None,
    ) -> AsyncGenerator[EngineEvent, None]:
        """Stream the answer: text deltas, complete tool calls, then one ``finish``
        (usage; ``finish_reason="tool_calls"`` after calls). ``tool_choice``:
        "auto" (default), "none", "required" or ``{"type": "function",
        "function": {"name": ...}}``. Cancelling the iteration aborts the request
        in the engine."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` under the model's tokenizer."""
        ...

    async def close(self) -> None:
        """Stop the engine and free its memory."""
        ...


def create_llm_engine(settings: Settings) -> Engine:
    """Build the engine chosen by ``settings.llm.provider`` (starts it: slow)."""
    match settings.llm.provider:
        case "vllm":
            from llm.vllm_engine import VLLMEngine

            return VLLMEngine.start(settings)
        case "openai":
            from llm.remote_engine import RemoteEngine

            return RemoteEngine.from_settings(settings)
        case other:
            raise ConfigError(f"unknown llm provider {other!r}; valid: 'vllm', 'openai'")
