"""Choose ``assistant.refusal_min_score`` on the dev split of several QA sets
pooled, and report it on their test splits (each set and pooled).

Each set is indexed into its own temporary Qdrant (local mode) with the
product's parser, chunker and embedder (as ``sirocco eval answers --docs``);
each question's relevance is the closest chunk's dense similarity, the value
the assistant compares with the threshold. No language model is involved.

    .venv/bin/python bench/refusal_threshold.py \\
        --set examples/qa.jsonl examples/docs \\
        --set tests/data/qa-public/qa.jsonl $(sed 's|^|../shared/data/docs/|' \\
              tests/data/qa-public/documents.txt | tr '\\n' ',')
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assistant.evaluation import QAItem, calibrate, load_qa  # noqa: E402
from cli.eval_answers import _calibration, index_files  # noqa: E402
from sirocco.principal import Principal  # noqa: E402
from sirocco.settings import Settings, get_settings  # noqa: E402


def relevances(settings: Settings, qa: Path, docs: list[Path]
               ) -> tuple[list[QAItem], list[float], str]:
    """The questions of ``qa``, each one's relevance over an index of ``docs``,
    and the embedding model."""
    from ingest.embedding.base import create_embedder
    from retrieval.factory import create_store

    items = load_qa(qa)
    with tempfile.TemporaryDirectory(prefix="sirocco-threshold-") as tmp:
        local = settings.qdrant.model_copy(update={"url": None, "path": Path(tmp) / "q"})
        s = settings.model_copy(update={"qdrant": local})
        embedder = create_embedder(s)
        store = create_store(s)
        try:
            index_files(s, store, embedder, docs)
            found = _calibration(store, embedder, items, Principal(tenant="default",
                                                                  user="bench"))
        finally:
            store.close()
    return items, [found["relevance"][i.id] for i in items], embedder.model_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--set", nargs=2, action="append", required=True,
                        metavar=("QA", "DOCS"),
                        help="a QA set and its documents (comma-separated files or folders)")
    parser.add_argument("--max-false-refusal", type=float, default=0.0,
                        help="false refusals allowed on the dev split")
    args = parser.parse_args()
    settings = get_settings()
    pooled_items: list[QAItem] = []
    pooled: list[float] = []
    per_set = {}
    model = ""
    for qa, docs in args.set:
        items, rel, model = relevances(settings, Path(qa),
                                       [Path(d) for d in docs.split(",") if d])
        per_set[qa] = (items, rel)
        pooled_items += items
        pooled += rel
    chosen = calibrate(pooled_items, pooled, max_false_refusal=args.max_false_refusal)
    print(json.dumps({"embedding_model": model, **chosen}, indent=1))
    if chosen["threshold"] is None:
        return
    for qa, (items, rel) in per_set.items():
        # The same threshold, scored on this set alone (dev and test).
        alone = calibrate(items, rel, max_false_refusal=1.0)
        report = {}
        for split in ("dev", "test"):
            rows = [(r, i.unanswerable) for i, r in zip(items, rel, strict=True)
                    if i.split == split]
            un = [r < chosen["threshold"] for r, u in rows if u]
            an = [r < chosen["threshold"] for r, u in rows if not u]
            report[split] = {"refusal": round(sum(un) / len(un), 4) if un else None,
                             "false_refusal": round(sum(an) / len(an), 4) if an else None,
                             "questions": len(rows)}
        print(f"{qa}: {json.dumps(report)} (its own best threshold: {alone['threshold']})")


if __name__ == "__main__":
    main()
