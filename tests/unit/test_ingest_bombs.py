"""Parser resource bombs: small files that claim or expand to huge documents end as a
per-file error (or parse normally) in bounded time and memory.

The bombs are made here, a few KB each. Those that could take the machine down
when the guard they test is missing run under ``memory_cap``, so they fail with a
MemoryError instead."""

from __future__ import annotations

import io
import resource
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ingest.parsers import Limits, parse_bytes, parse_file
from sirocco.errors import DocumentTooLargeError, ParseError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MB = 1024 * 1024


@contextmanager
def memory_cap(extra_mb: int) -> Iterator[None]:
    """This process may map at most ``extra_mb`` more while the block runs (RLIMIT_AS)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        mapped = int(f.read().split()[0]) * resource.getpagesize()
    cap = mapped + extra_mb * MB
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@contextmanager
def within(seconds: float) -> Iterator[None]:
    """Fails the test when the block takes longer than ``seconds``."""
    start = time.perf_counter()
    yield
    elapsed = time.perf_counter() - start
    assert elapsed < seconds, f"took {elapsed:.1f} s"


def zipped(members: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for member, text in members.items():
            zf.writestr(member, text)
    return buf.getvalue()


# --- xlsx --------------------------------------------------------------------------------

_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"


def xlsx(sheet_data: str, *, dimension: str = "A1", shared: tuple[str, ...] = ()) -> bytes:
    """A minimal workbook of one sheet: ``sheet_data`` is the inside of <sheetData>."""
    ct = "application/vnd.openxmlformats-officedocument.spreadsheetml"
    sst = "".join(f"<si><t>{s}</t></si>" for s in shared)
    return zipped({
        "[Content_Types].xml":
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
            'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
            f'<Override PartName="/xl/workbook.xml" ContentType="{ct}.sheet.main+xml"/>'
            f'<Override PartName="/xl/worksheets/sheet1.xml" ContentType="{ct}.worksheet+xml"/>'
            f'<Override PartName="/xl/sharedStrings.xml" ContentType="{ct}.sharedStrings+xml"/>'
            "</Types>",
        "_rels/.rels":
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            f'<Relationship Id="rId1" Type="{_REL}/officeDocument" Target="xl/workbook.xml"/>'
            "</Relationships>",
        "xl/workbook.xml":
            f'<workbook xmlns="{_MAIN}" xmlns:r="{_REL}"><sheets>'
            '<sheet name="Winds" sheetId="1" r:id="rId1"/></sheets></workbook>',
        "xl/_rels/workbook.xml.rels":
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            f'<Relationship Id="rId1" Type="{_REL}/worksheet" Target="worksheets/sheet1.xml"/>'
            f'<Relationship Id="rId2" Type="{_REL}/sharedStrings" Target="sharedStrings.xml"/>'
            "</Relationships>",
        "xl/sharedStrings.xml": f'<sst xmlns="{_MAIN}">{sst}</sst>',
        "xl/worksheets/sheet1.xml":
            f'<worksheet xmlns="{_MAIN}"><dimension ref="{dimension}"/>'
            f"<sheetData>{sheet_data}</sheetData></worksheet>",
    })


def row(number: int, *cells: tuple[str, str]) -> str:
    """A <row> of inline-string cells given as (reference, text)."""
    inner = "".join(f'<c r="{ref}" t="inlineStr"><is><t>{text}</t></is></c>'
                    for ref, text in cells)
    return f'<row r="{number}">{inner}</row>'


def test_xlsx_dimension_claiming_the_whole_grid_reads_only_real_cells():
    # openpyxl pads rows to the claimed width and yields every row up to the last
    # one: 16,384 columns x 1,048,576 rows for these five cells.
    data = xlsx(row(1, ("A1", "Wind"), ("B1", "Speed"))
                + row(2, ("A2", "mistral"), ("B2", "90"))
                + row(1048576, ("XFD1048576", "far corner")),
                dimension="A1:XFD1048576")
    with memory_cap(512), within(10):
        doc = parse_bytes(data, name="grid.xlsx")
    assert doc.full_text == ("| Wind | Speed |  |\n| --- | --- | --- |\n| mistral | 90 |  |\n"
                             "|  |  | far corner |")


def test_xlsx_with_more_real_cells_than_max_cells_is_refused():
    data = xlsx("".join(row(r, (f"A{r}", "x"), (f"B{r}", "y")) for r in range(1, 7)))
    assert "| x | y |" in parse_bytes(data, name="ok.xlsx", limits=Limits(max_cells=12)).full_text
    with pytest.raises(DocumentTooLargeError) as err:
        parse_bytes(data, name="cells.xlsx", limits=Limits(max_cells=11))
    assert err.value.message == (
        "cells.xlsx: too many cells (more than 11); the limit is 11 cells per document "
        "(setting ingest.max_cells)")


def test_xlsx_shared_string_expansion_is_cut_at_max_chars():
    # One 1,000-character shared string shown by 5,000 cells: 5 million characters
    # from a few KB of zip.
    cells = "".join(f'<row r="{r}"><c r="A{r}" t="s"><v>0</v></c></row>' for r in range(1, 5001))
    data = xlsx(cells, shared=("s" * 1000,))
    with pytest.raises(DocumentTooLargeError) as err:
        parse_bytes(data, name="shared.xlsx", limits=Limits(max_chars=100_000))
    assert err.value.message == (
        "shared.xlsx: too much text (more than 100000 characters); the limit is 100000 "
        "characters per document (setting ingest.max_chars)")


# --- odt ---------------------------------------------------------------------------------

_ODF_NS = ('xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
           'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"')


def odt(body: str) -> bytes:
    """A minimal OpenDocument text whose <office:text> holds ``body``."""
    return zipped({
        "mimetype": "application/vnd.oasis.opendocument.text",
        "content.xml": f'<office:document-content {_ODF_NS}><office:body><office:text>'
                       f"{body}</office:text></office:body></office:document-content>",
    })


def test_odt_run_of_four_billion_spaces_is_refused():
    data = odt('<text:p>Foehn<text:s text:c="4000000000"/>wind</text:p>')
    with memory_cap(512), within(10), pytest.raises(DocumentTooLargeError) as err:
        parse_bytes(data, name="spaces.odt")
    assert err.value.message == (
        "spaces.odt: a space (text:s) repeated 4000000000 times; the limit is 10000 repeats "
        "(setting ingest.max_repeat)")


def test_odt_space_runs_within_max_repeat_still_count_towards_max_chars():
    data = odt('<text:p>Foehn<text:s text:c="10000"/>wind</text:p>' * 50)
    assert parse_bytes(data, name="ok.odt").full_text.startswith("Foehn" + " " * 10000 + "wind")
    with pytest.raises(DocumentTooLargeError, match=r"^runs\.odt: too much text \(more than "
                       r"100000 characters\).*\(setting ingest\.max_chars\)$"):
        parse_bytes(data, name="runs.odt", limits=Limits(max_chars=100_000))


def test_odt_spans_nested_past_the_recursion_limit_still_parse():
    depth = 5000
    data = odt("<text:p>" + "<text:span>" * depth + "chinook" + "</text:span>" * depth
               + " arrives</text:p>")
    assert parse_bytes(data, name="deep.odt").full_text == "chinook arrives"


# --- pdf ---------------------------------------------------------------------------------

_FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"
_TEXT = b"BT /F1 12 Tf 72 720 Td (The bora blows) Tj ET"


def pdf(objects: list[bytes]) -> bytes:
    """A PDF of ``objects`` (numbered from 1, the first is the catalog) with its xref."""
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return bytes(out)


def stream(data: bytes) -> bytes:
    return b"<< /Length %d >>\nstream\n%s\nendstream" % (len(data), data)


def one_page_pdf(*, count: int = 1, page_extra: bytes = b"", content: bytes = _TEXT) -> bytes:
    """One text page; ``count`` is the /Count the page tree declares."""
    return pdf([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count %d >>" % count,
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 5 0 R"
        b" >> >> /Contents 4 0 R " + page_extra + b">>",
        stream(content),
        _FONT,
    ])


def test_pdf_page_count_is_checked_before_any_page_is_loaded():
    with pytest.raises(DocumentTooLargeError) as err:
        parse_bytes(one_page_pdf(count=100_000), name="claims.pdf")
    assert err.value.message == (
        "claims.pdf: too many pages (100000); the limit is 2000 pages (setting ingest.max_pages)")
    assert "The bora blows" in parse_bytes(one_page_pdf(), name="one.pdf").full_text


def test_pdf_with_99000_pages_behind_a_false_count_fails_fast():
    # 99 page tree nodes sharing one list of 1,000 references to one page: 99,000
    # pages in 8 KB, while /Count says 1. Loading them all took seconds and
    # hundreds of MB; the walk now stops past the limit.
    kids = b" ".join([b"3 0 R"] * 1000)
    data = pdf([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + b" ".join([b"6 0 R"] * 99) + b"] /Count 1 >>",
        b"<< /Type /Page /MediaBox [0 0 612 792] /Resources << /Font << /F1 5 0 R >> >> "
        b"/Contents 4 0 R >>",
        stream(_TEXT),
        _FONT,
        b"<< /Type /Pages /Kids [" + kids + b"] /Count 1000 >>",
    ])
    with memory_cap(512), within(2), pytest.raises(DocumentTooLargeError) as err:
        parse_bytes(data, name="pages.pdf")
    assert err.value.message == ("pages.pdf: too many pages (more than 2000); the limit is "
                                 "2000 pages (setting ingest.max_pages)")


_DEEP = 100_000


@pytest.mark.parametrize("bomb", [
    one_page_pdf(page_extra=b"/Junk " + b"<< /A " * _DEEP + b">> " * _DEEP),
    one_page_pdf(page_extra=b"/Junk " + b"[" * _DEEP + b"]" * _DEEP),
    one_page_pdf(content=b"BT /F1 12 Tf " + b"[" * _DEEP + b"]" * _DEEP + b" TJ ET"),
], ids=["dictionaries", "arrays", "content-stream"])
def test_pdf_objects_nested_100000_deep_are_a_parse_error(bomb, caplog):
    with memory_cap(512), within(10), pytest.raises(ParseError) as err:
        parse_bytes(bomb, name="nested.pdf")
    assert err.value.message == ("nested.pdf: refused as a possible parser bomb: objects "
                                 "nested more than 100 levels deep")
    # pypdf used to log a warning per level it gave up on, and read on.
    assert len(caplog.records) < 10


def test_pdf_text_over_max_chars_is_refused():
    assert len(parse_file(FIXTURES / "manual.pdf").full_text) > 100
    with pytest.raises(DocumentTooLargeError) as err:
        parse_file(FIXTURES / "manual.pdf", limits=Limits(max_chars=100))
    assert err.value.message.endswith(
        "manual.pdf: too much text (more than 100 characters); the limit is 100 characters "
        "per document (setting ingest.max_chars)")


def test_any_format_over_max_chars_is_refused():
    assert parse_bytes(b"x" * 100, name="ok.txt", limits=Limits(max_chars=100)).full_text
    with pytest.raises(DocumentTooLargeError) as err:
        parse_bytes(b"x" * 101, name="long.txt", limits=Limits(max_chars=100))
    assert err.value.message == (
        "long.txt: too much text (more than 100 characters); the limit is 100 characters per "
        "document (setting ingest.max_chars)")
