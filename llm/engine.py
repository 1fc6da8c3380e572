"""The LLM engine port and its factory.

An ``Engine`` turns chat messages into a stream of ``EngineEvent``s: text
deltas, complete tool calls, and one final ``finish`` event carrying usage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

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
        request_id: str | None = None,
    ) -> AsyncIterator[EngineEvent]:
        """Stream the answer. Cancelling the iteration aborts the request in the engine."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` under the model's tokenizer."""
        ...

    async def close(self) -> None:
        """Stop the engine and free its memory."""
        ...


def create_engine(settings: Settings) -> Engine:
    """Build the engine chosen by ``settings.llm.provider`` (starts it: slow)."""
    match settings.llm.provider:
        case "vllm":
            from llm.vllm_engine import VLLMEngine

            return VLLMEngine.start(settings)
        case other:
            raise ConfigError(f"unknown llm provider {other!r}; valid: 'vllm'")
