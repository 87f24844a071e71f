"""The judging pipeline in-process: a real State and real files, no threads, no sockets, no daemon."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hfwatchd.config import RepoConfig, WatchConfig
from hfwatchd.folder import WatchedFolder
from hfwatchd.hashing import CHUNK_SIZE
from hfwatchd.judge import CHECK, DAEMON, Judge, Outcome, Policy
from hfwatchd.manifest import Manifest, ManifestEntry, RepoRef, Status
from hfwatchd.pool import Job, Retry
from hfwatchd.progressive import Progress
from hfwatchd.state import State

REF = RepoRef.parse("org/model")
COMMIT = "a" * 40
LFS = os.urandom(300_000)
CONFIG = b'{"a": 1}\n'


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class NullLog:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, object]]] = []

    def _log(self, event: str, **kw: object) -> None:
        self.lines.append((event, kw))

    debug = info = warning = error = exception = _log


class FakeTracker:
    """Stands in for the progressive tracker: hands out one recorded head start, records releases."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.released: list[tuple[int, int]] = []

    def take(self, dev: int, ino: int) -> Progress | None:
        p, self.progress = self.progress, None
        return p

    def release(self, dev: int, ino: int) -> None:
        self.released.append((dev, ino))


def manifest() -> Manifest:
    entries = {
        "model.safetensors": ManifestEntry("model.safetensors", len(LFS), hashlib.sha256(LFS).hexdigest(), "b" * 40),
        "config.json": ManifestEntry("config.json", len(CONFIG), None, git_sha1(CONFIG)),
    }
    return Manifest(REF, COMMIT, entries)


class Rig:
    def __init__(self, tmp: Path, policy: Policy, tracker: FakeTracker | None = None) -> None:
        self.root = tmp / "dl"
        self.root.mkdir()
        self.state = State(tmp / "state")
        self.folder = WatchedFolder(WatchConfig(path=self.root, repos=(RepoConfig(REF),)))
        self.folder.set_manifest(manifest())
        self.folder.ready = True
        self.reported: list[Outcome] = []
        self.log = NullLog()
        self.judge = Judge(self.state, policy, report=self.reported.append, log=self.log,
                           stopping=threading.Event(), tracker=tracker)  # type: ignore[arg-type]
        self.buf = bytearray(CHUNK_SIZE)

    def put(self, rel: str, data: bytes, *, age: float = 0.0) -> str:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        if age:
            st = p.stat()
            os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns - int(age * 1e9)))
        return str(p)

    def judge_path(self, path: str, reason: str = "scan") -> Outcome | Retry | None:
        return self.judge.judge(Job(self.folder, path, reason), self.buf)  # type: ignore[arg-type]


@pytest.fixture
def check_rig(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path, CHECK)
    yield rig
    rig.state.close()


@pytest.fixture
def daemon_rig(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path, Policy(follow_writers=True, logged=False, settle=0.0))
    yield rig
    rig.state.close()


class TestVerdicts:
    def test_lfs_file_matched_by_path_with_sha256(self, check_rig: Rig) -> None:
        """An LFS file at its repo path is matched by sha256 and recorded before it is reported."""
        o = check_rig.judge_path(check_rig.put("model.safetensors", LFS))
        assert isinstance(o, Outcome)
        assert (o.verdict.status, o.verdict.algorithm, o.verdict.matched_by) == (Status.MATCHED, "sha256", "path")
        row = check_rig.state.get(os.fsencode(o.verdict.path))
        assert row is not None and row.status == "matched" and row.commit == COMMIT

    def test_regular_file_matched_by_git_blob_sha1(self, check_rig: Rig) -> None:
        """A regular git file is matched by its git blob SHA-1."""
        o = check_rig.judge_path(check_rig.put("config.json", CONFIG))
        assert isinstance(o, Outcome) and o.verdict.status == Status.MATCHED and o.verdict.algorithm == "git-sha1"

    def test_renamed_duplicate_matched_by_name(self, check_rig: Rig) -> None:
        """A browser's duplicate name maps to its entry by name."""
        o = check_rig.judge_path(check_rig.put("model (1).safetensors", LFS))
        assert isinstance(o, Outcome) and o.verdict.matched_by == "name" and o.verdict.status == Status.MATCHED

    def test_flat_file_with_other_name_matched_by_content(self, check_rig: Rig) -> None:
        """A file under a name no entry has is recognised by size and digest."""
        o = check_rig.judge_path(check_rig.put("download.bin", LFS))
        assert isinstance(o, Outcome) and o.verdict.matched_by == "content"
        assert o.verdict.rfilename == "model.safetensors"

    def test_short_file_incomplete_without_hashing(self, check_rig: Rig) -> None:
        """A file shorter than its entry is incomplete, and nothing is read to say so."""
        o = check_rig.judge_path(check_rig.put("model.safetensors", LFS[:1000]))
        assert isinstance(o, Outcome) and o.verdict.status == Status.INCOMPLETE
        assert check_rig.judge.counters.hashed_files == 0

    def test_same_size_wrong_bytes_mismatch(self, check_rig: Rig) -> None:
        """A full-size file with wrong bytes is a mismatch carrying both digests."""
        bad = bytearray(LFS)
        bad[5] ^= 1
        o = check_rig.judge_path(check_rig.put("model.safetensors", bytes(bad)))
        assert isinstance(o, Outcome) and o.verdict.status == Status.MISMATCH
        assert o.verdict.actual == hashlib.sha256(bad).hexdigest() and o.verdict.expected != o.verdict.actual

    def test_stranger_unknown(self, check_rig: Rig) -> None:
        """A file that matches nothing watched is unknown."""
        o = check_rig.judge_path(check_rig.put("notes.txt", b"hello"))
        assert isinstance(o, Outcome) and o.verdict.status == Status.UNKNOWN

    def test_unchanged_file_not_judged_twice(self, check_rig: Rig) -> None:
        """A second look at an unchanged file whose verdict holds gives nothing and reads nothing."""
        path = check_rig.put("model.safetensors", LFS)
        assert isinstance(check_rig.judge_path(path), Outcome)
        hashed = check_rig.judge.counters.hashed_files
        assert check_rig.judge_path(path) is None
        assert check_rig.judge.counters.hashed_files == hashed

    def test_temp_names_never_judged(self, check_rig: Rig) -> None:
        """A downloader's temp file gets no verdict."""
        assert check_rig.judge_path(check_rig.put("model.safetensors.crdownload", LFS)) is None


class TestDownloadsInProgress:
    def test_control_file_event_no_verdict_in_daemon(self, daemon_rig: Rig) -> None:
        """With aria2c's control file beside it, a close event gives the daemon no verdict."""
        path = daemon_rig.put("model.safetensors", LFS, age=5)
        daemon_rig.put("model.safetensors.aria2", b"ctl")
        assert daemon_rig.judge_path(path, "event") is None

    def test_control_file_scan_incomplete_in_daemon(self, daemon_rig: Rig) -> None:
        """A scan that finds an unfinished aria2c download records it incomplete (an interrupted download)."""
        path = daemon_rig.put("model.safetensors", LFS, age=5)
        daemon_rig.put("model.safetensors.aria2", b"ctl")
        o = daemon_rig.judge_path(path, "scan")
        assert isinstance(o, Outcome) and o.verdict.status == Status.INCOMPLETE and o.signature is None

    def test_placeholder_no_verdict_in_daemon_whatever_the_reason(self, daemon_rig: Rig) -> None:
        """A browser's 0-byte placeholder never gets a verdict from the daemon while its temp file is beside it."""
        path = daemon_rig.put("model.safetensors", b"", age=5)
        daemon_rig.put("model.safetensors.crdownload", LFS[:1000])
        assert daemon_rig.judge_path(path, "event") is None
        assert daemon_rig.judge_path(path, "scan") is None

    def test_placeholder_incomplete_in_check(self, check_rig: Rig) -> None:
        """check, a one-shot pass, reports the placeholder of an unfinished browser download as incomplete."""
        path = check_rig.put("model.safetensors", b"")
        check_rig.put("model.safetensors.crdownload", LFS[:1000])
        o = check_rig.judge_path(path)
        assert isinstance(o, Outcome) and o.verdict.status == Status.INCOMPLETE

    def test_fresh_created_event_waits_for_its_end(self, daemon_rig: Rig) -> None:
        """A file that just appeared (a created event) is left for its close or rename event."""
        assert daemon_rig.judge_path(daemon_rig.put("model.safetensors", LFS), "created") is None

    def test_file_moved_in_whole_judged_on_created(self, daemon_rig: Rig) -> None:
        """A finished file moved in (old mtime, only a created event) is judged at once."""
        o = daemon_rig.judge_path(daemon_rig.put("model.safetensors", LFS, age=10), "created")
        assert isinstance(o, Outcome) and o.verdict.status == Status.MATCHED


class TestProgressiveHeadStart:
    def test_head_start_used_and_descriptor_released(self, tmp_path: Path) -> None:
        """Bytes hashed during the download are not read again, and the tracker lets go of the file."""
        h = hashlib.sha256(LFS[:100_000])
        tracker = FakeTracker(Progress(h, 100_000))
        rig = Rig(tmp_path, Policy(follow_writers=True, logged=False, settle=0.0), tracker)
        path = rig.put("model.safetensors", LFS, age=5)
        result = rig.judge.work(Job(rig.folder, path, "event"), rig.buf)
        assert result is None and len(rig.reported) == 1
        o = rig.reported[0]
        assert o.verdict.status == Status.MATCHED and o.head_start == 100_000
        assert rig.judge.counters.hashed_bytes == len(LFS) - 100_000
        st = os.stat(path)
        assert tracker.released == [(st.st_dev, st.st_ino)]
        rig.state.close()

    def test_progressive_mismatch_confirmed_from_disk(self, tmp_path: Path) -> None:
        """A head start whose bytes were rewritten since gives no false mismatch: the file is read again whole."""
        wrong = hashlib.sha256(b"\0" * 100_000)  # what the tracker saw before the writer rewrote the start
        policy = Policy(follow_writers=True, logged=False, settle=0.0)
        rig = Rig(tmp_path, policy, FakeTracker(Progress(wrong, 100_000)))
        o = rig.judge_path(rig.put("model.safetensors", LFS, age=5), "event")
        assert isinstance(o, Outcome) and o.verdict.status == Status.MATCHED and o.head_start == 0
        rig.state.close()


class TestPolicies:
    def test_daemon_records_unlogged_check_logged(self, tmp_path: Path) -> None:
        """The daemon's verdicts wait for their log line (replayed after a crash); check's need none."""
        for name, policy, expected in (("daemon", DAEMON, 1), ("check", CHECK, 0)):
            (tmp_path / name).mkdir()
            rig = Rig(tmp_path / name, policy)
            rig.judge_path(rig.put("config.json", CONFIG, age=5))
            assert len(rig.state.unlogged()) == expected
            rig.state.close()


class TestRedownload:
    def test_same_size_redownload_with_server_mtime_judged_again(self, daemon_rig: Rig) -> None:
        """A corrupt re-download into the same inode with the old mtime (wget -O) is a mismatch on its close event."""
        path = daemon_rig.put("model.safetensors", LFS, age=5)
        first = daemon_rig.judge_path(path, "event")
        assert isinstance(first, Outcome) and first.verdict.status == Status.MATCHED
        st = os.stat(path)
        bad = bytearray(LFS)
        bad[-1] ^= 1
        with open(path, "r+b") as f:  # same inode, same size
            f.write(bad)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # the server's Last-Modified, as wget sets it
        again = daemon_rig.judge_path(path, "event")
        assert isinstance(again, Outcome) and again.verdict.status == Status.MISMATCH and not again.repeated

    def test_second_event_for_one_completion_not_logged_twice(self, daemon_rig: Rig) -> None:
        """A rename event right after the close event of the same bytes gives the same verdict, marked repeated."""
        path = daemon_rig.put("model.safetensors", LFS, age=5)
        first = daemon_rig.judge_path(path, "event")
        second = daemon_rig.judge_path(path, "event")
        assert isinstance(first, Outcome) and not first.repeated
        assert isinstance(second, Outcome) and second.repeated
        assert daemon_rig.judge_path(path, "scan") is None  # a scan trusts the signature
