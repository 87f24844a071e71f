"""A watch at run time (its manifests and index), the scan walk, and the triage of what to judge."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

from .completion import is_temp_name
from .config import WatchConfig
from .hashing import Signature
from .manifest import PENDING, UNKNOWN, Index, Manifest
from .state import FileRow, State


class WatchedFolder:
    """A watch at run time: its config, its current manifests and the index built from them."""

    def __init__(self, config: WatchConfig, skip: tuple[Path, ...] = ()) -> None:
        self.config = config
        self.root = os.path.abspath(config.path)
        self.key = self.root
        self.manifests: dict[str, Manifest] = {}
        self.index = Index.build([])
        # judged only once every repo has a manifest (or can never have one): judging with part of
        # them would map a file to the wrong repo's entry and keep that verdict
        self.ready = False
        self._lock = threading.Lock()
        # placement targets and hfwatchd's own state are never judged, even inside a watched folder
        dirs = [os.path.abspath(d) for d in (*skip, config.place_dir) if d is not None]
        self.skip_dirs = tuple(dirs)

    def set_manifest(self, manifest: Manifest) -> Manifest | None:
        """Use `manifest` for its repo from now on; returns the one it replaces."""
        with self._lock:
            old = self.manifests.get(manifest.repo.key)
            self.manifests[manifest.repo.key] = manifest
            order = [rc.ref.key for rc in self.config.repos]
            self.index = Index.build(self.manifests[k] for k in order if k in self.manifests)
            return old

    def relpath(self, path: str) -> str | None:
        """The path relative to this folder with `/` separators, or None if it is outside or skipped."""
        if not path.startswith(self.root + os.sep):
            return None
        if any(path == d or path.startswith(d + os.sep) for d in self.skip_dirs):
            return None
        return path[len(self.root) + 1 :].replace(os.sep, "/")


def verdict_holds(folder: WatchedFolder, row: FileRow, rel: str, size: int) -> bool:
    """Whether the stored verdict of an unchanged file holds against the current manifests."""
    if row.status == PENDING:
        return False
    if row.status == UNKNOWN:
        plan = folder.index.plan(rel, size)
        return not plan.by_name and not plan.by_content
    if row.repo is None:
        return False
    m = folder.manifests.get(row.repo)
    if m is None or row.rfilename is None:
        return False
    if (m.commit or None) == row.commit:
        return True
    entry = m.entries.get(row.rfilename)
    return entry is not None and entry.expected == row.expected and entry.size == row.expected_size


def triage(state: State, folder: WatchedFolder, paths: list[bytes], *,
           full: bool) -> tuple[list[str], int, list[bytes]]:
    """Split a scan's paths into those to judge and those whose stored verdict still holds.

    Returns (to judge, unchanged count, rows whose file is gone — only for a full scan). The
    sorted paths are merged with the rows streamed in path order, so a 100,000-file folder
    costs no more memory than its list of paths. `paths` is sorted in place.
    """
    paths.sort()
    todo: list[str] = []
    unchanged = 0
    gone: list[bytes] = []
    inside = os.fsencode(folder.root + os.sep)
    i, n = 0, len(paths)
    for row in state.iter_files(folder.key, ordered=True):
        while i < n and paths[i] < row.path:
            todo.append(os.fsdecode(paths[i]))
            i += 1
        if i >= n or paths[i] != row.path:
            # rows outside the folder are files placement moved away: their verdict stays
            if full and row.path.startswith(inside):
                gone.append(row.path)
            continue
        p = os.fsdecode(paths[i])
        i += 1
        try:
            sig = Signature.of(os.lstat(p))
        except OSError:
            continue
        rel = folder.relpath(p)
        if (row.signature is not None and rel is not None and row.signature == sig
                and verdict_holds(folder, row, rel, sig.size)):
            unchanged += 1
        else:
            todo.append(p)
    todo.extend(os.fsdecode(p) for p in paths[i:])
    return todo, unchanged, gone


def unvouched(state: State, folder: WatchedFolder, paths: list[bytes], *,
              min_size: int) -> list[tuple[str, int]]:
    """Files of at least `min_size` bytes whose stored signature does not match: they will be hashed."""
    paths.sort()
    rows = state.iter_files(folder.key, ordered=True)
    row = next(rows, None)
    out: list[tuple[str, int]] = []
    for p in paths:
        while row is not None and row.path < p:
            row = next(rows, None)
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if st.st_size < min_size or not stat.S_ISREG(st.st_mode):
            continue
        if row is not None and row.path == p and row.status != PENDING and row.signature == Signature.of(st):
            continue
        out.append((os.fsdecode(p), st.st_size))
    for _ in rows:  # drain, so the read connection closes now
        pass
    return out


def walk(folder: WatchedFolder, on_error: Callable[[str, OSError], None] | None = None,
         top: str | None = None) -> list[bytes]:
    """Every candidate file under a watched folder (or its subfolder `top`), as bytes paths.

    Temp names and skipped dirs are left out and links are not followed. Bytes, not str: a
    name that is not UTF-8 stays exact, and a 100,000-file list stays small.
    """
    out: list[bytes] = []
    root = os.fsencode(folder.root)
    stack = [os.fsencode(top if top is not None else folder.root)]
    skip = tuple(os.fsencode(d) for d in folder.skip_dirs)
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except OSError as exc:
            if on_error is not None:
                on_error(os.fsdecode(d), exc)
            continue
        with it:
            for entry in it:
                p = entry.path
                if any(p == s or p.startswith(s + b"/") for s in skip):
                    continue
                rel = os.fsdecode(p[len(root) + 1 :])
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if not is_temp_name(rel + "/"):
                            stack.append(p)
                    elif entry.is_file(follow_symlinks=False) and not is_temp_name(rel):
                        out.append(p)
                except OSError:
                    continue
    return out
