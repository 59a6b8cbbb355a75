"""
The job life cycle: which status changes are allowed, and `transition`, the one place a job changes status.

Every other module changes a job's status only through `transition`, which rejects illegal changes.
"""

from __future__ import annotations

import time

from orchestrator.errors import ImGenError
from orchestrator.models import Job, JobStatus

ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.SUBMITTED, JobStatus.CANCELLED, JobStatus.FAILED}),
    JobStatus.SUBMITTED: frozenset(
        {JobStatus.RUNNING, JobStatus.QUEUED, JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.RUNNING: frozenset({JobStatus.DONE, JobStatus.QUEUED, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.DONE: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


class IllegalTransition(ImGenError):
    """A job state change that the life cycle does not allow."""


def transition(job: Job, to: JobStatus, **fields: object) -> Job:
    """The one place a job changes status."""
    if to not in ALLOWED[job.status]:
        raise IllegalTransition(f"job {job.id}: {job.status.value} -> {to.value} is not allowed")
    now = time.time()
    if to is JobStatus.RUNNING and "started_at" not in fields:
        fields["started_at"] = now
    if to.terminal and "finished_at" not in fields:
        fields["finished_at"] = now
    if to is JobStatus.QUEUED:
        fields.setdefault("node_id", None)
        fields.setdefault("prompt_id", None)
    return job.with_(status=to, **fields)
