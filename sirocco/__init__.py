"""Sirocco: a self-hosted retrieval-augmented enterprise assistant."""

__version__ = "0.1.0"
