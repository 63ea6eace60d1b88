"""The daemon's job queue: first in, first out, one running job at a time, cancellable per owner.

Pure bookkeeping, no asyncio and no I/O: the server calls it from its event loop only; the one
thing another thread touches is :meth:`Job.cancelled`, polled by the worker thread between steps
(a :class:`threading.Event`, safe across threads).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, TypeVar

P = TypeVar("P")


class DuplicateJob(ValueError):
    """The owner already has a queued or running job with this id."""


class CancelOutcome(Enum):
    """What :meth:`JobQueue.cancel` did."""

    REMOVED = "removed"
    """The job was waiting; it is out of the queue and will never run."""
    SIGNALLED = "signalled"
    """The job is running; its cancel flag is set and the engine stops at its next step."""
    UNKNOWN = "unknown"
    """The owner has no such queued or running job (already finished, or never sent)."""


@dataclass(eq=False)
class Job(Generic[P]):
    """One queued or running job.

    Attributes:
        owner: who sent it (the server uses its connection's id); jobs are cancelled per owner.
        job_id: the owner's id for it (unique among the owner's unfinished jobs).
        payload: what the worker needs (the server stores the request and its engine here).
    """

    owner: Hashable
    job_id: str
    payload: P
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    def cancel(self) -> None:
        """Set the cancel flag (idempotent, callable from any thread)."""
        self._cancel.set()

    def cancelled(self) -> bool:
        """True once :meth:`cancel` was called; the worker thread polls this between steps."""
        return self._cancel.is_set()


class JobQueue(Generic[P]):
    """First-in-first-out queue with at most one running job.

    Positions count the jobs that must finish before a job starts: the running job (if any) plus
    the queued jobs ahead of it, so position 0 means "starts now".
    """

    def __init__(self) -> None:
        self._queue: deque[Job[P]] = deque()
        self._running: Job[P] | None = None

    @property
    def running(self) -> Job[P] | None:
        """The job between :meth:`pop` and :meth:`finish`, or None."""
        return self._running

    def __len__(self) -> int:
        """Number of waiting (not running) jobs."""
        return len(self._queue)

    def _find(self, owner: Hashable, job_id: str) -> Job[P] | None:
        if self._running is not None and (self._running.owner, self._running.job_id) == (owner, job_id):
            return self._running
        return next((job for job in self._queue if (job.owner, job.job_id) == (owner, job_id)), None)

    def add(self, owner: Hashable, job_id: str, payload: P) -> tuple[Job[P], int]:
        """Append a job at the end of the queue.

        Returns:
            The job and its position (jobs that run before it, the running one included).

        Raises:
            DuplicateJob: ``owner`` has an unfinished job called ``job_id``.
        """
        if self._find(owner, job_id) is not None:
            raise DuplicateJob(f"job {job_id!r} is already queued or running on this connection")
        job = Job(owner, job_id, payload)
        position = len(self._queue) + (self._running is not None)
        self._queue.append(job)
        return job, position

    def pop(self) -> Job[P] | None:
        """Start the oldest waiting job: it becomes :attr:`running`. Returns None when none waits.

        Raises:
            RuntimeError: a job is still running (jobs run strictly one at a time).
        """
        if self._running is not None:
            raise RuntimeError(f"job {self._running.job_id!r} is still running")
        if not self._queue:
            return None
        self._running = self._queue.popleft()
        return self._running

    def finish(self, job: Job[P]) -> None:
        """Mark the running ``job`` as done.

        Raises:
            RuntimeError: ``job`` is not the running job.
        """
        if job is not self._running:
            raise RuntimeError(f"job {job.job_id!r} is not the running job")
        self._running = None

    def cancel(self, owner: Hashable, job_id: str) -> CancelOutcome:
        """Cancel ``owner``'s job ``job_id``: remove it if waiting, flag it if running."""
        job = self._find(owner, job_id)
        if job is None:
            return CancelOutcome.UNKNOWN
        job.cancel()
        if job is self._running:
            return CancelOutcome.SIGNALLED
        self._queue.remove(job)
        return CancelOutcome.REMOVED

    def drop_owner(self, owner: Hashable) -> list[Job[P]]:
        """Cancel every job of ``owner`` (it disconnected).

        Returns:
            The waiting jobs removed, in queue order; a running job of ``owner`` is flagged, not returned.
        """
        removed = [job for job in self._queue if job.owner == owner]
        for job in removed:
            job.cancel()
            self._queue.remove(job)
        if self._running is not None and self._running.owner == owner:
            self._running.cancel()
        return removed
