"""API keys: creation, listing, revocation, authentication, bootstrap admin.

A key is ``sk-sirocco-`` followed by 43 URL-safe characters (256 random bits).
Only its SHA-256 is stored, with the key's first characters (``prefix``) so a
request's key is found by an indexed lookup and then compared in constant time
(``hmac.compare_digest``). The full key is shown once, when created.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from sirocco.auth.models import ApiKey, Group, Tenant, User, user_groups
from sirocco.db import utcnow
from sirocco.errors import AuthenticationError, InvalidInputError, NotFoundError
from sirocco.principal import DEFAULT_TENANT, Principal

logger = logging.getLogger(__name__)

KEY_PREFIX = "sk-sirocco-"
#: Characters of the random part kept visible in ``ApiKey.prefix``.
VISIBLE_CHARS = 8
BOOTSTRAP_USER = "admin"
_MAX_NAME = 255


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A key as listings show it (never the key itself)."""

    id: str
    prefix: str
    tenant: str
    user: str
    groups: tuple[str, ...]
    is_admin: bool
    name: str | None
    created_at: datetime
    revoked_at: datetime | None


def hash_key(raw: str) -> str:
    """The hex SHA-256 stored for a key."""
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def _visible(raw: str) -> str:
    return raw[: len(KEY_PREFIX) + VISIBLE_CHARS]


def _check_name(kind: str, value: str) -> str:
    value = value.strip()
    if not value or len(value) > _MAX_NAME or "," in value:
        raise InvalidInputError(f"invalid {kind} name {value!r}", param=kind)
    return value


def _tenant(session: Session, tenant: str) -> str:
    tenant = _check_name("tenant", tenant)
    if session.get(Tenant, tenant) is None:
        session.add(Tenant(id=tenant))
        session.flush()
    return tenant


def _group(session: Session, tenant: str, name: str) -> Group:
    name = _check_name("group", name)
    group = session.scalar(select(Group).where(Group.tenant == tenant, Group.name == name))
    if group is None:
        group = Group(tenant=tenant, name=name)
        session.add(group)
    return group


def _user(session: Session, tenant: str, name: str) -> User:
    name = _check_name("user", name)
    user = session.scalar(select(User).where(User.tenant == tenant, User.name == name))
    if user is None:
        user = User(tenant=tenant, name=name)
        session.add(user)
        session.flush()
    return user


def create_key(
    *,
    session: Session,
    user: str,
    groups: Sequence[str] | None = None,
    tenant: str = DEFAULT_TENANT,
    admin: bool = False,
    name: str | None = None,
) -> tuple[KeyInfo, str]:
    """A new key for ``user`` of ``tenant`` (both created if new); returns its
    listing and the key itself, which is not stored and cannot be shown again.

    ``groups``, when given, become the user's groups (for all their keys)."""
    tenant = _tenant(session, tenant)
    owner = _user(session, tenant, user)
    if groups is not None:
        owner.groups = [_group(session, tenant, g) for g in dict.fromkeys(groups) if g.strip()]
    raw = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(user=owner, prefix=_visible(raw), key_hash=hash_key(raw), is_admin=admin,
                 name=name)
    session.add(key)
    session.flush()
    logger.info("api key created", extra={"key_id": key.id, "tenant": tenant, "user": owner.name,
                                          "admin": admin})
    return _info(key), raw


def _info(key: ApiKey) -> KeyInfo:
    return KeyInfo(id=key.id, prefix=key.prefix, tenant=key.user.tenant, user=key.user.name,
                   groups=tuple(sorted(g.name for g in key.user.groups)), is_admin=key.is_admin,
                   name=key.name, created_at=key.created_at, revoked_at=key.revoked_at)


def list_keys(*, session: Session, tenant: str | None = None,
              include_revoked: bool = True) -> list[KeyInfo]:
    """Keys (of one tenant when given), oldest first."""
    query = select(ApiKey).join(ApiKey.user).order_by(ApiKey.created_at, ApiKey.id)
    if tenant is not None:
        query = query.where(User.tenant == tenant)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    return [_info(k) for k in session.scalars(query).unique()]


def revoke_key(ref: str, *, session: Session, tenant: str | None = None) -> KeyInfo:
    """Revoke a key by id or visible prefix (within ``tenant`` when given);
    idempotent. ``NotFoundError`` when no key (or more than one) matches."""
    query = select(ApiKey).join(ApiKey.user).where(
        (ApiKey.id == ref) | (ApiKey.prefix == ref))
    if tenant is not None:
        query = query.where(User.tenant == tenant)
    found = list(session.scalars(query).unique())
    if len(found) != 1:
        raise NotFoundError(f"no single API key matches {ref!r}")
    key = found[0]
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        logger.info("api key revoked", extra={"key_id": key.id})
    return _info(key)


def authenticate(raw: str, *, session: Session) -> Principal:
    """The principal of a valid, unrevoked key; ``AuthenticationError`` otherwise
    (the same message for unknown and revoked keys). One query: the keys of the
    visible prefix with their user and the user's groups (a row per group),
    read as plain rows; every request pays it."""
    invalid = AuthenticationError("invalid API key")
    raw = raw.strip()
    if not raw.startswith(KEY_PREFIX) or len(raw) < len(KEY_PREFIX) + VISIBLE_CHARS:
        raise invalid
    digest = hash_key(raw)
    rows = session.execute(
        select(ApiKey.id, ApiKey.key_hash, ApiKey.is_admin, ApiKey.revoked_at, User.tenant,
               User.name, Group.name)
        .join(User, User.id == ApiKey.user_id)
        .outerjoin(user_groups, user_groups.c.user_id == User.id)
        .outerjoin(Group, Group.id == user_groups.c.group_id)
        .where(ApiKey.prefix == _visible(raw))).all()
    found = [row for row in rows if hmac.compare_digest(row[1], digest)]
    if not found or found[0][3] is not None:
        raise invalid
    key_id, _, is_admin, _, tenant, user, _ = found[0]
    groups = tuple(sorted({row[6] for row in found if row[6] is not None}))
    return Principal(tenant=tenant, user=user, groups=groups, is_admin=bool(is_admin),
                     key_id=key_id)


def has_admin_key(*, session: Session) -> bool:
    """Whether any unrevoked admin key exists."""
    return session.scalar(select(ApiKey.id).where(
        ApiKey.is_admin.is_(True), ApiKey.revoked_at.is_(None)).limit(1)) is not None


def ensure_bootstrap_admin(*, session: Session) -> str | None:
    """Create an admin key for user "admin" of the default tenant when no admin
    key exists; returns the new key (to print once), or None."""
    if has_admin_key(session=session):
        return None
    _, raw = create_key(session=session, user=BOOTSTRAP_USER, tenant=DEFAULT_TENANT, admin=True,
                        name="bootstrap")
    return raw
