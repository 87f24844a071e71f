"""Manifests from the Hub through huggingface_hub, cached on disk per (type, repo, commit).

The only module that imports huggingface_hub; it is imported lazily, so a run that can
answer from the cache never pays for it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .manifest import Manifest, ManifestEntry, RepoRef, SpecError, load_manifest_text

if TYPE_CHECKING:
    import httpx2

_HEX40 = re.compile(r"^[0-9a-f]{40}$")


class HubError(Exception):
    """The Hub could not give a manifest. `retry_in` is how long to wait before asking again."""

    def __init__(self, message: str, *, retry_in: float = 0.0, permanent: bool = False) -> None:
        super().__init__(message)
        self.retry_in = retry_in
        self.permanent = permanent


class _Unavailable(Exception):
    """Raised inside the HTTP client so huggingface_hub's own retry loop does not sleep on it.

    The daemon backs off itself (and keeps watching meanwhile); `check` fails fast with exit 69.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    import email.utils  # only a Retry-After given as a date needs it

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _make_client_factory(timeout: float) -> Callable[[], httpx2.Client]:
    import httpx2

    limits = httpx2.Timeout(timeout, connect=min(timeout, 10.0))

    def set_timeout(request: httpx2.Request) -> None:
        # huggingface_hub 2.x passes timeout=None on some calls and list_repo_tree takes none at all:
        # a request hook is the one place every request passes through.
        request.extensions["timeout"] = limits.as_dict()

    class GuardedClient(httpx2.Client):
        def send(self, request: httpx2.Request, **kwargs: Any) -> httpx2.Response:
            try:
                response = super().send(request, **kwargs)
            except httpx2.TimeoutException as exc:
                host = request.url.host
                raise _Unavailable(f"no answer within {timeout:g}s from {host} ({type(exc).__name__})") from None
            except httpx2.TransportError as exc:
                raise _Unavailable(f"cannot reach {request.url.host}: {exc or type(exc).__name__}") from None
            if response.status_code == 429 or response.status_code >= 500:
                retry = _retry_after(response.headers.get("Retry-After"))
                response.close()
                what = "rate limited (429)" if response.status_code == 429 else f"server error {response.status_code}"
                raise _Unavailable(f"{request.url.host} answered {what}", retry)
            return response

    def factory() -> httpx2.Client:
        return GuardedClient(event_hooks={"request": [set_timeout]}, follow_redirects=True, timeout=limits)

    return factory


@dataclass(frozen=True)
class Loaded:
    """A manifest ready for use, where it came from, and the Hub error if the cache stood in for it."""

    manifest: Manifest
    source: str  # hub | cache | file
    error: HubError | None = None


def atomic_write(path: Path, data: bytes, *, make_parents: bool = True) -> None:
    """Write, fsync, rename over `path`, fsync the folder: a reader sees the old or the new file, whole."""
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    import tempfile  # only a run that writes a cache file or an export needs it

    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def read_token_file(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise HubError(f"hub.token_file: cannot read {path}: {exc.strerror}", permanent=True) from None
    if not token:
        raise HubError(f"hub.token_file: {path} is empty", permanent=True)
    return token


class Hub:
    """Fetches and caches manifests. Thread-safe for concurrent `load` calls on different repos."""

    def __init__(self, endpoint: str, cache_dir: Path, *, token: str | None = None, ttl: float = 3600.0,
                 timeout: float = 30.0) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.cache_dir = cache_dir
        self.ttl = ttl
        self.timeout = timeout
        self._token = token
        self._api: Any = None
        self._memo: dict[str, tuple[str, dict[str, ManifestEntry]]] = {}
        self._memo_lock = threading.Lock()

    # --- cache ---------------------------------------------------------------------------------

    def _repo_dir(self, ref: RepoRef) -> Path:
        return self.cache_dir / f"{ref.repo_type}s" / ref.repo_id.replace("/", "--")

    def _ref_path(self, ref: RepoRef) -> Path:
        return self._repo_dir(ref) / "refs" / (quote(ref.revision, safe="") + ".json")

    def _manifest_path(self, ref: RepoRef, commit: str) -> Path:
        # JSON lines, one small array per file: read line by line, a 100k-file manifest never
        # exists twice in memory (as a parsed document and as entries)
        return self._repo_dir(ref) / f"{commit}.jsonl"

    def _read_cache(self, path: Path) -> dict[str, ManifestEntry] | None:
        key = str(path.parent)
        with self._memo_lock:
            hit = self._memo.get(key)
        if hit is not None and hit[0] == path.name:
            return hit[1]
        entries: dict[str, ManifestEntry] = {}
        try:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    p, size, sha, blob = json.loads(line)
                    entries[p] = ManifestEntry(p, size, sha, blob)
        except (OSError, ValueError, TypeError):
            return None
        with self._memo_lock:
            # the same commit loaded for several watches, or again after a TTL, shares one copy
            self._memo[key] = (path.name, entries)  # one commit per repo: memory does not grow with history
        return entries

    def cached(self, ref: RepoRef) -> tuple[Manifest, float] | None:
        """The last manifest resolved for this repo and revision, and when it was resolved."""
        commit, resolved_at = ref.revision, 0.0
        if not _HEX40.fullmatch(ref.revision):
            try:
                info = json.loads(self._ref_path(ref).read_text(encoding="utf-8"))
                commit, resolved_at = str(info["commit"]), float(info["resolved_at"])
            except (OSError, ValueError, KeyError, TypeError):
                return None
            if info.get("endpoint") not in (None, self.endpoint):
                return None
        entries = self._read_cache(self._manifest_path(ref, commit))
        if entries is None:
            return None
        return Manifest(ref, commit, entries, source="cache"), resolved_at

    def manifest_at(self, ref: RepoRef, commit: str) -> Manifest | None:
        """The cached manifest of `ref` at a known commit, or None (never asks the Hub)."""
        hit = self.cached(RepoRef(ref.repo_type, ref.repo_id, commit))
        return None if hit is None else Manifest(ref, commit, hit[0].entries, source="cache")

    def _store(self, manifest: Manifest) -> None:
        ref = manifest.repo
        path = self._manifest_path(ref, manifest.commit)
        if not path.exists():
            lines = (json.dumps([e.rfilename, e.size, e.sha256, e.blob_id], ensure_ascii=False) + "\n"
                     for e in manifest.entries.values())
            atomic_write(path, "".join(lines).encode("utf-8"))
        with self._memo_lock:
            self._memo[str(path.parent)] = (path.name, dict(manifest.entries))
        if ref.revision != manifest.commit:
            info = {"commit": manifest.commit, "resolved_at": time.time(), "endpoint": self.endpoint}
            atomic_write(self._ref_path(ref), json.dumps(info).encode("utf-8"))

    # --- hub -----------------------------------------------------------------------------------

    def _hf(self) -> Any:
        if self._api is None:
            # read by huggingface_hub at import: without it, building a user agent asks the public Hub
            # (not our endpoint) for a registry, which a mirror user behind a firewall waits seconds for
            os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
            from huggingface_hub import HfApi, set_client_factory

            set_client_factory(_make_client_factory(self.timeout))
            self._api = HfApi(endpoint=self.endpoint, token=self._token, library_name="hfwatchd")
        return self._api

    def close(self) -> None:
        if self._api is not None:
            from huggingface_hub import set_client_factory
            from huggingface_hub.utils._http import default_client_factory

            set_client_factory(default_client_factory)
            self._api = None

    def _translate(self, ref: RepoRef, exc: BaseException) -> HubError:
        """huggingface_hub's exceptions, once, as messages a user can act on."""
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        if isinstance(exc, _Unavailable):
            # without a Retry-After the server sets no minimum; the caller's backoff decides
            return HubError(f"{ref.key}: {exc}", retry_in=exc.retry_after or 0.0)
        if isinstance(exc, GatedRepoError):
            return HubError(
                f"{ref.key} is gated: accept its conditions on the Hub, then set HF_TOKEN or hub.token_file",
                retry_in=600, permanent=True,
            )
        if isinstance(exc, RepositoryNotFoundError):
            hint = "" if self._token else " (if it is private, set HF_TOKEN or hub.token_file)"
            return HubError(f"{ref.key}: no such {ref.repo_type} repo on {self.endpoint}{hint}",
                            retry_in=600, permanent=True)
        if isinstance(exc, RevisionNotFoundError):
            return HubError(f"{ref.key}: no revision {ref.revision!r} (a branch, tag or commit)",
                            retry_in=600, permanent=True)
        if isinstance(exc, HfHubHTTPError):
            status = exc.response.status_code if exc.response is not None else "?"
            return HubError(f"{ref.key}: the Hub answered HTTP {status}")
        if isinstance(exc, (ValueError, KeyError, TypeError)):
            return HubError(f"{ref.key}: the Hub sent an answer that is not a repo listing ({exc})")
        return HubError(f"{ref.key}: {type(exc).__name__}: {exc}")

    def fetch(self, ref: RepoRef) -> Manifest:
        """Resolve the revision to a commit and list every file at that commit."""
        api = self._hf()
        try:
            commit = ref.revision
            if not _HEX40.fullmatch(commit):
                info = api.repo_info(ref.repo_id, repo_type=ref.repo_type, revision=ref.revision,
                                     timeout=self.timeout)
                commit = str(info.sha)
                if not _HEX40.fullmatch(commit):
                    raise ValueError(f"commit {commit!r} is not a 40-hex sha")  # noqa: TRY301 - translated below
                hit = self.cached(RepoRef(ref.repo_type, ref.repo_id, commit))
                if hit is not None:
                    m = Manifest(ref, commit, hit[0].entries, source="cache")
                    self._store(m)  # refresh the branch -> commit resolution
                    return m
            entries: dict[str, ManifestEntry] = {}
            for item in api.list_repo_tree(ref.repo_id, repo_type=ref.repo_type, revision=commit, recursive=True):
                if not hasattr(item, "blob_id"):
                    continue  # a folder
                lfs = getattr(item, "lfs", None)
                sha = lfs.sha256 if lfs is not None else None
                entries[item.path] = ManifestEntry(item.path, int(item.size), sha, item.blob_id)
        except HubError:
            raise
        except Exception as exc:  # noqa: BLE001 - everything from the network layer is translated here, once
            raise self._translate(ref, exc) from None
        manifest = Manifest(ref, commit, entries, source="hub")
        with contextlib.suppress(OSError):  # a cache we cannot write only costs a refetch next time
            self._store(manifest)
        return manifest

    def load(self, ref: RepoRef, *, manifest_file: Path | None = None, refresh: bool = False) -> Loaded:
        """The manifest to judge with: a local file, a fresh cache, the Hub, or the stale cache."""
        if manifest_file is not None:
            try:
                text = manifest_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise HubError(f"manifest file {manifest_file}: {exc.strerror}", permanent=True) from None
            except UnicodeDecodeError:
                raise HubError(f"manifest file {manifest_file}: not UTF-8 JSON", permanent=True) from None
            try:
                m = load_manifest_text(text, ref, where=str(manifest_file))
            except SpecError as exc:
                raise HubError(str(exc), permanent=True) from None
            return Loaded(m, "file")
        hit = self.cached(ref)
        if hit is not None and not refresh and (_HEX40.fullmatch(ref.revision) or time.time() - hit[1] < self.ttl):
            return Loaded(hit[0], "cache")
        try:
            m = self.fetch(ref)
        except HubError as err:
            if hit is not None:
                return Loaded(hit[0], "cache", error=err)
            raise
        return Loaded(m, m.source)

