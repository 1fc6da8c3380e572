"""Routes of the OpenAI-compatible API: ``GET /v1/models``, ``POST /v1/chat/completions``.

Errors (bad input, unknown model, missing key, overload) use OpenAI's envelope
(see ``api.errors``); the app mounts this router behind the API-key dependency.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from fastapi import APIRouter, Request

from api.auth import PrincipalDep
from api.deps import ServicesDep, SettingsDep
from api.openai.protocol import ChatCompletion, ChatCompletionRequest, ErrorResponse, ModelList
from api.openai.serving import (
    complete,
    list_models,
    prepare,
    served_model,
    stream_chunks,
)
from api.sse import SSEResponse
from assistant.schemas import AnswerEvent
from llm.admission import hold_while_streaming

router = APIRouter(prefix="/v1", tags=["openai"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": what} for code, what in (
        (400, "Invalid request: malformed JSON, limits, tool schema"),
        (401, "Missing, unknown or revoked API key"),
        (404, "Unknown model"),
        (429, "Rate limit of the key, or the server at capacity (see Retry-After)"),
    )
}


@router.get("/models", response_model=ModelList, responses=_ERRORS)
def models(services: ServicesDep, settings: SettingsDep) -> ModelList:
    """The served model (one)."""
    return list_models(settings, services.engine)


async def _prepend(first: AnswerEvent | None, events: AsyncGenerator[AnswerEvent, None]
                   ) -> AsyncGenerator[AnswerEvent, None]:
    try:
        if first is not None:
            yield first
        async for event in events:
            yield event
    finally:
        await events.aclose()


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={**_ERRORS, 200: {"description": "A chat.completion, or text/event-stream of "
                                               "chat.completion.chunk when stream is true",
                                "content": {"text/event-stream": {}}}},
)
async def chat_completions(
    body: ChatCompletionRequest,
    request: Request,
    services: ServicesDep,
    settings: SettingsDep,
    principal: PrincipalDep,
) -> Any:
    """OpenAI chat completions answered from the caller's documents (RAG on by
    default; ``sirocco.rag=false`` for plain chat). Sources come back in the
    ``sirocco`` field; client ``tools`` are passed to the model and its calls
    returned as ``tool_calls``."""
    answer = services.assistant.stream_answer(
        prepare(body, settings=settings, engine=services.engine), principal)
    model = served_model(settings, services.engine)
    # At capacity (in all or for the tenant): 429 + Retry-After now, rather than
    # a queue the client times out in.
    slot = await services.limiter.acquire(principal.tenant)
    try:
        if not body.stream:
            with slot:
                return await complete(answer, model=model)
        events = hold_while_streaming(answer, slot)
        # Failures before the first event (retrieval down, prompt too long) keep a real status.
        first = await anext(events, None)
    except BaseException:
        slot.release()
        raise
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return SSEResponse(stream_chunks(_prepend(first, events), model=model,
                                     include_usage=include_usage,
                                     is_disconnected=request.is_disconnected))
