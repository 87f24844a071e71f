"""Pure data: repo specs, manifest entries, the lookup index, and the verdict rules.

Nothing here touches files, threads or the network, so every rule is testable with values.
"""

from __future__ import annotations

import enum
import json
import posixpath
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union
from urllib.parse import quote, unquote

_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?$|^[A-Za-z0-9]$")
HEX40 = re.compile(r"^[0-9a-f]{40}$")  # a commit sha or a git blob id
_HEX64 = re.compile(r"^[0-9a-f]{64}$")

if sys.version_info >= (3, 11):
    _StrEnum = enum.StrEnum
else:  # pragma: no cover - Python 3.10

    class _StrEnum(str, enum.Enum):
        def __str__(self) -> str:
            return str(self.value)


class Status(_StrEnum):
    """A file's state; the values are the wire format (log events, JSON, the state store)."""

    PENDING = "pending"  # seen, not judged yet
    MATCHED = "matched"
    MISMATCH = "mismatch"  # same size or larger, wrong content: download again
    INCOMPLETE = "incomplete"  # shorter than expected, or a downloader's control file is beside it
    MISSING = "missing"  # in the manifest, no local file
    UNKNOWN = "unknown"  # a local file that matches no manifest entry


MATCHED, MISMATCH, INCOMPLETE = Status.MATCHED, Status.MISMATCH, Status.INCOMPLETE
MISSING, UNKNOWN, PENDING = Status.MISSING, Status.UNKNOWN, Status.PENDING
STATUSES = tuple(Status)
Algorithm = Literal["sha256", "git-sha1"]  # sha256 for LFS / Xet files, git blob SHA-1 for the rest
SHA256: Algorithm = "sha256"
GIT_SHA1: Algorithm = "git-sha1"
MatchedBy = Literal["path", "name", "content"]  # how a local file was mapped to its entry (design.md 3)


class SpecError(ValueError):
    """A repo spec or manifest document that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True, order=True)
class RepoRef:
    """A repo as `hf://` paths write it: `org/name`, `datasets/org/name`, `spaces/org/name`, `@revision`."""

    repo_type: str
    repo_id: str
    revision: str = "main"

    @classmethod
    def parse(cls, spec: str) -> RepoRef:
        if not isinstance(spec, str) or not spec.strip():
            raise SpecError("a repo is written org/name, datasets/org/name or spaces/org/name, optionally @revision")
        text = spec.strip()
        revision = "main"
        if "@" in text:
            text, revision = text.split("@", 1)
            if not revision or any(c in revision for c in "\0\n\r\t \\") or ".." in revision:
                raise SpecError(f"bad revision in {spec!r}")
        parts = text.strip("/").split("/")
        repo_type = "model"
        if parts[0] in ("datasets", "spaces", "models"):
            repo_type = {"datasets": "dataset", "spaces": "space", "models": "model"}[parts[0]]
            parts = parts[1:]
        if (len(parts) not in (1, 2) or (len(parts) == 1 and repo_type != "model")
                or (len(parts) == 1 and parts[0] in ("datasets", "spaces", "models"))):
            raise SpecError(
                f"{spec!r} is not a repo: write org/name, datasets/org/name or spaces/org/name, optionally @revision"
            )
        for part in parts:
            if not _NAME_RE.fullmatch(part) or "--" in part or ".." in part:
                raise SpecError(f"{spec!r}: {part!r} is not a valid repo or organisation name")
        return cls(repo_type, "/".join(parts), revision)

    @property
    def key(self) -> str:
        """The repo without its revision, as written in specs: `datasets/org/name`."""
        return _PREFIX[self.repo_type] + self.repo_id

    def __str__(self) -> str:
        return self.key if self.revision == "main" else f"{self.key}@{self.revision}"

    def resolve_url(self, endpoint: str, commit: str, rfilename: str) -> str:
        return f"{endpoint.rstrip('/')}/{_PREFIX[self.repo_type]}{self.repo_id}/resolve/{commit}/{quote(rfilename)}"


def is_safe_path(rfilename: str) -> bool:
    """A manifest path that may be joined under a folder: relative, no `..`, no NUL, no backslash."""
    if not rfilename or "\0" in rfilename or "\\" in rfilename or rfilename.startswith("/"):
        return False
    parts = rfilename.split("/")
    return all(p not in ("", ".", "..") for p in parts)


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One file of a repo at one commit, with what its bytes must hash to."""

    rfilename: str
    size: int | None  # None only for seed manifests, which carry no sizes
    sha256: str | None  # LFS / Xet files
    blob_id: str | None  # git blob SHA-1 (for LFS files, that of the pointer)

    @property
    def algorithm(self) -> Algorithm:
        return SHA256 if self.sha256 else GIT_SHA1

    @property
    def expected(self) -> str:
        return (self.sha256 or self.blob_id) or ""

    @property
    def basename(self) -> str:
        return posixpath.basename(self.rfilename)

    @property
    def safe(self) -> bool:
        return is_safe_path(self.rfilename)


@dataclass(frozen=True)
class Manifest:
    """Every file of one repo at one commit."""

    repo: RepoRef
    commit: str
    entries: Mapping[str, ManifestEntry]
    source: str = "hub"  # hub | cache | file

    @property
    def unsafe(self) -> int:
        return sum(1 for e in self.entries.values() if not e.safe)

    def to_seed(self) -> dict[str, str]:
        """The `{"path": "sha256"}` JSON of the scripts people use today: LFS files only."""
        return {e.rfilename: e.sha256 for e in self.entries.values() if e.sha256}

    def to_full(self) -> dict[str, Any]:
        return {
            "format": "hfwatchd-manifest/1",
            "repo": self.repo.key,
            "revision": self.repo.revision,
            "commit": self.commit,
            "files": {
                e.rfilename: {"size": e.size, "sha256": e.sha256, "blob_id": e.blob_id}
                for e in sorted(self.entries.values(), key=lambda e: e.rfilename)
            },
        }


def parse_manifest_document(doc: Any, repo: RepoRef, *, where: str) -> tuple[str, dict[str, ManifestEntry]]:
    """Entries and commit from a seed (`{"path": "sha256"}`) or full manifest document."""
    if not isinstance(doc, dict):
        raise SpecError(f"{where}: a manifest is a JSON object")
    entries: dict[str, ManifestEntry] = {}
    if "files" in doc and isinstance(doc.get("files"), dict):
        commit = doc.get("commit") or ""
        if not isinstance(commit, str):
            raise SpecError(f"{where}: commit must be a string")
        for path, meta in doc["files"].items():
            if not isinstance(meta, dict):
                raise SpecError(f"{where}: files[{path!r}] must be an object")
            size, sha, blob = meta.get("size"), meta.get("sha256"), meta.get("blob_id")
            if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
                raise SpecError(f"{where}: files[{path!r}].size must be a non-negative integer")
            if sha is not None and (not isinstance(sha, str) or not _HEX64.fullmatch(sha)):
                raise SpecError(f"{where}: files[{path!r}].sha256 must be 64 lowercase hex digits")
            if blob is not None and (not isinstance(blob, str) or not HEX40.fullmatch(blob)):
                raise SpecError(f"{where}: files[{path!r}].blob_id must be 40 lowercase hex digits")
            if sha is None and blob is None:
                raise SpecError(f"{where}: files[{path!r}] has neither sha256 nor blob_id")
            entries[path] = ManifestEntry(path, size, sha, blob)
        return commit, entries
    for path, sha in doc.items():
        if not isinstance(path, str) or not isinstance(sha, str) or not _HEX64.fullmatch(sha.lower()):
            raise SpecError(f"{where}: {path!r}: a seed manifest maps each path to a 64-hex sha256")
        entries[path] = ManifestEntry(path, None, sha.lower(), None)
    return "", entries


def load_manifest_text(text: str, repo: RepoRef, *, where: str) -> Manifest:
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, and integers past Python's digit limit
        raise SpecError(f"{where}: not valid JSON ({exc})") from exc
    commit, entries = parse_manifest_document(doc, repo, where=where)
    return Manifest(repo, commit, entries, source="file")


# --- name normalisation -------------------------------------------------------------------------

_DUP_PAREN = re.compile(r"^(?P<stem>.+?) ?\((?P<n>\d+)\)(?P<ext>(?:\.[^./]+)*)$")  # X (1).ext, X(1).ext
_DUP_TRAIL = re.compile(r"^(?P<name>.+)\.(?P<n>\d+)$")  # wget: X.1
_DUP_MID = re.compile(r"^(?P<stem>.+)\.(?P<n>\d+)(?P<ext>\.[^./]+)$")  # aria2: X.1.ext


def _dup_stripped(name: str) -> list[str]:
    out: list[str] = []
    m = _DUP_PAREN.match(name)
    if m:
        out.append(m["stem"] + m["ext"])
    m2 = _DUP_TRAIL.match(name)
    if m2:
        out.append(m2["name"])
    m3 = _DUP_MID.match(name)
    if m3:
        out.append(m3["stem"] + m3["ext"])
    return out


def original_names(name: str) -> list[str]:
    """Names a downloader may have started from, most likely first.

    Duplicate suffixes (`X (1).ext`, `X(1).ext`, `X.1`, `X.1.ext`), and what wget and `curl -O`
    keep from a URL: a query (`X?download=true`, as the Hub's browser links carry) and
    percent-escapes (`test%201.parquet`).
    """
    bases = [name]
    if "?" in name:
        bases.append(name.split("?", 1)[0])
    for b in list(bases):
        if "%" in b:
            bases.append(unquote(b))
    out: list[str] = []
    for b in bases:
        out.append(b)
        out.extend(_dup_stripped(b))
    return [n for n in dict.fromkeys(out) if n and n != name]


# --- index and verdicts ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Candidate:
    """A manifest entry a local file may be, and the manifest it comes from."""

    manifest: Manifest
    entry: ManifestEntry


@dataclass(frozen=True)
class Plan:
    """What must be computed about a local file before it can be judged."""

    by_name: tuple[Candidate, ...]  # from its path or its name: judged against these
    by_content: bool  # some entry of the watched manifests has this size: its digests may identify it
    algorithms: frozenset[Algorithm]
    how: MatchedBy | None = None  # path | name: how by_name was found
    index: Index | None = None  # where a digest is looked up when by_content

    @property
    def needs_hash(self) -> bool:
        return bool(self.algorithms)


@dataclass(frozen=True)
class Verdict:
    """The judgement of one local file."""

    status: Status
    path: str
    size: int
    repo: str | None = None
    revision: str | None = None
    rfilename: str | None = None
    commit: str | None = None
    expected_size: int | None = None
    algorithm: Algorithm | None = None
    expected: str | None = None
    actual: str | None = None
    matched_by: MatchedBy | None = None


_Slot = Union["ManifestEntry", tuple["ManifestEntry", ...]]


def _add(table: dict[Any, _Slot], key: Any, e: ManifestEntry) -> None:
    # an entry itself when unique (the common case), a tuple only on collisions: with 100k-file
    # manifests, a list or wrapper object per entry would cost more than the entries themselves
    old = table.get(key)
    if old is None:
        table[key] = e
    elif isinstance(old, tuple):
        table[key] = (*old, e)
    else:
        table[key] = (old, e)


def _all(slot: _Slot | None) -> tuple[ManifestEntry, ...]:
    if slot is None:
        return ()
    return slot if isinstance(slot, tuple) else (slot,)


_ALG_BIT: dict[Algorithm, int] = {SHA256: 1, GIT_SHA1: 2}


class _Lookup:
    """One manifest's entries by base name and by digest, and which algorithms each size needs.

    Content lookup goes by digest, never by scanning entries of the same size: a dataset of
    thousands of equal-size shards must not make every file cost thousands of comparisons.
    """

    __slots__ = ("_by_digest", "_by_name", "_m", "sizes", "unsized")

    def __init__(self, m: Manifest) -> None:
        self._m = m
        # the name and digest tables are built on first use: a restart over 100,000 files already
        # judged at their paths never needs them (13 MiB for such a manifest). Two workers that race
        # to build one build equal tables; the last assignment wins, no lock needed.
        self._by_name: dict[str, _Slot] | None = None
        self._by_digest: dict[str, _Slot] | None = None
        self.sizes: dict[int, int] = {}  # size -> bits of the algorithms its entries use
        self.unsized = 0  # bits of the algorithms of entries without a size (seed manifests)
        for e in m.entries.values():
            bit = _ALG_BIT[e.algorithm]
            if e.size is None:
                self.unsized |= bit
            else:
                self.sizes[e.size] = self.sizes.get(e.size, 0) | bit

    @property
    def by_name(self) -> dict[str, _Slot]:
        table = self._by_name
        if table is None:
            table = {}
            for e in self._m.entries.values():
                _add(table, e.basename, e)
            self._by_name = table
        return table

    @property
    def by_digest(self) -> dict[str, _Slot]:
        table = self._by_digest
        if table is None:
            table = {}
            for e in self._m.entries.values():
                _add(table, e.expected, e)
            self._by_digest = table
        return table


class Index:
    """Lookup of manifest entries by relative path, by base name and by size, over a watch's manifests."""

    def __init__(self, manifests: list[Manifest], lookups: list[_Lookup]) -> None:
        self.manifests = manifests
        self._lookups = lookups

    @classmethod
    def build(cls, manifests: Iterable[Manifest]) -> Index:
        ms = list(manifests)
        return cls(ms, [_Lookup(m) for m in ms])

    def plan(self, relpath: str, size: int) -> Plan:
        """Which entries a file at `relpath` of `size` bytes may be, and which digests decide it."""
        pairs = tuple(zip(self.manifests, self._lookups, strict=True))
        by_name: tuple[Candidate, ...] = tuple(
            Candidate(m, e) for m, _ in pairs if (e := m.entries.get(relpath)) is not None
        )
        how: MatchedBy | None = "path" if by_name else None
        if not by_name:
            base = posixpath.basename(relpath)
            for name in (base, *original_names(base)):
                found = [Candidate(m, e) for m, lk in pairs for e in _all(lk.by_name.get(name))]
                # a bare name only maps to an entry when it is unique among the folder's repos
                if len(found) == 1:
                    by_name, how = (found[0],), "name"
                    break
                if len(found) > 1:
                    break
        bits = 0
        for _, lk in pairs:
            bits |= lk.sizes.get(size, 0) | lk.unsized
        algorithms = {alg for alg, bit in _ALG_BIT.items() if bits & bit}
        for c in by_name:
            if c.entry.size is None or size >= c.entry.size:
                algorithms.add(c.entry.algorithm)
        return Plan(by_name, bool(bits), frozenset(algorithms), how, self)

    def by_digest(self, size: int, digests: Mapping[Algorithm, str]) -> Candidate | None:
        """The first entry, in repo order, whose size and digest these are."""
        for m, lk in zip(self.manifests, self._lookups, strict=True):
            for alg, digest in digests.items():
                for e in _all(lk.by_digest.get(digest)):
                    if e.algorithm == alg and (e.size is None or e.size == size):
                        return Candidate(m, e)
        return None


def _verdict(status: Status, path: str, size: int, c: Candidate | None, actual: str | None,
             how: MatchedBy | None) -> Verdict:
    if c is None:
        return Verdict(status, path, size, actual=actual)
    return Verdict(
        status,
        path,
        size,
        repo=c.manifest.repo.key,
        revision=c.manifest.repo.revision,
        rfilename=c.entry.rfilename,
        commit=c.manifest.commit or None,
        expected_size=c.entry.size,
        algorithm=c.entry.algorithm,
        expected=c.entry.expected,
        actual=actual,
        matched_by=how,
    )


def _matches(c: Candidate, size: int, digests: Mapping[Algorithm, str]) -> bool:
    e = c.entry
    return (e.size is None or e.size == size) and digests.get(e.algorithm) == e.expected


def decide(plan: Plan, path: str, size: int, digests: Mapping[Algorithm, str]) -> Verdict:
    """Judge a file from its plan and the digests computed for it."""
    how = plan.how
    for c in plan.by_name:
        if _matches(c, size, digests):
            return _verdict(MATCHED, path, size, c, digests.get(c.entry.algorithm), how)
    if plan.by_content and plan.index is not None:
        found = plan.index.by_digest(size, digests)
        if found is not None:
            return _verdict(MATCHED, path, size, found, digests.get(found.entry.algorithm), "content")
    if plan.by_name:
        c = plan.by_name[0]
        if c.entry.size is not None and size < c.entry.size:
            return _verdict(INCOMPLETE, path, size, c, None, how)
        return _verdict(MISMATCH, path, size, c, digests.get(c.entry.algorithm), how)
    return _verdict(UNKNOWN, path, size, None, digests.get(SHA256), None)
