"""The judging pipeline: look at a file, let its writer finish, hash it, compare, record -> Outcome.

Each step is a small method that returns a value (an `Outcome`, a `Retry`, or None for "no
verdict now"); a `Policy` says how the daemon and `check` differ. Workers call `Judge.work`.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .completion import control_file, is_temp_name, placeholder_in_progress
from .folder import verdict_holds
from .hashing import FileChanged, NotRegularFile, Signature, StreamHasher, hash_file
from .manifest import INCOMPLETE, MISMATCH, SHA256, Algorithm, Plan, Status, Verdict, decide
from .pool import Job, Retry
from .state import FileRow, State, StateError

if TYPE_CHECKING:
    from .devices import DeviceGate
    from .logs import Log
    from .progressive import Tracker  # the daemon's; a check never loads it

PREHASH_MIN = 1 << 20  # files this large are LFS files in practice: check computes their sha256 early
ARRIVED_AGE_NS = 2_000_000_000  # a file that appears with an mtime older than this was moved or linked in whole
RECENT_NS = 2_000_000_000  # a file written more recently than this may still have a writer: settle it first
REPEAT_WINDOW = 5.0  # seconds: the same verdict on the same bytes this soon after the last is not logged again


@dataclass(frozen=True)
class Policy:
    """How a run judges. The daemon follows downloads as they happen; `check` judges what it finds."""

    follow_writers: bool  # settle a recently written file; leave downloads in progress to their end event
    logged: bool  # the verdict needs no log line of its own (check prints its report instead)
    settle: float = 0.05  # seconds a recently written file must stay unchanged


DAEMON = Policy(follow_writers=True, logged=False)
CHECK = Policy(follow_writers=False, logged=True)


@dataclass(frozen=True)
class Outcome:
    """A verdict as recorded, with what the reporter needs around it."""

    job: Job
    verdict: Verdict
    signature: Signature | None
    seconds: float
    previous: FileRow | None
    head_start: int = 0  # bytes hashed while the file was still downloading

    @property
    def repeated(self) -> bool:
        """The verdict the file already had, on the same bytes: not worth a new line.

        An interrupted download seen again, or two events for one completion a moment apart (a close
        and then a rename) that both had the file hashed.
        """
        p = self.previous
        if p is None or p.status != self.verdict.status or p.rfilename != self.verdict.rfilename:
            return False
        if p.status == INCOMPLETE:
            return p.signature is None or p.signature == self.signature
        return (p.signature == self.signature and p.digest == self.verdict.actual and p.judged_at is not None
                and time.time() - p.judged_at < REPEAT_WINDOW)


class Counters:
    """Work done, shared by the workers: every update under one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.hashed_bytes = 0
        self.hashed_files = 0
        self.verdicts: dict[Status, int] = {}

    def hashed(self, nbytes: int) -> None:
        with self._lock:
            self.hashed_bytes += nbytes
            self.hashed_files += 1

    def verdict(self, status: Status) -> None:
        with self._lock:
            self.verdicts[status] = self.verdicts.get(status, 0) + 1

    def snapshot(self) -> tuple[int, int, dict[Status, int]]:
        with self._lock:
            return self.hashed_bytes, self.hashed_files, dict(self.verdicts)


def worth_hashing(plan: Plan, size: int) -> bool:
    """A file shorter than its named entry, and of no other entry's size, is incomplete without reading it."""
    if not plan.algorithms:
        return False
    if plan.by_content:
        return True
    return any(c.entry.size is None or size >= c.entry.size for c in plan.by_name)


class Judge:
    """Turns a job into a recorded verdict; `report` gets every `Outcome` once it is durable."""

    def __init__(self, state: State, policy: Policy, *, report: Callable[[Outcome], None], log: Log,
                 stopping: threading.Event, on_bytes: Callable[[int], None] | None = None,
                 tracker: Tracker | None = None, gate: DeviceGate | None = None) -> None:
        self.state = state
        self.policy = policy
        self.report = report
        self.log = log
        self.stopping = stopping
        self.on_bytes = on_bytes
        self.tracker = tracker
        self.gate = gate
        self.counters = Counters()
        self.prehashed: dict[str, tuple[Signature, str]] = {}  # path -> (signature, sha256) hashed early
        self._prehashed_lock = threading.Lock()

    # --- the pool's entry point ------------------------------------------------------------------

    def work(self, job: Job, buf: bytearray) -> Retry | None:
        if job.reason == "prehash":
            self.prehash(job.path, buf)
            return None
        result = self.judge(job, buf)
        if isinstance(result, Outcome):
            if self.tracker is not None and result.signature is not None:
                # the verdict is final for these bytes: the tracker's descriptor is not needed any more
                self.tracker.release(result.signature.dev, result.signature.ino)
            if not result.repeated:
                self.counters.verdict(result.verdict.status)
            self.report(result)
            return None
        return result

    def on_error(self, job: Job, exc: Exception) -> None:
        if isinstance(exc, StateError):
            self.log.error("state.failed", path=job.path, error=str(exc))
        else:
            self.log.exception("worker.failed", path=job.path, error=f"{type(exc).__name__}: {exc}")

    def on_give_up(self, job: Job, why: str) -> None:
        self.log.debug("file.unsettled", path=job.path, why=why)

    # --- the steps -------------------------------------------------------------------------------

    def judge(self, job: Job, buf: bytearray) -> Outcome | Retry | None:
        folder, path = job.folder, job.path
        rel = folder.relpath(path)
        if rel is None or is_temp_name(rel) or not folder.ready:
            return None  # a folder becoming ready is scanned whole
        sig = self.look(path)
        if sig is None:
            return None
        if job.reason == "created" and time.time_ns() - sig.mtime_ns < ARRIVED_AGE_NS:
            return None  # a download just starting (wget, curl, a browser placeholder): its close or rename comes
        previous = self.state.get(os.fsencode(path))
        # an event means the file was written or moved in: judged again even if its signature looks the
        # same (wget -O and curl -R set the server's mtime back on a same-size re-download into the inode)
        if (previous is not None and job.reason != "event" and previous.signature == sig
                and verdict_holds(folder, previous, rel, sig.size)):
            return None
        if self.policy.follow_writers and time.time_ns() - sig.mtime_ns < RECENT_NS:
            settled = self.settle(path, sig)
            if not isinstance(settled, Signature):
                return settled
        if control_file(path) is not None or (sig.size == 0 and placeholder_in_progress(path)):
            return self.in_progress(job, rel, sig, previous)
        return self.hash_and_decide(job, rel, sig, previous, buf)

    def look(self, path: str) -> Signature | None:
        """The file's signature, or None if it is gone, unreadable or not a regular file (never opened)."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            self.state.forget(os.fsencode(path))
            return None
        except OSError as exc:
            self.log.warning("file.unreadable", path=path, error=exc.strerror)
            return None
        return Signature.of(st) if stat.S_ISREG(st.st_mode) else None  # FIFOs, sockets, devices, symlinks

    def settle(self, path: str, sig: Signature) -> Signature | Retry | None:
        """Make sure a recently written file's writer is done: size, mtime and inode stay put."""
        if self.stopping.wait(self.policy.settle):
            return None
        try:
            again = Signature.of(os.lstat(path))
        except OSError:
            return None
        return sig if again == sig else Retry("still being written")

    def in_progress(self, job: Job, rel: str, sig: Signature, previous: FileRow | None) -> Outcome | None:
        """A download still running (aria2c's control file beside it, or a browser's 0-byte placeholder)."""
        if self.policy.follow_writers and (job.reason == "event" or sig.size == 0):
            # the rename or the control file's deletion brings it back; a 0-byte placeholder never
            # gets a verdict while a browser may still be writing beside it, whatever its temp name
            return None
        plan = job.folder.index.plan(rel, sig.size)
        v = decide(plan, job.path, sig.size, {})
        if v.rfilename is None:
            return None
        v = dataclasses.replace(v, status=INCOMPLETE, actual=None)
        self.state.record(job.folder.key, os.fsencode(job.path), None, v, logged=self.policy.logged)
        return Outcome(job, v, None, 0.0, previous)

    def hash_and_decide(self, job: Job, rel: str, sig: Signature, previous: FileRow | None,
                        buf: bytearray) -> Outcome | Retry | None:
        folder, path = job.folder, job.path
        key = os.fsencode(path)
        plan = folder.index.plan(rel, sig.size)
        started = time.monotonic()
        digests: Mapping[Algorithm, str] = {}
        head_start = 0
        if worth_hashing(plan, sig.size):
            self.state.mark_pending(folder.key, key)
            try:
                digests, head_start = self.digests(path, sig, plan, buf)
            except FileChanged:
                return Retry("changed while hashed")
            except NotRegularFile:
                return None
            except FileNotFoundError:
                self.state.forget(key)
                return None
            except PermissionError as exc:
                self.log.warning("file.unreadable", path=path, error=exc.strerror)
                self.state.forget(key)
                return None
        v = decide(plan, path, sig.size, digests)
        seconds = time.monotonic() - started
        self.state.record(folder.key, key, sig, v, logged=self.policy.logged)
        return Outcome(job, v, sig, seconds, previous, head_start)

    def digests(self, path: str, sig: Signature, plan: Plan, buf: bytearray) -> tuple[Mapping[Algorithm, str], int]:
        """The digests `plan` needs, reusing what was hashed early or while the file downloaded."""
        sha256_only = plan.algorithms == {SHA256}
        with self._prehashed_lock:
            early = self.prehashed.pop(path, None)
        if early is not None and early[0] == sig and sha256_only:
            return {SHA256: early[1]}, 0
        resume = None
        if self.tracker is not None and sha256_only:
            progress = self.tracker.take(sig.dev, sig.ino)
            if progress is not None and progress.offset <= sig.size:
                resume = StreamHasher.resume(progress.sha256, progress.offset)
        head_start = resume.offset if resume is not None else 0
        digests = self._hash(path, sig, plan.algorithms, buf, resume)
        self.counters.hashed(sig.size - head_start)
        if head_start and decide(plan, path, sig.size, digests).status == MISMATCH:
            # bytes read while the download ran may have been rewritten since: confirm from disk
            digests = self._hash(path, sig, plan.algorithms, buf, None)
            head_start = 0
        return digests, head_start

    def _hash(self, path: str, sig: Signature, algorithms: frozenset[Algorithm], buf: bytearray,
              resume: StreamHasher | None) -> dict[Algorithm, str]:
        # the device's lock, on a rotational disk, is held only while bytes come from the disk (devices.py)
        disk = self.gate.disk(sig.dev) if self.gate is not None else None
        return hash_file(path, algorithms, expected=sig, progress=self.on_bytes, cancel=self.stopping,
                         buf=buf, resume=resume, disk=disk)[0]

    def prehash(self, path: str, buf: bytearray) -> None:
        """sha256 of a large file before the manifests are known (see check.py)."""
        try:
            disk = self.gate.disk(os.lstat(path).st_dev) if self.gate is not None else None
            digests, sig = hash_file(path, frozenset({SHA256}), progress=self.on_bytes, cancel=self.stopping,
                                     buf=buf, disk=disk)
        except (OSError, FileChanged):
            return  # judged normally later
        with self._prehashed_lock:
            self.prehashed[path] = (sig, digests[SHA256])
        self.counters.hashed(sig.size)
