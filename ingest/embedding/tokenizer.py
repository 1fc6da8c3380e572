"""The embedding model's tokenizer alone, for the parse stage: chunks are sized
in the embedder's tokens, but a parse worker never loads the model itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ingest.embedding.model import embedding_model_dir
from sirocco.settings import Settings


@dataclass(frozen=True, slots=True)
class ChunkTokenizer:
    """What ``ingest.pipeline.parse_document`` needs of an embedder."""

    #: A Hugging Face fast tokenizer (the chunker reads its offset mapping).
    tokenizer: Any
    #: Tokens the embedder reads per text, special tokens included.
    max_seq_length: int


def load_chunk_tokenizer(settings: Settings) -> ChunkTokenizer:
    """The embedding model's fast tokenizer, from its local folder only."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(embedding_model_dir(settings)),
                                              local_files_only=True)
    return ChunkTokenizer(tokenizer, settings.embedding.max_seq_length)
