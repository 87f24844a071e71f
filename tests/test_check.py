"""`hfwatchd check`: the real huggingface_hub client against the fake Hub, real files, exit codes."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli_env, run_cli, write_config
from fakehub import FakeHub

REPO = "org/model"


def files() -> dict[str, bytes]:
    return {
        "config.json": b'{"architectures": ["Bert"]}\n',
        "tokenizer.json": b'{"vocab": {"a": 1}}\n',
        "model.safetensors": os.urandom(2_000_000),
        "data/train-00000-of-00002.parquet": os.urandom(300_000),
        "data/train-00001-of-00002.parquet": os.urandom(300_001),
        "README.md": b"# model\n",
    }


@pytest.fixture
def repo(fake_hub: FakeHub) -> dict[str, bytes]:
    content = files()
    fake_hub.add_repo(REPO, content)
    return content


def put(folder: Path, rel: str, data: bytes) -> Path:
    p = folder / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def records(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


class TestVerdicts:
    def test_all_matched_exits_0(self, tmp_path: Path, fake_hub: FakeHub, repo: dict[str, bytes]) -> None:
        """Every file present with the right bytes: all matched, exit 0."""
        dl = tmp_path / "dl"
        for rel, data in repo.items():
            put(dl, rel, data)
        r = run_cli("check", REPO, str(dl), "--json", hub=fake_hub)
        assert r.returncode == 0, r.stderr
        recs = records(r.stdout)
        assert {x["status"] for x in recs} == {"matched"}
        assert len(recs) == len(repo)
        by = {x["rfilename"]: x for x in recs}
        assert by["model.safetensors"]["algorithm"] == "sha256"
        assert by["config.json"]["algorithm"] == "git-sha1"
        assert by["config.json"]["actual"] == by["config.json"]["expected"]

    @pytest.mark.pyversions
    def test_every_status_and_exit_1(self, tmp_path: Path, fake_hub: FakeHub, repo: dict[str, bytes]) -> None:
        """matched, mismatch, incomplete, missing and unknown are each reported; a mismatch means exit 1."""
        dl = tmp_path / "dl"
        put(dl, "config.json", repo["config.json"])
        put(dl, "model (1).safetensors", repo["model.safetensors"])  # browser duplicate name
        put(dl, "train-00000-of-00002.parquet", repo["data/train-00000-of-00002.parquet"][:1000])  # flat, short
        put(dl, "README.md", b"# modeL\n")  # same size, wrong bytes
        put(dl, "notes.txt", b"mine")
        r = run_cli("check", REPO, str(dl), "--json", hub=fake_hub)
        assert r.returncode == 1, r.stderr
        st = {(x["rfilename"] or Path(str(x["path"])).name): x["status"] for x in records(r.stdout)}
        assert st == {
            "config.json": "matched",
            "model.safetensors": "matched",
            "data/train-00000-of-00002.parquet": "incomplete",
            "README.md": "mismatch",
            "notes.txt": "unknown",
            "tokenizer.json": "missing",
            "data/train-00001-of-00002.parquet": "missing",
        }

    def test_missing_only_exits_2(self, tmp_path: Path, fake_hub: FakeHub, repo: dict[str, bytes]) -> None:
        """No mismatch but files missing: exit 2, and the human output names them."""
        dl = tmp_path / "dl"
        put(dl, "config.json", repo["config.json"])
        r = run_cli("check", REPO, str(dl), hub=fake_hub)
        assert r.returncode == 2
        assert "missing" in r.stdout and "tokenizer.json" in r.stdout

    def test_renamed_file_found_by_content(self, tmp_path: Path, fake_hub: FakeHub, repo: dict[str, bytes]) -> None:
        """A file saved under an unrelated name is recognised by size and hash."""
        dl = tmp_path / "dl"
        put(dl, "download", repo["model.safetensors"])
        r = run_cli("check", REPO, str(dl), "--json", hub=fake_hub)
        rec = next(x for x in records(r.stdout) if x["path"])
        assert (rec["status"], rec["rfilename"]) == ("matched", "model.safetensors")

    def test_aria2_control_file_means_incomplete(self, tmp_path: Path, fake_hub: FakeHub,
                                                  repo: dict[str, bytes]) -> None:
        """A full-size file with an .aria2 control file beside it is incomplete, not matched."""
        dl = tmp_path / "dl"
        put(dl, "model.safetensors", repo["model.safetensors"])
        put(dl, "model.safetensors.aria2", b"ctl")
        r = run_cli("check", REPO, str(dl), "--json", hub=fake_hub)
        rec = next(x for x in records(r.stdout) if x["rfilename"] == "model.safetensors")
        assert rec["status"] == "incomplete"


class TestSecondRun:
    def test_unchanged_folder_hashes_nothing(self, tmp_path: Path, fake_hub: FakeHub, repo: dict[str, bytes]) -> None:
        """A second check over an unchanged folder reuses stat signatures and hashes nothing."""
        dl = tmp_path / "dl"
        for rel, data in repo.items():
            put(dl, rel, data)
        first = run_cli("check", REPO, str(dl), hub=fake_hub)
        assert "hashed 6 files" in first.stdout
        second = run_cli("check", REPO, str(dl), hub=fake_hub)
        assert second.returncode == 0
        assert "hashed 0 files" in second.stdout
        assert "6 matched" in second.stdout

    def test_replaced_file_is_judged_again(self, tmp_path: Path, fake_hub: FakeHub, repo: dict[str, bytes]) -> None:
        """A file replaced after its verdict is hashed and judged again."""
        dl = tmp_path / "dl"
        p = put(dl, "config.json", repo["config.json"])
        run_cli("check", REPO, str(dl), hub=fake_hub)
        p.write_bytes(repo["config.json"].upper())
        r = run_cli("check", REPO, str(dl), "--json", hub=fake_hub)
        rec = next(x for x in records(r.stdout) if x["rfilename"] == "config.json")
        assert rec["status"] == "mismatch"

    def test_cached_manifest_when_hub_is_down(self, tmp_path: Path, fake_hub: FakeHub,
                                              repo: dict[str, bytes]) -> None:
        """With the Hub unreachable, the cached manifest still answers."""
        dl = tmp_path / "dl"
        put(dl, "config.json", repo["config.json"])
        run_cli("check", REPO, str(dl), hub=fake_hub)
        url = fake_hub.url
        fake_hub.stop()
        env = cli_env(HF_ENDPOINT=url)
        cfg = write_config(tmp_path / "c.toml", hub=None, watches=[{"path": dl, "repos": [REPO]}],
                           state_dir=Path(os.environ["XDG_STATE_HOME"]) / "hfwatchd",
                           hub_table={"endpoint": url, "manifest_ttl": "1ms", "timeout": "2s"})
        r = run_cli("check", "--config", str(cfg), env=env)
        assert r.returncode == 2, r.stderr
        assert "manifest.failed" in r.stderr and "config.json" in r.stdout


class TestHubErrors:
    def test_unreachable_without_cache_exits_69(self, tmp_path: Path) -> None:
        """Nothing listening and nothing cached: exit 69 with a clear line, no traceback."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        dl = tmp_path / "dl"
        dl.mkdir()
        r = run_cli("check", REPO, str(dl), env=cli_env(HF_ENDPOINT=f"http://127.0.0.1:{port}"))
        assert r.returncode == 69
        assert "cannot reach" in r.stderr and "Traceback" not in r.stderr

    def test_hanging_hub_times_out(self, tmp_path: Path, fake_hub: FakeHub, repo: dict[str, bytes]) -> None:
        """A Hub that never answers is given up on after hub.timeout: exit 69."""
        fake_hub.hang(30, times=5)
        dl = tmp_path / "dl"
        dl.mkdir()
        cfg = write_config(tmp_path / "c.toml", hub=fake_hub, watches=[{"path": dl, "repos": [REPO]}],
                           hub_table={"timeout": "1s"})
        r = run_cli("check", "--config", str(cfg), timeout=20)
        assert r.returncode == 69
        assert "no answer within 1s" in r.stderr

    @pytest.mark.parametrize(("status", "retry_after", "words"), [(429, 7, "rate limited"), (503, None, "503")])
    def test_busy_hub_exits_69(self, tmp_path: Path, fake_hub: FakeHub, repo: dict[str, bytes], status: int,
                               retry_after: int | None, words: str) -> None:
        """429 and 5xx are not retried for minutes inside huggingface_hub: check says so and exits 69."""
        fake_hub.fail(status, times=10, retry_after=retry_after)
        dl = tmp_path / "dl"
        dl.mkdir()
        r = run_cli("check", REPO, str(dl), hub=fake_hub, timeout=20)
        assert r.returncode == 69
        assert words in r.stderr
        if retry_after:
            assert '"retry_in": 7' in r.stderr

    def test_no_such_repo(self, tmp_path: Path, fake_hub: FakeHub) -> None:
        """A repo that does not exist is named, with a hint about tokens; usage error 64."""
        dl = tmp_path / "dl"
        dl.mkdir()
        r = run_cli("check", "org/nope", str(dl), hub=fake_hub)
        assert r.returncode == 64
        assert "no such model repo" in r.stderr and "HF_TOKEN" in r.stderr

    def test_no_such_revision(self, tmp_path: Path, fake_hub: FakeHub, repo: dict[str, bytes]) -> None:
        """A revision that does not exist is named."""
        dl = tmp_path / "dl"
        dl.mkdir()
        r = run_cli("check", f"{REPO}@v9", str(dl), hub=fake_hub)
        assert r.returncode == 64
        assert "no revision 'v9'" in r.stderr

    def test_gated_repo_without_token(self, tmp_path: Path, fake_hub: FakeHub) -> None:
        """A gated repo asks for its conditions to be accepted and a token."""
        fake_hub.add_repo("org/gated", {"a.json": b"{}"}, gated=True)
        fake_hub.gated_api = True
        dl = tmp_path / "dl"
        dl.mkdir()
        r = run_cli("check", "org/gated", str(dl), hub=fake_hub)
        assert r.returncode == 64
        assert "gated" in r.stderr

    def test_token_is_used_and_never_written(self, tmp_path: Path, fake_hub: FakeHub) -> None:
        """A private repo is read with the token from token_file; the token appears in no output or state file."""
        token = "hf_secretSECRETsecret123"
        fake_hub.add_repo("org/private", {"a.json": b"{}"}, private=True)
        dl = tmp_path / "dl"
        put(dl, "a.json", b"{}")
        tf = tmp_path / "token"
        tf.write_text(token + "\n")
        state = tmp_path / "state"
        cfg = write_config(tmp_path / "c.toml", hub=fake_hub, watches=[{"path": dl, "repos": ["org/private"]}],
                           state_dir=state, log_file=state / "events.jsonl", hub_table={"token_file": tf})
        r = run_cli("check", "--config", str(cfg))
        assert r.returncode == 0, r.stderr
        assert token not in r.stdout + r.stderr
        for p in state.rglob("*"):
            if p.is_file():
                assert token.encode() not in p.read_bytes(), p


class TestBadInput:
    def test_folder_does_not_exist(self, tmp_path: Path) -> None:
        """A DIR that does not exist is a usage error."""
        r = run_cli("check", REPO, str(tmp_path / "nope"))
        assert r.returncode == 64
        assert "no such folder" in r.stderr

    @pytest.mark.parametrize("spec", ["not a repo", "datasets/", "a/b/c/d"])
    def test_malformed_repo(self, tmp_path: Path, spec: str) -> None:
        """A malformed REPO is a usage error naming it."""
        r = run_cli("check", spec, str(tmp_path))
        assert r.returncode == 64
        assert "Traceback" not in r.stderr

    def test_repo_without_dir(self) -> None:
        """REPO without DIR is a usage error."""
        assert run_cli("check", REPO).returncode == 64

    def test_unknown_flag(self) -> None:
        """An unknown flag is exit 64, not argparse's 2."""
        assert run_cli("check", "--frobnicate").returncode == 64

    def test_special_files_and_odd_names(self, tmp_path: Path, fake_hub: FakeHub, repo: dict[str, bytes]) -> None:
        """FIFOs, sockets, symlinks and odd names never hang or crash the check."""
        dl = tmp_path / "dl"
        dl.mkdir()
        os.mkfifo(dl / "fifo")
        (dl / "zero").symlink_to("/dev/zero")
        (dl / "loop").symlink_to(dl / "loop")
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(dl / "sock"))
        try:
            put(dl, "with space ünïcode.json", b"{}")
            put(dl, "new\nline.txt", b"x")
            (dl / os.fsdecode(b"bad-\xff-utf8")).write_bytes(b"y")
            unreadable = put(dl, "config.json", repo["config.json"])
            put(dl, "tokenizer.json", repo["tokenizer.json"])
            unreadable.chmod(0)
            r = run_cli("check", REPO, str(dl), "--json", hub=fake_hub, timeout=30)
        finally:
            sock.close()
        assert r.returncode in (1, 2), r.stderr
        assert "Traceback" not in r.stderr
        recs = records(r.stdout)
        names = {Path(str(x["path"])).name for x in recs if x["path"]}
        assert {"fifo", "zero", "loop", "sock"}.isdisjoint(names)
        assert "new\nline.txt" in names
        assert any(x["rfilename"] == "tokenizer.json" and x["status"] == "matched" for x in recs)
        human = subprocess.run([sys.executable, "-m", "hfwatchd", "check", REPO, str(dl)], capture_output=True,
                               env=cli_env(fake_hub), timeout=30, check=False)
        assert human.returncode in (1, 2) and b"Traceback" not in human.stderr
        assert b"new\\nline.txt" in human.stdout  # one line per file, the newline escaped
        assert b"bad-\xff-utf8" in human.stdout  # printed as its own bytes, as ls does


class TestState:
    def test_state_dir_is_private_and_wal(self, tmp_path: Path, fake_hub: FakeHub, repo: dict[str, bytes]) -> None:
        """The state directory is mode 0700 and the database runs in WAL mode."""
        dl = tmp_path / "dl"
        put(dl, "config.json", repo["config.json"])
        run_cli("check", REPO, str(dl), hub=fake_hub)
        state = Path(os.environ["XDG_STATE_HOME"]) / "hfwatchd"
        assert state.stat().st_mode & 0o777 == 0o700
        db = sqlite3.connect(state / "state.sqlite3")
        try:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            row = db.execute("SELECT status, repo, rfilename, commit_sha, digest FROM files").fetchone()
        finally:
            db.close()
        assert row[:3] == ("matched", REPO, "config.json")
        assert len(row[3]) == 40 and len(row[4]) == 40
