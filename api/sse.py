"""Server-sent events: ``data: <json>\\n\\n`` frames ending with ``data: [DONE]``.

An error after the first byte cannot change the HTTP status any more; it is
sent as ``{"type": "error", ...}`` followed by ``[DONE]``. When the client goes
away the event source is closed, which aborts generation in the engine.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Send

from api.errors import error_payload

logger = logging.getLogger(__name__)

T = TypeVar("T")

DONE_FRAME = b"data: [DONE]\n\n"


def sse_frame(payload: Mapping[str, Any]) -> bytes:
    """One SSE frame carrying ``payload`` as compact JSON."""
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


async def sse_stream(
    events: AsyncIterator[T],
    *,
    encode: Callable[[T], Mapping[str, Any]],
    first: T | None = None,
    is_disconnected: Callable[[], Awaitable[bool]] | None = None,
) -> AsyncIterator[bytes]:
    """Frames for ``first`` and then every item of ``events``, then ``[DONE]``.

    ``events`` is always closed when this stream ends, however it ends.
    """
    disconnected = False
    try:
        if first is not None:
            yield sse_frame(encode(first))
        async for event in events:
            if is_disconnected is not None and await is_disconnected():
                disconnected = True
                logger.info("client disconnected; stopping the stream")
                break
            yield sse_frame(encode(event))
    except Exception as exc:
        logger.exception("stream failed after the first byte")
        payload = error_payload(exc)
        yield sse_frame({"type": "error", "message": payload["message"], "code": payload["code"]})
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
    if not disconnected:
        yield DONE_FRAME


class SSEResponse(StreamingResponse):
    """A streaming response that closes its body iterator even when the client
    disconnects (so generation stops now, not when the iterator is collected)."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[bytes], status_code: int = 200) -> None:
        super().__init__(
            content,
            status_code=status_code,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()
