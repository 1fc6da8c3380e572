"""Rebuilding the index behind its alias, without downtime.

``<alias>`` points at the live collection; during a rebuild ``<alias>__next``
points at the collection being built (``<alias>__<n+1>``). Writes go to both
while the build runs (each only if its vector size matches the embedder's:
after a model change the live collection keeps its old vectors), so nothing
ingested meanwhile is missing after the swap. Searches keep using ``<alias>``.
``swap`` then repoints ``<alias>`` and drops ``<alias>__next`` in one atomic
alias operation, and deletes the old collection.
"""

from __future__ import annotations

import logging

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from sirocco.errors import ConfigError

logger = logging.getLogger(__name__)

DENSE = "dense"
SPARSE = "bm25"
_KEYWORD_INDEXES = ("doc_id", "tenant", "acl", "source_id", "mime_type", "tags")


def target_collection(client: QdrantClient, alias: str) -> str | None:
    """The collection ``alias`` points at (or a plain collection of that name)."""
    for a in client.get_aliases().aliases:
        if a.alias_name == alias:
            return a.collection_name
    return alias if client.collection_exists(alias) else None


def next_collection_name(client: QdrantClient, alias: str) -> str:
    """``<alias>__<n>`` with n one more than any existing."""
    taken = [c.name for c in client.get_collections().collections]
    numbers = [int(n.rsplit("__", 1)[1]) for n in taken
               if n.startswith(f"{alias}__") and n.rsplit("__", 1)[1].isdigit()]
    return f"{alias}__{max(numbers, default=0) + 1}"


def create_collection(client: QdrantClient, name: str, dim: int) -> None:
    """A collection with Sirocco's layout and payload indexes."""
    client.create_collection(
        name,
        vectors_config={DENSE: qm.VectorParams(size=dim, distance=qm.Distance.COSINE)},
        sparse_vectors_config={SPARSE: qm.SparseVectorParams(modifier=qm.Modifier.IDF)},
    )
    # Local mode ignores payload indexes (and warns once); a server needs them for
    # fast tenant / ACL / document filters.
    for field in _KEYWORD_INDEXES:
        client.create_payload_index(name, field_name=field,
                                    field_schema=qm.PayloadSchemaType.KEYWORD)
    client.create_payload_index(name, field_name="modified_at",
                                field_schema=qm.PayloadSchemaType.FLOAT)


def check_layout(client: QdrantClient, name: str, dim: int, *, alias: str) -> None:
    """Refuse a collection of another vector size, or one from before hybrid search."""
    params = client.get_collection(name).config.params
    dense = params.vectors.get(DENSE) if isinstance(params.vectors, dict) else None
    if dense is None or not (params.sparse_vectors or {}).get(SPARSE):
        raise ConfigError(
            f"collection {name!r} was built before hybrid search (no '{DENSE}' and "
            f"'{SPARSE}' vectors); rebuild it with `sirocco index rebuild` "
            f"(or point SIROCCO_QDRANT__COLLECTION elsewhere than {alias!r})"
        )
    if dense.size != dim:
        raise ConfigError(
            f"collection {name!r} holds {dense.size}-dimensional vectors but the embedder "
            f"makes {dim}; rebuild the index after changing the embedding model "
            "(`sirocco index rebuild`)"
        )


def build_alias(alias: str) -> str:
    return f"{alias}__next"


def building(client: QdrantClient, alias: str) -> str | None:
    """The collection being built for ``alias``, if a rebuild is under way."""
    for a in client.get_aliases().aliases:
        if a.alias_name == build_alias(alias):
            return a.collection_name
    return None


def vector_size(client: QdrantClient, name: str) -> int | None:
    vectors = client.get_collection(name).config.params.vectors
    dense = vectors.get("dense") if isinstance(vectors, dict) else None
    return dense.size if dense is not None else None


def swap(client: QdrantClient, alias: str) -> str | None:
    """Point ``alias`` at the built collection and end the build, atomically;
    delete the old collection. Returns the new live collection (None when no
    build was under way)."""
    new = building(client, alias)
    if new is None:
        return None
    old = target_collection(client, alias)
    ops: list[qm.AliasOperations] = [
        qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=build_alias(alias)))]
    if old is not None and old != alias:
        ops.append(qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=alias)))
    ops.append(qm.CreateAliasOperation(create_alias=qm.CreateAlias(collection_name=new,
                                                                   alias_name=alias)))
    if old == alias:
        # A plain collection named like the alias (from before aliases) must go first.
        client.delete_collection(old)
    client.update_collection_aliases(change_aliases_operations=ops)
    if old is not None and old not in (alias, new):
        client.delete_collection(old)
    logger.info("index swapped", extra={"alias": alias, "live": new, "dropped": old})
    return new


def abandon(client: QdrantClient, alias: str) -> str | None:
    """Stop a rebuild: drop ``<alias>__next`` and its collection; live is untouched."""
    name = building(client, alias)
    if name is None:
        return None
    client.update_collection_aliases(change_aliases_operations=[
        qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=build_alias(alias)))])
    client.delete_collection(name)
    return name


def drop(client: QdrantClient, alias: str) -> None:
    """Remove ``alias``, any rebuild under way, and the collections behind them."""
    abandon(client, alias)
    live = target_collection(client, alias)
    if live is not None and live != alias:
        client.update_collection_aliases(change_aliases_operations=[
            qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=alias))])
    if live is not None:
        client.delete_collection(live)
