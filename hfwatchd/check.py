"""One pass over every watched folder: load manifests, judge every file, list what is missing."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from .config import Config
from .hub import Hub, HubError, read_token_file
from .manifest import INCOMPLETE, MATCHED, MISMATCH, MISSING, PENDING, UNKNOWN, Verdict
from .pool import CHECK, PREHASH_MIN, Job, Outcome, Pool, WatchedFolder, triage, unvouched, walk
from .state import State

EXIT_OK, EXIT_MISMATCH, EXIT_INCOMPLETE = 0, 1, 2
EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_CONFIG = 64, 69, 78


def make_hub(config: Config) -> Hub:
    token = read_token_file(config.hub.token_file) if config.hub.token_file else None
    return Hub(config.hub.endpoint, config.state_dir / "manifests", token=token, ttl=config.hub.manifest_ttl,
               timeout=config.hub.timeout)


def load_manifests(hub: Hub, folders: list[WatchedFolder], state: State, log: Any,
                   *, refresh: bool = False) -> list[tuple[WatchedFolder, str, HubError]]:
    """Load every watched repo's manifest into its folder; returns the repos that have none at all."""
    failed: list[tuple[WatchedFolder, str, HubError]] = []
    done: dict[tuple[str, str], Any] = {}
    for folder in folders:
        for rc in folder.config.repos:
            cache_key = (str(rc.ref), str(rc.manifest))
            try:
                loaded = done.get(cache_key) or hub.load(rc.ref, manifest_file=rc.manifest, refresh=refresh)
            except HubError as err:
                log.error("manifest.failed", repo=str(rc.ref), error=str(err), retry_in=round(err.retry_in, 1))
                failed.append((folder, rc.ref.key, err))
                continue
            done[cache_key] = loaded
            m = loaded.manifest
            folder.set_manifest(m)
            state.set_repo(folder.key, m.repo.key, m.repo.revision, m.commit, hub.endpoint, len(m.entries),
                           loaded.source)
            fields: dict[str, Any] = {"repo": str(m.repo), "commit": m.commit or None, "files": len(m.entries),
                                      "source": loaded.source}
            if m.unsafe:
                fields["unsafe"] = m.unsafe
            if loaded.error is not None:
                log.warning("manifest.failed", repo=str(rc.ref), error=str(loaded.error),
                            retry_in=round(loaded.error.retry_in, 1))
                fields["stale"] = True
            log.info("manifest.loaded", **fields)
    return failed


@dataclass
class Record:
    """One line of `check` output."""

    status: str
    path: str | None
    repo: str | None = None
    rfilename: str | None = None
    size: int | None = None
    expected_size: int | None = None
    algorithm: str | None = None
    expected: str | None = None
    actual: str | None = None
    commit: str | None = None
    url: str | None = None  # for missing files: the pinned download link

    @classmethod
    def of(cls, v: Verdict) -> Record:
        return cls(v.status, v.path, v.repo, v.rfilename, v.size, v.expected_size, v.algorithm, v.expected,
                   v.actual, v.commit)


@dataclass
class CheckResult:
    records: list[Record] = field(default_factory=list)
    hashed_bytes: int = 0
    hashed_files: int = 0
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys((MATCHED, MISMATCH, INCOMPLETE, MISSING, UNKNOWN), 0)
        for r in self.records:
            out[r.status] = out.get(r.status, 0) + 1
        return out

    @property
    def exit_code(self) -> int:
        c = self.counts()
        if c[MISMATCH]:
            return EXIT_MISMATCH
        if c[MISSING] or c[INCOMPLETE] or c.get(PENDING, 0):
            return EXIT_INCOMPLETE
        return EXIT_OK


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


def run_check(config: Config, state: State, hub: Hub, log: Any, *, progress: bool | None = None,
              stream: TextIO | None = None,
              report: Callable[[Outcome], None] | None = None) -> tuple[CheckResult, list[tuple[str, HubError]]]:
    """Judge every file of every watch once. Returns the result and the repos with no manifest."""
    started = time.monotonic()
    stream = stream or sys.stderr
    folders = [WatchedFolder(w, skip=(config.state_dir,)) for w in config.watches]
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    place = None
    if any(w.place != "none" for w in config.watches):
        from .actions import Actions  # placement code is imported only by a run that places

        place = Actions(state, log)

    def collect(o: Outcome) -> None:
        moved = place(o) if place is not None else None
        if moved is not None:
            o = dataclasses.replace(o, verdict=dataclasses.replace(o.verdict, path=moved))
        with lock:
            outcomes.append(o)
        if report is not None:
            report(o)

    bar = _Progress(0, stream.isatty() if progress is None else progress, stream)
    pool = Pool(state, workers=config.workers, report=collect, log=log, mode=CHECK, on_bytes=bar.update)

    # The manifests load in the background (importing huggingface_hub alone takes a quarter second)
    # while the workers already hash the large files the state does not vouch for: those are LFS
    # files, judged by sha256, whatever the manifest turns out to say.
    loaded: list[list[tuple[WatchedFolder, str, HubError]]] = []
    loader = threading.Thread(target=lambda: loaded.append(load_manifests(hub, folders, state, log)),
                              name="hfwatchd-manifests", daemon=True)
    loader.start()
    walked: dict[str, list[bytes]] = {}
    pool.start()
    try:
        for folder in folders:
            if not os.path.isdir(folder.root):
                log.warning("watch.missing", path=folder.root, error="no such folder: every expected file is missing")
                continue
            walked[folder.key] = walk(folder, lambda d, e: log.warning("scan.unreadable", path=d, error=e.strerror))
            for path, size in unvouched(state, folder, walked[folder.key], min_size=PREHASH_MIN):
                bar.grow(size)
                pool.submit(Job(folder, path, "prehash"))
        loader.join()
        failed = loaded[0] if loaded else []
        result = CheckResult()
        if failed or not loaded:
            # judging with part of the manifests would call the other repos' files unknown, or worse
            result.seconds = time.monotonic() - started
            return result, [(key, err) for _, key, err in failed]
        for folder in folders:
            folder.ready = True
            if folder.key not in walked:
                continue
            # the fast path of a re-check: an unchanged file whose verdict still holds is not even queued
            changed, _, gone = triage(pool, folder, walked.pop(folder.key), full=True)
            for path in changed:
                if path not in pool.prehashing:
                    with contextlib.suppress(OSError):
                        bar.grow(os.lstat(path).st_size)
                pool.submit(Job(folder, path, "scan"))
            # files judged earlier that are gone from disk are forgotten, so they count as missing again
            state.forget_many(gone)
        pool.wait_idle()
    finally:
        pool.stop()
        bar.close()

    judged = {o.verdict.path for o in outcomes}
    result.records = [Record.of(o.verdict) for o in outcomes]
    for folder in folders:
        present = {(o.verdict.repo, o.verdict.rfilename) for o in outcomes if o.job.folder is folder}
        for row in state.files(folder.key):
            present.add((row.repo, row.rfilename))  # rows outside the folder too: files placement moved
            path = os.fsdecode(row.path)
            if path in judged:
                continue
            result.records.append(Record(row.status, path, row.repo, row.rfilename,
                                         row.signature.size if row.signature else None, row.expected_size,
                                         row.algorithm, row.expected, row.digest, row.commit))
        for m in folder.manifests.values():
            for e in m.entries.values():
                if (m.repo.key, e.rfilename) not in present and folder.config.expects(e.rfilename):
                    url = m.repo.resolve_url(hub.endpoint, m.commit, e.rfilename) if m.commit and e.safe else None
                    result.records.append(Record(MISSING, None, m.repo.key, e.rfilename, None, e.size,
                                                 e.algorithm, e.expected, None, m.commit or None, url))
    result.records.sort(key=lambda r: (r.repo or "~", r.rfilename or "", r.path or ""))
    result.hashed_bytes = pool.counters.hashed_bytes
    result.hashed_files = pool.counters.hashed_files
    result.seconds = time.monotonic() - started
    return result, [(key, err) for _, key, err in failed]
