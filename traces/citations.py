"""Which retrieved chunks an answer's citations credit as its evidence.

A chunk counts as *cited* (``TraceRetrievedChunk.cited``, the positives of
the ``retrieval-triplets`` export) only through a citation the model wrote
itself (``inferred`` false) that the support check did not reject
(``supported`` not false). An inferred citation is Sirocco's guess (the model
cited nothing) and an unsupported one points at a chunk that does not back
the claim: training a retriever on either would teach it noise. Nor are
their chunks sure negatives (an inferred citation names the top-ranked chunk),
so the export leaves them out of both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def credits_chunks(citation: Mapping[str, Any]) -> bool:
    """True when ``citation`` (a stored citation dict) makes its chunks cited."""
    return not citation.get("inferred") and citation.get("supported") is not False


def cited_chunk_ids(citations: Iterable[Mapping[str, Any]], *,
                    credited_only: bool = True) -> set[str]:
    """The chunk ids (a merged source stands for all its ``chunk_ids``) that
    ``citations`` point at: only the model-written, not unsupported ones, or
    with ``credited_only=False`` all of them."""
    cited: set[str] = set()
    for citation in citations:
        if credited_only and not credits_chunks(citation):
            continue
        if citation.get("chunk_id"):
            cited.add(citation["chunk_id"])
        cited.update(citation.get("chunk_ids") or ())
    return cited
