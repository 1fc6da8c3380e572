"""``sirocco traces``: fine-tuning exports of the recorded traces.

``sirocco traces export --format mistral --out DIR`` runs the export in this
process (no worker needed) and prints its manifest's counts and files.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli._utils import err_console
from sirocco.settings import Settings, get_settings

if TYPE_CHECKING:
    from traces.export import ExportRequest

traces_app = typer.Typer(help="Recorded traces: fine-tuning exports.", no_args_is_help=True)


@traces_app.command("export")
def export(
    format: Annotated[str, typer.Option(
        "--format", "-f", help="mistral, openai, openai-dpo, trl-sft, trl-dpo, trl-kto, "
                               "sharegpt or retrieval-triplets.")],
    out: Annotated[Path | None, typer.Option(
        help="Output folder (default: <data_dir>/exports/<id>).")] = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's traces.")] = None,
    since: Annotated[datetime | None, typer.Option(help="Traces from this time on.")] = None,
    until: Annotated[datetime | None, typer.Option(help="Traces before this time.")] = None,
    model: Annotated[str | None, typer.Option(help="Only answers of this model.")] = None,
    min_feedback: Annotated[int | None, typer.Option(
        help="Feedback score at least this (thumbs sum + rating - 3).")] = None,
    has_correction: Annotated[bool, typer.Option(help="Only corrected answers.")] = False,
    tool_calls_only: Annotated[bool, typer.Option(help="Only chats with tool calls.")] = False,
    include_errors: Annotated[bool, typer.Option(
        help="Keep failed answers (their partial output).")] = False,
    all_consents: Annotated[bool, typer.Option(
        help="Also traces whose user did not consent.")] = False,
    reviewed_only: Annotated[bool, typer.Option(
        "--reviewed-only/--all-feedback",
        help="Only feedback a reviewer approved counts (corrections included).")] = True,
    context: Annotated[bool, typer.Option(
        help="Keep the retrieved sources in the prompt.")] = True,
    scrub_pii: Annotated[bool, typer.Option(help="Replace emails, phones, names ...")] = False,
    dedup: Annotated[bool, typer.Option(help="Drop exact and near duplicates.")] = True,
    validation_fraction: Annotated[float, typer.Option(
        help="Share of conversations held out.")] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed of the train/validation split.")] = 0,
    max_tokens: Annotated[int | None, typer.Option(
        help="Drop records longer than this (model's tokenizer).")] = None,
) -> None:
    """Export traces as fine-tuning data, validated, with a manifest."""
    from pydantic import ValidationError

    from traces.export import ExportFilters, ExportOptions, ExportRequest

    settings = get_settings()
    try:
        filters = ExportFilters(
            tenant=tenant, since=since, until=until, model=model,
            min_feedback=min_feedback, has_correction=has_correction,
            tool_calls_only=tool_calls_only, exclude_errors=not include_errors,
            consented_only=not all_consents, reviewed_only=reviewed_only)
        options = ExportOptions(
            include_context=context, scrub_pii=scrub_pii, dedup=dedup,
            validation_fraction=validation_fraction, seed=seed, max_tokens=max_tokens)
        # Validated like a request body: pydantic checks the format name.
        request = ExportRequest.model_validate(
            {"format": format, "filters": filters, "options": options})
    except ValidationError as exc:
        err_console.print(f"[red]error:[/red] {exc.errors()[0]['loc'][-1]}: "
                          f"{exc.errors()[0]['msg']}")
        raise typer.Exit(2) from None
    _run(settings, request, out)


def _run(settings: Settings, request: ExportRequest, out: Path | None) -> None:
    """Run the export into ``out`` (default: a new folder under the exports
    path) and print where it went, its counts and its files as JSON."""
    from sirocco.db import make_engine, make_session_factory, upgrade_database
    from sirocco.errors import SiroccoError
    from traces.export.service import run_export
    from workers.export_tasks import export_tokenizer_path

    export_id = str(uuid.uuid4())
    out_dir = out or settings.exports_path / export_id
    upgrade_database(settings)
    engine = make_engine(settings)
    try:
        manifest = run_export(request, session_factory=make_session_factory(engine),
                              out_dir=out_dir, tokenizer_path=export_tokenizer_path(settings),
                              export_id=export_id)
    except SiroccoError as exc:
        err_console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    # Plain echo: rich would wrap the long sha256 lines and break the JSON.
    typer.echo(json.dumps({"dir": str(out_dir), "counts": manifest["counts"],
                           "files": manifest["files"]}, indent=2))
