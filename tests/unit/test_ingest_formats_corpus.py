"""Every file of the shared sample corpus parses, or fails with one of our errors.

Skipped when /work/shared/data/docs is absent. MANIFEST.tsv notes which files
are expected to fail (SCANNED, EMPTY, password, legacy binary formats).
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pytest

from ingest.parsers import parse_file
from sirocco.errors import DocumentTooLargeError, ParseError, UnsupportedFormatError

DOCS = Path(__file__).parents[2].parent / "shared" / "data" / "docs"
MAX_BYTES = 5 * 1024 * 1024  # keeps the run well under a minute
MAX_SECONDS_PER_FILE = 30


def _manifest() -> dict[str, str]:
    if not (DOCS / "MANIFEST.tsv").is_file():
        return {}
    with (DOCS / "MANIFEST.tsv").open(newline="", encoding="utf-8") as f:
        return {row["file"]: f"{row['format']} {row['note']}"
                for row in csv.DictReader(f, delimiter="\t")}


MANIFEST = _manifest()


def _expected_failure(name: str) -> type[Exception] | None:
    note = MANIFEST.get(name, "")
    if note.startswith(("doc ", "ppt ", "xls ")):
        return UnsupportedFormatError
    if "SCANNED" in note and "OCR text layer" not in note:
        return ParseError
    if "EMPTY" in note or "assword" in note and "openable" not in note:
        return ParseError
    return None


@pytest.mark.skipif(not MANIFEST, reason=f"{DOCS} is absent")
@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_corpus_file(name: str) -> None:
    path = DOCS / name
    if not path.is_file() or path.stat().st_size > MAX_BYTES:
        pytest.skip("absent or over 5 MB")
    expected = _expected_failure(name)
    started = time.monotonic()
    try:
        doc = parse_file(path)
    except (ParseError, UnsupportedFormatError, DocumentTooLargeError) as exc:
        assert exc.message.strip(), name
        assert expected is not None and isinstance(exc, expected), f"{name}: {exc.message}"
        if "SCANNED" in MANIFEST[name]:
            assert "no text layer (scanned PDF?); OCR is not enabled" in exc.message
    else:
        assert expected is None, f"{name} parsed but was expected to fail"
        assert doc.full_text.strip()
    assert time.monotonic() - started < MAX_SECONDS_PER_FILE
