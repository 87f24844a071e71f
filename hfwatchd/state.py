"""The SQLite state store: one row per local file with its signature and verdict, its lock and its recovery."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, TypeVar
from urllib.parse import quote

from .exits import ExitCode
from .hashing import Signature
from .manifest import PENDING, Verdict

SCHEMA_VERSION = 1
LOCK_NAME = "lock"  # in state_dir; holds the daemon's PID while it runs

_T = TypeVar("_T")

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
    matched_by TEXT,                -- path | name | content: how the file was mapped to its entry
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
    """The state database cannot be opened or written (disk full, permissions, a lock that cannot be taken)."""

    exit_code: int = ExitCode.IOERR


class StateLocked(StateError):
    """Another process (a running daemon) holds this state directory's lock."""

    exit_code = ExitCode.TEMPFAIL

    def __init__(self, state_dir: Path, pid: int | None) -> None:
        who = f"another hfwatchd (pid {pid})" if pid is not None else "another hfwatchd"
        super().__init__(f"{who} already uses {state_dir}; stop it first (systemctl --user stop hfwatchd)")
        self.state_dir = state_dir
        self.pid = pid


class StateDamaged(StateError):
    """The database is damaged and this process may not repair it (a read-only `status`, or a `check`
    while a daemon holds the store: only the lock holder moves it aside)."""

    def __init__(self, path: Path, error: str, *, holder: int | None = None) -> None:
        if holder is not None:
            then = (f"the running daemon (pid {holder}) moves it aside and rebuilds it as soon as it reads "
                    "the damage, or at its next start (systemctl --user restart hfwatchd)")
        else:
            then = ("the daemon moves it aside and rebuilds it at its next start (files are judged again), "
                    "e.g. systemctl --user restart hfwatchd")
        super().__init__(f"state database {path} is damaged ({error}); {then}")
        self.path = path
        self.error = error
        self.holder = holder


class _Damage(Exception):
    """Internal: the open database failed its check or reported corruption."""


# SQLITE_CORRUPT, SQLITE_NOTADB (primary result codes): the file is not (or no longer) a usable database.
# Not SQLITE_FULL, SQLITE_IOERR, SQLITE_READONLY, SQLITE_CANTOPEN: moving a healthy store aside on
# ENOSPC or EACCES would lose it for nothing.
_CORRUPT_CODES = frozenset({11, 26})


def is_corruption(exc: sqlite3.Error) -> bool:
    """Whether an sqlite3 error means the file is damaged (rather than full, read-only or locked)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF in _CORRUPT_CODES:
        return True
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text


def _pid_in(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def read_lock_pid(state_dir: Path) -> int | None:
    """The PID of the live process holding `state_dir`'s lock (the running daemon), or None if it is free.

    Never takes the lock for more than the instant of a non-blocking shared probe, and never writes.
    """
    try:
        fd = os.open(state_dir / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None  # no lock file: no daemon ever ran here (or the folder is unreadable: none we can see)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            # held; a daemon writes its PID right after locking, so an empty file is a matter of microseconds
            deadline = time.monotonic() + 0.5
            while (pid := _pid_in(fd)) is None and time.monotonic() < deadline:
                time.sleep(0.005)
            return pid
        except OSError:
            return None  # a filesystem without flock: nobody can hold it either
        return None
    finally:
        os.close(fd)  # drops the probe's shared lock with it


def _take_lock(state_dir: Path) -> int:
    """Hold `state_dir/lock` exclusively for the life of this process (the kernel drops it at exit, even kill -9)."""
    path = state_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StateError(f"cannot open lock file {path}: {exc.strerror}") from None
    # a `status` probe holds a shared lock for an instant: look again for a moment before giving up
    deadline = time.monotonic() + 0.25
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                pid = _pid_in(fd)
                os.close(fd)
                raise StateLocked(state_dir, pid) from None
            time.sleep(0.01)
        except OSError as exc:
            os.close(fd)
            raise StateError(f"cannot lock {path}: {exc.strerror}") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    except OSError as exc:
        os.close(fd)
        raise StateError(f"cannot write lock file {path}: {exc.strerror}") from None
    return fd


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
    matched_by: str | None = None


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
     expected, expected_size, judged_at, matched_by) = r
    sig = None
    if dev is not None:
        sig = Signature(int(dev), int(ino), int(size), int(mtime_ns))  # type: ignore[call-overload]
    return FileRow(
        bytes(path),  # type: ignore[call-overload]
        str(watch), sig, str(status), repo, revision, rfilename, commit,  # type: ignore[arg-type]
        algorithm, digest, expected, expected_size, judged_at, matched_by,  # type: ignore[arg-type]
    )


_COLUMNS = ("path, watch, dev, ino, size, mtime_ns, status, repo, revision, rfilename, commit_sha, algorithm, "
            "digest, expected, expected_size, judged_at, matched_by")


class State:
    """Thread-safe access to the state database (WAL: readers never wait for the daemon).

    `exclusive=True` (the daemon) takes `state_dir/lock` before anything else: a second daemon gets
    `StateLocked`. `check` and `status` never take it. A database found damaged, at open
    (`PRAGMA quick_check`) or by any later read or write, is moved aside to
    `state.sqlite3.corrupt-<UTC time>` with its -wal and -shm, replaced by an empty one, and reported
    through `on_recovered(moved_to, error)`; the operation that found it then runs on the fresh
    database. The callback runs in the thread that found the damage, after the State lock is
    released; everything in the store can be recomputed by judging the files again, which is what
    the caller should start. A read-only State raises `StateDamaged` instead.
    """

    def __init__(self, state_dir: Path, *, readonly: bool = False, exclusive: bool = False,
                 on_recovered: Callable[[Path, str], None] | None = None) -> None:
        self.state_dir = state_dir
        self.path = state_dir / "state.sqlite3"
        self.readonly = readonly
        self.on_recovered = on_recovered
        self._lock = threading.Lock()
        self._logged: list[bytes] = []
        self._generation = 0  # bumped by every recovery: a failure seen on an older database is stale
        self._lock_fd: int | None = None
        if not readonly:
            try:
                state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
                os.chmod(state_dir, 0o700)
            except OSError as exc:
                raise StateError(f"cannot create state directory {state_dir}: {exc.strerror}") from None
        if exclusive:
            self._lock_fd = _take_lock(state_dir)
        try:
            try:
                self._db = self._connect()
            except _Damage as damage:
                if readonly:
                    raise StateDamaged(self.path, str(damage)) from None
                moved = self._as_lock_holder(str(damage), self._move_aside)
                self._db = self._connect_fresh()
                if on_recovered is not None:
                    on_recovered(moved, str(damage))
        except BaseException:
            self._unlock()
            raise
        self._select = _COLUMNS
        if readonly and "matched_by" not in {r[1] for r in self._db.execute("PRAGMA table_info(files)")}:
            self._select = _COLUMNS.replace("matched_by", "NULL")  # a store the daemon has not upgraded yet

    def _uri(self, *, readonly: bool) -> str:
        return f"file:{quote(str(self.path))}" + ("?mode=ro" if readonly else "")

    def _open(self, *, readonly: bool) -> sqlite3.Connection:
        try:
            return sqlite3.connect(self._uri(readonly=readonly), uri=True, check_same_thread=False,
                                   isolation_level=None, timeout=30)
        except sqlite3.Error as exc:
            raise StateError(f"cannot open state database {self.path}: {exc}") from None

    def _failed(self, exc: sqlite3.Error) -> NoReturn:
        if is_corruption(exc):
            raise _Damage(str(exc)) from None
        raise StateError(f"cannot open state database {self.path}: {exc}") from None

    def _connect(self) -> sqlite3.Connection:
        """Open and check the database; `_Damage` if it is not a sound SQLite file, StateError otherwise."""
        if self.readonly or self.path.exists():
            # checked through a read-only connection: closing it never checkpoints the WAL into a damaged
            # file nor deletes the WAL, so what is moved aside is what was found
            db = self._open(readonly=True)
            try:
                # quick_check reads every page (60 ms for 100,000 rows, 52 MiB, here; integrity_check, which
                # also cross-checks indexes against rows, 220 ms): damage in a page no query happens to
                # touch is found now rather than mid-scan. Damage it misses surfaces as SQLITE_CORRUPT
                # later and is recovered from the same way.
                problems = [str(r[0]) for r in db.execute("PRAGMA quick_check(5)")]
            except sqlite3.Error as exc:
                db.close()
                self._failed(exc)
            if problems != ["ok"]:
                db.close()
                raise _Damage("quick_check: " + "; ".join(problems))
            if self.readonly:
                return db
            db.close()
        db = self._open(readonly=False)
        try:
            self._prepare(db)
        except sqlite3.Error as exc:
            db.close()
            self._failed(exc)
        return db

    def _prepare(self, db: sqlite3.Connection) -> None:
        db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a committed verdict survives a crash of this process (kill -9);
        # a power cut may roll back the last ones, which are then judged again, never wrongly.
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        columns = {r[1] for r in db.execute("PRAGMA table_info(files)")}
        if "logged" not in columns:  # a database from before verdicts were replayed
            db.execute("ALTER TABLE files ADD COLUMN logged INTEGER NOT NULL DEFAULT 1")
        if "matched_by" not in columns:  # a database from before per-file records
            db.execute("ALTER TABLE files ADD COLUMN matched_by TEXT")
        db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))

    def _connect_fresh(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except _Damage as damage:  # a brand-new file damaged at once: the disk, not the file, is failing
            raise StateError(f"cannot create state database {self.path}: {damage}") from None

    def _as_lock_holder(self, error: str, move: Callable[[], Path]) -> Path:
        """Run `move` holding the lock: a daemon holds it already; a `check` takes it for the move.

        When another process (a daemon) holds the lock, the file is left to it: it has the database
        open and would otherwise go on writing into the moved file. StateDamaged says so.
        """
        if self._lock_fd is not None:
            return move()
        try:
            fd = _take_lock(self.state_dir)
        except StateLocked as held:
            raise StateDamaged(self.path, error, holder=held.pid) from None
        try:
            return move()
        finally:
            os.close(fd)

    def _move_aside(self) -> Path:
        """Move the database (and its -wal, -shm) aside under a UTC timestamp; never deletes anything."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while target.exists():  # two recoveries within one second
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
            n += 1
        try:
            os.rename(self.path, target)
            for suffix in ("-wal", "-shm"):  # SQLite pairs `<db>-wal` with `<db>`: kept together for forensics
                with contextlib.suppress(FileNotFoundError):
                    os.rename(f"{self.path}{suffix}", f"{target}{suffix}")
            dfd = os.open(self.state_dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:
            raise StateError(f"state database {self.path} is damaged and cannot be moved aside: "
                             f"{exc.strerror}") from None
        return target

    def _recover(self, error: str) -> tuple[Path, str]:
        """Under `self._lock`: swap the damaged database for a fresh one."""

        def swap() -> Path:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            return self._move_aside()

        moved = self._as_lock_holder(error, swap)
        self._logged.clear()  # marks for rows of the old file
        self._generation += 1
        self._db = self._connect_fresh()
        return moved, error

    def _recovered(self, done: tuple[Path, str] | None) -> None:
        if done is not None and self.on_recovered is not None:
            self.on_recovered(*done)

    def _run(self, op: Callable[[sqlite3.Connection], _T], what: str) -> _T:
        """`op` on the database under the lock; on corruption, recover once and run it again on the fresh one."""
        with self._lock:
            try:
                return op(self._db)
            except sqlite3.Error as exc:
                self._rollback()
                if not is_corruption(exc):
                    raise StateError(f"cannot {what} state database {self.path}: {exc}") from None
                if self.readonly:
                    raise StateDamaged(self.path, str(exc)) from None
                done = self._recover(str(exc))
            failure: StateError | None = None
            try:
                result = op(self._db)
            except sqlite3.Error as exc:
                self._rollback()
                failure = StateError(f"cannot {what} state database {self.path}: {exc}")
        # outside the lock: the callback may log, queue a rescan, even read the store
        self._recovered(done)
        if failure is not None:
            raise failure
        return result

    def _rollback(self) -> None:
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def close(self) -> None:
        with self._lock:
            with contextlib.suppress(sqlite3.Error):  # best effort: an unmarked line is only logged twice
                self._flush_logged(self._db)
            self._db.close()
            self._unlock()

    def mark_logged(self, path: bytes) -> None:
        """The verdict of `path` is in the log now. No I/O: written with the next verdict, in its transaction."""
        with self._lock:
            self._logged.append(path)

    def _flush_logged(self, db: sqlite3.Connection) -> None:
        if self._logged:
            db.executemany("UPDATE files SET logged = 1 WHERE path = ?", [(p,) for p in self._logged])
            self._logged.clear()

    def flush(self) -> None:
        """Write the pending `mark_logged` marks now."""
        self._run(self._flush_logged, "write")

    def unlogged(self) -> list[FileRow]:
        """Verdicts committed by a run that died before logging them (kill -9 between the two)."""
        rows = self._read(f"SELECT {self._select} FROM files WHERE logged = 0 AND status != ?", (PENDING,))
        return [_row(r) for r in rows]

    def _write(self, sql: str, params: tuple[object, ...] | list[tuple[object, ...]], many: bool = False) -> None:
        def op(db: sqlite3.Connection) -> None:
            if many:
                db.execute("BEGIN")
                db.executemany(sql, params)  # type: ignore[arg-type]
                db.execute("COMMIT")
            else:
                db.execute(sql, params)

        self._run(op, "write")

    def _read(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        return self._run(lambda db: db.execute(sql, params).fetchall(), "read")

    # --- files ---------------------------------------------------------------------------------

    def get(self, path: bytes) -> FileRow | None:
        rows = self._read(f"SELECT {self._select} FROM files WHERE path = ?", (path,))
        return _row(rows[0]) if rows else None

    def files(self, watch: str | None = None) -> list[FileRow]:
        if watch is None:
            return [_row(r) for r in self._read(f"SELECT {self._select} FROM files")]
        return [_row(r) for r in self._read(f"SELECT {self._select} FROM files WHERE watch = ?", (watch,))]

    def iter_files(self, watch: str, *, ordered: bool = False) -> Iterator[FileRow]:
        """Stream a watch's rows through a separate read connection: constant memory, writers never wait.

        Damage found mid-stream is recovered from like any other (the stream then ends: the fresh
        store has no rows, and the caller's rescan judges every file again).
        """
        generation = self._generation
        try:
            db = sqlite3.connect(self._uri(readonly=True), uri=True, timeout=30)
        except sqlite3.Error as exc:
            raise StateError(f"cannot read state database {self.path}: {exc}") from None
        try:
            order = " ORDER BY path" if ordered else ""
            cur = db.execute(f"SELECT {self._select} FROM files WHERE watch = ?{order}", (watch,))
            while batch := cur.fetchmany(1000):
                for r in batch:
                    yield _row(r)
        except sqlite3.Error as exc:
            if not is_corruption(exc):
                raise StateError(f"cannot read state database {self.path}: {exc}") from None
            if self.readonly:
                raise StateDamaged(self.path, str(exc)) from None
            db.close()
            done = None
            with self._lock:
                if self._generation == generation:  # not already replaced by another thread meanwhile
                    done = self._recover(str(exc))
            self._recovered(done)
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
        row = (path, watch, dev, ino, size, mtime_ns, v.status, v.repo, v.revision, v.rfilename,
               v.commit, v.algorithm, v.actual, v.expected, v.expected_size, time.time(), v.matched_by, int(logged))

        def op(db: sqlite3.Connection) -> None:
            db.execute("BEGIN")
            self._flush_logged(db)
            db.execute(f"INSERT OR REPLACE INTO files ({_COLUMNS}, logged) VALUES ({', '.join('?' * 18)})",
                       row)
            db.execute("COMMIT")

        self._run(op, "write")

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
