"""The Celery application factory and the worker entry point.

Broker: Redis when ``SIROCCO_REDIS_URL`` is set, else kombu's SQLAlchemy
transport on a SQLite file under ``data_dir`` (embedded mode). No result
backend: task outcomes live on the ``Document`` rows.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from celery import Celery
from celery.signals import worker_process_init, worker_ready

from sirocco.db import redacted_url
from sirocco.errors import ConfigError
from sirocco.settings import Settings
from workers.export_tasks import EXPORT_TRACES, register_export_tasks
from workers.recovery import RecoveryStep
from workers.resources import warm_resources
from workers.tasks import RETRY_BACKOFF_MAX_S, queue_names, register_tasks, task_routes

logger = logging.getLogger(__name__)


class SiroccoCelery(Celery):
    """A Celery app that carries the ``Settings`` it was built from; tasks read
    ``self.app.settings`` instead of the environment."""

    settings: Settings


def create_celery(settings: Settings) -> SiroccoCelery:
    """A configured Celery app with Sirocco's tasks registered. No I/O besides
    creating ``data_dir`` for the embedded broker file."""
    broker, transport = settings.broker_url, None
    if broker.startswith("sqla+"):
        # The URL's "sqla+" would pick kombu's own transport; ours reads the polling interval.
        broker, transport = broker.removeprefix("sqla+"), "workers.sql_broker:Transport"
    app = SiroccoCelery("sirocco", broker=broker, set_as_current=False)
    app.settings = settings
    c = settings.celery
    app.conf.update(
        # JSON only: a pickle payload from the broker would be code execution.
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        result_backend=None,
        task_default_queue=queue_names(settings)["parse"],
        # Exports (and other short tasks) on their own queue: never behind an ingestion.
        task_routes={**task_routes(settings),
                     EXPORT_TRACES: {"queue": queue_names(settings)["exports"]}},
        # Idempotent tasks, so ack after the work and redeliver if the worker dies.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # A task killed at the hard time limit goes back to the queue instead of
        # being acked as failed: its documents are retried (each document's
        # attempts are capped, so one that always times out ends failed).
        task_acks_on_timeout=False,
        worker_prefetch_multiplier=1,
        # On a lost broker connection unacked messages come back anyway: stop the
        # running copies instead of finishing them twice.
        worker_cancel_long_running_tasks_on_connection_loss=True,
        # A child that a big document left bloated (parsers free memory to the
        # allocator, not always to the OS) is replaced once its task is done.
        worker_max_memory_per_child=c.max_memory_per_child_kib or None,
        task_time_limit=c.task_time_limit_s,
        task_soft_time_limit=c.task_soft_time_limit_s,
        broker_transport=transport,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=10,
        broker_transport_options=_transport_options(settings),
        enable_utc=True,
    )
    if transport is not None and broker.startswith("sqlite:"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    # Every task module, from one list: they never import each other.
    for register in (register_tasks, register_export_tasks):
        register(app)
    app.steps["consumer"].add(RecoveryStep)
    return app


def _transport_options(settings: Settings) -> dict[str, object]:
    c = settings.celery
    if settings.redis.url:
        # An unacked message is redelivered after visibility_timeout (this is also
        # how the task of a killed worker comes back); it must outlast the longest
        # task plus the longest retry delay or work runs twice.
        return {
            "visibility_timeout": c.visibility_timeout_s
            or max(3600, 2 * c.task_time_limit_s + RETRY_BACKOFF_MAX_S),
            # Look for such messages every 10 s (kombu's default scans every 10th
            # sweep, so a killed worker's task came back ~100 s late).
            "unacked_restore_interval": 10,
            "unacked_restore_throttle": 1,
            # The lock of that scan: a worker killed while it held it (the scan
            # takes milliseconds) no longer stops everyone's restores for 5 min.
            "unacked_mutex_expire": 60,
            "socket_timeout": 30,
            "socket_connect_timeout": 10,
            "retry_on_timeout": True,
        }
    # kombu's SQLAlchemy transport passes connect_args straight to create_engine():
    # SQLite waits up to 30 s for a writer (API enqueueing vs worker polling).
    # polling_interval: kombu's default (1 s) is paid once per message, since a
    # worker with a full prefetch sleeps a whole interval before it looks again.
    return {"connect_args": {"timeout": 30}, "polling_interval": c.broker_poll_s}


def run_worker(
    settings: Settings,
    *,
    loglevel: str = "info",
    concurrency: int | None = None,
    pool: str = "prefork",
    stages: Sequence[str] | None = None,
    hostname: str | None = None,
) -> None:
    """Run a Celery worker in this process until it is stopped (SIGTERM: warm shutdown).

    ``stages``: which queues to consume, "parse", "embed" and/or "exports"
    (default all). One worker per stage keeps a slow parser from holding up
    embedding, and a large ingestion from holding up an export; only embed
    workers load the embedding model, and only parse and embed workers look
    for lost ingestion messages.

    pool="prefork" (default) forks ``concurrency`` child processes; each loads
    what its stages need (its own embedding model) as it starts, in the
    background (``warm_on_start``). It is the only pool that
    enforces the time limits and survives a crashing task, and torch is never
    imported in the parent, so forking is safe. pool="solo" runs tasks in this
    process (one at a time, no time limits): handy for debugging.
    """
    names = queue_names(settings)
    if stages and not {"parse", "embed"} & set(stages):
        settings = settings.model_copy(update={"celery": settings.celery.model_copy(
            update={"recover_interval_s": 0})})
    app = create_celery(settings)
    unknown = sorted(set(stages or ()) - set(names))
    if unknown:
        raise ConfigError(f"unknown stage(s) {unknown}; valid: {sorted(names)}")
    queues = [names[s] for s in (stages or names)]
    argv = [
        "worker",
        f"--loglevel={loglevel}",
        f"--pool={pool}",
        f"--concurrency={concurrency or settings.celery.concurrency}",
        f"--hostname={hostname or f'sirocco-{os.getpid()}@%h'}",
        f"--queues={','.join(queues)}",
    ]
    if not settings.redis.url:
        # Mingle, gossip and heartbeats broadcast to other workers, which the SQL
        # transport cannot do across processes; with one embedded worker they are moot.
        argv += ["--without-mingle", "--without-gossip", "--without-heartbeat"]
    quiet_openmp()
    warm_on_start(app, pool, list(stages or names))
    logger.info("starting worker", extra={"broker": redacted_url(settings.broker_url), "pool": pool,
                                          "queues": queues})
    app.worker_main(argv)


#: The warm-up's receiver on Celery's signals: one worker a process, so a
#: later ``run_worker`` (tests) replaces the earlier one's.
_WARM_UID = "sirocco-warm-resources"


def warm_on_start(app: SiroccoCelery, pool: str, stages: Sequence[str]) -> None:
    """Have each task process build what ``stages`` need as it starts
    (``workers.resources.warm_resources``): the embedding model and the
    parse tokenizer otherwise load inside the first job, seconds in which
    nothing is embedded. A prefork child warms itself (the parent never
    imports torch); other pools run tasks in the worker's own process."""
    settings = app.settings

    def warm(**_: object) -> None:
        warm_resources(settings, stages)

    for each in (worker_process_init, worker_ready):
        each.disconnect(dispatch_uid=_WARM_UID)
    signal = worker_process_init if pool == "prefork" else worker_ready
    signal.connect(warm, weak=False, dispatch_uid=_WARM_UID)


def quiet_openmp() -> None:
    """Idle OpenMP threads of the task processes sleep instead of spinning
    (``OMP_WAIT_POLICY=PASSIVE`` unless set). torch's libgomp otherwise spins
    after every parallel region, for milliseconds on Intel CPUs: the embedding
    model ran as fast either way but burned about 15 % more CPU, which the
    parse worker and the API on the same cores need (docs/benchmarks.md).
    Children read it when they first import torch; the parent never does."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
