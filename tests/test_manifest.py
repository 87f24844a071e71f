"""The pure rules: repo specs, duplicate names, the index and the verdicts."""

from __future__ import annotations

import hashlib
import json

import pytest

from hfwatchd.hashing import GIT_SHA1, SHA256
from hfwatchd.manifest import (
    Index,
    Manifest,
    ManifestEntry,
    RepoRef,
    SpecError,
    decide,
    is_safe_path,
    load_manifest_text,
    original_names,
)


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def manifest(repo: str, files: dict[str, bytes], lfs: tuple[str, ...] = ()) -> Manifest:
    ref = RepoRef.parse(repo)
    entries = {}
    for path, data in files.items():
        sha = hashlib.sha256(data).hexdigest() if path in lfs else None
        entries[path] = ManifestEntry(path, len(data), sha, git_sha1(data) if path not in lfs else "0" * 40)
    return Manifest(ref, "c" * 40, entries)


def digests_of(data: bytes) -> dict[str, str]:
    return {SHA256: hashlib.sha256(data).hexdigest(), GIT_SHA1: git_sha1(data)}


class TestRepoRef:
    @pytest.mark.parametrize(
        ("spec", "kind", "repo_id", "rev"),
        [
            ("google-bert/bert-base-uncased", "model", "google-bert/bert-base-uncased", "main"),
            ("gpt2", "model", "gpt2", "main"),
            ("datasets/Skywork/SkyPile-150B@main", "dataset", "Skywork/SkyPile-150B", "main"),
            ("spaces/org/demo@v1.0", "space", "org/demo", "v1.0"),
            ("org/name@refs/pr/1", "model", "org/name", "refs/pr/1"),
            ("models/org/name", "model", "org/name", "main"),
        ],
    )
    def test_parses_hf_paths(self, spec: str, kind: str, repo_id: str, rev: str) -> None:
        """A repo spec is read the way huggingface_hub's hf:// paths write it."""
        ref = RepoRef.parse(spec)
        assert (ref.repo_type, ref.repo_id, ref.revision) == (kind, repo_id, rev)

    @pytest.mark.parametrize(
        "spec",
        ["", "datasets/", "datasets/name", "a/b/c", "org/na me", "org/..", "org/a--b", "org/name@", "/", "@main",
         "org/name@a b", "org/-x", "models/datasets", "spaces"],
    )
    def test_refuses_malformed_specs(self, spec: str) -> None:
        """A malformed spec is refused with a message, never half-parsed."""
        with pytest.raises(SpecError):
            RepoRef.parse(spec)

    def test_resolve_url_is_pinned_and_quoted(self) -> None:
        """Download links point at the commit, with the path percent-encoded."""
        ref = RepoRef.parse("datasets/org/data")
        url = ref.resolve_url("https://hub.example/", "a" * 40, "data/train 1#.parquet")
        assert url == f"https://hub.example/datasets/org/data/resolve/{'a' * 40}/data/train%201%23.parquet"


class TestNames:
    @pytest.mark.parametrize(
        ("name", "original"),
        [
            ("model (1).safetensors", "model.safetensors"),
            ("model(2).safetensors", "model.safetensors"),
            ("config.json.1", "config.json"),
            ("train-00003-of-00032.1.parquet", "train-00003-of-00032.parquet"),
            ("tokenizer (12).json", "tokenizer.json"),
            ("model.safetensors?download=true", "model.safetensors"),
            ("test%201.parquet", "test 1.parquet"),
            ("model.safetensors?download=true.1", "model.safetensors"),
        ],
    )
    def test_duplicate_suffixes_are_stripped(self, name: str, original: str) -> None:
        """Browser, wget and aria2 duplicate names lead back to the original name."""
        assert original in original_names(name)

    def test_plain_names_have_no_original(self) -> None:
        """A name without a duplicate suffix is only itself."""
        assert original_names("train-00003-of-00032.parquet") == []

    @pytest.mark.parametrize("path", ["/etc/passwd", "../x", "a/../../x", "a\\..\\x", "a\0b", "", "a//b", "./a"])
    def test_unsafe_paths(self, path: str) -> None:
        """Paths that could escape a folder are flagged unsafe."""
        assert not is_safe_path(path)

    def test_safe_path(self) -> None:
        """An ordinary nested path is safe."""
        assert is_safe_path("data/train-0.parquet")


class TestVerdicts:
    def setup_method(self) -> None:
        self.files = {"config.json": b'{"a": 1}', "model.safetensors": b"W" * 5000, "data/train.parquet": b"P" * 300}
        self.m = manifest("org/m", self.files, lfs=("model.safetensors", "data/train.parquet"))
        self.index = Index.build([self.m])

    def judge(self, rel: str, data: bytes) -> tuple[str, str | None, str | None]:
        plan = self.index.plan(rel, len(data))
        v = decide(plan, "/x/" + rel, len(data), digests_of(data) if plan.needs_hash else {})
        return v.status, v.rfilename, v.matched_by

    def test_match_by_path(self) -> None:
        """A file at its repo path with the right bytes is matched."""
        assert self.judge("data/train.parquet", self.files["data/train.parquet"]) == (
            "matched", "data/train.parquet", "path")

    def test_match_by_stripped_name(self) -> None:
        """A browser's `X (1).ext` in a flat folder is matched to X's entry."""
        assert self.judge("train (1).parquet", self.files["data/train.parquet"])[:2] == (
            "matched", "data/train.parquet")

    def test_match_by_content(self) -> None:
        """A renamed file is recognised by size and hash."""
        assert self.judge("whatever.bin", self.files["model.safetensors"]) == (
            "matched", "model.safetensors", "content")

    def test_short_file_is_incomplete(self) -> None:
        """A file shorter than its entry is incomplete, not a mismatch."""
        assert self.judge("model.safetensors", b"W" * 10)[0] == "incomplete"

    def test_same_size_wrong_bytes_is_mismatch(self) -> None:
        """Same size, wrong content: download again."""
        assert self.judge("model.safetensors", b"X" * 5000)[0] == "mismatch"

    def test_longer_file_is_mismatch(self) -> None:
        """A file longer than its entry is a mismatch."""
        assert self.judge("config.json", b'{"a": 1}   ')[0] == "mismatch"

    def test_git_files_use_blob_sha1(self) -> None:
        """Non-LFS files are verified by git blob SHA-1."""
        plan = self.index.plan("config.json", 8)
        assert plan.algorithms == frozenset({GIT_SHA1})

    def test_unrelated_file_is_unknown(self) -> None:
        """A file that matches nothing watched is unknown."""
        assert self.judge("notes.txt", b"hello")[0] == "unknown"

    def test_same_name_in_two_repos_decided_by_content(self) -> None:
        """Two repos with a config.json in one folder: the bytes decide which one it is."""
        a = manifest("org/a", {"config.json": b'{"model": "a"}'})
        b = manifest("org/b", {"config.json": b'{"model": "bb"}'})
        index = Index.build([a, b])
        data = b'{"model": "bb"}'
        plan = index.plan("config.json", len(data))
        v = decide(plan, "/x/config.json", len(data), digests_of(data))
        assert (v.status, v.repo) == ("matched", "org/b")


class TestManifestFiles:
    def test_seed_format(self) -> None:
        """The seed `{"path": "sha256"}` JSON loads as sha256-only entries."""
        sha = "a" * 64
        m = load_manifest_text(json.dumps({"x.parquet": sha}), RepoRef.parse("datasets/o/n"), where="f")
        assert m.entries["x.parquet"].sha256 == sha
        assert m.entries["x.parquet"].size is None

    def test_full_round_trip(self) -> None:
        """The full format written by to_full reads back identical."""
        m = manifest("org/m", {"a.json": b"{}", "w.bin": b"1" * 2000}, lfs=("w.bin",))
        back = load_manifest_text(json.dumps(m.to_full()), m.repo, where="f")
        assert dict(back.entries) == dict(m.entries)

    @pytest.mark.parametrize("text", ["[]", "{", '{"a": "nothex"}', '{"files": {"a": {"size": -1, "sha256": null}}}',
                                      '{"files": {"a": 3}}', '{"files": {"a": {"size": 1}}}'])
    def test_malformed_manifest_is_refused(self, text: str) -> None:
        """A malformed manifest file is refused with a message naming it."""
        with pytest.raises(SpecError, match=r"manifest\.json"):
            load_manifest_text(text, RepoRef.parse("o/n"), where="manifest.json")
