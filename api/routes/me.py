"""Who the caller is (``GET /api/me``): what a client shows after sign-in.

The web UI signs in by calling this with the key the user typed; an OIDC
login would resolve to the same ``Principal`` and answer the same way.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from api.auth import PrincipalDep
from api.deps import SettingsDep
from api.routes.traces import is_reviewer
from api.schemas import ERROR_RESPONSES

router = APIRouter(tags=["me"], responses=ERROR_RESPONSES)


class MePublic(BaseModel):
    """The caller: tenant, user, groups, and what they may do beyond their own
    documents and answers (``is_admin``: manage sources, jobs, keys;
    ``is_reviewer``: read the tenant's traces, review feedback, export)."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"tenant": "default", "user": "ana", "groups": ["eng", "hr"], "is_admin": False,
         "is_reviewer": False}]})

    tenant: str
    user: str | None
    groups: list[str]
    is_admin: bool
    is_reviewer: bool


@router.get("/api/me", response_model=MePublic)
def me(principal: PrincipalDep, settings: SettingsDep) -> MePublic:
    """The caller's tenant, user, groups and roles (401 without a valid key)."""
    return MePublic(tenant=principal.tenant, user=principal.user,
                    groups=sorted(principal.groups), is_admin=principal.is_admin,
                    is_reviewer=is_reviewer(principal, settings))
