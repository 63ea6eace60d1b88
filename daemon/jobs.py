"""The daemon's job queue: turns taken round robin (one per owner, or one per group of owners that share a turn
key: the server's connections of one token), each owner's jobs run in order, one running job at a time (or
``max_running``: the Ray backend's replicas, :mod:`daemon.ray_backend`), a cap on each owner's waiting jobs,
cancellable per owner.

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

Owner = TypeVar("Owner", bound=Hashable)
"""The owners' type (the server's: its connection ids, ints)."""
Turn = Hashable
"""A turn's key (:meth:`JobQueue.add`'s ``turn``: the server's are token owners' names, strings)."""
P = TypeVar("P")
"""The payloads' type."""


class DuplicateJob(ValueError):
    """The owner already has a queued or running job with this id."""


class QueueFull(RuntimeError):
    """The owner already has :attr:`limit` jobs waiting (:attr:`JobQueue.max_per_owner`)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"{limit} jobs are already waiting on this connection, its limit")
        self.limit = limit


class CancelOutcome(Enum):
    """What :meth:`JobQueue.cancel` did."""

    REMOVED = "removed"
    """The job was waiting; it is out of the queue and will never run."""
    SIGNALLED = "signalled"
    """The job is running; its cancel flag is set and the engine stops at its next step."""
    UNKNOWN = "unknown"
    """The owner has no such queued or running job (already finished, or never sent)."""


@dataclass(eq=False)
class Job(Generic[Owner, P]):
    """One queued or running job.

    Attributes:
        owner: who sent it (the server uses its connection's id); jobs are cancelled per owner.
        job_id: the owner's id for it (unique among the owner's unfinished jobs).
        payload: what the worker needs (the server stores the request and its engine here).
        turn: the key of the turn it waits for (:meth:`JobQueue.add`; its owner unless given).
    """

    owner: Owner
    job_id: str
    payload: P
    turn: Turn = None
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    def cancel(self) -> None:
        """Set the cancel flag (idempotent, callable from any thread)."""
        self._cancel.set()

    def cancelled(self) -> bool:
        """True once :meth:`cancel` was called; the worker thread polls this between steps."""
        return self._cancel.is_set()


class JobQueue(Generic[Owner, P]):
    """Round-robin queue over turns with at most one running job (``max_running`` of them).

    Each job waits for a turn: its owner's own, or one that several owners share (:meth:`add`'s ``turn``: the
    server gives every connection of one token the same, so a user with two connections gets one turn, not two).
    The jobs of a turn run in the order they were added, so each owner's run in the order it sent them; between
    turns the queue takes turns: the next job comes from the next turn (in the order turns joined) that has one
    waiting, so one turn's backlog cannot hold back another turn's single job. An owner may have at most
    ``max_per_owner`` jobs waiting (its running job does not count).

    Positions count the jobs that must finish before a job starts: the running job (if any) plus
    the waiting jobs the turns put ahead of it, so position 0 means "starts now" (with ``max_running`` N, the
    first N − 1 of those are not counted: that many jobs run beside it). A later job of
    another turn can move ahead of a waiting job (that is what taking turns means), so a position
    is what the queue holds when it is given, not a promise.
    """

    def __init__(self, max_per_owner: int | None = None, max_running: int = 1) -> None:
        """``max_per_owner``: most waiting jobs per owner (None: no limit); ``max_running``: most jobs between
        :meth:`pop` and :meth:`finish` at once.

        Raises:
            ValueError: ``max_per_owner`` or ``max_running`` is below 1.
        """
        if max_per_owner is not None and max_per_owner < 1:
            raise ValueError(f"max_per_owner must be ≥ 1, got {max_per_owner}")
        if max_running < 1:
            raise ValueError(f"max_running must be ≥ 1, got {max_running}")
        self.max_per_owner = max_per_owner
        self.max_running = max_running
        self._waiting: dict[Turn, deque[Job[Owner, P]]] = {}  # turn → its waiting jobs, oldest first
        self._turns: deque[Turn] = deque()  # turns with waiting jobs; the first one's job runs next
        self._owners: dict[Owner, tuple[Turn, int]] = {}  # owner with waiting jobs → its turn and their count
        self._running: list[Job[Owner, P]] = []  # between pop and finish, oldest first

    @property
    def running(self) -> Job[Owner, P] | None:
        """The job between :meth:`pop` and :meth:`finish` (the oldest, with ``max_running`` > 1), or None."""
        return self._running[0] if self._running else None

    @property
    def running_jobs(self) -> tuple[Job[Owner, P], ...]:
        """Every job between :meth:`pop` and :meth:`finish`, oldest first."""
        return tuple(self._running)

    def _is_running(self, job: Job[Owner, P]) -> bool:
        return any(running is job for running in self._running)

    def __len__(self) -> int:
        """Number of waiting (not running) jobs."""
        return sum(map(len, self._waiting.values()))

    def _find(self, owner: Owner, job_id: str) -> Job[Owner, P] | None:
        running = next((job for job in self._running if (job.owner, job.job_id) == (owner, job_id)), None)
        if running is not None:
            return running
        if owner not in self._owners:
            return None
        return next((job for job in self._waiting[self._owners[owner][0]]
                     if job.owner == owner and job.job_id == job_id), None)

    def _position(self, turn: Turn) -> int:
        """Jobs that run before the next job added to ``turn`` (which joins the turns last if none waits in it)."""
        rounds = len(self._waiting.get(turn, ()))  # the new job runs in this round (0 = the next one) …
        turns = list(self._turns)
        mine = turns.index(turn) if turn in self._waiting else len(turns)  # … at its turn
        ahead = sum(min(len(self._waiting[other]), rounds + (index < mine))
                    for index, other in enumerate(turns) if other != turn)
        return max(0, ahead + rounds + len(self._running) - (self.max_running - 1))

    def _count(self, owner: Owner, turn: Turn, change: int) -> None:
        """Add ``change`` to ``owner``'s count of waiting jobs (in ``turn``); an owner at 0 is forgotten."""
        count = self._owners.get(owner, (turn, 0))[1] + change
        if count:
            self._owners[owner] = (turn, count)
        else:
            del self._owners[owner]

    def add(self, owner: Owner, job_id: str, payload: P, held: int = 0,
            turn: Turn = None) -> tuple[Job[Owner, P], int]:
        """Queue a job after the other jobs waiting in its turn (``owner``'s among them).

        Args:
            held: other things of ``owner`` that take places of its :attr:`max_per_owner` (the server: results
                it has not yet read, so a client that does not read cannot make the daemon hold without bound).
            turn: the key of the turn the job waits for; None: ``owner`` itself. Owners that give the same key
                share one turn (the server's: a connection's token owner). An owner keeps one key while it has
                jobs waiting.

        Returns:
            The job and its position (jobs that run before it, the running one included).

        Raises:
            DuplicateJob: ``owner`` has an unfinished job called ``job_id``.
            QueueFull: ``owner`` already has :attr:`max_per_owner` jobs waiting (``held`` included).
            ValueError: ``owner`` has jobs waiting in another turn.
        """
        turn = owner if turn is None else turn
        if self._find(owner, job_id) is not None:
            raise DuplicateJob(f"job {job_id!r} is already queued or running on this connection")
        current, waiting = self._owners.get(owner, (turn, 0))
        if current != turn:
            raise ValueError(f"the owner's jobs wait in turn {current!r}, not {turn!r}")
        if self.max_per_owner is not None and waiting + held >= self.max_per_owner:
            raise QueueFull(self.max_per_owner)
        job = Job(owner, job_id, payload, turn)
        position = self._position(turn)
        if turn not in self._waiting:
            self._waiting[turn] = deque()
            self._turns.append(turn)
        self._waiting[turn].append(job)
        self._count(owner, turn, 1)
        return job, position

    def pop(self) -> Job[Owner, P] | None:
        """Start the next owner's oldest waiting job: it becomes :attr:`running`. Returns None when none waits.

        Raises:
            RuntimeError: ``max_running`` jobs are still running (one, unless given: strictly one at a time).
        """
        if len(self._running) >= self.max_running:
            raise RuntimeError(f"job {self._running[-1].job_id!r} is still running")
        if not self._turns:
            return None
        turn = self._turns.popleft()
        jobs = self._waiting[turn]
        job = jobs.popleft()
        self._running.append(job)
        self._count(job.owner, turn, -1)
        if jobs:
            self._turns.append(turn)  # its next job waits for the other turns
        else:
            del self._waiting[turn]
        return job

    def finish(self, job: Job[Owner, P]) -> None:
        """Mark the running ``job`` as done.

        Raises:
            RuntimeError: ``job`` is not a running job.
        """
        if not self._is_running(job):
            raise RuntimeError(f"job {job.job_id!r} is not the running job")
        self._running = [running for running in self._running if running is not job]

    def _remove(self, owner: Owner, jobs: list[Job[Owner, P]]) -> None:
        """Cancel and take out ``jobs``, waiting jobs of ``owner``; their turn leaves the turns when none is left."""
        turn = self._owners[owner][0]
        waiting = self._waiting[turn]
        for job in jobs:
            job.cancel()
            waiting.remove(job)
            self._count(owner, turn, -1)
        if not waiting:
            del self._waiting[turn]
            self._turns.remove(turn)

    def cancel(self, owner: Owner, job_id: str) -> CancelOutcome:
        """Cancel ``owner``'s job ``job_id``: remove it if waiting, flag it if running."""
        job = self._find(owner, job_id)
        if job is None:
            return CancelOutcome.UNKNOWN
        if self._is_running(job):
            job.cancel()
            return CancelOutcome.SIGNALLED
        self._remove(owner, [job])
        return CancelOutcome.REMOVED

    def drop_owner(self, owner: Owner) -> list[Job[Owner, P]]:
        """Cancel every job of ``owner`` (it disconnected).

        Returns:
            The waiting jobs removed, oldest first; a running job of ``owner`` is flagged, not returned.
        """
        removed = [job for job in self._waiting[self._owners[owner][0]] if job.owner == owner] \
            if owner in self._owners else []
        if removed:
            self._remove(owner, removed)
        for job in self._running:
            if job.owner == owner:
                job.cancel()
        return removed
