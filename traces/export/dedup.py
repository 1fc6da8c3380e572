"""Exact and near-duplicate removal of export records.

Exact: the sha256 of the record's canonical JSON. Near: MinHash signatures of
word 3-gram shingles of the record's text, banded for candidate pairs
(locality-sensitive hashing), each candidate confirmed by the true Jaccard
similarity. The first record of a group is kept (records come oldest first).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

NUM_PERM = 64
BANDS = 16  # of NUM_PERM // BANDS rows: pairs at Jaccard 0.9 collide with p > 0.999
_PRIME = (1 << 61) - 1
_WORDS = re.compile(r"\w+", re.UNICODE)


def record_text(record: Any) -> str:
    """Every string value of a JSON record, in order, joined by spaces."""
    if isinstance(record, dict):
        return " ".join(record_text(v) for v in record.values())
    if isinstance(record, list):
        return " ".join(record_text(v) for v in record)
    return record if isinstance(record, str) else ""


def exact_key(record: Any) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True, ensure_ascii=False)
                          .encode()).hexdigest()


def shingles(text: str, n: int = 3) -> set[int]:
    words = _WORDS.findall(text.lower())
    if len(words) < n:
        words = words + [""] * (n - len(words))
    return {int.from_bytes(hashlib.blake2b(" ".join(words[i:i + n]).encode(),
                                           digest_size=8).digest(), "big")
            for i in range(len(words) - n + 1)}


def _signature(items: set[int], params: Sequence[tuple[int, int]]) -> tuple[int, ...]:
    return tuple(min((a * x + b) % _PRIME for x in items) for a, b in params)


def deduplicate(records: Sequence[Any], *, near_threshold: float | None = 0.9
                ) -> tuple[list[int], int, int]:
    """Indexes of the records to keep, and how many exact and near duplicates
    were dropped. ``near_threshold`` None: exact duplicates only."""
    seen: set[str] = set()
    unique: list[int] = []
    exact = 0
    for i, record in enumerate(records):
        key = exact_key(record)
        if key in seen:
            exact += 1
            continue
        seen.add(key)
        unique.append(i)
    if near_threshold is None:
        return unique, exact, 0
    rng = random.Random(1234)
    params = [(rng.randrange(1, _PRIME), rng.randrange(0, _PRIME)) for _ in range(NUM_PERM)]
    rows = NUM_PERM // BANDS
    buckets: dict[tuple[int, tuple[int, ...]], list[int]] = defaultdict(list)
    sets: dict[int, set[int]] = {}
    kept: list[int] = []
    near = 0
    for i in unique:
        items = shingles(record_text(records[i]))
        sig = _signature(items, params)
        candidates = {j for b in range(BANDS)
                      for j in buckets.get((b, sig[b * rows:(b + 1) * rows]), ())}
        if any(len(items & sets[j]) / max(1, len(items | sets[j])) >= near_threshold
               for j in candidates):
            near += 1
            continue
        sets[i] = items
        kept.append(i)
        for b in range(BANDS):
            buckets[(b, sig[b * rows:(b + 1) * rows])].append(i)
    return kept, exact, near
