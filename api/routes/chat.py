"""The native chat (``POST /api/chat``) and the caller's conversations."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response

from api.auth import PrincipalDep
from api.deps import ServicesDep, SettingsDep
from api.schemas import ERROR_RESPONSES, ChatRequest, ConversationRename
from api.sse import SSEResponse, sse_stream
from assistant.answers import collect_answer
from assistant.conversations import (
    ConversationDetail,
    Conversations,
    ConversationSummary,
    new_conversation_id,
)
from assistant.pending import PendingCalls
from assistant.schemas import AnswerEvent, AnswerResult
from llm.admission import hold_while_streaming
from sirocco.errors import InvalidInputError

router = APIRouter(tags=["chat"], responses=ERROR_RESPONSES)
_SSE_EXAMPLE = (
    'data: {"type": "delta", "text": "Economy class"}\n\n'
    'data: {"type": "delta", "text": " for flights under six hours [1]."}\n\n'
    'data: {"type": "done", "citations": [...], "sources": [...], "trace_id": "0c6f...", '
    '"conversation_id": "5b1d...", "finish_reason": "stop"}\n\n'
    "data: [DONE]\n\n")
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such conversation of the caller"}}


@router.post(
    "/api/chat",
    response_model=None,
    responses={200: {"model": AnswerResult,
                     "description": "text/event-stream of answer events (AnswerEvent: delta, "
                                    "tool_result, done or error, then [DONE]), or one "
                                    "AnswerResult when stream is false",
                     "content": {"text/event-stream": {"example": _SSE_EXAMPLE}}}},
)
async def chat(
    body: ChatRequest, request: Request, services: ServicesDep, principal: PrincipalDep,
    settings: SettingsDep,
) -> Any:
    """Answer a question from the indexed documents, streamed as server-sent events
    (or one ``AnswerResult`` with ``stream: false``); the turn is stored in the
    caller's conversation, whose earlier turns are the history."""
    limit = settings.api.max_question_chars
    if len(body.question) > limit:
        raise InvalidInputError(f"the question has {len(body.question)} characters; the limit "
                                f"is {limit}", param="question")
    conversations = Conversations(services.session_factory)
    conversation_id = body.conversation_id or new_conversation_id()
    history = await asyncio.to_thread(conversations.history, conversation_id, owner=principal,
                                      max_messages=settings.api.max_history_messages)
    answer_request = body.to_answer_request(conversation_id=conversation_id, history=history,
                                            default_tools=settings.assistant.default_tools)
    # The principal's tenant, user and groups are retrieval's ACL filter; calls
    # of tools with side effects end the answer and wait for the user.
    answer = conversations.remember(
        PendingCalls(services.session_factory).remember(
            services.assistant.stream_answer(answer_request, principal), owner=principal),
        conversation_id=conversation_id, question=body.question, owner=principal)
    # At capacity (in all or for the tenant): 429 + Retry-After now, rather than
    # a queue the client times out in.
    slot = await services.limiter.acquire(principal.tenant)
    try:
        if not body.stream:
            with slot:
                result: AnswerResult = await collect_answer(answer)
            return result
        # The slot is held until the stream closes (done, error or client gone).
        events = hold_while_streaming(answer, slot)
        # Wait for the first event before sending headers: failures up to here
        # (retrieval down, engine refusing the prompt) get a real HTTP status.
        first = await anext(events, None)
    except BaseException:
        slot.release()
        raise
    return SSEResponse(
        sse_stream(events, first=first, encode=AnswerEvent.to_wire,
                   is_disconnected=request.is_disconnected)
    )


@router.get("/api/conversations", response_model=list[ConversationSummary],
            tags=["conversations"])
def list_conversations(
    services: ServicesDep, principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[ConversationSummary]:
    """The caller's conversations, most recently active first."""
    return Conversations(services.session_factory).list(owner=principal, limit=limit,
                                                        offset=offset)


@router.get("/api/conversations/{conversation_id}", response_model=ConversationDetail,
            tags=["conversations"], responses=_NOT_FOUND)
def get_conversation(conversation_id: str, services: ServicesDep,
                     principal: PrincipalDep) -> ConversationDetail:
    """One of the caller's conversations with its turns (404 for anyone else's)."""
    return Conversations(services.session_factory).get(conversation_id, owner=principal)


@router.patch("/api/conversations/{conversation_id}", response_model=ConversationSummary,
              tags=["conversations"], responses=_NOT_FOUND)
def rename_conversation(conversation_id: str, body: ConversationRename, services: ServicesDep,
                        principal: PrincipalDep) -> ConversationSummary:
    """Rename one of the caller's conversations (404 for anyone else's; 400 for a
    blank title)."""
    return Conversations(services.session_factory).rename(conversation_id, owner=principal,
                                                          title=body.title)


@router.delete("/api/conversations/{conversation_id}", status_code=204,
               tags=["conversations"], responses=_NOT_FOUND)
async def delete_conversation(
    conversation_id: str, services: ServicesDep, principal: PrincipalDep,
    traces: Annotated[Literal["keep", "delete"], Query(
        description="keep (default): the answers' traces stay for review and export, "
                    "readable by you and the tenant's reviewers; delete: they go too, "
                    "with their feedback")] = "keep",
) -> Response:
    """Delete one of the caller's conversations and its turns, and with
    ``traces=delete`` the traces of its answers."""
    if traces == "delete" and services.recorder is not None:
        # Traces are written in the background: let the last ones land first.
        await asyncio.to_thread(services.recorder.flush, 5.0)
    await asyncio.to_thread(Conversations(services.session_factory).delete, conversation_id,
                            owner=principal, with_traces=traces == "delete")
    return Response(status_code=204)
