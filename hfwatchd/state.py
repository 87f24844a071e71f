"""The SQLite state store: one row per local file with its signature and verdict."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .hashing import Signature
from .manifest import PENDING, Verdict

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    path BLOB PRIMARY KEY,          -- absolute path, bytes (names need not be UTF-8)
    watch TEXT NOT NULL,            -- the watched folder it belongs to
    dev INTEGER, ino INTEGER, size INTEGER, mtime_ns INTEGER,
    status TEXT NOT NULL,
    repo TEXT, revision TEXT, rfilename TEXT, commit_sha TEXT,
    algorithm TEXT, digest TEXT, expected TEXT, expected_size INTEGER,
    judged_at REAL,
    logged INTEGER NOT NULL DEFAULT 1  -- 0 from the commit of a verdict until its log line is written
);
CREATE INDEX IF NOT EXISTS files_watch ON files (watch, status);
CREATE TABLE IF NOT EXISTS repos (
    watch TEXT NOT NULL, repo TEXT NOT NULL, revision TEXT NOT NULL,
    commit_sha TEXT, endpoint TEXT, files INTEGER, source TEXT, updated_at REAL,
    PRIMARY KEY (watch, repo)
);
"""


class StateError(RuntimeError):
    """The state database cannot be opened or written (disk full, permissions, corruption)."""


@dataclass(frozen=True, slots=True)
class FileRow:
    path: bytes
    watch: str
    signature: Signature | None
    status: str
    repo: str | None
    revision: str | None
    rfilename: str | None
    commit: str | None
    algorithm: str | None
    digest: str | None
    expected: str | None
    expected_size: int | None
    judged_at: float | None


@dataclass(frozen=True, slots=True)
class RepoRow:
    watch: str
    repo: str
    revision: str
    commit: str | None
    endpoint: str | None
    files: int | None
    source: str | None
    updated_at: float | None


def _row(r: tuple[object, ...]) -> FileRow:
    (path, watch, dev, ino, size, mtime_ns, status, repo, revision, rfilename, commit, algorithm, digest,
     expected, expected_size, judged_at) = r
    sig = None
    if dev is not None:
        sig = Signature(int(dev), int(ino), int(size), int(mtime_ns))  # type: ignore[call-overload]
    return FileRow(
        bytes(path),  # type: ignore[call-overload]
        str(watch), sig, str(status), repo, revision, rfilename, commit,  # type: ignore[arg-type]
        algorithm, digest, expected, expected_size, judged_at,  # type: ignore[arg-type]
    )


_COLUMNS = ("path, watch, dev, ino, size, mtime_ns, status, repo, revision, rfilename, commit_sha, algorithm, "
            "digest, expected, expected_size, judged_at")


class State:
    """Thread-safe access to the state database (WAL: readers never wait for the daemon)."""

    def __init__(self, state_dir: Path, *, readonly: bool = False) -> None:
        self.path = state_dir / "state.sqlite3"
        self._lock = threading.Lock()
        self._logged: list[bytes] = []
        try:
            if not readonly:
                state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
                os.chmod(state_dir, 0o700)
            uri = f"file:{self.path}?mode=ro" if readonly else f"file:{self.path}"
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None, timeout=30)
            if not readonly:
                self._db.execute("PRAGMA journal_mode=WAL")
                # NORMAL in WAL mode: a committed verdict survives a crash of this process (kill -9);
                # a power cut may roll back the last ones, which are then judged again, never wrongly.
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.executescript(_SCHEMA)
                columns = {r[1] for r in self._db.execute("PRAGMA table_info(files)")}
                if "logged" not in columns:  # a database from before verdicts were replayed
                    self._db.execute("ALTER TABLE files ADD COLUMN logged INTEGER NOT NULL DEFAULT 1")
                self._db.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
                )
        except sqlite3.Error as exc:
            raise StateError(f"cannot open state database {self.path}: {exc}") from None
        except OSError as exc:
            raise StateError(f"cannot create state directory {state_dir}: {exc.strerror}") from None

    def close(self) -> None:
        with self._lock:
            with contextlib.suppress(sqlite3.Error):  # best effort: an unmarked line is only logged twice
                self._flush_logged()
            self._db.close()

    def mark_logged(self, path: bytes) -> None:
        """The verdict of `path` is in the log now. No I/O: written with the next verdict, in its transaction."""
        with self._lock:
            self._logged.append(path)

    def _flush_logged(self) -> None:
        if self._logged:
            self._db.executemany("UPDATE files SET logged = 1 WHERE path = ?", [(p,) for p in self._logged])
            self._logged.clear()

    def flush(self) -> None:
        """Write the pending `mark_logged` marks now."""
        with self._lock:
            try:
                self._flush_logged()
            except sqlite3.Error as exc:
                raise StateError(f"cannot write state database {self.path}: {exc}") from None

    def unlogged(self) -> list[FileRow]:
        """Verdicts committed by a run that died before logging them (kill -9 between the two)."""
        rows = self._read(f"SELECT {_COLUMNS} FROM files WHERE logged = 0 AND status != ?", (PENDING,))
        return [_row(r) for r in rows]

    def _write(self, sql: str, params: tuple[object, ...] | list[tuple[object, ...]], many: bool = False) -> None:
        with self._lock:
            try:
                if many:
                    self._db.execute("BEGIN")
                    self._db.executemany(sql, params)  # type: ignore[arg-type]
                    self._db.execute("COMMIT")
                else:
                    self._db.execute(sql, params)
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise StateError(f"cannot write state database {self.path}: {exc}") from None

    def _read(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StateError(f"cannot read state database {self.path}: {exc}") from None

    # --- files ---------------------------------------------------------------------------------

    def get(self, path: bytes) -> FileRow | None:
        rows = self._read(f"SELECT {_COLUMNS} FROM files WHERE path = ?", (path,))
        return _row(rows[0]) if rows else None

    def files(self, watch: str | None = None) -> list[FileRow]:
        if watch is None:
            return [_row(r) for r in self._read(f"SELECT {_COLUMNS} FROM files")]
        return [_row(r) for r in self._read(f"SELECT {_COLUMNS} FROM files WHERE watch = ?", (watch,))]

    def iter_files(self, watch: str, *, ordered: bool = False) -> Iterator[FileRow]:
        """Stream a watch's rows through a separate read connection: constant memory, writers never wait."""
        try:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        except sqlite3.Error as exc:
            raise StateError(f"cannot read state database {self.path}: {exc}") from None
        try:
            order = " ORDER BY path" if ordered else ""
            cur = db.execute(f"SELECT {_COLUMNS} FROM files WHERE watch = ?{order}", (watch,))
            while batch := cur.fetchmany(1000):
                for r in batch:
                    yield _row(r)
        except sqlite3.Error as exc:
            raise StateError(f"cannot read state database {self.path}: {exc}") from None
        finally:
            db.close()

    def counts(self, watch: str) -> dict[str, int]:
        rows = self._read("SELECT status, COUNT(*) FROM files WHERE watch = ? GROUP BY status", (watch,))
        return {str(s): int(n) for s, n in rows}  # type: ignore[call-overload]

    def record(self, watch: str, path: bytes, sig: Signature | None, v: Verdict, *, logged: bool = False) -> None:
        """Store a verdict durably before it is logged; without a signature it is judged again next time.

        `logged=False` leaves the row to be replayed at the next start if this process dies before
        its log line is written and `mark_logged` reaches the database.
        """
        dev, ino, size, mtime_ns = (sig.dev, sig.ino, sig.size, sig.mtime_ns) if sig else (None, None, v.size, None)
        with self._lock:
            try:
                self._db.execute("BEGIN")
                self._flush_logged()
                self._db.execute(
                    f"INSERT OR REPLACE INTO files ({_COLUMNS}, logged) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (path, watch, dev, ino, size, mtime_ns, v.status, v.repo, v.revision, v.rfilename,
                     v.commit, v.algorithm, v.actual, v.expected, v.expected_size, time.time(), int(logged)),
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise StateError(f"cannot write state database {self.path}: {exc}") from None

    def mark_pending(self, watch: str, path: bytes) -> None:
        """Remember a file is being judged, so a crash leaves it to resume, not forgotten."""
        self._write(
            "INSERT INTO files (path, watch, status) VALUES (?, ?, ?) "
            "ON CONFLICT (path) DO UPDATE SET status = excluded.status, dev = NULL",
            (path, watch, PENDING),
        )

    def forget(self, path: bytes) -> None:
        self._write("DELETE FROM files WHERE path = ?", (path,))

    def forget_many(self, paths: list[bytes]) -> None:
        if paths:
            self._write("DELETE FROM files WHERE path = ?", [(p,) for p in paths], many=True)

    # --- repos ---------------------------------------------------------------------------------

    def set_repo(self, watch: str, repo: str, revision: str, commit: str, endpoint: str, files: int,
                 source: str) -> None:
        self._write(
            "INSERT OR REPLACE INTO repos (watch, repo, revision, commit_sha, endpoint, files, source, updated_at) "
            "VALUES (?,?,?,?,?,?,?,?)",
            (watch, repo, revision, commit, endpoint, files, source, time.time()),
        )

    def repos(self, watch: str | None = None) -> list[RepoRow]:
        sql = "SELECT watch, repo, revision, commit_sha, endpoint, files, source, updated_at FROM repos"
        rows = self._read(sql + " WHERE watch = ?", (watch,)) if watch else self._read(sql)
        return [RepoRow(*r) for r in rows]  # type: ignore[arg-type]

    def integrity(self) -> str:
        return str(self._read("PRAGMA integrity_check")[0][0])

