"""From ``[n]`` markers in an answer to citations of the numbered sources."""

from __future__ import annotations

import re
from collections.abc import Sequence

from assistant.schemas import Citation, Source

# "[1]", "[1, 3]", "[2,4]"; adjacent markers like "[1][2]" match one by one.
_MARKER = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")


def cited_numbers(answer: str) -> list[int]:
    """Source numbers in order of first appearance, without repeats."""
    seen: dict[int, None] = {}
    for match in _MARKER.finditer(answer):
        for part in match.group(1).split(","):
            seen.setdefault(int(part), None)
    return list(seen)


def resolve_citations(answer: str, sources: Sequence[Source]) -> list[Citation]:
    """The sources the answer cites, in order of first citation.

    Markers outside ``1..len(sources)`` are dropped (the model invented them).
    Small models often cite nothing: then a non-empty answer is attributed to
    the top source with ``inferred=True``, so the UI can show where the answer
    most likely comes from while saying that the model did not cite it.
    """
    by_number = {s.n: s for s in sources}
    citations = [
        Citation(**by_number[n].model_dump())
        for n in cited_numbers(answer)
        if n in by_number
    ]
    if not citations and sources and answer.strip():
        citations = [Citation(**sources[0].model_dump(), inferred=True)]
    return citations
