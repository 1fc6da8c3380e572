"""The Alembic migrations build the schema the models describe, on SQLite and
PostgreSQL, and traces survive a round trip through it.

PostgreSQL: ``SIROCCO_TEST_DATABASE_URL`` (default: the local trust setup);
each run creates a fresh database and drops it afterwards. Unreachable ->
skipped, unless ``CI`` is set, then the test fails.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, make_url, text
from sqlalchemy.exc import OperationalError

import assistant.conversations  # noqa: F401
import assistant.pending  # noqa: F401
import ingest.models
import sirocco.auth.models  # noqa: F401
import sirocco.db
import traces.models  # noqa: F401
from sirocco.db import Base, make_engine, make_session_factory, session_scope, upgrade_database
from sirocco.settings import Settings, normalize_database_url
from tests.support import unavailable
from traces.recorder import TraceRecorder
from traces.repository import get_trace

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="module")
def pg_settings() -> Iterator[Settings]:
    base_url = os.environ.get("SIROCCO_TEST_DATABASE_URL", DEFAULT_PG_URL)
    admin_url = make_url(normalize_database_url(base_url))
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT",
                          connect_args={"connect_timeout": 5})
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        admin.dispose()
        reason = f"PostgreSQL unreachable at {admin_url.render_as_string()}: {exc.orig}"
        unavailable(reason)
    name = f"sirocco_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = admin_url.set(database=name).render_as_string(hide_password=False)
        yield Settings(env="test", db={"url": url})
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    if request.param == "sqlite":
        return Settings(env="test", data_dir=tmp_path)
    return request.getfixturevalue("pg_settings")


@pytest.fixture
def migrated(settings: Settings) -> Iterator[Settings]:
    upgrade_database(settings)
    yield settings
    # Leave the PostgreSQL database empty for the next parametrised test.
    _downgrade(settings, "base")


def _head() -> str:
    """The newest revision shipped (more are added over time)."""
    config = Config()
    config.set_main_option("script_location",
                           str(Path(sirocco.db.__file__).with_name("migrations")))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def _downgrade(settings: Settings, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location",
                           str(Path(sirocco.db.__file__).with_name("migrations")))
    engine = make_engine(settings)
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, revision)
    finally:
        engine.dispose()


def test_migrated_schema_matches_the_models(migrated: Settings) -> None:
    engine = make_engine(migrated)
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diffs = compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()
    assert {"documents", "traces", "alembic_version", "api_keys", "users", "groups",
            "tenants", "user_groups", "trace_spans", "trace_messages", "trace_tool_calls",
            "trace_retrieved_chunks", "tool_definitions", "feedback", "exports"} <= tables
    assert version == _head()
    assert diffs == [], f"models and migrations disagree; write a migration: {diffs}"


def test_upgrade_is_idempotent(migrated: Settings) -> None:
    upgrade_database(migrated)  # a second start of the app must not fail
    engine = make_engine(migrated)
    try:
        with engine.connect() as conn:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).all()
    finally:
        engine.dispose()
    assert [v for (v,) in versions] == [_head()]


def test_trace_and_document_round_trip(migrated: Settings) -> None:
    engine = make_engine(migrated)
    factory = make_session_factory(engine)
    try:
        recorder = TraceRecorder(factory)
        handle = recorder.start("Où est le café ?", tenant="acme", conversation_id="c-1")
        handle.mark_first_token()
        recorder.finish(
            handle,
            answer="Au deuxième étage [1].",
            retrieved=[{"chunk_id": "k1", "doc_id": "d1", "score": 0.91, "rank": 1}],
            prompt=[{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
            citations=[{"n": 1, "chunk_id": "k1", "inferred": False}],
            model="sirocco",
            prompt_tokens=120,
            completion_tokens=7,
        )
        with session_scope(factory) as session:
            session.add(ingest.models.Document(id="d1", source_path="/x/a.pdf", title="A"))
        with session_scope(factory) as session:
            trace = get_trace(session=session, trace_id=handle.trace_id)
            doc = session.get(ingest.models.Document, "d1")
            assert trace.status == "ok"
            assert trace.query == "Où est le café ?"
            assert trace.answer == "Au deuxième étage [1]."
            assert trace.retrieved == [{"chunk_id": "k1", "doc_id": "d1", "score": 0.91,
                                        "rank": 1}]
            assert trace.prompt[1] == {"role": "user", "content": "q"}
            assert trace.citations == [{"n": 1, "chunk_id": "k1", "inferred": False}]
            assert (trace.prompt_tokens, trace.completion_tokens) == (120, 7)
            assert trace.ttft_ms is not None and trace.latency_ms is not None
            assert (trace.tenant, trace.conversation_id) == ("acme", "c-1")
            assert doc is not None and (doc.status, doc.chunk_count) == ("queued", 0)
    finally:
        engine.dispose()


def test_downgrade_removes_the_tables(migrated: Settings) -> None:
    _downgrade(migrated, "base")
    engine = make_engine(migrated)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert not {"documents", "traces", "sources", "jobs", "job_items", "staged_chunks",
                "api_keys", "users", "groups", "tenants", "user_groups", "trace_spans",
                "feedback", "exports", "tool_definitions"} & tables


def test_db_upgrade_never_prints_the_password(postgres_schema_url: str) -> None:
    """`sirocco db upgrade` named the database by its full URL, password included."""
    import os
    import subprocess
    import sys

    from sqlalchemy.engine import make_url

    url = make_url(postgres_schema_url).set(password="s3cret-Pa55")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIROCCO_")}
    env.update({"SIROCCO_ENV": "test", "SIROCCO_DATABASE_URL":
                url.render_as_string(hide_password=False)})
    out = subprocess.run([sys.executable, "-m", "sirocco", "db", "upgrade"], env=env,
                         capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[2])
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "database at head" in text and "***" in text
    assert "s3cret-Pa55" not in text
