"""Domain errors. Services raise these; the API maps them to HTTP once.

    SiroccoError
    ├── ConfigError              settings or environment cannot work
    ├── NotFoundError            a document, job, trace ... does not exist
    ├── InvalidInputError        the caller sent something we refuse
    │   ├── UnsupportedFormatError   no parser for this file type
    │   └── DocumentTooLargeError    over the configured size limit
    ├── ParseError               a file could not be read (corrupt, encrypted, empty)
    ├── UnavailableError         a backing service is down or busy (transient)
    │   └── StoreBusyError           embedded Qdrant held by another process too long
    └── EngineError              the LLM engine failed while generating
"""

from __future__ import annotations


class SiroccoError(Exception):
    """Base of every error Sirocco raises on purpose."""

    #: Short machine-readable code, stable across releases.
    code = "sirocco_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(SiroccoError):
    code = "config_error"


class NotFoundError(SiroccoError):
    code = "not_found"


class InvalidInputError(SiroccoError):
    code = "invalid_input"


class UnsupportedFormatError(InvalidInputError):
    code = "unsupported_format"


class DocumentTooLargeError(InvalidInputError):
    code = "document_too_large"


class ParseError(SiroccoError):
    code = "parse_error"


class UnavailableError(SiroccoError):
    code = "unavailable"


class StoreBusyError(UnavailableError):
    code = "store_busy"


class EngineError(SiroccoError):
    code = "engine_error"
