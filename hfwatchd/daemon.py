"""The composition root: builds everything, runs the main loop, handles signals, sd_notify and rescans.

Threads: observers (watchdog) and the progressive tracker feed the pool; the hub thread loads
manifests; the scanner walks folders. Every decision about folders and manifests is taken by
the main loop, from small messages on one queue.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__
from .actions import Actions
from .completion import target_of_temp
from .config import Config, ConfigError, RepoConfig, WatchConfig, load_config
from .coverage import cover, status_document
from .devices import DeviceGate
from .exits import ExitCode
from .folder import WatchedFolder
from .hooks import HookRunner
from .hub import HubError, Loaded
from .judge import DAEMON, Judge, Outcome
from .logs import Log, Sink, make_logger
from .manifests import Manifests, make_hub
from .notify import Notifier
from .pool import Job, Pool
from .progressive import Tracker
from .scanner import Scanner
from .state import State, StateError
from .verdicts import log_verdict, replay
from .watcher import CandidateHandler, OverflowDetector, WatchError, start_observer, stop_observer
from .web import Metrics, WebServer, render_metrics

HEALTH_INTERVAL = 5.0  # how often observers and missing folders are looked at: cheap, and rare enough to idle


# --- what the main loop is told ---------------------------------------------------------------

@dataclass(frozen=True)
class SignalReceived:
    signum: int


@dataclass(frozen=True)
class ManifestResult:
    folder_key: str
    repo: RepoConfig
    result: Loaded | HubError


@dataclass(frozen=True)
class Overflowed:
    """inotify dropped events: only a full pass over every folder makes the result right again."""


@dataclass(frozen=True)
class StoreRecovered:
    moved_to: Path
    error: str


Message = SignalReceived | ManifestResult | Overflowed | StoreRecovered


@dataclass(frozen=True)
class _Fetch:
    folder_key: str
    repo: RepoConfig
    refresh: bool


class Daemon:
    """hfwatchd in the foreground: observers feed the pool; the main loop owns every decision."""

    def __init__(self, config: Config, *, log: Log, sink: Sink) -> None:
        self.config = config
        self.log = log
        self.sink = sink
        self.notifier = Notifier()
        self.control: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self.state = State(config.state_dir, exclusive=True,
                           on_recovered=lambda p, e: self.control.put(StoreRecovered(p, e)))
        self.hub = make_hub(config, log)
        self.manifests = Manifests(self.hub, self.state, log, ttl=config.hub.manifest_ttl)
        self.folders: dict[str, WatchedFolder] = {}
        self.observers: dict[str, Any] = {}
        self.tracker = Tracker(log)
        self.stop_event = threading.Event()
        # one hashing stream at a time per spinning disk, for what is not in the page cache (devices.py)
        self.judge = Judge(self.state, DAEMON, report=self._report, log=log, stopping=self.stop_event,
                           tracker=self.tracker, gate=DeviceGate())
        self.pool = Pool(self.judge.work, workers=config.workers, on_error=self.judge.on_error,
                         on_give_up=self.judge.on_give_up, settle=DAEMON.settle, stopping=self.stop_event)
        self.scanner = Scanner(self.state, self.pool, log, folders=self.folders.get, stopping=self.stop_event)
        self._fetch_q: queue.SimpleQueue[_Fetch | None] = queue.SimpleQueue()
        self._hub_thread: threading.Thread | None = None
        self._watch_errors: dict[str, str | None] = {}
        self._overflow = OverflowDetector(lambda: self.control.put(Overflowed()))
        self.hooks = HookRunner(log)
        self.actions = Actions(self.state, log, self.hooks)
        self.web: WebServer | None = None

    # --- the page ------------------------------------------------------------------------------

    def status_document(self) -> list[dict[str, Any]]:
        """`/api/status`: the same document as `status --json`, from the live manifests, plus downloads."""
        watches = []
        downloading: dict[str, list[dict[str, Any]]] = {}
        followed = self.tracker.downloads()
        for folder in list(self.folders.values()):
            repo_rows = {r.repo: r for r in self.state.repos(folder.key)}
            notes = {rc.ref.key: "waiting for the manifest from the Hub" for rc in folder.config.repos}
            watches.append(cover(folder.config, dict(folder.manifests), self.state.files(folder.key),
                                 repo_rows=repo_rows, endpoint=self.hub.endpoint, notes=notes))
            downloading[folder.key] = [d for p, size, hashed in followed
                                       if (d := self._download(folder, p, size, hashed)) is not None]
        return status_document(watches, downloading=downloading)

    @staticmethod
    def _download(folder: WatchedFolder, path: str, size: int, hashed: int) -> dict[str, Any] | None:
        """A download in progress, with the entry its name says it will be (when it says)."""
        rel = folder.relpath(path)
        if rel is None:
            return None
        target = folder.relpath(target_of_temp(path) or path)
        named = folder.index.plan(target, size).by_name if target is not None else ()
        c = named[0] if named else None
        return {"path": path, "size": size, "bytes_hashed": hashed,
                "rfilename": c.entry.rfilename if c else None, "repo": c.manifest.repo.key if c else None,
                "expected_size": c.entry.size if c else None}

    def metrics(self) -> str:
        hashed, _, verdicts = self.judge.counters.snapshot()
        return render_metrics(Metrics(verdicts={str(k): n for k, n in verdicts.items()}, hashed_bytes=hashed,
                                      queued=self.pool.backlog(), manifest_failures=self.manifests.failures,
                                      last_scan=dict(self.scanner.last_scan)))

    def _start_web(self) -> None:
        listen = self.config.web_listen
        if not listen:
            return
        web = WebServer(listen, self.config.state_dir, status=self.status_document, metrics=self.metrics,
                        log=self.log)
        try:
            web.start()  # logs web.started with the URL (never the token)
        except OSError as exc:
            # the page is a convenience: verification goes on without it
            self.log.warning("web.failed", listen=listen, error=exc.strerror or str(exc))
            return
        self.web = web

    # --- verdicts ------------------------------------------------------------------------------

    def _report(self, o: Outcome) -> None:
        """Log one canonical line per verdict (already durable in state), then run the follow-ups."""
        if not o.repeated:
            line = log_verdict(self.log, o.verdict, seconds=o.seconds, head_start=o.head_start)
            if line is not None and self.web is not None:
                self.web.publish(line)
        self.state.mark_logged(os.fsencode(o.verdict.path))
        if not o.repeated:
            self.actions(o)

    # --- manifests -----------------------------------------------------------------------------

    def _hub_loop(self) -> None:
        while (item := self._fetch_q.get()) is not None:
            self.control.put(ManifestResult(item.folder_key, item.repo,
                                            self.manifests.load(item.repo, refresh=item.refresh)))

    def handle_manifest(self, msg: ManifestResult) -> None:
        folder = self.folders.get(msg.folder_key)
        if folder is None or msg.repo not in folder.config.repos:
            return  # the watch was removed or changed by a reload meanwhile
        was_ready = folder.ready
        applied = self.manifests.apply(folder, msg.repo, msg.result)
        self._check_ready(folder)
        if was_ready and applied is not None and applied.changed:
            self.scanner.full(folder.key)  # files judged against the old commit are judged again

    def _check_ready(self, folder: WatchedFolder) -> None:
        if not folder.ready and not self.manifests.waiting(folder):
            folder.ready = True
            self.scanner.full(folder.key)

    def _fetch_due(self) -> None:
        for folder_key, repo_key in self.manifests.due(time.monotonic()):
            folder = self.folders.get(folder_key)
            rc = next((r for r in folder.config.repos if r.ref.key == repo_key), None) if folder else None
            if rc is not None:
                self._fetch_q.put(_Fetch(folder_key, rc, False))

    # --- observers -----------------------------------------------------------------------------

    def _start_watch(self, folder: WatchedFolder) -> None:
        if folder.key in self.observers or not os.path.isdir(folder.root):
            return
        submit = self.pool.submit
        handler = CandidateHandler(
            lambda p: submit(Job(folder, p, "event")),
            lambda p: self.scanner.subfolder(folder.key, p),
            polling=folder.config.poll,
            created=self.tracker.watch,
            arrived=lambda p: submit(Job(folder, p, "created")),
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
            self.scanner.full(folder.key)  # whatever landed while nothing watched

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

    # --- folders and reload --------------------------------------------------------------------

    def _add_folder(self, w: WatchConfig) -> None:
        folder = WatchedFolder(w, skip=(self.config.state_dir,))
        self.folders[folder.key] = folder
        for rc in w.repos:
            self.manifests.cached(folder, rc)  # a cached manifest makes the folder judgeable at once
        if not os.path.isdir(folder.root):
            self.log.warning("watch.missing", path=folder.root, error="no such folder yet; watching for it")
        # the watch first, then the one scan: whatever lands after the walk passed it has its event
        self._start_watch(folder)
        self._check_ready(folder)
        for rc in w.repos:
            self._fetch_q.put(_Fetch(folder.key, rc, False))

    def _remove_folder(self, key: str) -> None:
        obs = self.observers.pop(key, None)
        if obs is not None:
            stop_observer(obs)
        self.folders.pop(key, None)
        self.manifests.forget(key)
        self.log.info("watch.removed", path=key)

    def handle_hup(self) -> None:
        if self.config.source is None:
            # `hfwatchd watch REPO DIR`: no file to read again; only the log file is reopened
            self.log.warning("config.restart_needed", keys=[], error="started without a config file "
                             "(hfwatchd watch): nothing to reload; restart it with --config FILE")
            try:
                self.sink.reopen()
            except OSError as exc:
                self.log.error("log.failed", path=str(self.sink.log_file), error=exc.strerror or str(exc))
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
        stale = [k for k in ("workers", "state_dir", "log_level", "hub", "web")
                 if getattr(new, k, None) != getattr(self.config, k, None)]
        if stale:
            self.log.warning("config.restart_needed", keys=stale)
        self.config = new
        self.log.info("config.reloaded", watches=len(self.folders))

    def handle_recovered(self, msg: StoreRecovered) -> None:
        self.log.error("state.recovered", path=str(msg.moved_to), error=msg.error,
                       action="every file is judged again")
        for folder in self.folders.values():
            try:
                self.manifests.record(folder)  # the fresh store knows no commit yet: status needs one
            except StateError as exc:
                self.log.error("state.failed", error=str(exc))
            self.scanner.full(folder.key)

    def handle(self, msg: Message) -> bool:
        """Act on one message; returns False when the daemon should stop."""
        match msg:
            case SignalReceived(signal.SIGHUP):
                self.handle_hup()
            case SignalReceived():
                return False
            case ManifestResult():
                self.handle_manifest(msg)
            case Overflowed():
                self.log.warning("watch.overflow", action="rescanning every folder")
                for key in self.folders:
                    self.scanner.full(key)
            case StoreRecovered():
                self.handle_recovered(msg)
        return True

    # --- lifecycle -----------------------------------------------------------------------------

    def _warning(self, message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: Any = None, line: str | None = None) -> None:
        self.log.debug("python.warning", category=category.__name__, warning=str(message),
                       where=f"{filename}:{lineno}")

    def _status_line(self) -> str:
        waiting = sum(1 for f in self.folders.values() if not f.ready)
        verdicts = sum(self.judge.counters.snapshot()[2].values())
        return (f"watching {len(self.observers)}/{len(self.folders)} folders, {verdicts} verdicts, "
                f"{self.pool.backlog()} queued" + (f", {waiting} waiting for a manifest" if waiting else ""))

    def run(self) -> ExitCode:
        previous = {sig: signal.signal(sig, lambda signum, _frame: self.control.put(SignalReceived(signum)))
                    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
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

    def _run(self) -> ExitCode:
        self._hub_thread = threading.Thread(target=self._hub_loop, name="hfwatchd-hub", daemon=True)
        self._hub_thread.start()
        self.scanner.start()
        replay(self.state, self.log)
        self.pool.start()
        self.tracker.start()
        for w in self.config.watches:
            self._add_folder(w)
        self.log.info("daemon.ready", watches=[f.root for f in self.folders.values()], version=__version__,
                      workers=self.config.workers)
        self._start_web()
        self.notifier.ready(self._status_line())
        next_rescan = time.monotonic() + self.config.rescan_interval
        next_health = time.monotonic() + HEALTH_INTERVAL
        running = True
        while running:
            due = min(self.manifests.next_due(), next_rescan, next_health)
            with contextlib.suppress(queue.Empty):
                running = self.handle(self.control.get(timeout=max(0.0, due - time.monotonic())))
            now = time.monotonic()
            self._fetch_due()
            if now >= next_rescan:
                next_rescan = now + self.config.rescan_interval
                for key in self.folders:
                    self.scanner.full(key)
            if now >= next_health:
                next_health = now + HEALTH_INTERVAL
                self._health()
                self.notifier.status(self._status_line())
        return self._shutdown()

    def _shutdown(self) -> ExitCode:
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
        if self.web is not None:
            self.web.close()
        self.scanner.stop()
        self._fetch_q.put(None)
        if self._hub_thread is not None:
            # the hub thread may sit in a request until hub.timeout: a daemon thread, not worth waiting for
            self._hub_thread.join(timeout=2.0)
        self.hub.close()
        self.state.close()
        verdicts = sum(self.judge.counters.snapshot()[2].values())
        self.log.info("daemon.stopped", verdicts=verdicts)
        return ExitCode.OK


def run_daemon(config: Config) -> ExitCode:
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
        return ExitCode(getattr(exc, "exit_code", ExitCode.IOERR))
    try:
        return daemon.run()
    finally:
        sink.close()
