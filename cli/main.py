"""The ``sirocco`` command: the Typer app assembled from the command groups,
and ``main()``, the console script, which turns a ``SiroccoError`` into
``error: <message>`` and exit code 1."""

from __future__ import annotations

import typer

from cli._utils import err_console
from cli.ask import ask
from cli.db import db_app
from cli.engine import engine_app
from cli.eval import eval_app
from cli.index import index_app
from cli.ingest import ingest, sources_app
from cli.jobs import jobs_app
from cli.keys import keys_app
from cli.models import models_app
from cli.serve import serve, up, worker
from cli.traces import traces_app

app = typer.Typer(
    help="Sirocco: a self-hosted retrieval-augmented assistant.", no_args_is_help=True
)
# Listed in this order by `sirocco --help`: the commands, then the groups.
for command in (ask, serve, worker, ingest, up):
    app.command()(command)
for name, group in (("models", models_app), ("db", db_app), ("sources", sources_app),
                    ("jobs", jobs_app), ("eval", eval_app), ("index", index_app),
                    ("keys", keys_app), ("traces", traces_app), ("engine", engine_app)):
    app.add_typer(group, name=name)


def main() -> None:
    """Run the command line; a ``SiroccoError`` is printed as ``error: ...``, exit 1."""
    from sirocco.errors import SiroccoError

    try:
        app()
    except SiroccoError as exc:
        # Outside the app, typer.Exit is no exit but an exception: leave directly.
        err_console.print(f"[red]error:[/red] {exc.message}")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
