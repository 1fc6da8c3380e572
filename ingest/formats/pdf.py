"""PDF text layer, one section per page (no OCR)."""

from __future__ import annotations

import io
import logging
import threading
from typing import Any

from ingest.formats.base import Budget, Limits, ParsedDocument, Section, over_limit, tidy
from sirocco.errors import DocumentTooLargeError, ParseError

logger = logging.getLogger(__name__)

#: Arrays and dictionaries nested deeper than this are refused. Real files stay
#: well under 20; each level costs pypdf about three Python frames, so this
#: also keeps clear of the interpreter's recursion limit (1000).
MAX_NESTING = 100


def parse_pdf(data: bytes, *, name: str, stem: str, limits: Limits) -> ParsedDocument:
    """Text of each page, page numbers kept; refuses encrypted, oversize and image-only PDFs.

    Bombs end as a per-file error: too many pages (``DocumentTooLargeError``, found
    before the page tree is loaded), too much text, objects nested too deeply
    (``ParseError``)."""
    import pypdf
    from pypdf.errors import LimitReachedError

    _bound_nesting()
    budget = Budget(name, limits)
    sections: list[Section] = []
    # Past max_pages nodes (and as many /Pages nodes above them) pypdf stops
    # walking the page tree, whatever /Count claims.
    with pypdf.apply_configuration(page_tree_maximum_entries=2 * limits.max_pages + 64):
        try:
            reader = pypdf.PdfReader(io.BytesIO(data))
            _open(reader, name)
            _check_pages(reader, name, limits)
            meta_title = ""
            try:
                info: Any = reader.metadata or {}
                meta_title = str(info.get("/Title") or "").strip()
            except Exception:  # a broken info dictionary only costs us the title
                meta_title = ""
            for number, page in enumerate(reader.pages, start=1):
                text = tidy(page.extract_text() or "")
                budget.text(len(text))
                if text:
                    sections.append(Section(text, page=number))
        except (ParseError, DocumentTooLargeError):
            raise
        except (LimitReachedError, RecursionError) as exc:
            raise ParseError(f"{name}: refused as a possible parser bomb: {_why(exc)}") from None
        except Exception as exc:
            # pypdf signals damaged files with many exception types (PdfReadError,
            # KeyError, ValueError ...); all mean the same thing to the user.
            raise ParseError(f"{name}: corrupt PDF ({type(exc).__name__}: {exc})") from None
    if not sections:
        raise ParseError(f"{name}: no text layer (scanned PDF?); OCR is not enabled")
    return ParsedDocument(title=str(meta_title) or stem, sections=tuple(sections), format="pdf")


def _open(reader: Any, name: str) -> None:
    if reader.is_encrypted:
        # Owner-password-only PDFs open with an empty user password, like in a viewer.
        try:
            opened = reader.decrypt("")
        except Exception as exc:
            raise ParseError(f"{name}: encrypted PDF that cannot be opened ({exc})") from None
        if not opened:
            raise ParseError(f"{name}: encrypted PDF; it needs a password, remove it first")


def _check_pages(reader: Any, name: str, limits: Limits) -> None:
    """Refuse a PDF over ``max_pages``: first by the /Count its page tree declares
    (read without loading a page), then by the pages the tree really has."""
    from pypdf.errors import LimitReachedError

    pages = f"{limits.max_pages} pages"
    try:
        declared = reader.trailer["/Root"]["/Pages"]["/Count"]
    except Exception:  # no usable /Count: the walk below decides
        declared = None
    if isinstance(declared, int) and declared > limits.max_pages:
        raise over_limit(name, f"too many pages ({declared})", pages, "max_pages")
    try:
        n_pages = len(reader.pages)
    except LimitReachedError as exc:
        if "entr" not in str(exc):  # pypdf's other page tree limit is its depth
            raise
        raise over_limit(name, f"too many pages (more than {limits.max_pages})", pages,
                         "max_pages") from None
    if n_pages > limits.max_pages:
        raise over_limit(name, f"too many pages ({n_pages})", pages, "max_pages")


def _why(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "objects nested too deeply"
    return str(exc)


_depth = threading.local()
_bound_lock = threading.Lock()


def _bound_nesting() -> None:
    """Make pypdf refuse arrays and dictionaries nested past ``MAX_NESTING``.

    pypdf reads nested objects by recursion and, on a damaged dictionary, logs a
    warning and reads on: a file of 100,000 nested dictionaries cost seconds and
    50,000 log lines, then parsed "fine". Its ``LimitReachedError`` is the one
    error it never swallows, so the reader of nested objects raises it at the
    bound. Installed once, on pypdf's module-level ``read_object`` (the name
    arrays, dictionaries and content streams call for their elements)."""
    from pypdf.generic import _data_structures as ds

    with _bound_lock:
        if getattr(ds.read_object, "_sirocco_bounded", False):
            return
        ds.read_object = _bounded(ds.read_object)


def _bounded(read_object: Any) -> Any:
    from pypdf.errors import LimitReachedError

    def bounded_read_object(*args: Any, **kwargs: Any) -> Any:
        depth = getattr(_depth, "value", 0)
        if depth >= MAX_NESTING:
            raise LimitReachedError(f"objects nested more than {MAX_NESTING} levels deep")
        _depth.value = depth + 1
        try:
            return read_object(*args, **kwargs)
        finally:
            _depth.value = depth

    bounded_read_object._sirocco_bounded = True  # type: ignore[attr-defined]
    return bounded_read_object
