"""PDF text layer, one section per page (no OCR)."""

from __future__ import annotations

import io
import logging

from ingest.formats.base import Limits, ParsedDocument, Section, tidy
from sirocco.errors import DocumentTooLargeError, ParseError

logger = logging.getLogger(__name__)


def parse_pdf(data: bytes, *, name: str, stem: str, limits: Limits) -> ParsedDocument:
    """Text of each page, page numbers kept; refuses encrypted, oversize and image-only PDFs."""
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
        n_pages = len(reader.pages)
        if n_pages > limits.max_pages:
            raise DocumentTooLargeError(
                f"{name}: too many pages ({n_pages}); the limit is {limits.max_pages} pages"
            )
        meta_title = ""
        try:
            meta_title = ((reader.metadata or {}).get("/Title") or "").strip()
        except Exception:  # a broken info dictionary only costs us the title
            meta_title = ""
        for number, page in enumerate(reader.pages, start=1):
            text = tidy(page.extract_text() or "")
            if text:
                sections.append(Section(text, page=number))
    except (ParseError, DocumentTooLargeError):
        raise
    except Exception as exc:
        # pypdf signals damaged files with many exception types (PdfReadError,
        # KeyError, ValueError ...); all mean the same thing to the user.
        raise ParseError(f"{name}: corrupt PDF ({type(exc).__name__}: {exc})") from None
    if not sections:
        raise ParseError(f"{name}: no text layer (scanned PDF?); OCR is not enabled")
    return ParsedDocument(title=str(meta_title) or stem, sections=tuple(sections), format="pdf")
