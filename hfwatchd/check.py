"""One pass over every watched folder: load manifests, judge every file, then read the coverage."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from .config import Config
from .coverage import FileRecord, WatchCoverage, cover
from .devices import DeviceGate
from .exits import ExitCode
from .folder import WatchedFolder, triage, unvouched, walk
from .hub import Hub, HubError
from .judge import CHECK, PREHASH_MIN, Judge, Outcome
from .logs import Log
from .manifest import Status
from .manifests import Manifests
from .pool import Job, Pool
from .state import State

SWITCH_INTERVAL = 0.0005  # seconds: the GIL switch interval while the workers hash beside Python work


@dataclass
class CheckResult:
    watches: list[WatchCoverage] = field(default_factory=list)
    hashed_bytes: int = 0
    hashed_files: int = 0
    seconds: float = 0.0

    @property
    def records(self) -> list[FileRecord]:
        return [r for w in self.watches for r in w.records()]

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys((str(s) for s in (Status.MATCHED, Status.MISMATCH, Status.INCOMPLETE, Status.MISSING,
                                               Status.UNKNOWN)), 0)
        for r in self.records:
            out[str(r.status)] = out.get(str(r.status), 0) + 1
        return out

    @property
    def exit_code(self) -> ExitCode:
        c = self.counts()
        if c[Status.MISMATCH]:
            return ExitCode.MISMATCH
        if c[Status.MISSING] or c[Status.INCOMPLETE] or c.get(Status.PENDING, 0):
            return ExitCode.INCOMPLETE
        return ExitCode.OK


class _Progress:
    """A tqdm byte counter on a terminal, nothing otherwise; its total grows as work is found."""

    def __init__(self, total: int, enabled: bool, stream: TextIO) -> None:
        self._bar: Any = None
        self._lock = threading.Lock()
        self._enabled, self._stream, self._total = enabled, stream, total

    def grow(self, n: int) -> None:
        if not self._enabled or n <= 0:
            return
        with self._lock:
            self._total += n
            if self._bar is None:
                from tqdm import tqdm

                self._bar = tqdm(total=self._total, unit="B", unit_scale=True, unit_divisor=1024, desc="hashing",
                                 file=self._stream, leave=False, dynamic_ncols=True)
            else:
                self._bar.total = self._total
                self._bar.refresh()

    def update(self, n: int) -> None:
        if self._bar is not None:
            with self._lock:
                self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def load_all(service: Manifests, folders: list[WatchedFolder]) -> list[tuple[str, HubError]]:
    """Load every watched repo's manifest into its folder; returns the repos that have none at all."""
    failed: list[tuple[str, HubError]] = []
    for folder in folders:
        for rc in folder.config.repos:
            result = service.load(rc)
            service.apply(folder, rc, result)
            if isinstance(result, HubError):
                failed.append((rc.ref.key, result))
    return failed


def run_check(config: Config, state: State, hub: Hub, log: Log, *, progress: bool | None = None,
              stream: TextIO | None = None,
              report: Callable[[Outcome], None] | None = None) -> tuple[CheckResult, list[tuple[str, HubError]]]:
    """Judge every file of every watch once. Returns the result and the repos with no manifest."""
    started = time.monotonic()
    stream = stream or sys.stderr
    folders = [WatchedFolder(w, skip=(config.state_dir,)) for w in config.watches]
    service = Manifests(hub, state, log, ttl=config.hub.manifest_ttl)

    place = None
    if any(w.place != "none" for w in config.watches):
        from .actions import Actions  # placement code is imported only by a run that places

        place = Actions(state, log)

    def collect(o: Outcome) -> None:
        if place is not None:
            place(o)
        if report is not None:
            report(o)

    bar = _Progress(0, stream.isatty() if progress is None else progress, stream)
    stopping = threading.Event()
    judge = Judge(state, CHECK, report=collect, log=log, stopping=stopping, on_bytes=bar.update,
                  gate=DeviceGate())
    pool = Pool(judge.work, workers=config.workers, on_error=judge.on_error, on_give_up=judge.on_give_up,
                settle=CHECK.settle, stopping=stopping)

    # The manifests load in the background (importing huggingface_hub alone takes a quarter second)
    # while the workers already hash the large files the state does not vouch for: those are LFS
    # files, judged by sha256, whatever the manifest turns out to say.
    loaded: list[list[tuple[str, HubError]]] = []
    loader = threading.Thread(target=lambda: loaded.append(load_all(service, folders)),
                              name="hfwatchd-manifests", daemon=True)
    # Workers hash without the GIL but take it for a moment between chunks. While the loader runs
    # pure Python (the huggingface_hub import), the default 5 ms switch interval leaves each of them
    # waiting up to 5 ms for it, twice per 4 MiB chunk; at 0.5 ms they stay fed (measured: a 0.3 s
    # pure-Python load beside two hashing threads cost them 0.5 s at 5 ms, under 0.05 s at 0.5 ms).
    switch = sys.getswitchinterval()
    sys.setswitchinterval(min(switch, SWITCH_INTERVAL))
    loader.start()
    pool.start()
    result = CheckResult()
    try:
        walked = _walk_and_prehash(folders, state, pool, bar, log)
        loader.join()
        failed = loaded[0] if loaded else []
        if failed or not loaded:
            # judging with part of the manifests would call the other repos' files unknown, or worse
            result.seconds = time.monotonic() - started
            return result, failed
        _judge_all(folders, walked, state, pool, bar)
        pool.wait_idle()
    finally:
        pool.stop()
        bar.close()
        sys.setswitchinterval(switch)

    for folder in folders:
        repo_rows = {r.repo: r for r in state.repos(folder.key)}
        result.watches.append(cover(folder.config, dict(folder.manifests), state.files(folder.key),
                                    repo_rows=repo_rows, endpoint=hub.endpoint))
    result.hashed_bytes, result.hashed_files, _ = judge.counters.snapshot()
    result.seconds = time.monotonic() - started
    return result, []



def _walk_and_prehash(folders: list[WatchedFolder], state: State, pool: Pool, bar: _Progress,
                      log: Log) -> dict[str, list[bytes]]:
    """Every folder's files; the large ones the state does not vouch for start hashing (sha256) at once."""
    walked: dict[str, list[bytes]] = {}
    for folder in folders:
        if not os.path.isdir(folder.root):
            log.warning("watch.missing", path=folder.root, error="no such folder: every expected file is missing")
            continue
        walked[folder.key] = walk(folder, lambda d, e: log.warning("scan.unreadable", path=d, error=e.strerror))
        for path, size in unvouched(state, folder, walked[folder.key], min_size=PREHASH_MIN):
            bar.grow(size)
            pool.submit(Job(folder, path, "prehash"))
    return walked


def _judge_all(folders: list[WatchedFolder], walked: dict[str, list[bytes]], state: State, pool: Pool,
               bar: _Progress) -> None:
    """Queue every file whose stored verdict does not hold; forget the rows of files gone from disk."""
    for folder in folders:
        folder.ready = True
        if folder.key not in walked:
            continue
        # the fast path of a re-check: an unchanged file whose verdict still holds is not even queued
        changed, _, gone = triage(state, folder, walked.pop(folder.key), full=True)
        for path in changed:
            if path not in pool.prehashing:
                with contextlib.suppress(OSError):
                    bar.grow(os.lstat(path).st_size)
            pool.submit(Job(folder, path, "scan"))
        # files judged earlier that are gone from disk are forgotten, so they count as missing again
        state.forget_many(gone)
