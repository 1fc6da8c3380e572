"""Every file of the shared sample corpus parses, or fails with one of our errors.

Skipped (``tests.support.optional``) when ../shared/data/docs is absent.
MANIFEST.tsv notes which files are expected to fail (SCANNED, EMPTY, password,
legacy binary formats).
"""

from __future__ import annotations

import time

import pytest

from ingest.parsers import parse_file
from sirocco.errors import DocumentTooLargeError, ParseError, UnsupportedFormatError
from tests.corpus import DOCS, MANIFEST, expected_failure
from tests.support import optional

MAX_BYTES = 5 * 1024 * 1024  # keeps the run well under a minute
MAX_SECONDS_PER_FILE = 30

if not MANIFEST:
    optional("the shared data", f"{DOCS} is absent")
#: Every file the manifest lists, but those over MAX_BYTES (none today).
FILES = sorted(n for n in MANIFEST if (DOCS / n).stat().st_size <= MAX_BYTES)


def test_the_manifest_lists_files_that_exist() -> None:
    missing = sorted(n for n in MANIFEST if not (DOCS / n).is_file())
    assert missing == []


@pytest.mark.parametrize("name", FILES)
def test_corpus_file(name: str) -> None:
    path = DOCS / name
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
