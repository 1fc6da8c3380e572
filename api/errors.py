"""One place that turns errors into HTTP responses.

Body: ``{"error": {"message", "type", "code"}}``; ``message`` is meant for
people, ``type`` is the error class name, ``code`` the stable machine code.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sirocco.errors import (
    DocumentTooLargeError,
    EngineError,
    InvalidInputError,
    NotFoundError,
    ParseError,
    SiroccoError,
    UnavailableError,
    UnsupportedFormatError,
)

logger = logging.getLogger(__name__)

# Most specific first: the first isinstance match wins.
_STATUS: tuple[tuple[type[SiroccoError], int], ...] = (
    (NotFoundError, 404),
    (DocumentTooLargeError, 413),
    (UnsupportedFormatError, 415),
    (InvalidInputError, 400),
    (ParseError, 422),
    (UnavailableError, 503),
    (EngineError, 502),
)


def status_for(exc: SiroccoError) -> int:
    """The HTTP status of a domain error (500 for anything unmapped)."""
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_body(message: str, type_name: str, code: str) -> dict[str, Any]:
    """The error envelope."""
    return {"error": {"message": message, "type": type_name, "code": code}}


def error_payload(exc: BaseException) -> dict[str, Any]:
    """The fields a client may see for ``exc``; unexpected errors stay opaque."""
    if isinstance(exc, SiroccoError):
        return {"message": exc.message, "type": type(exc).__name__, "code": exc.code}
    return {"message": "internal server error", "type": "InternalError",
            "code": "internal_error"}


async def _sirocco_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SiroccoError)
    status = status_for(exc)
    log = logger.warning if status >= 500 else logger.info
    log("request failed", extra={"path": request.url.path, "status": status, "code": exc.code,
                                 "error": exc.message})
    return JSONResponse({"error": error_payload(exc)}, status_code=status)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    message = "; ".join(parts) or "invalid request"
    return JSONResponse(error_body(message, "RequestValidationError", "invalid_input"),
                        status_code=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse(
        error_body(str(exc.detail), "HTTPException", f"http_{exc.status_code}"),
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error", exc_info=exc, extra={"path": request.url.path})
    return JSONResponse({"error": error_payload(exc)}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every error the same JSON envelope."""
    app.add_exception_handler(SiroccoError, _sirocco_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
