"""The one canonical log line per verdict, and the replay of verdicts a killed run never logged."""

from __future__ import annotations

import datetime
import os
from typing import Any

from .logs import Log
from .manifest import Status, Verdict
from .state import FileRow, State, StateError

_LEVEL = {Status.MATCHED: "info", Status.MISMATCH: "error", Status.INCOMPLETE: "warning", Status.UNKNOWN: "warning"}


def verdict_line(v: Verdict, *, seconds: float | None = None, head_start: int = 0,
                 replayed: bool = False) -> tuple[str, str, dict[str, Any]] | None:
    """(level, event, fields) of a verdict's line, or None for a status that has none (pending)."""
    level = _LEVEL.get(v.status)
    if level is None:
        return None
    fields: dict[str, Any] = {"path": v.path, "size": v.size}
    if replayed:
        fields["replayed"] = True
    if v.status != Status.UNKNOWN:
        fields.update(repo=v.repo, rfilename=v.rfilename, commit=v.commit, expected_size=v.expected_size,
                      matched_by=v.matched_by)
        timing = {"seconds": round(seconds, 3)} if seconds is not None else {}
        if v.status == Status.MATCHED:
            fields.update(algorithm=v.algorithm, digest=v.actual, **timing)
            if head_start:
                fields["progressive_bytes"] = head_start
        elif v.status == Status.MISMATCH:
            fields.update(algorithm=v.algorithm, digest=v.actual, expected=v.expected, actual=v.actual, **timing)
    return level, f"file.{v.status}", fields


def log_verdict(log: Log, v: Verdict, **kw: Any) -> dict[str, Any] | None:
    """Write the verdict's line; returns the same record as the line holds (for the page's live stream)."""
    line = verdict_line(v, **kw)
    if line is None:
        return None
    level, event, fields = line
    getattr(log, level)(event, **fields)
    now = datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")  # structlog's format
    return {"timestamp": now, "level": level, "event": event, **fields}


def _verdict_of(row: FileRow) -> Verdict:
    return Verdict(Status(row.status), os.fsdecode(row.path), row.signature.size if row.signature else 0,
                   repo=row.repo, revision=row.revision, rfilename=row.rfilename, commit=row.commit,
                   expected_size=row.expected_size, algorithm=row.algorithm,  # type: ignore[arg-type]
                   expected=row.expected, actual=row.digest,
                   matched_by=row.matched_by)  # type: ignore[arg-type]


def replay(state: State, log: Log) -> int:
    """Log the verdicts a killed run committed but did not live to log: an alarm is never lost."""
    n = 0
    try:
        for row in state.unlogged():
            log_verdict(log, _verdict_of(row), replayed=True)
            state.mark_logged(row.path)
            n += 1
        state.flush()
    except StateError as exc:
        log.error("state.failed", error=str(exc))
    return n
