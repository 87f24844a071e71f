"""The only module that imports watchdog: filesystem events -> candidate paths, and nothing else.

Handlers run on watchdog's dispatcher thread while it holds the observer lock, and an
exception there kills the observer: so they do no I/O, no stat, and never raise. They only
turn an event into a candidate (or a scan request) and hand it on with a non-blocking put.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from typing import Any

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from .completion import is_temp_name, target_of_temp

Candidate = Callable[[str], None]  # a file that may have just finished
ScanRequest = Callable[[str], None]  # a folder whose files may have been missed

_INOTIFY_FILTER = [FileCreatedEvent, FileClosedEvent, FileMovedEvent, FileDeletedEvent, DirCreatedEvent,
                   DirMovedEvent]
_POLL_FILTER = [FileCreatedEvent, FileModifiedEvent, FileMovedEvent, FileDeletedEvent, DirCreatedEvent,
                DirMovedEvent]


def _text(p: str | bytes) -> str:
    return os.fsdecode(p)


class CandidateHandler(FileSystemEventHandler):
    """Maps the events of every downloader in design.md section 2 to candidates."""

    def __init__(self, candidate: Candidate, scan: ScanRequest, *, polling: bool,
                 created: Candidate | None = None, arrived: Candidate | None = None) -> None:
        self._candidate = candidate
        self._scan = scan
        self._polling = polling
        self._created = created  # a download may be starting: progressive hashing follows it
        # a created file may also be complete already: `mv` or `ln` from elsewhere gives no close event
        self._arrived = arrived

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self._route(event)
        except Exception:
            logging.getLogger("hfwatchd.watcher").debug("event dropped", exc_info=True)

    def _route(self, event: FileSystemEvent) -> None:
        if isinstance(event, (DirCreatedEvent, DirMovedEvent)):
            # files in a fresh subdirectory may land before its watch exists
            self._scan(_text(event.dest_path if isinstance(event, DirMovedEvent) else event.src_path))
            return
        src = _text(event.src_path)
        if isinstance(event, FileCreatedEvent):
            if self._created is not None:
                self._created(src)
            if self._arrived is not None and not self._polling and not is_temp_name(src.replace(os.sep, "/")):
                self._arrived(src)
        if isinstance(event, FileMovedEvent):
            dest = _text(event.dest_path)
            self._final(dest)  # X.crdownload -> X, X.part -> X, hf's .incomplete -> X
            if not is_temp_name(src):
                self._candidate(src)  # moved away: the worker forgets it
            return
        if isinstance(event, FileDeletedEvent):
            if src.endswith(".aria2"):
                target = target_of_temp(src)  # aria2c is done when its control file goes
                if target is not None:
                    self._candidate(target)
            elif not is_temp_name(src):
                self._candidate(src)
            return
        if isinstance(event, FileClosedEvent) or (
            self._polling and isinstance(event, (FileCreatedEvent, FileModifiedEvent))
        ):
            self._final(src)

    def _final(self, path: str) -> None:
        if not is_temp_name(path.replace(os.sep, "/")):
            self._candidate(path)


class OverflowDetector(logging.Handler):
    """watchdog only logs an inotify queue overflow; this turns that log record into a rescan."""

    def __init__(self, on_overflow: Callable[[], None]) -> None:
        super().__init__(level=logging.WARNING)
        self._on_overflow = on_overflow

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self._on_overflow()

    def install(self) -> None:
        logger = logging.getLogger("watchdog")
        logger.addHandler(self)
        if logger.getEffectiveLevel() > logging.WARNING or logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)

    def uninstall(self) -> None:
        logging.getLogger("watchdog").removeHandler(self)


class WatchError(OSError):
    """A folder cannot be watched; the message says what to do."""


def start_observer(path: str, handler: CandidateHandler, *, poll: bool, poll_interval: float = 5.0) -> Any:
    """An observer thread watching `path` recursively; raises WatchError with an actionable message."""
    observer: Any = PollingObserver(timeout=poll_interval) if poll else Observer()
    observer.daemon = True
    observer.name = f"hfwatchd-observer:{path}"
    try:
        observer.schedule(handler, path, recursive=True, event_filter=_POLL_FILTER if poll else _INOTIFY_FILTER)
        observer.start()
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise WatchError(exc.errno, f"{path}: inotify watch limit reached; raise it with "
                             "`sudo sysctl fs.inotify.max_user_watches=524288` (and persist it in "
                             "/etc/sysctl.d/), or set poll = true for this watch") from None
        if exc.errno == errno.EMFILE:
            raise WatchError(exc.errno, f"{path}: inotify instance limit reached; raise "
                             "fs.inotify.max_user_instances") from None
        if exc.errno == errno.ENOENT:
            raise WatchError(exc.errno, f"{path}: no such folder (watching for it to appear)") from None
        raise WatchError(exc.errno or 0, f"{path}: cannot watch: {exc.strerror or exc}") from None
    return observer


def stop_observer(observer: Any, timeout: float = 5.0) -> None:
    observer.stop()
    if observer.is_alive():
        observer.join(timeout)
