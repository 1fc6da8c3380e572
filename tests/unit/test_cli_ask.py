"""``sirocco ask`` against a scripted server stream: the answer, then each
citation, marked in plain words when it is inferred or not supported."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from typer.testing import CliRunner

from cli.ask import citation_line
from cli.main import app

CITED = {"n": 1, "title": "Travel", "source": "/d/travel.md", "page": 2,
         "inferred": False, "supported": True}


def test_citation_line_marks_inferred_and_unsupported_citations() -> None:
    assert citation_line(CITED) == "[1] Travel (/d/travel.md p.2)"
    assert citation_line({**CITED, "inferred": True, "supported": None}) == (
        "[1] Travel (/d/travel.md p.2) (inferred)")
    assert citation_line({**CITED, "supported": False, "page": None}) == (
        "[1] Travel (/d/travel.md) (not supported)")


def test_ask_prints_the_answer_then_marked_citations(monkeypatch) -> None:
    done = {"type": "done", "sources": [], "citations": [
        CITED, {**CITED, "n": 2, "title": "Parking", "source": "/d/parking.md", "page": None,
                "supported": False},
        {**CITED, "n": 3, "title": "Menu", "source": "/d/menu.md", "page": None,
         "inferred": True, "supported": None}]}
    lines = [f"data: {json.dumps({'type': 'delta', 'text': 'Economy class [1].'})}",
             f"data: {json.dumps(done)}", "data: [DONE]"]
    sent: dict[str, Any] = {}

    class Response:
        status_code = 200

        def iter_lines(self) -> Iterator[str]:
            yield from lines

    @contextmanager
    def stream(method: str, url: str, **kwargs: Any) -> Iterator[Response]:
        sent.update(method=method, url=url, json=kwargs["json"])
        yield Response()

    monkeypatch.setattr(httpx, "stream", stream)
    result = CliRunner().invoke(app, ["ask", "Which class?", "--url", "http://sirocco"])

    assert result.exit_code == 0, result.output
    assert sent == {"method": "POST", "url": "http://sirocco/api/chat",
                    "json": {"question": "Which class?"}}
    assert result.output.splitlines() == [
        "Economy class [1].",
        "[1] Travel (/d/travel.md p.2)",
        "[2] Parking (/d/parking.md) (not supported)",
        "[3] Menu (/d/menu.md) (inferred)"]
