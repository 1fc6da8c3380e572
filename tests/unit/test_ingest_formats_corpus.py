"""Every file of the shared sample corpus parses, or fails with one of our errors.

Skipped when /work/shared/data/docs is absent. MANIFEST.tsv notes which files
are expected to fail (SCANNED, EMPTY, password, legacy binary formats).
"""

from __future__ import annotations

import time

import pytest

from ingest.parsers import parse_file
from sirocco.errors import DocumentTooLargeError, ParseError, UnsupportedFormatError
from tests.corpus import DOCS, MANIFEST, expected_failure

MAX_BYTES = 5 * 1024 * 1024  # keeps the run well under a minute
MAX_SECONDS_PER_FILE = 30


@pytest.mark.skipif(not MANIFEST, reason=f"{DOCS} is absent")
@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_corpus_file(name: str) -> None:
    path = DOCS / name
    if not path.is_file() or path.stat().st_size > MAX_BYTES:
        pytest.skip("absent or over 5 MB")
    expected = expected_failure(name)
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
