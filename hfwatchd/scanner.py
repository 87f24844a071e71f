"""The daemon's scan thread: full passes over folders (start, rescan, overflow) and new subfolders.

Full scans are coalesced: one waiting pass per folder at a time, whatever asked for it, so a
burst of overflows or a start with a cached manifest gives one `scan.finished` per pass.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable

from .folder import WatchedFolder, triage, walk
from .logs import Log
from .pool import Job, Pool
from .state import State, StateError


class Scanner:
    def __init__(self, state: State, pool: Pool, log: Log, *, folders: Callable[[str], WatchedFolder | None],
                 stopping: threading.Event) -> None:
        self.state = state
        self.pool = pool
        self.log = log
        self._folder = folders
        self.stopping = stopping
        self._q: queue.SimpleQueue[tuple[str, str | None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._waiting: set[str] = set()
        self.last_scan: dict[str, float] = {}  # folder -> unix time its last full pass ended
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="hfwatchd-scanner", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._q.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    def full(self, key: str) -> None:
        """Queue a full pass over a folder, unless one is already waiting (overflows come in bursts)."""
        with self._lock:
            if key in self._waiting:
                return
            self._waiting.add(key)
        self._q.put((key, None))

    def subfolder(self, key: str, path: str) -> None:
        """A folder appeared inside a watch: inotify missed whatever was written into it before its watch."""
        self._q.put((key, path))

    def _loop(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            key, sub = item
            if sub is None:
                with self._lock:
                    self._waiting.discard(key)
            folder = self._folder(key)
            if folder is None or not folder.ready or self.stopping.is_set():
                continue
            try:
                self._scan(folder, sub)
            except StateError as exc:
                self.log.error("state.failed", error=str(exc))
            except Exception as exc:
                self.log.exception("scan.failed", path=folder.root, error=f"{type(exc).__name__}: {exc}")

    def _scan(self, folder: WatchedFolder, sub: str | None) -> None:
        started = time.monotonic()
        if sub is not None:
            if folder.relpath(sub) is None:
                return
            paths = walk(folder, top=sub)
        else:
            if not os.path.isdir(folder.root):
                return
            paths = walk(folder, lambda d, e: self.log.warning("scan.unreadable", path=d, error=e.strerror))
        todo, unchanged, gone = triage(self.state, folder, paths, full=sub is None)
        for path in todo:
            self.pool.submit(Job(folder, path, "scan"))
        if sub is not None:
            return
        self.state.forget_many(gone)
        while not self.pool.wait_idle(timeout=0.5):
            if self.stopping.is_set():
                return
        counts = self.state.counts(folder.key)
        self.last_scan[folder.key] = time.time()
        self.log.info("scan.finished", path=folder.root, files=len(paths), queued=len(todo), unchanged=unchanged,
                      seconds=round(time.monotonic() - started, 3), **counts)
