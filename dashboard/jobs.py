"""Heavy work for a classroom: one pool of workers for the whole server, the same work done once, bounded results,
and words for every visitor who waits (docs/design.md, "What may be cached for everyone").

- *Heavy work* (loading a run, evaluating it on the test set, a decomposition, a composition's accuracy, an
  export, a repair, a study) runs on the server's pool of ``WORKERS`` threads, one per core, so thirty visitors
  never start thirty computations at once: the rest wait their turn.
- *The same work once*: a visitor who asks for what another visitor's request is already computing (or has queued)
  waits for that computation (single flight), from whatever page.
- *Bounded*: each kind of work keeps its ``keep`` most recently used results.
- *Words*: while a visitor's page waits, where the result will appear it says what is being computed and "k ahead
  of you" while the work waits for a worker, then the work's progress ("12 of 20") or how long it has run.
- *Light work* (figures from cached numbers, a τ step on cached rates) never comes here: it runs at once in the
  visitor's own script thread, never behind heavy work.

A result is shared by every visitor, not copied: it must not be changed (the engine hands out copies of what a
page might change). Work called from inside other work (a composition needs the run's logits) runs in the worker
that needs it, so that workers never wait for each other's queue.
"""
from __future__ import annotations

import itertools
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable, Hashable

WORKERS = max(1, os.cpu_count() or 1)
FIRST_WORDS = 0.1  # seconds of silence before a wait is explained: quick work shows nothing
POLL = 0.25  # seconds between updates of a waiting visitor's words
Progress = Callable[..., None]  # progress(done, total) or progress(done, total, note)


class Job:
    """One computation: its key, the words for it, its place in the queue, its progress and its outcome."""

    def __init__(self, kind: str, key: Hashable, label: str, order: int, work: Callable[[Progress], Any],
                 keep: int) -> None:
        self.kind, self.key, self.label, self.order, self.work, self.keep = kind, key, label, order, work, keep
        self.future: Future = Future()
        self.started_at: float | None = None
        self.done, self.total, self.note = 0, 0, ""

    def progress(self, done: int, total: int, note: str = "") -> None:
        self.done, self.total, self.note = int(done), int(total), str(note)


class Board:
    """The server's pool, its jobs (queued or running) and the results of each kind of work."""

    def __init__(self, workers: int = WORKERS) -> None:
        self.workers = workers
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="moda-job")
        self._lock = threading.Lock()
        self._jobs: dict[Hashable, Job] = {}
        self._results: dict[str, OrderedDict[Hashable, Any]] = {}
        self._order = itertools.count()
        self._local = threading.local()  # set in the pool's threads while they work

    def known(self, kind: str, key: Hashable) -> tuple[bool, Any]:
        """(True, result) when ``key``'s work is done and kept; (False, None) otherwise."""
        with self._lock:
            results = self._results.get(kind)
            if results is None or key not in results:
                return False, None
            results.move_to_end(key)
            return True, results[key]

    def ahead(self, job: Job) -> int:
        """How many jobs queued before ``job`` have not started yet."""
        with self._lock:
            return sum(1 for other in self._jobs.values() if other.started_at is None and other.order < job.order)

    def busy(self) -> list[Job]:
        """The jobs queued or running, oldest first."""
        with self._lock:
            return sorted(self._jobs.values(), key=lambda job: job.order)

    def run(self, kind: str, key: Hashable, work: Callable[[Progress], Any], label: str, keep: int,
            show: Callable[[Job], Any] | None = None) -> Any:
        """``work(progress)``'s result for ``key``: kept, being computed (waited for), or computed now on the pool.
        ``show(job)`` waits for the job while telling the visitor (``wait_with_words``); without it the call just
        waits. Work's exceptions reach every caller waiting for it; a failed result is not kept."""
        full_key = (kind, key)
        with self._lock:
            results = self._results.setdefault(kind, OrderedDict())
            if key in results:
                results.move_to_end(key)
                return results[key]
            job = self._jobs.get(full_key)
            if job is None:
                job = self._jobs[full_key] = Job(kind, key, label, next(self._order), work, keep)
                if not getattr(self._local, "working", False):
                    self._pool.submit(self._execute, job)
        if getattr(self._local, "working", False):  # inside other work: run it here, or wait for a worker doing it
            self._execute(job)
            return job.future.result()
        return show(job) if show is not None else job.future.result()

    def _claim(self, job: Job) -> bool:
        with self._lock:
            if job.started_at is not None:
                return False
            job.started_at = time.monotonic()
            return True

    def _execute(self, job: Job) -> None:
        if not self._claim(job):  # another worker has it (queued work taken by work that needed it)
            return
        before = getattr(self._local, "working", False)
        self._local.working = True
        try:
            value = job.work(job.progress)
        except BaseException as error:  # noqa: BLE001 - every waiting visitor hears of it
            with self._lock:
                self._jobs.pop((job.kind, job.key), None)
            job.future.set_exception(error)
        else:
            with self._lock:
                results = self._results.setdefault(job.kind, OrderedDict())
                results[job.key] = value
                while len(results) > job.keep:
                    results.popitem(last=False)
                self._jobs.pop((job.kind, job.key), None)
            job.future.set_result(value)
        finally:
            self._local.working = before

    def clear(self) -> None:
        """Forget every kept result (running work finishes and is kept)."""
        with self._lock:
            self._results.clear()


_board: Board | None = None
_board_lock = threading.Lock()


def board() -> Board:
    """The server's one board (made on first use)."""
    global _board
    with _board_lock:
        if _board is None:
            _board = Board()
        return _board


def words(job: Job, ahead: int, now: float | None = None) -> tuple[str, float | None]:
    """What a waiting visitor reads about ``job`` and, where the work counts its steps, the share done."""
    if job.started_at is None:
        line = f"{ahead} ahead of you" if ahead else "next in line"
        return f"{job.label}: waiting for the server ({line}; it works on {board().workers} at a time)…", None
    if job.total > 0:  # counted steps, or (with a note) the share done of stages the note names
        step = job.note or f"{job.done} of {job.total}"
        return f"{job.label}: {step}", min(1.0, job.done / job.total)
    seconds = (time.monotonic() if now is None else now) - job.started_at
    return f"{job.label}… ({seconds:.0f} s)" if seconds >= 1 else f"{job.label}…", None


def can_draw() -> bool:
    """Whether this thread runs a visitor's page outside any cached function (where an element would be stored
    with the cached value and shown again on every later hit)."""
    try:
        from streamlit.runtime.scriptrunner import get_script_run_ctx
        from streamlit.runtime.scriptrunner_utils.script_run_context import in_cached_function
    except ImportError:  # another Streamlit: no words rather than words in the wrong place
        return False
    return get_script_run_ctx(suppress_warning=True) is not None and not in_cached_function.get()


def wait_with_words(job: Job) -> Any:
    """Wait for ``job``; after ``FIRST_WORDS`` s say, where the page is, what it computes and how far it is."""
    if not can_draw():
        return job.future.result()
    try:
        return job.future.result(timeout=FIRST_WORDS)
    except FutureTimeout:
        pass
    import streamlit as st

    box = st.empty()
    try:
        while True:
            text, share = words(job, board().ahead(job))
            if share is None:
                box.info(text, icon="⏳")
            else:
                box.progress(share, text=text)
            try:
                return job.future.result(timeout=POLL)
            except FutureTimeout:
                continue
    finally:
        box.empty()


def heavy(kind: str, label: Callable[..., str], keep: int, progress: bool = False) -> Callable:
    """Decorator: calls of the function run on the board (``kind``, its positional arguments as the key, hashable;
    ``label(*args)`` the words; the ``keep`` most recent results kept). With ``progress`` the function is given
    ``progress=`` (``progress(done, total)``)."""
    def wrap(function: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            def work(report: Progress) -> Any:
                return function(*args, progress=report) if progress else function(*args)
            return board().run(kind, args, work, label(*args), keep, show=wait_with_words)

        call.__name__, call.__doc__, call.__wrapped__ = function.__name__, function.__doc__, function  # type: ignore
        call.known = lambda *args: board().known(kind, args)  # type: ignore[attr-defined]
        return call
    return wrap
