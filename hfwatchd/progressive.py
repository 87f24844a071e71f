"""Hash downloads while they are written, so the verdict comes moments after the last byte.

A download is tracked from its creation (whatever its temp name) through an open descriptor,
so the state follows the inode across the renames browsers make at the end. Only appended
bytes are read, once. Anything that does not look like a plain sequential write (shrinking,
a size jump no network gives, an aria2c control file beside it) drops the file: it gets a full
hash after completion instead. A progressive mismatch is never trusted alone (see pool.py).

Descriptors: the tracker holds one read-only descriptor per download it follows, never more than
`max_files` (64 by default, and at most a quarter of the soft RLIMIT_NOFILE), so while following
downloads the daemon holds at most max_files + its fixed set (state database, log file, inotify,
sockets) + one per worker hashing. A descriptor is closed as soon as the file is judged
(`release`, or `take` when its progress is used), when the file is deleted (within one tick, 0.1 s),
shrinks, or gets an aria2c control file, and after `idle_drop` (60 s) without growth. A file that
was judged is not opened again by a late creation event unless it is written again.
"""

from __future__ import annotations

import hashlib
import os
import queue
import resource
import stat
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .completion import is_temp_name

if TYPE_CHECKING:
    from .logs import Log

MAX_STEP = 64 << 20  # bytes read per file per tick, so one fast file cannot starve the others
MAX_RATE = 2_000_000_000  # bytes/s: faster growth than this is a preallocation or a local copy, not a download
RELEASED_MEMORY = 4096  # judged files remembered, so a creation event processed late does not reopen one


@dataclass
class Progress:
    """The sha256 of a file's first `offset` bytes, as read while it was written."""

    sha256: Any  # hashlib._Hash
    offset: int


@dataclass
class _Tracked:
    fd: int
    path: str
    key: tuple[int, int]
    progress: Progress
    last_growth: float
    last_size: int
    last_seen: float


class Tracker:
    """One thread following every download in progress; idle (blocked on its queue) when there is none."""

    def __init__(self, log: Log, *, interval: float = 0.1, max_files: int = 64, idle_drop: float = 60.0) -> None:
        self.log = log
        self.interval = interval
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        # a head start is never worth running the daemon out of descriptors
        self.max_files = max_files if soft == resource.RLIM_INFINITY else max(1, min(max_files, soft // 4))
        self.idle_drop = idle_drop
        self._inbox: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._files: dict[tuple[int, int], _Tracked] = {}
        self._released: dict[tuple[int, int], int] = {}  # (dev, ino) -> time.time_ns() of its verdict
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._buf = bytearray(1 << 20)

    # --- called from other threads -------------------------------------------------------------

    def watch(self, path: str) -> None:
        """A file was just created: follow it (non-blocking; safe in a watchdog handler)."""
        self._inbox.put_nowait(path)

    def take(self, dev: int, ino: int) -> Progress | None:
        """Hand over the progress made on a file that is now complete, and close its descriptor."""
        with self._lock:
            t = self._forget((dev, ino))
            return None if t is None else t.progress

    def release(self, dev: int, ino: int) -> None:
        """The file has its verdict: close its descriptor now (whether or not `take` was used)."""
        with self._lock:
            self._forget((dev, ino))

    def downloads(self) -> list[tuple[str, int, int]]:
        """(path now, size, bytes hashed) of every download followed (for the web page): no file I/O but readlink."""
        out: list[tuple[str, int, int]] = []
        with self._lock:  # descriptors are closed under this lock: each fd below is still the file's
            for t in self._files.values():
                try:
                    path = os.readlink(f"/proc/self/fd/{t.fd}")  # follows the browser's renames
                except OSError:
                    path = t.path
                if not path.endswith(" (deleted)"):
                    out.append((path, t.last_size, t.progress.offset))
        return out

    def open_files(self) -> int:
        """How many descriptors the tracker holds right now (at most `max_files`)."""
        with self._lock:
            return len(self._files)

    def _forget(self, key: tuple[int, int]) -> _Tracked | None:
        """Under the lock: stop following `key`, and remember it was judged."""
        self._released[key] = time.time_ns()
        if len(self._released) > RELEASED_MEMORY:
            del self._released[next(iter(self._released))]  # the oldest: dicts keep insertion order
        t = self._files.pop(key, None)
        if t is not None:
            os.close(t.fd)
        return t

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="hfwatchd-progressive", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._inbox.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._lock:
            for t in self._files.values():
                os.close(t.fd)
            self._files.clear()

    # --- the tracker thread --------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                # block for good when nothing is tracked: an idle daemon does not wake up
                item = self._inbox.get(timeout=self.interval if self._files else None)
            except queue.Empty:
                item = ""
            if item is None:
                return
            if item:
                self._add(item)
            try:
                self._tick()
            except OSError as exc:  # a vanished or unreadable file only loses its head start
                self.log.debug("progressive.error", error=str(exc))

    def _add(self, path: str) -> None:
        if is_temp_name(path.replace(os.sep, "/")) and not path.endswith((".crdownload", ".part")):
            return  # control files, huggingface_hub's own cache, lock files: nothing to hash
        if path.endswith(".aria2") or os.path.lexists(path + ".aria2"):
            return
        with self._lock:
            if len(self._files) >= self.max_files:
                self.log.debug("progressive.skipped", path=path, why=f"already following {self.max_files} files")
                return
        try:
            if not stat.S_ISREG(os.lstat(path).st_mode):
                return  # FIFOs, devices, sockets and symlinks are never opened
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return
        key = (st.st_dev, st.st_ino)
        now = time.monotonic()
        with self._lock:
            released = self._released.get(key)
            if key in self._files:
                why = None
            elif released is not None and st.st_mtime_ns <= released:
                why = "judged already"  # a creation event handled after the verdict, the file unchanged since
            elif len(self._files) >= self.max_files:
                why = f"already following {self.max_files} files"
            else:
                self._files[key] = _Tracked(fd, path, key, Progress(hashlib.sha256(), 0), now, st.st_size, now)
                return
        os.close(fd)
        if why is not None:
            self.log.debug("progressive.skipped", path=path, why=why)

    def _drop(self, t: _Tracked, why: str) -> None:
        self._files.pop(t.key, None)
        os.close(t.fd)
        self.log.debug("progressive.dropped", path=t.path, why=why)

    def _tick(self) -> None:
        now = time.monotonic()
        with self._lock:
            for t in list(self._files.values()):
                st = os.fstat(t.fd)
                size = st.st_size
                elapsed = max(now - t.last_seen, 1e-3)
                if st.st_nlink == 0:
                    self._drop(t, "deleted")
                elif size < t.progress.offset:
                    self._drop(t, "shrank")
                elif size - t.last_size > MAX_RATE * elapsed + MAX_STEP:
                    self._drop(t, "grew faster than a download: preallocated or copied")
                elif os.path.lexists(t.path + ".aria2"):
                    self._drop(t, "aria2c control file")
                elif size == t.last_size and now - t.last_growth > self.idle_drop:
                    self._drop(t, "stalled")
                else:
                    if size > t.last_size:
                        t.last_growth = now
                    t.last_size, t.last_seen = size, now
                    self._advance(t, min(size, t.progress.offset + MAX_STEP))

    def _advance(self, t: _Tracked, until: int) -> None:
        view = memoryview(self._buf)
        p = t.progress
        while p.offset < until:
            n = os.preadv(t.fd, [view[: min(len(view), until - p.offset)]], p.offset)
            if n == 0:
                break
            p.sha256.update(view[:n])
            p.offset += n
