"""`hfwatchd status` from the state store, and `hfwatchd manifest` in the seed script's exact format."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import run_cli, write_config
from fakehub import FakeHub

REPO = "datasets/org/data"
FILES = {
    "README.md": b"# data\n",
    "data/train-00000-of-00002.parquet": os.urandom(40_000),
    "data/train-00001-of-00002.parquet": os.urandom(40_001),
    "data/test 1.parquet": os.urandom(20_000),
}


def setup(tmp_path: Path, hub: FakeHub, **watch: object) -> tuple[Path, Path, str]:
    commit = hub.add_repo("org/data", FILES, repo_type="dataset")
    dl = tmp_path / "dl"
    dl.mkdir()
    (dl / "train-00000-of-00002.parquet").write_bytes(FILES["data/train-00000-of-00002.parquet"])
    (dl / "README.md").write_bytes(b"# DATA\n")
    cfg = write_config(tmp_path / "c.toml", hub=hub, watches=[{"path": dl, "repos": [REPO], **watch}],
                       state_dir=tmp_path / "state")
    return cfg, dl, commit


class TestStatus:
    def test_counts_after_check(self, tmp_path: Path, fake_hub: FakeHub) -> None:
        """status reports per watch and repo what check recorded, without the Hub."""
        cfg, _dl, commit = setup(tmp_path, fake_hub)
        assert run_cli("check", "--config", str(cfg)).returncode == 1
        fake_hub.stop()
        r = run_cli("status", "--config", str(cfg), "--json")
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        repo = doc[0]["repos"][0]
        assert repo["commit"] == commit
        assert repo["counts"]["matched"] == 1 and repo["counts"]["mismatch"] == 1 and repo["counts"]["missing"] == 2
        assert repo["expected"] == 4

    def test_missing_urls_are_pinned(self, tmp_path: Path, fake_hub: FakeHub) -> None:
        """--missing --urls prints one pinned resolve URL per file still to download, ready for wget -i."""
        cfg, _dl, commit = setup(tmp_path, fake_hub)
        run_cli("check", "--config", str(cfg))
        r = run_cli("status", "--config", str(cfg), "--missing", "--urls")
        urls = r.stdout.split()
        base = f"{fake_hub.url}/datasets/org/data/resolve/{commit}/"
        assert sorted(urls) == sorted([base + "README.md", base + "data/train-00001-of-00002.parquet",
                                       base + "data/test%201.parquet"])
        got = subprocess.run(["curl", "-sSfL", urls[0]], capture_output=True, check=True).stdout
        assert got in FILES.values()

    def test_include_exclude_limit_what_is_expected(self, tmp_path: Path, fake_hub: FakeHub) -> None:
        """include / exclude decide which files are listed as missing."""
        cfg, _dl, _ = setup(tmp_path, fake_hub, include=["*.parquet"], exclude=["*test*"])
        run_cli("check", "--config", str(cfg))
        r = run_cli("status", "--config", str(cfg), "--missing", "--json")
        todo = json.loads(r.stdout)[0]["repos"][0]["missing"]
        assert [t["rfilename"] for t in todo] == ["data/train-00001-of-00002.parquet"]

    def test_status_before_any_run(self, tmp_path: Path, fake_hub: FakeHub) -> None:
        """Before any check or daemon run, --missing --urls lists every expected file, not nothing."""
        cfg, _dl, commit = setup(tmp_path, fake_hub)
        r = run_cli("status", "--config", str(cfg), "--missing", "--urls")
        assert r.returncode == 0, r.stderr
        assert len(r.stdout.split()) == len(FILES)
        assert all(f"/resolve/{commit}/" in u for u in r.stdout.split())

    def test_status_with_hub_down_and_nothing_cached(self, tmp_path: Path, fake_hub: FakeHub) -> None:
        """With no state, no cache and no Hub, status says why it cannot list anything."""
        cfg, _dl, _ = setup(tmp_path, fake_hub)
        fake_hub.stop()
        r = run_cli("status", "--config", str(cfg))
        assert r.returncode == 0
        assert "no manifest" in r.stdout


GET_HASH = """
import json, sys
from huggingface_hub import dataset_info
info = dataset_info(sys.argv[1], revision="main", files_metadata=True)
sha256_info = {}
for file_info in info.siblings:
    filename = file_info.rfilename
    if file_info.lfs:
        sha256_info[filename] = file_info.lfs['sha256']
with open(sys.argv[2], "w") as fw:
    json.dump(sha256_info, fw, ensure_ascii=False, indent=4)
"""


class TestManifestCommand:
    def test_seed_export_is_byte_identical_to_get_hash(self, tmp_path: Path, fake_hub: FakeHub) -> None:
        """`manifest --format seed --export` writes exactly what the seed get_hash.py writes."""
        fake_hub.add_repo("org/data", {**FILES, "données/é.parquet": os.urandom(5000)}, repo_type="dataset")
        ours, theirs = tmp_path / "ours.json", tmp_path / "theirs.json"
        env = dict(os.environ, HF_ENDPOINT=fake_hub.url)
        subprocess.run([sys.executable, "-c", GET_HASH, "org/data", str(theirs)], env=env, check=True)
        r = run_cli("manifest", REPO, "--format", "seed", "--export", str(ours), hub=fake_hub)
        assert r.returncode == 0, r.stderr
        assert ours.read_bytes() == theirs.read_bytes()

    def test_seed_file_verifies_offline(self, tmp_path: Path, fake_hub: FakeHub) -> None:
        """A seed JSON given as `manifest =` verifies LFS files with no Hub at all."""
        seed = tmp_path / "seed.json"
        fake_hub.add_repo("org/data", FILES, repo_type="dataset")
        run_cli("manifest", REPO, "--format", "seed", "--export", str(seed), hub=fake_hub)
        fake_hub.stop()
        dl = tmp_path / "dl"
        dl.mkdir()
        (dl / "train-00000-of-00002.parquet").write_bytes(FILES["data/train-00000-of-00002.parquet"])
        cfg = write_config(tmp_path / "c.toml", hub=None,
                           watches=[{"path": dl, "repos": [{"repo": REPO, "manifest": str(seed)}]}],
                           state_dir=tmp_path / "state", hub_table={"endpoint": "http://127.0.0.1:9"})
        r = run_cli("check", "--config", str(cfg), "--json")
        recs = [json.loads(x) for x in r.stdout.splitlines()]
        assert any(x["status"] == "matched" and x["rfilename"] == "data/train-00000-of-00002.parquet" for x in recs)
        assert r.returncode == 2  # the other LFS files of the seed are missing

    def test_full_format_lists_every_file(self, fake_hub: FakeHub) -> None:
        """The full format has every file with size, sha256 (LFS) and git blob sha1."""
        commit = fake_hub.add_repo("org/data", FILES, repo_type="dataset")
        r = run_cli("manifest", REPO, hub=fake_hub)
        doc = json.loads(r.stdout)
        assert doc["commit"] == commit
        assert set(doc["files"]) == set(FILES)
        assert doc["files"]["README.md"]["sha256"] is None and len(doc["files"]["README.md"]["blob_id"]) == 40

    def test_malformed_manifest_file(self, tmp_path: Path) -> None:
        """A malformed manifest file is a clear error, not a traceback."""
        bad = tmp_path / "bad.json"
        bad.write_text('{"x": 1}')
        dl = tmp_path / "dl"
        dl.mkdir()
        cfg = write_config(tmp_path / "c.toml", hub=None,
                           watches=[{"path": dl, "repos": [{"repo": "o/n", "manifest": str(bad)}]}],
                           state_dir=tmp_path / "state")
        r = run_cli("check", "--config", str(cfg))
        assert r.returncode == 78
        assert "bad.json" in r.stderr and "Traceback" not in r.stderr
