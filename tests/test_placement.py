"""Placement into the huggingface_hub cache and `--local-dir` trees, proven with the real huggingface_hub and `hf`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import cli_env
from fakehub import FakeHub

from hfwatchd.manifest import ManifestEntry, RepoRef
from hfwatchd.placement import Placed, PlaceError, default_hf_cache, place_file

HF = Path(sys.executable).parent / "hf"
REPO = "org/model"
DATASET = "org/corpus"


def model_files() -> dict[str, bytes]:
    return {
        "README.md": b"# model\n",
        "config.json": b'{"model_type": "demo", "hidden_size": 8}\n',
        "tokenizer.json": b'{"version": "1.0", "vocab": {"a": 0}}',
        "model.safetensors": os.urandom(300_000),
        "onnx/model.onnx": b"\x08\x07" * 600,
        "onnx/config.json": b'{"opset": 17}\n',
    }


def dataset_files() -> dict[str, bytes]:
    return {
        "README.md": b"# corpus\n",
        "data/train-00000-of-00002.parquet": os.urandom(50_000),
        "data/train-00001-of-00002.parquet": os.urandom(50_001),
        "data/meta/info.json": b'{"rows": 2}\n',
    }


def manifest_of(hub: FakeHub, repo_id: str, repo_type: str, commit: str) -> dict[str, ManifestEntry]:
    """Entries as the daemon builds them: huggingface_hub's list_repo_tree against the (fake) Hub."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.url)
    entries = {}
    for item in api.list_repo_tree(repo_id, repo_type=repo_type, revision=commit, recursive=True):
        if not hasattr(item, "blob_id"):
            continue
        lfs = getattr(item, "lfs", None)
        entries[item.path] = ManifestEntry(item.path, int(item.size), lfs.sha256 if lfs else None, item.blob_id)
    return entries


def download(folder: Path, rfilename: str, data: bytes) -> Path:
    """A hand download: the file dropped flat into a downloads folder."""
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / rfilename.replace("/", "__")
    p.write_bytes(data)
    return p


def tree(root: Path) -> dict[str, bytes | str]:
    """Every file and symlink under `root` (symlinks as their text), for before/after comparisons."""
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = os.path.join(dirpath, name)
            out[os.path.relpath(p, root)] = os.readlink(p) if os.path.islink(p) else Path(p).read_bytes()
    return out


def file_requests(hub: FakeHub, since: int) -> list[tuple[str, str]]:
    return [(m, p) for m, p in hub.requests[since:] if "/resolve/" in p or p.startswith("/cdn/")]


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str, str], Path]]:
    """Mount a fresh tmpfs (another filesystem) under tmp_path; skipped where mounting is impossible."""
    mounted: list[Path] = []

    def mount(name: str, options: str = "size=16m") -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        point = tmp_path / name
        point.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                           capture_output=True, text=True, check=False)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", str(point)], check=True)


class Repo:
    """A repo on the fake Hub, its manifest as the daemon sees it, and its files downloaded by hand."""

    def __init__(self, hub: FakeHub, repo_id: str, repo_type: str, files: dict[str, bytes], dl: Path,
                 revision: str = "main") -> None:
        self.hub = hub
        self.repo_id = repo_id
        self.repo_type = repo_type
        self.files = files
        self.commit = hub.add_repo(repo_id, files, repo_type=repo_type, revision=revision)
        self.entries = manifest_of(hub, repo_id, repo_type, self.commit)
        prefix = {"model": "", "dataset": "datasets/", "space": "spaces/"}[repo_type]
        self.ref = RepoRef.parse(f"{prefix}{repo_id}@{revision}")
        self.sources = {rel: download(dl, rel, data) for rel, data in files.items()}

    def place(self, rel: str, place: str, place_dir: Path | None, mode: str = "link") -> Placed:
        return place_file(str(self.sources[rel]), place=place, place_dir=place_dir, mode=mode, repo=self.ref,
                          commit=self.commit, entry=self.entries[rel])


@pytest.fixture
def model(fake_hub: FakeHub, tmp_path: Path) -> Repo:
    return Repo(fake_hub, REPO, "model", model_files(), tmp_path / "Downloads")


@pytest.fixture
def dataset(fake_hub: FakeHub, tmp_path: Path) -> Repo:
    return Repo(fake_hub, DATASET, "dataset", dataset_files(), tmp_path / "Downloads")


class TestDefaultCache:
    def test_same_folder_as_huggingface_hub(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """default_hf_cache() names the folder huggingface_hub's constants compute, for every way of setting it."""
        cases = [
            {},
            {"XDG_CACHE_HOME": str(tmp_path / "xdg")},
            {"HF_HOME": "~/hfh", "XDG_CACHE_HOME": str(tmp_path / "xdg")},
            {"HF_HOME": str(tmp_path / "home"), "HUGGINGFACE_HUB_CACHE": str(tmp_path / "legacy")},
            {"HF_HUB_CACHE": "$FOO/hub-cache", "FOO": str(tmp_path / "foo"), "HUGGINGFACE_HUB_CACHE": "/x"},
        ]
        names = ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME", "FOO")
        script = (
            "import importlib, json, os, sys\n"
            "from huggingface_hub import constants\n"
            "out = []\n"
            "for case in json.loads(sys.argv[1]):\n"
            f"    for n in {names!r}: os.environ.pop(n, None)\n"
            "    os.environ.update(case)\n"
            "    out.append(importlib.reload(constants).HF_HUB_CACHE)\n"
            "print(json.dumps(out))\n"
        )
        env = cli_env(HOME=str(tmp_path / "user"))
        r = subprocess.run([sys.executable, "-c", script, json.dumps(cases)], env=env, capture_output=True,
                           text=True, check=True)
        theirs = json.loads(r.stdout)
        monkeypatch.setenv("HOME", str(tmp_path / "user"))
        for case, expected in zip(cases, theirs, strict=True):
            for n in names:
                monkeypatch.delenv(n, raising=False)
            for k, v in case.items():
                monkeypatch.setenv(k, v)
            assert default_hf_cache() == Path(expected), case


class TestHfCache:
    @pytest.mark.parametrize("mode", ["link", "copy", "move"])
    def test_model_loads_offline_with_huggingface_hub(self, model: Repo, tmp_path: Path, mode: str) -> None:
        """Every placed file is what hf_hub_download and snapshot_download return offline, and the mode is honoured."""
        from huggingface_hub import hf_hub_download, snapshot_download

        cache = tmp_path / "cache"
        before = {rel: os.stat(p) for rel, p in model.sources.items()}
        snapshot = cache / "models--org--model" / "snapshots" / model.commit
        for rel in model.files:
            placed = model.place(rel, "hf-cache", cache, mode)
            assert placed == Placed(str(snapshot / rel), mode)
            target = Path(placed.target)
            assert target.is_symlink() and not os.readlink(target).startswith("/")
            blob = os.stat(target)
            if mode == "link":
                assert (blob.st_dev, blob.st_ino) == (before[rel].st_dev, before[rel].st_ino)
            if mode == "copy":
                assert blob.st_ino != before[rel].st_ino and model.sources[rel].read_bytes() == model.files[rel]
            if mode == "move":
                assert blob.st_ino == before[rel].st_ino and not model.sources[rel].exists()
        assert (cache / "models--org--model" / "refs" / "main").read_text() == model.commit

        n = len(model.hub.requests)
        for rel, data in model.files.items():
            for revision in ("main", model.commit):
                got = hf_hub_download(REPO, rel, revision=revision, cache_dir=cache, local_files_only=True,
                                      endpoint=model.hub.url)
                assert got == str(snapshot / rel)
                assert Path(got).read_bytes() == data
        assert snapshot_download(REPO, cache_dir=cache, local_files_only=True, endpoint=model.hub.url) == str(snapshot)
        assert model.hub.requests[n:] == []

    def test_blob_names_are_the_etags_huggingface_hub_reads(self, model: Repo, tmp_path: Path) -> None:
        """Each blob is named by the ETag huggingface_hub reads from the Hub: sha256 for LFS, else git blob SHA-1."""
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        cache = tmp_path / "cache"
        for rel in ("config.json", "model.safetensors", "onnx/model.onnx"):
            target = model.place(rel, "hf-cache", cache).target
            meta = get_hf_file_metadata(hf_hub_url(REPO, rel, revision=model.commit, endpoint=model.hub.url))
            assert Path(os.path.realpath(target)) == cache / "models--org--model" / "blobs" / str(meta.etag)

    def test_online_download_finds_everything_cached(self, model: Repo, tmp_path: Path) -> None:
        """An online snapshot_download after placement downloads no file: the cache is complete as the Hub lists it."""
        from huggingface_hub import snapshot_download

        cache = tmp_path / "cache"
        for rel in model.files:
            model.place(rel, "hf-cache", cache, "copy")
        n = len(model.hub.requests)
        got = snapshot_download(REPO, cache_dir=cache, endpoint=model.hub.url)
        assert got == str(cache / "models--org--model" / "snapshots" / model.commit)
        assert file_requests(model.hub, n) == []

    def test_dataset_loads_offline_with_huggingface_hub(self, dataset: Repo, tmp_path: Path) -> None:
        """A dataset repo lands under datasets--org--name and loads offline with repo_type="dataset"."""
        from huggingface_hub import hf_hub_download, snapshot_download

        cache = tmp_path / "cache"
        snapshot = cache / "datasets--org--corpus" / "snapshots" / dataset.commit
        for rel in dataset.files:
            assert dataset.place(rel, "hf-cache", cache, "move").target == str(snapshot / rel)
        for rel, data in dataset.files.items():
            got = hf_hub_download(DATASET, rel, repo_type="dataset", cache_dir=cache, local_files_only=True,
                                  endpoint=dataset.hub.url)
            assert Path(got).read_bytes() == data
        got_dir = snapshot_download(DATASET, repo_type="dataset", cache_dir=cache, local_files_only=True,
                                    endpoint=dataset.hub.url)
        assert got_dir == str(snapshot)

    @pytest.mark.parametrize("revision", ["v1.0", "refs/pr/1"])
    def test_tag_revision_gets_its_ref(self, fake_hub: FakeHub, tmp_path: Path, revision: str) -> None:
        """A repo watched at a tag or PR ref gets refs/<revision>, so hf_hub_download(revision=...) finds it offline."""
        from huggingface_hub import hf_hub_download

        repo = Repo(fake_hub, REPO, "model", {"config.json": b"{}\n"}, tmp_path / "dl", revision=revision)
        cache = tmp_path / "cache"
        repo.place("config.json", "hf-cache", cache)
        assert (cache / "models--org--model" / "refs" / revision).read_text() == repo.commit
        got = hf_hub_download(REPO, "config.json", revision=revision, cache_dir=cache, local_files_only=True,
                              endpoint=fake_hub.url)
        assert Path(got).read_bytes() == b"{}\n"

    def test_commit_revision_writes_no_ref(self, fake_hub: FakeHub, tmp_path: Path) -> None:
        """A repo pinned to a commit gets no refs/ entry (as huggingface_hub does) and still loads by commit."""
        from huggingface_hub import hf_hub_download

        repo = Repo(fake_hub, REPO, "model", {"config.json": b"{}\n"}, tmp_path / "dl")
        pinned = RepoRef("model", REPO, repo.commit)
        cache = tmp_path / "cache"
        place_file(str(repo.sources["config.json"]), place="hf-cache", place_dir=cache, mode="link", repo=pinned,
                   commit=repo.commit, entry=repo.entries["config.json"])
        assert not (cache / "models--org--model" / "refs").exists()
        got = hf_hub_download(REPO, "config.json", revision=repo.commit, cache_dir=cache, local_files_only=True,
                              endpoint=fake_hub.url)
        assert Path(got).read_bytes() == b"{}\n"

    def test_new_commit_moves_the_ref_and_keeps_the_old_snapshot(self, fake_hub: FakeHub, tmp_path: Path) -> None:
        """When main moves to a new commit, refs/main follows it and the old snapshot still loads by commit."""
        from huggingface_hub import hf_hub_download

        cache = tmp_path / "cache"
        old = Repo(fake_hub, REPO, "model", {"config.json": b'{"v": 1}\n'}, tmp_path / "dl1")
        old.place("config.json", "hf-cache", cache)
        new = Repo(fake_hub, REPO, "model", {"config.json": b'{"v": 2}\n'}, tmp_path / "dl2")
        new.place("config.json", "hf-cache", cache)
        assert (cache / "models--org--model" / "refs" / "main").read_text() == new.commit
        for commit, data in ((None, b'{"v": 2}\n'), (old.commit, b'{"v": 1}\n'), (new.commit, b'{"v": 2}\n')):
            got = hf_hub_download(REPO, "config.json", revision=commit, cache_dir=cache, local_files_only=True,
                                  endpoint=fake_hub.url)
            assert Path(got).read_bytes() == data

    def test_placing_again_reports_exists(self, model: Repo, tmp_path: Path) -> None:
        """A file already in the cache (same inode, or another download of the same bytes) is "exists", source kept."""
        cache = tmp_path / "cache"
        assert model.place("config.json", "hf-cache", cache, "link").mode == "link"
        assert model.place("config.json", "hf-cache", cache, "move").mode == "exists"
        assert model.sources["config.json"].exists()
        second = download(tmp_path / "again", "config.json", model.files["config.json"])
        placed = place_file(str(second), place="hf-cache", place_dir=cache, mode="move", repo=model.ref,
                            commit=model.commit, entry=model.entries["config.json"])
        assert placed.mode == "exists" and second.exists()

    def test_default_cache_dir_is_used_without_place_dir(self, model: Repo, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
        """Without place_dir the file goes into huggingface_hub's own cache (HF_HUB_CACHE here)."""
        from huggingface_hub import hf_hub_download

        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
        placed = model.place("config.json", "hf-cache", None)
        assert placed.target.startswith(str(tmp_path / "hub-cache" / "models--org--model" / "snapshots"))
        got = hf_hub_download(REPO, "config.json", cache_dir=tmp_path / "hub-cache", local_files_only=True,
                              endpoint=model.hub.url)
        assert got == placed.target

    def test_needs_a_commit(self, model: Repo, tmp_path: Path) -> None:
        """An offline manifest without a commit cannot be put in the cache: refused, nothing written."""
        with pytest.raises(PlaceError, match="commit"):
            place_file(str(model.sources["config.json"]), place="hf-cache", place_dir=tmp_path / "cache",
                       mode="link", repo=model.ref, commit="", entry=model.entries["config.json"])
        assert not (tmp_path / "cache").exists()


class TestLocalDir:
    @pytest.mark.parametrize(("kind", "mode"), [("model", "link"), ("model", "copy"), ("dataset", "move")])
    def test_hf_download_downloads_nothing_again(self, request: pytest.FixtureRequest, tmp_path: Path,
                                                 kind: str, mode: str) -> None:
        """After placement, the real `hf download REPO --local-dir` finds every file up to date and fetches none."""
        repo: Repo = request.getfixturevalue(kind)
        local = tmp_path / "local"
        for rel, data in repo.files.items():
            placed = repo.place(rel, "local-dir", local, mode)
            assert placed == Placed(str(local / rel), mode)
            assert (local / rel).read_bytes() == data
            assert repo.sources[rel].exists() == (mode != "move")
        before = {rel: os.stat(local / rel) for rel in repo.files}
        n = len(repo.hub.requests)
        args = [str(HF), "download", repo.repo_id, "--local-dir", str(local), "--repo-type", repo.repo_type]
        r = subprocess.run(args, env=cli_env(repo.hub), capture_output=True, text=True, timeout=120, check=False)
        assert r.returncode == 0, r.stderr
        assert file_requests(repo.hub, n) == []
        for rel, st in before.items():
            now = os.stat(local / rel)
            assert (now.st_ino, now.st_mtime_ns, now.st_size) == (st.st_ino, st.st_mtime_ns, st.st_size), rel

    def test_metadata_file_is_huggingface_hubs(self, model: Repo, tmp_path: Path) -> None:
        """The metadata file holds the commit, the ETag and a timestamp not older than the file (_local_folder.py)."""
        from huggingface_hub._local_folder import read_download_metadata

        local = tmp_path / "local"
        model.place("onnx/model.onnx", "local-dir", local)
        lines = (local / ".cache/huggingface/download/onnx/model.onnx.metadata").read_text().splitlines()
        assert lines[:2] == [model.commit, model.entries["onnx/model.onnx"].sha256]
        assert float(lines[2]) >= os.stat(local / "onnx/model.onnx").st_mtime
        meta = read_download_metadata(local, "onnx/model.onnx")
        assert meta is not None and meta.commit_hash == model.commit

    def test_offline_manifest_without_commit_is_not_downloaded_again(self, model: Repo, tmp_path: Path) -> None:
        """Placed from a manifest without a commit, `hf download` only checks ETags (HEAD) and downloads nothing."""
        local = tmp_path / "local"
        for rel in model.files:
            place_file(str(model.sources[rel]), place="local-dir", place_dir=local, mode="copy", repo=model.ref,
                       commit="", entry=model.entries[rel])
        n = len(model.hub.requests)
        r = subprocess.run([str(HF), "download", REPO, "--local-dir", str(local)], env=cli_env(model.hub),
                           capture_output=True, text=True, timeout=120, check=False)
        assert r.returncode == 0, r.stderr
        checks = file_requests(model.hub, n)
        assert checks and all(method == "HEAD" for method, _ in checks), checks

    def test_needs_place_dir(self, model: Repo) -> None:
        """place = "local-dir" without a place_dir is refused."""
        with pytest.raises(PlaceError, match="place_dir"):
            model.place("config.json", "local-dir", None)

    def test_never_writes_into_huggingface_hubs_metadata(self, model: Repo, tmp_path: Path) -> None:
        """A manifest path under .cache/huggingface/ could forge huggingface_hub's metadata: refused."""
        bad = ManifestEntry(".cache/huggingface/download/config.json.metadata", None,
                            model.entries["model.safetensors"].sha256, None)
        with pytest.raises(PlaceError, match="metadata"):
            place_file(str(model.sources["model.safetensors"]), place="local-dir", place_dir=tmp_path / "local",
                       mode="copy", repo=model.ref, commit=model.commit, entry=bad)


class TestSafety:
    @pytest.mark.parametrize("place", ["local-dir", "hf-cache"])
    @pytest.mark.parametrize("rfilename", ["../evil", "sub/../../evil", "/ABS/evil", "a\\..\\evil", "a/\0b", "./x", ""])
    def test_unsafe_manifest_paths_are_refused(self, model: Repo, tmp_path: Path, place: str, rfilename: str) -> None:
        """An absolute path, a `..` segment, a backslash or a NUL in a manifest path is refused; nothing is written."""
        rfilename = rfilename.replace("/ABS", str(tmp_path))
        before = tree(tmp_path)
        entry = ManifestEntry(rfilename, None, model.entries["model.safetensors"].sha256, None)
        with pytest.raises(PlaceError, match="refusing"):
            place_file(str(model.sources["model.safetensors"]), place=place, place_dir=tmp_path / "place",
                       mode="move", repo=model.ref, commit=model.commit, entry=entry)
        assert tree(tmp_path) == before

    def test_unsafe_paths_served_by_the_hub_are_never_placed(self, fake_hub: FakeHub, tmp_path: Path) -> None:
        """A Hub listing with `../evil.txt` and `a\\b.txt`: those are refused, the safe file lands under place_dir."""
        files = {"ok.json": b"{}\n", "../evil.txt": b"evil\n", "a\\b.txt": b"backslash\n"}
        repo = Repo(fake_hub, REPO, "model", files, tmp_path / "dl")
        assert set(repo.entries) == set(files)
        for place in ("local-dir", "hf-cache"):
            root = tmp_path / "deep" / place
            assert repo.place("ok.json", place, root).target.startswith(str(root) + "/")
            for rel in ("../evil.txt", "a\\b.txt"):
                with pytest.raises(PlaceError, match="refusing"):
                    repo.place(rel, place, root)
        written = tree(tmp_path / "deep")
        assert b"{}\n" in written.values()
        assert b"evil\n" not in written.values() and b"backslash\n" not in written.values()
        assert [p for p in tree(tmp_path) if "evil" in p] == ["dl/..__evil.txt"]

    @pytest.mark.parametrize(("place", "planted"), [
        ("local-dir", "sub"),
        ("hf-cache", "models--org--model/snapshots"),
        ("hf-cache", "models--org--model/blobs"),
    ])
    def test_planted_directory_symlink_is_not_followed(self, fake_hub: FakeHub, tmp_path: Path, place: str,
                                                       planted: str) -> None:
        """A symlink planted in the target tree (place_dir/sub -> elsewhere) is not followed: refused, nothing there."""
        repo = Repo(fake_hub, REPO, "model", {"sub/file.json": b"{}\n"}, tmp_path / "dl")
        root, elsewhere = tmp_path / "place", tmp_path / "elsewhere"
        elsewhere.mkdir()
        (root / planted).parent.mkdir(parents=True)
        (root / planted).symlink_to(elsewhere)
        with pytest.raises(PlaceError, match="symlink"):
            repo.place("sub/file.json", place, root, "move")
        assert list(elsewhere.iterdir()) == []
        assert repo.sources["sub/file.json"].read_bytes() == b"{}\n"

    def test_planted_file_symlink_is_not_followed(self, model: Repo, tmp_path: Path) -> None:
        """A symlink planted at the target name is not written through, nor replaced."""
        local, elsewhere = tmp_path / "local", tmp_path / "elsewhere"
        local.mkdir()
        elsewhere.mkdir()
        (local / "config.json").symlink_to(elsewhere / "config.json")
        for mode in ("link", "copy", "move"):
            with pytest.raises(PlaceError, match="different file"):
                model.place("config.json", "local-dir", local, mode)
        assert list(elsewhere.iterdir()) == []
        assert os.readlink(local / "config.json") == str(elsewhere / "config.json")
        assert model.sources["config.json"].read_bytes() == model.files["config.json"]

    @pytest.mark.parametrize("mode", ["link", "copy", "move"])
    def test_different_existing_file_is_not_overwritten(self, model: Repo, tmp_path: Path, mode: str) -> None:
        """A different file at the target stays as it is, the error says so, and the source is untouched."""
        local = tmp_path / "local"
        (local / "onnx").mkdir(parents=True)
        (local / "onnx/config.json").write_bytes(b'{"mine": true}\n')
        src_before = os.stat(model.sources["onnx/config.json"])
        with pytest.raises(PlaceError, match="already exists and is a different file") as err:
            model.place("onnx/config.json", "local-dir", local, mode)
        assert err.value.target == str(local / "onnx/config.json")
        assert "untouched" in str(err.value)
        assert (local / "onnx/config.json").read_bytes() == b'{"mine": true}\n'
        assert not (local / ".cache/huggingface/download/onnx/config.json.metadata").exists()
        assert os.stat(model.sources["onnx/config.json"]).st_ino == src_before.st_ino

    def test_different_snapshot_entry_is_not_overwritten(self, model: Repo, tmp_path: Path) -> None:
        """A snapshot entry that points elsewhere is not replaced, and no blob is left behind by the refusal."""
        cache = tmp_path / "cache"
        snap = cache / "models--org--model" / "snapshots" / model.commit
        snap.mkdir(parents=True)
        (snap / "config.json").symlink_to("../../blobs/" + "0" * 40)
        with pytest.raises(PlaceError, match="not overwritten"):
            model.place("config.json", "hf-cache", cache, "move")
        assert os.readlink(snap / "config.json") == "../../blobs/" + "0" * 40
        assert list((cache / "models--org--model" / "blobs").iterdir()) == []
        assert model.sources["config.json"].exists()

    def test_identical_existing_file_is_exists(self, model: Repo, tmp_path: Path) -> None:
        """The same bytes already at the target are reported "exists" and the metadata is written for them."""
        local = tmp_path / "local"
        local.mkdir()
        (local / "config.json").write_bytes(model.files["config.json"])
        assert model.place("config.json", "local-dir", local, "move").mode == "exists"
        assert model.sources["config.json"].exists()
        assert (local / ".cache/huggingface/download/config.json.metadata").read_text().startswith(model.commit)

    def test_changed_source_is_refused(self, model: Repo, tmp_path: Path) -> None:
        """A source whose size no longer matches its verdict is not placed."""
        model.sources["config.json"].write_bytes(b"{}")
        with pytest.raises(PlaceError, match="changed since"):
            model.place("config.json", "local-dir", tmp_path / "local")
        assert not (tmp_path / "local" / "config.json").exists()

    @pytest.mark.parametrize(("place", "mode", "done"), [
        ("local-dir", "link", "copy"), ("local-dir", "move", "move"), ("hf-cache", "link", "copy"),
    ])
    def test_other_filesystem_falls_back_to_copy(self, model: Repo, tmpfs: Callable[[str, str], Path], place: str,
                                                mode: str, done: str) -> None:
        """Across filesystems a hard link becomes a copy (source kept) and a move a copy then unlink."""
        from huggingface_hub import hf_hub_download

        root = tmpfs("other-fs", "size=16m")
        src = model.sources["model.safetensors"]
        assert os.stat(src).st_dev != os.stat(root).st_dev
        placed = model.place("model.safetensors", place, root, mode)
        assert placed.mode == done
        assert Path(placed.target).read_bytes() == model.files["model.safetensors"]
        assert src.exists() == (done == "copy")
        assert not [p for p in tree(root) if p.endswith(".incomplete")]
        if place == "hf-cache":
            got = hf_hub_download(REPO, "model.safetensors", cache_dir=root, local_files_only=True,
                                  endpoint=model.hub.url)
            assert got == placed.target

    @pytest.mark.parametrize("place", ["local-dir", "hf-cache"])
    @pytest.mark.parametrize("mode", ["link", "copy", "move"])
    def test_unwritable_target_is_refused_and_source_untouched(self, model: Repo, tmp_path: Path,
                                                               tmpfs: Callable[[str, str], Path],
                                                               place: str, mode: str) -> None:
        """A read-only target (permission error; read-only filesystem for root) raises PlaceError, source as it was."""
        if os.geteuid() == 0:
            root = tmpfs("read-only", "ro,size=1m")
        else:
            root = tmp_path / "read-only"
            root.mkdir(mode=0o555)
        src = model.sources["model.safetensors"]
        before = os.stat(src)
        with pytest.raises(PlaceError, match="untouched"):
            model.place("model.safetensors", place, root, mode)
        after = os.stat(src)
        assert (after.st_ino, after.st_size, after.st_mtime_ns, after.st_nlink) == (
            before.st_ino, before.st_size, before.st_mtime_ns, before.st_nlink)
        assert src.read_bytes() == model.files["model.safetensors"]

    @pytest.mark.parametrize("place", ["local-dir", "hf-cache"])
    def test_full_disk_is_refused_and_leaves_nothing(self, model: Repo, tmpfs: Callable[[str, str], Path],
                                                    place: str) -> None:
        """Out of space mid-copy: PlaceError naming it, no partial or temp file left, source untouched."""
        root = tmpfs("tiny", "size=64k")
        src = model.sources["model.safetensors"]
        with pytest.raises(PlaceError, match="No space left") as err:
            model.place("model.safetensors", place, root, "move")
        assert "untouched" in str(err.value)
        assert src.read_bytes() == model.files["model.safetensors"]
        assert [p for p in tree(root) if not p.endswith((".gitignore", "CACHEDIR.TAG"))] == []
