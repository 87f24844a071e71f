"""The repair loop for real: status --missing --aria2 / --wget, the real downloader, then check says matched."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import run_cli, write_config
from fakehub import FakeHub

REPO = "datasets/org/shards"


def content() -> dict[str, bytes]:
    return {
        "README.md": b"# shards\n",
        "data/train-00000-of-00003.parquet": os.urandom(3_000_000),
        "data/train-00001-of-00003.parquet": os.urandom(2_500_000),
        "data/train-00002-of-00003.parquet": os.urandom(2_000_000),
        "meta/info.json": b'{"rows": 3}\n',
    }


@pytest.fixture
def setup(tmp_path: Path, fake_hub: FakeHub) -> tuple[Path, Path, dict[str, bytes]]:
    """A watched folder with one good shard, one corrupt, one cut short, and the rest missing; checked once."""
    files = content()
    fake_hub.add_repo("org/shards", files, repo_type="dataset")
    dl = tmp_path / "dl"
    (dl / "data").mkdir(parents=True)
    (dl / "data/train-00000-of-00003.parquet").write_bytes(files["data/train-00000-of-00003.parquet"])
    bad = bytearray(files["data/train-00001-of-00003.parquet"])
    bad[100] ^= 0xFF
    (dl / "data/train-00001-of-00003.parquet").write_bytes(bytes(bad))
    (dl / "data/train-00002-of-00003.parquet").write_bytes(files["data/train-00002-of-00003.parquet"][:700_000])
    cfg = write_config(tmp_path / "config.toml", hub=fake_hub, watches=[{"path": str(dl), "repos": [REPO]}],
                       state_dir=str(tmp_path / "state"))
    r = run_cli("check", "--config", str(cfg), "--json", "--no-progress", hub=fake_hub)
    assert r.returncode == 1, r.stderr
    got = {json.loads(x)["rfilename"]: json.loads(x)["status"] for x in r.stdout.splitlines()}
    assert got == {"README.md": "missing", "meta/info.json": "missing",
                   "data/train-00000-of-00003.parquet": "matched", "data/train-00001-of-00003.parquet": "mismatch",
                   "data/train-00002-of-00003.parquet": "incomplete"}
    return dl, cfg, files


def all_matched(cfg: Path, hub: FakeHub, dl: Path, files: dict[str, bytes]) -> None:
    r = run_cli("check", "--config", str(cfg), "--json", "--no-progress", hub=hub)
    recs = [json.loads(x) for x in r.stdout.splitlines()]
    assert r.returncode == 0, r.stdout + r.stderr
    assert {x["rfilename"] for x in recs if x["status"] == "matched"} == set(files)
    for rel, data in files.items():
        assert (dl / rel).read_bytes() == data


class TestAria2Loop:
    def test_repair_list_downloads_and_verifies_what_is_left(self, setup: tuple[Path, Path, dict[str, bytes]],
                                                              fake_hub: FakeHub, tmp_path: Path) -> None:
        """aria2c -i on the list replaces the bad shard, resumes the short one, fetches the missing: all matched."""
        aria2c = shutil.which("aria2c")
        if aria2c is None:
            pytest.skip("aria2c is not installed (Debian: apt-get install aria2)")
        dl, cfg, files = setup
        todo = tmp_path / "todo.aria2"
        r = run_cli("status", "--config", str(cfg), "--missing", "--aria2", "--output", str(todo), hub=fake_hub)
        assert r.returncode == 0, r.stderr
        text = todo.read_text()
        assert text.count("\n  out=") == 4 and "checksum=sha-256=" in text
        assert "4 file(s) to download" in r.stderr
        run = subprocess.run([aria2c, "-i", str(todo), "-x", "4", "-s", "4", "-c", "--console-log-level=warn",
                              "--summary-interval=0"], capture_output=True, text=True, timeout=120, check=False)
        assert run.returncode == 0, run.stdout + run.stderr
        all_matched(cfg, fake_hub, dl, files)

    def test_nothing_left_gives_an_empty_list(self, tmp_path: Path, fake_hub: FakeHub) -> None:
        """With every file matched, the list holds no download, only its header comments."""
        files = content()
        fake_hub.add_repo("org/shards", files, repo_type="dataset")
        dl = tmp_path / "dl"
        for rel, data in files.items():
            (dl / rel).parent.mkdir(parents=True, exist_ok=True)
            (dl / rel).write_bytes(data)
        cfg = write_config(tmp_path / "c.toml", hub=fake_hub, watches=[{"path": str(dl), "repos": [REPO]}],
                           state_dir=str(tmp_path / "state"))
        assert run_cli("check", "--config", str(cfg), "--no-progress", hub=fake_hub).returncode == 0
        r = run_cli("status", "--config", str(cfg), "--missing", "--aria2", hub=fake_hub)
        assert r.returncode == 0 and all(line.startswith("#") for line in r.stdout.splitlines())


class TestWgetLoop:
    def test_wget_list_downloads_to_the_repo_paths(self, setup: tuple[Path, Path, dict[str, bytes]],
                                                   fake_hub: FakeHub, tmp_path: Path) -> None:
        """The printed wget command on the list puts the missing files at their repo paths: they match."""
        wget = shutil.which("wget")
        if wget is None:
            pytest.skip("wget is not installed")
        dl, cfg, files = setup
        lst = tmp_path / "todo.txt"
        r = run_cli("status", "--config", str(cfg), "--missing", "--wget", "--output", str(lst), hub=fake_hub)
        assert r.returncode == 0, r.stderr
        command = next(line for line in r.stderr.splitlines() if line.startswith("run: wget"))
        argv = command.removeprefix("run: ").split()
        assert argv[:5] == ["wget", "-x", "-nH", "--cut-dirs=5", "-c"]
        # wget -c would keep a full-size wrong file: the list says to remove it first, and the user does
        bad = dl / "data/train-00001-of-00003.parquet"
        assert f"remove first: {bad}" in r.stderr
        bad.unlink()
        run = subprocess.run([wget, "-q", *argv[1:]], capture_output=True, text=True, timeout=120, check=False)
        assert run.returncode == 0, run.stderr
        all_matched(cfg, fake_hub, dl, files)


class TestListOptions:
    def test_two_lists_at_once_refused(self, setup: tuple[Path, Path, dict[str, bytes]], fake_hub: FakeHub) -> None:
        """Asking for --aria2 and --wget together is a usage error, not a silent choice."""
        _, cfg, _ = setup
        r = run_cli("status", "--config", str(cfg), "--aria2", "--wget", hub=fake_hub)
        assert r.returncode == 64 and "choose one" in r.stderr

    def test_token_never_written(self, setup: tuple[Path, Path, dict[str, bytes]], fake_hub: FakeHub,
                                 tmp_path: Path) -> None:
        """The Hub token in the environment never reaches the list; a comment says how to pass it."""
        from conftest import cli_env

        _, cfg, _ = setup
        secret = "hf_" + "S3cr3tT0k3n" * 3
        r = run_cli("status", "--config", str(cfg), "--missing", "--aria2", env=cli_env(fake_hub, HF_TOKEN=secret))
        assert r.returncode == 0 and secret not in r.stdout and secret not in r.stderr
        assert "Authorization: Bearer $HF_TOKEN" in r.stdout


class TestPerFileStatus:
    def test_status_json_carries_every_files_record(self, setup: tuple[Path, Path, dict[str, bytes]],
                                                    fake_hub: FakeHub) -> None:
        """status --json lists, per repo, each file's record from the store: status, how, when, and its URL."""
        dl, cfg, _ = setup
        r = run_cli("status", "--config", str(cfg), "--json", hub=fake_hub)
        assert r.returncode == 0, r.stderr
        repo = json.loads(r.stdout)[0]["repos"][0]
        files = {f["rfilename"]: f for f in repo["files"]}
        good = files["data/train-00000-of-00003.parquet"]
        assert good["status"] == "matched" and good["matched_by"] == "path" and "url" not in good
        assert good["path"] == str(dl / "data/train-00000-of-00003.parquet")
        assert good["judged_at"].endswith("Z") and good["algorithm"] == "sha256" and good["digest"] == good["expected"]
        bad = files["data/train-00001-of-00003.parquet"]
        assert bad["status"] == "mismatch" and bad["digest"] != bad["expected"]
        pinned = f"/datasets/org/shards/resolve/{repo['commit']}/data/train-00001-of-00003.parquet"
        assert bad["url"].endswith(pinned)
        missing = files["meta/info.json"]
        assert missing["status"] == "missing" and "path" not in missing and missing["algorithm"] == "git-sha1"
        assert repo["counts"]["matched"] == 1 and repo["expected"] == 5
        assert repo["bytes_expected"] == sum(len(v) for v in content().values())
        assert repo["bytes_matched"] == 3_000_000

    def test_status_files_table(self, setup: tuple[Path, Path, dict[str, bytes]], fake_hub: FakeHub) -> None:
        """status --files prints one readable row per file and per missing entry."""
        _, cfg, _ = setup
        r = run_cli("status", "--config", str(cfg), "--files", hub=fake_hub)
        assert r.returncode == 0, r.stderr
        rows = [line.split() for line in r.stdout.splitlines() if not line.startswith(("#", "STATUS"))]
        assert sorted(x[0] for x in rows) == ["incomplete", "matched", "mismatch", "missing", "missing"]
        matched = next(line for line in r.stdout.splitlines() if line.startswith("matched"))
        assert " path " in matched and "data/train-00000-of-00003.parquet" in matched

    def test_escape_sequences_in_names_never_reach_the_terminal(self, setup: tuple[Path, Path, dict[str, bytes]],
                                                                fake_hub: FakeHub) -> None:
        """A local name holding ESC (a terminal escape) is printed escaped by check and status --files."""
        dl, cfg, _ = setup
        (dl / "ev\x1b[31mil.bin").write_bytes(b"nothing of the repo")
        r = run_cli("check", "--config", str(cfg), "--no-progress", hub=fake_hub)
        assert "\x1b" not in r.stdout and "ev\\x1b[31mil.bin" in r.stdout
        r = run_cli("status", "--config", str(cfg), "--files", hub=fake_hub)
        assert r.returncode == 0 and "\x1b" not in r.stdout and "ev\\x1b[31mil.bin" in r.stdout


class TestWithoutConfig:
    def test_status_reads_what_a_config_less_run_watched(self, tmp_path: Path, fake_hub: FakeHub) -> None:
        """After `check REPO DIR` (or `watch REPO DIR`) with no config file, status answers from that store."""
        files = content()
        fake_hub.add_repo("org/shards", files, repo_type="dataset")
        dl = tmp_path / "dl"
        dl.mkdir()
        (dl / "README.md").write_bytes(files["README.md"])
        state = tmp_path / "state"
        r = run_cli("check", REPO, str(dl), "--state-dir", str(state), "--no-progress", hub=fake_hub)
        assert r.returncode == 2, r.stderr
        r = run_cli("status", "--state-dir", str(state), "--json", hub=fake_hub)
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc[0]["path"] == str(dl) and doc[0]["repos"][0]["repo"] == REPO
        assert doc[0]["repos"][0]["counts"]["matched"] == 1 and doc[0]["repos"][0]["counts"]["missing"] == 4

    def test_nothing_to_read_is_a_usage_error(self, tmp_path: Path) -> None:
        """With no config file and an empty state directory, status says what to pass, exit 64."""
        r = run_cli("status", "--state-dir", str(tmp_path / "none"))
        assert r.returncode == 64 and "--config FILE" in r.stderr
