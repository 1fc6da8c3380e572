"""Rich Text Format, via striprtf."""

from __future__ import annotations

import logging

from ingest.formats.base import Limits, ParsedDocument, Section, tidy
from sirocco.errors import ParseError

logger = logging.getLogger(__name__)


def parse_rtf(data: bytes, *, name: str, stem: str, limits: Limits) -> ParsedDocument:
    """Plain text of an RTF document, one section (RTF carries no reliable heading marks)."""
    from striprtf.striprtf import rtf_to_text

    # RTF is 7-bit ASCII with \'xx escapes; cp1252 covers stray 8-bit bytes.
    source = data.decode("cp1252", errors="replace")
    try:
        text = rtf_to_text(source, errors="replace")
    except Exception as exc:
        raise ParseError(f"{name}: corrupt RTF file ({type(exc).__name__}: {exc})") from None
    body = tidy(text.replace("\r\n", "\n").replace("\r", "\n"))
    return ParsedDocument(title=stem, sections=(Section(body),) if body else (), format="rtf")
