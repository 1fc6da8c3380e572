"""File parsers: bytes in, a ``ParsedDocument`` (title + ordered sections) out.

The type is decided from the content first (magic bytes, HTML sniffing) and
from the extension second, so a mislabelled file is still read correctly.
Every error names the file it is about.

"""

from __future__ import annotations

import codecs
import io
import re
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from sirocco.errors import ParseError, UnsupportedFormatError

#: Joins sections into ``ParsedDocument.full_text``; chunk offsets point into that text.
SECTION_SEPARATOR = "\n\n"

#: Extensions we read, by format. Content detection wins over the extension.
EXTENSIONS: dict[str, tuple[str, ...]] = {
    "md": (".md", ".markdown"),
    "txt": (".txt", ".text"),
    "html": (".html", ".htm", ".xhtml"),
    "pdf": (".pdf",),
    "docx": (".docx",),
}
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(e for exts in EXTENSIONS.values() for e in exts)
MIME_TYPES = {
    "md": "text/markdown",
    "txt": "text/plain",
    "html": "text/html",
    "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}
_SUPPORTED_HINT = (
    "supported formats: Markdown (.md), text (.txt), HTML (.html), PDF (.pdf), Word (.docx)"
)

_HTML_SNIFF = re.compile(rb"^\s*(<!--.*?-->\s*)*<(!doctype\s+html|html|head|body)\b", re.I | re.S)
_WESTERN = ("cp1252", "latin_1", "iso8859_15")
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


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


def parse_file(path: str | Path) -> ParsedDocument:
    """Parse the file at ``path``.

    Raises ``ParseError`` when the file is missing, empty, corrupt or encrypted, and
    ``UnsupportedFormatError`` when no parser handles it.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ParseError(f"{p}: file not found") from None
    except IsADirectoryError:
        raise ParseError(f"{p}: is a directory, not a file") from None
    except OSError as exc:
        raise ParseError(f"{p}: cannot read file ({exc.strerror or exc})") from None
    return parse_bytes(data, name=str(p))


def parse_bytes(data: bytes, *, name: str) -> ParsedDocument:
    """Parse file content; ``name`` (a path or file name) gives the extension,
    the fallback title and the subject of error messages."""
    fmt = detect_format(data, name=name)
    stem = Path(name).stem or name
    if not data.strip():
        raise ParseError(f"{name} is empty")
    match fmt:
        case "pdf":
            doc = _parse_pdf(data, name=name, stem=stem)
        case "docx":
            doc = _parse_docx(data, name=name, stem=stem)
        case "html":
            doc = _parse_html(data, name=name, stem=stem)
        case "md":
            doc = _parse_markdown(decode_text(data, name=name), stem=stem)
        case _:
            doc = _parse_text(decode_text(data, name=name), stem=stem)
    if not doc.full_text.strip():
        raise ParseError(f"{name} is empty: no text could be extracted")
    return doc


def detect_format(data: bytes, *, name: str) -> str:
    """One of ``md, txt, html, pdf, docx``; content decides before the extension."""
    ext = Path(name).suffix.lower()
    by_ext = next((fmt for fmt, exts in EXTENSIONS.items() if ext in exts), None)
    # The PDF spec allows junk before the header within the first 1024 bytes.
    if b"%PDF-" in data[:1024]:
        return "pdf"
    if data.startswith(b"PK\x03\x04"):
        if _is_docx(data):
            return "docx"
        if by_ext == "docx":
            raise ParseError(f"{name}: corrupt Word file (no word/document.xml inside)")
        raise UnsupportedFormatError(
            f"{name}: unsupported file type (a zip archive that is not a Word .docx); "
            f"{_SUPPORTED_HINT}"
        )
    if by_ext == "pdf":
        raise ParseError(f"{name}: corrupt PDF (no %PDF header)")
    if by_ext == "docx":
        raise ParseError(f"{name}: corrupt Word file (not a zip archive)")
    if by_ext in ("md", "txt"):
        return by_ext
    if by_ext == "html" or _HTML_SNIFF.match(data[:4096]):
        return "html"
    if by_ext is None and ext == "" and _looks_textual(data):
        return "txt"
    raise UnsupportedFormatError(
        f"{name}: unsupported file type {ext or '(no extension, binary content)'}; "
        f"{_SUPPORTED_HINT}"
    )


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
            raise ParseError(f"{name}: binary content, not a text file")
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


def _is_docx(data: bytes) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False
    return "[Content_Types].xml" in names and any(n.startswith("word/") for n in names)


def _looks_textual(data: bytes) -> bool:
    head = data[:8192]
    if b"\x00" in head and not head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return False
    control = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13))
    return control <= len(head) // 100


# --- building sections -------------------------------------------------------------

_BLANK_RUNS = re.compile(r"\n{3,}")
_SPACES = re.compile(r"[ \t\f\v\u00a0]+")


def _tidy(text: str) -> str:
    """Right-strip lines, keep at most one blank line in a row, strip the ends."""
    text = "\n".join(line.rstrip() for line in text.replace("\x00", "").split("\n"))
    return _BLANK_RUNS.sub("\n\n", text).strip()


class _SectionBuilder:
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
        self._lines.append(line)
        if line.strip():
            self._has_body = True

    def flush(self) -> None:
        text = _tidy("\n".join(self._lines))
        if text:
            self.sections.append(Section(text, headings=tuple(t for _, t in self._stack)))
        self._lines, self._has_body = [], False


# --- Markdown and plain text -----------------------------------------------------------

_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)\n(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.S)
_FM_TITLE = re.compile(r"^title:[ \t]*(.+?)[ \t]*$", re.M)


def _parse_markdown(text: str, *, stem: str) -> ParsedDocument:
    title = ""
    fm = _FRONT_MATTER.match(text)
    if fm:
        m = _FM_TITLE.search(fm.group(1))
        title = m.group(1).strip("\"'") if m else ""
        text = text[fm.end() :]
    b = _SectionBuilder()
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


def _parse_text(text: str, *, stem: str) -> ParsedDocument:
    body = _tidy(text)
    sections = (Section(body),) if body else ()
    return ParsedDocument(title=stem, sections=sections, format="txt")


# --- HTML --------------------------------------------------------------------------------

_HTML_DROP = frozenset("script style nav noscript template svg canvas iframe object head".split())
_HTML_BLOCK = frozenset(
    """p div li ul ol dl dt dd section article main header footer aside blockquote
    figure figcaption address details summary hr form fieldset legend caption""".split()
)
_HTML_HEADINGS = {f"h{i}": i for i in range(1, 7)}
_END_BLOCK = object()


def _parse_html(data: bytes, *, name: str, stem: str) -> ParsedDocument:
    from bs4 import BeautifulSoup, NavigableString, Tag
    from bs4.element import PreformattedString

    try:
        soup = BeautifulSoup(data, "html.parser")
    except Exception as exc:  # html.parser is lenient; anything raised means unreadable
        raise ParseError(f"{name}: cannot parse HTML ({exc})") from None
    title = _SPACES.sub(" ", soup.title.get_text(" ", strip=True)) if soup.title else ""
    if not title and (h1 := soup.find("h1")) is not None:
        title = _SPACES.sub(" ", h1.get_text(" ", strip=True))

    b = _SectionBuilder()
    inline: list[str] = []

    def end_line() -> None:
        line = _SPACES.sub(" ", "".join(inline).replace("\n", " ")).strip()
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
                text = _SPACES.sub(" ", node.get_text(" ", strip=True))
                if text:
                    b.heading(_HTML_HEADINGS[tag], text, text)
            elif tag == "br":
                end_line()
            elif tag == "table":
                end_line()
                for row in node.find_all("tr"):
                    cells = [
                        _SPACES.sub(" ", c.get_text(" ", strip=True))
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
    return ParsedDocument(title=title or stem, sections=tuple(b.sections), format="html")


# --- PDF ---------------------------------------------------------------------------------


def _parse_pdf(data: bytes, *, name: str, stem: str) -> ParsedDocument:
    import pypdf

    sections: list[Section] = []
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            # Owner-password-only PDFs open with an empty user password, like in a viewer.
            try:
                opened = reader.decrypt("")
            except Exception as exc:
                raise ParseError(f"{name}: encrypted PDF that cannot be opened ({exc})") from None
            if not opened:
                raise ParseError(f"{name}: encrypted PDF; it needs a password, remove it first")
        meta_title = ""
        try:
            meta_title = ((reader.metadata or {}).get("/Title") or "").strip()
        except Exception:  # a broken info dictionary only costs us the title
            meta_title = ""
        for number, page in enumerate(reader.pages, start=1):
            text = _tidy(page.extract_text() or "")
            if text:
                sections.append(Section(text, page=number))
    except ParseError:
        raise
    except Exception as exc:
        # pypdf signals damaged files with many exception types (PdfReadError,
        # KeyError, ValueError ...); all mean the same thing to the user.
        raise ParseError(f"{name}: corrupt PDF ({type(exc).__name__}: {exc})") from None
    if not sections:
        raise ParseError(
            f"{name} is empty: the PDF has no extractable text "
            "(scanned pages need OCR, which is not supported)"
        )
    return ParsedDocument(title=str(meta_title) or stem, sections=tuple(sections), format="pdf")


# --- Word (.docx) ------------------------------------------------------------------------

_DOCX_HEADING = re.compile(r"^heading\s*([1-9])$", re.I)


def _parse_docx(data: bytes, *, name: str, stem: str) -> ParsedDocument:
    import docx
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
        b = _SectionBuilder()
        title = (document.core_properties.title or "").strip()
        title_para = ""
        for block in document.iter_inner_content():
            if isinstance(block, Table):
                for row in block.rows:
                    cells, seen = [], set()
                    for cell in row.cells:  # merged cells repeat; keep each once
                        if id(cell._tc) not in seen:
                            seen.add(id(cell._tc))
                            cells.append(_SPACES.sub(" ", cell.text.replace("\n", " ")).strip())
                    if any(cells):
                        b.add("| " + " | ".join(cells) + " |")
                continue
            text = block.text.strip()
            if not text:
                continue
            style = block.style.name if block.style is not None else ""
            heading = _DOCX_HEADING.match(style or "")
            if heading:
                b.heading(int(heading.group(1)), _SPACES.sub(" ", text), text)
            else:
                if style == "Title" and not title_para:
                    title_para = text
                b.add(text)
        b.flush()
    except Exception as exc:
        raise ParseError(f"{name}: corrupt Word file ({type(exc).__name__}: {exc})") from None
    title = title or title_para or (b.first_heading[1] if b.first_heading else "") or stem
    return ParsedDocument(title=title, sections=tuple(b.sections), format="docx")
