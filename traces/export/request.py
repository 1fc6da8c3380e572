"""What an export asks for: format, filters and options (JSON-safe, so it
travels as a Celery argument and is stored on the ``exports`` row)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ExportFormat = Literal["mistral", "openai", "openai-dpo", "trl-sft", "trl-dpo", "trl-kto",
                       "sharegpt", "retrieval-triplets"]
FORMATS: tuple[str, ...] = ("mistral", "openai", "openai-dpo", "trl-sft", "trl-dpo", "trl-kto",
                            "sharegpt", "retrieval-triplets")
#: Formats of supervised examples: negatively rated answers are left out.
SFT_FORMATS = frozenset({"mistral", "openai", "trl-sft", "sharegpt"})
#: Formats of preference pairs: a corrected or better answer vs a rejected one.
PAIR_FORMATS = frozenset({"openai-dpo", "trl-dpo"})

# OpenAPI examples, shared by the models that embed them (and ExportPublic).
EXPORT_FILTERS_EXAMPLE: dict[str, Any] = {
    "since": "2026-10-01T00:00:00Z", "until": "2026-11-01T00:00:00Z",
    "model": "mistral-small-latest", "min_feedback": 1, "has_correction": False,
    "tool_calls_only": False, "exclude_errors": True, "consented_only": True,
    "reviewed_only": True}
EXPORT_OPTIONS_EXAMPLE: dict[str, Any] = {
    "include_context": True, "scrub_pii": True, "pii_names": ["Jane Doe"], "dedup": True,
    "near_dup_threshold": 0.9, "validation_fraction": 0.1, "seed": 42, "max_tokens": 8192,
    "validate_records": True}
EXPORT_REQUEST_EXAMPLE: dict[str, Any] = {
    "format": "trl-sft", "filters": EXPORT_FILTERS_EXAMPLE, "options": EXPORT_OPTIONS_EXAMPLE}


class ExportFilters(BaseModel):
    """Which traces go in. ``tenant`` is forced to the caller's by the API."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXPORT_FILTERS_EXAMPLE]})

    tenant: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    model: str | None = None
    #: Feedback score (sum of thumbs, plus rating - 3 per rating) at least this.
    min_feedback: int | None = None
    has_correction: bool = False
    tool_calls_only: bool = False
    exclude_errors: bool = True
    consented_only: bool = True
    #: Only feedback a reviewer approved counts (corrections included): by
    #: default an unreviewed correction never becomes training data.
    reviewed_only: bool = True


class ExportOptions(BaseModel):
    """How records are written."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXPORT_OPTIONS_EXAMPLE]})

    #: Keep the retrieved sources in the prompt as the model saw them; False
    #: puts the bare question in their place.
    include_context: bool = True
    scrub_pii: bool = False
    #: Extra names to scrub (people the name lists may not know).
    pii_names: list[str] = Field(default_factory=list)
    dedup: bool = True
    #: Jaccard similarity of word 3-grams at which two records are near-duplicates.
    near_dup_threshold: float = Field(default=0.9, gt=0, le=1)
    validation_fraction: float = Field(default=0.1, ge=0, lt=1)
    seed: int = 0
    #: Records longer than this (in the tokenizer's tokens, chat template applied)
    #: are left out; None: no limit.
    max_tokens: int | None = Field(default=None, ge=1)
    #: Check every record (mistral_common, datasets load, chat template) and
    #: fail the export when one does not pass.
    validate_records: bool = True


class ExportRequest(BaseModel):
    """One export: a format, filters and options."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXPORT_REQUEST_EXAMPLE]})

    format: ExportFormat
    filters: ExportFilters = Field(default_factory=ExportFilters)
    options: ExportOptions = Field(default_factory=ExportOptions)
