"""Tool calls with side effects that wait for their user (``assistant.pending``).

The native chat ends an answer with a ``tool_pending`` event when the model
calls such a tool; the user lists their pending calls and confirms (the tool
runs now, with their permissions) or rejects each. Only the caller who asked
sees or decides a call; for anyone else it does not exist (404).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict

from api.auth import PrincipalDep
from api.deps import ServicesDep
from api.schemas import ERROR_RESPONSES
from assistant.pending import PendingCallPublic, PendingCalls
from llm.tools import ToolResult
from sirocco.types import ToolCall

router = APIRouter(tags=["tool calls"], responses=ERROR_RESPONSES)


class Decision(BaseModel):
    """The user's answer to a pending call."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"approve": True}]})

    approve: bool


@router.get("/api/tool-calls", response_model=list[PendingCallPublic])
def list_tool_calls(
    services: ServicesDep, principal: PrincipalDep,
    status: Annotated[str | None, Query(
        pattern="^(pending|done|failed|rejected|expired|running)$")] = "pending",
) -> list[PendingCallPublic]:
    """The caller's tool calls waiting for a decision (or of another ``status``)."""
    return PendingCalls(services.session_factory).list(owner=principal, status=status)


@router.post("/api/tool-calls/{pending_id}", response_model=PendingCallPublic)
async def decide_tool_call(pending_id: str, body: Decision, services: ServicesDep,
                           principal: PrincipalDep) -> PendingCallPublic:
    """Confirm (``approve: true``: the tool runs now, with the caller's
    permissions checked again; its result comes back) or reject a pending
    call of the caller. 400 once it was decided."""
    async def run(call: ToolCall) -> ToolResult:
        return await services.assistant.run_confirmed(call, principal)

    return await PendingCalls(services.session_factory).decide(
        pending_id, approve=body.approve, owner=principal, run=run)
