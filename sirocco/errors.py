"""Domain errors. Services raise these; the API maps them to HTTP once.

    SiroccoError
    ├── ConfigError              settings or environment cannot work
    │   └── ModelCheckError          a bundled model misses its reference answers here
    ├── NotFoundError            a document, job, trace ... does not exist
    │   └── ModelNotFoundError       a request names a model this server does not serve
    ├── InvalidInputError        the caller sent something we refuse
    │   ├── UnsupportedFormatError   no parser for this file type
    │   ├── DocumentTooLargeError    over the configured size limit
    │   └── ExportInvalidError       an exported record fails a fine-tuning validator
    ├── ParseError               a file could not be read (corrupt, encrypted, empty)
    ├── AuthenticationError      no API key, or an unknown or revoked one
    ├── PermissionDeniedError    a valid key that may not do this (not an admin)
    ├── RateLimitedError         this key sent too many requests; ``retry_after_s``
    ├── UnavailableError         a backing service is down or busy (transient)
    │   ├── StoreBusyError           embedded Qdrant held by another process too long
    │   └── OverloadedError          too many generations in flight; ``retry_after_s``
    └── EngineError              the LLM engine failed while generating
"""

from __future__ import annotations


class SiroccoError(Exception):
    """Base of every error Sirocco raises on purpose."""

    #: Short machine-readable code, stable across releases.
    code = "sirocco_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: The request field at fault, when there is one (OpenAI's ``param``).
        self.param = param


class ConfigError(SiroccoError):
    code = "config_error"


class ModelCheckError(ConfigError):
    code = "model_check_failed"


class NotFoundError(SiroccoError):
    code = "not_found"


class ModelNotFoundError(NotFoundError):
    code = "model_not_found"


class InvalidInputError(SiroccoError):
    code = "invalid_input"


class UnsupportedFormatError(InvalidInputError):
    code = "unsupported_format"


class DocumentTooLargeError(InvalidInputError):
    code = "document_too_large"


class ExportInvalidError(InvalidInputError):
    code = "export_invalid"


class ParseError(SiroccoError):
    code = "parse_error"


class AuthenticationError(SiroccoError):
    code = "invalid_api_key"


class PermissionDeniedError(SiroccoError):
    code = "permission_denied"


class RateLimitedError(SiroccoError):
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        #: Seconds until the key may send again (the ``Retry-After`` header).
        self.retry_after_s = retry_after_s


class UnavailableError(SiroccoError):
    code = "unavailable"


class StoreBusyError(UnavailableError):
    code = "store_busy"


class OverloadedError(UnavailableError):
    """Every generation slot is taken: answered at once (429) instead of queueing."""

    code = "overloaded"

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        #: Seconds a client should wait before trying again (``Retry-After``).
        self.retry_after_s = retry_after_s


class EngineError(SiroccoError):
    code = "engine_error"
