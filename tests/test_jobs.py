"""daemon.jobs: FIFO order, positions, duplicates, cancellation and disconnects."""

from __future__ import annotations

import pytest
from gimp_inpaint.daemon.jobs import CancelOutcome, DuplicateJob, JobQueue, QueueFull


def test_fifo_order_and_positions() -> None:
    queue: JobQueue[str, str] = JobQueue()
    assert queue.pop() is None
    first, position = queue.add("alice", "1", "a1")
    assert position == 0
    assert queue.add("bob", "1", "b1")[1] == 1  # same id, other owner: fine
    assert queue.pop() is first and queue.running is first
    assert queue.add("alice", "2", "a2")[1] == 2  # bob's job waits, alice's first one runs
    with pytest.raises(RuntimeError):
        queue.pop()  # strictly one at a time
    queue.finish(first)
    assert queue.pop().payload == "b1"
    queue.finish(queue.running)
    assert queue.pop().payload == "a2"
    queue.finish(queue.running)
    assert queue.pop() is None and len(queue) == 0


def test_duplicate_ids_rejected_until_finished() -> None:
    queue: JobQueue[str, int] = JobQueue()
    queue.add("alice", "x", 1)
    with pytest.raises(DuplicateJob):
        queue.add("alice", "x", 2)
    job = queue.pop()
    with pytest.raises(DuplicateJob):
        queue.add("alice", "x", 3)  # still running
    queue.finish(job)
    assert queue.add("alice", "x", 4)[1] == 0
    with pytest.raises(RuntimeError):
        queue.finish(job)  # not running any more


def test_cancel_queued_running_and_unknown() -> None:
    queue: JobQueue[str, str] = JobQueue()
    running, _ = queue.add("alice", "1", "run")
    waiting, _ = queue.add("alice", "2", "wait")
    queue.add("bob", "3", "other")
    queue.pop()
    assert queue.cancel("bob", "1") is CancelOutcome.UNKNOWN  # not bob's job
    assert not running.cancelled()
    assert queue.cancel("alice", "2") is CancelOutcome.REMOVED
    assert waiting.cancelled() and len(queue) == 1
    assert queue.cancel("alice", "1") is CancelOutcome.SIGNALLED
    assert running.cancelled() and queue.running is running  # stays until the worker finishes it
    assert queue.cancel("alice", "2") is CancelOutcome.UNKNOWN
    queue.finish(running)
    assert queue.pop().payload == "other"


def test_drop_owner_removes_waiting_and_flags_running() -> None:
    queue: JobQueue[str, str] = JobQueue()
    running, _ = queue.add("alice", "1", "a1")
    queue.add("bob", "1", "b1")
    queue.add("alice", "2", "a2")
    queue.add("alice", "3", "a3")
    queue.pop()
    removed = queue.drop_owner("alice")
    assert [job.payload for job in removed] == ["a2", "a3"]
    assert all(job.cancelled() for job in removed) and running.cancelled()
    assert len(queue) == 1
    queue.finish(running)
    bob = queue.pop()
    assert bob.payload == "b1" and not bob.cancelled()
    assert queue.drop_owner("nobody") == []


def _drain(queue: JobQueue[str, str]) -> list[str]:
    """Run every waiting job to the end; their payloads in the order they ran."""
    order = []
    while (job := queue.pop()) is not None:
        order.append(job.payload)
        queue.finish(job)
    return order


def test_round_robin_between_two_owners() -> None:
    queue: JobQueue[str, str] = JobQueue()
    for n in range(1, 4):
        queue.add("alice", str(n), f"a{n}")
    queue.add("bob", "1", "b1")
    assert _drain(queue) == ["a1", "b1", "a2", "a3"]  # bob's single job does not wait for alice's backlog


def test_round_robin_between_three_owners_keeps_each_owners_order() -> None:
    queue: JobQueue[str, str] = JobQueue()
    for owner, count in (("alice", 3), ("bob", 2), ("carol", 1)):
        for n in range(1, count + 1):
            queue.add(owner, str(n), f"{owner[0]}{n}")
    first = queue.pop()
    assert first is not None and first.payload == "a1"
    assert queue.add("dave", "1", "d1")[1] == 4  # a newcomer joins the turns last: after a1 (running), b1, c1, a2
    queue.finish(first)
    assert _drain(queue) == ["b1", "c1", "a2", "d1", "b2", "a3"]


def test_positions_follow_the_round_robin_order() -> None:
    queue: JobQueue[str, str] = JobQueue()
    assert queue.add("alice", "1", "a1")[1] == 0
    assert queue.add("alice", "2", "a2")[1] == 1
    assert queue.add("alice", "3", "a3")[1] == 2
    assert queue.add("bob", "1", "b1")[1] == 1  # after a1, before a2
    assert queue.add("bob", "2", "b2")[1] == 3  # after a2
    assert _drain(queue) == ["a1", "b1", "a2", "b2", "a3"]


def test_queued_jobs_per_owner_are_capped() -> None:
    queue: JobQueue[str, str] = JobQueue(max_per_owner=2)
    queue.add("alice", "1", "a1")
    queue.add("alice", "2", "a2")
    with pytest.raises(QueueFull) as full:
        queue.add("alice", "3", "a3")
    assert full.value.limit == 2
    queue.add("bob", "1", "b1")  # other owners are not affected
    running = queue.pop()
    assert running is not None and running.payload == "a1"
    queue.add("alice", "3", "a3")  # the running job no longer counts as queued
    with pytest.raises(QueueFull):
        queue.add("alice", "4", "a4")
    assert queue.cancel("alice", "2") is CancelOutcome.REMOVED
    queue.add("alice", "4", "a4")  # a cancelled job frees its place
    queue.finish(running)
    with pytest.raises(QueueFull):
        queue.add("bob", "2", "b2", held=1)  # b1 waits, and bob has a result it has not read
    assert _drain(queue) == ["b1", "a3", "a4"]


def test_owners_sharing_a_turn_key_take_one_turn_between_them() -> None:
    queue: JobQueue[str, str] = JobQueue(max_per_owner=2)
    queue.add("laptop", "1", "l1", turn="alice")  # two connections of one token …
    queue.add("desktop", "1", "d1", turn="alice")
    queue.add("laptop", "2", "l2", turn="alice")
    assert queue.add("bob", "1", "b1")[1] == 1  # … one turn: bob's job runs after l1, not after l1 and d1
    with pytest.raises(QueueFull):
        queue.add("laptop", "3", "l3", turn="alice")  # the cap stays per owner …
    queue.add("desktop", "2", "d2", turn="alice")  # … so the other connection may still add
    with pytest.raises(ValueError, match="turn 'alice'"):
        queue.add("laptop", "4", "l4", turn="carol")
    assert queue.add("bob", "2", "b2")[1] == 3  # after l1, b1, d1
    assert _drain(queue) == ["l1", "b1", "d1", "b2", "l2", "d2"]


def test_dropping_one_owner_of_a_shared_turn_keeps_the_others_jobs() -> None:
    queue: JobQueue[str, str] = JobQueue()
    queue.add("laptop", "1", "l1", turn="alice")
    queue.add("desktop", "1", "d1", turn="alice")
    queue.add("laptop", "2", "l2", turn="alice")
    queue.add("bob", "1", "b1")
    assert [job.payload for job in queue.drop_owner("laptop")] == ["l1", "l2"]
    assert queue.cancel("laptop", "1") is CancelOutcome.UNKNOWN  # gone, the desktop's job of that id stays
    assert len(queue) == 2
    assert _drain(queue) == ["d1", "b1"]


def test_max_running_jobs_run_at_once_taking_turns() -> None:
    queue: JobQueue[str, None] = JobQueue(max_running=2)
    assert [queue.add(owner, job_id, None)[1] for owner, job_id in [("a", "a1"), ("b", "b1"), ("a", "a2")]] == [0, 0, 1]
    first, second = queue.pop(), queue.pop()
    assert first is not None and second is not None
    assert (first.job_id, second.job_id) == ("a1", "b1")  # turns: b's job before a's second
    assert queue.running_jobs == (first, second) and queue.running is first
    with pytest.raises(RuntimeError):
        queue.pop()  # both slots taken
    assert queue.cancel("b", "b1") is CancelOutcome.SIGNALLED and second.cancelled()
    queue.finish(second)
    third = queue.pop()
    assert third is not None and third.job_id == "a2" and queue.running_jobs == (first, third)
    queue.drop_owner("a")
    assert first.cancelled() and third.cancelled()
    with pytest.raises(ValueError):
        JobQueue(max_running=0)
