"""``sirocco keys``: API keys (create, list, revoke) in the configured database."""

from __future__ import annotations

from typing import Annotated

import typer

from cli._utils import console, err_console, fail, session_factory
from sirocco.settings import Settings, get_settings

keys_app = typer.Typer(help="API keys: users, groups, tenants.", no_args_is_help=True)


@keys_app.command("create")
def create(
    user: Annotated[str, typer.Option(help="The user the key acts as (ACL entry user:<name>).")],
    groups: Annotated[str | None, typer.Option(
        help="Comma-separated groups; they become the user's groups.")] = None,
    tenant: Annotated[str, typer.Option(help="The user's tenant.")] = "default",
    admin: Annotated[bool, typer.Option("--admin", help="May manage sources, jobs and keys.")]
    = False,
    name: Annotated[str | None, typer.Option(help="A label for the key.")] = None,
) -> None:
    """Create a key and print it once (only its SHA-256 is stored)."""
    from sirocco.auth.keys import create_key
    from sirocco.db import session_scope
    from sirocco.errors import SiroccoError

    group_list = None if groups is None else [g.strip() for g in groups.split(",") if g.strip()]
    try:
        with session_scope(session_factory(get_settings())) as session:
            info, raw = create_key(session=session, user=user, groups=group_list,
                                   tenant=tenant, admin=admin, name=name)
    except SiroccoError as exc:
        fail(exc.message)
    err_console.print(
        f"key {info.id} for {info.user}@{info.tenant} groups={','.join(info.groups) or '-'}"
        f"{' (admin)' if info.is_admin else ''}; shown only now:", markup=False)
    typer.echo(raw)


@keys_app.command("list")
def list_(tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None) -> None:
    """Every key (never the key itself: its visible prefix)."""
    from sirocco.auth.keys import list_keys
    from sirocco.db import session_scope

    with session_scope(session_factory(get_settings())) as session:
        keys = list_keys(session=session, tenant=tenant)
    # One tab-separated line per key: greppable, never wrapped.
    typer.echo("id\tprefix\ttenant\tuser\tgroups\tadmin\tcreated\trevoked")
    for k in keys:
        row = (k.id, k.prefix, k.tenant, k.user, ",".join(k.groups) or "-",
               "admin" if k.is_admin else "-", f"{k.created_at:%Y-%m-%dT%H:%M}",
               f"{k.revoked_at:%Y-%m-%dT%H:%M}" if k.revoked_at else "-")
        typer.echo("\t".join(row))


@keys_app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="The key's id or visible prefix.")]
           ) -> None:
    """Revoke a key: requests with it get 401 from now on."""
    from sirocco.auth.keys import revoke_key
    from sirocco.db import session_scope
    from sirocco.errors import SiroccoError

    try:
        with session_scope(session_factory(get_settings())) as session:
            info = revoke_key(key_id, session=session)
    except SiroccoError as exc:
        fail(exc.message)
    console.print(f"revoked {info.id} ({info.user}@{info.tenant})", markup=False)


def bootstrap_admin_key(settings: Settings) -> str | None:
    """A new admin key when the database has none (printed once by ``sirocco up``)."""
    from sirocco.auth.keys import ensure_bootstrap_admin
    from sirocco.db import session_scope

    with session_scope(session_factory(settings)) as session:
        return ensure_bootstrap_admin(session=session)
