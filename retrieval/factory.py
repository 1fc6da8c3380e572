"""The ``Store`` port's factory: which adapter the settings describe.

Apart from ``retrieval.store`` (the port, its filter and modes) so that the
adapters can import the port without the port importing them.
"""

from __future__ import annotations

from retrieval.store import Store
from sirocco.errors import ConfigError
from sirocco.settings import Settings

ENGINES = ("edge", "local")


def create_store(settings: Settings) -> Store:
    """The Qdrant adapter: a server when ``qdrant.url`` is set, else the embedded
    engine ``qdrant.engine`` names (qdrant-edge, or qdrant-client's local mode)."""
    if settings.qdrant.url is None and settings.qdrant_path is None:
        raise ConfigError("set SIROCCO_QDRANT_URL or a local qdrant path")
    match None if settings.qdrant.url else settings.qdrant.engine:
        case None | "local":
            from retrieval.qdrant_store import QdrantStore

            return QdrantStore(settings)
        case "edge":
            from retrieval.edge_store import EdgeStore

            return EdgeStore(settings)
        case other:
            raise ConfigError(f"unknown qdrant.engine {other!r}; valid: {ENGINES}")
