"""What every format parser shares: the document model, limits, text decoding and tidying."""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from sirocco.errors import DocumentTooLargeError, ParseError

if TYPE_CHECKING:
    from sirocco.settings import IngestSettings

#: Joins sections into ``ParsedDocument.full_text``; chunk offsets point into that text.
SECTION_SEPARATOR = "\n\n"
MB = 1024 * 1024

MIME_TYPES = {
    "md": "text/markdown",
    "txt": "text/plain",
    "html": "text/html",
    "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "odt": "application/vnd.oasis.opendocument.text",
    "csv": "text/csv",
    "json": "application/json",
    "eml": "message/rfc822",
    "msg": "application/vnd.ms-outlook",
    "epub": "application/epub+zip",
    "rtf": "application/rtf",
}

_WESTERN = ("cp1252", "latin_1", "iso8859_15")
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one file may cost to parse; defaults match ``IngestSettings``."""

    max_file_bytes: int = 100 * MB
    max_pages: int = 2000
    max_zip_ratio: float = 100.0
    max_zip_expanded_bytes: int = 500 * MB
    max_chars: int = 20_000_000
    max_cells: int = 2_000_000
    max_repeat: int = 10_000

    @classmethod
    def from_settings(cls, ingest: IngestSettings) -> Limits:
        """Limits built from the ``ingest`` settings section."""
        return cls(
            max_file_bytes=int(ingest.max_file_mb * MB),
            max_pages=ingest.max_pages,
            max_zip_ratio=ingest.max_zip_ratio,
            max_zip_expanded_bytes=int(ingest.max_zip_expanded_mb * MB),
            max_chars=ingest.max_chars,
            max_cells=ingest.max_cells,
            max_repeat=ingest.max_repeat,
        )


def over_limit(name: str, what: str, limit: str, setting: str) -> DocumentTooLargeError:
    """The error for a file past one of the ``Limits``: what was found, the limit
    (e.g. "2000 pages") and the setting that raises it."""
    return DocumentTooLargeError(f"{name}: {what}; the limit is {limit} (setting ingest.{setting})")


class Budget:
    """What one document has cost so far, checked against its ``Limits`` as a parser
    goes, so a small file that expands (shared strings, repeat counts) is refused
    before its text fills memory, not after."""

    def __init__(self, name: str, limits: Limits) -> None:
        self.name, self.limits = name, limits
        self.chars = 0
        self.cells = 0

    def text(self, size: int) -> None:
        """Count ``size`` more characters; raises ``DocumentTooLargeError`` past ``max_chars``."""
        self.chars += size
        if self.chars > self.limits.max_chars:
            raise too_much_text(self.name, self.limits)

    def cell(self, count: int = 1) -> None:
        """Count spreadsheet cells; raises ``DocumentTooLargeError`` past ``max_cells``."""
        self.cells += count
        if self.cells > self.limits.max_cells:
            n = self.limits.max_cells
            raise over_limit(self.name, f"too many cells (more than {n})",
                             f"{n} cells per document", "max_cells")

    def repeat(self, count: int, what: str) -> int:
        """``count`` if a file may repeat something that often, else ``DocumentTooLargeError``."""
        if count > self.limits.max_repeat:
            raise over_limit(self.name, f"{what} repeated {count} times",
                             f"{self.limits.max_repeat} repeats", "max_repeat")
        return count


def too_much_text(name: str, limits: Limits) -> DocumentTooLargeError:
    """The error for a document whose text is over ``limits.max_chars``."""
    n = limits.max_chars
    return over_limit(name, f"too much text (more than {n} characters)",
                      f"{n} characters per document", "max_chars")


@dataclass(frozen=True, slots=True)
class Section:
    """A run of text that a chunk never crosses: one page, or one heading's body."""

    text: str
    page: int | None = None
    headings: tuple[str, ...] = ()


@dataclass(frozen=True)
class ParsedDocument:
    """What a parser extracted. ``full_text`` is the sections joined by a blank line."""

    title: str
    sections: tuple[Section, ...]
    format: str

    @cached_property
    def full_text(self) -> str:
        return SECTION_SEPARATOR.join(s.text for s in self.sections)

    @cached_property
    def section_starts(self) -> tuple[int, ...]:
        """Offset of each section's first character in ``full_text``."""
        starts, pos = [], 0
        for s in self.sections:
            starts.append(pos)
            pos += len(s.text) + len(SECTION_SEPARATOR)
        return tuple(starts)

    @property
    def mime_type(self) -> str:
        return MIME_TYPES[self.format]


def decode_text(data: bytes, *, name: str) -> str:
    """Decode text bytes: a BOM wins, then UTF-8, then charset-normalizer's guess.

    Newlines are normalised to ``\\n``."""
    text = None
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            text = data.decode(encoding, errors="replace")
            break
    if text is None:
        if b"\x00" in data[:8192]:
            text = _bomless_utf16(data)
            if text is None:
                raise ParseError(f"{name}: binary content, not a text file")
    if text is None:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            from charset_normalizer import from_bytes

            matches = from_bytes(data)
            best = matches.best()
            if best is None:
                raise ParseError(f"{name}: cannot detect the text encoding") from None
            # Single-byte code pages often tie (cp1250 vs cp1252 on French text);
            # on a tie, Western European is the likelier origin.
            for m in matches:
                if (
                    m.encoding in _WESTERN
                    and m.chaos <= best.chaos + 0.005
                    and m.coherence >= best.coherence - 0.01
                ):
                    best = m
                    break
            text = str(best)
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _bomless_utf16(data: bytes) -> str | None:
    """UTF-16 without a BOM: mostly-ASCII text has a zero in every other byte."""
    head = data[:4096]
    even, odd = head[0::2], head[1::2]
    for zeros, encoding in ((odd, "utf-16-le"), (even, "utf-16-be")):
        if zeros and zeros.count(0) >= len(zeros) * 0.6:
            try:
                return data[: len(data) // 2 * 2].decode(encoding)
            except UnicodeDecodeError:
                return None
    return None


# --- building sections -------------------------------------------------------------

_BLANK_RUNS = re.compile(r"\n{3,}")
SPACES = re.compile(r"[ \t\f\v\u00a0]+")


def tidy(text: str) -> str:
    """Right-strip lines, keep at most one blank line in a row, strip the ends."""
    text = "\n".join(line.rstrip() for line in text.replace("\x00", "").split("\n"))
    return _BLANK_RUNS.sub("\n\n", text).strip()


def cell_text(value: object) -> str:
    """One table cell on one line, pipes escaped so the row stays a row."""
    if value is None:
        return ""
    return SPACES.sub(" ", str(value).replace("\n", " ")).strip().replace("|", "\\|")


def table_row(cells: list[str]) -> str:
    """A markdown pipe-table row."""
    return "| " + " | ".join(cells) + " |"


def markdown_table(rows: list[list[str]]) -> list[str]:
    """Rows as a markdown table: the first non-empty row is the header."""
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        return []
    width = max(len(r) for r in rows)
    # Drop columns that are empty in every row (spreadsheets pad generously).
    keep = [i for i in range(width) if any(i < len(r) and r[i].strip() for r in rows)]
    rows = [[r[i] if i < len(r) else "" for i in keep] for r in rows]
    lines = [table_row(rows[0]), table_row(["---"] * len(keep))]
    lines.extend(table_row(r) for r in rows[1:])
    return lines


class SectionBuilder:
    """Collects lines into sections, one per heading, tracking the heading path.

    A heading with no body before a deeper heading is carried into the child's
    section, so no chunk is just a lone heading and children keep their parent's
    words."""

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self._lines: list[str] = []
        self._has_body = False
        self._stack: list[tuple[int, str]] = []
        self.first_heading: tuple[int, str] | None = None

    def heading(self, level: int, text: str, line: str) -> None:
        """Start a section under heading ``text`` at ``level`` (``line`` is kept in the text)."""
        deeper = bool(self._stack) and level > self._stack[-1][0]
        if self._has_body or not deeper:
            self.flush()
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        self._stack.append((level, text))
        if self.first_heading is None or level < self.first_heading[0]:
            self.first_heading = (level, text)
        self._lines.append(line)

    def add(self, line: str) -> None:
        """Append a body line to the current section."""
        self._lines.append(line)
        if line.strip():
            self._has_body = True

    def flush(self) -> None:
        """Close the current section (dropped if it holds no text)."""
        text = tidy("\n".join(self._lines))
        if text:
            self.sections.append(Section(text, headings=tuple(t for _, t in self._stack)))
        self._lines, self._has_body = [], False
