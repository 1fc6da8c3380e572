"""The one settings tree.

Every knob of Sirocco lives here and is read from the environment with the
``SIROCCO_`` prefix and ``__`` between nested sections, e.g.
``SIROCCO_LLM__MAX_MODEL_LEN=4096``. Three short names documented for
operators are accepted as well: ``SIROCCO_DATABASE_URL``, ``SIROCCO_REDIS_URL``
and ``SIROCCO_QDRANT_URL``.

Nothing else in the code base reads ``os.environ``; code receives a
``Settings`` object (built by ``get_settings()`` or by a test).

The sections live in ``sirocco.settings_sections`` (database, Redis, Qdrant,
Celery, auth, API, ingest, traces) and ``sirocco.settings_models`` (LLM and its
profiles, embedding, chunking, retrieval, assistant and HTTP tools); every name
is imported from here. Each field carries a ``Field(description=...)``, which
the JSON schema (``Settings.model_json_schema()``) shows.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from sirocco.settings_models import (
    AssistantSettings,
    ChunkingSettings,
    EmbeddingSettings,
    HttpToolSettings,
    LLMSettings,
    RetrievalSettings,
    load_llm_profile,
)
from sirocco.settings_sections import (
    PLACEHOLDER_SECRET,
    ApiSettings,
    AuthSettings,
    CelerySettings,
    DatabaseSettings,
    IngestSettings,
    QdrantSettings,
    RedisSettings,
    TracesSettings,
)

__all__ = [
    "PLACEHOLDER_SECRET",
    "ApiSettings",
    "AssistantSettings",
    "AuthSettings",
    "CelerySettings",
    "ChunkingSettings",
    "DatabaseSettings",
    "EmbeddingSettings",
    "HttpToolSettings",
    "IngestSettings",
    "LLMSettings",
    "QdrantSettings",
    "RedisSettings",
    "RetrievalSettings",
    "Settings",
    "TracesSettings",
    "get_settings",
    "load_llm_profile",
    "normalize_database_url",
]


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
    """Every setting of Sirocco: the top-level ones and one section per component."""

    model_config = SettingsConfigDict(
        env_prefix="SIROCCO_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    env: Literal["dev", "test", "prod"] = Field(default="dev", description=(
        "The deployment: dev, test or prod. prod refuses the placeholder secret and "
        "disabled authentication."))
    data_dir: Path = Field(default=Path("var"), description=(
        "Where embedded state lives: the SQLite database and broker, the local Qdrant "
        "store, models, uploads, exports, the trace spool and the server secret."))
    models_dir: Path | None = Field(default=None, description=(
        "Where prepared model checkpoints are cached; None: <data_dir>/models."))

    db: DatabaseSettings = Field(default_factory=DatabaseSettings,
                                 description="The relational database.")
    redis: RedisSettings = Field(default_factory=RedisSettings,
                                 description="Redis (broker and shared limits).")
    qdrant: QdrantSettings = Field(default_factory=QdrantSettings,
                                   description="The Qdrant vector store.")
    llm: LLMSettings = Field(default_factory=LLMSettings,
                             description="The LLM engine and generation defaults.")
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings,
                                         description="The embedding model.")
    chunking: ChunkingSettings = Field(default_factory=ChunkingSettings,
                                       description="How documents are cut into chunks.")
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings,
                                         description="Search and reranking.")
    celery: CelerySettings = Field(default_factory=CelerySettings,
                                   description="The background workers.")
    auth: AuthSettings = Field(default_factory=AuthSettings,
                               description="API keys, the server secret, rate limits.")
    api: ApiSettings = Field(default_factory=ApiSettings,
                             description="The HTTP API server and request bounds.")
    ingest: IngestSettings = Field(default_factory=IngestSettings,
                                   description="Allowed source folders and parsing bounds.")
    assistant: AssistantSettings = Field(default_factory=AssistantSettings,
                                         description="The answering loop and its tools.")
    traces: TracesSettings = Field(default_factory=TracesSettings,
                                   description="Chat traces and exports.")

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
