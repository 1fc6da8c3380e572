"""The ``Store`` port's factory: which adapter the settings describe.

Apart from ``retrieval.store`` (the port, its filter and modes) so that the
adapters can import the port without the port importing them.
"""

from __future__ import annotations

from retrieval.store import Store
from sirocco.errors import ConfigError
from sirocco.settings import Settings


def create_store(settings: Settings) -> Store:
    """The Qdrant adapter: server when ``qdrant.url`` is set, else local mode."""
    from retrieval.qdrant_store import QdrantStore

    if settings.qdrant.url is None and settings.qdrant_path is None:
        raise ConfigError("set SIROCCO_QDRANT_URL or a local qdrant path")
    return QdrantStore(settings)
