"""Manifests from the Hub through huggingface_hub, cached on disk per (type, repo, commit).

The only module that imports huggingface_hub; it is imported lazily, so a run that can
answer from the cache never pays for it.

Every cache file proves itself complete: a manifest file's first line carries the commit, the
number of entries and the sha256 of the lines after it; a ref file carries the sha256 of its own
fields. Both are written atomically and checked on every load. A file that fails (cut, garbled,
short, or written by an older version, which had no such header) is reported through
`on_invalid(path, error)`, ignored, fetched again and rewritten: never a short manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from .manifest import Manifest, ManifestEntry, RepoRef, SpecError, load_manifest_text

if TYPE_CHECKING:
    import httpx2

_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_R = TypeVar("_R")
MANIFEST_FORMAT = "hfwatchd-manifest/2"  # 1 (no header) was written before caches proved themselves complete
REF_FORMAT = "hfwatchd-ref/2"

InvalidCache = Callable[[Path, str], None]
"""Told (path, what is wrong) when a cache file fails its check; the daemon logs `manifest.cache_invalid`."""


class _CacheInvalid(Exception):
    """A cache file that cannot prove it is whole; the message says why."""


def encode_manifest_cache(commit: str, entries: Mapping[str, ManifestEntry]) -> bytes:
    """The cache file of one commit: a header line proving the JSON lines after it complete."""
    body = "".join(json.dumps([e.rfilename, e.size, e.sha256, e.blob_id], ensure_ascii=False) + "\n"
                   for e in entries.values()).encode("utf-8")
    header = {"format": MANIFEST_FORMAT, "commit": commit, "entries": len(entries),
              "sha256": hashlib.sha256(body).hexdigest()}
    return json.dumps(header).encode("ascii") + b"\n" + body


NL = b"\n"


def decode_manifest_cache(path: Path, commit: str) -> dict[str, ManifestEntry]:
    """Read a manifest cache file, checked whole against its header; `_CacheInvalid` if it fails."""
    entries: dict[str, ManifestEntry] = {}
    with open(path, "rb") as f:
        try:
            header = json.loads(f.readline())
        except ValueError:
            raise _CacheInvalid("its first line is not a header: damaged, or not written by hfwatchd") from None
        if not isinstance(header, dict) or header.get("format") != MANIFEST_FORMAT:
            raise _CacheInvalid("written by an older hfwatchd (no completeness header)")
        want_n, want_sha = header.get("entries"), header.get("sha256")
        if header.get("commit") != commit or not isinstance(want_n, int) or not isinstance(want_sha, str):
            raise _CacheInvalid("its header is damaged or names another commit")
        body = f.read()
    # the header's count and digest first: a file that passes them is byte for byte what was written,
    # so the entries can be parsed in large batches (one json.loads per 4096 lines, not per line)
    if body and not body.endswith(b"\n"):
        raise _CacheInvalid(f"cut in the middle of line {body.count(NL) + 2}")
    lines = body.split(b"\n")[:-1] if body else []
    if len(lines) != want_n:
        raise _CacheInvalid(f"{len(lines)} of the {want_n} entries its header promises")
    if hashlib.sha256(body).hexdigest() != want_sha:
        raise _CacheInvalid("its entries do not match the sha256 in its header")
    del body
    for start in range(0, len(lines), 4096):
        try:
            batch = json.loads(b"[" + b",".join(lines[start:start + 4096]) + b"]")
        except ValueError:
            raise _CacheInvalid(f"lines {start + 2}-{start + 4097} are not [path, size, sha256, blob_id]") from None
        for item in batch:
            if not (isinstance(item, list) and len(item) == 4):
                raise _CacheInvalid("an entry is not [path, size, sha256, blob_id]")
            p, size, sha, blob = item
            if not (isinstance(p, str) and isinstance(size, int) and isinstance(sha, (str, type(None)))
                    and isinstance(blob, (str, type(None)))):
                raise _CacheInvalid("an entry is not [path, size, sha256, blob_id]")
            entries[p] = ManifestEntry(p, size, sha, blob)
    return entries


def _ref_digest(info: dict[str, Any]) -> str:
    fields = {k: info.get(k) for k in ("format", "commit", "resolved_at", "endpoint")}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode("utf-8")).hexdigest()


def encode_ref(commit: str, resolved_at: float, endpoint: str) -> bytes:
    info: dict[str, Any] = {"format": REF_FORMAT, "commit": commit, "resolved_at": resolved_at, "endpoint": endpoint}
    info["sha256"] = _ref_digest(info)
    return json.dumps(info).encode("utf-8") + b"\n"


def decode_ref(data: bytes) -> tuple[str, float, str | None]:
    """(commit, resolved_at, endpoint) of a ref file; `_CacheInvalid` if it fails its check."""
    try:
        info = json.loads(data)
    except ValueError:
        raise _CacheInvalid("not JSON: cut or garbled") from None
    if not isinstance(info, dict) or info.get("format") != REF_FORMAT:
        raise _CacheInvalid("written by an older hfwatchd (no checksum)")
    if info.get("sha256") != _ref_digest(info):
        raise _CacheInvalid("its fields do not match its sha256")
    commit, resolved_at, endpoint = info.get("commit"), info.get("resolved_at"), info.get("endpoint")
    if not (isinstance(commit, str) and _HEX40.fullmatch(commit) and isinstance(resolved_at, (int, float))
            and isinstance(endpoint, (str, type(None)))):
        raise _CacheInvalid("its fields are not a commit, a time and an endpoint")
    return commit, float(resolved_at), endpoint


class HubError(Exception):
    """The Hub could not give a manifest. `retry_in` is how long to wait before asking again."""

    def __init__(self, message: str, *, retry_in: float = 0.0, permanent: bool = False) -> None:
        super().__init__(message)
        self.retry_in = retry_in
        self.permanent = permanent

    @property
    def exit_code(self) -> int:
        """78 when the Hub answered no (the configured repo is wrong), 69 when it could not be reached."""
        return 78 if self.permanent else 69


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
                 timeout: float = 30.0, on_invalid: InvalidCache | None = None) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.cache_dir = cache_dir
        self.ttl = ttl
        self.timeout = timeout
        self.on_invalid = on_invalid
        self._token = token
        self._api: Any = None
        self._memo: dict[str, tuple[str, Mapping[str, ManifestEntry]]] = {}
        self._memo_lock = threading.Lock()
        # cache files found invalid, as (path, mtime_ns, size): reported once, not at every retry,
        # and rewritten at the next fetch even though they exist
        self._invalid: set[tuple[str, int, int]] = set()

    # --- cache ---------------------------------------------------------------------------------

    def _repo_dir(self, ref: RepoRef) -> Path:
        return self.cache_dir / f"{ref.repo_type}s" / ref.repo_id.replace("/", "--")

    def _ref_path(self, ref: RepoRef) -> Path:
        return self._repo_dir(ref) / "refs" / (quote(ref.revision, safe="") + ".json")

    def _manifest_path(self, ref: RepoRef, commit: str) -> Path:
        # JSON lines, one small array per file: read line by line, a 100k-file manifest never
        # exists twice in memory (as a parsed document and as entries)
        return self._repo_dir(ref) / f"{commit}.jsonl"

    def _check(self, path: Path, read: Callable[[], _R]) -> _R | None:
        """`read()` of a cache file, or None when it is absent or invalid (reported once per version of the file)."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._report(path, None, f"cannot read it: {exc.strerror}")
            return None
        stamp = (str(path), st.st_mtime_ns, st.st_size)
        with self._memo_lock:
            if stamp in self._invalid:
                return None
        try:
            return read()
        except _CacheInvalid as exc:
            self._report(path, stamp, str(exc))
        except OSError as exc:
            self._report(path, stamp, f"cannot read it: {exc.strerror}")
        return None

    def _report(self, path: Path, stamp: tuple[str, int, int] | None, error: str) -> None:
        if stamp is not None:
            with self._memo_lock:
                self._invalid.add(stamp)
        if self.on_invalid is not None:
            self.on_invalid(path, error)

    def _was_invalid(self, path: Path) -> bool:
        with self._memo_lock:
            return any(p == str(path) for p, _, _ in self._invalid)

    def _read_cache(self, path: Path, commit: str) -> Mapping[str, ManifestEntry] | None:
        key = str(path.parent)
        with self._memo_lock:
            hit = self._memo.get(key)
        if hit is not None and hit[0] == path.name:
            return hit[1]
        entries = self._check(path, lambda: decode_manifest_cache(path, commit))
        if entries is None:
            return None
        with self._memo_lock:
            # the same commit loaded for several watches, or again after a TTL, shares one copy
            self._memo[key] = (path.name, entries)  # one commit per repo: memory does not grow with history
        return entries

    def cached(self, ref: RepoRef) -> tuple[Manifest, float] | None:
        """The last manifest resolved for this repo and revision, and when it was resolved."""
        commit, resolved_at = ref.revision, 0.0
        if not _HEX40.fullmatch(ref.revision):
            path = self._ref_path(ref)
            resolved = self._check(path, lambda: decode_ref(path.read_bytes()))
            if resolved is None:
                return None
            commit, resolved_at, endpoint = resolved
            if endpoint not in (None, self.endpoint):
                return None
        entries = self._read_cache(self._manifest_path(ref, commit), commit)
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
        if not path.exists() or self._was_invalid(path):
            atomic_write(path, encode_manifest_cache(manifest.commit, manifest.entries))
        with self._memo_lock:
            self._memo[str(path.parent)] = (path.name, manifest.entries)  # shared, not copied: 3 MiB at 100k
        if ref.revision != manifest.commit:
            atomic_write(self._ref_path(ref), encode_ref(manifest.commit, time.time(), self.endpoint))

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

