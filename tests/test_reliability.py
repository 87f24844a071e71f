"""Reliability: crashes, bursts, Hub faults, a full disk, hostile input, and resource use over time.

Each test prints the figures it measured (`pytest -s` shows them) for the README's Reliability section.
Kill moments in the crash test are drawn from a seeded RNG: they are the test's input, not synchronisation.
Everything else waits on log lines, on the fake Hub's request queue, on state queries or on process exits.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import errno
import hashlib
import json
import os
import queue
import random
import secrets
import shutil
import socket
import sqlite3
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import DaemonProc, cli_env, run_cli, write_config
from fakehub import FakeHub, git_blob_sha1
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hfwatchd.completion import is_temp_name
from hfwatchd.config import ConfigError, load_config, parse_config
from hfwatchd.manifest import Index, RepoRef, SpecError, decide, load_manifest_text

Start = Callable[..., DaemonProc]
IS_ROOT = os.geteuid() == 0
INOTIFY_QUEUE = Path("/proc/sys/fs/inotify/max_queued_events")
VERDICTS = ("file.matched", "file.mismatch", "file.incomplete", "file.unknown")


# --------------------------------------------------------------------------------------------- helpers


def write(path: Path, data: bytes) -> None:
    """Write like wget or curl: data straight into the final name, then close."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def write_all(folder: Path, files: dict[str, bytes]) -> None:
    """Create every file as fast as Python can: open, one write, close."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    for name, data in files.items():
        fd = os.open(folder / name, flags, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)


@contextlib.contextmanager
def open_db(state_dir: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection of our own to the daemon's state database."""
    db = sqlite3.connect(f"file:{state_dir / 'state.sqlite3'}?mode=ro", uri=True, timeout=30)
    db.row_factory = sqlite3.Row
    try:
        yield db
    finally:
        db.close()


def rows(state_dir: Path) -> dict[bytes, dict[str, Any]]:
    """Every row of the `files` table, by path."""
    with open_db(state_dir) as db:
        return {bytes(r["path"]): dict(r) for r in db.execute("SELECT * FROM files")}


def integrity(state_dir: Path) -> str:
    with open_db(state_dir) as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])


def log_records(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The JSON lines of a log file, and the lines that are not JSON."""
    good, bad = [], []
    for line in path.read_text(encoding="utf-8", errors="surrogateescape").split("\n")[:-1]:
        try:
            good.append(json.loads(line))
        except json.JSONDecodeError:
            bad.append(line)
    return good, bad


def proc_usage(pid: int) -> tuple[int, list[str]]:
    """(VmRSS in KiB, what every open descriptor points at) of a live process."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    fds = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            fds.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return rss, sorted(fds)


def seen_since(d: DaemonProc, since: int, pred: Callable[[dict[str, Any]], bool], n: int = 1,
               timeout: float = 20.0, what: str = "a matching line") -> list[dict[str, Any]]:
    """The first `n` lines logged from index `since` of everything the daemon logged (read so far or later)."""
    found = [r for r in d.seen[since:] if pred(r)]

    def more(rec: dict[str, Any]) -> bool:
        if pred(rec):
            found.append(rec)
        return len(found) >= n

    if len(found) < n:
        d.wait_until(more, timeout, what)
    return found[:n]


def mark(d: DaemonProc) -> int:
    """Index in `d.seen` from which lines count as new."""
    d.drain()
    return len(d.seen)


def count_verdicts(d: DaemonProc, paths: set[str], timeout: float) -> dict[str, int]:
    """Consume log lines until every path in `paths` has had a verdict line; verdict lines per path."""
    judged: dict[str, int] = {}

    def pred(rec: dict[str, Any]) -> bool:
        if rec.get("event") in VERDICTS and rec.get("path") in paths:
            judged[rec["path"]] = judged.get(rec["path"], 0) + 1
        return len(judged) == len(paths)

    d.wait_until(pred, timeout, f"verdicts for all {len(paths)} files")
    return judged


@pytest.fixture
def fast_folder(tmp_path: Path) -> Iterator[Path]:
    """A fresh folder on a tmpfs (/dev/shm) when there is one, so that 10,000 files can appear within a second
    (creating as many on the ext4 disk of a CI VM takes seconds by itself). Request it before daemon_factory,
    so that it is removed after the daemon has stopped."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        folder = tmp_path / "fast"
        folder.mkdir()
        yield folder
        return
    folder = Path(tempfile.mkdtemp(prefix="hfwatchd-test-", dir=shm))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def inotify_queue_limit(value: int) -> Iterator[int]:
    """Lower fs.inotify.max_queued_events for the inotify instances created meanwhile; restored on exit."""
    saved = INOTIFY_QUEUE.read_text().strip()
    INOTIFY_QUEUE.write_text(f"{value}\n")
    try:
        yield int(saved)
    finally:
        INOTIFY_QUEUE.write_text(f"{saved}\n")


class OpenWatch:
    """A raw inotify instance of the test's own that records IN_OPEN on the files of some folders."""

    IN_OPEN = 0x20

    def __init__(self, folders: list[Path]) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.folders: dict[int, Path] = {}
        for folder in folders:
            wd = self._libc.inotify_add_watch(self.fd, os.fsencode(folder), self.IN_OPEN)
            if wd < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {folder}")
            self.folders[wd] = folder

    def opened(self) -> list[Path]:
        """Every file opened since the last call (non-blocking)."""
        out: list[Path] = []
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return out
            offset = 0
            while offset < len(data):
                wd, mask, _cookie, length = struct.unpack_from("iIII", data, offset)
                name = data[offset + 16 : offset + 16 + length].rstrip(b"\0")
                if mask & self.IN_OPEN and name:
                    out.append(self.folders[wd] / os.fsdecode(name))
                offset += 16 + length

    def close(self) -> None:
        os.close(self.fd)


# --------------------------------------------------------------------------------------------- crash consistency

CRASH_REPO = "org/crash"
KILLS = 24


def crash_files() -> dict[str, bytes]:
    """Several-MB LFS weights (kills land while they are hashed), smaller LFS files and regular git files."""
    rng = random.Random(20240611)
    files: dict[str, bytes] = {}
    for i, mib in enumerate((2, 4, 6, 8, 10, 12)):
        files[f"model-{i}.safetensors"] = rng.randbytes(mib * 1024 * 1024 + 1000 * i + 1)
    for i in range(4):
        files[f"extra-{i}.bin"] = rng.randbytes(20_000 + 70_001 * i)
    for i, name in enumerate(("config", "tokenizer", "generation_config", "special_tokens_map", "vocab")):
        files[f"{name}.json"] = json.dumps({"name": name, "n": i, "pad": "x" * (40 * i)}).encode() + b"\n"
    return files


@dataclass(frozen=True)
class Variant:
    """What the writer may put under a new name: the right bytes, same-size wrong bytes, or a short file."""

    rfilename: str
    kind: str  # matched | mismatch | incomplete
    data: bytes


def crash_variants(files: dict[str, bytes]) -> list[Variant]:
    rng = random.Random(7)
    out = []
    for rel, data in files.items():
        out.append(Variant(rel, "matched", data))
        i = rng.randrange(len(data))
        out.append(Variant(rel, "mismatch", data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]))
        out.append(Variant(rel, "incomplete", data[: rng.randrange(1, len(data))]))
    return out


def duplicate_name(rel: str, n: int) -> str:
    """The name a browser gives the n-th download of the same file: `model-1 (7).safetensors`."""
    stem, dot, ext = rel.partition(".")
    return f"{stem} ({n}){dot}{ext}"


class Writer(threading.Thread):
    """Keeps dropping manifest files under fresh names, in 1 MiB chunks like a downloader, until stopped."""

    def __init__(self, folder: Path, variants: list[Variant], seed: int) -> None:
        super().__init__(name="crash-writer", daemon=True)
        self.folder = folder
        self.variants = variants
        self.rng = random.Random(seed)
        self.stop_event = threading.Event()
        self.written: dict[str, Variant] = {}  # name -> what it holds once written
        self.big_done: queue.SimpleQueue[str] = queue.SimpleQueue()  # names of finished several-MB files
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            n = 0
            while not self.stop_event.is_set():
                n += 1
                big = [v for v in self.variants if len(v.data) > 1 << 20]
                v = self.rng.choice(big if self.rng.random() < 0.3 else self.variants)
                name = duplicate_name(v.rfilename, n)
                self.written[name] = v
                with open(self.folder / name, "wb") as f:
                    for i in range(0, len(v.data), 1 << 20):
                        f.write(v.data[i : i + (1 << 20)])
                if len(v.data) > 1 << 20:
                    self.big_done.put(name)
                self.stop_event.wait(self.rng.uniform(0.02, 0.12))  # pacing of the downloads, not a sync
        except BaseException as exc:
            self.error = exc


def pending_rows(db: sqlite3.Connection) -> set[bytes]:
    return {bytes(r[0]) for r in db.execute("SELECT path FROM files WHERE status = 'pending'")}


def wait_pending(state_dir: Path, old: set[bytes], timeout: float) -> bool:
    """Whether a new `pending` row (a file being hashed) shows up within `timeout`, looked for every millisecond."""
    deadline = time.monotonic() + timeout
    with open_db(state_dir) as db:
        while time.monotonic() < deadline:
            if pending_rows(db) - old:
                return True
            time.sleep(0.001)
    return False


def digest_of(data: bytes, algorithm: str) -> str:
    return hashlib.sha256(data).hexdigest() if algorithm == "sha256" else git_blob_sha1(data)


@pytest.mark.slow
class TestCrashConsistency:
    def test_sigkill_at_random_moments_loses_nothing(self, tmp_path: Path, fast_folder: Path, fake_hub: FakeHub,
                                                     daemon_factory: Start) -> None:
        """SIGKILLed at 24 random moments while files keep arriving, the daemon ends with every verdict right."""
        files = crash_files()
        fake_hub.add_repo(CRASH_REPO, files)
        watched = fast_folder
        state = tmp_path / "state"
        log_file = tmp_path / "events.jsonl"
        cfg = write_config(tmp_path / "c.toml", hub=fake_hub, watches=[{"path": watched, "repos": [CRASH_REPO]}],
                           state_dir=state, log_file=log_file, rescan_interval="1h", workers=2)
        rng = random.Random(424242)
        writer = Writer(watched, crash_variants(files), seed=99)
        kills: list[dict[str, Any]] = []
        left: set[bytes] = set()  # rows left pending by the previous kill
        d = daemon_factory(cfg)
        d.wait_for("scan.finished", timeout=30)  # the manifest is cached from here on
        writer.start()
        try:
            for k in range(KILLS):
                # the kill moment is the input of this test: a random delay, a moment just after a several-MB
                # file landed (its settle, hashing, commit or logging), or as soon as a file is being hashed
                if k % 3 == 0:
                    when = "random"
                    time.sleep(rng.uniform(0.0, 1.2))
                elif k % 3 == 1:
                    when = "after a big file"
                    with contextlib.suppress(queue.Empty):
                        while True:
                            writer.big_done.get_nowait()
                    writer.big_done.get(timeout=20)
                    time.sleep(rng.uniform(0.02, 0.1))
                else:
                    seen = wait_pending(state, left, timeout=5)
                    when = "a pending row seen" if seen else "no pending row within 5s"
                d.kill()
                with open_db(state) as db:
                    pending = pending_rows(db)
                    total = db.execute("SELECT count(*) FROM files").fetchone()[0]
                    check = db.execute("PRAGMA quick_check").fetchone()[0]
                assert check == "ok", f"state damaged by kill {k}: {check}"
                scanned = any(x.get("event") == "scan.finished" for x in d.seen + d.drain())
                # hashing when killed: a file this run marked pending (rows left by the previous kill do not count)
                kills.append({"when": when, "hashing": len(pending - left), "rows": total, "scan_done": scanned})
                left = pending
                d = daemon_factory(cfg)
        finally:
            writer.stop_event.set()
            writer.join(timeout=30)
        assert writer.error is None, writer.error
        d.kill()
        final = daemon_factory(cfg)
        final.wait_for("scan.finished", timeout=120)
        assert final.stop() == 0

        on_disk = {os.fsencode(str(watched / name)): v for name, v in writer.written.items()}
        st = rows(state)
        assert integrity(state) == "ok"
        assert [os.fsdecode(p) for p, r in st.items() if r["status"] == "pending"] == []
        wrong = {os.fsdecode(p): (r["status"] if r else None, v.kind)
                 for p, v in on_disk.items() if (r := st.get(p)) is None or r["status"] != v.kind}
        assert wrong == {}, f"{len(wrong)} files with a wrong or no status (state, expected): {wrong}"
        assert {r["rfilename"] for r in st.values()} <= set(files)
        assert {p: r["rfilename"] for p, r in st.items()} == {p: v.rfilename for p, v in on_disk.items()}

        records, garbled = log_records(log_file)
        verdicts = [r for r in records if r.get("event") in VERDICTS]
        checked = 0
        for rec in verdicts:
            v = on_disk.get(os.fsencode(rec["path"]))
            if v is None or rec["size"] != len(v.data):
                continue  # a verdict on bytes the file no longer holds (it was still being written)
            for field in ("digest", "actual"):
                if rec.get(field):
                    assert rec[field] == digest_of(v.data, rec["algorithm"]), rec
            row = st.get(os.fsencode(rec["path"]))
            assert row is not None and row["status"] == rec["event"].removeprefix("file."), (rec, row)
            checked += 1
        lines_per_file = collections.Counter(os.fsencode(rec["path"]) for rec in verdicts)
        unlogged = sum(1 for p in on_disk if not lines_per_file[p])  # killed between the commit and the log line
        again = sum(1 for p in on_disk if lines_per_file[p] > 1)  # judged, then judged again after a kill
        hashing = sum(1 for x in kills if x["hashing"])
        during_scan = sum(1 for x in kills if not x["scan_done"])
        moments = {w: sum(1 for x in kills if x["when"] == w) for w in dict.fromkeys(x["when"] for x in kills)}
        mib = sum(len(v.data) for v in writer.written.values()) / 2**20
        print(f"\ncrash: {len(kills)} SIGKILLs survived {moments}: {hashing} with a file being hashed (a pending "
              f"row of this run right after the kill), {during_scan} before the start-up scan had finished; "
              f"{len(on_disk)} files ({mib:.0f} MiB) written, "
              f"{sum(v.kind == 'matched' for v in on_disk.values())} matched / "
              f"{sum(v.kind == 'mismatch' for v in on_disk.values())} mismatch / "
              f"{sum(v.kind == 'incomplete' for v in on_disk.values())} incomplete, all right in state; "
              f"{checked} logged verdicts checked against state ({len(verdicts) - checked} were on bytes still being "
              f"written); {unlogged} verdicts stored but never logged (killed in between), {again} files judged "
              f"twice; {len(garbled)} torn log lines")
        assert len(kills) >= 20
        assert hashing >= 1, f"no kill landed while hashing: {kills}"


# --------------------------------------------------------------------------------------------- burst

BURST = 10_000


def burst_files() -> dict[str, bytes]:
    """Tiny regular files, all of the same size: the worst case for a lookup by size."""
    return {f"s{i:05d}.json": b'{"shard": %05d}\n' % i for i in range(BURST)}


@pytest.mark.slow
class TestBurst:
    def test_ten_thousand_files_in_a_second(self, tmp_path: Path, fast_folder: Path, fake_hub: FakeHub,
                                            daemon_factory: Start) -> None:
        """10,000 files landing at once, with the kernel's event queue overflowing, each get exactly one verdict."""
        files = burst_files()
        fake_hub.add_repo("org/shards", files)
        watched = fast_folder
        state = tmp_path / "state"
        cfg = write_config(tmp_path / "c.toml", hub=fake_hub, watches=[{"path": watched, "repos": ["org/shards"]}],
                           state_dir=state, rescan_interval="1h")
        limit = 256 if IS_ROOT else None
        with contextlib.ExitStack() as stack:
            if limit is not None:
                stack.enter_context(inotify_queue_limit(limit))
            d = daemon_factory(cfg)  # its inotify instance keeps the lowered queue size
        d.wait_for("scan.finished", timeout=60)
        started = time.time()
        write_all(watched, files)
        written = time.time() - started
        count_verdicts(d, {str(watched / n) for n in files}, timeout=120)
        st = rows(state)
        last = max(r["judged_at"] for r in st.values())
        assert d.stop() == 0
        lines = d.seen + d.drain()
        overflow = sum(1 for x in lines if x.get("event") == "watch.overflow")
        per_file = collections.Counter(x["path"] for x in lines if x.get("event") in VERDICTS)
        scans = [x for x in lines if x.get("event") == "scan.finished"][1:]
        print(f"\nburst: {BURST} files created in {written:.2f}s; last verdict {last - started:.2f}s after the first "
              f"file; inotify queue {limit or 'default'}: {overflow} watch.overflow lines, {len(scans)} rescans "
              f"({sum(x['queued'] for x in scans)} files queued by them)")
        assert len(st) == BURST and {r["status"] for r in st.values()} == {"matched"}
        assert len(per_file) == BURST and max(per_file.values()) == 1, "a file got more than one verdict line"
        if limit is not None:
            assert overflow


# --------------------------------------------------------------------------------------------- memory and fds


@pytest.mark.slow
class TestResources:
    def test_rss_and_fds_flat_over_ten_thousand_verdicts(self, tmp_path: Path, fast_folder: Path,
                                                         fake_hub: FakeHub, daemon_factory: Start) -> None:
        """After 10,000 verdicts (and their files deleted), RSS and open descriptors are near their start-up values."""
        files = burst_files()
        fake_hub.add_repo("org/shards", files)
        watched = fast_folder
        state = tmp_path / "state"
        cfg = write_config(tmp_path / "c.toml", hub=fake_hub, watches=[{"path": watched, "repos": ["org/shards"]}],
                           state_dir=state, rescan_interval="3s")
        d = daemon_factory(cfg)
        d.wait_for("scan.finished", timeout=60)
        pid = d.proc.pid
        rss0, fds0 = proc_usage(pid)
        names = list(files)
        samples = []
        for batch in range(10):
            part = {n: files[n] for n in names[batch * 1000 : (batch + 1) * 1000]}
            write_all(watched, part)
            count_verdicts(d, {str(watched / n) for n in part}, timeout=60)
            samples.append(proc_usage(pid)[0])
        rss1, fds1 = proc_usage(pid)
        for n in names:
            (watched / n).unlink()
        d.wait_until(lambda r: r.get("event") == "scan.finished" and r.get("files") == 0 and "matched" not in r,
                     30, "a rescan after which every deleted file is forgotten")
        rss2, fds2 = proc_usage(pid)
        extra = sorted(set(fds1) - set(fds0))
        print(f"\nresources: RSS {rss0} KiB after start-up, {rss1} KiB after {BURST} verdicts "
              f"(per 1,000: {samples}), {rss2} KiB after deleting them; open fds {len(fds0)} -> {len(fds1)} -> "
              f"{len(fds2)} {extra}")
        assert rss1 - rss0 < 32 * 1024, "RSS grew by more than 32 MiB over 10,000 verdicts"
        assert samples[-1] - samples[4] < 8 * 1024, "RSS still growing in the second half"
        assert len(fds1) <= len(fds0) + 2, f"descriptors left open: {extra}"


# --------------------------------------------------------------------------------------------- Hub faults

HUB_REPO = "org/model"
PROBES = [f"probe-{i}.json" for i in range(8)]
HUB_FILES = {
    "config.json": b'{"architectures": ["Bert"]}\n',
    "model.safetensors": b"\x01" * 1_500_000,
    **{name: b'{"probe": %d}\n' % i for i, name in enumerate(PROBES)},
}


@dataclass(frozen=True)
class Tapped:
    kind: str  # request | reply
    seq: int  # the request's number: a reply carries that of its request
    at: float  # time.monotonic()
    path: str
    status: int | None = None


class HubTap:
    """Every request the fake Hub receives and every reply it sends, in order, as a queue."""

    def __init__(self, hub: FakeHub) -> None:
        self.q: queue.Queue[Tapped] = queue.Queue()
        self._seq = 0
        self._lock = threading.Lock()
        serve, send = hub._serve, hub._send

        def tapped_serve(handler: Any) -> None:
            with self._lock:
                self._seq += 1
                handler.tap_seq = self._seq
            self.q.put(Tapped("request", handler.tap_seq, time.monotonic(), urlsplit(handler.path).path))
            serve(handler)

        def tapped_send(handler: Any, reply: Any) -> None:
            self.q.put(Tapped("reply", handler.tap_seq, time.monotonic(), urlsplit(handler.path).path, reply.status))
            send(handler, reply)

        hub._serve = tapped_serve  # type: ignore[method-assign]
        hub._send = tapped_send  # type: ignore[method-assign]

    @property
    def seq(self) -> int:
        """The number of the latest request so far."""
        with self._lock:
            return self._seq

    def next(self, kind: str, *, status: int | None = None, after: int = 0, timeout: float = 20.0) -> Tapped:
        """The next tapped item of this kind (and status) whose request came after request number `after`."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind} {status or ''} from the fake Hub within {timeout}s")
            try:
                item = self.q.get(timeout=left)
            except queue.Empty:
                continue
            if item.kind == kind and item.seq > after and (status is None or item.status == status):
                return item


def failed_line(d: DaemonProc, since: int, words: str, n: int = 1, timeout: float = 20.0) -> list[dict[str, Any]]:
    return seen_since(d, since, lambda r: r.get("event") == "manifest.failed" and words in str(r.get("error")), n,
                      timeout, f"manifest.failed mentioning {words!r}")


class TestHubFaults:
    def test_daemon_rides_out_every_hub_fault(self, tmp_path: Path, fake_hub: FakeHub,
                                              daemon_factory: Start) -> None:
        """500s, 429, a hang, garbage, refused connections, a moved branch: the daemon backs off and keeps judging."""
        first = fake_hub.add_repo(HUB_REPO, HUB_FILES)
        tap = HubTap(fake_hub)
        watched = tmp_path / "dl"
        watched.mkdir()
        cfg = write_config(tmp_path / "c.toml", hub=fake_hub, watches=[{"path": watched, "repos": [HUB_REPO]}],
                           state_dir=tmp_path / "state", rescan_interval="1h", workers=2,
                           hub_table={"manifest_ttl": "1s", "timeout": "1s"})
        write(watched / "config.json", HUB_FILES["config.json"])
        write(watched / "model.safetensors", HUB_FILES["model.safetensors"])
        d = daemon_factory(cfg)
        seen_since(d, 0, lambda r: r.get("event") == "file.matched" and r.get("commit") == first, n=2)
        probes = iter(PROBES)
        injected: list[str] = []

        def probe() -> None:
            """A file dropped while the Hub fails is judged with the cached manifest."""
            name = next(probes)
            write(watched / name, HUB_FILES[name])
            d.wait_for("file.matched", rfilename=name, commit=first)

        # 500 twice: the second wait is longer, and each wait is at least the retry_in logged
        since, w = mark(d), tap.seq
        fake_hub.fail(500, times=2)
        a = tap.next("reply", status=500, after=w)
        probe()
        b = tap.next("reply", status=500, after=a.seq)
        ok = tap.next("reply", status=200, after=b.seq)
        f1, f2 = failed_line(d, since, "500", n=2)
        assert f1["cached"] is True and f2["cached"] is True
        assert f2["retry_in"] > f1["retry_in"] >= 1
        assert b.at - a.at >= f1["retry_in"] - 0.2
        assert ok.at - b.at >= f2["retry_in"] - 0.2
        injected += ["500", "500"]

        # 429 with Retry-After: 3 s at least before the next request
        since, w = mark(d), tap.seq
        fake_hub.fail(429, times=1, retry_after=3)
        r429 = tap.next("reply", status=429, after=w)
        probe()
        again = tap.next("request", after=r429.seq)
        (f,) = failed_line(d, since, "429")
        assert f["retry_in"] >= 3
        assert again.at - r429.at >= 3 - 0.1
        tap.next("reply", status=200, after=r429.seq)
        injected.append("429 Retry-After: 3")

        # a request that hangs: the 1 s timeout fires, the daemon does not wait for the server
        since, w = mark(d), tap.seq
        fake_hub.hang(2.5, times=1)
        hung = tap.next("request", after=w)
        (f,) = failed_line(d, since, "no answer within 1s")
        probe()
        tap.next("reply", status=200, after=hung.seq)
        injected.append("hang")

        # a 200 whose body is not JSON
        since, w = mark(d), tap.seq
        fake_hub.garbage(times=1)
        bad = tap.next("reply", status=200, after=w)
        (f,) = failed_line(d, since, "not a repo listing")
        probe()
        tap.next("reply", status=200, after=bad.seq)
        injected.append("garbage JSON")

        # nothing listening at all
        since = mark(d)
        fake_hub.stop()
        last = tap.seq
        (f,) = failed_line(d, since, "cannot reach")
        assert f["cached"] is True and f["retry_in"] >= 1
        probe()
        fake_hub.start()
        tap.next("reply", status=200, after=last)
        injected.append("connection refused")

        # the branch moves: judged again against the new commit, the changed file first of all
        since = mark(d)
        second = fake_hub.add_repo(HUB_REPO, {**HUB_FILES, "config.json": b'{"architectures": ["Gpt"]}\n'})
        (loaded,) = seen_since(d, since, lambda r: r.get("event") == "manifest.loaded" and r.get("commit") == second)
        assert loaded["previous_commit"] == first
        bad_line = d.wait_for("file.mismatch", rfilename="config.json", commit=second)
        assert bad_line["path"] == str(watched / "config.json")
        injected.append("branch moved")
        name = next(probes)
        write(watched / name, HUB_FILES[name])
        d.wait_for("file.matched", rfilename=name, commit=second)
        again_lines = [x for x in d.seen[since:] if x.get("event") in VERDICTS
                       and x.get("rfilename") == "model.safetensors"]
        assert again_lines == [], "an unchanged entry was reported again"

        assert d.proc.poll() is None
        failures = [x for x in d.seen if x.get("event") == "manifest.failed"]
        assert all(x["retry_in"] >= 1 and x["cached"] is True for x in failures)
        assert d.stop() == 0
        print(f"\nhub faults: {len(injected)} injected ({', '.join(injected)}); {len(failures)} manifest.failed "
              f"lines, retry_in {[x['retry_in'] for x in failures]}; daemon up throughout, exit 0")


# --------------------------------------------------------------------------------------------- disk full


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted for the test (root only), unmounted afterwards."""
    if not IS_ROOT:
        pytest.skip("mounting a tiny tmpfs needs root")
    point = tmp_path / "tiny"
    point.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(point)],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield point
    finally:
        if subprocess.run(["umount", str(point)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(point)], capture_output=True, check=False)


def fill(folder: Path) -> Path:
    """Fill the filesystem of `folder` to the last byte; returns the filler file."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        for size in (1 << 16, 1 << 12, 512, 1):
            block = b"\0" * size
            while True:
                try:
                    os.write(fd, block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return filler


@pytest.mark.slow
class TestDiskFull:
    def test_full_state_disk_is_reported_and_survived(self, tmp_path: Path, tiny_fs: Path, fake_hub: FakeHub,
                                                      daemon_factory: Start) -> None:
        """With state_dir on a full filesystem: state.failed, no crash, no damage, and verdicts once space returns."""
        fake_hub.add_repo(HUB_REPO, HUB_FILES)
        watched = tmp_path / "dl"
        watched.mkdir()
        state = tiny_fs / "state"
        cfg = write_config(tmp_path / "c.toml", hub=fake_hub, watches=[{"path": watched, "repos": [HUB_REPO]}],
                           state_dir=state, log_file=state / "events.jsonl", rescan_interval="2s", workers=2)
        d = daemon_factory(cfg)
        try:
            d.wait_for("scan.finished")
            write(watched / "config.json", HUB_FILES["config.json"])
            d.wait_for("file.matched", rfilename="config.json")
            filler = fill(tiny_fs)
            since = mark(d)
            during = PROBES[:4]
            for name in during:
                write(watched / name, HUB_FILES[name])
            (failed,) = seen_since(d, since, lambda r: r.get("event") == "state.failed", what="state.failed")
            assert "database or disk is full" in failed["error"], failed
            assert d.proc.poll() is None
            assert integrity(state) == "ok"
            filler.unlink()
            late = PROBES[4]
            write(watched / late, HUB_FILES[late])
            # the new file by its event; those whose verdict could not be stored, by the periodic rescan
            seen_since(d, since, lambda r: r.get("event") == "file.matched" and r.get("rfilename") in (*during, late),
                       n=len(during) + 1, timeout=30, what="a verdict for every file")
            assert d.stop() == 0
            assert integrity(state) == "ok"
            st = {os.path.basename(os.fsdecode(p)): r["status"] for p, r in rows(state).items()}
            assert st == dict.fromkeys(["config.json", *during, late], "matched")
            _, garbled = log_records(state / "events.jsonl")
            lost = {x["path"] for x in d.seen if x.get("event") == "state.failed"}
            print(f"\ndisk full: {len(during)} files arrived while state_dir (a 2 MiB tmpfs) was full: {len(lost)} "
                  f"state.failed, the daemon kept running, integrity_check ok; after freeing space a new file and "
                  f"every file whose verdict could not be stored were judged; {len(garbled)} torn lines in log_file")
            assert garbled == []
        finally:
            d.stop()


# --------------------------------------------------------------------------------------------- hostile input

CONFIG_KEYS = ["state_dir", "log_file", "log_level", "workers", "rescan_interval", "hook_timeout", "on_matched",
               "on_mismatch", "endpoint", "token_file", "manifest_ttl", "timeout", "path", "repos", "include",
               "exclude", "poll", "place", "place_dir", "place_mode", "repo", "manifest", "bogus"]
TOML_VALUES = ['"x"', "1", "-1", "0", "3.5", "1e400", "nan", "-inf", "true", "[]", '["a"]', '[1, "a"]', "{}",
               '{ repo = "a/b" }', '"30s"', '"0s"', '"-1m"', '"1y"', '"~/x"', '"$HOME/x"', '"\\u0000"',
               "1979-05-27T07:32:00Z", '"org/name"', '["org/name"]', '[{ repo = "a/b", manifest = "m.json" }]',
               '"http://x"', '"ftp://x"', '"debug"', '"local-dir"', '["org/name", "org/name"]', '"datasets/a/b@"']
toml_line = st.one_of(
    st.sampled_from(["[hub]", "[[watch]]", "[watch]", "[[watch.repos]]", "[hub.x]", "", "# c", "[", "]]", '"',
                     "'" * 3, "=", "\\", "[[hub]]", "watch = 1"]),
    st.builds("{} = {}".format, st.sampled_from(CONFIG_KEYS), st.sampled_from(TOML_VALUES)),
    st.builds("{} = {}".format, st.sampled_from(CONFIG_KEYS), st.text(max_size=12).map(json.dumps)),
    st.text(max_size=20),
)
toml_text = st.lists(toml_line, max_size=14).map("\n".join)

int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)  # TOML integers are 64-bit (see the regressions)
toml_scalar = st.one_of(st.text(max_size=20), int64, st.floats(), st.booleans(), st.datetimes(), st.dates(),
                        st.times(), st.sampled_from(["30s", "org/name", "datasets/o/n@main", "/tmp", "none",
                                                     "hf-cache", "info", "http://127.0.0.1:9"]))
toml_any = st.recursive(toml_scalar, lambda c: st.lists(c, max_size=4) | st.dictionaries(
    st.sampled_from(CONFIG_KEYS) | st.text(max_size=8), c, max_size=4), max_leaves=12)
watch_table = st.dictionaries(st.sampled_from(["path", "repos", "include", "exclude", "poll", "place", "place_dir",
                                               "place_mode", "on_matched", "hook_timeout", "bogus"]),
                              toml_any | st.just(["org/name"]) | st.just("/tmp/w"), max_size=6)
config_doc = st.fixed_dictionaries({}, optional={
    "state_dir": toml_any, "log_file": toml_any, "log_level": toml_any, "workers": toml_any,
    "rescan_interval": toml_any, "hook_timeout": toml_any, "on_matched": toml_any, "bogus": toml_any,
    "hub": st.dictionaries(st.sampled_from(["endpoint", "token_file", "manifest_ttl", "timeout", "x"]), toml_any,
                           max_size=4) | toml_any,
    "watch": st.lists(watch_table | toml_any, max_size=3) | toml_any,
})

name_part = st.one_of(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True), st.text(max_size=12))
repo_spec = st.one_of(
    st.text(max_size=40),
    st.builds("{}{}/{}{}{}".format,
              st.sampled_from(["", "datasets/", "spaces/", "models/", "/", "x/", "datasets"]),
              name_part, name_part, st.sampled_from(["", "@", "@@"]),
              st.text(max_size=12) | st.sampled_from(["main", "v1.0", "refs/pr/1", "a" * 40, "..", "a b"])),
)

HEX = "0123456789abcdef"
hex_like = st.builds(  # digests, nearly-digests and not-digests (endings in "\n": see the regressions)
    "{}{}".format,
    st.text(HEX, min_size=64, max_size=64) | st.text(HEX, min_size=40, max_size=40)
    | st.text(HEX + "ABCDEF", max_size=70),
    st.sampled_from(["", "", "", " ", "g", "AA"]),
)
json_any = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10) | hex_like,
                        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
                        max_leaves=12)
file_meta = st.fixed_dictionaries({}, optional={
    "size": st.integers(-2, 2**40) | json_any, "sha256": hex_like | json_any, "blob_id": hex_like | json_any,
    "extra": json_any})
full_doc = st.fixed_dictionaries(
    {"files": st.dictionaries(st.text(max_size=20), file_meta | json_any, max_size=5)},
    optional={"format": st.just("hfwatchd-manifest/1") | json_any, "repo": json_any, "revision": json_any,
              "commit": hex_like | json_any},
)
seed_doc = st.dictionaries(st.text(max_size=20), hex_like | json_any, max_size=6)
manifest_text = st.one_of(st.text(max_size=60), json_any.map(json.dumps), full_doc.map(json.dumps),
                          seed_doc.map(json.dumps), full_doc.map(lambda d: json.dumps(d)[:-1]))

NAME_MAX = 255
file_name = st.one_of(
    st.text(st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)), min_size=1, max_size=60)
    .map(os.fsencode),
    st.binary(min_size=1, max_size=NAME_MAX).map(lambda b: b.replace(b"/", b"_").replace(b"\0", b"_")),
    st.integers(200, NAME_MAX).map(lambda n: ("é" * n).encode()[:n].rstrip(b"\xc3") or b"x"),
    st.builds(lambda a, b: (a + "\n" + b).encode(), st.text("ab \t", max_size=5), st.text("cd.", max_size=5)),
    st.sampled_from([b"config (1).json", b"config(2).json", b"config.json.1", b"probe-1.1.json", b"-",
                     b" leading space", b"trailing space ", b".hidden", b"\xff\xfe", b"\xed\xa0\x80", b"*", b"?",
                     b"\x1b[31mred", b"\r", "a\x85b\u2028c".encode(), b"a" * NAME_MAX]),
).filter(lambda b: b not in (b".", b"..") and len(b) <= NAME_MAX)

TOKEN_REPO = "org/private-model"


def explore(label: str, strategy: st.SearchStrategy[Any], check: Callable[[Any], None], examples: int,
            extra: list[Any] | None = None) -> int:
    """Run `check` on `examples` values hypothesis draws from `strategy` (and on `extra` first); how many ran."""
    count = 0

    def counted(value: Any) -> None:
        nonlocal count
        count += 1
        check(value)

    prop = given(value=strategy)(counted)
    for value in reversed(extra or []):
        prop = example(value=value)(prop)
    settings(max_examples=examples, deadline=None, database=None)(prop)()
    print(f"\nhypothesis: {count} {label} tried")
    return count


class TestHostileInput:
    def test_config_text_only_raises_config_error(self, tmp_path: Path) -> None:
        """Random TOML-ish config files are either loaded or refused with ConfigError, nothing else."""
        path = tmp_path / "fuzz.toml"

        def check(text: str) -> None:
            path.write_bytes(text.encode("utf-8", "surrogateescape"))
            with contextlib.suppress(ConfigError):
                load_config(path)

        explore("config files", toml_text | st.binary(max_size=40).map(lambda b: b.decode("latin-1")), check, 200,
                ["[[watch]]\npath = 'x'\nrepos = ['a/b']\n", "\xff\xfe"])

    def test_config_documents_only_raise_config_error(self) -> None:
        """Random valid-TOML documents are either a Config or refused with ConfigError naming a key."""

        def check(doc: dict[str, Any]) -> None:
            try:
                parse_config(doc, base=Path("/nonexistent/base"))
            except ConfigError as exc:
                message = str(exc)
                assert message

        explore("config documents", config_doc, check, 200)

    def test_repo_specs_only_raise_spec_error(self) -> None:
        """RepoRef.parse accepts a spec or raises SpecError; what it accepts prints back to itself."""

        def check(spec: str) -> None:
            try:
                ref = RepoRef.parse(spec)
            except SpecError:
                return
            assert RepoRef.parse(str(ref)) == ref

        explore("repo specs", repo_spec, check, 300, ["datasets/org/name@refs/pr/1", "models/a@b@c", "a"])

    def test_manifest_json_only_raises_spec_error(self) -> None:
        """Seed and full manifests are loaded or refused with SpecError; a loaded one survives export and lookups."""
        ref = RepoRef("model", "org/name")

        def check(text: str) -> None:
            try:
                m = load_manifest_text(text, ref, where="fuzz.json")
            except SpecError:
                return
            again = load_manifest_text(json.dumps(m.to_full()), ref, where="export")
            assert dict(again.entries) == dict(m.entries) and again.commit == m.commit
            index = Index.build([m])
            for rel in list(m.entries)[:3]:
                size = m.entries[rel].size or 0
                plan = index.plan(rel, size)
                v = decide(plan, "/x/" + rel, size, dict.fromkeys(plan.algorithms, "0" * 64))
                assert v.status in ("matched", "mismatch", "incomplete", "unknown")

        explore("manifests", manifest_text, check, 300,
                ['{"a.bin": "%s"}' % ("A" * 64), '{"files": {"../x": {"size": 1, "blob_id": "%s"}}}' % ("a" * 40),
                 '{"files": {"x": {"size": 1, "sha256": null, "blob_id": "%s"}}, "commit": 5}' % ("a" * 40),
                 "[" * 100_000])

    def test_file_names_through_check(self, tmp_path: Path, fake_hub: FakeHub) -> None:
        """Files with unicode, newline, 255-byte and non-UTF-8 names are each reported once by `check`, no traceback."""
        fake_hub.add_repo(HUB_REPO, HUB_FILES)
        contents = [data for data in HUB_FILES.values() if len(data) < 1000]
        names: set[bytes] = set()
        explore("file names", file_name, names.add, 300)
        dl = tmp_path / "dl"
        dl.mkdir()
        expected: dict[str, str | None] = {}
        for i, name in enumerate(sorted(names)):
            data = contents[i % len(contents)] if i % 3 else b"not in the repo %d" % i
            path = os.path.join(os.fsencode(dl), name)
            with open(path, "wb") as f:
                f.write(data)
            if not is_temp_name(os.fsdecode(name)):
                expected[os.fsdecode(path)] = "matched" if data in contents else None
        state = str(tmp_path / "state")
        r = run_cli("check", HUB_REPO, str(dl), "--json", "--state-dir", state, hub=fake_hub)
        assert r.returncode in (0, 1, 2) and "Traceback" not in r.stderr, r.stderr
        reported = [json.loads(line) for line in r.stdout.splitlines()]
        paths = [x["path"] for x in reported if x["path"] is not None]
        assert sorted(paths) == sorted(expected), set(paths) ^ set(expected)
        by_path = {x["path"]: x["status"] for x in reported}
        assert {p: by_path[p] for p, s in expected.items() if s} == {p: s for p, s in expected.items() if s}
        human = subprocess.run([sys.executable, "-m", "hfwatchd", "check", HUB_REPO, str(dl), "--state-dir", state],
                               env=cli_env(fake_hub), capture_output=True, timeout=120, check=False)  # bytes out
        assert human.returncode == r.returncode and b"Traceback" not in human.stderr, human.stderr
        # one line per file (newlines in names escaped) and the summary
        assert len(human.stdout.rstrip(b"\n").split(b"\n")) == len(reported) + 1
        long_names = sum(1 for n in names if len(n) > 200)
        newlines = sum(1 for n in names if b"\n" in n)
        not_utf8 = sum(1 for n in names if any("\udc80" <= c <= "\udcff" for c in os.fsdecode(n)))
        print(f"file names: {len(names)} distinct ({long_names} over 200 bytes, {newlines} with a newline, "
              f"{not_utf8} not UTF-8), {len(expected)} judged by one `check --json` and one human `check`")


class TestHostileInputRegressions:
    """Single inputs found by the property tests' strategies that hfwatchd once mishandled."""

    def test_huge_integer_duration_is_a_config_error(self, tmp_path: Path) -> None:
        """A 400-digit rescan_interval (tomllib accepts it) is refused with ConfigError."""
        path = tmp_path / "c.toml"
        path.write_text(f"rescan_interval = {'9' * 400}\n[[watch]]\npath = '/x'\nrepos = ['a/b']\n")
        with pytest.raises(ConfigError):
            load_config(path)

    def test_huge_json_integer_is_a_spec_error(self) -> None:
        """A manifest holding a 5,000-digit number is refused with SpecError."""
        with pytest.raises(SpecError):
            load_manifest_text('{"files": {"a": {"size": %s}}}' % ("1" * 5000), RepoRef("model", "o/n"), where="m")

    @pytest.mark.parametrize("doc", [{"a.bin": "a" * 64 + "\n"},
                                     {"files": {"a": {"size": 1, "sha256": "a" * 64 + "\n"}}},
                                     {"files": {"a": {"size": 1, "blob_id": "a" * 40 + "\n"}}}])
    def test_digest_with_trailing_newline_is_refused(self, doc: dict[str, Any]) -> None:
        """A sha256 or blob id followed by a newline is not a digest."""
        with pytest.raises(SpecError):
            load_manifest_text(json.dumps(doc), RepoRef("model", "o/n"), where="m")

    def test_newline_in_repo_name_is_refused(self) -> None:
        """A newline is not part of a repo name."""
        with pytest.raises(SpecError):
            RepoRef.parse("org\n/name")

    def test_human_check_output_with_non_utf8_name(self, tmp_path: Path, fake_hub: FakeHub) -> None:
        """`check` prints a non-UTF-8 file name on a strict UTF-8 stdout without a traceback."""
        fake_hub.add_repo(HUB_REPO, HUB_FILES)
        dl = tmp_path / "dl"
        dl.mkdir()
        with open(os.path.join(os.fsencode(dl), b"bad\xff name.json"), "wb") as f:
            f.write(HUB_FILES["config.json"])
        env = cli_env(fake_hub, PYTHONIOENCODING="utf-8")  # what Python picks under en_US.UTF-8
        r = subprocess.run([sys.executable, "-m", "hfwatchd", "check", HUB_REPO, str(dl)], env=env,
                           capture_output=True, timeout=60, check=False)
        assert b"Traceback" not in r.stderr, r.stderr
        assert r.returncode == 2
        assert b"bad\xff name.json" in r.stdout  # the name's own bytes, as ls prints them


# --------------------------------------------------------------------------------------------- non-regular files


def make_specials(watched: Path, outside: Path, tag: str) -> list[Path]:
    """A FIFO, a socket, symlinks to /dev/zero and to a FIFO, and (as root) a device node, under manifest names."""
    made = []
    fifo = watched / f"{tag}-fifo.json"
    os.mkfifo(fifo)
    made.append(fifo)
    zero = watched / f"{tag}-zero.safetensors"
    zero.symlink_to("/dev/zero")
    made.append(zero)
    target = outside / f"{tag}-target-fifo"
    os.mkfifo(target)
    link = watched / f"{tag}-link.json"
    link.symlink_to(target)
    made.append(link)
    if IS_ROOT:
        dev = watched / f"{tag}-dev.safetensors"
        os.mknod(dev, 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # another /dev/zero
        made.append(dev)
        outside_dev = outside / f"{tag}-zero-node"
        os.mknod(outside_dev, 0o600 | stat.S_IFCHR, os.makedev(1, 5))
        (watched / f"{tag}-devlink.bin").symlink_to(outside_dev)
        made.append(watched / f"{tag}-devlink.bin")
    return made


SPECIAL_FILES = {f"{tag}-{kind}": b'{"%s": "%s"}\n' % (tag.encode(), kind.encode())
                 for tag in ("early", "live") for kind in ("fifo.json", "link.json", "sock.json")}
SPECIAL_FILES.update({"sentinel.json": b'{"sentinel": true}\n', "early-zero.safetensors": b"\0" * 4096,
                      "live-zero.safetensors": b"\0" * 4097, "early-dev.safetensors": b"\0" * 4098,
                      "live-dev.safetensors": b"\0" * 4099, "early-devlink.bin": b"\0" * 10,
                      "live-devlink.bin": b"\0" * 11})


@pytest.fixture
def specials_daemon(tmp_path: Path, fake_hub: FakeHub, daemon_factory: Start) -> Iterator[dict[str, Any]]:
    """A daemon (one worker) over a folder holding non-regular files from before its start and made while it runs."""
    fake_hub.add_repo(HUB_REPO, SPECIAL_FILES)
    watched = tmp_path / "dl"
    outside = tmp_path / "outside"
    watched.mkdir()
    outside.mkdir()
    opens = OpenWatch([watched, outside])
    sockets: list[socket.socket] = []
    try:
        made = make_specials(watched, outside, "early")
        cfg = write_config(tmp_path / "c.toml", hub=fake_hub, watches=[{"path": watched, "repos": [HUB_REPO]}],
                           state_dir=tmp_path / "state", rescan_interval="1s", workers=1)
        d = daemon_factory(cfg)
        d.wait_for("scan.finished")
        made += make_specials(watched, outside, "live")
        for tag in ("early", "live"):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(str(watched / f"{tag}-sock.json"))
            sockets.append(s)
            made.append(watched / f"{tag}-sock.json")
        write(watched / "sentinel.json", SPECIAL_FILES["sentinel.json"])
        d.wait_for("file.matched", rfilename="sentinel.json", timeout=20)
        for _ in range(2):  # the second periodic rescan from now started after every special file was made
            d.wait_for("scan.finished", timeout=20)
        assert d.stop() == 0  # the daemon's threads have handled every event by now
        yield {"made": made, "opened": opens.opened(), "daemon": d, "outside": outside, "state": tmp_path / "state",
               "watched": watched}
    finally:
        for s in sockets:
            s.close()
        opens.close()


class TestNonRegularFiles:
    def test_never_judged_and_never_block(self, specials_daemon: dict[str, Any]) -> None:
        """FIFOs, sockets, devices and symlinks get no verdict and do not stop a one-worker daemon."""
        made = {str(p) for p in specials_daemon["made"]}
        d: DaemonProc = specials_daemon["daemon"]
        lines = [x for x in d.seen if x.get("event") in VERDICTS and x.get("path") in made]
        assert lines == []
        assert set(rows(specials_daemon["state"])) == {os.fsencode(specials_daemon["watched"] / "sentinel.json")}
        assert not [x for x in d.seen if x.get("event") in ("worker.failed", "scan.failed")]
        print(f"\nnon-regular files: {len(made)} (FIFO, socket, symlinks to /dev/zero and a FIFO"
              f"{', device nodes' if IS_ROOT else ''}) ignored; the sentinel was judged")

    def test_never_opened(self, specials_daemon: dict[str, Any]) -> None:
        """No FIFO or device node in (or linked from) a watched folder is ever opened by the daemon."""
        opened = sorted({str(p) for p in specials_daemon["opened"]})
        special = {str(p) for p in specials_daemon["made"]} | {
            str(p) for p in Path(specials_daemon["outside"]).iterdir()}
        assert [p for p in opened if p in special] == []


# --------------------------------------------------------------------------------------------- token


class TestToken:
    def test_token_never_logged_or_stored(self, tmp_path: Path, fake_hub: FakeHub, daemon_factory: Start) -> None:
        """A private repo's token (from token_file) is sent to the Hub but appears in no log line and no state file."""
        fake_hub.add_repo(TOKEN_REPO, HUB_FILES, private=True)
        token = "hf_" + secrets.token_hex(20)
        token_file = tmp_path / "token"
        token_file.write_text(token + "\n")
        watched = tmp_path / "dl"
        watched.mkdir()
        state = tmp_path / "state"
        log_file = tmp_path / "logs" / "events.jsonl"
        cfg = write_config(tmp_path / "c.toml", hub=fake_hub, watches=[{"path": watched, "repos": [TOKEN_REPO]}],
                           state_dir=state, log_file=log_file, rescan_interval="1h", log_level="debug",
                           hub_table={"token_file": token_file, "manifest_ttl": "1s"})
        fake_hub.fail(500, times=1)  # an error path is logged too
        d = daemon_factory(cfg)
        d.wait_for("manifest.failed")
        d.wait_for("manifest.loaded", timeout=30)
        write(watched / "config.json", HUB_FILES["config.json"])
        d.wait_for("file.matched", rfilename="config.json")
        write(watched / "model.safetensors", b"\x02" * len(HUB_FILES["model.safetensors"]))
        d.wait_for("file.mismatch", rfilename="model.safetensors")
        secret = token.encode()
        needles = (secret, secret[3:], token.upper().encode())

        def leaks() -> list[str]:
            out = []
            for root in (state, log_file.parent):
                for p in root.rglob("*"):
                    if p.is_file() and any(n in p.read_bytes() for n in needles):
                        out.append(str(p))
            return out

        assert leaks() == []  # while running: the WAL and every cache file
        checked = run_cli("check", "--config", str(cfg), env=cli_env(fake_hub))
        status = run_cli("status", "--config", str(cfg), "--missing", "--urls", env=cli_env(fake_hub))
        assert d.stop() == 0
        assert leaks() == []
        for text in (*d.raw, checked.stdout, checked.stderr, status.stdout, status.stderr):
            assert token not in text and token[3:] not in text
        assert any(fake_hub.authorized), "the token was never sent: the test proves nothing"
        files = sum(1 for root in (state, log_file.parent) for p in root.rglob("*") if p.is_file())
        print(f"\ntoken: absent from {len(d.raw)} daemon log lines, {files} files under state_dir and the log "
              f"folder, and the output of check and status")
