"""The daemon's follow-ups: placement where huggingface_hub finds files offline, hooks, unsafe paths."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import DaemonProc, write_config
from fakehub import FakeHub

REPO = "org/tiny"
FILES = {
    "config.json": b'{"model_type": "bert"}\n',
    "model.safetensors": os.urandom(300_000),
    "tokenizer/vocab.txt": b"[PAD]\n[UNK]\n",
}

LOAD = """
import sys
from huggingface_hub import hf_hub_download, snapshot_download
cache, repo, rev = sys.argv[1:4]
for name in sys.argv[4:]:
    p = hf_hub_download(repo, name, revision=rev, cache_dir=cache, local_files_only=True)
    print(p)
print(snapshot_download(repo, revision=rev, cache_dir=cache, local_files_only=True))
"""


def placed_all(d: DaemonProc, n: int) -> dict[str, dict[str, object]]:
    """The next n file.placed lines, by rfilename, in whatever order the workers finished."""
    out: dict[str, dict[str, object]] = {}
    while len(out) < n:
        rec = d.wait_for("file.placed")
        out[str(rec["rfilename"])] = rec
    return out


def drop(folder: Path, name: str, data: bytes) -> None:
    with open(folder / name, "wb") as f:
        f.write(data)


class TestHfCache:
    def test_browser_downloads_load_offline(self, tmp_path: Path, fake_hub: FakeHub, daemon_factory) -> None:
        """Flat browser downloads, duplicate names included, end up in the HF cache and load with local_files_only."""
        commit = fake_hub.add_repo(REPO, FILES)
        dl, cache = tmp_path / "Downloads", tmp_path / "hub-cache"
        dl.mkdir()
        cfg = write_config(tmp_path / "c.toml", hub=fake_hub, state_dir=tmp_path / "state", rescan_interval="1h",
                           watches=[{"path": dl, "repos": [REPO], "place": "hf-cache", "place_dir": cache}])
        d: DaemonProc = daemon_factory(cfg)
        d.wait_for("scan.finished")
        drop(dl, "config (1).json", FILES["config.json"])
        drop(dl, "model.safetensors", FILES["model.safetensors"])
        drop(dl, "vocab.txt", FILES["tokenizer/vocab.txt"])
        for rec in placed_all(d, len(FILES)).values():
            assert rec["place"] == "hf-cache" and rec["mode"] == "link"
            assert rec["target"].startswith(str(cache))
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        r = subprocess.run([sys.executable, "-c", LOAD, str(cache), REPO, "main", *FILES], capture_output=True,
                           text=True, env=env, check=False)
        assert r.returncode == 0, r.stderr
        paths = r.stdout.split()
        for name, p in zip(FILES, paths, strict=False):
            assert Path(p).read_bytes() == FILES[name]
        assert paths[-1].endswith(commit)

    def test_move_keeps_the_verdict(self, tmp_path: Path, fake_hub: FakeHub, daemon_factory) -> None:
        """place_mode = "move" takes the file out of the folder, and status does not call it missing."""
        fake_hub.add_repo(REPO, FILES)
        dl, cache = tmp_path / "dl", tmp_path / "cache"
        dl.mkdir()
        cfg = write_config(tmp_path / "c.toml", hub=fake_hub, state_dir=tmp_path / "state", rescan_interval="1h",
                           watches=[{"path": dl, "repos": [REPO], "place": "hf-cache", "place_dir": cache,
                                     "place_mode": "move"}])
        d = daemon_factory(cfg)
        d.wait_for("scan.finished")
        drop(dl, "config.json", FILES["config.json"])
        rec = d.wait_for("file.placed", rfilename="config.json")
        assert rec["mode"] == "move"
        assert not (dl / "config.json").exists()
        d.stop()
        from conftest import run_cli

        r = run_cli("status", "--config", str(cfg), "--missing", "--json")
        import json

        todo = [t["rfilename"] for t in json.loads(r.stdout)[0]["repos"][0]["missing"]]
        assert "config.json" not in todo and "model.safetensors" in todo


TRANSFORMERS = """
import sys
from transformers import AutoConfig, AutoTokenizer
cache = sys.argv[1]
config = AutoConfig.from_pretrained("org/bert-tiny", cache_dir=cache, local_files_only=True)
tokenizer = AutoTokenizer.from_pretrained("org/bert-tiny", cache_dir=cache, local_files_only=True)
print(config.model_type, tokenizer("hello world")["input_ids"])
"""


def tiny_bert() -> dict[str, bytes]:
    """config.json and a WordLevel tokenizer, enough for transformers' Auto classes without torch."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "[PAD]": 1, "hello": 2, "world": 3}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    config = {"model_type": "bert", "hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 1,
              "intermediate_size": 16, "vocab_size": 4}
    return {
        "config.json": json.dumps(config).encode(),
        "tokenizer.json": tok.to_str().encode(),
        "tokenizer_config.json": json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "[UNK]",
                                             "pad_token": "[PAD]"}).encode(),
    }


class TestTransformers:
    def test_from_pretrained_offline(self, tmp_path: Path, fake_hub: FakeHub, daemon_factory) -> None:
        """Files downloaded by hand and placed by the daemon load with transformers' from_pretrained offline."""
        files = tiny_bert()
        fake_hub.add_repo("org/bert-tiny", files)
        dl, cache = tmp_path / "dl", tmp_path / "cache"
        dl.mkdir()
        cfg = write_config(tmp_path / "c.toml", hub=fake_hub, state_dir=tmp_path / "state", rescan_interval="1h",
                           watches=[{"path": dl, "repos": ["org/bert-tiny"], "place": "hf-cache",
                                     "place_dir": cache}])
        d = daemon_factory(cfg)
        d.wait_for("scan.finished")
        for name, data in files.items():
            drop(dl, name, data)
        assert set(placed_all(d, len(files))) == set(files)
        r = subprocess.run([sys.executable, "-c", TRANSFORMERS, str(cache)], capture_output=True, text=True,
                           env=dict(os.environ, HF_HUB_OFFLINE="1"), check=False)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split(None, 1) == ["bert", "[2, 3]\n"]


class TestLocalDir:
    def test_hf_download_finds_nothing_to_do(self, tmp_path: Path, fake_hub: FakeHub, daemon_factory) -> None:
        """After placement into a local dir, `hf download --local-dir` at the same commit downloads nothing."""
        fake_hub.add_repo(REPO, FILES)
        dl, local = tmp_path / "dl", tmp_path / "tiny"
        dl.mkdir()
        cfg = write_config(tmp_path / "c.toml", hub=fake_hub, state_dir=tmp_path / "state", rescan_interval="1h",
                           watches=[{"path": dl, "repos": [REPO], "place": "local-dir", "place_dir": local,
                                     "place_mode": "copy"}])
        d = daemon_factory(cfg)
        d.wait_for("scan.finished")
        for name, data in FILES.items():
            drop(dl, name.rsplit("/", 1)[-1], data)
        assert set(placed_all(d, len(FILES))) == set(FILES)
        before = len(fake_hub.requests)
        hf = Path(sys.executable).with_name("hf")
        r = subprocess.run([str(hf), "download", REPO, "--local-dir", str(local)], capture_output=True, text=True,
                           env=dict(os.environ, HF_ENDPOINT=fake_hub.url), check=False)
        assert r.returncode == 0, r.stderr
        fetched = [p for m, p in fake_hub.requests[before:] if m == "GET" and ("/resolve/" in p or "/cdn/" in p)]
        assert fetched == []
        assert (local / "tokenizer" / "vocab.txt").read_bytes() == FILES["tokenizer/vocab.txt"]


class TestUnsafe:
    def test_unsafe_manifest_paths_are_counted_and_never_placed(self, tmp_path: Path, fake_hub: FakeHub,
                                                               daemon_factory) -> None:
        """A Hub serving `../` paths: manifest.loaded counts them as unsafe and nothing lands outside place_dir."""
        evil = {"../escape.txt": b"evil bytes 1\n", "ok.json": b"{}\n"}
        fake_hub.add_repo("org/evil", evil)
        dl, local = tmp_path / "dl", tmp_path / "local"
        dl.mkdir()
        cfg = write_config(tmp_path / "c.toml", hub=fake_hub, state_dir=tmp_path / "state", rescan_interval="1h",
                           watches=[{"path": dl, "repos": ["org/evil"], "place": "local-dir", "place_dir": local}])
        d = daemon_factory(cfg)
        rec = d.wait_for("manifest.loaded", repo="org/evil")
        assert rec["unsafe"] == 1
        drop(dl, "escape.txt", evil["../escape.txt"])
        matched = d.wait_for("file.matched", rfilename="../escape.txt")
        assert matched["matched_by"] == "name"
        failed = d.wait_for("file.place_failed", rfilename="../escape.txt")
        assert "unsafe" in failed["error"] or "refus" in failed["error"]
        assert not (tmp_path / "escape.txt").exists()
        assert (dl / "escape.txt").exists()


class TestHooks:
    def test_on_matched_and_on_mismatch(self, tmp_path: Path, fake_hub: FakeHub, daemon_factory) -> None:
        """Hooks get the verdict in HFWATCHD_* variables; a failing hook is logged as hook.failed."""
        commit = fake_hub.add_repo(REPO, FILES)
        dl = tmp_path / "dl"
        dl.mkdir()
        out = tmp_path / "hook.env"
        hook = ["sh", "-c", f'env | grep ^HFWATCHD_ | sort > "{out}.tmp" && mv "{out}.tmp" "{out}"']
        cfg = write_config(tmp_path / "c.toml", hub=fake_hub, state_dir=tmp_path / "state", rescan_interval="1h",
                           on_matched=hook, on_mismatch=["sh", "-c", "exit 3"],
                           watches=[{"path": dl, "repos": [REPO]}])
        d = daemon_factory(cfg)
        d.wait_for("scan.finished")
        drop(dl, "config.json", FILES["config.json"].upper())
        rec = d.wait_for("hook.failed", hook="on_mismatch")
        assert rec["returncode"] == 3
        drop(dl, "config.json", FILES["config.json"])
        d.wait_for("file.matched", rfilename="config.json")
        d.stop()
        env = dict(line.split("=", 1) for line in out.read_text().splitlines())
        assert env["HFWATCHD_STATUS"] == "matched" and env["HFWATCHD_EVENT"] == "file.matched"
        assert env["HFWATCHD_PATH"] == str(dl / "config.json")
        assert env["HFWATCHD_REPO"] == REPO and env["HFWATCHD_RFILENAME"] == "config.json"
        assert env["HFWATCHD_COMMIT"] == commit and env["HFWATCHD_SIZE"] == str(len(FILES["config.json"]))
        assert env["HFWATCHD_EXPECTED"] == env["HFWATCHD_ACTUAL"]
