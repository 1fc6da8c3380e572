"""How chunks and filters travel to the embedded edge engine.

The owner process of an embedded store (``retrieval.edge_store``) may serve
other processes over a socket, so what crosses to the engine is plain JSON
and bytes: a *point* is ``{"id", "sparse": [indices, values], "payload"}``,
the dense vectors of a write travel beside them as one float32 array, and a
*filter spec* is a ``SearchFilter`` flattened to the tenant, the ACL entries
its caller matches and the other restrictions. ``edge_filter`` turns a spec
into qdrant-edge's filter with the same conditions as
``retrieval.qdrant_payload.qdrant_filter``: same payload, same semantics on
every engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import qdrant_edge as qe

from retrieval.qdrant_payload import index_text, payload
from retrieval.sparse import SparseEncoder
from retrieval.store import SearchFilter
from sirocco.types import Chunk

_ANY_OF = ("acl", "doc_id", "source_id", "mime_type", "tags")


def filter_spec(f: SearchFilter) -> dict[str, Any]:
    """``f`` as JSON: the tenant, each keyword restriction, ids and dates."""
    spec: dict[str, Any] = {}
    tenant = f.caller.tenant if f.caller is not None else f.tenant
    if tenant is not None:
        spec["tenant"] = tenant
    lists = {"acl": f.caller.acl_entries() if f.caller is not None else None,
             "doc_id": f.doc_ids, "source_id": f.source_ids, "mime_type": f.mime_types,
             "tags": f.tags, "chunk_ids": f.chunk_ids}
    for key, values in lists.items():
        if values is not None:
            spec[key] = [str(v) for v in values]
    if f.modified_after is not None or f.modified_before is not None:
        spec["modified"] = [f.modified_after, f.modified_before]
    return spec


def edge_filter(spec: dict[str, Any] | None) -> qe.Filter | None:
    """The edge filter of a spec (every condition must hold); None when empty."""
    if not spec:
        return None
    must: list[Any] = []
    if "tenant" in spec:
        must.append(qe.FieldCondition(key="tenant", match=qe.MatchValue(spec["tenant"])))
    for key in _ANY_OF:
        if key in spec:
            must.append(qe.FieldCondition(key=key, match=qe.MatchAny(list(spec[key]))))
    if "chunk_ids" in spec:
        must.append(qe.HasIdCondition(set(spec["chunk_ids"])))
    if "modified" in spec:
        after, before = spec["modified"]
        must.append(qe.FieldCondition(key="modified_at", range=qe.RangeFloat(
            gte=after, lte=before)))
    return qe.Filter(must=must) if must else None


def documents_filter(doc_ids: Sequence[str], keep: Sequence[str] = ()) -> qe.Filter:
    """Every point of these documents but ``keep`` (for deletes and payload
    updates), as ``qdrant_payload.documents_selector`` says it to qdrant-client."""
    return qe.Filter(must=[qe.FieldCondition(key="doc_id", match=qe.MatchAny(list(doc_ids)))],
                     must_not=[qe.HasIdCondition(set(keep))] if keep else None)


def point_dicts(encoder: SparseEncoder, chunks: Sequence[Chunk],
                vectors: Sequence[Sequence[float]]) -> tuple[list[dict[str, Any]], bytes]:
    """Points for chunks: their ids, BM25 vectors and payloads as JSON, and
    their dense vectors as one float32 array (``dense_rows`` reads it back)."""
    if len(chunks) != len(vectors):
        raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
    out = []
    for c in chunks:
        indices, values = encoder.encode_document(index_text(c))
        out.append({"id": c.id, "sparse": [indices, values], "payload": payload(c)})
    return out, np.asarray(vectors, dtype="<f4").tobytes()


def dense_rows(dense: bytes, points: int, dim: int) -> list[list[float]]:
    """``point_dicts``' dense array as one list of floats a point."""
    if len(dense) != points * dim * 4:
        raise ValueError(f"{len(dense)} bytes of dense vectors for {points} points of {dim}")
    rows: list[list[float]] = np.frombuffer(dense, dtype="<f4").reshape(points, dim).tolist()
    return rows


def edge_point(p: dict[str, Any], vector: list[float], dense: str, sparse: str) -> qe.Point:
    """An edge point from its JSON form and its dense vector."""
    indices, values = p["sparse"]
    return qe.Point(p["id"], {dense: vector,
                              sparse: qe.SparseVector(indices=indices, values=values)},
                    p["payload"])
