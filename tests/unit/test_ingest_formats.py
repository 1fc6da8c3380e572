"""Per-format parsers and limits, on small fixtures made by tests/fixtures/make_fixtures.py."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from ingest.parsers import Limits, detect_format, parse_bytes, parse_file
from sirocco.errors import DocumentTooLargeError, ParseError, UnsupportedFormatError
from sirocco.settings import Settings

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_pptx_one_section_per_slide_with_table():
    doc = parse_file(FIXTURES / "roadmap.pptx")
    assert (doc.format, doc.title) == ("pptx", "Harmattan Roadmap")
    assert [s.page for s in doc.sections] == [1, 2]
    assert "harmattan release ships in March" in doc.sections[0].text
    assert doc.sections[1].headings == ("Milestones",)
    assert "| Phase | Owner |" in doc.sections[1].text
    assert "| Launch | Bruno |" in doc.sections[1].text


def test_xlsx_one_section_per_sheet_with_header_and_no_empty_rows():
    doc = parse_file(FIXTURES / "budget.xlsx")
    assert doc.format == "xlsx"
    assert [s.headings for s in doc.sections] == [("Revenue",), ("Stock",)]  # "Empty" skipped
    assert doc.sections[0].text == (
        "| Region | Q1 | Q2 |\n| --- | --- | --- |\n| North | 120 | 135.5 |\n| South | 98 | 101 |"
    )
    assert "| Khamsin blades | 42 |" in doc.sections[1].text


def test_csv_in_utf16_with_sniffed_semicolons():
    doc = parse_file(FIXTURES / "winds-utf16.csv")
    assert doc.format == "csv"
    assert doc.full_text.split("\n")[:3] == [
        "| City | Wind | Note |", "| --- | --- | --- |", "| Zürich | Föhn | warm; dry |"]


def test_csv_in_cp1252():
    doc = parse_bytes("name,town\nRené,Besançon\n".encode("cp1252"), name="people.csv")
    assert "| René | Besançon |" in doc.full_text


def test_eml_headers_body_and_attachments():
    doc = parse_file(FIXTURES / "notice.eml")
    assert (doc.format, doc.title) == ("eml", "Bora maintenance window")
    head = doc.sections[0].text
    assert head.startswith("From: Amina Diallo <amina@example.com>\nTo: ops@example.com\n")
    assert "Date: Mon, 03 Jun 2024 09:30:00 +0000" in head
    assert "bora maintenance window starts Friday" in head
    assert "HTML copy" not in doc.full_text  # text/plain preferred over the HTML alternative
    txt = next(s for s in doc.sections if s.headings == ("Attachment: checklist.txt",))
    assert txt.text == (
        "Attachment: checklist.txt\n\nChecklist: drain the tanks before the bora arrives.")
    docx = [s for s in doc.sections if s.headings[:1] == ("Attachment: report.docx",)]
    assert any("rose by twelve percent" in s.text for s in docx)
    assert "photo.png" not in doc.full_text  # unsupported attachments are skipped


def test_eml_html_only_body_becomes_text():
    raw = (b"From: a@example.com\r\nSubject: Hi\r\nContent-Type: text/html\r\n\r\n"
           b"<html><body><p>Only <b>HTML</b> here</p><script>x()</script></body></html>")
    doc = parse_bytes(raw, name="hi.eml")
    assert doc.sections[0].text.endswith("Only HTML here")


def test_json_key_paths():
    doc = parse_file(FIXTURES / "config.json")
    assert (doc.format, doc.title) == ("json", "Levante Service Config")
    service = next(s for s in doc.sections if s.headings == ("service",))
    assert "service.ports[1]: 8443" in service.text
    assert "service.owner.team: winds" in service.text


def test_invalid_json_is_a_parse_error():
    with pytest.raises(ParseError, match=r"^bad\.json: invalid JSON"):
        parse_bytes(b'{"a": ', name="bad.json")


def test_epub_chapters_in_spine_order():
    doc = parse_file(FIXTURES / "winds.epub")
    assert (doc.format, doc.title) == ("epub", "Winds of Provence")
    assert [s.headings for s in doc.sections] == [("Chapter One",), ("Chapter Two",)]
    assert "mistral blew down the Rhône valley" in doc.sections[0].text


def test_rtf_text_and_escapes():
    doc = parse_file(FIXTURES / "tramontane.rtf")
    assert doc.format == "rtf"
    assert "closes the café terrace" in doc.full_text


def test_odt_headings_and_table():
    doc = parse_file(FIXTURES / "minutes.odt")
    assert (doc.format, doc.title) == ("odt", "Chinook Minutes")
    assert "melted the snow in a day" in doc.sections[0].text
    attendance = next(s for s in doc.sections if s.headings == ("Chinook Minutes", "Attendance"))
    assert "| Ines | Chair |" in attendance.text


def test_doc_that_is_really_docx_parses_as_docx():
    doc = parse_file(FIXTURES / "really-docx.doc")
    assert doc.format == "docx"
    assert "rose by twelve percent" in doc.full_text


def test_zip_bomb_is_refused():
    with pytest.raises(DocumentTooLargeError) as err:
        parse_file(FIXTURES / "bomb.docx")
    assert "bomb.docx: refused as a possible zip bomb: it expands" in err.value.message
    assert "(limit 100x)" in err.value.message


def test_zip_expanded_size_limit():
    limits = Limits(max_zip_expanded_bytes=1024, max_zip_ratio=1e9)
    with pytest.raises(DocumentTooLargeError, match=r"report\.docx: expands to .* the limit is"):
        parse_file(FIXTURES / "report.docx", limits=limits)


def test_file_size_limit():
    with pytest.raises(DocumentTooLargeError) as err:
        parse_file(FIXTURES / "report.docx", limits=Limits(max_file_bytes=1000))
    assert err.value.message.endswith("the limit is 0.000953674 MB per file")
    with pytest.raises(DocumentTooLargeError, match="file too large"):
        parse_bytes(b"x" * 2000, name="a.txt", limits=Limits(max_file_bytes=1000))


def test_page_limits_for_pdf_and_pptx():
    pages = r"manual\.pdf: too many pages \(2\); the limit is 1 pages"
    with pytest.raises(DocumentTooLargeError, match=pages):
        parse_file(FIXTURES / "manual.pdf", limits=Limits(max_pages=1))
    with pytest.raises(DocumentTooLargeError, match=r"too many slides \(2\); the limit is 1"):
        parse_file(FIXTURES / "roadmap.pptx", limits=Limits(max_pages=1))


def test_limits_from_settings():
    settings = Settings(ingest={"max_file_mb": 2, "max_pages": 7, "max_zip_ratio": 50,
                                "max_zip_expanded_mb": 10, "max_chars": 1000, "max_cells": 99,
                                "max_repeat": 5})
    assert Limits.from_settings(settings.ingest) == Limits(
        max_file_bytes=2 * 1024 * 1024, max_pages=7, max_zip_ratio=50,
        max_zip_expanded_bytes=10 * 1024 * 1024, max_chars=1000, max_cells=99, max_repeat=5)
    assert Limits.from_settings(Settings().ingest) == Limits()


def _ole2(stream: str) -> bytes:
    """A minimal OLE2 compound file with one empty stream (512-byte sectors)."""
    import struct

    free, end, fat_sect = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD
    header = bytearray(512)
    header[:8] = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
    struct.pack_into("<HHHHH", header, 24, 0x3E, 3, 0xFFFE, 9, 6)
    struct.pack_into("<IIIIIIII", header, 44, 1, 1, 0, 4096, end, 0, end, 0)
    struct.pack_into("<I", header, 76, 0)  # FAT in sector 0
    for i in range(1, 109):
        struct.pack_into("<I", header, 76 + 4 * i, free)
    fat = struct.pack("<II", fat_sect, end) + b"\xff" * (512 - 8)

    def entry(name: str, kind: int, child: int, start: int) -> bytes:
        raw = name.encode("utf-16-le") + b"\0\0"
        e = bytearray(128)
        e[: len(raw)] = raw
        struct.pack_into("<HBB", e, 64, len(raw), kind, 1)
        struct.pack_into("<III", e, 68, free, free, child)
        struct.pack_into("<II", e, 116, start, 0)
        return bytes(e)

    directory = entry("Root Entry", 5, 1, end) + entry(stream, 2, free, end)
    directory += b"\0" * (512 - len(directory))
    return bytes(header) + fat + directory


def test_password_protected_office_file():
    with pytest.raises(ParseError) as err:
        parse_bytes(_ole2("EncryptedPackage"), name="secret.xlsx")
    assert err.value.message == (
        "secret.xlsx: password-protected Office file; remove the password first")


def test_legacy_binary_word_is_refused_clearly():
    with pytest.raises(UnsupportedFormatError) as err:
        parse_bytes(_ole2("WordDocument"), name="old.doc")
    assert err.value.message == (
        "old.doc: legacy binary Word 97-2003 .doc is not supported; save as .docx")


@pytest.mark.parametrize(("name", "message"), [
    ("deck.pptx", r"deck\.pptx: corrupt PowerPoint file \(not a zip archive\)"),
    ("sheet.xlsx", r"sheet\.xlsx: corrupt Excel file \(not a zip archive\)"),
    ("book.epub", r"book\.epub: corrupt EPUB file \(not a zip archive\)"),
    ("mail.msg", r"mail\.msg: corrupt Outlook message \(not an OLE2 file\)"),
])
def test_extension_without_matching_content(name, message):
    with pytest.raises(ParseError, match=message):
        parse_bytes(b"hello there", name=name)


def test_corrupt_xlsx_is_a_parse_error():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("xl/workbook.xml", "<workbook/>")
    assert detect_format(buf.getvalue(), name="x.bin") == "xlsx"
    with pytest.raises(ParseError, match=r"^sheet\.xlsx: corrupt Excel file"):
        parse_bytes(buf.getvalue(), name="sheet.xlsx")


def test_content_detection_of_new_formats():
    assert detect_format((FIXTURES / "roadmap.pptx").read_bytes(), name="x") == "pptx"
    assert detect_format((FIXTURES / "winds.epub").read_bytes(), name="x.zip") == "epub"
    assert detect_format((FIXTURES / "minutes.odt").read_bytes(), name="x") == "odt"
    assert detect_format(b"{\\rtf1 hi}", name="note.txt") == "rtf"


def test_bomless_utf16_text_is_decoded():
    doc = parse_bytes("Grüße aus Köln".encode("utf-16-le"), name="g.txt")
    assert doc.full_text == "Grüße aus Köln"
