"""The fake Hub answers the real huggingface_hub client the way huggingface.co does."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import fakehub
import httpx2
import pytest
from fakehub import FakeHub, git_blob_sha1
from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile, RepoFolder
from huggingface_hub.utils import _detect_agent

fake_hub = fakehub.fake_hub  # the fixture under test, bound here so that pytest finds it

REPO = "org/name"
TOKEN = "hf_fakehub_test_token"
UNICODE_PATH = "dir with space/f\u00fcr \u00e9t\u00e9.txt"
FILES: dict[str, bytes] = {
    "README.md": b"# demo\n",
    "config.json": b'{"hidden_size": 8}\n',
    "model.safetensors": bytes(range(256)) * 40,  # 10240 bytes: LFS by suffix and size
    "weights/part-00001.bin": b"\x01" * 300,  # LFS by suffix although small
    "weights/notes.txt": b"x" * 2000,  # LFS by size
    "a/b/c/deep.json": b"{}",
    "a/b/leaf.txt": b"leaf",
    "a/top.txt": b"top",
    UNICODE_PATH: b"unicode and spaces",
}


@pytest.fixture(autouse=True)
def hf_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Isolate huggingface_hub from the user's token, cache and offline settings."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    # huggingface_hub asks huggingface.co (not HF_ENDPOINT) for an agent registry once per process.
    monkeypatch.setattr(_detect_agent, "_registry", _detect_agent._EMPTY_REGISTRY)


@pytest.fixture(autouse=True)
def no_leftover_threads() -> Iterator[None]:
    """After each test (and after fake_hub's teardown) no server or connection thread is alive."""
    yield
    assert [t.name for t in threading.enumerate() if t.name.startswith("fakehub-")] == []


@pytest.fixture
def hub(fake_hub: FakeHub) -> Iterator[FakeHub]:
    """The fixture from fakehub.py with the demo repo, checked for internal server errors afterwards."""
    fake_hub.add_repo(REPO, FILES)
    yield fake_hub
    assert fake_hub.errors == []


def api(hub: FakeHub, token: str | bool = False) -> HfApi:
    return HfApi(endpoint=hub.url, token=token)


class TestRepoInfo:
    def test_branch_resolves_to_its_commit(self, hub: FakeHub) -> None:
        """repo_info on a branch, or without revision, returns the commit the branch points at."""
        commit = hub.add_repo(REPO, FILES)
        assert api(hub).repo_info(REPO, revision="main").sha == commit
        assert api(hub).model_info(REPO).sha == commit

    def test_commit_sha_resolves_to_itself(self, hub: FakeHub) -> None:
        """A full commit sha is accepted as a revision."""
        commit = hub.add_repo(REPO, FILES)
        assert api(hub).repo_info(REPO, revision=commit).sha == commit

    def test_dataset_and_space_with_slash_in_branch(self, hub: FakeHub) -> None:
        """Datasets and spaces answer on their own API prefix, with a URL-quoted branch name."""
        data = hub.add_repo("org/data", {"t.parquet": b"1"}, repo_type="dataset", revision="refs/convert/x")
        space = hub.add_repo("org/app", {"app.py": b"print()"}, repo_type="space")
        info = api(hub).dataset_info("org/data", revision="refs/convert/x")
        assert (info.id, info.sha) == ("org/data", data)
        assert api(hub).space_info("org/app").sha == space
        with pytest.raises(RepositoryNotFoundError):
            api(hub).model_info("org/data")

    def test_files_metadata_gives_sizes_blob_ids_and_lfs(self, hub: FakeHub) -> None:
        """model_info(files_metadata=True) carries size, git blob id and LFS sha256 for every file."""
        info = api(hub).model_info(REPO, files_metadata=True)
        siblings = {s.rfilename: s for s in info.siblings or []}
        assert set(siblings) == set(FILES)
        config = siblings["config.json"]
        assert (config.size, config.blob_id, config.lfs) == (
            len(FILES["config.json"]),
            git_blob_sha1(FILES["config.json"]),
            None,
        )
        model = siblings["model.safetensors"]
        assert model.lfs is not None
        assert model.lfs.sha256 == hashlib.sha256(FILES["model.safetensors"]).hexdigest()
        assert model.size == model.lfs.size == len(FILES["model.safetensors"])
        assert model.blob_id == git_blob_sha1(hub.file(REPO, "model.safetensors").pointer)
        assert model.lfs.pointer_size == len(hub.file(REPO, "model.safetensors").pointer)
        assert (info.private, info.gated, info.last_modified is not None) == (False, False, True)

    def test_without_files_metadata_siblings_are_names_only(self, hub: FakeHub) -> None:
        """Without blobs=true the siblings only carry their rfilename."""
        info = api(hub).model_info(REPO)
        assert all(s.size is None and s.lfs is None for s in info.siblings or [])

    def test_expand_filters_properties(self, hub: FakeHub) -> None:
        """expand=[...] returns only the asked properties."""
        info = api(hub).model_info(REPO, expand=["sha"])
        assert info.sha is not None
        assert info.siblings is None

    def test_add_repo_again_moves_the_branch(self, hub: FakeHub) -> None:
        """A second add_repo makes a new commit; the old one stays resolvable with its old files."""
        old = api(hub).model_info(REPO).sha
        new = hub.add_repo(REPO, {"config.json": b"{}"})
        assert new != old
        assert api(hub).model_info(REPO).sha == new
        assert api(hub).model_info(REPO, revision=old).sha == old
        assert set(api(hub).list_repo_files(REPO, revision=old)) == set(FILES)
        assert api(hub).list_repo_files(REPO) == ["config.json"]

    def test_list_repo_refs(self, hub: FakeHub) -> None:
        """Branches are listed with their target commit."""
        dev = hub.add_repo(REPO, {"x": b"y"}, revision="dev")
        refs = api(hub).list_repo_refs(REPO)
        assert {b.name: b.target_commit for b in refs.branches}["dev"] == dev


class TestTree:
    def test_recursive_listing_follows_pages(self, hub: FakeHub) -> None:
        """list_repo_tree(recursive=True) returns every file across pages of page_size entries."""
        hub.page_size = 3
        commit = api(hub).model_info(REPO).sha
        hub.requests.clear()
        entries = list(api(hub).list_repo_tree(REPO, recursive=True, revision=commit))
        files = {e.path: e for e in entries if isinstance(e, RepoFile)}
        folders = {e.path for e in entries if isinstance(e, RepoFolder)}
        assert set(files) == set(FILES)
        assert folders == {"a", "a/b", "a/b/c", "weights", "dir with space"}
        pages = [p for m, p in hub.requests if m == "GET" and "/tree/" in p]
        assert len(pages) == -(-len(entries) // 3) > 1
        for path, content in FILES.items():
            f = hub.file(REPO, path)
            assert files[path].size == len(content)
            assert files[path].blob_id == f.oid
            if f.lfs:
                assert files[path].lfs is not None
                assert files[path].lfs.sha256 == hashlib.sha256(content).hexdigest()
            else:
                assert files[path].lfs is None
                assert files[path].blob_id == git_blob_sha1(content)

    def test_lfs_rule_and_default(self, hub: FakeHub) -> None:
        """Big files and weight suffixes are LFS by default; a custom rule overrides it."""
        assert hub.file(REPO, "weights/part-00001.bin").lfs
        assert hub.file(REPO, "weights/notes.txt").lfs
        assert not hub.file(REPO, "a/top.txt").lfs
        hub.add_repo("org/plain", {"model.safetensors": b"\0" * 4096}, lfs=lambda path, data: False)
        assert not hub.file("org/plain", "model.safetensors").lfs

    def test_subfolder_non_recursive(self, hub: FakeHub) -> None:
        """A folder path lists its direct children only, folders included."""
        entries = list(api(hub).list_repo_tree(REPO, path_in_repo="a/b"))
        assert {(type(e).__name__, e.path) for e in entries} == {
            ("RepoFolder", "a/b/c"),
            ("RepoFile", "a/b/leaf.txt"),
        }

    def test_missing_folder_is_entry_not_found(self, hub: FakeHub) -> None:
        """Listing a folder that does not exist raises RemoteEntryNotFoundError."""
        with pytest.raises(RemoteEntryNotFoundError):
            list(api(hub).list_repo_tree(REPO, path_in_repo="nope"))

    def test_expand_adds_last_commit(self, hub: FakeHub) -> None:
        """expand=True entries carry lastCommit and a security status."""
        commit = api(hub).model_info(REPO).sha
        entry = next(e for e in api(hub).list_repo_tree(REPO, expand=True) if isinstance(e, RepoFile))
        assert entry.last_commit is not None
        assert entry.last_commit.oid == commit
        assert entry.security is not None
        assert entry.security.safe

    def test_paths_info(self, hub: FakeHub) -> None:
        """get_paths_info describes the asked files and folders and skips missing ones."""
        infos = api(hub).get_paths_info(REPO, ["config.json", "a", "missing"])
        assert {(type(i).__name__, i.path) for i in infos} == {
            ("RepoFile", "config.json"),
            ("RepoFolder", "a"),
        }


class TestErrors:
    def test_unknown_repo(self, hub: FakeHub) -> None:
        """An unknown repo raises RepositoryNotFoundError, anonymous or with a token."""
        with pytest.raises(RepositoryNotFoundError):
            api(hub).model_info("org/missing")
        with pytest.raises(RepositoryNotFoundError):
            api(hub, TOKEN).model_info("org/missing")

    def test_unknown_revision(self, hub: FakeHub) -> None:
        """An unknown branch raises RevisionNotFoundError, in info, tree and download."""
        with pytest.raises(RevisionNotFoundError):
            api(hub).model_info(REPO, revision="nope")
        with pytest.raises(RevisionNotFoundError):
            list(api(hub).list_repo_tree(REPO, revision="nope"))

    def test_unknown_file(self, hub: FakeHub, tmp_path: Path) -> None:
        """Downloading a missing file raises the remote EntryNotFoundError."""
        with pytest.raises(RemoteEntryNotFoundError) as info:
            hf_hub_download(REPO, "missing.txt", cache_dir=tmp_path, endpoint=hub.url, token=False)
        assert isinstance(info.value, EntryNotFoundError)

    def test_gated_repo_needs_a_token_to_download(self, hub: FakeHub, tmp_path: Path) -> None:
        """A gated repo's metadata is public, its files raise GatedRepoError without a token."""
        hub.add_repo("org/gated", {"config.json": b"{}"}, gated=True)
        assert api(hub).model_info("org/gated").gated == "manual"
        with pytest.raises(GatedRepoError):
            hf_hub_download("org/gated", "config.json", cache_dir=tmp_path, endpoint=hub.url, token=False)
        path = hf_hub_download("org/gated", "config.json", cache_dir=tmp_path, endpoint=hub.url, token=TOKEN)
        assert Path(path).read_bytes() == b"{}"

    def test_gated_api(self, hub: FakeHub) -> None:
        """With gated_api set, the metadata of a gated repo needs a token too."""
        hub.add_repo("org/gated", {"config.json": b"{}"}, gated=True)
        hub.gated_api = True
        with pytest.raises(GatedRepoError):
            api(hub).model_info("org/gated")
        with pytest.raises(GatedRepoError):
            list(api(hub).list_repo_tree("org/gated"))
        assert api(hub, TOKEN).model_info("org/gated").id == "org/gated"

    def test_private_repo_is_invisible_without_token(self, hub: FakeHub) -> None:
        """A private repo raises RepositoryNotFoundError anonymously and works with a token."""
        commit = hub.add_repo("org/private", {"config.json": b"{}"}, private=True)
        with pytest.raises(RepositoryNotFoundError) as info:
            api(hub).model_info("org/private")
        assert info.value.response.status_code == 401
        assert api(hub, TOKEN).model_info("org/private").sha == commit
        assert hub.authorized[-2:] == [False, True]

    def test_invalid_token_is_refused(self, hub: FakeHub) -> None:
        """A token that is not hf_... gets the Hub's 401 invalid-credentials error, not RepoNotFound."""
        with pytest.raises(HfHubHTTPError) as info:
            api(hub, "not-a-token").model_info(REPO)
        assert info.value.response.status_code == 401
        assert not isinstance(info.value, RepositoryNotFoundError)

    def test_rate_limit_surfaces_retry_after(self, hub: FakeHub) -> None:
        """A 429 reaches the caller as HfHubHTTPError with its Retry-After header."""
        hub.fail(429, retry_after=7)
        with pytest.raises(HfHubHTTPError) as info:
            api(hub).model_info(REPO)  # a single GET: no huggingface_hub backoff
        assert info.value.response.status_code == 429
        assert info.value.response.headers["Retry-After"] == "7"
        assert api(hub).model_info(REPO).id == REPO  # only the next request failed

    def test_raw_failure_headers(self, hub: FakeHub) -> None:
        """fail() sets status, Retry-After and X-Error-Code, `times` times, on matching paths only."""
        hub.fail(503, times=2, retry_after=3, error_code="Overloaded", path_contains="/tree/")
        url = f"{hub.url}/api/models/{REPO}/tree/main"
        with httpx2.Client() as client:
            assert client.get(f"{hub.url}/api/models/{REPO}").status_code == 200
            for _ in range(2):
                r = client.get(url)
                assert r.status_code == 503
                assert (r.headers["Retry-After"], r.headers["X-Error-Code"]) == ("3", "Overloaded")
            assert client.get(url).status_code == 200

    def test_server_error(self, hub: FakeHub) -> None:
        """A 500 raises HfHubHTTPError with that status."""
        hub.fail(500)
        with pytest.raises(HfHubHTTPError) as info:
            api(hub).model_info(REPO)
        assert info.value.response.status_code == 500

    def test_injected_error_code(self, hub: FakeHub) -> None:
        """An injected X-Error-Code maps to its huggingface_hub exception."""
        hub.fail(404, error_code="RevisionNotFound")
        with pytest.raises(RevisionNotFoundError):
            api(hub).model_info(REPO)

    def test_garbage_is_not_json(self, hub: FakeHub) -> None:
        """garbage() answers 200 with a body the client cannot decode."""
        hub.garbage()
        with pytest.raises(ValueError):
            api(hub).model_info(REPO)

    def test_hang_triggers_client_timeout(self, hub: FakeHub) -> None:
        """hang() stalls the answer past the client's timeout; stop() does not wait for it."""
        hub.hang(30)
        started = time.monotonic()
        with pytest.raises(httpx2.TimeoutException):
            api(hub).model_info(REPO, timeout=0.3)
        assert time.monotonic() - started < 2
        started = time.monotonic()
        hub.stop()
        assert time.monotonic() - started < 2


class TestDownload:
    @pytest.mark.parametrize("path", ["config.json", "model.safetensors", UNICODE_PATH])
    def test_hf_hub_download(self, hub: FakeHub, tmp_path: Path, path: str) -> None:
        """hf_hub_download fetches regular and LFS files into the cache, keyed by their ETag."""
        commit = api(hub).model_info(REPO).sha
        local = Path(hf_hub_download(REPO, path, cache_dir=tmp_path, endpoint=hub.url, token=False))
        assert local.read_bytes() == FILES[path]
        assert local.resolve().name == hub.file(REPO, path).etag
        assert f"snapshots/{commit}/" in local.as_posix()

    def test_download_at_commit(self, hub: FakeHub, tmp_path: Path) -> None:
        """A pinned commit serves the files of that commit after the branch moved."""
        old = api(hub).model_info(REPO).sha
        hub.add_repo(REPO, {"config.json": b"{new}"})
        local = hf_hub_download(REPO, "config.json", revision=old, cache_dir=tmp_path, endpoint=hub.url)
        assert Path(local).read_bytes() == FILES["config.json"]

    def test_lfs_redirect_headers(self, hub: FakeHub) -> None:
        """/resolve answers an LFS file with a 302 carrying X-Linked-Etag, X-Linked-Size and X-Repo-Commit."""
        f = hub.file(REPO, "model.safetensors")
        commit = api(hub).model_info(REPO).sha
        r = httpx2.head(hub.resolve_url(REPO, "model.safetensors"))
        assert r.status_code == 302
        assert r.headers["X-Linked-Etag"] == f'"{f.sha256}"'
        assert r.headers["X-Linked-Size"] == str(f.size)
        assert r.headers["X-Repo-Commit"] == commit
        assert r.headers["Location"].startswith(f"{hub.url}/cdn/{f.sha256}?")
        body = httpx2.get(hub.resolve_url(REPO, "model.safetensors"), follow_redirects=True)
        assert body.content == FILES["model.safetensors"]
        disposition = body.headers["Content-Disposition"]
        assert disposition.startswith("attachment; filename*=UTF-8''model.safetensors;")

    def test_cross_origin_cdn_drops_the_token(self, hub: FakeHub, tmp_path: Path) -> None:
        """With cdn_host on another origin the client reads the 302 and fetches the CDN without the token."""
        hub.cdn_host = "localhost"
        hub.requests.clear()
        local = hf_hub_download(REPO, "model.safetensors", cache_dir=tmp_path, endpoint=hub.url, token=TOKEN)
        assert Path(local).read_bytes() == FILES["model.safetensors"]
        calls = [(m, p.split("/")[1]) for m, p in hub.requests]
        assert calls == [("HEAD", "org"), ("GET", "cdn")]
        assert hub.authorized == [True, False]

    def test_cdn_url_needs_its_signature(self, hub: FakeHub) -> None:
        """A CDN URL with a tampered query is refused."""
        location = httpx2.head(hub.resolve_url(REPO, "model.safetensors")).headers["Location"]
        assert httpx2.get(location).status_code == 200
        assert httpx2.get(location.replace("model.safetensors", "config.json")).status_code == 403

    def test_snapshot_download_local_dir(self, hub: FakeHub, tmp_path: Path) -> None:
        """snapshot_download(local_dir=...) writes every file of the repo with its content."""
        hub.page_size = 4
        target = tmp_path / "out"
        snapshot_download(REPO, local_dir=target, endpoint=hub.url, token=False, cache_dir=tmp_path / "c")
        for path, content in FILES.items():
            assert (target / path).read_bytes() == content

    def test_range_request(self, hub: FakeHub) -> None:
        """A byte range gets 206 with Content-Range and exactly that slice, for LFS and regular files."""
        data = FILES["model.safetensors"]
        with httpx2.Client(follow_redirects=True) as client:
            r = client.get(hub.resolve_url(REPO, "model.safetensors"), headers={"Range": "bytes=100-199"})
            assert (r.status_code, r.content) == (206, data[100:200])
            assert r.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
            r = client.get(hub.resolve_url(REPO, "model.safetensors"), headers={"Range": "bytes=10000-"})
            assert (r.status_code, r.content) == (206, data[10000:])
            r = client.get(hub.resolve_url(REPO, "config.json"), headers={"Range": "bytes=-5"})
            assert (r.status_code, r.content) == (206, FILES["config.json"][-5:])

    def test_range_past_the_end_and_if_range(self, hub: FakeHub) -> None:
        """A range past the end is 416; a stale If-Range gets the whole file with 200."""
        url = hub.resolve_url(REPO, "config.json")
        size = len(FILES["config.json"])
        r = httpx2.get(url, headers={"Range": f"bytes={size}-"})
        assert (r.status_code, r.headers["Content-Range"]) == (416, f"bytes */{size}")
        r = httpx2.get(url, headers={"Range": "bytes=2-", "If-Range": '"stale"'})
        assert (r.status_code, r.content) == (200, FILES["config.json"])
        etag = r.headers["ETag"]
        r = httpx2.get(url, headers={"Range": "bytes=2-", "If-Range": etag})
        assert (r.status_code, r.content) == (206, FILES["config.json"][2:])

    def test_corrupt_serves_other_bytes_but_same_metadata(self, hub: FakeHub) -> None:
        """corrupt() changes the downloaded bytes while the tree still advertises the original."""
        bad = b"\xff" * len(FILES["model.safetensors"])
        hub.corrupt(REPO, "model.safetensors", bad)
        r = httpx2.get(hub.resolve_url(REPO, "model.safetensors"), follow_redirects=True)
        assert r.content == bad
        entry = next(e for e in api(hub).list_repo_tree(REPO) if e.path == "model.safetensors")
        assert isinstance(entry, RepoFile)
        assert entry.lfs is not None
        assert entry.lfs.sha256 == hashlib.sha256(FILES["model.safetensors"]).hexdigest()

    def test_rate_throttles_bodies(self, hub: FakeHub) -> None:
        """With rate set, a body takes about size/rate seconds."""
        hub.rate = 20_000
        started = time.monotonic()
        r = httpx2.get(hub.resolve_url(REPO, "model.safetensors"), follow_redirects=True)
        elapsed = time.monotonic() - started
        assert r.content == FILES["model.safetensors"]
        assert 0.35 < elapsed < 3

    def test_hf_cli_download(self, hub: FakeHub, tmp_path: Path) -> None:
        """The `hf download` command line works against the fake Hub through HF_ENDPOINT."""
        hf = Path(sys.executable).with_name("hf")
        if not hf.exists():
            pytest.skip("hf CLI not installed")
        env = {
            **os.environ,
            "HF_ENDPOINT": hub.url,
            "HF_HOME": str(tmp_path / "home"),
            "HF_HUB_DISABLE_UPDATE_CHECK": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }
        target = tmp_path / "out"
        subprocess.run(
            [str(hf), "download", REPO, "--local-dir", str(target)],
            env=env,
            check=True,
            capture_output=True,
            timeout=60,
        )
        assert (target / "a/b/c/deep.json").read_bytes() == FILES["a/b/c/deep.json"]
        assert (target / "model.safetensors").read_bytes() == FILES["model.safetensors"]

    @pytest.mark.e2e
    @pytest.mark.parametrize("tool", ["curl", "wget"])
    def test_real_downloader_resumes(self, hub: FakeHub, tmp_path: Path, tool: str) -> None:
        """curl -C - and wget -c resume a truncated LFS download through the redirect."""
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")
        target = tmp_path / "model.safetensors"
        target.write_bytes(FILES["model.safetensors"][:3000])
        url = hub.resolve_url(REPO, "model.safetensors")
        argv = {
            "curl": ["curl", "-sSfL", "-C", "-", "-o", str(target), url],
            "wget": ["wget", "-q", "-c", "-O", str(target), url],
        }[tool]
        subprocess.run(argv, check=True, timeout=30)
        assert target.read_bytes() == FILES["model.safetensors"]
        assert hub.requests[-1][0] == "GET"


class TestLifecycle:
    def test_stop_joins_every_thread(self) -> None:
        """stop() closes kept-alive connections and joins the server and connection threads."""
        with FakeHub() as hub, httpx2.Client() as client:
            hub.add_repo(REPO, {"a": b"b"})
            assert client.get(f"{hub.url}/api/models/{REPO}").status_code == 200
            assert any(t.name.startswith("fakehub-") for t in threading.enumerate())
            hub.stop()
            assert not [t.name for t in threading.enumerate() if t.name.startswith("fakehub-")]

    def test_requests_are_recorded(self, hub: FakeHub) -> None:
        """Every request is recorded as (method, path) with whether a token was sent."""
        hub.requests.clear()
        hub.authorized.clear()
        httpx2.head(hub.resolve_url(REPO, "config.json"), headers={"Authorization": f"Bearer {TOKEN}"})
        assert hub.requests == [("HEAD", f"/{REPO}/resolve/main/config.json")]
        assert hub.authorized == [True]

    def test_script_serves_until_interrupted(self, tmp_path: Path) -> None:
        """`python tests/fakehub.py --port 0` serves a demo repo and exits 0 on Ctrl-C."""
        script = Path(__file__).with_name("fakehub.py")
        proc = subprocess.Popen(
            [sys.executable, str(script), "--port", "0", "--repo", "demo/repo", "--size-mib", "0.1"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().split()[3].rstrip(":")
            info = HfApi(endpoint=url, token=False).model_info("demo/repo", files_metadata=True)
            assert "model.safetensors" in {s.rfilename for s in info.siblings or []}
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
