"""Worker threads: settle a file, hash it, compare it, record the verdict, then report it."""

from __future__ import annotations

import os
import queue
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .completion import control_file, is_temp_name, placeholder_in_progress
from .config import WatchConfig
from .hashing import CHUNK_SIZE, SHA256, Cancelled, FileChanged, NotRegularFile, Signature, StreamHasher, hash_file
from .manifest import INCOMPLETE, MISMATCH, PENDING, UNKNOWN, Index, Manifest, Plan, Verdict, decide
from .state import FileRow, State, StateError

if TYPE_CHECKING:
    from .progressive import Tracker  # the daemon's; a check never loads it

PREHASH_MIN = 1 << 20
# a file that appears with an mtime older than this was moved or linked in whole (`mv` keeps mtime)
ARRIVED_AGE_NS = 2_000_000_000  # files this large are LFS files in practice: sha256 is worth computing early
DAEMON = "daemon"
_RANK = {"created": 0, "scan": 1, "event": 2}  # what a queued job for a path is upgraded to
CHECK = "check"
MAX_ATTEMPTS = 5


class WatchedFolder:
    """A watch at run time: its config, its current manifests and the index built from them."""

    def __init__(self, config: WatchConfig, skip: tuple[Path, ...] = ()) -> None:
        self.config = config
        self.root = os.path.abspath(config.path)
        self.key = self.root
        self.manifests: dict[str, Manifest] = {}
        self.index = Index.build([])
        # judged only once every repo has a manifest (or can never have one): judging with part of
        # them would map a file to the wrong repo's entry and keep that verdict
        self.ready = False
        self._lock = threading.Lock()
        # placement targets and hfwatchd's own state are never judged, even inside a watched folder
        dirs = [os.path.abspath(d) for d in (*skip, config.place_dir) if d is not None]
        self.skip_dirs = tuple(dirs)

    def set_manifest(self, manifest: Manifest) -> Manifest | None:
        """Use `manifest` for its repo from now on; returns the one it replaces."""
        with self._lock:
            old = self.manifests.get(manifest.repo.key)
            self.manifests[manifest.repo.key] = manifest
            order = [rc.ref.key for rc in self.config.repos]
            self.index = Index.build(self.manifests[k] for k in order if k in self.manifests)
            return old

    def relpath(self, path: str) -> str | None:
        """The path relative to this folder with `/` separators, or None if it is outside or skipped."""
        if not path.startswith(self.root + os.sep):
            return None
        if any(path == d or path.startswith(d + os.sep) for d in self.skip_dirs):
            return None
        return path[len(self.root) + 1 :].replace(os.sep, "/")


@dataclass(frozen=True, slots=True)
class Job:
    folder: WatchedFolder
    path: str  # absolute; may hold surrogate escapes for names that are not UTF-8
    reason: str = "scan"  # scan | event
    attempt: int = 0


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
        """The same non-final verdict as last time (an interrupted download seen again): not worth a new line."""
        p = self.previous
        return (
            p is not None
            and p.status == self.verdict.status == INCOMPLETE
            and p.rfilename == self.verdict.rfilename
            and (p.signature is None or p.signature == self.signature)
        )


@dataclass
class Counters:
    hashed_bytes: int = 0
    hashed_files: int = 0
    skipped: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)


def _fskey(path: str) -> bytes:
    return os.fsencode(path)


class Pool:
    """A fixed set of worker threads fed by a queue; `check` and the daemon share it."""

    def __init__(
        self,
        state: State,
        *,
        workers: int,
        report: Callable[[Outcome], None],
        log: Any,
        mode: str = DAEMON,
        settle: float = 0.05,
        on_bytes: Callable[[int], None] | None = None,
        tracker: Tracker | None = None,
    ) -> None:
        self.state = state
        self.workers = workers
        self.report = report
        self.log = log
        self.mode = mode
        self.settle = settle
        self.on_bytes = on_bytes
        self.tracker = tracker
        self.stopping = threading.Event()
        self.counters = Counters()
        self._q: queue.Queue[Job | None] = queue.Queue()
        self._queued: dict[str, str] = {}  # path -> the strongest reason it is queued for
        self._judging: set[str] = set()
        self.prehashed: dict[str, tuple[Signature, str]] = {}  # path -> (signature, sha256) hashed early
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
        """Block until nothing is queued or being judged."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._queued and not self.prehashing and self._active == 0,
                                       timeout)

    # --- work ----------------------------------------------------------------------------------

    def _run(self) -> None:
        buf = bytearray(CHUNK_SIZE)  # one reused buffer per thread keeps RSS flat whatever the file sizes
        while True:
            job = self._q.get()
            if job is None:
                return
            with self._qlock:
                if job.reason != "prehash":
                    reason = self._queued.pop(job.path, job.reason)
                    if reason != job.reason:
                        job = Job(job.folder, job.path, reason, job.attempt)
                if job.path in self._judging:
                    # another worker is on this very file (a close and a rename a millisecond apart):
                    # it looks again when done, so one file never gets two verdicts at once
                    if job.reason == "prehash":
                        self.prehashing.discard(job.path)
                    else:
                        self._again[job.path] = job
                    continue
                self._judging.add(job.path)
                self._active += 1
            try:
                if not self.stopping.is_set():
                    self._judge(job, buf)
            except Cancelled:
                pass
            except StateError as exc:
                self.log.error("state.failed", path=job.path, error=str(exc))
            except Exception as exc:
                self.log.exception("worker.failed", path=job.path, error=f"{type(exc).__name__}: {exc}")
            finally:
                with self._idle:
                    self._judging.discard(job.path)
                    deferred = self._again.pop(job.path, None)
                    if deferred is not None and not self.stopping.is_set() and job.path not in self._queued:
                        # queued before this worker counts itself idle, so wait_idle never sees a gap
                        self._queued[job.path] = deferred.reason
                        self._q.put(deferred)
                    self._active -= 1
                    self._idle.notify_all()

    def _retry(self, job: Job, why: str) -> None:
        if job.attempt + 1 >= MAX_ATTEMPTS:
            self.log.debug("file.unsettled", path=job.path, why=why)
            return
        # a short pause lets a writer finish; waiting on the stop event keeps shutdown prompt
        if not self.stopping.wait(self.settle * (2 ** job.attempt)):
            self.submit(Job(job.folder, job.path, job.reason, job.attempt + 1))

    def still_valid(self, folder: WatchedFolder, row: FileRow, rel: str, size: int) -> bool:
        """Whether the stored verdict of an unchanged file holds against the current manifests."""
        if row.status == PENDING:
            return False
        if row.status == UNKNOWN:
            plan = folder.index.plan(rel, size)
            return not plan.by_name and not plan.by_content
        if row.repo is None:
            return False
        m = folder.manifests.get(row.repo)
        if m is None or row.rfilename is None:
            return False
        if (m.commit or None) == row.commit:
            return True
        entry = m.entries.get(row.rfilename)
        return entry is not None and entry.expected == row.expected and entry.size == row.expected_size

    def _judge(self, job: Job, buf: bytearray) -> None:
        if job.reason == "prehash":
            self._prehash(job, buf)
            return
        folder, path = job.folder, job.path
        rel = folder.relpath(path)
        if rel is None or is_temp_name(rel) or not folder.ready:
            return  # a folder becoming ready is scanned whole
        key = _fskey(path)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            self.state.forget(key)
            return
        except OSError as exc:
            self.log.warning("file.unreadable", path=path, error=exc.strerror)
            return
        if not stat.S_ISREG(st.st_mode):
            return  # FIFOs, sockets, devices and symlinks are never opened
        sig = Signature.of(st)
        if job.reason == "created" and time.time_ns() - sig.mtime_ns < ARRIVED_AGE_NS:
            return  # a download just starting (wget, curl, a browser placeholder): its close or rename comes
        previous = self.state.get(key)
        if previous is not None and previous.signature == sig and self.still_valid(folder, previous, rel, sig.size):
            self.counters.skipped += 1
            return

        if self.mode == DAEMON and time.time_ns() - sig.mtime_ns < 2_000_000_000:
            # recently written: make sure the writer is done (size, mtime and inode stay put)
            if self.stopping.wait(self.settle):
                return
            try:
                again = Signature.of(os.lstat(path))
            except OSError:
                return
            if again != sig:
                self._retry(job, "still being written")
                return

        in_progress = control_file(path) is not None or (sig.size == 0 and placeholder_in_progress(path))
        if in_progress:
            if self.mode == DAEMON and job.reason == "event":
                return  # the rename or the control file's deletion will bring it back
            plan = folder.index.plan(rel, sig.size)
            v = decide(plan, path, sig.size, {})
            if v.rfilename is not None:
                v = Verdict(INCOMPLETE, path, sig.size, v.repo, v.revision, v.rfilename, v.commit,
                            v.expected_size, v.algorithm, v.expected, None, v.matched_by)
                self.state.record(folder.key, key, None, v, logged=self.mode == CHECK)
                self._emit(Outcome(job, v, None, 0.0, previous))
            return

        plan = folder.index.plan(rel, sig.size)
        started = time.monotonic()
        digests: dict[str, str] = {}
        head_start = 0
        if self._worth_hashing(plan, sig.size):
            self.state.mark_pending(folder.key, key)
            resume = None
            early = self.prehashed.pop(path, None)
            if early is not None and early[0] == sig and plan.algorithms == {SHA256}:
                digests = {SHA256: early[1]}
            elif self.tracker is not None:
                progress = self.tracker.take(sig.dev, sig.ino)
                if progress is not None and plan.algorithms == {SHA256} and progress.offset <= sig.size:
                    resume = StreamHasher.resume(progress.sha256, progress.offset)
                    head_start = progress.offset
            try:
                if not digests:
                    digests, _ = hash_file(path, plan.algorithms, expected=sig, progress=self.on_bytes,
                                           cancel=self.stopping, buf=buf, resume=resume)
                    self.counters.hashed_bytes += sig.size - head_start
                    self.counters.hashed_files += 1
                if head_start and decide(plan, path, sig.size, digests).status == MISMATCH:
                    # bytes read while the download ran may have been rewritten since: confirm from disk
                    head_start = 0
                    digests, _ = hash_file(path, plan.algorithms, expected=sig, cancel=self.stopping, buf=buf)
            except FileChanged:
                self._retry(job, "changed while hashed")
                return
            except NotRegularFile:
                return
            except FileNotFoundError:
                self.state.forget(key)
                return
            except PermissionError as exc:
                self.log.warning("file.unreadable", path=path, error=exc.strerror)
                self.state.forget(key)
                return
        v = decide(plan, path, sig.size, digests)
        seconds = time.monotonic() - started
        self.state.record(folder.key, key, sig, v, logged=self.mode == CHECK)
        self._emit(Outcome(job, v, sig, seconds, previous, head_start))

    def _prehash(self, job: Job, buf: bytearray) -> None:
        """sha256 of a large file before the manifests are known (see check.py)."""
        try:
            digests, sig = hash_file(job.path, frozenset({SHA256}), progress=self.on_bytes, cancel=self.stopping,
                                     buf=buf)
        except (OSError, FileChanged):
            return  # judged normally later
        finally:
            with self._qlock:
                self.prehashing.discard(job.path)
        self.prehashed[job.path] = (sig, digests[SHA256])
        self.counters.hashed_bytes += sig.size
        self.counters.hashed_files += 1

    @staticmethod
    def _worth_hashing(plan: Plan, size: int) -> bool:
        """A file shorter than its named entry, and of no other entry's size, is incomplete without reading it."""
        if not plan.algorithms:
            return False
        if plan.by_content:
            return True
        return any(c.entry.size is None or size >= c.entry.size for c in plan.by_name)

    def _emit(self, outcome: Outcome) -> None:
        with self._qlock:
            self.counters.verdicts[outcome.verdict.status] = self.counters.verdicts.get(outcome.verdict.status, 0) + 1
        self.report(outcome)


def triage(pool: Pool, folder: WatchedFolder, paths: list[bytes], *,
           full: bool) -> tuple[list[str], int, list[bytes]]:
    """Split a scan's paths into those to judge and those whose stored verdict still holds.

    Returns (to judge, unchanged count, rows whose file is gone — only for a full scan). The
    sorted paths are merged with the rows streamed in path order, so a 100,000-file folder
    costs no more memory than its list of paths. `paths` is sorted in place.
    """
    paths.sort()
    todo: list[str] = []
    unchanged = 0
    gone: list[bytes] = []
    inside = os.fsencode(folder.root + os.sep)
    i, n = 0, len(paths)
    for row in pool.state.iter_files(folder.key, ordered=True):
        while i < n and paths[i] < row.path:
            todo.append(os.fsdecode(paths[i]))
            i += 1
        if i >= n or paths[i] != row.path:
            # rows outside the folder are files placement moved away: their verdict stays
            if full and row.path.startswith(inside):
                gone.append(row.path)
            continue
        p = os.fsdecode(paths[i])
        i += 1
        try:
            sig = Signature.of(os.lstat(p))
        except OSError:
            continue
        rel = folder.relpath(p)
        if (row.signature is not None and rel is not None and row.signature == sig
                and pool.still_valid(folder, row, rel, sig.size)):
            unchanged += 1
        else:
            todo.append(p)
    todo.extend(os.fsdecode(p) for p in paths[i:])
    return todo, unchanged, gone


def unvouched(state: State, folder: WatchedFolder, paths: list[bytes], *,
              min_size: int) -> list[tuple[str, int]]:
    """Files of at least `min_size` bytes whose stored signature does not match: they will be hashed."""
    paths.sort()
    rows = state.iter_files(folder.key, ordered=True)
    row = next(rows, None)
    out: list[tuple[str, int]] = []
    for p in paths:
        while row is not None and row.path < p:
            row = next(rows, None)
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if st.st_size < min_size or not stat.S_ISREG(st.st_mode):
            continue
        if row is not None and row.path == p and row.status != PENDING and row.signature == Signature.of(st):
            continue
        out.append((os.fsdecode(p), st.st_size))
    for _ in rows:  # drain, so the read connection closes now
        pass
    return out


def walk(folder: WatchedFolder, on_error: Callable[[str, OSError], None] | None = None,
         top: str | None = None) -> list[bytes]:
    """Every candidate file under a watched folder (or its subfolder `top`), as bytes paths.

    Temp names and skipped dirs are left out and links are not followed. Bytes, not str: a
    name that is not UTF-8 stays exact, and a 100,000-file list stays small.
    """
    out: list[bytes] = []
    root = os.fsencode(folder.root)
    stack = [os.fsencode(top if top is not None else folder.root)]
    skip = tuple(os.fsencode(d) for d in folder.skip_dirs)
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except OSError as exc:
            if on_error is not None:
                on_error(os.fsdecode(d), exc)
            continue
        with it:
            for entry in it:
                p = entry.path
                if any(p == s or p.startswith(s + b"/") for s in skip):
                    continue
                rel = os.fsdecode(p[len(root) + 1 :])
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if not is_temp_name(rel + "/"):
                            stack.append(p)
                    elif entry.is_file(follow_symlinks=False) and not is_temp_name(rel):
                        out.append(p)
                except OSError:
                    continue
    return out
