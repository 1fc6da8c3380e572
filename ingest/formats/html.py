"""HTML: visible text, headings as sections, tables as pipe rows."""

from __future__ import annotations

import logging

from ingest.formats.base import SPACES, Limits, ParsedDocument, SectionBuilder
from sirocco.errors import ParseError

logger = logging.getLogger(__name__)

_HTML_DROP = frozenset("script style nav noscript template svg canvas iframe object head".split())
_HTML_BLOCK = frozenset(
    """p div li ul ol dl dt dd section article main header footer aside blockquote
    figure figcaption address details summary hr form fieldset legend caption""".split()
)
_HTML_HEADINGS = {f"h{i}": i for i in range(1, 7)}
_END_BLOCK = object()


def parse_html(data: bytes | str, *, name: str, stem: str, limits: Limits) -> ParsedDocument:
    """HTML bytes (encoding from BOM/meta/guess) or already-decoded HTML text."""
    return html_document(data, name=name, stem=stem, fmt="html")


def html_document(data: bytes | str, *, name: str, stem: str, fmt: str) -> ParsedDocument:
    """Sections of an HTML page; ``fmt`` names the format reported (epub chapters reuse it)."""
    b, title = html_sections(data, name=name)
    return ParsedDocument(title=title or stem, sections=tuple(b.sections), format=fmt)


def html_sections(data: bytes | str, *, name: str) -> tuple[SectionBuilder, str]:
    """Walk an HTML document into a flushed ``SectionBuilder``; also returns its title."""
    from bs4 import BeautifulSoup, NavigableString, Tag
    from bs4.element import PreformattedString

    try:
        soup = BeautifulSoup(data, "html.parser")
    except Exception as exc:  # html.parser is lenient; anything raised means unreadable
        raise ParseError(f"{name}: cannot parse HTML ({exc})") from None
    title = SPACES.sub(" ", soup.title.get_text(" ", strip=True)) if soup.title else ""
    if not title and (h1 := soup.find("h1")) is not None:
        title = SPACES.sub(" ", h1.get_text(" ", strip=True))

    b = SectionBuilder()
    inline: list[str] = []

    def end_line() -> None:
        line = SPACES.sub(" ", "".join(inline).replace("\n", " ")).strip()
        inline.clear()
        if line:
            b.add(line)

    root = soup.body or soup
    # An explicit stack, not recursion: generated HTML can nest deeper than Python's limit.
    todo: list[object] = list(reversed(list(root.children)))
    while todo:
        node = todo.pop()
        if node is _END_BLOCK:
            end_line()
        elif isinstance(node, NavigableString):
            if not isinstance(node, PreformattedString):  # comments, doctype, CDATA ...
                inline.append(str(node))
        elif isinstance(node, Tag):
            tag = node.name.lower()
            if tag in _HTML_DROP:
                continue
            if tag in _HTML_HEADINGS:
                end_line()
                text = SPACES.sub(" ", node.get_text(" ", strip=True))
                if text:
                    b.heading(_HTML_HEADINGS[tag], text, text)
            elif tag == "br":
                end_line()
            elif tag == "table":
                end_line()
                for row in node.find_all("tr"):
                    cells = [
                        SPACES.sub(" ", c.get_text(" ", strip=True))
                        for c in row.find_all(["td", "th"], recursive=False)
                    ]
                    if any(cells):
                        b.add("| " + " | ".join(cells) + " |")
            elif tag == "pre":
                end_line()
                for line in node.get_text().split("\n"):
                    b.add(line.rstrip())
            else:
                if tag in _HTML_BLOCK or tag in ("tr", "td", "th"):
                    end_line()
                    todo.append(_END_BLOCK)
                todo.extend(reversed(list(node.children)))
    end_line()
    b.flush()
    return b, title
