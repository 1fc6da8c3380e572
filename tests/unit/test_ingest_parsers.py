"""Parsers on small committed fixtures (tests/fixtures) and inline bytes."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from ingest.parsers import SECTION_SEPARATOR, detect_format, parse_bytes, parse_file
from sirocco.errors import ParseError, UnsupportedFormatError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_markdown_sections_follow_headings():
    doc = parse_file(FIXTURES / "guide.md")
    assert doc.format == "md"
    assert doc.title == "Flux Capacitor Guide"
    by_heading = {s.headings: s.text for s in doc.sections}
    assert by_heading[("Flux Capacitor Guide", "Installation", "Cabling")].startswith(
        "### Cabling\n\nUse only shielded cables."
    )
    maintenance = by_heading[("Flux Capacitor Guide", "Maintenance")]
    assert "hold the blue button for ten seconds" in maintenance
    # A '#' line inside a fenced code block is not a heading.
    assert "# this is a code comment, not a heading" in maintenance
    # Setext heading (underlined with dashes).
    assert ("Flux Capacitor Guide", "Troubleshooting") in by_heading
    assert all(s.page is None for s in doc.sections)


def test_markdown_front_matter_title_and_preamble():
    doc = parse_bytes(b"---\ntitle: 'Handbook'\n---\nIntro line.\n\n# Part\nBody.\n", name="h.md")
    assert doc.title == "Handbook"
    assert doc.sections[0].text == "Intro line." and doc.sections[0].headings == ()
    assert doc.sections[1].headings == ("Part",)


def test_heading_without_body_is_carried_into_its_child_section():
    doc = parse_bytes(b"# Top\n\n## Child\ntext\n", name="c.md")
    assert len(doc.sections) == 1
    assert doc.sections[0].text == "# Top\n\n## Child\ntext"
    assert doc.sections[0].headings == ("Top", "Child")


def test_latin1_text_is_decoded():
    doc = parse_file(FIXTURES / "latin1.txt")
    assert doc.format == "txt"
    assert doc.title == "latin1"
    assert doc.full_text.startswith("Règlement intérieur du café")
    assert "crème brûlée" in doc.full_text and "élèves" in doc.full_text


def test_utf16_with_bom_is_decoded():
    doc = parse_bytes("Grüße, olá".encode("utf-16"), name="u.txt")
    assert doc.full_text == "Grüße, olá"


def test_html_drops_chrome_and_keeps_structure():
    doc = parse_file(FIXTURES / "page.html")
    assert doc.format == "html"
    assert doc.title == "Harbour Opening Hours"
    text = doc.full_text
    for absent in ("do not index me", "color: red", "About us", "a comment that must not appear"):
        assert absent not in text
    assert "opens at seven in the morning" in text
    fees = next(s for s in doc.sections if s.headings == ("Harbour office", "Fees"))
    assert "| Under 10 m | 25 EUR |" in fees.text
    contact = next(s for s in doc.sections if s.headings[-1] == "Contact")
    assert "Phone: 555 0100\nRadio: channel 9" in contact.text


def test_html_title_falls_back_to_h1_and_deep_nesting_is_fine():
    deep = b"<div>" * 3000 + b"deep text" + b"</div>" * 3000
    doc = parse_bytes(b"<html><body><h1>Main title</h1>" + deep + b"</body></html>", name="p")
    assert doc.title == "Main title"
    assert "deep text" in doc.full_text


def test_pdf_has_one_section_per_page():
    doc = parse_file(FIXTURES / "manual.pdf")
    assert doc.format == "pdf"
    assert doc.title == "Zephyr Turbine Manual"
    assert [s.page for s in doc.sections] == [1, 2]
    assert "Always stop the rotor" in doc.sections[0].text
    assert "serviced every 400 hours" in doc.sections[1].text


def test_encrypted_pdf_is_refused_by_name():
    with pytest.raises(ParseError) as err:
        parse_file(FIXTURES / "encrypted.pdf")
    assert "encrypted PDF" in err.value.message
    assert "encrypted.pdf" in err.value.message


def test_corrupt_pdf_is_a_parse_error():
    with pytest.raises(ParseError) as err:
        parse_file(FIXTURES / "corrupt.pdf")
    assert "corrupt.pdf: corrupt PDF" in err.value.message


def test_pdf_extension_without_pdf_content():
    with pytest.raises(ParseError, match=r"fake\.pdf: corrupt PDF \(no %PDF header\)"):
        parse_bytes(b"just text", name="fake.pdf")


def test_docx_headings_tables_and_title():
    doc = parse_file(FIXTURES / "report.docx")
    assert doc.format == "docx"
    assert doc.title == "Mistral Division Report"
    regions = next(s for s in doc.sections if s.headings == ("Results", "Regions"))
    assert "| Region | Growth |" in regions.text
    assert "| South | 15% |" in regions.text
    results = next(s for s in doc.sections if s.headings == ("Results",))
    assert "rose by twelve percent" in results.text
    assert next(s for s in doc.sections if s.headings == ("Outlook",))


def test_empty_file():
    with pytest.raises(ParseError) as err:
        parse_file(FIXTURES / "empty.txt")
    assert err.value.message.endswith("empty.txt is empty")


def test_missing_file():
    with pytest.raises(ParseError, match=r"nope\.md: file not found"):
        parse_file(FIXTURES / "nope.md")


def test_unknown_binary_lists_supported_formats():
    with pytest.raises(UnsupportedFormatError) as err:
        parse_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)), name="photo.png")
    msg = err.value.message
    assert msg.startswith("photo.png: unsupported file type .png")
    for ext in (".md", ".txt", ".html", ".pdf", ".docx"):
        assert ext in msg


def test_zip_of_no_known_format_is_unsupported():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("photos/readme.txt", "holiday pictures")
    with pytest.raises(UnsupportedFormatError, match=r"photos\.zip: .*zip archive of no known"):
        parse_bytes(buf.getvalue(), name="photos.zip")


def test_docx_extension_without_zip_content():
    with pytest.raises(ParseError, match=r"bad\.docx: corrupt Word file"):
        parse_bytes(b"hello", name="bad.docx")


def test_content_beats_extension():
    pdf = (FIXTURES / "manual.pdf").read_bytes()
    assert detect_format(pdf, name="mislabelled.txt") == "pdf"
    docx = (FIXTURES / "report.docx").read_bytes()
    assert detect_format(docx, name="report.bin") == "docx"
    assert detect_format(b"<!DOCTYPE html><html><p>x</p></html>", name="page") == "html"
    assert detect_format(b"plain words\n", name="README") == "txt"


def test_full_text_joins_sections_and_starts_point_into_it():
    doc = parse_file(FIXTURES / "guide.md")
    assert doc.full_text == SECTION_SEPARATOR.join(s.text for s in doc.sections)
    for section, start in zip(doc.sections, doc.section_starts, strict=True):
        assert doc.full_text[start : start + len(section.text)] == section.text
