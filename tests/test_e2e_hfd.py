"""End to end: downloads the way hfd (the widely used mirror download script) runs aria2c and wget.

hfd keeps its state in `.hfd/` inside the download folder (`repo_metadata.json`, the URL list,
`last_download_command`) and runs, from that folder, either
`aria2c --file-allocation=none -x 4 -j 5 -s 4 -k 1M -c -i .hfd/aria2c_urls.txt` (several files at once,
each written as a sparse file by four connections at four offsets, `X.aria2` beside it until the end)
or `wget -x -nH --cut-dirs=4 -c -i .hfd/wget_urls.txt`. Every test synchronises on the daemon's log
lines, on the downloader's exit or on the kernel's inotify record of the folder, never on sleeps.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import select
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import DaemonProc, cli_env, watch_empty_folder
from fakehub import FakeHub, git_blob_sha1
from test_e2e_downloaders import E2E, IN_MODIFY, SENTINELS, Inotify, finish, need, run, sha256

pytestmark = pytest.mark.e2e

REPO = "org/hfd-model"
SHARDS = [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
FILES: dict[str, bytes] = {
    # 19 MiB in all: more than aria2c's default 16 MiB write cache, so sparse writes reach the disk mid-way
    SHARDS[0]: random.Random(1).randbytes(8 * 1024 * 1024),
    SHARDS[1]: random.Random(2).randbytes(6 * 1024 * 1024),
    SHARDS[2]: random.Random(3).randbytes(5 * 1024 * 1024),  # corrupted by the fake Hub in every test
    "config.json": b'{"architectures": ["HfdModel"], "hidden_size": 8}\n',
    "tokenizer.json": b'{"version": "1.0", "vocab": {"x": 0, "y": 1}}\n',
    "onnx/model.onnx": random.Random(4).randbytes(300_000),
    "onnx/config.json": b'{"opset": 18}\n',
    **{name: b'{"sentinel": %d}\n' % i for i, name in enumerate(SENTINELS)},
}
WANTED = [name for name in FILES if name not in SENTINELS]
CORRUPT = SHARDS[2]
GOOD = [name for name in WANTED if name != CORRUPT]
CUT_DIRS = 4  # /org/hfd-model/resolve/main/<path>: wget -x -nH --cut-dirs=4 leaves <path>


def corrupted(data: bytes) -> bytes:
    bad = bytearray(data)
    bad[len(bad) // 2 + 12345] ^= 0xFF  # in the third connection's segment, not the first
    return bytes(bad)


def data_runs(path: Path) -> int:
    """How many separate runs of data a file holds (SEEK_DATA / SEEK_HOLE): more than one is a sparse file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size, offset, runs = os.fstat(fd).st_size, 0, 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # nothing but a hole up to the end
                    break
                raise
            offset = os.lseek(fd, start, os.SEEK_HOLE)
            runs += 1
        return runs
    finally:
        os.close(fd)


@pytest.fixture
def hfd(tmp_path: Path, fake_hub: FakeHub, daemon_factory: Callable[..., DaemonProc]) -> E2E:
    """The fake Hub serving REPO (one shard corrupted), a daemon watching an empty folder, hfd's `.hfd/` in it."""
    commit = fake_hub.add_repo(REPO, FILES)
    fake_hub.corrupt(REPO, CORRUPT, corrupted(FILES[CORRUPT]))
    watched, d = watch_empty_folder(tmp_path, fake_hub, daemon_factory, REPO, commit)
    env = E2E(fake_hub, watched, tmp_path, d, commit)
    # what hfd writes before it downloads: the repo's API answer, fetched into .hfd/ by the script itself
    (watched / ".hfd").mkdir()
    run([need("curl", "curl"), "-sS", "-f", "-o", str(watched / ".hfd" / "repo_metadata.json"),
         f"{fake_hub.url}/api/models/{REPO}/revision/main"], env=cli_env(fake_hub))
    return env


def write_lists(env: E2E, tool: str) -> Path:
    """hfd's URL list for `tool` in `.hfd/` (`dir=`/`out=` entries for aria2c) and a `last_download_command`."""
    meta = env.dir / ".hfd"
    if tool == "aria2c":
        lines = []
        for rel in WANTED:
            d, out = os.path.split(rel)
            url = env.hub.resolve_url(REPO, rel)
            lines += [url, f"  gid={sha256(url.encode())[:16]}", f"  dir={d or '.'}", f"  out={out}"]
        listing = meta / "aria2c_urls.txt"
    else:
        lines = [env.hub.resolve_url(REPO, rel) for rel in WANTED]
        listing = meta / "wget_urls.txt"
    listing.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (meta / "last_download_command").write_text(f"REPO_ID={REPO} TOOL={tool} INCLUDE= EXCLUDE=\n", encoding="utf-8")
    return listing


def verdict_lines(env: E2E, want: dict[str, str], timeout: float = 60) -> dict[str, dict[str, Any]]:
    """The `want[rfilename]` line for every rfilename, whether already read (daemon.seen) or still to come."""
    found = {x["rfilename"]: x for x in env.daemon.seen
             if x.get("rfilename") in want and x.get("event") == want[x["rfilename"]]}
    while len(found) < len(want):
        rec = env.daemon.wait_until(
            lambda r: r.get("rfilename") in want and r.get("event") == want[r["rfilename"]]
            and r["rfilename"] not in found, timeout, f"verdicts for {sorted(set(want) - set(found))}")
        found[rec["rfilename"]] = rec
    return found


def check_verdicts(env: E2E) -> None:
    """Every good file one file.matched with its real digest, the corrupted one one file.mismatch, nothing else."""
    recs = verdict_lines(env, {**dict.fromkeys(GOOD, "file.matched"), CORRUPT: "file.mismatch"})
    for rel in GOOD:
        rec, data = recs[rel], FILES[rel]
        assert (rec["path"], rec["size"], rec["commit"]) == (str(env.dir / rel), len(data), env.commit)
        want = sha256(data) if rec["algorithm"] == "sha256" else git_blob_sha1(data)
        assert rec["digest"] == want, rel
    rec = recs[CORRUPT]
    assert (rec["expected"], rec["actual"]) == (sha256(FILES[CORRUPT]), sha256(corrupted(FILES[CORRUPT])))
    assert rec["size"] == rec["expected_size"] == len(FILES[CORRUPT])
    # nothing at all for .hfd/: verdicts() lists every file.* line by path, file.unknown included
    env.assert_only({**{rel: ["file.matched"] for rel in GOOD}, CORRUPT: ["file.mismatch"]})
    assert {p.name for p in (env.dir / ".hfd").iterdir()} >= {"repo_metadata.json", "last_download_command"}


@dataclass
class Aria2Run:
    """What one aria2c run did: its exit code and output, how sparse each shard got, verdicts logged too early."""

    returncode: int
    output: bytes
    most_runs: dict[str, int]
    early: list[dict[str, Any]]


def run_aria2c(env: E2E, listing: Path, *, interrupt_when_sparse: bool = False) -> Aria2Run:
    """Run aria2c exactly as hfd does, from the download folder, watching the folder until aria2c exits.

    While a shard's control file is beside it, records how many runs of data the shard holds and any
    verdict for it logged while that control file still exists. `interrupt_when_sparse`: Ctrl-C
    (SIGINT, as a user stops hfd) once some shard is written at several offsets.
    """
    argv = [need("aria2c", "aria2"), "--file-allocation=none", "-x", "4", "-j", "5", "-s", "4", "-k", "1M", "-c",
            "-i", str(listing.relative_to(env.dir))]
    ino = Inotify(env.dir, extra=IN_MODIFY)
    proc = subprocess.Popen(argv, cwd=env.dir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    most_runs: dict[str, int] = {}
    early: list[dict[str, Any]] = []
    output = b""
    try:
        while True:  # until aria2c exits: EOF on its output
            ready, _, _ = select.select([ino.fd, proc.stdout], [], [], 30)
            assert ready, f"aria2c wrote nothing for 30 s: {output[-2000:]!r}"
            if proc.stdout in ready:
                chunk = os.read(proc.stdout.fileno(), 1 << 16)
                if not chunk:
                    break
                output += chunk
            ino.read()
            for rel in SHARDS:
                with contextlib.suppress(FileNotFoundError):
                    if (env.dir / f"{rel}.aria2").exists():
                        most_runs[rel] = max(most_runs.get(rel, 0), data_runs(env.dir / rel))
            early += [x for x in env.daemon.drain() if str(x.get("event")).startswith("file.")
                      and (env.dir / f"{x.get('rfilename')}.aria2").exists()]
            if interrupt_when_sparse and max(most_runs.values(), default=0) >= 2 and proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                interrupt_when_sparse = False
    finally:
        rc, out, _ = finish(proc)
        ino.close()
    return Aria2Run(rc, output + out, most_runs, early)


class TestHfdAria2c:
    def test_split_sparse_downloads_judged_once_each(self, hfd: E2E) -> None:
        """aria2c as hfd runs it: no verdict while any X.aria2 exists, then one verdict per file, none for .hfd/."""
        listing = write_lists(hfd, "aria2c")
        hfd.hub.rate = 3_000_000  # per connection: ~0.5-0.7 s a shard with four connections
        r = run_aria2c(hfd, listing)
        assert r.returncode == 0, r.output[-2000:]
        assert not r.early, r.early
        # several connections wrote one file at several offsets at once: a hole between runs of data
        # (aria2c's write cache may flush a shard whole, so not every shard shows it)
        assert max(r.most_runs.values(), default=0) >= 2, r.most_runs
        for rel in SHARDS:  # and every shard was fetched over several connections
            cdn_gets = [p for m, p in hfd.hub.requests if m == "GET" and p == f"/cdn/{sha256(FILES[rel])}"]
            assert len(cdn_gets) >= 2, (rel, len(cdn_gets))
        assert not list(hfd.dir.rglob("*.aria2"))
        check_verdicts(hfd)

    def test_interrupted_then_resumed(self, hfd: E2E) -> None:
        """hfd stopped mid-way leaves sparse shards and X.aria2 with no verdict; run again (-c), one verdict each."""
        listing = write_lists(hfd, "aria2c")
        hfd.hub.rate = 1_000_000  # ~1.5-2 s a shard: interrupted well before the end
        first = run_aria2c(hfd, listing, interrupt_when_sparse=True)
        assert first.returncode == 7, first.output[-2000:]  # aria2c: "unfinished downloads" after Ctrl-C
        left = sorted(p.name for p in hfd.dir.glob("*.aria2"))
        assert left, first.output[-2000:]
        # the interrupted shards are closed (their close events reached the daemon), yet not judged;
        # the sentinel's verdict comes after every event of the interrupted run
        lines = hfd.sentinel()
        stray = {x.get("rfilename") for x in lines if x.get("event") in ("file.incomplete", "file.mismatch",
                                                                          "file.matched", "file.unknown")}
        assert not stray & {name[: -len(".aria2")] for name in left}, (left, stray)
        assert not first.early, first.early

        hfd.hub.rate = 8_000_000
        second = run_aria2c(hfd, listing)
        assert second.returncode == 0, second.output[-2000:]
        assert not second.early, second.early
        assert not list(hfd.dir.rglob("*.aria2"))
        check_verdicts(hfd)


class TestHfdWget:
    def test_listed_downloads_judged_once_each(self, hfd: E2E) -> None:
        """wget as hfd runs it (-x -nH --cut-dirs=4 -c -i): one verdict per file in its folder, none for .hfd/."""
        wget = need("wget", "wget")
        listing = write_lists(hfd, "wget")
        hfd.hub.rate = 16_000_000  # the shards take a few writes each
        run([wget, "-x", "-nH", f"--cut-dirs={CUT_DIRS}", "-c", "-i", str(listing.relative_to(hfd.dir))],
            cwd=hfd.dir, timeout=120)
        for rel in WANTED:
            assert (hfd.dir / rel).stat().st_size == len(FILES[rel]), rel
        check_verdicts(hfd)
