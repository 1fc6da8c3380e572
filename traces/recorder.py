"""Recording traces so that none is lost, whatever happens to the answer.

``start`` writes a row with status "running" as soon as a question arrives;
``finish`` completes it with status "ok" or "error" and whatever answer text
exists by then. If the first write fails, ``finish`` inserts the row instead.
Storage failures are logged (with the trace id) and never raised: a broken
trace table must not break answering.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from sirocco.db import session_scope, utcnow
from traces.models import Trace, TracePublic

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class TraceHandle:
    """An open trace: its id and the clocks needed for latency and TTFT."""

    trace_id: str
    query: str
    tenant: str
    conversation_id: str | None
    created_at: datetime
    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    persisted: bool = False
    finished: bool = False

    def mark_first_token(self) -> None:
        """Note the time of the first output (only the first call counts)."""
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()

    @property
    def ttft_ms(self) -> int | None:
        if self.first_token_at is None:
            return None
        return round((self.first_token_at - self.started) * 1000)

    def elapsed_ms(self) -> int:
        return round((time.perf_counter() - self.started) * 1000)


class TraceRecorder:
    """Writes traces through ``session_factory``; methods are synchronous (run
    them in a thread from async code)."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory

    def start(
        self,
        query: str,
        *,
        tenant: str = "default",
        conversation_id: str | None = None,
        model: str | None = None,
    ) -> TraceHandle:
        """Open a trace and store it as "running". Never raises on storage errors."""
        handle = TraceHandle(
            trace_id=str(uuid.uuid4()),
            query=query,
            tenant=tenant,
            conversation_id=conversation_id,
            created_at=utcnow(),
        )
        try:
            with session_scope(self._session_factory) as session:
                session.add(
                    Trace(
                        id=handle.trace_id,
                        created_at=handle.created_at,
                        conversation_id=conversation_id,
                        tenant=tenant,
                        query=query,
                        model=model,
                        status="running",
                    )
                )
            handle.persisted = True
        except Exception:
            logger.exception("trace start not stored; will retry at finish",
                             extra={"trace_id": handle.trace_id})
        return handle

    def finish(
        self,
        handle: TraceHandle,
        *,
        answer: str = "",
        status: str = "ok",
        error: str | None = None,
        retrieved: Sequence[dict[str, Any]] = (),
        prompt: Sequence[dict[str, Any]] = (),
        citations: Sequence[dict[str, Any]] = (),
        model: str | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
    ) -> TracePublic | None:
        """Complete the trace (only the first call counts; later calls return None).

        Returns the stored trace, or None when it could not be stored (logged).
        """
        if status not in ("ok", "error"):
            raise ValueError(f"status must be 'ok' or 'error', got {status!r}")
        if handle.finished:
            return None
        handle.finished = True
        values: dict[str, Any] = {
            "answer": answer,
            "status": status,
            "error": error,
            "retrieved": list(retrieved),
            "prompt": list(prompt),
            "citations": list(citations),
            "model": model,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "latency_ms": handle.elapsed_ms(),
            "ttft_ms": handle.ttft_ms,
        }
        try:
            with session_scope(self._session_factory) as session:
                trace = session.get(Trace, handle.trace_id)
                if trace is None:
                    trace = Trace(
                        id=handle.trace_id,
                        created_at=handle.created_at,
                        conversation_id=handle.conversation_id,
                        tenant=handle.tenant,
                        query=handle.query,
                    )
                    session.add(trace)
                for key, value in values.items():
                    setattr(trace, key, value)
                session.flush()
                public = TracePublic.model_validate(trace)
            handle.persisted = True
            return public
        except Exception:
            # Last resort: the log line carries what the row would have held.
            logger.exception(
                "trace not stored",
                extra={"trace_id": handle.trace_id, "trace_status": status,
                       "trace_error": error, "answer_chars": len(answer)},
            )
            return None
