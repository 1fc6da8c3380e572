"""The service sections of the settings tree: database, Redis, Qdrant, Celery,
authentication, the HTTP API, ingestion bounds and traces.

Import them from ``sirocco.settings``, which assembles them into ``Settings``;
this module must not import ``sirocco.settings`` (no import cycle).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

PLACEHOLDER_SECRET = "change-me"


class DatabaseSettings(BaseModel):
    """The relational database (documents, jobs, keys, traces)."""

    url: str | None = Field(default=None, description=(
        "Database URL (also SIROCCO_DATABASE_URL); a plain postgresql:// URL is mapped to "
        "the psycopg 3 driver. None: a SQLite file under data_dir (the embedded default)."))
    echo: bool = Field(default=False, description=(
        "Log every SQL statement (SQLAlchemy's echo)."))


class RedisSettings(BaseModel):
    """Redis: the Celery broker and the shared per-tenant limits."""

    url: str | None = Field(default=None, description=(
        "Redis URL (also SIROCCO_REDIS_URL). None: no Redis; Celery uses the embedded "
        "SQLite broker under data_dir."))


class QdrantSettings(BaseModel):
    """The vector store: a Qdrant server, or an embedded engine (qdrant-edge, or
    qdrant-client's local mode)."""

    url: str | None = Field(default=None, description=(
        "Qdrant server URL (also SIROCCO_QDRANT_URL). None: the embedded engine "
        "(see engine) under path (default data_dir/qdrant)."))
    api_key: str | None = Field(default=None, description=(
        "API key sent to the Qdrant server; None: none."))
    path: Path | None = Field(default=None, description=(
        "Embedded store only: the folder of the store (edge shards under "
        "<path>/edge/<collection>); None: data_dir/qdrant."))
    collection: str = Field(default="sirocco_chunks", description=(
        "Name of the alias the chunk collection lives behind (a rebuild fills "
        "<alias>__<n> and swaps the alias)."))
    timeout_s: float = Field(default=30.0, description=(
        "Timeout of one request to the Qdrant server, in seconds (rounded up, at least 1)."))
    engine: Literal["edge", "local"] = Field(default="edge", description=(
        "The embedded store when url is unset. edge: qdrant-edge, Qdrant's engine "
        "in-process (HNSW and payload indexes on disk; one process owns the shards and "
        "serves the others over a Unix socket in the store folder). local: "
        "qdrant-client's local mode (the whole collection loaded per operation, under "
        "one exclusive lock), kept as a fallback. Ignored when url is set."))
    lock_timeout_s: float = Field(default=120.0, description=(
        "Embedded store only: how long to wait, in seconds, for another process holding "
        "the store (local) or for the owner process to answer (edge)."))


class CelerySettings(BaseModel):
    """The background workers (Celery): time limits, retries, queues, recovery."""

    task_time_limit_s: int = Field(default=900, description=(
        "Hard time limit of one task, in seconds (Celery's task_time_limit); also the "
        "lease of a document claimed for embedding."))
    task_soft_time_limit_s: int = Field(default=840, description=(
        "Soft time limit of one task, in seconds (Celery's task_soft_time_limit): past "
        "it the task is told to stop and counts as failed."))
    max_retries: int = Field(default=3, description=(
        "Retries of a failed task (exponential backoff) before its document fails."))
    concurrency: int = Field(default=1, description=(
        "Worker processes of one Celery worker (its --concurrency) unless the command "
        "line gives one."))
    queue_prefix: str = Field(default="sirocco", description=(
        "Queues are \"<prefix>.parse\", \"<prefix>.embed\" and \"<prefix>.exports\": a "
        "slow parser never holds up embedding, nor a large ingestion an export, when each "
        "has its own worker."))
    parse_batch_docs: int = Field(default=32, ge=1, description=(
        "Documents per parse message: the broker's cost per message (a poll, a round "
        "trip) is paid once per batch. Each document keeps its own outcome and retries."))
    parse_batch_s: float = Field(default=60.0, gt=0, description=(
        "A parse batch running longer than this, in seconds, sends its remaining "
        "documents on in a new message (large files never push a batch past the time "
        "limit)."))
    parse_nice: int = Field(default=10, ge=0, le=19, description=(
        "`sirocco up` only: niceness added to its parse worker. On a machine where parsing "
        "and embedding share the cores, parsing then takes the CPU embedding leaves (it "
        "stays ahead: it is several times faster) instead of stalling the embedding "
        "model's threads. 0: equal shares."))
    broker_poll_s: float = Field(default=0.05, gt=0, description=(
        "Embedded broker only: how often, in seconds, a worker looks for new messages "
        "(kombu's SQL transport polls; Redis pushes)."))
    visibility_timeout_s: int | None = Field(default=None, description=(
        "Redis only: an unacked message (its worker was killed) is redelivered after this "
        "many seconds. None: long enough for the longest task plus its retry delay."))
    recover_after_s: int = Field(default=300, ge=0, description=(
        "Lost messages (see workers.recovery): a job item still queued, or a parsed "
        "document still waiting for embedding, this many seconds after its last change "
        "(a parse: this plus the time limit) with no message for it in the broker or a "
        "worker, is sent again."))
    recover_interval_s: int = Field(default=60, ge=0, description=(
        "How often, in seconds, workers look for lost messages; 0: never."))
    max_memory_per_child_kib: int = Field(default=2_097_152, ge=0, description=(
        "A worker child past this resident memory (KiB) is replaced after its task "
        "(Celery's worker_max_memory_per_child); 0: never."))


class AuthSettings(BaseModel):
    """API keys, the server secret and the request rate limits."""

    secret_key: str = Field(default=PLACEHOLDER_SECRET, description=(
        "The server secret; it salts the user pseudonyms of traces and feedback. The "
        "placeholder is replaced by a generated secret stored under data_dir (kept only "
        "when env is explicitly dev or test) and refused in prod."))
    enabled: bool = Field(default=True, description=(
        "Every endpoint but health needs an API key. Off: every request acts as an admin "
        "of the \"default\" tenant (dev and tests only; refused in prod)."))
    rate_limit_per_minute: float = Field(default=120.0, ge=0, description=(
        "Per-key token bucket: requests a minute it refills at; 0 turns the limit off."))
    rate_limit_burst: int = Field(default=30, ge=1, description=(
        "Per-key token bucket: the most requests it holds (the burst)."))
    invalid_key_per_minute: float = Field(default=10.0, ge=0, description=(
        "Failed keys a minute per client address; past the burst, 429 before any key is "
        "checked; 0: off."))
    invalid_key_burst: int = Field(default=10, ge=1, description="Failed keys at once.")
    open_endpoints: list[Literal["docs", "metrics"]] = Field(
        default_factory=list,
        description="Endpoints served without a key: \"docs\" (/docs, /openapi.json) and/or "
                    "\"metrics\" (/metrics, for a Prometheus that cannot send a bearer token).")
    reviewer_groups: list[str] = Field(
        default_factory=lambda: ["reviewers", "annotators"],
        description="Members of these groups (and admins) may read every trace of their "
                    "tenant, annotate, review feedback and export; others see their own.")


class ApiSettings(BaseModel):
    """The HTTP API server and the bounds on one request."""

    host: str = Field(default="127.0.0.1", description=(
        "Address the API server binds to (and the CLI's default server address)."))
    port: int = Field(default=8000, description=(
        "Port the API server listens on (and the CLI's default server port)."))
    max_upload_mb: int = Field(default=50, description=(
        "Largest upload request (all its files), in MB; a bigger one is refused before parsing."))
    max_question_chars: int = Field(default=8000, ge=1, description=(
        "Longest question of one chat request (native and OpenAI-compatible); longer "
        "input is refused with a 4xx instead of reaching the engine."))
    max_history_messages: int = Field(default=32, ge=0, description=(
        "Most history messages one chat request may carry; more are refused with a 4xx."))
    max_tools: int = Field(default=16, ge=0, description=(
        "Most tools one OpenAI-compatible chat request may send; more are refused with a 4xx."))
    web_dir: Path | None = Field(default=None, description=(
        "The built web UI served at / (index.html, assets/, vendor/); default: web/dist "
        "of the checkout, which `make web` builds."))


class IngestSettings(BaseModel):
    """Where sources may come from and the per-file bounds on parsing
    (see ``ingest.formats.base.Limits``)."""

    allowed_roots: list[Path] = Field(
        default_factory=list,
        description="Folders under which POST /api/sources may register sources. Empty: "
                    "the API refuses every folder (the CLI on the server may still add them).")
    max_file_mb: float = Field(default=100, description=(
        "Largest file accepted for parsing (and per uploaded file), in MB."))
    max_pages: int = Field(default=2000, description=(
        "Most pages (or slides) one document may have; more are refused."))
    max_zip_ratio: float = Field(default=100, description=(
        "Zip-based formats (docx, xlsx, pptx, odt, epub): the largest expansion ratio "
        "accepted; past it the file is refused as a likely zip bomb."))
    max_zip_expanded_mb: float = Field(default=500, description=(
        "Zip-based formats: the most MB a file may expand to; past it the file is "
        "refused as a likely zip bomb."))
    max_chars: int = Field(default=20_000_000, ge=1,
                           description="Characters of text one document may yield.")
    max_cells: int = Field(default=2_000_000, ge=1, description=(
        "Spreadsheet cells one document may hold (cells read, not the size a sheet claims)."))
    max_repeat: int = Field(default=10_000, ge=1, description=(
        "Largest repeat count a file may ask for (an OpenDocument run of spaces)."))


class TracesSettings(BaseModel):
    """Chat traces: how they are written, consent, exports."""

    background: bool = Field(default=True, description=(
        "Trace writes go to a writer thread (drained on shutdown, spooled to "
        "<data_dir>/traces when the database is down) instead of the request path."))
    default_consent: bool = Field(default=False, description=(
        "Whether a chat that says nothing about consent may become training data."))
    export_dir: Path | None = Field(default=None, description=(
        "Where export files are written; None: <data_dir>/exports."))
