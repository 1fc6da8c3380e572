"""The embedded broker: kombu's SQLAlchemy transport, with its polling
interval taken from the transport options.

kombu's virtual transports read ``polling_interval`` from the transport
options, but the SQL transport hands every option it does not know to
``create_engine()``, which refuses this one. A worker whose prefetch is full
sleeps a whole interval before it looks again, so kombu's default (1 s) is paid
once per message: this transport lets ``celery.broker_poll_s`` set it.
``create_celery`` selects it (``broker_transport``) for ``sqla+`` broker URLs.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import sqlalchemy as kombu_sql
from sqlalchemy import create_engine

#: Transport options that are ours or kombu's, never ``create_engine()``'s.
_NOT_FOR_ENGINE = frozenset({
    "queue_tablename", "message_tablename", "callback", "errback", "max_retries",
    "interval_start", "interval_step", "interval_max", "retry_errors", "polling_interval",
})


class Channel(kombu_sql.Channel):
    """kombu's SQL channel; the engine gets only the options meant for it."""

    def _engine_from_config(self) -> Any:
        conninfo = self.connection.client
        options = {k: v for k, v in conninfo.transport_options.items()
                   if k not in _NOT_FOR_ENGINE}
        return create_engine(conninfo.hostname, **options)


class Transport(kombu_sql.Transport):
    """kombu's SQL transport with ``Channel`` above."""

    Channel = Channel
