from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from api.deps import ServicesDep
from api.schemas import ChatRequest
from api.sse import SSEResponse, sse_stream
from assistant.schemas import AnswerEvent, AnswerResult

router = APIRouter(tags=["chat"])

TENANT = "default"  # until auth decides the tenant per caller


@router.post(
    "/api/chat",
    response_model=None,
    responses={200: {"description": "text/event-stream of answer events, or an AnswerResult "
                                    "when stream is false",
                     "content": {"text/event-stream": {}}}},
)
async def chat(
    body: ChatRequest, request: Request, services: ServicesDep
) -> Any:
    """Answer a question from the indexed documents, streamed as server-sent events."""
    kwargs: dict[str, Any] = {"tenant": TENANT, "top_k": body.top_k,
                              "conversation_id": body.conversation_id}
    if body.filters is not None:
        kwargs["filters"] = body.filters.to_search_filter()
    if not body.stream:
        result: AnswerResult = await services.assistant.answer(body.question, **kwargs)
        return result
    events = services.assistant.stream_answer(body.question, **kwargs)
    # Wait for the first event before sending headers: failures up to here
    # (retrieval down, engine refusing the prompt) get a real HTTP status.
    first = await anext(events, None)
    return SSEResponse(
        sse_stream(events, first=first, encode=AnswerEvent.to_wire,
                   is_disconnected=request.is_disconnected)
    )
