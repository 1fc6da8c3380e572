"""E-mail: RFC 822 ``.eml`` (stdlib ``email``) and Outlook ``.msg`` (OLE2, via olefile).

A message becomes a header block (From, To, Subject, Date) with the body, then
one or more sections per supported attachment, headed ``Attachment: <name>``.
"""

from __future__ import annotations

import email
import email.policy
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage, MIMEPart

from ingest.formats.base import Limits, ParsedDocument, Section, decode_text, tidy
from ingest.formats.html import html_sections
from sirocco.errors import ParseError, SiroccoError

logger = logging.getLogger(__name__)

#: Messages attached to messages are followed this deep, no further.
MAX_NESTING = 3
_HEADERS = ("From", "To", "Cc", "Subject", "Date")


@dataclass
class _Mail:
    headers: dict[str, str]
    body: str
    attachments: list[tuple[str, bytes]] = field(default_factory=list)


#: ``parse(data, name=..., limits=...)``: reads an attachment of any format.
#: ``ingest.parsers`` passes its own ``parse_bytes`` (injected, so this module
#: does not import the module that imports it).
AttachmentParser = Callable[..., ParsedDocument]


def parse_eml(data: bytes, *, name: str, stem: str, limits: Limits,
              parse: AttachmentParser) -> ParsedDocument:
    """An RFC 822 message: headers and body (text/plain preferred), then
    attachments, each read by ``parse``."""
    return _document(_read_eml(data, name=name), name=name, stem=stem, limits=limits,
                     fmt="eml", depth=0, parse=parse)


def parse_msg(data: bytes, *, name: str, stem: str, limits: Limits,
              parse: AttachmentParser) -> ParsedDocument:
    """An Outlook .msg message: headers and body, then attachments (``parse``)."""
    return _document(_read_msg(data, name=name), name=name, stem=stem, limits=limits,
                     fmt="msg", depth=0, parse=parse)


def _document(mail: _Mail, *, name: str, stem: str, limits: Limits, fmt: str,
              depth: int, parse: AttachmentParser) -> ParsedDocument:
    head = "\n".join(f"{k}: {v}" for k, v in mail.headers.items() if v)
    sections: list[Section] = []
    main = tidy(f"{head}\n\n{mail.body}")
    if mail.body.strip() or mail.attachments:
        sections.append(Section(main))
    for filename, payload in mail.attachments:
        sections.extend(_attachment(payload, filename=filename, parent=name, limits=limits,
                                    depth=depth, parse=parse))
    subject = mail.headers.get("Subject", "").strip()
    return ParsedDocument(title=subject or stem, sections=tuple(sections), format=fmt)


def _attachment(payload: bytes, *, filename: str, parent: str, limits: Limits,
                depth: int, parse: AttachmentParser) -> list[Section]:
    from ingest.formats.detect import detect_format

    label = f"Attachment: {filename}"
    where = f"{parent} » {filename}"
    try:
        fmt = detect_format(payload, name=filename)
        if fmt in ("eml", "msg"):
            if depth + 1 >= MAX_NESTING:
                logger.info("attached message nested too deep, skipped",
                            extra={"file": parent, "attachment": filename})
                return []
            reader = _read_eml if fmt == "eml" else _read_msg
            doc = _document(reader(payload, name=where), name=where, stem=filename,
                            limits=limits, fmt=fmt, depth=depth + 1, parse=parse)
        else:
            doc = parse(payload, name=where, limits=limits)
    except SiroccoError as exc:
        # One unreadable attachment (an image, a legacy .doc) must not sink the message.
        logger.info("attachment not indexed", extra={"file": parent, "attachment": filename,
                                                     "reason": exc.message})
        return []
    out = []
    for i, s in enumerate(doc.sections):
        text = f"{label}\n\n{s.text}" if i == 0 else s.text
        out.append(Section(text, page=s.page, headings=(label, *s.headings)))
    return out


# --- .eml ----------------------------------------------------------------------------------


def _read_eml(data: bytes, *, name: str) -> _Mail:
    try:
        if b"\x00" in data[:4096]:  # stored as UTF-16 and the like
            msg = email.message_from_string(decode_text(data, name=name),
                                            policy=email.policy.default)
        else:
            msg = email.message_from_bytes(data, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        headers = {h: _header(msg, h) for h in _HEADERS}
        body = ""
        part = msg.get_body(preferencelist=("plain", "html"))
        if part is not None:
            body = _part_text(part, name=name)
        attachments = []
        for att in msg.iter_attachments():
            filename = att.get_filename() or f"attachment.{att.get_content_subtype()}"
            if att.get_content_type() == "message/rfc822":
                inner = att.get_payload(0)
                payload = inner.as_bytes() if hasattr(inner, "as_bytes") else b""
                filename = att.get_filename() or "message.eml"
            else:
                payload = att.get_payload(decode=True) or b""
            if payload:
                attachments.append((filename, payload))
    except ParseError:
        raise
    except Exception as exc:  # the email package is lenient; this is real damage
        raise ParseError(f"{name}: corrupt e-mail ({type(exc).__name__}: {exc})") from None
    return _Mail(headers, body, attachments)


def _header(msg: EmailMessage, key: str) -> str:
    try:
        return " ".join(str(msg.get(key, "") or "").split())
    except Exception:  # a malformed header costs only that header
        return ""


def _part_text(part: MIMEPart, *, name: str) -> str:
    try:
        content = part.get_content()
    except (LookupError, ValueError):  # unknown charset: decode it ourselves
        payload = part.get_payload(decode=True)
        content = decode_text(payload if isinstance(payload, bytes) else b"", name=name)
    if isinstance(content, bytes):
        content = decode_text(content, name=name)
    if part.get_content_subtype() == "html":
        builder, _ = html_sections(content, name=name)
        return "\n\n".join(s.text for s in builder.sections)
    return str(content)


# --- .msg (Outlook, OLE2) ---------------------------------------------------------------

_MSG_PROPS = {  # MAPI property tag (hex) -> header
    "0C1A": "From", "0E04": "To", "0E03": "Cc", "0037": "Subject",
}
_DATE_LINE = re.compile(r"^Date:[ \t]*(.+)$", re.M | re.I)
_SENDER_ADDR = "5D01"  # PR_SENDER_SMTP_ADDRESS


def _read_msg(data: bytes, *, name: str) -> _Mail:
    import olefile

    try:
        ole = olefile.OleFileIO(data)
    except Exception as exc:
        raise ParseError(f"{name}: corrupt Outlook message ({exc})") from None
    try:
        def prop(tag: str, storage: str = "") -> str:
            for kind, codec in (("001F", "utf-16-le"), ("001E", "cp1252")):
                path = f"{storage}__substg1.0_{tag}{kind}"
                if ole.exists(path):
                    return ole.openstream(path).read().decode(codec, "replace").rstrip("\x00")
            return ""

        headers = {h: prop(tag) for tag, h in _MSG_PROPS.items()}
        address = prop(_SENDER_ADDR)
        if address and address not in headers["From"]:
            headers["From"] = f"{headers['From']} <{address}>".strip()
        date = _DATE_LINE.search(prop("007D"))
        headers["Date"] = date.group(1).strip() if date else ""
        headers = {h: headers.get(h, "") for h in _HEADERS}
        body = prop("1000")
        if not body.strip() and ole.exists("__substg1.0_10130102"):
            html = ole.openstream("__substg1.0_10130102").read()
            builder, _ = html_sections(html, name=name)
            body = "\n\n".join(s.text for s in builder.sections)
        attachments = []
        for storage in sorted({e[0] for e in ole.listdir() if e[0].startswith("__attach")}):
            prefix = f"{storage}/"
            filename = prop("3707", prefix) or prop("3704", prefix) or "attachment"
            if ole.exists(f"{prefix}__substg1.0_37010102"):
                attachments.append(
                    (filename, ole.openstream(f"{prefix}__substg1.0_37010102").read()))
    except ParseError:
        raise
    except Exception as exc:
        raise ParseError(f"{name}: corrupt Outlook message ({type(exc).__name__}: {exc})") from None
    finally:
        ole.close()
    return _Mail(headers, body, attachments)
