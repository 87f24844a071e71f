"""Generic worker threads: one job per path at a time, the strongest reason wins, retries with backoff.

The pool knows nothing of judging: it calls `work(job, buf)` on a worker thread and, when that
returns a `Retry`, submits the job again after a pause. `check` and the daemon share it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from .hashing import CHUNK_SIZE, Cancelled

if TYPE_CHECKING:
    from .folder import WatchedFolder

# why a path is queued: a created event (weak: most files are just starting), a scan, or an event
# that says a download ended (close-write, rename, a control file gone); "prehash" is check's early
# sha256 of a large file, tracked apart from the judging job of the same path
Reason = Literal["created", "scan", "event", "prehash"]
_RANK: dict[Reason, int] = {"created": 0, "scan": 1, "event": 2, "prehash": -1}
MAX_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class Job:
    folder: WatchedFolder
    path: str  # absolute; may hold surrogate escapes for names that are not UTF-8
    reason: Reason = "scan"
    attempt: int = 0


@dataclass(frozen=True, slots=True)
class Retry:
    """Look at the file again later: its writer is not done yet."""

    why: str


Work = Callable[[Job, bytearray], "Retry | None"]
OnError = Callable[[Job, Exception], None]


class Pool:
    """A fixed set of worker threads fed by a queue."""

    def __init__(self, work: Work, *, workers: int, on_error: OnError, settle: float = 0.05,
                 on_give_up: Callable[[Job, str], None] | None = None,
                 stopping: threading.Event | None = None) -> None:
        self.work = work
        self.workers = workers
        self.on_error = on_error
        self.on_give_up = on_give_up
        self.settle = settle
        self.stopping = stopping if stopping is not None else threading.Event()
        self._q: queue.Queue[Job | None] = queue.Queue()
        self._queued: dict[str, Reason] = {}  # path -> the strongest reason it is queued for
        self._judging: set[str] = set()
        self.prehashing: set[str] = set()
        self._again: dict[str, Job] = {}
        self._qlock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._active = 0
        self._idle = threading.Condition(self._qlock)

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        for i in range(self.workers):
            t = threading.Thread(target=self._run, name=f"hfwatchd-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float | None = None) -> bool:
        """Ask workers to finish or abandon their file (it stays pending) and join them."""
        self.stopping.set()
        for _ in self._threads:
            self._q.put(None)
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        alive = any(t.is_alive() for t in self._threads)
        self._threads = []
        return not alive

    def submit(self, job: Job) -> None:
        with self._qlock:
            if job.reason == "prehash":
                self.prehashing.add(job.path)  # tracked apart: a judge job for the path may queue too
            elif job.path in self._queued:
                # already queued: a close or rename event must not be lost behind a mere "created"
                if _RANK[job.reason] > _RANK[self._queued[job.path]]:
                    self._queued[job.path] = job.reason
                return
            else:
                self._queued[job.path] = job.reason
        self._q.put(job)

    def backlog(self) -> int:
        with self._qlock:
            return len(self._queued) + self._active

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is queued or being worked on."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._queued and not self.prehashing and self._active == 0,
                                       timeout)

    # --- work ----------------------------------------------------------------------------------

    def _take(self, job: Job) -> Job | None:
        """Claim `job`'s path for this worker, or defer it while another worker holds the path."""
        with self._qlock:
            if job.reason == "prehash":
                if job.path in self._judging:
                    self.prehashing.discard(job.path)  # the judge job hashes it anyway
                    return None
            else:
                reason = self._queued.pop(job.path, job.reason)
                if reason != job.reason:
                    job = replace(job, reason=reason)
                if job.path in self._judging:
                    # another worker is on this very file (a close and a rename a millisecond apart):
                    # it looks again when done, so one file never gets two verdicts at once
                    self._again[job.path] = job
                    return None
            self._judging.add(job.path)
            self._active += 1
            return job

    def _run(self) -> None:
        buf = bytearray(CHUNK_SIZE)  # one reused buffer per thread keeps RSS flat whatever the file sizes
        while True:
            item = self._q.get()
            if item is None:
                return
            job = self._take(item)
            if job is None:
                continue
            try:
                if not self.stopping.is_set():
                    retry = self.work(job, buf)
                    if retry is not None:
                        # still holding the path: wait_idle sees no gap between this look and the next
                        self._retry(job, retry.why)
            except Cancelled:
                pass
            except Exception as exc:  # noqa: BLE001 - a worker outlives any one file; on_error logs it
                self.on_error(job, exc)
            finally:
                self._release(job)

    def _release(self, job: Job) -> None:
        with self._idle:
            self._judging.discard(job.path)
            if job.reason == "prehash":
                self.prehashing.discard(job.path)
            deferred = self._again.pop(job.path, None)
            if deferred is not None and not self.stopping.is_set() and job.path not in self._queued:
                # queued before this worker counts itself idle, so wait_idle never sees a gap
                self._queued[job.path] = deferred.reason
                self._q.put(deferred)
            self._active -= 1
            self._idle.notify_all()

    def _retry(self, job: Job, why: str) -> None:
        if job.attempt + 1 >= MAX_ATTEMPTS:
            if self.on_give_up is not None:
                self.on_give_up(job, why)
            return
        # a short pause lets a writer finish; waiting on the stop event keeps shutdown prompt
        if not self.stopping.wait(self.settle * (2 ** job.attempt)):
            self.submit(replace(job, attempt=job.attempt + 1))
