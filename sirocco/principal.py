"""Who a request acts as: one ``Principal`` through every layer.

The API resolves it from an API key (``sirocco.auth.keys.authenticate``);
retrieval filters by its ACL entries (``retrieval.store.SearchFilter``), tools
check their permissions against it (``llm.tools``), traces know its user by a
pseudonym. Nothing else carries a caller's identity.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sirocco.types import EVERYONE, group_acl_entry, user_acl_entry

DEFAULT_TENANT = "default"


@dataclass(frozen=True, slots=True)
class Principal:
    """A tenant's user (None when auth is off), their groups, whether they hold
    an admin key; ``key_id`` is the key it came from (rate limits), not part of
    its identity (two principals of different keys of one user are equal)."""

    tenant: str = DEFAULT_TENANT
    user: str | None = None
    groups: tuple[str, ...] = ()
    is_admin: bool = False
    key_id: str | None = field(default=None, compare=False)

    def acl_entries(self) -> list[str]:
        """The document ACL entries this principal matches: everyone's, its
        user's, its groups'."""
        out = [EVERYONE]
        if self.user:
            out.append(user_acl_entry(self.user))
        out += [group_acl_entry(g) for g in self.groups]
        return out
