"""workers.recovery without a broker: reading kombu's Redis messages, when
the sweep runs, and that a failing sweep never breaks the worker."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sirocco.settings import Settings
from workers.app import create_celery
from workers.recovery import RecoveryStep, held_here, message_tasks, sql_pending
from workers.tasks import EMBED_DOCUMENT, PARSE_DOCUMENT, enqueue_documents, queue_names


def _payload(task: str, args: list[Any]) -> dict[str, Any]:
    """A message as kombu's Redis transport stores it (JSON, base64 body)."""
    body = json.dumps([args, {}, {"callbacks": None, "errbacks": None, "chain": None}])
    return {"body": base64.b64encode(body.encode()).decode(), "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {"lang": "py", "task": task, "id": "t-1", "retries": 0},
            "properties": {"body_encoding": "base64", "delivery_tag": "d-1",
                           "delivery_info": {"exchange": "", "routing_key": "sirocco.parse"}}}


def test_message_tasks_reads_queued_and_unacked_messages():
    queued = json.dumps(_payload(PARSE_DOCUMENT, ["doc-1", "job-1"]))
    assert message_tasks(queued) == [(PARSE_DOCUMENT, "doc-1")]
    assert message_tasks(queued.encode()) == [(PARSE_DOCUMENT, "doc-1")]
    unacked = json.dumps([_payload(EMBED_DOCUMENT, ["doc-2"]), "", "sirocco.embed"])
    assert message_tasks(unacked) == [(EMBED_DOCUMENT, "doc-2")]


def test_message_tasks_reads_every_document_of_a_batch():
    batch = json.dumps(_payload(PARSE_DOCUMENT, [["doc-1", "doc-2"], "job-1"]))
    assert message_tasks(batch) == [(PARSE_DOCUMENT, "doc-1"), (PARSE_DOCUMENT, "doc-2")]
    embed = json.dumps([_payload(EMBED_DOCUMENT, [["doc-3", "doc-4"]]), "", "sirocco.embed"])
    assert message_tasks(embed) == [(EMBED_DOCUMENT, "doc-3"), (EMBED_DOCUMENT, "doc-4")]


@pytest.mark.parametrize("raw", [
    "", "not json", "[]", "{}", json.dumps({"headers": {}, "body": ""}),
    json.dumps(_payload(PARSE_DOCUMENT, [])),
    json.dumps(_payload(PARSE_DOCUMENT, [42])),
    json.dumps(_payload(PARSE_DOCUMENT, [["d", 42]])),
    json.dumps({**_payload(PARSE_DOCUMENT, ["d"]), "body": "%%%"}),
])
def test_message_tasks_ignores_what_it_cannot_read(raw: str):
    assert message_tasks(raw) == []


class _Timer:
    def __init__(self) -> None:
        self.calls: list[tuple[float, Any]] = []

    def call_repeatedly(self, interval: float, fn: Any, args: Any, priority: int = 0) -> Any:
        self.calls.append((interval, fn))
        return SimpleNamespace(cancel=lambda: self.calls.clear())


def _consumer(settings: Settings) -> Any:
    return SimpleNamespace(app=create_celery(settings), timer=_Timer())


def test_every_redis_worker_sweeps_on_its_timer(tmp_path: Path):
    app = create_celery(Settings(data_dir=tmp_path, redis={"url": "redis://127.0.0.1:6379/3"}))
    assert RecoveryStep in app.steps["consumer"]
    assert app.conf.broker_transport_options["unacked_mutex_expire"] == 60

    c = _consumer(Settings(data_dir=tmp_path, redis={"url": "redis://127.0.0.1:6379/3"},
                           celery={"recover_interval_s": 7}))
    step = RecoveryStep(c)
    step.start(c)
    assert [i for i, _ in c.timer.calls] == [7]
    step.stop(c)
    assert c.timer.calls == []


def test_the_embedded_broker_sweeps_too_and_zero_turns_it_off(tmp_path: Path):
    c = _consumer(Settings(data_dir=tmp_path))
    RecoveryStep(c).start(c)
    assert [i for i, _ in c.timer.calls] == [60]
    c = _consumer(Settings(data_dir=tmp_path, redis={"url": "redis://127.0.0.1:6379/3"},
                           celery={"recover_interval_s": 0}))
    RecoveryStep(c).start(c)
    assert c.timer.calls == []


def test_sql_pending_sees_waiting_messages_not_taken_ones(tmp_path: Path):
    """kombu's SQL transport on a SQLite file: the embedded broker itself (one
    document a message, so one can be taken on its own)."""
    settings = Settings(data_dir=tmp_path, celery={"parse_batch_docs": 1})
    queues = list(queue_names(settings).values())
    assert sql_pending(settings.broker_url, queues) == set()  # no table yet
    app = create_celery(settings)
    enqueue_documents(app, ["doc-1", "doc-2"], job_id="job-1")
    assert sql_pending(settings.broker_url, queues) == {(PARSE_DOCUMENT, "doc-1"),
                                                        (PARSE_DOCUMENT, "doc-2")}
    assert sql_pending(settings.broker_url, ["other.parse"]) == set()
    with app.connection_for_read() as conn:
        taken = conn.default_channel.basic_get(queue=queues[0], no_ack=False)
        assert taken is not None  # invisible now, acked or not: not seen
        assert len(sql_pending(settings.broker_url, queues) or ()) == 1
    # Closing the channel put the unacked message back.
    assert len(sql_pending(settings.broker_url, queues) or ()) == 2


def test_held_here_lists_this_workers_tasks(monkeypatch: pytest.MonkeyPatch):
    from celery.worker import state

    monkeypatch.setattr(state, "requests", {
        "t1": SimpleNamespace(name=PARSE_DOCUMENT, args=["doc-1", "job-1"]),
        "t2": SimpleNamespace(name=EMBED_DOCUMENT, args=["doc-2"]),
        "t3": SimpleNamespace(name="other", args=[]),
        "t4": SimpleNamespace(name=PARSE_DOCUMENT, args=[["doc-3", "doc-4"], "job-1"]),
    })
    assert held_here() == {(PARSE_DOCUMENT, "doc-1"), (EMBED_DOCUMENT, "doc-2"),
                           (PARSE_DOCUMENT, "doc-3"), (PARSE_DOCUMENT, "doc-4")}


def test_a_failing_sweep_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    app = create_celery(Settings(data_dir=tmp_path, redis={"url": "redis://127.0.0.1:1/0"}))
    with caplog.at_level(logging.ERROR, logger="workers.recovery"):
        assert RecoveryStep(None).sweep(app) is None
    assert "recovery sweep failed" in caplog.text


def test_recovery_settings_refuse_negative_values():
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        Settings(celery={"recover_after_s": -1})
