"""Office Open XML (docx, pptx, xlsx) and OpenDocument text (odt)."""

from __future__ import annotations

import datetime as dt
import io
import logging
import re
import zipfile
from collections.abc import Iterable, Iterator
from typing import Any
from xml.etree import ElementTree

from ingest.formats.base import (
    SPACES,
    Budget,
    Limits,
    ParsedDocument,
    Section,
    SectionBuilder,
    cell_text,
    markdown_table,
    over_limit,
    table_row,
    tidy,
)
from sirocco.errors import DocumentTooLargeError, ParseError

logger = logging.getLogger(__name__)

#: Spreadsheet rows per section; the header row is repeated in each.
ROWS_PER_SECTION = 200
_DOCX_HEADING = re.compile(r"^heading\s*([1-9])$", re.I)


# --- Word (.docx) ------------------------------------------------------------------------


def parse_docx(data: bytes, *, name: str, stem: str, limits: Limits) -> ParsedDocument:
    """Word: a section per heading, tables as pipe rows, title from properties or style."""
    import docx
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
        b = SectionBuilder()
        title = (document.core_properties.title or "").strip()
        title_para = ""
        for block in document.iter_inner_content():
            if isinstance(block, Table):
                for row in block.rows:
                    cells, seen = [], set()
                    for cell in row.cells:  # merged cells repeat; keep each once
                        if id(cell._tc) not in seen:
                            seen.add(id(cell._tc))
                            cells.append(SPACES.sub(" ", cell.text.replace("\n", " ")).strip())
                    if any(cells):
                        b.add(table_row(cells))
                continue
            text = block.text.strip()
            if not text:
                continue
            style = block.style.name if block.style is not None else ""
            heading = _DOCX_HEADING.match(style or "")
            if heading:
                b.heading(int(heading.group(1)), SPACES.sub(" ", text), text)
            else:
                if style == "Title" and not title_para:
                    title_para = text
                b.add(text)
        b.flush()
    except Exception as exc:
        raise ParseError(f"{name}: corrupt Word file ({type(exc).__name__}: {exc})") from None
    title = title or title_para or (b.first_heading[1] if b.first_heading else "") or stem
    return ParsedDocument(title=title, sections=tuple(b.sections), format="docx")


# --- PowerPoint (.pptx) ------------------------------------------------------------------


def parse_pptx(data: bytes, *, name: str, stem: str, limits: Limits) -> ParsedDocument:
    """PowerPoint: one section per slide (page = slide number), tables as pipe rows."""
    from pptx import Presentation

    try:
        prs = Presentation(io.BytesIO(data))
        slides = list(prs.slides)
        if len(slides) > limits.max_pages:
            raise over_limit(name, f"too many slides ({len(slides)})",
                             f"{limits.max_pages} slides", "max_pages")
        sections = []
        for number, slide in enumerate(slides, start=1):
            title_shape = slide.shapes.title
            heading = SPACES.sub(" ", title_shape.text_frame.text).strip() if title_shape else ""
            lines = [line for shape in slide.shapes for line in _shape_lines(shape)]
            if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
                notes = slide.notes_slide.notes_text_frame.text.strip()
                if notes:
                    lines += ["", f"Notes: {notes}"]
            text = tidy("\n".join(lines))
            if text:
                sections.append(Section(text, page=number, headings=(heading,) if heading else ()))
        title = (prs.core_properties.title or "").strip()
    except DocumentTooLargeError:
        raise
    except Exception as exc:
        raise ParseError(f"{name}: corrupt PowerPoint file ({type(exc).__name__}: {exc})") from None
    first_heading = next((s.headings[0] for s in sections if s.headings), "")
    return ParsedDocument(
        title=title or first_heading or stem, sections=tuple(sections), format="pptx"
    )


def _shape_lines(shape: Any) -> Iterator[str]:
    # Group shapes nest; slides are shallow, so recursion is safe here.
    if getattr(shape, "shapes", None) is not None:
        for child in shape.shapes:
            yield from _shape_lines(child)
        return
    if getattr(shape, "has_table", False) and shape.has_table:
        rows = [[cell_text(c.text) for c in row.cells] for row in shape.table.rows]
        yield from markdown_table(rows)
        yield ""
    elif getattr(shape, "has_text_frame", False) and shape.has_text_frame:
        for para in shape.text_frame.paragraphs:
            text = SPACES.sub(" ", "".join(r.text for r in para.runs) or para.text).strip()
            if text:
                yield ("  " * para.level + "- " + text) if para.level else text
        yield ""


# --- Excel (.xlsx) ------------------------------------------------------------------------


def parse_xlsx(data: bytes, *, name: str, stem: str, limits: Limits) -> ParsedDocument:
    """Excel: sections per sheet (heading = sheet name), rows as a markdown table.

    Only the cells a sheet really holds are read and counted (``max_cells``,
    ``max_chars``); the size its ``<dimension>`` claims allocates nothing."""
    import openpyxl

    budget = Budget(name, limits)
    sections: list[Section] = []
    try:
        wb = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        try:
            title = (wb.properties.title or "").strip()
            for ws in wb.worksheets:
                sections.extend(_table_sections(_sheet_rows(ws, budget), heading=ws.title))
        finally:
            wb.close()
    except DocumentTooLargeError:
        raise
    except Exception as exc:
        raise ParseError(f"{name}: corrupt Excel file ({type(exc).__name__}: {exc})") from None
    return ParsedDocument(title=title or stem, sections=tuple(sections), format="xlsx")


def _sheet_rows(ws: Any, budget: Budget) -> list[list[str]]:
    """The sheet's rows that hold text, over the columns that hold text anywhere."""
    from openpyxl.worksheet._reader import WorkSheetParser

    # openpyxl's row iterators pad each row to the <dimension> width and yield
    # every missing row, so a sheet claiming A1:XFD1048576 with a cell in its last
    # row costs 17 billion cells. Its sheet parser (what those iterators read
    # from) streams the cells the XML really has.
    wb = ws.parent
    rows: list[dict[int, str]] = []
    with ws._get_source() as src:
        parser = WorkSheetParser(src, ws._shared_strings, data_only=wb.data_only,
                                 epoch=wb.epoch, date_formats=wb._date_formats,
                                 timedelta_formats=wb._timedelta_formats)
        for _, cells in parser.parse():
            budget.cell(len(cells))
            row = {}
            for cell in cells:
                text = _xl_cell(cell["value"])
                if text:
                    # Shared strings make a short file yield a long text: count it.
                    budget.text(len(text))
                    row[cell["column"]] = text
            if row:
                rows.append(row)
    columns = sorted({col for row in rows for col in row})
    return [[row.get(col, "") for col in columns] for row in rows]


def _xl_cell(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, dt.datetime) and value.time() == dt.time():
        value = value.date()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return cell_text(value)


def _table_sections(rows: list[list[str]], *, heading: str) -> Iterable[Section]:
    rows = [r for r in rows if any(c for c in r)]
    if not rows:
        return
    header, body = rows[0], rows[1:]
    for start in range(0, max(len(body), 1), ROWS_PER_SECTION):
        lines = markdown_table([header, *body[start : start + ROWS_PER_SECTION]])
        yield Section("\n".join(lines), headings=(heading,))


# --- OpenDocument text (.odt) ----------------------------------------------------------------

_ODF = {
    "text": "urn:oasis:names:tc:opendocument:xmlns:text:1.0",
    "table": "urn:oasis:names:tc:opendocument:xmlns:table:1.0",
    "office": "urn:oasis:names:tc:opendocument:xmlns:office:1.0",
    "dc": "http://purl.org/dc/elements/1.1/",
}


def _q(prefix: str, tag: str) -> str:
    return f"{{{_ODF[prefix]}}}{tag}"


def parse_odt(data: bytes, *, name: str, stem: str, limits: Limits) -> ParsedDocument:
    """OpenDocument text from content.xml: sections per heading, tables as pipe rows."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            root = ElementTree.fromstring(zf.read("content.xml"))
            meta = zf.read("meta.xml") if "meta.xml" in zf.namelist() else b""
    except (KeyError, zipfile.BadZipFile, ElementTree.ParseError, OSError) as exc:
        raise ParseError(f"{name}: corrupt OpenDocument file ({exc})") from None
    title = ""
    if meta:
        try:
            node = ElementTree.fromstring(meta).find(f".//{_q('dc', 'title')}")
            title = (node.text or "").strip() if node is not None else ""
        except ElementTree.ParseError:
            title = ""
    body = root.find(f"{_q('office', 'body')}/{_q('office', 'text')}")
    budget = Budget(name, limits)
    b = SectionBuilder()
    todo = list(reversed(list(body))) if body is not None else []
    while todo:
        el = todo.pop()
        if el.tag == _q("text", "h"):
            text = SPACES.sub(" ", _odf_text(el, budget)).strip()
            level = _odf_int(el.get(_q("text", "outline-level")))
            if text:
                b.heading(level, text, text)
        elif el.tag == _q("text", "p"):
            b.add(_odf_text(el, budget).strip())
        elif el.tag == _q("table", "table"):
            # Repeat attributes (table:number-columns-repeated ...) are not
            # expanded: each cell element is read once.
            rows = [
                [cell_text(_odf_text(c, budget)) for c in row.iter(_q("table", "table-cell"))]
                for row in el.iter(_q("table", "table-row"))
            ]
            for line in markdown_table(rows):
                b.add(line)
        else:  # lists, sections, frames: look inside
            todo.extend(reversed(list(el)))
    b.flush()
    title = title or (b.first_heading[1] if b.first_heading else "") or stem
    return ParsedDocument(title=title, sections=tuple(b.sections), format="odt")


def _odf_int(value: str | None) -> int:
    """A count attribute (text:c, text:outline-level); 1 when absent or not a number."""
    try:
        return int(value or 1)
    except ValueError:
        return 1


def _odf_text(el: ElementTree.Element, budget: Budget) -> str:
    """Text of a paragraph, honouring <text:s/> (spaces), tabs and line breaks.

    Walked with a stack, not recursion: spans may nest deeper than Python's
    recursion limit. Each piece is counted against ``budget``."""
    parts: list[str] = []
    # Elements still to read, and the tails that follow them, in document order.
    todo: list[ElementTree.Element | str] = [el]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            piece = item
        elif item.tag == _q("text", "s"):
            count = _odf_int(item.get(_q("text", "c")))
            piece = " " * budget.repeat(count, "a space (text:s)")
        elif item.tag == _q("text", "tab"):
            piece = "\t"
        elif item.tag == _q("text", "line-break"):
            piece = "\n"
        elif item.tag == _q("text", "note"):
            piece = ""  # footnote bodies would interrupt the sentence
        else:
            piece = item.text or ""
            for child in reversed(item):
                todo.extend((child.tail or "", child))
        budget.text(len(piece))
        parts.append(piece)
    return "".join(parts)
