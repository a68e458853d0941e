"""The server's board of heavy work (``dashboard.jobs``): the same work once for every caller, a bounded queue
that says where each caller stands, work inside work without deadlock, errors for everyone, bounded results."""
from __future__ import annotations

import threading
import time

import pytest

from dashboard.jobs import Board, Job, words


def together(threads: list[threading.Thread], release: threading.Event) -> None:
    """Start ``threads`` (callers of one piece of work), let them all ask, then let the work finish; join them."""
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    release.set()
    for thread in threads:
        thread.join(10)

def blocker(started: threading.Event, release: threading.Event, value: object = "done"):
    def work(progress):
        started.set()
        assert release.wait(10)
        return value
    return work


def test_many_callers_of_the_same_work_share_one_computation():
    board, calls, release = Board(2), [], threading.Event()

    def work(progress):
        calls.append(1)
        release.wait(10)
        return object()

    results = []
    threads = [threading.Thread(target=lambda: results.append(board.run("k", "x", work, "x", keep=4)))
               for _ in range(8)]
    together(threads, release)
    assert len(calls) == 1 and len(results) == 8 and all(r is results[0] for r in results)
    assert board.known("k", "x") == (True, results[0]) and not board.busy()


def test_queued_work_says_how_many_are_ahead_and_kept_results_never_wait():
    board = Board(1)
    started, release = threading.Event(), threading.Event()
    board.run("k", "kept", lambda progress: 41, "kept", keep=4)
    first = threading.Thread(target=lambda: board.run("k", "a", blocker(started, release), "a", keep=4))
    first.start()
    assert started.wait(10)
    waiting = [threading.Thread(target=lambda key=key: board.run("k", key, lambda p: key, f"work {key}", keep=4))
               for key in ("b", "c")]
    for thread in waiting:
        thread.start()
        time.sleep(0.05)
    jobs = {job.key: job for job in board.busy()}
    assert [board.ahead(jobs[k]) for k in ("a", "b", "c")] == [0, 0, 1]
    assert words(jobs["c"], 1)[0].startswith("work c: waiting for the server (1 ahead of you")
    began = time.perf_counter()
    assert board.run("k", "kept", lambda progress: 0, "kept", keep=4) == 41  # while the only worker is busy
    assert time.perf_counter() - began < 0.05
    release.set()
    for thread in (first, *waiting):
        thread.join(10)
    assert board.known("k", "c") == (True, "c")


def test_work_inside_work_runs_in_the_worker_that_needs_it():
    board = Board(1)

    def outer(progress):
        return board.run("inner", 1, lambda p: 20, "inner", keep=2) + 1

    assert board.run("outer", 1, outer, "outer", keep=2) == 21
    assert board.known("inner", 1) == (True, 20)


def test_an_error_reaches_every_caller_and_is_not_kept():
    board, release, calls = Board(2), threading.Event(), []

    def failing(progress):
        calls.append(1)
        release.wait(10)
        raise ValueError("bad run")

    errors = []

    def call():
        try:
            board.run("k", "x", failing, "x", keep=2)
        except ValueError as error:
            errors.append(str(error))

    threads = [threading.Thread(target=call) for _ in range(3)]
    together(threads, release)
    assert errors == ["bad run"] * 3 and len(calls) == 1 and board.known("k", "x") == (False, None)
    assert board.run("k", "x", lambda p: "again", "x", keep=2) == "again"  # asked again: computed again


def test_each_kind_keeps_its_most_recently_used_results():
    board = Board(1)
    for key in (1, 2):
        board.run("k", key, lambda p, key=key: key, "k", keep=2)
    board.known("k", 1)  # used: 2 is now the oldest
    board.run("k", 3, lambda p: 3, "k", keep=2)
    assert [board.known("k", key)[0] for key in (1, 2, 3)] == [True, False, True]


def test_words_for_work_that_counts_its_steps_or_not():
    job = Job("k", "x", "Decomposing vgg11-moda", 0, lambda p: None, 1)
    job.started_at = time.monotonic() - 3
    assert words(job, 0)[0] == "Decomposing vgg11-moda… (3 s)"
    job.progress(3, 12)
    assert words(job, 0) == ("Decomposing vgg11-moda: 3 of 12", 0.25)
    job.progress(40, 100, "calibrate: training the remix layer, epoch 2/5")
    assert words(job, 0) == ("Decomposing vgg11-moda: calibrate: training the remix layer, epoch 2/5", 0.4)


@pytest.mark.parametrize("workers", [1, 2])
def test_never_more_work_at_once_than_workers(workers):
    board, running, most, lock = Board(workers), [0], [0], threading.Lock()

    def work(progress):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return 1

    threads = [threading.Thread(target=lambda key=key: board.run("k", key, work, "w", keep=16)) for key in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert most[0] == workers
