"""The composition root: builds everything, runs the main loop, handles signals, sd_notify and rescans."""

from __future__ import annotations

import contextlib
import os
import queue
import random
import signal
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import __version__
from .actions import Actions
from .check import make_hub
from .config import Config, ConfigError, RepoConfig, WatchConfig, load_config
from .hooks import HookRunner
from .hub import Hub, HubError, Loaded
from .logs import Sink, make_logger
from .manifest import INCOMPLETE, MATCHED, MISMATCH, UNKNOWN, Verdict
from .notify import Notifier
from .pool import DAEMON, Job, Outcome, Pool, WatchedFolder, triage, walk
from .progressive import Tracker
from .state import State, StateError
from .watcher import CandidateHandler, OverflowDetector, WatchError, start_observer, stop_observer

HEALTH_INTERVAL = 5.0  # how often observers and missing folders are looked at: cheap, and rare enough to idle


@dataclass(frozen=True)
class _Fetch:
    folder_key: str
    repo: RepoConfig
    refresh: bool


class _RepoTimer:
    """When to ask the Hub again for one repo, with exponential backoff after failures."""

    def __init__(self, base: float) -> None:
        self.base = base
        self.failures = 0
        self.at = 0.0

    def failed(self, now: float, at_least: float) -> float:
        self.failures += 1
        delay: float = min(3600.0, self.base * 2.0 ** (self.failures - 1))
        delay = max(at_least, delay * random.uniform(0.9, 1.1))  # jitter: many daemons, one mirror
        self.at = now + delay
        return delay

    def succeeded(self, now: float, ttl: float | None) -> None:
        self.failures = 0
        self.at = now + ttl if ttl is not None else float("inf")


class Daemon:
    """hfwatchd in the foreground: observers feed the pool; the main loop owns every decision."""

    def __init__(self, config: Config, *, log: Any, sink: Sink, notifier: Notifier | None = None,
                 retry_base: float = 2.0, settle: float = 0.05) -> None:
        self.config = config
        self.log = log
        self.sink = sink
        self.notifier = notifier or Notifier()
        self.retry_base = retry_base
        self.control: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self.state = State(config.state_dir)
        self.hub: Hub = make_hub(config)
        self.folders: dict[str, WatchedFolder] = {}
        self.observers: dict[str, Any] = {}
        self.timers: dict[tuple[str, str], _RepoTimer] = {}
        self.given_up: set[tuple[str, str]] = set()
        self.tracker = Tracker(log)
        self.pool = Pool(self.state, workers=config.workers, report=self._report, log=log, mode=DAEMON,
                         settle=settle, tracker=self.tracker)
        self.stop_event = threading.Event()
        self._fetch_q: queue.SimpleQueue[_Fetch | None] = queue.SimpleQueue()
        self._scan_q: queue.SimpleQueue[tuple[str, str | None] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._scan_lock = threading.Lock()
        self._watch_errors: dict[str, str | None] = {}
        self._scans_waiting: set[str] = set()
        self._overflow = OverflowDetector(lambda: self.control.put(("overflow",)))
        self.hooks = HookRunner(log)
        self.actions = Actions(self.state, log, self.hooks)
        self.verdicts = 0

    # --- verdicts ------------------------------------------------------------------------------

    def _report(self, o: Outcome) -> None:
        """Log one canonical line per verdict (already durable in state), then run the follow-ups."""
        if not o.repeated:
            self._log_verdict(o.verdict, seconds=o.seconds, head_start=o.head_start)
        self.state.mark_logged(os.fsencode(o.verdict.path))
        if o.repeated:
            return
        self.verdicts += 1
        self.actions(o)

    def _replay(self) -> None:
        """Log the verdicts a killed run committed but did not live to log: an alarm is never lost."""
        try:
            rows = self.state.unlogged()
            for row in rows:
                v = Verdict(row.status, os.fsdecode(row.path), row.signature.size if row.signature else 0,
                            row.repo, row.revision, row.rfilename, row.commit, row.expected_size, row.algorithm,
                            row.expected, row.digest)
                self._log_verdict(v, replayed=True)
                self.state.mark_logged(row.path)
            self.state.flush()
        except StateError as exc:
            self.log.error("state.failed", error=str(exc))

    def _log_verdict(self, v: Verdict, *, seconds: float | None = None, head_start: int = 0,
                     replayed: bool = False) -> None:
        fields: dict[str, Any] = {"path": v.path, "size": v.size}
        if replayed:
            fields["replayed"] = True
        if v.status == UNKNOWN:
            self.log.warning("file.unknown", **fields)
        else:
            fields.update(repo=v.repo, rfilename=v.rfilename, commit=v.commit, expected_size=v.expected_size,
                          matched_by=v.matched_by)
            timing = {"seconds": round(seconds, 3)} if seconds is not None else {}
            if v.status == MATCHED:
                fields.update(algorithm=v.algorithm, digest=v.actual, **timing)
                if head_start:
                    fields["progressive_bytes"] = head_start
                self.log.info("file.matched", **fields)
            elif v.status == MISMATCH:
                fields.update(algorithm=v.algorithm, digest=v.actual, expected=v.expected, actual=v.actual, **timing)
                self.log.error("file.mismatch", **fields)
            elif v.status == INCOMPLETE:
                self.log.warning("file.incomplete", **fields)

    # --- manifests -----------------------------------------------------------------------------

    def _hub_loop(self) -> None:
        while True:
            item = self._fetch_q.get()
            if item is None:
                return
            try:
                result: Loaded | HubError = self.hub.load(item.repo.ref, manifest_file=item.repo.manifest,
                                                         refresh=item.refresh)
            except HubError as err:
                result = err
            except Exception as exc:  # noqa: BLE001 - the hub thread must outlive any one bad answer
                result = HubError(f"{item.repo.ref.key}: {type(exc).__name__}: {exc}")
            self.control.put(("manifest", item.folder_key, item.repo, result))

    def _on_manifest(self, folder_key: str, rc: RepoConfig, result: Loaded | HubError) -> None:
        folder = self.folders.get(folder_key)
        if folder is None or rc not in folder.config.repos:
            return  # the watch was removed or changed by a reload meanwhile
        now = time.monotonic()
        key = (folder_key, rc.ref.key)
        timer = self.timers.setdefault(key, _RepoTimer(self.retry_base))
        if isinstance(result, HubError):
            delay = timer.failed(now, result.retry_in)
            if result.permanent:
                self.given_up.add(key)
            self.log.error("manifest.failed", repo=str(rc.ref), error=str(result), retry_in=round(delay, 1),
                           cached=False)
            self._check_ready(folder)
            return
        m = result.manifest
        self.given_up.discard(key)
        old = folder.manifests.get(m.repo.key)
        folder.set_manifest(m)
        try:
            self.state.set_repo(folder.key, m.repo.key, m.repo.revision, m.commit, self.hub.endpoint,
                                len(m.entries), result.source)
        except StateError as exc:  # status loses this repo's commit until the next write; judging goes on
            self.log.error("state.failed", error=str(exc))
        if result.error is not None:
            delay = timer.failed(now, result.error.retry_in)
            self.log.warning("manifest.failed", repo=str(rc.ref), error=str(result.error),
                             retry_in=round(delay, 1), cached=True)
        else:
            ttl = None if (rc.manifest is not None or m.commit == rc.ref.revision) else self.config.hub.manifest_ttl
            timer.succeeded(now, ttl)
        changed = old is None or old.commit != m.commit or old.entries != m.entries
        if changed:
            fields: dict[str, Any] = {"repo": str(m.repo), "commit": m.commit or None, "files": len(m.entries),
                                      "source": result.source}
            if m.unsafe:
                fields["unsafe"] = m.unsafe
            if old is not None:
                fields["previous_commit"] = old.commit or None
            if result.error is not None:
                fields["stale"] = True
            self.log.info("manifest.loaded", **fields)
        was_ready = folder.ready
        self._check_ready(folder)
        if was_ready and changed:
            self._full_scan(folder.key)  # files judged against the old commit are judged again

    def _check_ready(self, folder: WatchedFolder) -> None:
        if folder.ready:
            return
        if all(rc.ref.key in folder.manifests or (folder.key, rc.ref.key) in self.given_up
               for rc in folder.config.repos):
            folder.ready = True
            self._full_scan(folder.key)

    def _request_manifests(self, folder: WatchedFolder, *, refresh: bool = False) -> None:
        for rc in folder.config.repos:
            self._fetch_q.put(_Fetch(folder.key, rc, refresh))

    # --- scanning ------------------------------------------------------------------------------

    def _full_scan(self, key: str) -> None:
        """Queue a full pass over a folder, unless one is already waiting (overflows come in bursts)."""
        with self._scan_lock:
            if key in self._scans_waiting:
                return
            self._scans_waiting.add(key)
        self._scan_q.put((key, None))

    def _scan_loop(self) -> None:
        while True:
            item = self._scan_q.get()
            if item is None:
                return
            folder_key, sub = item
            if sub is None:
                with self._scan_lock:
                    self._scans_waiting.discard(folder_key)
            folder = self.folders.get(folder_key)
            if folder is None or not folder.ready or self.stop_event.is_set():
                continue
            try:
                self._scan(folder, sub)
            except StateError as exc:
                self.log.error("state.failed", error=str(exc))
            except Exception as exc:
                self.log.exception("scan.failed", path=folder.root, error=f"{type(exc).__name__}: {exc}")

    def _scan(self, folder: WatchedFolder, sub: str | None) -> None:
        started = time.monotonic()
        root = folder.root
        if sub is not None:
            if folder.relpath(sub) is None:
                return
            paths = walk(folder, top=sub)
        else:
            if not os.path.isdir(root):
                return
            paths = walk(folder, lambda d, e: self.log.warning("scan.unreadable", path=d, error=e.strerror))
        todo, unchanged, gone = triage(self.pool, folder, paths, full=sub is None)
        for path in todo:
            self.pool.submit(Job(folder, path, "scan"))
        queued = len(todo)
        if sub is None:
            self.state.forget_many(gone)
            while not self.pool.wait_idle(timeout=0.5):
                if self.stop_event.is_set():
                    return
            counts = self.state.counts(folder.key)
            self.log.info("scan.finished", path=root, files=len(paths), queued=queued, unchanged=unchanged,
                          seconds=round(time.monotonic() - started, 3), **counts)

    # --- observers -----------------------------------------------------------------------------

    def _candidate_for(self, folder: WatchedFolder) -> Callable[[str], None]:
        submit = self.pool.submit

        def candidate(path: str) -> None:
            submit(Job(folder, path, "event"))

        return candidate

    def _start_watch(self, folder: WatchedFolder) -> None:
        if folder.key in self.observers:
            return
        if not os.path.isdir(folder.root):
            return
        handler = CandidateHandler(
            self._candidate_for(folder),
            lambda p, k=folder.key: self._scan_q.put((k, p)),  # type: ignore[misc]
            polling=folder.config.poll,
            created=self.tracker.watch,
            arrived=lambda p, f=folder: self.pool.submit(Job(f, p, "created")),  # type: ignore[misc]
        )
        try:
            self.observers[folder.key] = start_observer(folder.root, handler, poll=folder.config.poll)
        except WatchError as exc:
            # retried at every health check; said once, not every five seconds
            if self._watch_errors.get(folder.key) != exc.strerror:
                self._watch_errors[folder.key] = exc.strerror
                self.log.error("watch.failed", path=folder.root, error=exc.strerror, retry_in=HEALTH_INTERVAL)
            return
        self._watch_errors.pop(folder.key, None)
        self.log.info("watch.started", path=folder.root, poll=folder.config.poll)
        if folder.ready:
            self._full_scan(folder.key)  # whatever landed while nothing watched

    def _health(self) -> None:
        for key, folder in list(self.folders.items()):
            obs = self.observers.get(key)
            exists = os.path.isdir(folder.root)
            if obs is not None and (not obs.is_alive() or not exists):
                with contextlib.suppress(Exception):
                    stop_observer(obs, 1.0)
                del self.observers[key]
                if exists:
                    self.log.warning("watch.restarted", path=folder.root, error="observer thread stopped")
                else:
                    self.log.warning("watch.missing", path=folder.root, error="folder removed; waiting for it")
            if key not in self.observers and exists:
                self._start_watch(folder)

    # --- lifecycle -----------------------------------------------------------------------------

    def _add_folder(self, w: WatchConfig) -> None:
        folder = WatchedFolder(w, skip=(self.config.state_dir,))
        self.folders[folder.key] = folder
        for rc in w.repos:
            # a cached manifest makes the folder judgeable at once, even with the Hub down
            hit = None if rc.manifest is not None else self.hub.cached(rc.ref)
            if hit is not None:
                m = hit[0]
                folder.set_manifest(m)
                fields: dict[str, Any] = {"repo": str(m.repo), "commit": m.commit or None, "files": len(m.entries),
                                          "source": "cache"}
                if m.unsafe:
                    fields["unsafe"] = m.unsafe
                self.log.info("manifest.loaded", **fields)
        if not os.path.isdir(folder.root):
            self.log.warning("watch.missing", path=folder.root, error="no such folder yet; watching for it")
        self._check_ready(folder)
        self._start_watch(folder)
        self._request_manifests(folder)

    def _remove_folder(self, key: str) -> None:
        obs = self.observers.pop(key, None)
        if obs is not None:
            stop_observer(obs)
        self.folders.pop(key, None)
        self.log.info("watch.removed", path=key)

    def reload(self) -> None:
        if self.config.source is None:
            return
        try:
            new = load_config(self.config.source)
        except ConfigError as exc:
            self.log.error("config.invalid", error=str(exc), action="keeping the running configuration")
            return
        self.sink.log_file = new.log_file
        try:
            self.sink.reopen()
        except OSError as exc:  # keep running and logging to stderr; the next SIGHUP may succeed
            self.log.error("log.failed", path=str(new.log_file), error=exc.strerror or str(exc))
        old = {os.path.abspath(w.path): w for w in self.config.watches}
        fresh = {os.path.abspath(w.path): w for w in new.watches}
        for key in old.keys() - fresh.keys():
            self._remove_folder(key)
        for key, w in fresh.items():
            if key in old and old[key] == w:
                continue
            if key in old:
                self._remove_folder(key)
            self._add_folder(w)
        stale = [k for k in ("workers", "state_dir", "log_level", "hub")
                 if getattr(new, k) != getattr(self.config, k)]
        if stale:
            self.log.warning("config.restart_needed", keys=stale)
        self.config = new
        self.log.info("config.reloaded", watches=len(self.folders))

    def _warning(self, message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: Any = None, line: str | None = None) -> None:
        self.log.debug("python.warning", category=category.__name__, warning=str(message),
                       where=f"{filename}:{lineno}")

    def request_stop(self) -> None:
        self.control.put(("signal", signal.SIGTERM))

    def _status_line(self) -> str:
        waiting = sum(1 for f in self.folders.values() if not f.ready)
        return (f"watching {len(self.observers)}/{len(self.folders)} folders, {self.verdicts} verdicts, "
                f"{self.pool.backlog()} queued" + (f", {waiting} waiting for a manifest" if waiting else ""))

    def run(self, *, install_signals: bool = True) -> int:
        previous: dict[signal.Signals, Any] = {}
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                previous[sig] = signal.signal(sig, lambda signum, _frame: self.control.put(("signal", signum)))
        self._overflow.install()
        # a library warning (watchdog warns about re-added inotify callbacks) becomes a JSON line,
        # not raw text in the middle of the log stream
        previous_showwarning = warnings.showwarning
        warnings.showwarning = self._warning
        try:
            return self._run()
        finally:
            warnings.showwarning = previous_showwarning
            self._overflow.uninstall()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _run(self) -> int:
        for target, name in ((self._hub_loop, "hfwatchd-hub"), (self._scan_loop, "hfwatchd-scanner")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        self._replay()
        self.pool.start()
        self.tracker.start()
        for w in self.config.watches:
            self._add_folder(w)
        self.log.info("daemon.ready", watches=[f.root for f in self.folders.values()], version=__version__,
                      workers=self.config.workers)
        self.notifier.ready(self._status_line())
        next_rescan = time.monotonic() + self.config.rescan_interval
        next_health = time.monotonic() + HEALTH_INTERVAL
        stopping = False
        while not stopping:
            now = time.monotonic()
            due = [t.at for t in self.timers.values()] + [next_rescan, next_health]
            try:
                item = self.control.get(timeout=max(0.0, min(due) - now))
            except queue.Empty:
                item = None
            if item is not None:
                kind = item[0]
                if kind == "signal":
                    if item[1] == signal.SIGHUP:
                        self.reload()
                    else:
                        stopping = True
                elif kind == "manifest":
                    self._on_manifest(item[1], item[2], item[3])
                elif kind == "overflow":
                    self.log.warning("watch.overflow", action="rescanning every folder")
                    for f in self.folders.values():
                        self._full_scan(f.key)
            now = time.monotonic()
            for (folder_key, repo_key), timer in list(self.timers.items()):
                if timer.at <= now:
                    timer.at = float("inf")
                    folder = self.folders.get(folder_key)
                    rc = next((r for r in folder.config.repos if r.ref.key == repo_key), None) if folder else None
                    if rc is not None:
                        self._fetch_q.put(_Fetch(folder_key, rc, False))
                    else:
                        del self.timers[(folder_key, repo_key)]
            if now >= next_rescan:
                next_rescan = now + self.config.rescan_interval
                for f in self.folders.values():
                    self._full_scan(f.key)
            if now >= next_health:
                next_health = now + HEALTH_INTERVAL
                self._health()
                self.notifier.status(self._status_line())
        return self._shutdown()

    def _shutdown(self) -> int:
        if threading.current_thread() is threading.main_thread():
            # a second Ctrl-C while stopping means now: every logged verdict is already durable
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda signum, _frame: os._exit(128 + signum))
        self.notifier.stopping()
        self.stop_event.set()
        for obs in self.observers.values():
            stop_observer(obs)
        self.observers.clear()
        self.pool.stop(timeout=10.0)  # hashing is abandoned within a chunk; an unfinished file stays pending
        self.tracker.stop()
        self.hooks.close(timeout=5.0)
        self._scan_q.put(None)
        self._fetch_q.put(None)
        for t in self._threads:
            # the hub thread may sit in a request until hub.timeout: it is a daemon thread, not worth waiting for
            t.join(timeout=2.0)
        self.hub.close()
        self.state.close()
        self.log.info("daemon.stopped", verdicts=self.verdicts)
        return 0


def run_daemon(config: Config) -> int:
    """`hfwatchd --config FILE`: run until SIGTERM or SIGINT."""
    try:
        sink = Sink(config.log_file)
    except OSError as exc:
        raise ConfigError(f"log_file: cannot open {config.log_file}: {exc.strerror}") from None
    log = make_logger(sink, config.log_level)
    try:
        daemon = Daemon(config, log=log, sink=sink)
    except StateError as exc:
        log.error("daemon.failed", error=str(exc))
        sink.close()
        return 78
    try:
        return daemon.run()
    finally:
        sink.close()
