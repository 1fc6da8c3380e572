"""One parser module per format family; ``ingest.parsers`` is the public entry point."""
