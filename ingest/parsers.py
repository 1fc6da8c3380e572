"""File parsers: bytes in, a ``ParsedDocument`` (title + ordered sections) out.

This is the public entry point; the parsers themselves live in
``ingest.formats`` (one module per format family). The type is decided from the
content first (magic bytes, zip members, OLE2 streams) and from the extension
second, so a mislabelled file is still read correctly. Every error names the
file it is about.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path

from ingest.formats.base import (
    MIME_TYPES,
    SECTION_SEPARATOR,
    Limits,
    ParsedDocument,
    Section,
    decode_text,
    too_much_text,
)
from ingest.formats.detect import (
    EXTENSIONS,
    SUPPORTED_EXTENSIONS,
    ZIP_FORMATS,
    check_zip,
    detect_format,
)
from ingest.formats.ebook import parse_epub
from ingest.formats.html import parse_html
from ingest.formats.mail import parse_eml, parse_msg
from ingest.formats.office import parse_docx, parse_odt, parse_pptx, parse_xlsx
from ingest.formats.pdf import parse_pdf
from ingest.formats.rtf import parse_rtf
from ingest.formats.text import parse_csv, parse_json, parse_markdown, parse_text
from sirocco.errors import DocumentTooLargeError, ParseError

__all__ = [
    "EXTENSIONS",
    "MIME_TYPES",
    "SECTION_SEPARATOR",
    "SUPPORTED_EXTENSIONS",
    "Limits",
    "ParsedDocument",
    "Section",
    "decode_text",
    "detect_format",
    "parse_bytes",
    "parse_file",
    "read_file",
]

logger = logging.getLogger(__name__)

Parser = Callable[..., ParsedDocument]
PARSERS: dict[str, Parser] = {
    "md": parse_markdown,
    "txt": parse_text,
    "json": parse_json,
    "csv": parse_csv,
    "html": parse_html,
    "pdf": parse_pdf,
    "docx": parse_docx,
    "pptx": parse_pptx,
    "xlsx": parse_xlsx,
    "odt": parse_odt,
    # Messages read their attachments with parse_bytes itself (looked up when
    # called, so it may be defined below).
    "eml": partial(parse_eml, parse=lambda data, **kw: parse_bytes(data, **kw)),
    "msg": partial(parse_msg, parse=lambda data, **kw: parse_bytes(data, **kw)),
    "epub": parse_epub,
    "rtf": parse_rtf,
}


def parse_file(path: str | Path, limits: Limits | None = None) -> ParsedDocument:
    """Parse the file at ``path`` within ``limits`` (defaults: ``Limits()``).

    Raises ``ParseError`` when the file is missing, empty, corrupt or encrypted,
    ``UnsupportedFormatError`` when no parser handles it, and
    ``DocumentTooLargeError`` when it is over a limit.
    """
    limits = limits or Limits()
    return parse_bytes(read_file(path, limits), name=str(path), limits=limits)


def read_file(path: str | Path, limits: Limits | None = None) -> bytes:
    """The bytes of ``path``, refusing (before reading) a file over the size limit.

    Raises ``ParseError`` (missing, a directory, unreadable) or ``DocumentTooLargeError``.
    """
    limits = limits or Limits()
    p = Path(path)
    try:
        size = p.stat().st_size
        if p.is_file() and size > limits.max_file_bytes:
            raise _too_big(str(p), size, limits)
        return p.read_bytes()
    except FileNotFoundError:
        raise ParseError(f"{p}: file not found") from None
    except IsADirectoryError:
        raise ParseError(f"{p}: is a directory, not a file") from None
    except OSError as exc:
        raise ParseError(f"{p}: cannot read file ({exc.strerror or exc})") from None


def parse_bytes(data: bytes, *, name: str, limits: Limits | None = None) -> ParsedDocument:
    """Parse file content; ``name`` (a path or file name) gives the extension,
    the fallback title and the subject of error messages.

    Raises like ``parse_file``."""
    limits = limits or Limits()
    if len(data) > limits.max_file_bytes:
        raise _too_big(name, len(data), limits)
    fmt = detect_format(data, name=name)
    if not data.strip():
        raise ParseError(f"{name} is empty")
    if fmt in ZIP_FORMATS:
        check_zip(data, name=name, limits=limits)
    stem = Path(name).stem or name
    doc = PARSERS[fmt](data, name=name, stem=stem, limits=limits)
    if not doc.full_text.strip():
        raise ParseError(f"{name} is empty: no text could be extracted")
    # Parsers whose output can outgrow their input check as they go; this
    # catches the rest (a 100 MB text file, a message with many attachments).
    if len(doc.full_text) > limits.max_chars:
        raise too_much_text(name, limits)
    logger.debug("parsed", extra={"file": name, "format": fmt, "sections": len(doc.sections)})
    return doc


def _too_big(name: str, size: int, limits: Limits) -> DocumentTooLargeError:
    mb = 1024 * 1024
    return DocumentTooLargeError(
        f"{name}: file too large ({size / mb:.1f} MB); the limit is "
        f"{limits.max_file_bytes / mb:g} MB per file"
    )
