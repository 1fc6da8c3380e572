"""The shared sample corpus (``../shared/data/docs``) and what MANIFEST.tsv
says each file should give; tests that read it skip when it is absent."""

from __future__ import annotations

import csv
from pathlib import Path

from sirocco.errors import ParseError, UnsupportedFormatError

DOCS = Path(__file__).parents[1].parent / "shared" / "data" / "docs"


def _manifest() -> dict[str, str]:
    if not (DOCS / "MANIFEST.tsv").is_file():
        return {}
    with (DOCS / "MANIFEST.tsv").open(newline="", encoding="utf-8") as f:
        return {row["file"]: f"{row['format']} {row['note']}"
                for row in csv.DictReader(f, delimiter="\t")}


#: File name -> "format note" from MANIFEST.tsv; empty when the corpus is absent.
MANIFEST = _manifest()


def expected_failure(name: str) -> type[Exception] | None:
    """The error a file must fail with (legacy binary Office formats, scanned
    PDFs without a text layer, empty and password-protected files), or None."""
    note = MANIFEST.get(name, "")
    if note.startswith(("doc ", "ppt ", "xls ")):
        return UnsupportedFormatError
    if "SCANNED" in note and "OCR text layer" not in note:
        return ParseError
    if "EMPTY" in note or "assword" in note and "openable" not in note:
        return ParseError
    return None
