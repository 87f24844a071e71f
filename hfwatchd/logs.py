"""structlog set-up: one JSON object per line to stderr (readable on a terminal) and to `log_file`.

Nothing is configured globally: `make_logger` returns a bound logger that `daemon.py` passes down.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, TextIO

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _default(obj: object) -> object:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, bytes):
        return os.fsdecode(obj)
    return repr(obj)


def to_json(event_dict: dict[str, Any]) -> str:
    # surrogate-escaped file names (not UTF-8 on disk) survive as \\udcXX escapes: still one valid JSON line
    return json.dumps(event_dict, default=_default, ensure_ascii=True, separators=(", ", ": "))


class Sink:
    """Where rendered lines go. Thread-safe; `reopen()` follows logrotate on SIGHUP."""

    def __init__(self, log_file: Path | None, stream: TextIO | None = None, *, console: bool | None = None,
                 stream_level: int = logging.DEBUG) -> None:
        self.log_file = log_file
        self.stream = stream if stream is not None else sys.stderr
        self.console = self.stream.isatty() if console is None else console
        self.stream_level = stream_level
        self._lock = threading.Lock()
        self._file: TextIO | None = None
        self._renderer: Any = None
        self.reopen()

    def reopen(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
            if self.log_file is not None:
                self.log_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                fd = os.open(self.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
                self._file = os.fdopen(fd, "a", encoding="utf-8", buffering=1)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def write(self, level: int, event_dict: dict[str, Any]) -> None:
        line = to_json(event_dict)
        with self._lock:
            if self._file is not None:
                with contextlib.suppress(OSError):  # a full disk must not stop verification; stderr has the line
                    self._file.write(line + "\n")
            if level >= self.stream_level:
                if self.console and self._renderer is None:
                    import structlog

                    self._renderer = structlog.dev.ConsoleRenderer(colors=True)
                text = self._renderer(None, "", dict(event_dict)) if self._renderer is not None else line
                try:
                    self.stream.write(str(text) + "\n")
                    self.stream.flush()
                except (OSError, ValueError):  # stderr closed (daemon detached from a terminal)
                    pass


class _SinkLogger:
    """The structlog "logger" at the end of the chain: hands the event dict to the sink."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink

    def _log(self, event_dict: dict[str, Any]) -> None:
        level = _LEVELS.get(str(event_dict.get("level")), logging.INFO)
        self._sink.write(level, event_dict)

    debug = info = warning = error = critical = exception = msg = _log


def _finish(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> tuple[Any, ...]:
    # timestamp, level and event first: the line reads well with `tail -f` before anyone reaches for jq
    ordered: dict[str, Any] = {k: event_dict.pop(k) for k in ("timestamp", "level", "event") if k in event_dict}
    ordered.update(event_dict)
    return (ordered,), {}


class _LazyLogger:
    """Builds the structlog logger the first time a line would be written anywhere.

    A `check` that has nothing to say (no log_file, nothing at warning level) never imports
    structlog: a re-check of an unchanged folder is mostly interpreter start-up, so it counts.
    """

    def __init__(self, sink: Sink, level: str) -> None:
        self._sink = sink
        self._level = level
        self._min = _LEVELS[level]
        self._log: Any = None

    def _emit(self, method: str, level: int, event: str, kw: dict[str, Any]) -> None:
        if level < self._min or (self._sink.log_file is None and level < self._sink.stream_level):
            return
        if self._log is None:
            self._log = _structlog_logger(self._sink, self._level)
        getattr(self._log, method)(event, **kw)

    def debug(self, event: str, **kw: Any) -> None:
        self._emit("debug", logging.DEBUG, event, kw)

    def info(self, event: str, **kw: Any) -> None:
        self._emit("info", logging.INFO, event, kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._emit("warning", logging.WARNING, event, kw)

    def error(self, event: str, **kw: Any) -> None:
        self._emit("error", logging.ERROR, event, kw)

    def exception(self, event: str, **kw: Any) -> None:
        self._emit("exception", logging.ERROR, event, kw)


def make_logger(sink: Sink, level: str = "info") -> Any:
    """A logger writing canonical JSON lines to `sink` through structlog."""
    return _LazyLogger(sink, level)


def _structlog_logger(sink: Sink, level: str) -> Any:
    import structlog

    return structlog.wrap_logger(
        _SinkLogger(sink),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _finish,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        cache_logger_on_first_use=True,
    )
