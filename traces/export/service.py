"""Running one export: select, build, scrub, deduplicate, cap, split, write,
validate, and describe it all in a manifest.

Output folder: ``train.jsonl``, ``validation.jsonl`` and ``manifest.json``
(request, counts, tokenizer, scrubber, seed, and each file's sha256).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from sirocco.db import session_scope, utcnow
from sirocco.files import file_sha256
from traces.export.dedup import deduplicate
from traces.export.examples import Example, select_examples
from traces.export.formats import Record, build_records
from traces.export.request import ExportRequest
from traces.export.scrub import Scrubber
from traces.export.validate import conversations, count_tokens, validate_file

logger = logging.getLogger(__name__)

FILES = ("train.jsonl", "validation.jsonl")
MANIFEST = "manifest.json"


def load_tokenizer(path: str | Path) -> Any:
    """The Hugging Face tokenizer (with its chat template) stored at ``path``."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def split_groups(keys: Sequence[str], *, fraction: float, seed: int) -> set[str]:
    """The conversation keys that go to validation: a seeded shuffle of the
    distinct keys, the first ``ceil(fraction * n)`` of them (at least one when
    there are two or more groups and ``fraction`` > 0)."""
    groups = sorted(set(keys))
    if fraction <= 0 or len(groups) < 2:
        return set()
    random.Random(seed).shuffle(groups)
    n = min(len(groups) - 1, max(1, math.ceil(fraction * len(groups))))
    return set(groups[:n])


def _tokenizer_info(path: str | Path | None, tokenizer: Any) -> dict[str, Any] | None:
    if tokenizer is None:
        return None
    template = getattr(tokenizer, "chat_template", None) or ""
    return {"path": str(path), "class": type(tokenizer).__name__,
            "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest()}


def run_export(request: ExportRequest, *, session_factory: sessionmaker[Session],
               out_dir: Path, tokenizer_path: str | Path | None = None,
               tokenizer: Any | None = None, export_id: str | None = None,
               pii_names: Sequence[str] = ()) -> dict[str, Any]:
    """Write the export ``request`` describes into ``out_dir`` and return its
    manifest. ``tokenizer`` (or one loaded from ``tokenizer_path``) counts
    tokens for ``max_tokens`` and renders records for validation.

    Raises ``ExportInvalidError`` when validation is on and a record fails it.
    """
    opts, filters = request.options, request.filters
    if tokenizer is None and tokenizer_path is not None:
        tokenizer = load_tokenizer(tokenizer_path)
    counts: dict[str, int] = {}
    with session_scope(session_factory) as session:
        examples = list(select_examples(session=session, filters=filters,
                                        include_context=opts.include_context, counts=counts))
    counts["examples"] = len(examples)
    pairs = build_records(request.format, examples, counts)

    scrubber = None
    if opts.scrub_pii:
        scrubber = Scrubber(names=[*opts.pii_names, *pii_names])
        pairs = [(ex, scrubber.record(rec)) for ex, rec in pairs]
    if opts.dedup:
        keep, counts["duplicates_exact"], counts["duplicates_near"] = deduplicate(
            [rec for _, rec in pairs], near_threshold=opts.near_dup_threshold)
        pairs = [pairs[i] for i in keep]
    if opts.max_tokens is not None and tokenizer is not None:
        fitting = [(ex, rec) for ex, rec in pairs if count_tokens(
            tokenizer, conversations(request.format, rec)) <= opts.max_tokens]
        counts["skipped_too_long"] = len(pairs) - len(fitting)
        pairs = fitting

    validation_keys = split_groups([ex.conversation_key for ex, _ in pairs],
                                   fraction=opts.validation_fraction, seed=opts.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    split: dict[str, list[tuple[Example, Record]]] = {
        "train.jsonl": [p for p in pairs if p[0].conversation_key not in validation_keys],
        "validation.jsonl": [p for p in pairs if p[0].conversation_key in validation_keys],
    }
    files: dict[str, Any] = {}
    for name, items in split.items():
        path = out_dir / name
        with path.open("w", encoding="utf-8") as fh:
            for _, record in items:
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        files[name] = {"records": len(items),
                       "conversations": len({ex.conversation_key for ex, _ in items}),
                       "bytes": path.stat().st_size, "sha256": file_sha256(path)}
    counts["records"] = len(pairs)

    checks = {}
    if opts.validate_records:
        for name in FILES:
            checks[name] = validate_file(request.format, out_dir / name, tokenizer=tokenizer)

    manifest = {
        "export_id": export_id,
        "created_at": utcnow().isoformat(),
        "format": request.format,
        "filters": filters.model_dump(mode="json"),
        "options": opts.model_dump(mode="json"),
        "seed": opts.seed,
        "counts": counts,
        "tokenizer": _tokenizer_info(tokenizer_path, tokenizer),
        "scrubber": scrubber.describe() if scrubber is not None else None,
        "files": files,
        "validation": checks,
        "trace_ids": sorted({ex.trace_id for ex, _ in pairs}),
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False),
                                    encoding="utf-8")
    logger.info("export written", extra={"export_id": export_id, "format": request.format,
                                         "records": len(pairs), "dir": str(out_dir)})
    return manifest
