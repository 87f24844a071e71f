"""Robustness: one daemon per state_dir, a damaged store healed, self-proving manifest caches, descriptors let go.

The in-process classes drive `State`, `Hub` and `Tracker` directly; the daemon classes run
`hfwatchd --config` as systemd does and read its log lines and `/proc/PID/fd`. Waits are on log
lines, queues, process exits and observable state (a descriptor appearing or going), each with a
deadline; nothing sleeps to synchronise.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DaemonProc, run_cli, write_config
from fakehub import FakeHub

from hfwatchd.hashing import Signature
from hfwatchd.hub import Hub, HubError, decode_manifest_cache, decode_ref
from hfwatchd.manifest import MATCHED, RepoRef, Verdict
from hfwatchd.progressive import Tracker
from hfwatchd.state import State, StateDamaged, StateError, StateLocked, read_lock_pid

Start = Callable[..., DaemonProc]

REPO = "org/model"
FILES = {
    "config.json": b'{"architectures": ["Bert"], "hidden_size": 768}\n',
    "tokenizer.json": b'{"version": "1.0", "model": {"vocab": {}}}\n',
    "README.md": b"# a model\n",
    "model-00001-of-00003.safetensors": random.Random(1).randbytes(300_000),
    "model-00002-of-00003.safetensors": random.Random(2).randbytes(300_000),
    "model-00003-of-00003.safetensors": random.Random(3).randbytes(300_000),
    "sentinel.json": b'{"sentinel": true}\n',
}
HELD_BACK = "sentinel.json"  # written only once the daemon under test is up, to prove it judges new files
CORRUPT_NAME = re.compile(r"^state\.sqlite3\.corrupt-\d{8}T\d{6}Z(-\d+)?$")
DAMAGES = ("schema", "not-a-database", "truncated", "mid-file")


# --------------------------------------------------------------------------------------------- helpers


def write(path: Path, data: bytes) -> None:
    """Write like wget or curl: data straight into the final name, then close."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def verdict(name: str) -> Verdict:
    return Verdict(MATCHED, f"/w/{name}", 10, REPO, "main", name, "a" * 40, 10, "sha256", "e" * 64, "e" * 64)


def pad_store(state_dir: Path, n: int) -> None:
    """Add `n` rows of another watch with plain sqlite3, so the file spans many data pages."""
    db = sqlite3.connect(state_dir / "state.sqlite3")
    try:
        with db:
            db.executemany(
                "INSERT OR IGNORE INTO files (path, watch, dev, ino, size, mtime_ns, status, digest, expected) "
                "VALUES (?, '/padding', 1, ?, 10, 10, 'matched', ?, ?)",
                [(f"/padding/file-{i:06d}.bin".encode(), i, f"{i:064x}", f"{i:064x}") for i in range(n)],
            )
    finally:
        db.close()


def damage(db: Path, how: str) -> None:
    """Damage a closed state database the way a failing disk, a bad copy or a stray write would."""
    size = db.stat().st_size
    rnd = random.Random(how)
    if how == "schema":
        overwrite(db, 4096, rnd.randbytes(8192))
    elif how == "not-a-database":
        db.write_bytes(b"this is not an SQLite database\n" * 300)
    elif how == "truncated":
        os.truncate(db, size // 2 + 1000)  # not even on a page boundary
    elif how == "mid-file":
        overwrite(db, size // 2 // 4096 * 4096, rnd.randbytes(8192))
    else:
        raise ValueError(how)


def overwrite(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def sqlite_says(db: Path) -> str:
    """What SQLite itself makes of a database file: 'ok', or its complaint."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return str(exc)
    try:
        return "; ".join(str(r[0]) for r in conn.execute("PRAGMA quick_check"))
    except sqlite3.Error as exc:
        return str(exc)
    finally:
        conn.close()


def still_opens(db: Path) -> bool:
    """Whether SQLite still reads the schema of this file (the damage is further in)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        conn.execute("SELECT name FROM sqlite_master").fetchall()
    except sqlite3.Error:
        return False
    finally:
        conn.close()
    return True


def fd_targets(pid: int) -> list[str]:
    """What every open descriptor of a live process points at."""
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed between the listing and the readlink
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return out


def wait_for_state(pred: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll an observable condition (a /proc listing, a counter) until it holds, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.02)


def logged(d: DaemonProc, event: str, timeout: float = 20.0, **match: Any) -> dict[str, Any]:
    """The first line with this event and these fields, whether already read (before daemon.ready) or to come."""
    for rec in d.seen:
        if rec.get("event") == event and all(rec.get(k) == v for k, v in match.items()):
            return rec
    return d.wait_for(event, timeout, **match)


def events(d: DaemonProc, event: str) -> list[dict[str, Any]]:
    d.drain()
    return [r for r in d.seen if r.get("event") == event]


def cache_file(state_dir: Path, commit: str) -> Path:
    return state_dir / "manifests" / "models" / REPO.replace("/", "--") / f"{commit}.jsonl"


def ref_file(cache_dir: Path) -> Path:
    return cache_dir / "models" / REPO.replace("/", "--") / "refs" / "main.json"


class RecordingLog:
    """A logger that queues every call as (event, fields), for the tracker's debug lines."""

    def __init__(self) -> None:
        self.lines: queue.SimpleQueue[tuple[str, dict[str, Any]]] = queue.SimpleQueue()

    def _put(self, event: str, **kw: Any) -> None:
        self.lines.put((event, kw))

    debug = info = warning = error = exception = _put

    def wait(self, event: str, timeout: float = 5.0, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                name, kw = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {event} {match} within {timeout}s") from None
            if name == event and all(kw.get(k) == v for k, v in match.items()):
                return kw


@pytest.fixture
def setup(tmp_path: Path, fake_hub: FakeHub) -> dict[str, Any]:
    commit = fake_hub.add_repo(REPO, FILES)
    watched = tmp_path / "dl"
    watched.mkdir()
    state = tmp_path / "state"
    cfg = write_config(tmp_path / "hfwatchd.toml", hub=fake_hub, watches=[{"path": watched, "repos": [REPO]}],
                       state_dir=state, rescan_interval="1h", workers=2)
    return {"dir": watched, "state": state, "config": cfg, "hub": fake_hub, "commit": commit, "tmp": tmp_path}


def judged_once(setup: dict[str, Any], start: Start) -> None:
    """Run the daemon once over every file but the held-back one, and stop it cleanly."""
    for name, data in FILES.items():
        if name != HELD_BACK:
            write(setup["dir"] / name, data)
    d = start(setup["config"])
    for name in FILES:
        if name != HELD_BACK:
            logged(d, "file.matched", rfilename=name)
    assert d.stop() == 0


# --------------------------------------------------------------------------------------------- the lock


class TestOneDaemonPerStateDir:
    def test_a_second_exclusive_state_is_refused_naming_the_holder(self, tmp_path: Path) -> None:
        """A second exclusive State on one folder raises StateLocked (exit 75) naming the holder's PID and folder."""
        first = State(tmp_path / "s", exclusive=True)
        try:
            with pytest.raises(StateLocked) as caught:
                State(tmp_path / "s", exclusive=True)
            assert caught.value.exit_code == 75
            assert caught.value.pid == os.getpid()
            assert f"(pid {os.getpid()})" in str(caught.value)
            assert str(tmp_path / "s") in str(caught.value) and "stop it first" in str(caught.value)
            assert isinstance(caught.value, StateError)
        finally:
            first.close()

    def test_read_lock_pid_names_the_live_holder_only(self, tmp_path: Path) -> None:
        """read_lock_pid gives the holder's PID while it runs and None before and after."""
        folder = tmp_path / "s"
        assert read_lock_pid(folder) is None
        s = State(folder, exclusive=True)
        assert read_lock_pid(folder) == os.getpid()
        s.close()
        assert read_lock_pid(folder) is None
        assert (folder / "lock").exists()  # the stale PID stays in the file, harmless: the flock is the truth

    def test_kill_9_leaves_no_stale_lock(self, tmp_path: Path) -> None:
        """A holder killed with SIGKILL leaves the lock free: the kernel drops the flock with the process."""
        folder = tmp_path / "s"
        code = ("import sys; from pathlib import Path; from hfwatchd.state import State; "
                f"s = State(Path({str(folder)!r}), exclusive=True); print('locked', flush=True); sys.stdin.read()")
        child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True)
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "locked"
            assert read_lock_pid(folder) == child.pid
            with pytest.raises(StateLocked, match=f"pid {child.pid}"):
                State(folder, exclusive=True)
        finally:
            child.kill()
            child.wait(10)
            for stream in (child.stdin, child.stdout):
                if stream is not None:
                    stream.close()
        assert read_lock_pid(folder) is None
        s = State(folder, exclusive=True)
        try:
            assert (folder / "lock").read_text().strip() == str(os.getpid())
        finally:
            s.close()

    def test_readers_and_checks_never_take_the_lock(self, tmp_path: Path) -> None:
        """While the lock is held, a read-only State (status) and a plain one (check) open, read and write."""
        folder = tmp_path / "s"
        holder = State(folder, exclusive=True)
        try:
            holder.record("/w", b"/w/a", None, verdict("a"))
            check = State(folder)
            check.record("/w", b"/w/b", None, verdict("b"))
            check.close()
            status = State(folder, readonly=True)
            assert {r.path for r in status.files()} == {b"/w/a", b"/w/b"}
            status.close()
            assert read_lock_pid(folder) == os.getpid()
        finally:
            holder.close()

    def test_second_daemon_exits_75_while_check_and_status_work(self, setup: dict[str, Any],
                                                                daemon_factory: Start) -> None:
        """A second daemon on one state_dir exits 75 naming the first's PID; check and status keep working meanwhile."""
        for name, data in FILES.items():
            if name != HELD_BACK:
                write(setup["dir"] / name, data)
        first = daemon_factory(setup["config"])
        logged(first, "scan.finished")
        second = daemon_factory(setup["config"], ready=False)
        assert second.proc.wait(30) == 75
        second.stop()
        said = "".join(second.raw)
        assert f"pid {first.proc.pid}" in said, said
        assert "Traceback" not in said
        assert read_lock_pid(setup["state"]) == first.proc.pid

        check = run_cli("check", "--config", str(setup["config"]), "--no-progress", hub=setup["hub"])
        assert check.returncode == 2, check.stderr  # all there but the held-back file: missing
        status = run_cli("status", "--config", str(setup["config"]), hub=setup["hub"])
        assert status.returncode == 0, status.stderr
        assert f"{len(FILES) - 1}/{len(FILES)} matched" in status.stdout, status.stdout

        assert first.proc.poll() is None
        write(setup["dir"] / HELD_BACK, FILES[HELD_BACK])
        first.wait_for("file.matched", rfilename=HELD_BACK)


# --------------------------------------------------------------------------------------------- a damaged store


class TestDamagedStoreInProcess:
    @pytest.fixture
    def store(self, tmp_path: Path) -> Path:
        """A closed state database of 3,000 rows (about 1 MiB), the size where damage lands on data pages."""
        folder = tmp_path / "s"
        State(folder).close()
        pad_store(folder, 3000)
        return folder

    @pytest.mark.parametrize("how", DAMAGES)
    def test_damage_at_open_is_moved_aside_and_replaced(self, store: Path, how: str) -> None:
        """A damaged database is moved aside under a UTC timestamp (never deleted), reported once, and replaced."""
        db = store / "state.sqlite3"
        damage(db, how)
        assert sqlite_says(db) != "ok"
        if how == "mid-file":
            assert still_opens(db)  # the schema is intact: only the full check finds it
        damaged_bytes = db.read_bytes()
        reports: list[tuple[Path, str]] = []
        s = State(store, on_recovered=lambda p, e: reports.append((p, e)))
        try:
            assert len(reports) == 1
            moved, error = reports[0]
            assert moved.parent == store and CORRUPT_NAME.match(moved.name), moved
            assert moved.read_bytes() == damaged_bytes
            assert error
            assert s.files() == []
            s.record("/w", b"/w/a", Signature(1, 2, 10, 3), verdict("a"))
            assert [r.path for r in s.files()] == [b"/w/a"]
        finally:
            s.close()
        assert sqlite_says(db) == "ok"
        assert len(reports) == 1

    def test_wal_and_shm_move_with_it(self, store: Path, tmp_path: Path) -> None:
        """A store left by a crash (data still in its -wal) moves aside with its -wal and -shm, untouched."""
        writer = sqlite3.connect(store / "state.sqlite3", isolation_level=None)
        try:
            writer.execute("PRAGMA wal_autocheckpoint = 0")  # keep the new rows in the WAL, as a crash would
            writer.executemany("INSERT INTO files (path, watch, status) VALUES (?, '/w', 'matched')",
                               [(f"/w/{i}".encode(),) for i in range(500)])
            crashed = tmp_path / "crashed"
            crashed.mkdir()
            for suffix in ("", "-wal", "-shm"):  # a snapshot of the files while the writer is alive
                (crashed / f"state.sqlite3{suffix}").write_bytes((store / f"state.sqlite3{suffix}").read_bytes())
        finally:
            writer.close()
        damage(crashed / "state.sqlite3", "schema")
        wal = (crashed / "state.sqlite3-wal").read_bytes()
        assert len(wal) > 100_000
        reports: list[tuple[Path, str]] = []
        State(crashed, on_recovered=lambda p, e: reports.append((p, e))).close()
        (moved, _), = reports
        assert Path(f"{moved}-wal").read_bytes() == wal
        assert Path(f"{moved}-shm").exists()

    def test_a_healthy_store_left_by_kill_9_is_not_mistaken_for_damage(self, store: Path) -> None:
        """A store whose writer was killed with rows only in its -wal opens with no recovery and every row."""
        code = ("import os, sqlite3, sys; db = sqlite3.connect(sys.argv[1], isolation_level=None); "
                "db.execute('PRAGMA wal_autocheckpoint = 0'); "
                "db.executemany(\"INSERT INTO files (path, watch, status) VALUES (?, '/w', 'matched')\", "
                "[(b'/w/%d' % i,) for i in range(500)]); os.kill(os.getpid(), 9)")
        child = subprocess.run([sys.executable, "-c", code, str(store / "state.sqlite3")], check=False)
        assert child.returncode == -signal.SIGKILL
        assert (store / "state.sqlite3-wal").stat().st_size > 100_000
        reports: list[tuple[Path, str]] = []
        s = State(store, exclusive=True, on_recovered=lambda p, e: reports.append((p, e)))
        try:
            assert reports == []
            assert len(s.files("/w")) == 500
        finally:
            s.close()
        assert [p.name for p in store.iterdir() if "corrupt" in p.name] == []

    def test_damage_found_at_run_time_is_recovered_once_then_the_operation_retried(self, store: Path) -> None:
        """Corruption hit by a read after opening recovers once and the read answers from the fresh store."""
        pad_store(store, 20_000)  # bigger than SQLite's page cache, so the damaged pages are read again
        reports: list[tuple[Path, str]] = []
        s = State(store, on_recovered=lambda p, e: reports.append((p, e)))
        try:
            assert reports == []
            damage(store / "state.sqlite3", "mid-file")
            assert s.files() == []  # the scan hit the damage, recovered, and ran again on the fresh file
            assert len(reports) == 1 and reports[0][0].exists()
            assert "malformed" in reports[0][1]
            for i in range(50):
                s.record("/w", f"/w/{i}".encode(), None, verdict(str(i)))
            assert len(s.files()) == 50
            assert len(reports) == 1
        finally:
            s.close()

    def test_only_the_lock_holder_moves_a_store_aside(self, store: Path) -> None:
        """A check finding damage while a daemon holds the lock leaves the file to the daemon, which heals it."""
        pad_store(store, 20_000)
        reports: list[tuple[Path, str]] = []
        daemon = State(store, exclusive=True, on_recovered=lambda p, e: reports.append((p, e)))
        try:
            damage(store / "state.sqlite3", "mid-file")
            with pytest.raises(StateDamaged, match=f"running daemon \\(pid {os.getpid()}\\)") as caught:
                State(store)
            assert caught.value.exit_code == 74
            assert [p.name for p in store.iterdir() if "corrupt" in p.name] == []
            assert daemon.files() == []
            assert len(reports) == 1 and reports[0][0].exists()
        finally:
            daemon.close()

    def test_a_check_heals_a_store_no_daemon_holds(self, store: Path) -> None:
        """With no daemon running, a check (a plain State) moves a damaged store aside itself, under the lock."""
        damage(store / "state.sqlite3", "schema")
        reports: list[tuple[Path, str]] = []
        s = State(store, on_recovered=lambda p, e: reports.append((p, e)))
        try:
            assert len(reports) == 1
            assert read_lock_pid(store) is None  # taken for the move only
        finally:
            s.close()

    def test_the_callback_may_use_the_store(self, store: Path) -> None:
        """on_recovered runs outside the State lock: a callback that reads the store does not deadlock."""
        pad_store(store, 20_000)
        seen: list[int] = []
        holder: list[State] = []
        s = State(store, on_recovered=lambda p, e: seen.append(len(holder[0].files())))
        holder.append(s)
        try:
            damage(store / "state.sqlite3", "mid-file")
            reader = threading.Thread(target=s.files, name="reader")
            reader.start()
            reader.join(10)
            assert not reader.is_alive(), "files() deadlocked in the recovery callback"
            assert seen == [0]
        finally:
            s.close()

    def test_a_full_disk_is_an_error_not_a_recovery(self, tmp_path: Path) -> None:
        """SQLITE_FULL stays a StateError and the healthy database stays where it is."""
        reports: list[tuple[Path, str]] = []
        s = State(tmp_path / "s", on_recovered=lambda p, e: reports.append((p, e)))
        try:
            s.record("/w", b"/w/a", None, verdict("a"))
            # the same error a full disk gives, without one: this connection may not grow the file
            pages = s._db.execute("PRAGMA page_count").fetchone()[0]
            s._db.execute(f"PRAGMA max_page_count = {pages}")
            def fill() -> None:
                for i in range(2000):
                    s.record("/w", f"/w/{i:04d}-{'x' * 200}".encode(), None, verdict(str(i)))

            with pytest.raises(StateError, match="full") as caught:
                fill()
            assert not isinstance(caught.value, StateDamaged)
            assert caught.value.exit_code == 74
            assert reports == []
            assert [p.name for p in (tmp_path / "s").iterdir() if "corrupt" in p.name] == []
        finally:
            s.close()

    @pytest.mark.parametrize("how", DAMAGES)
    def test_read_only_raises_state_damaged_and_moves_nothing(self, store: Path, how: str) -> None:
        """A read-only State (status) on a damaged store raises StateDamaged, exit 74, and leaves the file alone."""
        db = store / "state.sqlite3"
        damage(db, how)
        before = db.read_bytes()
        with pytest.raises(StateDamaged) as caught:
            State(store, readonly=True)
        assert caught.value.exit_code == 74
        assert "moves it aside and rebuilds it" in str(caught.value)
        assert db.read_bytes() == before
        assert [p.name for p in store.iterdir() if "corrupt" in p.name] == []


class TestDamagedStoreDaemon:
    @pytest.mark.parametrize("how", DAMAGES)
    def test_daemon_logs_state_recovered_once_and_judges_again(self, how: str, setup: dict[str, Any],
                                                              daemon_factory: Start) -> None:
        """The daemon moves a damaged store aside, logs state.recovered once with the path, and judges every file."""
        judged_once(setup, daemon_factory)
        pad_store(setup["state"], 5000)
        db = setup["state"] / "state.sqlite3"
        damage(db, how)
        assert sqlite_says(db) != "ok"
        d = daemon_factory(setup["config"])
        rec = logged(d, "state.recovered")
        moved = Path(rec["path"])
        assert moved.exists() and moved.parent == setup["state"] and CORRUPT_NAME.match(moved.name), rec
        assert rec["error"]
        for name in FILES:
            if name != HELD_BACK:
                logged(d, "file.matched", rfilename=name)
        write(setup["dir"] / HELD_BACK, FILES[HELD_BACK])
        d.wait_for("file.matched", rfilename=HELD_BACK)
        logged(d, "scan.finished")
        assert len(events(d, "state.recovered")) == 1
        assert sqlite_says(db) == "ok"

    @pytest.mark.parametrize("how", DAMAGES)
    def test_status_on_a_damaged_store_exits_74_with_a_clear_message(self, how: str, setup: dict[str, Any],
                                                                    daemon_factory: Start) -> None:
        """`status --config` on a damaged store exits 74 saying the daemon rebuilds it, with no traceback."""
        judged_once(setup, daemon_factory)
        pad_store(setup["state"], 5000)
        db = setup["state"] / "state.sqlite3"
        damage(db, how)
        before = db.read_bytes()
        result = run_cli("status", "--config", str(setup["config"]), hub=setup["hub"])
        assert result.returncode == 74, (result.returncode, result.stderr)
        assert "damaged" in result.stderr and "rebuilds it" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        assert db.read_bytes() == before  # status never repairs


# --------------------------------------------------------------------------------------------- the manifest cache


def cut_mid_line(path: Path) -> None:
    os.truncate(path, path.stat().st_size - 20)
    assert not path.read_bytes().endswith(b"\n")


def garble_digest(path: Path) -> None:
    """Change one hex digit of one sha256: every line still parses, only the checksum can tell."""
    lines = path.read_bytes().split(b"\n")
    for i in range(1, len(lines)):
        entry = json.loads(lines[i]) if lines[i] else None
        if entry and entry[2]:
            digit = entry[2][10]
            entry[2] = entry[2][:10] + ("0" if digit != "0" else "1") + entry[2][11:]
            lines[i] = json.dumps(entry).encode()
            break
    path.write_bytes(b"\n".join(lines))


def cut_at_line_end(path: Path) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-3]))


def old_format(path: Path) -> None:
    """What the previous version wrote: the entry lines alone, with no header."""
    path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[1:]))


def garbage(path: Path) -> None:
    path.write_bytes(random.Random(7).randbytes(2000))


MANIFEST_DAMAGES = {"truncated": cut_mid_line, "garbled": garble_digest, "cut at a line end": cut_at_line_end,
                    "old format": old_format, "garbage": garbage}


class TestManifestCache:
    @pytest.fixture
    def hub_dir(self, tmp_path: Path, fake_hub: FakeHub) -> tuple[FakeHub, Path, str]:
        """A fake Hub with the repo, and a cache folder holding its manifest as written by a first load."""
        commit = fake_hub.add_repo(REPO, FILES)
        cache = tmp_path / "manifests"
        with hub_client(fake_hub, cache) as hub:
            assert hub.load(RepoRef.parse(REPO)).source == "hub"
        return fake_hub, cache, commit

    def test_a_written_cache_proves_itself_complete(self, hub_dir: tuple[FakeHub, Path, str]) -> None:
        """The cache file decodes to every entry and the ref file to the commit; a fresh Hub loads them silently."""
        fake, cache, commit = hub_dir
        path = cache / "models" / "org--model" / f"{commit}.jsonl"
        assert set(decode_manifest_cache(path, commit)) == set(FILES)
        assert decode_ref(ref_file(cache).read_bytes())[0] == commit
        reports: list[tuple[Path, str]] = []
        asked = len(fake.requests)
        with hub_client(fake, cache, reports) as hub:
            loaded = hub.load(RepoRef.parse(REPO))
        assert loaded.source == "cache" and len(loaded.manifest.entries) == len(FILES)
        assert reports == [] and len(fake.requests) == asked

    @pytest.mark.parametrize("how", list(MANIFEST_DAMAGES))
    def test_a_damaged_manifest_cache_is_reported_refetched_and_rewritten(
            self, hub_dir: tuple[FakeHub, Path, str], how: str) -> None:
        """A truncated, garbled, short, old-format or garbage cache is reported once, fetched again and rewritten."""
        fake, cache, commit = hub_dir
        path = cache / "models" / "org--model" / f"{commit}.jsonl"
        MANIFEST_DAMAGES[how](path)
        reports: list[tuple[Path, str]] = []
        asked = len(fake.requests)
        with hub_client(fake, cache, reports) as hub:
            loaded = hub.load(RepoRef.parse(REPO))
        assert len(reports) == 1 and reports[0][0] == path and reports[0][1], reports
        assert loaded.source == "hub" and set(loaded.manifest.entries) == set(FILES)
        assert any("/tree/" in target for _, target in fake.requests[asked:])
        assert set(decode_manifest_cache(path, commit)) == set(FILES)  # rewritten whole
        reports.clear()
        with hub_client(fake, cache, reports) as hub:
            again = hub.load(RepoRef.parse(REPO))
        assert again.source == "cache" and len(again.manifest.entries) == len(FILES) and reports == []

    @pytest.mark.parametrize("how", ["truncated", "garbled", "old format"])
    def test_a_damaged_ref_is_reported_refetched_and_rewritten(self, hub_dir: tuple[FakeHub, Path, str],
                                                                how: str) -> None:
        """A cut, garbled or old-format branch->commit file is reported, resolved again and rewritten."""
        fake, cache, commit = hub_dir
        path = ref_file(cache)
        info = json.loads(path.read_bytes())
        if how == "truncated":
            path.write_bytes(path.read_bytes()[:30])
        elif how == "garbled":
            info["commit"] = "0" * 40
            path.write_text(json.dumps(info))
        else:
            path.write_text(json.dumps({k: info[k] for k in ("commit", "resolved_at", "endpoint")}))
        reports: list[tuple[Path, str]] = []
        with hub_client(fake, cache, reports) as hub:
            loaded = hub.load(RepoRef.parse(REPO))
        assert [p for p, _ in reports] == [path]
        assert loaded.manifest.commit == commit and len(loaded.manifest.entries) == len(FILES)
        assert decode_ref(path.read_bytes())[0] == commit

    def test_with_the_hub_down_a_damaged_cache_gives_no_manifest_not_a_short_one(
            self, hub_dir: tuple[FakeHub, Path, str]) -> None:
        """With the Hub unreachable, a short cache is refused (HubError), reported once however often it is asked."""
        fake, cache, commit = hub_dir
        path = cache / "models" / "org--model" / f"{commit}.jsonl"
        cut_at_line_end(path)
        reports: list[tuple[Path, str]] = []
        fake.stop()  # its port now refuses connections: the Hub is down
        hub = Hub(fake.url, cache, ttl=0.0, timeout=2.0, on_invalid=lambda p, e: reports.append((p, e)))
        try:
            for _ in range(3):
                with pytest.raises(HubError):
                    hub.load(RepoRef.parse(REPO))
            assert hub.cached(RepoRef.parse(REPO)) is None
        finally:
            hub.close()
        assert len(reports) == 1 and "4 of the 7 entries" in reports[0][1], reports

    def test_daemon_reports_a_short_cache_and_judges_with_the_whole_manifest(
            self, setup: dict[str, Any], daemon_factory: Start) -> None:
        """A cache cut at a line end gives manifest.cache_invalid and a refetch; a dropped shard is matched."""
        d = daemon_factory(setup["config"])
        logged(d, "manifest.loaded", files=len(FILES))
        assert d.stop() == 0
        path = cache_file(setup["state"], setup["commit"])
        dropped = [json.loads(line)[0] for line in path.read_bytes().splitlines()[-3:]]
        cut_at_line_end(path)
        shard = next(p for p in dropped if p.endswith(".safetensors")) if any(
            p.endswith(".safetensors") for p in dropped) else dropped[0]
        write(setup["dir"] / shard, FILES[shard])
        d = daemon_factory(setup["config"])
        rec = logged(d, "manifest.cache_invalid")
        assert rec["path"] == str(path) and rec["error"]
        logged(d, "manifest.loaded", files=len(FILES))
        logged(d, "file.matched", rfilename=shard)
        assert events(d, "file.unknown") == []
        assert set(decode_manifest_cache(path, setup["commit"])) == set(FILES)


@contextlib.contextmanager
def hub_client(fake: FakeHub, cache: Path, reports: list[tuple[Path, str]] | None = None) -> Iterator[Hub]:
    """A Hub client on the fake Hub with a long TTL (so a sound cache is used), recording cache reports."""
    hub = Hub(fake.url, cache, ttl=3600.0, timeout=10.0,
              on_invalid=None if reports is None else lambda p, e: reports.append((p, e)))
    try:
        yield hub
    finally:
        hub.close()


# --------------------------------------------------------------------------------------------- descriptors


@contextlib.contextmanager
def running(tracker: Tracker) -> Iterator[Tracker]:
    tracker.start()
    try:
        yield tracker
    finally:
        tracker.stop()


def own_links(path: Path) -> int:
    """How many descriptors of this process point at `path`."""
    return sum(1 for t in fd_targets(os.getpid()) if t == str(path))


class TestTrackerDescriptors:
    def test_release_closes_the_descriptor_at_once(self, tmp_path: Path) -> None:
        """release() closes the tracker's descriptor of a file it follows, whether or not take() was used."""
        path = tmp_path / "model.safetensors"
        with open(path, "wb") as writer, running(Tracker(RecordingLog())) as tracker:
            writer.write(b"x" * 1000)
            writer.flush()
            tracker.watch(str(path))
            wait_for_state(lambda: tracker.open_files() == 1, 5, "the tracker follows the file")
            assert own_links(path) == 2  # the writer's and the tracker's
            st = os.stat(path)
            tracker.release(st.st_dev, st.st_ino)
            assert tracker.open_files() == 0 and own_links(path) == 1

    def test_take_closes_it_too(self, tmp_path: Path) -> None:
        """take() hands over the progress and closes the descriptor."""
        path = tmp_path / "model.safetensors"
        with open(path, "wb") as writer, running(Tracker(RecordingLog())) as tracker:
            writer.write(b"x" * 1000)
            writer.flush()
            tracker.watch(str(path))
            wait_for_state(lambda: tracker.open_files() == 1, 5, "the tracker follows the file")
            st = os.stat(path)
            assert tracker.take(st.st_dev, st.st_ino) is not None
            assert tracker.open_files() == 0 and own_links(path) == 1
            assert tracker.take(st.st_dev, st.st_ino) is None

    def test_a_late_creation_event_does_not_reopen_a_judged_file(self, tmp_path: Path) -> None:
        """A file released before the tracker saw its creation event is not opened afterwards."""
        log = RecordingLog()
        path = tmp_path / "config.json"
        write(path, b"{}")
        st = os.stat(path)
        with running(Tracker(log)) as tracker:
            tracker.release(st.st_dev, st.st_ino)
            tracker.watch(str(path))
            log.wait("progressive.skipped", path=str(path), why="judged already")
            assert tracker.open_files() == 0 and own_links(path) == 0

    def test_a_deleted_download_is_let_go_within_two_seconds(self, tmp_path: Path) -> None:
        """A followed file deleted mid-download loses its descriptor within two seconds (no '(deleted)' entry)."""
        log = RecordingLog()
        path = tmp_path / "model.safetensors"
        with running(Tracker(log)) as tracker:
            with open(path, "wb") as writer:
                writer.write(b"x" * 1000)
                writer.flush()
                tracker.watch(str(path))
                wait_for_state(lambda: tracker.open_files() == 1, 5, "the tracker follows the file")
            path.unlink()
            started = time.monotonic()
            log.wait("progressive.dropped", timeout=2.0, why="deleted")
            assert tracker.open_files() == 0
            assert time.monotonic() - started < 2.0
            assert not [t for t in fd_targets(os.getpid()) if t.endswith("(deleted)") and str(tmp_path) in t]

    def test_never_more_than_max_files(self, tmp_path: Path) -> None:
        """With max_files=3, a fourth and fifth download are not opened (logged as skipped)."""
        log = RecordingLog()
        writers = []
        try:
            with running(Tracker(log, max_files=3)) as tracker:
                for i in range(5):
                    path = tmp_path / f"shard-{i}.safetensors"
                    writers.append(open(path, "wb"))  # noqa: SIM115 - closed in the finally below
                    writers[-1].write(b"x" * 100)
                    writers[-1].flush()
                    tracker.watch(str(path))
                for i in (3, 4):
                    log.wait("progressive.skipped", path=str(tmp_path / f"shard-{i}.safetensors"))
                assert tracker.open_files() == 3
                assert sum(own_links(tmp_path / f"shard-{i}.safetensors") for i in range(5)) == 5 + 3
        finally:
            for w in writers:
                w.close()


class TestDaemonDescriptors:
    def test_descriptors_are_released_after_judging_and_after_deletion(self, setup: dict[str, Any],
                                                                      daemon_factory: Start) -> None:
        """/proc/PID/fd of the daemon returns to its baseline after verdicts and after a deleted download."""
        d = daemon_factory(setup["config"])
        logged(d, "scan.finished")
        pid = d.proc.pid
        baseline = fd_targets(pid)
        assert not [t for t in baseline if t.endswith("(deleted)")]
        for name in ("config.json", "model-00001-of-00003.safetensors", "README.md"):
            path = setup["dir"] / name
            data = FILES[name]
            with open(path, "wb") as writer:
                writer.write(data[: len(data) // 2])
                writer.flush()
                wait_for_state(lambda p=path: str(p) in fd_targets(pid), 10, f"the daemon follows {name}")
                writer.write(data[len(data) // 2:])
            d.wait_for("file.matched", rfilename=name)
            wait_for_state(lambda p=path: str(p) not in fd_targets(pid), 5, f"the daemon lets go of {name}")
        doomed = setup["dir"] / "model-00002-of-00003.safetensors"
        with open(doomed, "wb") as writer:
            writer.write(b"\0" * 1000)
            writer.flush()
            wait_for_state(lambda: str(doomed) in fd_targets(pid), 10, "the daemon follows the download")
            doomed.unlink()
        wait_for_state(lambda: not [t for t in fd_targets(pid) if t.endswith("(deleted)")], 2,
                       "no descriptor of a deleted file within 2 s")
        wait_for_state(lambda: len(fd_targets(pid)) <= len(baseline), 5,
                       f"descriptors back to the baseline of {len(baseline)}")


# --------------------------------------------------------------------------------------------- SIGSTOP


class TestStoppedDaemon:
    def test_downloads_finished_while_stopped_are_all_judged(self, setup: dict[str, Any],
                                                             daemon_factory: Start) -> None:
        """A daemon frozen with SIGSTOP while 5 curl downloads finish judges every one of them after SIGCONT."""
        d = daemon_factory(setup["config"])
        logged(d, "scan.finished")
        names = [n for n in FILES if n != HELD_BACK][:5]
        d.signal(signal.SIGSTOP)
        try:
            downloads = [subprocess.Popen(["curl", "-sSfL", "-o", str(setup["dir"] / n),
                                           setup["hub"].resolve_url(REPO, n)]) for n in names]
            assert [p.wait(60) for p in downloads] == [0] * 5
            assert [(setup["dir"] / n).read_bytes() == FILES[n] for n in names] == [True] * 5
        finally:
            d.signal(signal.SIGCONT)
        for n in names:
            logged(d, "file.matched", timeout=30, rfilename=n)
        assert events(d, "file.mismatch") == [] and events(d, "file.unknown") == []
