"""Which format a file is, from its content first and its extension second.

Also the checks that run before a parser touches the content: zip bombs and
encrypted or legacy OLE2 (Office 97-2003) containers.
"""

from __future__ import annotations

import codecs
import io
import logging
import re
import zipfile
from pathlib import Path

from ingest.formats.base import MB, Limits
from sirocco.errors import DocumentTooLargeError, ParseError, UnsupportedFormatError

logger = logging.getLogger(__name__)

#: Extensions we read, by format. Content detection wins over the extension.
EXTENSIONS: dict[str, tuple[str, ...]] = {
    "md": (".md", ".markdown"),
    "txt": (".txt", ".text"),
    "html": (".html", ".htm", ".xhtml"),
    "pdf": (".pdf",),
    "docx": (".docx",),
    "pptx": (".pptx",),
    "xlsx": (".xlsx",),
    "odt": (".odt",),
    "csv": (".csv", ".tsv"),
    "json": (".json",),
    "eml": (".eml",),
    "msg": (".msg",),
    "epub": (".epub",),
    "rtf": (".rtf",),
}
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(e for exts in EXTENSIONS.values() for e in exts)
ZIP_FORMATS = frozenset({"docx", "pptx", "xlsx", "odt", "epub"})
SUPPORTED_HINT = (
    "supported formats: Markdown (.md), text (.txt), HTML (.html), PDF (.pdf), "
    "Word (.docx), PowerPoint (.pptx), Excel (.xlsx), OpenDocument (.odt), CSV (.csv), "
    "JSON (.json), e-mail (.eml, .msg), EPUB (.epub), RTF (.rtf)"
)
_KIND = {
    "docx": "Word",
    "pptx": "PowerPoint",
    "xlsx": "Excel",
    "odt": "OpenDocument",
    "epub": "EPUB",
    "msg": "Outlook message",
}
_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_LEGACY = {  # OLE2 stream that identifies a legacy binary Office file
    "WordDocument": "legacy binary Word 97-2003 .doc is not supported; save as .docx",
    "Workbook": "legacy binary Excel 97-2003 .xls is not supported; save as .xlsx",
    "Book": "legacy binary Excel 5.0/95 .xls is not supported; save as .xlsx",
    "PowerPoint Document": "legacy binary PowerPoint 97-2003 .ppt is not supported; "
    "save as .pptx",
}
_ODF_MIMETYPES = {
    "application/vnd.oasis.opendocument.text": "odt",
    "application/epub+zip": "epub",
}
_HTML_SNIFF = re.compile(rb"^\s*(<!--.*?-->\s*)*<(!doctype\s+html|html|head|body)\b", re.I | re.S)


def detect_format(data: bytes, *, name: str) -> str:
    """One of the keys of ``EXTENSIONS``; content decides before the extension.

    Raises ``UnsupportedFormatError`` for types we do not read (including legacy
    binary Office files) and ``ParseError`` for a file whose extension promises a
    format its content does not have, or a password-protected Office file."""
    ext = Path(name).suffix.lower()
    by_ext = next((fmt for fmt, exts in EXTENSIONS.items() if ext in exts), None)
    # The PDF spec allows junk before the header within the first 1024 bytes.
    if b"%PDF-" in data[:1024]:
        return "pdf"
    if data.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _zip_format(data, name=name, by_ext=by_ext)
    if data.startswith(_OLE2):
        return _ole_format(data, name=name)
    if data.lstrip()[:5] == b"{\\rtf":
        return "rtf"
    if by_ext == "pdf":
        raise ParseError(f"{name}: corrupt PDF (no %PDF header)")
    if by_ext in ZIP_FORMATS:
        raise ParseError(f"{name}: corrupt {_KIND[by_ext]} file (not a zip archive)")
    if by_ext == "msg":
        raise ParseError(f"{name}: corrupt Outlook message (not an OLE2 file)")
    if by_ext == "rtf":
        raise ParseError(f"{name}: corrupt RTF file (no {{\\rtf header)")
    if by_ext is not None:
        return by_ext
    if _HTML_SNIFF.match(data[:4096]):
        return "html"
    if ext == "" and _looks_textual(data):
        return "txt"
    raise UnsupportedFormatError(
        f"{name}: unsupported file type {ext or '(no extension, binary content)'}; "
        f"{SUPPORTED_HINT}"
    )


def check_zip(data: bytes, *, name: str, limits: Limits) -> None:
    """Refuse archives that would expand past the limits (zip bombs), before any parser
    decompresses them. Raises ``DocumentTooLargeError`` or ``ParseError`` (corrupt)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ParseError(f"{name}: corrupt zip container ({exc})") from None
    expanded = sum(i.file_size for i in infos)
    compressed = sum(i.compress_size for i in infos) or 1
    if expanded > limits.max_zip_expanded_bytes:
        raise DocumentTooLargeError(
            f"{name}: expands to {expanded / MB:.0f} MB when unpacked; the limit is "
            f"{limits.max_zip_expanded_bytes / MB:g} MB"
        )
    # Tiny archives can have big ratios innocently (a few KB of repeated XML).
    if expanded > MB and expanded / compressed > limits.max_zip_ratio:
        raise DocumentTooLargeError(
            f"{name}: refused as a possible zip bomb: it expands {expanded / compressed:.0f}x "
            f"(limit {limits.max_zip_ratio:g}x)"
        )


def _zip_format(data: bytes, *, name: str, by_ext: str | None) -> str:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = set(zf.namelist())
            mimetype = ""
            if "mimetype" in names and zf.getinfo("mimetype").file_size < 200:
                mimetype = zf.read("mimetype").decode("ascii", "replace").strip()
    except (zipfile.BadZipFile, OSError, ValueError, RuntimeError) as exc:
        kind = _KIND.get(by_ext or "", "zip")
        raise ParseError(f"{name}: corrupt {kind} file ({exc})") from None
    if mimetype in _ODF_MIMETYPES:
        return _ODF_MIMETYPES[mimetype]
    if "[Content_Types].xml" in names:
        for prefix, fmt in (("word/", "docx"), ("ppt/", "pptx"), ("xl/", "xlsx")):
            if any(n.startswith(prefix) for n in names):
                return fmt
    if "META-INF/container.xml" in names and by_ext == "epub":
        return "epub"
    if by_ext in ZIP_FORMATS:
        inner = {"docx": "word/document.xml", "pptx": "ppt/presentation.xml",
                 "xlsx": "xl/workbook.xml", "odt": "content.xml", "epub": "mimetype"}[by_ext]
        raise ParseError(f"{name}: corrupt {_KIND[by_ext]} file (no {inner} inside)")
    what = f"OpenDocument type {mimetype}" if mimetype else "a zip archive of no known format"
    raise UnsupportedFormatError(f"{name}: unsupported file type ({what}); {SUPPORTED_HINT}")


def _ole_format(data: bytes, *, name: str) -> str:
    import olefile

    try:
        ole = olefile.OleFileIO(data)
    except Exception as exc:  # olefile raises OSError, struct.error ... on damage
        raise ParseError(f"{name}: corrupt OLE2 (Office 97-2003) file ({exc})") from None
    try:
        streams = {"/".join(s) for s in ole.listdir(streams=True, storages=True)}
    finally:
        ole.close()
    if "EncryptedPackage" in streams:
        raise ParseError(f"{name}: password-protected Office file; remove the password first")
    if any(s.startswith("__substg1.0_") for s in streams):
        return "msg"
    for stream, message in _LEGACY.items():
        if stream in streams:
            raise UnsupportedFormatError(f"{name}: {message}")
    raise UnsupportedFormatError(
        f"{name}: unsupported file type (an OLE2 compound file, e.g. legacy Office 97-2003); "
        f"{SUPPORTED_HINT}"
    )


def _looks_textual(data: bytes) -> bool:
    head = data[:8192]
    if b"\x00" in head and not head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return False
    control = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13))
    return control <= len(head) // 100
