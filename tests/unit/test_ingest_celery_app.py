"""workers.app / workers.tasks wiring, without a running worker."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from sirocco.errors import ConfigError, UnavailableError
from sirocco.settings import Settings
from workers.app import create_celery
from workers.export_tasks import EXPORT_TRACES
from workers.tasks import EMBED_DOCUMENT, PARSE_DOCUMENT, enqueue_documents


def test_celery_contract(tmp_path: Path):
    settings = Settings(
        data_dir=tmp_path, celery={"task_time_limit_s": 100, "task_soft_time_limit_s": 90}
    )
    app = create_celery(settings)
    c = app.conf
    assert app.settings is settings
    # The embedded broker: kombu's SQL transport (our subclass reads the polling interval).
    assert c.broker_url == f"sqlite:///{tmp_path.resolve()}/broker.sqlite"
    assert c.broker_transport == "workers.sql_broker:Transport"
    assert (c.task_serializer, list(c.accept_content)) == ("json", ["json"])
    assert c.task_ignore_result and c.task_acks_late and c.task_reject_on_worker_lost
    assert c.task_acks_on_timeout is False  # a hard-killed task is redelivered
    assert c.worker_prefetch_multiplier == 1
    assert (c.task_time_limit, c.task_soft_time_limit) == (100, 90)
    assert c.broker_connection_retry_on_startup
    # SQLAlchemy transport options go to create_engine(): nothing else may be there.
    # polling_interval: kombu's virtual transport reads it (not create_engine()).
    assert c.broker_transport_options == {"connect_args": {"timeout": 30},
                                          "polling_interval": 0.05}
    assert {PARSE_DOCUMENT, EMBED_DOCUMENT} <= set(app.tasks)
    # Parsing, embedding and exports have their own queues, so each can have its
    # own workers and an export never waits behind an ingestion.
    assert c.task_routes == {PARSE_DOCUMENT: {"queue": "sirocco.parse"},
                             EMBED_DOCUMENT: {"queue": "sirocco.embed"},
                             EXPORT_TRACES: {"queue": "sirocco.exports"}}
    assert c.task_default_queue == "sirocco.parse"


def test_worker_children_are_replaced_past_a_memory_ceiling(tmp_path: Path):
    # A child bloated by one big document is replaced after its task (KiB).
    assert create_celery(Settings(data_dir=tmp_path)).conf.worker_max_memory_per_child == 2097152
    app = create_celery(Settings(data_dir=tmp_path, celery={"max_memory_per_child_kib": 1024}))
    assert app.conf.worker_max_memory_per_child == 1024
    off = create_celery(Settings(data_dir=tmp_path, celery={"max_memory_per_child_kib": 0}))
    assert off.conf.worker_max_memory_per_child is None


def test_queue_prefix_names_every_queue(tmp_path: Path):
    app = create_celery(Settings(data_dir=tmp_path, celery={"queue_prefix": "acme"}))
    assert app.conf.task_routes[PARSE_DOCUMENT] == {"queue": "acme.parse"}
    assert app.conf.task_routes[EMBED_DOCUMENT] == {"queue": "acme.embed"}
    assert app.conf.task_routes[EXPORT_TRACES] == {"queue": "acme.exports"}


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

    expected = r"unknown stage\(s\) \['pasre'\]; valid: \['embed', 'exports', 'parse'\]"
    with pytest.raises(ConfigError, match=expected):
        run_worker(Settings(data_dir=tmp_path), stages=["pasre"])


def test_worker_task_processes_get_sleeping_openmp_threads(tmp_path: Path, monkeypatch):
    from workers import app as worker_app

    started: list[list[str]] = []
    monkeypatch.setattr(worker_app.Celery, "worker_main", lambda self, argv: started.append(argv))
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    worker_app.run_worker(Settings(data_dir=tmp_path), stages=["embed"])
    assert started and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    # An operator's own choice stays.
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    worker_app.run_worker(Settings(data_dir=tmp_path), stages=["embed"])
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


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


def test_documents_are_sent_in_batches(tmp_path: Path):
    """``celery.parse_batch_docs`` documents a message: the broker's cost per
    message is paid once per batch, and each message names its documents."""
    from workers.recovery import sql_pending

    settings = Settings(data_dir=tmp_path, celery={"parse_batch_docs": 2})
    app = create_celery(settings)
    ids = [f"doc-{i}" for i in range(5)]
    task_ids = enqueue_documents(app, ids, job_id="job-1")
    assert len(task_ids) == 5 and len(set(task_ids)) == 3  # [0, 1], [2, 3], [4]
    assert task_ids[0] == task_ids[1] != task_ids[2] == task_ids[3] != task_ids[4]
    queues = [f"{settings.celery.queue_prefix}.parse"]
    assert sql_pending(settings.broker_url, queues) == {(PARSE_DOCUMENT, i) for i in ids}
    with app.connection_for_read() as conn:
        first = conn.default_channel.basic_get(queue=queues[0], no_ack=True)
        assert first is not None and first.decode()[0] == [["doc-0", "doc-1"], "job-1"]


def test_a_task_process_warms_its_stages_resources_in_the_background(tmp_path, monkeypatch):
    import threading
    import time

    from workers import resources

    built: list[str] = []
    loading = threading.Event()

    def slow_embedder(settings):
        loading.set()
        time.sleep(0.2)
        built.append("embedder")
        return object()

    monkeypatch.setattr(resources, "create_embedder", slow_embedder)
    monkeypatch.setattr(resources, "create_store", lambda s: built.append("store") or object())
    monkeypatch.setattr(resources, "load_chunk_tokenizer",
                        lambda s: built.append("tokenizer") or object())
    settings = Settings(data_dir=tmp_path)
    thread = resources.warm_resources(settings, ["embed"])
    assert loading.wait(5)
    # A task asking meanwhile waits for the warm-up's model, never loads a second one.
    res = resources.worker_resources(settings)
    assert res.embedder is not None and res.tokenizer is res.embedder
    thread.join(5)
    assert built == ["embedder", "store"]
    # A parse process loads only the tokenizer; an exports process nothing.
    parse_only = Settings(data_dir=tmp_path / "parse")
    resources.warm_resources(parse_only, ["parse"]).join(5)
    resources.warm_resources(Settings(data_dir=tmp_path / "x"), ["exports"]).join(5)
    assert built == ["embedder", "store", "tokenizer"]


def test_a_failed_warm_up_is_left_to_the_first_task(tmp_path, monkeypatch, caplog):
    from workers import resources

    def broken(settings):
        raise ConfigError("no model here")

    monkeypatch.setattr(resources, "load_chunk_tokenizer", broken)
    settings = Settings(data_dir=tmp_path)
    resources.warm_resources(settings, ["parse"]).join(5)
    assert "warming the worker's resources failed" in caplog.text
    with pytest.raises(ConfigError, match="no model here"):
        _ = resources.worker_resources(settings).tokenizer


@pytest.mark.parametrize(("pool", "signal_name"), [("prefork", "worker_process_init"),
                                                   ("solo", "worker_ready")])
def test_the_worker_warms_each_task_process_as_it_starts(tmp_path, monkeypatch, pool,
                                                          signal_name):
    from celery import signals

    import workers.app as worker_app

    warmed: list[tuple[str, ...]] = []
    monkeypatch.setattr(worker_app, "warm_resources",
                        lambda settings, stages: warmed.append(tuple(stages)))
    app = create_celery(Settings(data_dir=tmp_path))
    signal = getattr(signals, signal_name)
    worker_app.warm_on_start(app, pool, ["embed"])  # replaced by the next call
    worker_app.warm_on_start(app, pool, ["parse", "embed"])
    try:
        signal.send(sender=None)
    finally:
        signal.disconnect(dispatch_uid=worker_app._WARM_UID)
    assert warmed == [("parse", "embed")]
