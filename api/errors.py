"""One place that turns errors into HTTP responses.

Body: ``{"error": {"message", "type", "code"}}``; ``message`` is meant for
people, ``type`` is the error class name, ``code`` the stable machine code.
Under ``/v1/`` (the OpenAI-compatible API) the body is OpenAI's envelope
``{"error": {"message", "type", "param", "code"}}`` with OpenAI's type names
(``invalid_request_error``, ``authentication_error`` ...), and request
validation errors (malformed JSON included) are 400 as OpenAI answers them.
401 carries ``WWW-Authenticate: Bearer``; 429 carries ``Retry-After``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sirocco.errors import (
    AuthenticationError,
    DocumentTooLargeError,
    EngineError,
    InvalidInputError,
    NotFoundError,
    OverloadedError,
    ParseError,
    PermissionDeniedError,
    RateLimitedError,
    SiroccoError,
    UnavailableError,
    UnsupportedFormatError,
)

logger = logging.getLogger(__name__)

# Most specific first: the first isinstance match wins.
_STATUS: tuple[tuple[type[SiroccoError], int], ...] = (
    (NotFoundError, 404),
    (AuthenticationError, 401),
    (PermissionDeniedError, 403),
    (RateLimitedError, 429),
    (OverloadedError, 429),
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


#: Paths answered with OpenAI's error envelope.
OPENAI_PREFIX = "/v1/"
_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                 403: "permission_error", 404: "not_found_error", 413: "invalid_request_error",
                 415: "invalid_request_error", 422: "invalid_request_error",
                 429: "rate_limit_error"}


def openai_type(status: int) -> str:
    """OpenAI's error ``type`` for an HTTP status."""
    return _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def openai_error_body(message: str, status: int, code: str | None,
                      param: str | None = None) -> dict[str, Any]:
    """OpenAI's error envelope."""
    return {"error": {"message": message, "type": openai_type(status), "param": param,
                      "code": code}}


def _is_openai(request: Request) -> bool:
    return request.url.path.startswith(OPENAI_PREFIX)


def error_headers(exc: SiroccoError) -> dict[str, str] | None:
    """Headers a client needs to act on ``exc`` (how to authenticate, when to retry)."""
    if isinstance(exc, AuthenticationError):
        return {"WWW-Authenticate": "Bearer"}
    if isinstance(exc, (RateLimitedError, OverloadedError)):
        return {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
    return None


def sirocco_error_response(request: Request, exc: SiroccoError) -> JSONResponse:
    """The response for a domain error (usable from middleware too)."""
    status = status_for(exc)
    log = logger.warning if status >= 500 else logger.info
    log("request failed", extra={"path": request.url.path, "status": status, "code": exc.code,
                                 "error": exc.message})
    if _is_openai(request):
        payload = error_payload(exc)
        body = openai_error_body(payload["message"], status, payload["code"],
                                 getattr(exc, "param", None))
    else:
        body = {"error": error_payload(exc)}
    return JSONResponse(body, status_code=status, headers=error_headers(exc))


async def _sirocco_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SiroccoError)
    return sirocco_error_response(request, exc)


_LOCATIONS = ("body", "query", "path", "header", "cookie")


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    parts = []
    first_loc: str | None = None
    for err in exc.errors():
        where = tuple(err.get("loc", ()))
        # Only the first part says where (body, query string, path); a field
        # may be named "query" or "path" itself.
        if where and where[0] in _LOCATIONS:
            where = where[1:]
        loc = ".".join(str(p) for p in where)
        if err.get("type") == "json_invalid":
            loc = ""  # its loc is a character position, not a field
        first_loc = first_loc or loc or None
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    message = "; ".join(parts) or "invalid request"
    if _is_openai(request):
        return JSONResponse(openai_error_body(message, 400, "invalid_request", first_loc),
                            status_code=400)
    return JSONResponse(error_body(message, "RequestValidationError", "invalid_input"),
                        status_code=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if _is_openai(request):
        body = openai_error_body(str(exc.detail), exc.status_code, f"http_{exc.status_code}")
    else:
        body = error_body(str(exc.detail), "HTTPException", f"http_{exc.status_code}")
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error", exc_info=exc, extra={"path": request.url.path})
    payload = error_payload(exc)
    if _is_openai(request):
        return JSONResponse(openai_error_body(payload["message"], 500, payload["code"]),
                            status_code=500)
    return JSONResponse({"error": payload}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every error the same JSON envelope."""
    app.add_exception_handler(SiroccoError, _sirocco_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
