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
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any, Protocol, TextIO


class Log(Protocol):
    """What every module logs through: one event name and its fields per line (see design.md's table)."""

    def debug(self, event: str, **kw: Any) -> None: ...
    def info(self, event: str, **kw: Any) -> None: ...
    def warning(self, event: str, **kw: Any) -> None: ...
    def error(self, event: str, **kw: Any) -> None: ...
    def exception(self, event: str, **kw: Any) -> None: ...


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


# --- console rendering: one readable line per event on a terminal ------------------------------
# Hand-written rather than structlog's ConsoleRenderer: it would import structlog (and colour support)
# for a `check` that has nothing else to log, and it neither fits a line to the terminal nor escapes
# the control characters a file name from the Internet may carry.

CONSOLE_WIDTH = 100
VERDICT_EVENTS = frozenset({"file.matched", "file.mismatch", "file.incomplete", "file.unknown"})
_STATUS_COLORS = {"matched": "32", "mismatch": "1;31", "incomplete": "33", "unknown": "90"}
_LEVEL_COLORS = {"debug": "90", "warning": "33", "error": "31", "exception": "31", "critical": "1;31"}
_SKIP = frozenset({"timestamp", "level", "event", "exception"})
# C0, DEL and C1 controls shown as escapes: a crafted name must not move the cursor or retitle the terminal
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}


def wants_color(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (no-color.org)."""
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR"):
        return False
    try:
        return stream.isatty()
    except (OSError, ValueError):  # a closed stream
        return False


def printable(text: str) -> str:
    # lone surrogates (names that are not UTF-8 on disk) become \udcXX, which every stream can encode
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text.translate(_CONTROLS)


def _cols(text: str) -> int:
    """Terminal columns: East Asian wide characters take two, combining marks none."""
    if text.isascii():
        return len(text)
    import unicodedata

    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
               for c in text)


def _take(text: str, cols: int, *, from_end: bool = False) -> str:
    out: list[str] = []
    used = 0
    for c in reversed(text) if from_end else text:
        w = _cols(c)
        if used + w > cols:
            break
        out.append(c)
        used += w
    return "".join(reversed(out) if from_end else out)


def shorten_middle(text: str, cols: int) -> str:
    """`text` in at most `cols` columns, its middle replaced by … (the end, e.g. `.safetensors`, kept)."""
    if _cols(text) <= cols:
        return text
    if cols <= 1:
        return "…"[:cols]
    tail = (cols - 1) // 2
    return _take(text, cols - 1 - tail) + "…" + _take(text, tail, from_end=True)


def shorten_end(text: str, cols: int) -> str:
    """`text` in at most `cols` columns, cut at the end with …."""
    if _cols(text) <= cols:
        return text
    return _take(text, max(cols - 1, 0)) + "…"[: max(cols, 0)]


def human_size(n: Any) -> str:
    """Bytes in decimal units, as the Hub shows file sizes: 523 B, 1.5 kB, 4.98 GB."""
    if not isinstance(n, int) or isinstance(n, bool):
        return "?"
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{n} B" if unit == "B" else f"{size:.3g} {unit}" if size < 100 else f"{size:.0f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def _clock(timestamp: Any) -> str:
    """HH:MM:SS in local time from the record's ISO 8601 UTC timestamp."""
    from datetime import datetime

    if isinstance(timestamp, str):
        try:
            # fromisoformat accepts the trailing Z only from Python 3.11 on
            return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).astimezone().strftime("%H:%M:%S")
        except ValueError:
            pass
    return datetime.now().strftime("%H:%M:%S")


def _value(v: Any) -> str:
    if isinstance(v, str):
        text = v
        if not v or any(c.isspace() or c in "\"=" for c in v):
            text = json.dumps(v, ensure_ascii=False)
    elif isinstance(v, (bool, int, float)) or v is None:
        text = json.dumps(v)
    elif isinstance(v, Path):
        text = str(v)
    else:
        text = json.dumps(v, default=_default, ensure_ascii=False)
    return printable(text)


def _paint(text: str, code: str | None, color: bool) -> str:
    return f"\033[{code}m{text}\033[0m" if color and code else text


def render_console(event_dict: Mapping[str, Any], *, color: bool = False, width: int = CONSOLE_WIDTH) -> str:
    """One line for a terminal: a verdict as time, status, name, repo, size, seconds; else `event key=value`."""
    event = str(event_dict.get("event", ""))
    level = str(event_dict.get("level", "info"))
    clock = _clock(event_dict.get("timestamp"))
    rest = width - len(clock) - 12  # "HH:MM:SS " + a ten-column status or level + " "
    if event in VERDICT_EVENTS:
        status = event[len("file."):]
        head = f"{_paint(clock, '2', color)} {_paint(f'{status:<10}', _STATUS_COLORS.get(status), color)} "
        line = _verdict(event_dict, status, rest, color)
    else:
        head = f"{_paint(clock, '2', color)} {_paint(f'{level:<10}', _LEVEL_COLORS.get(level), color)} "
        fields = " ".join(f"{k}={_value(v)}" for k, v in event_dict.items() if k not in _SKIP)
        line = shorten_end(printable(event) + (" " + fields if fields else ""), rest)
    text = head + line
    exc = event_dict.get("exception")
    if exc:  # a traceback is read whole, never cut to the line width
        text += "".join("\n    " + printable(x) for x in str(exc).rstrip("\n").splitlines())
    return text


def _verdict(d: Mapping[str, Any], status: str, cols: int, color: bool) -> str:
    path = d.get("path")
    name = printable(str(path).rsplit("/", 1)[-1] if path else str(d.get("rfilename", "?")))
    repo = printable(str(d.get("repo") or ""))
    size = human_size(d.get("size"))
    if status == "incomplete" and d.get("expected_size") is not None:
        size = f"{size} of {human_size(d.get('expected_size'))}"
    tail = [size]
    seconds = d.get("seconds")
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
        tail.append(f"{seconds:.2f}s" if seconds < 10 else f"{seconds:.0f}s")
    note = "download again" if status == "mismatch" else ""
    fixed = "  ".join(tail) + (f"  {note}" if note else "")
    # the name and the repo share what the fixed columns leave, the name first (it is what the user saved)
    # (the repo keeps at least a third of it), both shortened in the middle
    room = cols - len(fixed) - 2 - (2 if repo else 0)
    if _cols(name) + _cols(repo) > room:
        repo = shorten_middle(repo, max(room - _cols(name), min(_cols(repo), room // 3)))
        name = shorten_middle(name, max(room - _cols(repo), 1))
    parts = [name] + ([repo] if repo else []) + ["  ".join(tail)]
    line = shorten_end("  ".join(parts) + (f"  {note}" if note else ""), cols)
    if note and line.endswith(note):
        line = line[: -len(note)] + _paint(note, _STATUS_COLORS["mismatch"], color)
    return line


class Sink:
    """Where rendered lines go. Thread-safe; `reopen()` follows logrotate on SIGHUP."""

    def __init__(self, log_file: Path | None, stream: TextIO | None = None, *, console: bool | None = None,
                 stream_level: int = logging.DEBUG) -> None:
        self.log_file = log_file
        self.stream = stream if stream is not None else sys.stderr
        self.console = self.stream.isatty() if console is None else console
        self.color = self.console and wants_color(self.stream)
        self.stream_level = stream_level
        self._lock = threading.Lock()
        self._file: TextIO | None = None
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
                # the JSON line stays the record (log_file, journald); a terminal gets it readable
                text = render_console(event_dict, color=self.color) if self.console else line
                try:
                    self.stream.write(text + "\n")
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


def make_logger(sink: Sink, level: str = "info") -> Log:
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
