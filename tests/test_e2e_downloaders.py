"""End to end: real downloaders fetch from the fake Hub's resolve URLs into a folder the daemon watches.

wget, curl, aria2c, headless Chromium (over the DevTools protocol) and `hf download` run for real;
Chromium's on-disk sequence is also reproduced by hand. Real headless Firefox is in test_e2e_firefox.py,
hfd's way of running aria2c and wget in test_e2e_hfd.py. Every test synchronises on the
daemon's log lines, on the downloader's output or on its exit, never on sleeps. "Exactly one verdict"
is checked after a sentinel file's own verdict, so a late duplicate would be caught.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import json
import os
import random
import re
import select
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest
from cdp import DevTools
from conftest import DaemonProc, cli_env, watch_empty_folder
from fakehub import FakeHub, git_blob_sha1

pytestmark = pytest.mark.e2e

REPO = "org/e2e-model"
MODEL = random.Random(20240607).randbytes(8 * 1024 * 1024)  # an 8 MiB LFS file
SENTINELS = [f"sentinel-{i}.json" for i in range(4)]
FILES: dict[str, bytes] = {
    "model.safetensors": MODEL,
    "config.json": b'{"architectures": ["E2EModel"], "hidden_size": 8}\n',
    "tokenizer.json": b'{"version": "1.0", "vocab": {"a": 0, "b": 1}}\n',
    "onnx/model.onnx": random.Random(7).randbytes(300_000),
    "onnx/config.json": b'{"opset": 17}\n',
    **{name: b'{"sentinel": %d}\n' % i for i, name in enumerate(SENTINELS)},
}
LFS = {"model.safetensors", "onnx/model.onnx"}  # the fake Hub's default rule: size >= 1 KiB or a weight suffix

Start = Callable[..., DaemonProc]


# --------------------------------------------------------------------------------------------- helpers


def need(tool: str, package: str) -> str:
    """The tool's path; a missing downloader fails the test (CI must not skip it silently)."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed: `apt-get install {package}` (tests/run.sh installs it)")
    return path


def run(argv: list[str], *, timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    """Run a downloader to completion and fail with its output if it fails."""
    r = subprocess.run(argv, capture_output=True, timeout=timeout, check=False, **kwargs)
    assert r.returncode == 0, f"{argv} exited {r.returncode}:\n{r.stdout[-2000:]!r}\n{r.stderr[-2000:]!r}"
    return r


def read_until(proc: subprocess.Popen[bytes], stream: IO[bytes], pattern: bytes, timeout: float = 20) -> bytes:
    """Read a child's pipe until `pattern` (a regex) shows up in it; fail on timeout or EOF."""
    fd = stream.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while not re.search(pattern, buf):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {pattern!r} from {proc.args!r} within {timeout}s: {buf[-2000:]!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"{proc.args!r} exited ({proc.wait()}) before {pattern!r}: {buf[-2000:]!r}")
            buf += chunk
    return buf


def finish(proc: subprocess.Popen[bytes], timeout: float = 60) -> tuple[int, bytes, bytes]:
    """Wait for a child started with pipes, reading what is left of them."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"{proc.args!r} still running after {timeout}s: {err[-2000:]!r}") from None
    return proc.returncode, out or b"", err or b""


def write_chunks(path: Path, data: bytes, *, mode: str = "wb", chunks: int = 8) -> None:
    """Write `data` in a few flushed chunks, the way a downloader's writes reach the disk."""
    step = max(1, -(-len(data) // chunks))
    with open(path, mode) as f:
        for offset in range(0, len(data), step):
            f.write(data[offset : offset + step])
            f.flush()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


IN_MODIFY = 0x2
_IN_CLOSE_WRITE, _IN_MOVED_FROM, _IN_MOVED_TO, _IN_CREATE, _IN_DELETE = 0x8, 0x40, 0x80, 0x100, 0x200
_KINDS = {IN_MODIFY: "modify", _IN_CLOSE_WRITE: "close", _IN_MOVED_FROM: "moved_from", _IN_MOVED_TO: "moved_to",
          _IN_CREATE: "create", _IN_DELETE: "delete"}


class Inotify:
    """The kernel's record of what happened in one folder, read after the fact: no thread, no polling."""

    def __init__(self, folder: Path, *, extra: int = 0) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if libc.inotify_add_watch(self.fd, os.fsencode(folder), (sum(_KINDS) & ~IN_MODIFY) | extra) < 0:
            os.close(self.fd)
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {folder}")
        self.events: list[tuple[str, str]] = []

    def read(self) -> list[tuple[str, str]]:
        """Every (kind, name) queued since the last call, in order, appended to `events`."""
        while True:
            try:
                buf = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return self.events
            i = 0
            while i < len(buf):
                _wd, mask, _cookie, length = struct.unpack_from("iIII", buf, i)
                name = buf[i + 16 : i + 16 + length].rstrip(b"\0").decode()
                i += 16 + length
                assert not mask & 0x4000, "inotify queue overflowed: the trace is not complete"
                for bit, kind in _KINDS.items():
                    if mask & bit:
                        self.events.append((kind, name))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


@dataclass
class E2E:
    """A running daemon watching `dir` for REPO on the fake Hub."""

    hub: FakeHub
    dir: Path
    tmp: Path
    daemon: DaemonProc
    commit: str
    sentinels: list[str] = field(default_factory=lambda: list(SENTINELS))

    def url(self, rfilename: str) -> str:
        return self.hub.resolve_url(REPO, rfilename)

    def wait_verdicts(self, event: str, names: list[str], timeout: float = 30) -> dict[str, dict[str, Any]]:
        """Wait, in any order, for one `event` line per rfilename in `names`."""
        found: dict[str, dict[str, Any]] = {}
        while len(found) < len(names):
            rec = self.daemon.wait_until(
                lambda r: r.get("event") == event and r.get("rfilename") in names and r["rfilename"] not in found,
                timeout, f"{event} for {sorted(set(names) - set(found))}")
            found[rec["rfilename"]] = rec
        return found

    def sentinel(self) -> list[dict[str, Any]]:
        """Drop the next sentinel file, wait for its verdict, and return every line logged so far."""
        name = self.sentinels.pop(0)
        with open(self.dir / name, "wb") as f:
            f.write(FILES[name])
        self.daemon.wait_for("file.matched", rfilename=name)
        return [*self.daemon.seen, *self.daemon.drain()]

    def verdicts(self, lines: list[dict[str, Any]]) -> dict[str, list[str]]:
        """Verdict events per path (relative to the watched folder), sentinels left out."""
        out: dict[str, list[str]] = {}
        for x in lines:
            if str(x.get("event", "")).startswith("file."):
                rel = os.path.relpath(x["path"], self.dir)
                if rel not in SENTINELS:
                    out.setdefault(rel, []).append(x["event"])
        return out

    def assert_only(self, expected: dict[str, list[str]]) -> list[dict[str, Any]]:
        """After a sentinel's verdict: exactly these verdicts were logged, and no errors besides mismatches."""
        lines = self.sentinel()
        assert self.verdicts(lines) == expected, "\n".join(json.dumps(x) for x in lines)
        bad = [x for x in lines if x.get("event") == "<not json>"
               or (x.get("level") in ("error", "critical") and x.get("event") != "file.mismatch")]
        assert not bad, "\n".join(json.dumps(x) for x in bad)
        return lines


def check_matched(env: E2E, rec: dict[str, Any], rel: str) -> None:
    """Every field of a file.matched line the contract promises, with the right values."""
    data = FILES[rel]
    assert rec["path"] == str(env.dir / rel)
    assert rec["repo"] == REPO
    assert rec["rfilename"] == rel
    assert rec["commit"] == env.commit
    assert rec["size"] == len(data)
    if rel in LFS:
        assert (rec["algorithm"], rec["digest"]) == ("sha256", sha256(data))
    else:
        assert (rec["algorithm"], rec["digest"]) == ("git-sha1", git_blob_sha1(data))
    assert isinstance(rec["seconds"], (int, float))


@pytest.fixture
def e2e(tmp_path: Path, fake_hub: FakeHub, daemon_factory: Start) -> E2E:
    """The fake Hub serving REPO, and a daemon watching an empty folder, its first scan done."""
    commit = fake_hub.add_repo(REPO, FILES)
    watched, d = watch_empty_folder(tmp_path, fake_hub, daemon_factory, REPO, commit)
    return E2E(fake_hub, watched, tmp_path, d, commit)


# --------------------------------------------------------------------------------------------- wget, curl


class TestWget:
    def test_lfs_and_regular_file_matched_once(self, e2e: E2E) -> None:
        """wget -P into the watched folder gives one file.matched per file, with every field, and nothing else."""
        wget = need("wget", "wget")
        e2e.hub.rate = 16_000_000  # ~0.5 s: the file is written in many chunks
        run([wget, "-q", "-P", str(e2e.dir), e2e.url("model.safetensors"), e2e.url("config.json")])
        recs = e2e.wait_verdicts("file.matched", ["model.safetensors", "config.json"])
        check_matched(e2e, recs["model.safetensors"], "model.safetensors")
        check_matched(e2e, recs["config.json"], "config.json")
        e2e.assert_only({"model.safetensors": ["file.matched"], "config.json": ["file.matched"]})


class TestCurl:
    def test_output_file(self, e2e: E2E) -> None:
        """curl -L -o NAME gives one file.matched per file."""
        curl = need("curl", "curl")
        e2e.hub.rate = 16_000_000
        for rel in ("model.safetensors", "config.json"):
            run([curl, "-sS", "-f", "-L", "-o", str(e2e.dir / rel), e2e.url(rel)])
        recs = e2e.wait_verdicts("file.matched", ["model.safetensors", "config.json"])
        check_matched(e2e, recs["model.safetensors"], "model.safetensors")
        check_matched(e2e, recs["config.json"], "config.json")
        e2e.assert_only({"model.safetensors": ["file.matched"], "config.json": ["file.matched"]})

    def test_output_dir_and_content_disposition(self, e2e: E2E) -> None:
        """curl --output-dir DIR -O -J (the name from Content-Disposition, after the CDN redirect) is matched."""
        curl = need("curl", "curl")
        elsewhere = e2e.tmp / "cwd"
        elsewhere.mkdir()
        for rel in ("model.safetensors", "tokenizer.json"):
            run([curl, "-sS", "-f", "-L", "-O", "-J", "--output-dir", str(e2e.dir), e2e.url(rel)], cwd=elsewhere)
        recs = e2e.wait_verdicts("file.matched", ["model.safetensors", "tokenizer.json"])
        check_matched(e2e, recs["model.safetensors"], "model.safetensors")
        check_matched(e2e, recs["tokenizer.json"], "tokenizer.json")
        assert not list(elsewhere.iterdir())
        e2e.assert_only({"model.safetensors": ["file.matched"], "tokenizer.json": ["file.matched"]})


class TestCorruptDownload:
    @pytest.mark.parametrize(("rel", "tool", "algorithm"), [("model.safetensors", "wget", "sha256"),
                                                            ("config.json", "curl", "git-sha1")])
    def test_one_mismatch(self, e2e: E2E, rel: str, tool: str, algorithm: str) -> None:
        """A Hub serving wrong bytes of the right size gives exactly one file.mismatch and no file.matched."""
        exe = need(tool, tool)
        good = FILES[rel]
        bad = bytearray(good)
        bad[len(bad) // 2] ^= 0xFF
        e2e.hub.corrupt(REPO, rel, bytes(bad))
        if tool == "wget":
            run([exe, "-q", "-P", str(e2e.dir), e2e.url(rel)])
        else:
            run([exe, "-sS", "-f", "-L", "-o", str(e2e.dir / rel), e2e.url(rel)])
        assert (e2e.dir / rel).read_bytes() == bad
        rec = e2e.daemon.wait_for("file.mismatch", rfilename=rel)
        if algorithm == "sha256":
            expected, actual = sha256(good), sha256(bytes(bad))
        else:
            expected, actual = git_blob_sha1(good), git_blob_sha1(bytes(bad))
        assert (rec["algorithm"], rec["expected"], rec["actual"]) == (algorithm, expected, actual)
        assert rec["size"] == rec["expected_size"] == len(good)
        assert (rec["repo"], rec["commit"], rec["path"]) == (REPO, e2e.commit, str(e2e.dir / rel))
        e2e.assert_only({rel: ["file.mismatch"]})


class TestInterruptedDownload:
    def test_killed_wget_then_wget_c(self, e2e: E2E) -> None:
        """A killed wget leaves a short file (file.incomplete); `wget -c` completes it (file.matched)."""
        wget = need("wget", "wget")
        rel, size = "model.safetensors", len(MODEL)
        e2e.hub.rate = 2_000_000  # ~4 s in all: killed well before the end
        proc = subprocess.Popen([wget, "--progress=dot", "-P", str(e2e.dir), e2e.url(rel)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            assert proc.stderr is not None
            read_until(proc, proc.stderr, rb" 0K \.")  # the first KiB is on disk
        finally:
            proc.kill()
            finish(proc)
        rec = e2e.daemon.wait_for("file.incomplete", rfilename=rel)
        on_disk = (e2e.dir / rel).stat().st_size
        assert 0 < rec["size"] == on_disk < rec["expected_size"] == size
        assert (rec["repo"], rec["path"]) == (REPO, str(e2e.dir / rel))

        e2e.hub.rate = None
        run([wget, "-q", "-c", "-P", str(e2e.dir), e2e.url(rel)])
        assert (e2e.dir / rel).read_bytes() == MODEL
        check_matched(e2e, e2e.daemon.wait_for("file.matched", rfilename=rel), rel)
        e2e.assert_only({rel: ["file.incomplete", "file.matched"]})

    def test_curl_range_then_curl_resume(self, e2e: E2E) -> None:
        """`curl -r 0-999` leaves 1000 bytes (file.incomplete); `curl -C -` completes them (file.matched)."""
        curl = need("curl", "curl")
        rel, target = "model.safetensors", e2e.dir / "model.safetensors"
        run([curl, "-sS", "-f", "-L", "-r", "0-999", "-o", str(target), e2e.url(rel)])
        rec = e2e.daemon.wait_for("file.incomplete", rfilename=rel)
        assert (rec["size"], rec["expected_size"]) == (1000, len(MODEL))
        run([curl, "-sS", "-f", "-L", "-C", "-", "-o", str(target), e2e.url(rel)])
        assert target.read_bytes() == MODEL
        check_matched(e2e, e2e.daemon.wait_for("file.matched", rfilename=rel), rel)
        e2e.assert_only({rel: ["file.incomplete", "file.matched"]})

    def test_timed_out_curl_then_curl_resume(self, e2e: E2E) -> None:
        """A curl cut off by --max-time leaves a short file (file.incomplete); `curl -C -` completes it."""
        curl = need("curl", "curl")
        rel, target = "model.safetensors", e2e.dir / "model.safetensors"
        e2e.hub.rate = 2_000_000  # ~4 s in all: curl gives up after 1 s, exit 28
        r = subprocess.run([curl, "-sS", "-f", "-L", "--max-time", "1", "-o", str(target), e2e.url(rel)],
                           capture_output=True, timeout=30, check=False)
        assert r.returncode == 28, r.stderr
        rec = e2e.daemon.wait_for("file.incomplete", rfilename=rel)
        assert 0 < rec["size"] == target.stat().st_size < rec["expected_size"] == len(MODEL)
        e2e.hub.rate = None
        run([curl, "-sS", "-f", "-L", "-C", "-", "-o", str(target), e2e.url(rel)])
        assert target.read_bytes() == MODEL
        check_matched(e2e, e2e.daemon.wait_for("file.matched", rfilename=rel), rel)
        e2e.assert_only({rel: ["file.incomplete", "file.matched"]})


# --------------------------------------------------------------------------------------------- aria2c


class TestAria2:
    @pytest.mark.parametrize("allocation", [None, "prealloc", "falloc"])
    def test_preallocated_file_judged_once_when_control_file_goes(self, e2e: E2E, allocation: str | None) -> None:
        """aria2c's full-size preallocated file gets no verdict while X.aria2 exists, then one file.matched."""
        aria2c = need("aria2c", "aria2")
        rel = "model.safetensors"
        target, control = e2e.dir / rel, e2e.dir / f"{rel}.aria2"
        e2e.hub.rate = 4_000_000  # ~2 s: aria2c prints a progress line after 1 s
        # None: aria2c's own default (prealloc), which must give the same full-size file
        alloc = [] if allocation is None else [f"--file-allocation={allocation}"]
        # aria2c block-buffers a piped stdout: stdbuf makes each progress line arrive as it is printed
        argv = [need("stdbuf", "coreutils"), "-oL", aria2c, "-x1", *alloc, "--summary-interval=0",
                "--show-console-readout=true", "--enable-color=false", "-d", str(e2e.dir), "-o", rel, e2e.url(rel)]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert proc.stdout is not None
            progress = read_until(proc, proc.stdout, rb"\[#\w+ [^\]]*\(\d+%\)")
            assert b"(100%)" not in progress
            # mid-download: the final name is already full-size, with the control file beside it
            assert target.stat().st_size == len(MODEL)
            assert control.exists(), (sorted(os.listdir(e2e.dir)), progress)
            assert not [x for x in e2e.daemon.drain() if str(x.get("event")).startswith("file.")]
        finally:
            rc, out, err = finish(proc)
        assert rc == 0, (out[-2000:], err[-2000:])
        assert not control.exists()
        check_matched(e2e, e2e.daemon.wait_for("file.matched", rfilename=rel), rel)
        e2e.assert_only({rel: ["file.matched"]})


# --------------------------------------------------------------------------------------------- Chromium


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[DevTools]:
    exe = need("chromium", "chromium")
    browser = DevTools(exe, tmp_path / "chromium-profile", tmp_path / "chromium.log")
    try:
        yield browser
    finally:
        browser.close()


class TestHeadlessChromium:
    def test_download_matched_once(self, e2e: E2E, chromium: DevTools) -> None:
        """Headless Chromium downloads into the watched folder: X.crdownload while running, one file.matched each."""
        chromium.call("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(e2e.dir), eventsEnabled=True)
        e2e.hub.rate = 6_000_000  # ~1.4 s: Chromium reports progress in between
        rel = "model.safetensors"
        chromium.call("Target.createTarget", url=e2e.url(rel))
        begin = chromium.event("Browser.downloadWillBegin")
        assert begin["suggestedFilename"] == rel
        guid = begin["guid"]
        chromium.event("Browser.downloadProgress",
                       lambda p: p["guid"] == guid and 0 < p["receivedBytes"] < p["totalBytes"])
        assert (e2e.dir / f"{rel}.crdownload").exists(), sorted(os.listdir(e2e.dir))
        assert not [x for x in e2e.daemon.drain() if str(x.get("event")).startswith("file.")]
        done = chromium.event("Browser.downloadProgress",
                              lambda p: p["guid"] == guid and p["state"] in ("completed", "canceled"))
        assert done["state"] == "completed", done
        check_matched(e2e, e2e.daemon.wait_for("file.matched", rfilename=rel), rel)

        e2e.hub.rate = None
        chromium.call("Target.createTarget", url=e2e.url("config.json"))
        begin = chromium.event("Browser.downloadWillBegin", lambda p: p["suggestedFilename"] == "config.json")
        done = chromium.event("Browser.downloadProgress",
                              lambda p: p["guid"] == begin["guid"] and p["state"] in ("completed", "canceled"))
        assert done["state"] == "completed", done
        check_matched(e2e, e2e.daemon.wait_for("file.matched", rfilename="config.json"), "config.json")
        assert sorted(os.listdir(e2e.dir)) == ["config.json", rel]
        e2e.assert_only({rel: ["file.matched"], "config.json": ["file.matched"]})


# --------------------------------------------------------------------------------------------- browsers on disk


class TestChromiumSequence:
    def test_unconfirmed_then_crdownload_then_rename(self, e2e: E2E) -> None:
        """Chromium's Unconfirmed N.crdownload -> X.crdownload, 0-byte X, rename to X: one file.matched."""
        rel = "model.safetensors"
        unconfirmed = e2e.dir / "Unconfirmed 12345.crdownload"
        crdownload = e2e.dir / f"{rel}.crdownload"
        third = len(MODEL) // 3
        write_chunks(unconfirmed, MODEL[:third])
        os.rename(unconfirmed, crdownload)
        write_chunks(crdownload, MODEL[third:], mode="ab")
        (e2e.dir / rel).open("wb").close()  # the placeholder, created and closed just before the end
        os.rename(crdownload, e2e.dir / rel)
        check_matched(e2e, e2e.daemon.wait_for("file.matched", rfilename=rel), rel)
        e2e.assert_only({rel: ["file.matched"]})


class TestTempNames:
    TEMP = ["foo.part", "foo.crdownload", "foo.aria2", "foo.aria2__temp", "foo.incomplete", "foo.lock",
            ".cache/huggingface/download/x.incomplete", ".cache/huggingface/download/config.json",
            ".org.chromium.Chromium.abc123", ".syncthing.foo.tmp", "~syncthing~foo", "Unconfirmed 99.crdownload",
            "config.json.part", ".hfd/repo_metadata.json", ".hfd/config.json", "onnx/.hfd/config.json"]

    def test_no_line_for_temp_names(self, e2e: E2E) -> None:
        """Temp and control files never get a line, even when they hold a manifest file's exact bytes."""
        for rel in self.TEMP:
            p = e2e.dir / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.open("wb").close()
            with open(p, "ab") as f:
                f.write(FILES["config.json"])  # would be matched by content if it were judged
        lines = e2e.assert_only({})
        text = "\n".join(json.dumps(x) for x in lines)
        for rel in self.TEMP:
            assert rel not in text, rel


# --------------------------------------------------------------------------------------------- hf download


class TestHfDownload:
    def test_local_dir(self, e2e: E2E) -> None:
        """`hf download --local-dir WATCHED` gives one file.matched per file; its .cache/huggingface files none."""
        hf = Path(sys.executable).with_name("hf")
        if not hf.exists():
            pytest.fail(f"{hf} not found: huggingface_hub's CLI is a dependency of hfwatchd (pip install -e .)")
        wanted = ["config.json", "model.safetensors", "onnx/model.onnx", "onnx/config.json"]
        run([str(hf), "download", REPO, *wanted, "--local-dir", str(e2e.dir)], env=cli_env(e2e.hub))
        assert (e2e.dir / ".cache" / "huggingface").is_dir()
        recs = e2e.wait_verdicts("file.matched", wanted)
        for rel in wanted:
            check_matched(e2e, recs[rel], rel)
        e2e.assert_only({rel: ["file.matched"] for rel in wanted})
