"""``sirocco engine``: the LLM engine's effective configuration and KV-cache capacity."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from cli._utils import console
from sirocco.settings import LLMSettings, Settings, get_settings

engine_app = typer.Typer(help="The LLM engine (vLLM).", no_args_is_help=True)


def settings_with_profile(settings: Settings, profile: Path | None) -> Settings:
    """``settings`` with ``llm`` read from ``profile`` (environment values still win)."""
    if profile is None:
        return settings
    explicit = settings.llm.model_dump(exclude_unset=True, exclude={"profile"})
    llm = LLMSettings(profile=profile, **explicit)
    return settings.model_copy(update={"llm": llm})


@engine_app.command("info")
def info(
    profile: Annotated[Path | None, typer.Option(
        help="An infra/vllm/*.yaml profile (default: SIROCCO_LLM__* settings).",
        exists=True, dir_okay=False)] = None,
    start: Annotated[bool, typer.Option(
        help="Start the engine and read vLLM's own numbers (slow; needs the hardware).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print the effective engine configuration and KV-cache capacity (tokens, blocks)."""
    settings = settings_with_profile(get_settings(), profile)
    from llm.engine_info import describe, describe_started

    result: dict[str, Any] = describe(settings)
    if start and settings.llm.provider == "vllm":
        result["started"] = asyncio.run(describe_started(settings))
    if as_json:
        console.print_json(json.dumps(result, default=str))
        return
    _print(result)


def _print(result: dict[str, Any], indent: str = "") -> None:
    for key, value in result.items():
        if isinstance(value, dict):
            console.print(f"{indent}{key}:", markup=False)
            _print(value, indent + "  ")
        else:
            console.print(f"{indent}{key}: {value}", markup=False)
