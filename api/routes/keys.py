"""API keys of the admin's tenant: list, create, revoke (admin key only)."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter

from api.auth import AdminDep
from api.deps import ServicesDep
from api.schemas import ERROR_RESPONSES, KeyCreate, KeyCreated, KeyPublic
from sirocco.auth.keys import create_key, list_keys, revoke_key
from sirocco.db import session_scope

router = APIRouter(tags=["keys"], responses=ERROR_RESPONSES)


@router.get("/api/keys", response_model=list[KeyPublic])
def get_keys(services: ServicesDep, admin: AdminDep) -> list[KeyPublic]:
    """The tenant's keys (revoked ones too), oldest first."""
    with session_scope(services.session_factory) as session:
        return [KeyPublic.model_validate(asdict(k))
                for k in list_keys(session=session, tenant=admin.tenant)]


@router.post("/api/keys", status_code=201, response_model=KeyCreated)
def post_key(body: KeyCreate, services: ServicesDep, admin: AdminDep) -> KeyCreated:
    """Create a key; the response holds the key itself, shown only this once."""
    with session_scope(services.session_factory) as session:
        info, raw = create_key(session=session, user=body.user, groups=body.groups,
                               tenant=admin.tenant, admin=body.admin, name=body.name)
    return KeyCreated.model_validate({**asdict(info), "key": raw})


@router.delete("/api/keys/{ref}", response_model=KeyPublic)
def delete_key(ref: str, services: ServicesDep, admin: AdminDep) -> KeyPublic:
    """Revoke a key (by id or visible prefix); requests with it get 401 from now on."""
    with session_scope(services.session_factory) as session:
        return KeyPublic.model_validate(asdict(revoke_key(ref, session=session,
                                                          tenant=admin.tenant)))
