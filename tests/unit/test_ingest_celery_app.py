"""workers.app / workers.tasks wiring, without a running worker."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sirocco.errors import ConfigError, UnavailableError
from sirocco.settings import Settings
from workers.app import create_celery
from workers.tasks import EMBED_DOCUMENT, PARSE_DOCUMENT, enqueue_documents


def test_celery_contract(tmp_path: Path):
    settings = Settings(
        data_dir=tmp_path, celery={"task_time_limit_s": 100, "task_soft_time_limit_s": 90}
    )
    app = create_celery(settings)
    c = app.conf
    assert app.settings is settings
    assert c.broker_url == f"sqla+sqlite:///{tmp_path.resolve()}/broker.sqlite"
    assert (c.task_serializer, list(c.accept_content)) == ("json", ["json"])
    assert c.task_ignore_result and c.task_acks_late and c.task_reject_on_worker_lost
    assert c.task_acks_on_timeout is False  # a hard-killed task is redelivered
    assert c.worker_prefetch_multiplier == 1
    assert (c.task_time_limit, c.task_soft_time_limit) == (100, 90)
    assert c.broker_connection_retry_on_startup
    # SQLAlchemy transport options go to create_engine(): nothing else may be there.
    assert c.broker_transport_options == {"connect_args": {"timeout": 30}}
    assert {PARSE_DOCUMENT, EMBED_DOCUMENT} <= set(app.tasks)
    # Parsing and embedding have their own queues, so each can have its own workers.
    assert c.task_routes == {PARSE_DOCUMENT: {"queue": "sirocco.parse"},
                             EMBED_DOCUMENT: {"queue": "sirocco.embed"}}


def test_worker_children_are_replaced_past_a_memory_ceiling(tmp_path: Path):
    # A child bloated by one big document is replaced after its task (KiB).
    assert create_celery(Settings(data_dir=tmp_path)).conf.worker_max_memory_per_child == 2097152
    app = create_celery(Settings(data_dir=tmp_path, celery={"max_memory_per_child_kib": 1024}))
    assert app.conf.worker_max_memory_per_child == 1024
    off = create_celery(Settings(data_dir=tmp_path, celery={"max_memory_per_child_kib": 0}))
    assert off.conf.worker_max_memory_per_child is None


def test_queue_prefix_names_both_queues(tmp_path: Path):
    app = create_celery(Settings(data_dir=tmp_path, celery={"queue_prefix": "acme"}))
    assert app.conf.task_routes[PARSE_DOCUMENT] == {"queue": "acme.parse"}
    assert app.conf.task_routes[EMBED_DOCUMENT] == {"queue": "acme.embed"}


def test_redis_broker_gets_a_visibility_timeout_longer_than_a_task(tmp_path: Path):
    settings = Settings(
        data_dir=tmp_path,
        redis={"url": "redis://127.0.0.1:6379/3"},
        celery={"task_time_limit_s": 5000},
    )
    app = create_celery(settings)
    assert app.conf.broker_url == "redis://127.0.0.1:6379/3"
    assert app.conf.broker_transport_options["visibility_timeout"] > 5000
    # A short one brings a killed worker's task back sooner (tests, small files).
    short = Settings(data_dir=tmp_path, redis={"url": "redis://127.0.0.1:6379/3"},
                     celery={"visibility_timeout_s": 40})
    assert create_celery(short).conf.broker_transport_options["visibility_timeout"] == 40


def test_a_worker_refuses_an_unknown_stage(tmp_path: Path):
    from workers.app import run_worker

    expected = r"unknown stage\(s\) \['pasre'\]; valid: \['embed', 'parse'\]"
    with pytest.raises(ConfigError, match=expected):
        run_worker(Settings(data_dir=tmp_path), stages=["pasre"])


def test_no_heavy_imports_in_the_worker_parent(tmp_path: Path):
    # A prefork parent must not import torch: children would inherit its threads.
    import subprocess

    code = (
        "import sys; from sirocco.settings import Settings; from workers.app import create_celery;"
        f"create_celery(Settings(data_dir={str(tmp_path)!r}));"
        "print(sorted(m for m in ('torch', 'sentence_transformers', 'transformers') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.stdout.strip() == "[]"


def test_enqueue_with_broker_down_is_unavailable(tmp_path: Path):
    settings = Settings(data_dir=tmp_path, redis={"url": "redis://127.0.0.1:1/0"})
    app = create_celery(settings)
    app.conf.broker_transport_options = {"socket_connect_timeout": 1}
    with pytest.raises(UnavailableError, match="task queue is unreachable"):
        enqueue_documents(app, ["doc-1"])
