"""EPUB: chapters in spine order, read with zipfile and the HTML parser."""

from __future__ import annotations

import io
import logging
import posixpath
import zipfile
from urllib.parse import unquote
from xml.etree import ElementTree

from ingest.formats.base import Limits, ParsedDocument, Section
from ingest.formats.html import html_sections
from sirocco.errors import ParseError

logger = logging.getLogger(__name__)

_CONTAINER = "{urn:oasis:names:tc:opendocument:xmlns:container}"
_OPF = "{http://www.idpf.org/2007/opf}"
_DC = "{http://purl.org/dc/elements/1.1/}"
_HTML_TYPES = ("application/xhtml+xml", "text/html")


def parse_epub(data: bytes, *, name: str, stem: str, limits: Limits) -> ParsedDocument:
    """Chapters in spine order; each chapter's headings nest under its own sections."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            container = ElementTree.fromstring(zf.read("META-INF/container.xml"))
            rootfile = container.find(f".//{_CONTAINER}rootfile")
            if rootfile is None or not rootfile.get("full-path"):
                raise ParseError(f"{name}: corrupt EPUB (no package document in container.xml)")
            opf_path = rootfile.get("full-path", "")
            opf = ElementTree.fromstring(zf.read(opf_path))
            base = posixpath.dirname(opf_path)
            manifest = {
                item.get("id"): item
                for item in opf.iter(f"{_OPF}item")
            }
            title_el = opf.find(f".//{_DC}title")
            title = (title_el.text or "").strip() if title_el is not None else ""
            sections: list[Section] = []
            for ref in opf.iter(f"{_OPF}itemref"):
                item = manifest.get(ref.get("idref"))
                if item is None or item.get("media-type") not in _HTML_TYPES:
                    continue
                path = posixpath.normpath(posixpath.join(base, unquote(item.get("href", ""))))
                try:
                    chapter = zf.read(path)
                except KeyError:
                    logger.warning("epub spine item missing", extra={"file": name, "item": path})
                    continue
                builder, _ = html_sections(chapter, name=f"{name} » {path}")
                sections.extend(builder.sections)
    except ParseError:
        raise
    except (KeyError, zipfile.BadZipFile, ElementTree.ParseError, OSError) as exc:
        raise ParseError(f"{name}: corrupt EPUB ({type(exc).__name__}: {exc})") from None
    return ParsedDocument(title=title or stem, sections=tuple(sections), format="epub")
