"""The ``sirocco`` command line: an entry point, beside ``api`` and ``workers``.

The CLI is a composition root: it may import every layer (``sirocco``,
``ingest``, ``retrieval``, ``llm``, ``assistant``, ``traces``, ``workers``,
``api``), and nothing in the product imports it. The one exception is
``sirocco/__main__.py``, a shim that keeps ``python -m sirocco`` working.

``cli.main`` assembles the Typer app from one module per command group; the
helpers they share (consoles, logging, the database session factory, the
store, queueing and following ingestion jobs) are in ``cli._utils``. Imports
of the layers below happen inside the commands: ``sirocco --help`` stays
instant and the shell keeps no import-time dependency on them.
"""
