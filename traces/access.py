"""Who may read a trace: its owner, and the tenant's admins and reviewers.

A trace holds the question, the answer, the prompt with the text of every
retrieved chunk and the tool results: as much as the documents the asker could
see. So a trace (with its feedback, spans and chunks) is readable by the user
who asked, and by admins and members of a reviewer group (``auth.reviewer_groups``)
of the same tenant; anyone else gets "not found", the answer for an id that
does not exist. Users are known here only by their salted pseudonym
(``traces.recorder.hash_user``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select

from traces.models import Trace


@dataclass(frozen=True, slots=True)
class TraceViewer:
    """A reader of traces: tenant, user pseudonym, and whether they see every
    trace of the tenant (admins, reviewers) or only their own."""

    tenant: str
    user_hash: str | None
    reviewer: bool = False

    def may_read(self, trace: Trace) -> bool:
        """Whether this viewer may read ``trace``."""
        if trace.tenant != self.tenant:
            return False
        return self.reviewer or (self.user_hash is not None
                                 and trace.user_hash == self.user_hash)

    def scope(self, stmt: Select[Any]) -> Select[Any]:
        """``stmt`` narrowed to the traces this viewer may read."""
        stmt = stmt.where(Trace.tenant == self.tenant)
        if self.reviewer:
            return stmt
        if self.user_hash is None:
            return stmt.where(Trace.id.is_(None))  # no user: no own traces
        return stmt.where(Trace.user_hash == self.user_hash)
