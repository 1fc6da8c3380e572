"""``sirocco ask``: a question to the running server, the answer streamed, then
its citations, each marked when it is not the model's own or not backed by
its source."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from cli._utils import console, fail
from sirocco.settings import get_settings


def citation_line(citation: dict[str, Any]) -> str:
    """One citation as ``sirocco ask`` prints it: ``[n] title (source p.N)``, then
    "(inferred)" when the model cited nothing and Sirocco attributed the answer
    to its top source, "(not supported)" when a sentence citing it shares too
    few words with the chunk (see ``assistant.citations``)."""
    page = f" p.{citation['page']}" if citation.get("page") else ""
    line = f"[{citation['n']}] {citation['title']} ({citation['source']}{page})"
    # Plain words, not colours: the marker must survive a pipe or a log file.
    if citation.get("inferred"):
        line += " (inferred)"
    if citation.get("supported") is False:
        line += " (not supported)"
    return line


def ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    url: Annotated[
        str | None, typer.Option(help="Server URL (default: the configured one).")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="SIROCCO_API_KEY", help="API key (sirocco keys create).")
    ] = None,
) -> None:
    """Ask the running server; streams the answer, then lists the citations
    (marked "inferred" or "not supported" where they are)."""
    import httpx

    settings = get_settings()
    base = url or f"http://{settings.api.host}:{settings.api.port}"
    done: dict[str, Any] | None = None
    try:
        with httpx.stream(
            "POST",
            f"{base}/api/chat",
            json={"question": question},
            headers={"Authorization": f"Bearer {api_key}"} if api_key else None,
            timeout=httpx.Timeout(600, connect=5),
        ) as resp:
            if resp.status_code != 200:
                resp.read()
                fail(f"server answered {resp.status_code}: {resp.text}")
            for line in resp.iter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[len("data: ") :]
                if data == "[DONE]":
                    break
                event = json.loads(data)
                if event["type"] == "delta":
                    console.print(event["text"], end="", markup=False, highlight=False)
                elif event["type"] == "error":
                    fail(event.get("message", "generation failed"))
                elif event["type"] == "done":
                    done = event
    except httpx.ConnectError:
        fail(f"no server at {base}; start one with `make run` or `sirocco serve`")
    console.print()
    for c in (done or {}).get("citations", []):
        console.print(citation_line(c), markup=False, highlight=False)
