"""Authentication and authorization of API requests.

Every router but health is mounted with ``Depends(get_principal)``: a request
must carry an API key (``Authorization: Bearer <key>`` or ``X-API-Key: <key>``),
which resolves to a ``Principal`` (tenant, user, groups, admin flag) and takes
one token of the key's rate-limit bucket. A key that fails takes one token of
its client address's bucket of failed keys; while that bucket is empty the
address is refused (429) before any key it sends is checked, so guessing keys
is throttled (``auth.invalid_key_per_minute`` / ``invalid_key_burst``). Both
buckets are shared across processes through Redis when ``redis.url`` is set,
and per process on the embedded default (``api.ratelimit``). The client
address is the caller's only if uvicorn trusts the proxy's ``X-Forwarded-For``
(from 127.0.0.1 by default; a proxy elsewhere needs uvicorn's
``FORWARDED_ALLOW_IPS``), else every caller shares the proxy's bucket.
Admin-only routers use ``Depends(require_admin)``. Routes read the caller
through ``PrincipalDep`` (FastAPI caches the dependency: one lookup per request).

With ``auth.enabled`` off (dev and tests only; refused in prod) every request
is ``ANONYMOUS``: an admin of the "default" tenant.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from api.deps import ServicesDep, SettingsDep
from api.ratelimit import RateLimiter, make_rate_limiter
from sirocco.auth.keys import authenticate
from sirocco.db import session_scope
from sirocco.errors import AuthenticationError, PermissionDeniedError
from sirocco.principal import DEFAULT_TENANT, Principal
from sirocco.settings import Settings

ANONYMOUS = Principal(tenant=DEFAULT_TENANT, user=None, groups=(), is_admin=True)
MISSING_KEY = ("missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>' "
               "(create one with `sirocco keys create`)")


def make_limiter(settings: Settings) -> RateLimiter:
    """The per-key limiter ``settings.auth`` describes."""
    return make_rate_limiter(settings, per_minute=settings.auth.rate_limit_per_minute,
                             burst=settings.auth.rate_limit_burst, scope="key",
                             subject="this API key")


def make_invalid_key_limiter(settings: Settings) -> RateLimiter:
    """The limiter of failed keys per client address ``settings.auth`` describes."""
    return make_rate_limiter(settings, per_minute=settings.auth.invalid_key_per_minute,
                             burst=settings.auth.invalid_key_burst, scope="invalid-key",
                             subject="invalid API keys from this address")


# Declared as security schemes, so the OpenAPI schema documents both ways;
# auto_error=False: a missing key is our AuthenticationError, in our envelope.
_bearer = HTTPBearer(auto_error=False, description="An API key: `Bearer sk-sirocco-...`")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key")


def get_principal(
    request: Request,
    services: ServicesDep,
    settings: SettingsDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header: Annotated[str | None, Depends(_header)],
) -> Principal:
    """The caller of this request; ``AuthenticationError`` (401) without a valid
    key, ``RateLimitedError`` (429) when the key's bucket, or the client address's
    bucket of failed keys, is empty."""
    if not settings.auth.enabled:
        return ANONYMOUS
    raw = (bearer.credentials.strip() if bearer else "") or (header or "").strip() or None
    if raw is None:
        raise AuthenticationError(MISSING_KEY)
    invalid: RateLimiter | None = getattr(request.app.state, "invalid_key_limiter", None)
    address = request.client.host if request.client else "unknown"
    if invalid is not None:
        # Before the lookup: a blocked address learns nothing, not even a right guess.
        invalid.check(address)
    try:
        with session_scope(services.session_factory) as session:
            principal = authenticate(raw, session=session)
    except AuthenticationError:
        if invalid is not None:
            invalid.acquire(address)
        raise
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None and principal.key_id is not None:
        limiter.acquire(principal.key_id)
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require_admin(principal: PrincipalDep) -> Principal:
    """The caller, if it holds an admin key; ``PermissionDeniedError`` (403) otherwise."""
    if not principal.is_admin:
        raise PermissionDeniedError("this needs an admin API key")
    return principal


AdminDep = Annotated[Principal, Depends(require_admin)]
