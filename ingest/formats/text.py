"""Plain text, Markdown, JSON and CSV."""

from __future__ import annotations

import csv
import json
import logging
import re

from ingest.formats.base import (
    Limits,
    ParsedDocument,
    Section,
    SectionBuilder,
    cell_text,
    decode_text,
    markdown_table,
    tidy,
)
from sirocco.errors import ParseError

logger = logging.getLogger(__name__)

_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)\n(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.S)
_FM_TITLE = re.compile(r"^title:[ \t]*(.+?)[ \t]*$", re.M)
#: Rows per CSV section, so one huge table still yields several sections with its header.
CSV_ROWS_PER_SECTION = 200


def atx_heading_text(line: str) -> str | None:
    """The text of an ATX heading line (``## Setup ##`` -> ``Setup``), or None
    when ``line`` is not one."""
    atx = _ATX.match(line)
    return (atx.group(2) or "").strip() if atx else None


def parse_markdown_text(text: str, *, stem: str) -> ParsedDocument:
    """Markdown: one section per heading (ATX or setext), fenced code left alone."""
    title = ""
    fm = _FRONT_MATTER.match(text)
    if fm:
        m = _FM_TITLE.search(fm.group(1))
        title = m.group(1).strip("\"'") if m else ""
        text = text[fm.end() :]
    b = SectionBuilder()
    lines = text.split("\n")
    fence: str | None = None
    skip_next = False
    for i, line in enumerate(lines):
        if skip_next:  # the underline of a setext heading
            skip_next = False
            continue
        fence_mark = _FENCE.match(line)
        if fence is not None:
            if (
                fence_mark
                and fence_mark.group(1)[0] == fence[0]
                and len(fence_mark.group(1)) >= len(fence)
            ):
                fence = None
            b.add(line)
            continue
        if fence_mark:
            fence = fence_mark.group(1)
            b.add(line)
            continue
        atx = _ATX.match(line)
        if atx:
            b.heading(len(atx.group(1)), (atx.group(2) or "").strip() or "#", line)
            continue
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        prev = lines[i - 1] if i else ""
        # Setext: a one-line paragraph underlined with === (h1) or --- (h2).
        if line.strip() and not prev.strip() and _SETEXT.match(nxt):
            b.heading(1 if nxt.strip()[0] == "=" else 2, line.strip(), f"{line}\n{nxt}")
            skip_next = True
            continue
        b.add(line)
    b.flush()
    if not title and b.first_heading:
        title = b.first_heading[1]
    return ParsedDocument(title=title or stem, sections=tuple(b.sections), format="md")


def parse_markdown(data: bytes, *, name: str, stem: str, limits: Limits) -> ParsedDocument:
    """Markdown bytes in any common encoding."""
    return parse_markdown_text(decode_text(data, name=name), stem=stem)


def parse_text(data: bytes, *, name: str, stem: str, limits: Limits) -> ParsedDocument:
    """Plain text: one section."""
    body = tidy(decode_text(data, name=name))
    return ParsedDocument(title=stem, sections=(Section(body),) if body else (), format="txt")


def parse_json(data: bytes, *, name: str, stem: str, limits: Limits) -> ParsedDocument:
    """JSON as ``key.path: value`` lines; each top-level item or key is a section."""
    try:
        value = json.loads(decode_text(data, name=name))
    except json.JSONDecodeError as exc:
        raise ParseError(f"{name}: invalid JSON ({exc})") from None
    if isinstance(value, dict):
        parts = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, list):
        parts = [(f"[{i}]", v) for i, v in enumerate(value)]
    else:
        parts = [("", value)]
    sections = []
    for key, item in parts:
        lines = [f"{path}: {leaf}" if path else leaf for path, leaf in _json_leaves(item, key)]
        text = tidy("\n".join(lines))
        if text:
            sections.append(Section(text, headings=(key,) if key else ()))
    title = value.get("title") if isinstance(value, dict) else None
    return ParsedDocument(
        title=title if isinstance(title, str) and title.strip() else stem,
        sections=tuple(sections),
        format="json",
    )


def _json_leaves(value: object, path: str) -> list[tuple[str, str]]:
    # Iterative, so deeply nested documents cannot exhaust the recursion limit.
    out: list[tuple[str, str]] = []
    todo: list[tuple[str, object]] = [(path, value)]
    while todo:
        p, v = todo.pop()
        if isinstance(v, dict):
            todo.extend((f"{p}.{k}" if p else str(k), x) for k, x in reversed(v.items()))
        elif isinstance(v, list):
            todo.extend((f"{p}[{i}]", x) for i, x in reversed(list(enumerate(v))))
        elif v is not None and str(v).strip():
            out.append((p, str(v)))
    return out


def parse_csv(data: bytes, *, name: str, stem: str, limits: Limits) -> ParsedDocument:
    """CSV (dialect sniffed) as markdown table rows, the header repeated per section."""
    text = decode_text(data, name=name)
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(text[:8192], ",;\t|")
    except csv.Error:
        # The sniffer gives up on ragged samples; the commonest separator in the header wins.
        first = text.split("\n", 1)[0]
        delimiter = max(",;\t|", key=first.count)

        class _Guessed(csv.excel):
            pass

        _Guessed.delimiter = delimiter
        dialect = _Guessed
    try:
        rows = [[cell_text(c) for c in row] for row in csv.reader(text.split("\n"), dialect)]
    except csv.Error as exc:
        raise ParseError(f"{name}: malformed CSV ({exc})") from None
    rows = [r for r in rows if any(r)]
    if not rows:
        return ParsedDocument(title=stem, sections=(), format="csv")
    header, body = rows[0], rows[1:] or [[]]
    sections = []
    for start in range(0, len(body), CSV_ROWS_PER_SECTION):
        lines = markdown_table([header, *body[start : start + CSV_ROWS_PER_SECTION]])
        sections.append(Section("\n".join(lines)))
    return ParsedDocument(title=stem, sections=tuple(sections), format="csv")
