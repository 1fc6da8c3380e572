"""The in-process vLLM engine (V1 ``AsyncLLM``) behind the ``Engine`` port.

Starting it launches an EngineCore process and (on CPU, always) a worker
process with the ``spawn`` start method: a script that starts it must do so
under ``if __name__ == "__main__":`` (pytest and uvicorn are fine, their
``__main__`` is guarded). Start-up takes tens of seconds on CPU with
``enforce_eager=True``; build one engine per process and share it.

With ``llm.log_stats`` on, vLLM registers its Prometheus metrics in the
process-wide default registry, replacing those of any engine started before:
one engine with stats per process (others: ``log_stats=False``).

vllm, torch and transformers are imported lazily, so importing this module is cheap.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llm.cpu import cpu_environment
from llm.tools import ToolChoice, forced_call_schema, parse_forced_calls
from llm.vllm_args import engine_args_from_settings
from llm.vllm_tools import NativeToolParser, held_back, structured_outputs, text_pattern
from sirocco.errors import EngineError, InvalidInputError
from sirocco.settings import Settings
from sirocco.types import ChatMessage, EngineEvent, GenerationOptions, ToolCall, Usage

if TYPE_CHECKING:
    from vllm.v1.engine.async_llm import AsyncLLM

logger = logging.getLogger(__name__)

@dataclass(frozen=True, slots=True)
class _Request:
    """One generation as vLLM gets it, and how its output is read."""

    request_id: str
    prompt_ids: list[int]
    params: Any
    max_tokens: int
    tools: list[dict[str, Any]]
    tool_choice: ToolChoice | None
    forced: dict[str, Any] | None
    parser: NativeToolParser | None


@dataclass(slots=True)
class _TextGate:
    """Which generated text may stream now: all of it normally; none of a forced
    call; for a native parser, nothing from its call marker on (and no tail that
    may start one), so a call never leaks out as answer text."""

    holding: bool
    marker: str | None
    watch: bool
    text: str = ""
    streamed: int = 0
    tokens: int = 0
    finish_reason: str | None = None

    def feed(self, delta: str, tokens: int, finish_reason: str | None) -> str:
        """Take one output delta; the text to stream now ("" for none)."""
        self.tokens += tokens
        if finish_reason is not None:
            self.finish_reason = finish_reason
        self.text += delta
        if self.watch and not self.holding and self.marker and self.marker in self.text:
            self.holding = True
            end = self.text.index(self.marker)
        elif self.holding:
            return ""
        else:
            end = len(self.text) - held_back(self.text, self.marker)
        if end <= self.streamed:
            return ""
        out, self.streamed = self.text[self.streamed:end], end
        return out


class VLLMEngine:
    """``Engine`` backed by an in-process vLLM ``AsyncLLM``."""

    def __init__(self, llm: AsyncLLM, *, model_name: str, start_seconds: float = 0.0,
                 tool_parser: str | None = None) -> None:
        self._llm = llm
        self.model_name = model_name
        self.start_seconds = start_seconds
        self._tokenizer = llm.get_tokenizer()
        self._max_model_len = llm.vllm_config.model_config.max_model_len
        self._closed = False
        self._tool_parser = NativeToolParser(tool_parser, self._tokenizer) if tool_parser else None

    @classmethod
    def start(cls, settings: Settings) -> VLLMEngine:
        """Build and start the engine (blocks for tens of seconds on CPU)."""
        from vllm.v1.engine.async_llm import AsyncLLM

        args = engine_args_from_settings(settings)
        logger.info("starting vLLM engine", extra={"model": args.model, "dtype": args.dtype})
        started = time.monotonic()
        try:
            with cpu_environment(settings):
                llm = AsyncLLM.from_engine_args(args)
        except Exception as exc:
            raise EngineError(f"vLLM engine failed to start for {args.model}: {exc}") from exc
        seconds = time.monotonic() - started
        logger.info("vLLM engine ready", extra={"model": args.model, "seconds": round(seconds, 1)})
        try:
            engine = cls(llm, model_name=settings.llm.served_model_name, start_seconds=seconds,
                         tool_parser=settings.llm.tool_parser)
        except BaseException:
            llm.shutdown()
            raise
        # Some import during start-up keeps a traceback, hence this frame, alive;
        # holding the AsyncLLM here would defeat close() (see there).
        del llm
        return engine

    # ------------------------------------------------------------------ Engine port

    def render_prompt(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[dict[str, Any]] | None = None,
    ) -> list[int]:
        """Prompt token ids: the model's chat template applied to ``messages``."""
        # Mistral's own tokenizer (tokenizer_mode "mistral") renders to ids directly.
        native = getattr(self._tokenizer, "IS_MISTRAL_TOKENIZER", False)
        kwargs: dict[str, Any] = {"add_generation_prompt": True, "tokenize": native}
        if tools:
            kwargs["tools"] = list(tools)
        try:
            rendered = self._tokenizer.apply_chat_template(
                [m.to_openai() for m in messages], **kwargs
            )
        except Exception as exc:
            raise InvalidInputError(f"cannot apply the chat template: {exc}") from exc
        if isinstance(rendered, str):
            # The template already wrote any BOS as text: do not add another.
            return list(self._tokenizer.encode(rendered, add_special_tokens=False))
        return list(rendered)

    async def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        options: GenerationOptions,
        tools: Sequence[dict[str, Any]] | None = None,
        tool_choice: ToolChoice | None = None,
        request_id: str | None = None,
    ) -> AsyncGenerator[EngineEvent, None]:
        """Stream text deltas, then ``tool_call`` events, then one ``finish`` with usage.

        ``tool_choice`` "required" or a named tool forces a call by structured
        outputs (the text is the call: no text events); "auto" (default with
        tools) lets a model with a native parser (``llm.tool_parser``) call
        tools in its own format; "none" renders the tools but parses nothing.
        A finish after calls has ``finish_reason="tool_calls"``.

        Closing the iterator early (``aclose()``, ``break`` then garbage
        collection, or task cancellation) aborts the request in the engine;
        prefer ``contextlib.aclosing`` so the abort happens at once.
        """
        self._check_open()
        req = self._request(messages, options, list(tools or []), tool_choice,
                            request_id or f"sirocco-{uuid.uuid4().hex}")
        try:
            # Render the token prompt the way vLLM 0.32 wants it: passing a raw
            # prompt to generate() is deprecated there.
            (engine_input,) = await self._llm.renderer.render_cmpl_async(
                [{"prompt_token_ids": req.prompt_ids}])
        except Exception as exc:
            raise EngineError(f"vLLM refused the prompt ({req.request_id}): {exc}") from exc
        stream = self._llm.generate(engine_input, req.params, req.request_id)
        gate = _TextGate(holding=req.forced is not None,
                         marker=req.parser.start_marker if req.parser else None,
                         watch=req.parser is not None)
        finished = False
        try:
            async for out in stream:
                for choice in out.outputs:
                    delta = gate.feed(choice.text, len(choice.token_ids), choice.finish_reason)
                    if delta:
                        yield EngineEvent(kind="text", text=delta)
                finished = out.finished
        except (GeneratorExit, asyncio.CancelledError):
            await self._abort(stream, req.request_id)
            raise
        except Exception as exc:
            raise EngineError(f"generation failed ({req.request_id}): {exc}") from exc
        if not finished:
            raise EngineError(f"generation ended without a final output ({req.request_id})")
        rest, calls = self._tail(req, gate)
        if rest:
            yield EngineEvent(kind="text", text=rest)
        for call in calls:
            yield EngineEvent(kind="tool_call", tool_call=call)
        yield EngineEvent(
            kind="finish",
            finish_reason="tool_calls" if calls else (gate.finish_reason or "stop"),
            usage=Usage(prompt_tokens=len(req.prompt_ids), completion_tokens=gate.tokens),
        )

    def _request(self, messages: Sequence[ChatMessage], options: GenerationOptions,
                 tools: list[dict[str, Any]], tool_choice: ToolChoice | None,
                 request_id: str) -> _Request:
        """The prompt and sampling parameters of one generation; ``InvalidInputError``
        for a prompt over the context."""
        from vllm.sampling_params import RequestOutputKind, SamplingParams

        forced = forced_call_schema(tools, tool_choice)
        parser = self._tool_parser if tools and forced is None and tool_choice != "none" else None
        prompt_ids = self.render_prompt(messages, tools)
        if len(prompt_ids) >= self._max_model_len:
            raise InvalidInputError(
                f"the prompt has {len(prompt_ids)} tokens; the model's context is "
                f"{self._max_model_len} (max_model_len)")
        max_tokens = min(options.max_tokens, self._max_model_len - len(prompt_ids))
        params = SamplingParams(
            max_tokens=max_tokens, temperature=options.temperature, top_p=options.top_p,
            stop=list(options.stop) or None, seed=options.seed,
            output_kind=RequestOutputKind.DELTA,
            repetition_penalty=options.repetition_penalty,
            frequency_penalty=options.frequency_penalty,
            structured_outputs=(structured_outputs(forced) if forced is not None
                                else text_pattern(options.regex) if options.regex and not tools
                                else None),
            # A native parser needs its call marker ([TOOL_CALLS]) in the text.
            skip_special_tokens=parser is None)
        return _Request(request_id=request_id, prompt_ids=prompt_ids, params=params,
                        max_tokens=max_tokens, tools=tools, tool_choice=tool_choice,
                        forced=forced, parser=parser)

    @staticmethod
    def _tail(req: _Request, gate: _TextGate) -> tuple[str, list[ToolCall]]:
        """What follows the streamed text: the rest of it and the tool calls."""
        rest = gate.text[gate.streamed:]
        if req.forced is not None:
            calls = parse_forced_calls(gate.text, req.tool_choice or "required")
            if not calls:
                # Never pass a half-written call on as answer text.
                if gate.finish_reason == "length":
                    raise InvalidInputError(
                        f"the forced tool call did not fit in max_tokens={req.max_tokens}; "
                        "raise max_tokens")
                raise EngineError(f"the forced tool call was not valid JSON ({req.request_id})")
            return "", calls
        if req.parser is not None and gate.holding:
            return req.parser.extract(rest, req.tools, req.tool_choice)
        return rest, []

    async def _abort(self, stream: Any, request_id: str) -> None:
        # Closing vLLM's generator aborts under its internal id; the explicit
        # abort by our id covers a request vLLM had not registered yet. A stream
        # the caller dropped may only be collected after close(): nothing to abort.
        if self._closed:
            return
        try:
            await stream.aclose()
            await self._llm.abort(request_id)
        except Exception:
            logger.warning("aborting %s failed", request_id, exc_info=True)
        else:
            logger.info("request aborted", extra={"request_id": request_id})

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` under the model's tokenizer (no special tokens)."""
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    async def close(self) -> None:
        """Shut the engine (EngineCore and workers) down; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._llm.shutdown()
        # AsyncLLM.__del__ calls shutdown() again; at interpreter exit that
        # fails noisily (module globals already None), so let it run now.
        del self._llm
        gc.collect()
        logger.info("vLLM engine shut down")

    # ------------------------------------------------------------------ introspection

    def num_unfinished_requests(self) -> int:
        """Requests the engine still tracks (0 when idle)."""
        self._check_open()
        return self._llm.get_num_unfinished_requests()

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError("the engine is closed")

    def engine_config_summary(self) -> dict[str, Any]:
        """The effective configuration, after vLLM resolved its defaults."""
        import vllm

        self._check_open()
        cfg = self._llm.vllm_config
        model, cache, par = cfg.model_config, cfg.cache_config, cfg.parallel_config
        hf = model.hf_config
        blocks = cache.num_gpu_blocks or 0
        return {
            "vllm_version": vllm.__version__,
            "device": cfg.device_config.device_type,
            "model": model.model,
            "served_model_name": self.model_name,
            "architectures": list(getattr(hf, "architectures", None) or []),
            "num_experts": getattr(hf, "num_local_experts", None),
            "experts_per_tok": getattr(hf, "num_experts_per_tok", None),
            "dtype": str(model.dtype).removeprefix("torch."),
            "max_model_len": model.max_model_len,
            "enforce_eager": model.enforce_eager,
            "seed": model.seed,
            "block_size": cache.block_size,
            "kv_cache_bytes": cache.kv_cache_memory_bytes,
            "kv_cache_blocks": blocks,
            "kv_cache_tokens": blocks * cache.block_size,
            "enable_prefix_caching": cache.enable_prefix_caching,
            "tensor_parallel_size": par.tensor_parallel_size,
            "enable_expert_parallel": par.enable_expert_parallel,
            "distributed_executor_backend": str(par.distributed_executor_backend),
            "max_num_seqs": cfg.scheduler_config.max_num_seqs,
            "max_num_batched_tokens": cfg.scheduler_config.max_num_batched_tokens,
            "kv_cache_dtype": str(cache.cache_dtype),
            "gpu_memory_utilization": cache.gpu_memory_utilization,
            "tool_parser": self._tool_parser.name if self._tool_parser else None,
            "start_seconds": round(self.start_seconds, 1),
        }
