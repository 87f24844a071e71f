"""Put a verified file where huggingface_hub finds it: its cache layout or a `--local-dir` tree.

Stdlib only: the layouts are written by hand, the way huggingface_hub 2.x writes them
(`file_download.py`, `_local_folder.py`), so `hf_hub_download(..., local_files_only=True)`,
`snapshot_download(..., local_files_only=True)` and `hf download --local-dir` accept the result.

Rules that hold for every placement:

* A manifest path comes from a remote server: an unsafe one (`manifest.is_safe_path`) is refused.
* Below the configured root nothing is followed: every directory is opened with `O_NOFOLLOW`
  relative to its parent's descriptor (openat), so a symlink planted in the target tree cannot
  redirect a write, even if it appears between a check and the write.
* A different file already at the target is never overwritten: new files are published with
  `link()`, which fails when the name exists, rather than with `rename()`, which replaces.
* A copy goes to a temporary `.incomplete` file beside the target (a name the watcher ignores),
  is fsynced, then published; no partial target is ever visible and temp files are removed on error.
* The source is touched last: `move` links or copies first, and unlinks the source only when
  everything else (blob, snapshot pointer, refs or metadata) is in place. Any failure before that
  leaves the source as it was, and whatever this call created is removed again.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from .manifest import ManifestEntry, RepoRef, is_safe_path

PLACES = ("hf-cache", "local-dir")
MODES = ("link", "copy", "move")

_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# link() errors after which a copy is the right thing: another filesystem, or one without hard links
_NO_HARDLINK = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP})
# copy_file_range() errors after which plain read/write is used
_NO_COPY_RANGE = frozenset({errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF})


class PlaceError(Exception):
    """Placement refused or failed; the message says what happened and that the source is untouched."""

    def __init__(self, message: str, *, target: str | None = None) -> None:
        super().__init__(message)
        self.target = target


@dataclass(frozen=True)
class Placed:
    """Where a file was put, and what was actually done to get it there."""

    target: str  # absolute path of the placed file (hf-cache: the snapshots/<commit>/<path> entry)
    mode: str  # "link" | "copy" | "move" | "exists" (already there, identical: nothing written)


def default_hf_cache() -> Path:
    """huggingface_hub's cache folder, computed now from the environment (constants.py's precedence).

    HF_HUB_CACHE, else the legacy HUGGINGFACE_HUB_CACHE, else HF_HOME/hub, where HF_HOME defaults to
    $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface; `~` and `$VARS` are expanded. An empty
    variable counts as unset.
    """
    env = os.environ

    def expand(p: str) -> str:
        return os.path.expandvars(os.path.expanduser(p))

    hub = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if hub:
        return Path(expand(hub))
    home = env.get("HF_HOME") or os.path.join(
        env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface"
    )
    return Path(expand(home)) / "hub"


def repo_folder_name(repo: RepoRef) -> str:
    """`models--org--name`, as huggingface_hub names a repo's folder in its cache."""
    return "--".join([f"{repo.repo_type}s", *repo.repo_id.split("/")])


def etag_of(entry: ManifestEntry) -> str | None:
    """The ETag the Hub sends for a file, which huggingface_hub uses as its blob name.

    The sha256 for LFS / Xet files (`X-Linked-Etag`), the git blob SHA-1 of the content otherwise.
    """
    if entry.sha256:
        return entry.sha256
    return entry.blob_id


def place_file(
    source: str,
    *,
    place: str,
    place_dir: Path | None,
    mode: str,
    repo: RepoRef,
    commit: str,
    entry: ManifestEntry,
) -> Placed:
    """Put the verified file `source` (the manifest's `entry` at `commit`) into the cache or a local dir.

    Raises PlaceError, with the source untouched, when the placement is refused or fails.
    """
    untouched = f"{source} is untouched"
    if place not in PLACES:
        raise PlaceError(f"place must be one of {', '.join(PLACES)}, not {place!r}; {untouched}")
    if mode not in MODES:
        raise PlaceError(f"place_mode must be one of {', '.join(MODES)}, not {mode!r}; {untouched}")
    if not is_safe_path(entry.rfilename):
        raise PlaceError(
            f"refusing to place {entry.rfilename!r}: the manifest path is absolute, has a '..' or empty segment,"
            f" a NUL or a backslash; {untouched}"
        )
    etag = etag_of(entry)
    if etag is None or not (_HEX40.fullmatch(etag) or _HEX64.fullmatch(etag)):
        raise PlaceError(f"{entry.rfilename}: the manifest has no usable sha256 or git blob id; {untouched}")
    if place == "local-dir":
        if place_dir is None:
            raise PlaceError(f"place = 'local-dir' needs a place_dir; {untouched}")
        root = Path(os.path.abspath(os.path.expanduser(place_dir)))
        target = root.joinpath(*entry.rfilename.split("/"))
    else:
        root = Path(os.path.abspath(os.path.expanduser(place_dir if place_dir is not None else default_hf_cache())))
        if not _HEX40.fullmatch(commit):
            raise PlaceError(
                f"hf-cache placement needs the 40-hex commit the file was verified at, not {commit!r}"
                f" (an offline manifest without a commit can only be placed with place = 'local-dir'); {untouched}"
            )
        target = root / repo_folder_name(repo) / "snapshots" / commit / Path(*entry.rfilename.split("/"))
    shown = str(target)
    if os.path.commonpath([root, target]) != str(root):  # unreachable after is_safe_path; kept as a last guard
        raise PlaceError(f"refusing to place {entry.rfilename!r} outside {root}; {untouched}", target=shown)

    try:
        src_st = os.stat(source)
    except OSError as exc:
        raise PlaceError(f"cannot read {source}: {exc.strerror}; nothing was placed", target=shown) from exc
    if not stat.S_ISREG(src_st.st_mode):
        raise PlaceError(f"{source} is not a regular file; {untouched}", target=shown)
    if entry.size is not None and src_st.st_size != entry.size:
        raise PlaceError(
            f"{source} is {src_st.st_size} bytes, not the {entry.size} it was verified at: it changed since its"
            f" verdict; {untouched}",
            target=shown,
        )

    job = _Job(source, src_st, mode, shown)
    try:
        if place == "hf-cache":
            how = _place_hf_cache(job, root, repo, commit, entry, etag)
        else:
            how = _place_local_dir(job, root, commit, entry, etag)
    except PlaceError:
        job.rollback()
        raise
    except OSError as exc:
        job.rollback()
        raise PlaceError(f"could not place {source} at {shown}: {exc.strerror or exc}; {untouched}",
                         target=shown) from exc
    finally:
        job.close()
    if mode == "move" and how in ("link", "copy"):
        try:
            now = os.stat(source, follow_symlinks=False)
            if (now.st_dev, now.st_ino, now.st_size) == (src_st.st_dev, src_st.st_ino, src_st.st_size):
                os.unlink(source)  # only the file that was placed, not one downloaded over it meanwhile
                how = "move"
        except OSError:
            pass  # placed, but the source stays: report what was done
    return Placed(target=shown, mode=how)


# --- the two layouts -----------------------------------------------------------------------------


def _place_hf_cache(job: _Job, root: Path, repo: RepoRef, commit: str, entry: ManifestEntry, etag: str) -> str:
    """blobs/<etag>, snapshots/<commit>/<path> -> relative symlink, refs/<revision> -> commit."""
    parts = entry.rfilename.split("/")
    name = parts[-1]
    revision = repo.revision
    write_ref = revision != commit and not _HEX40.fullmatch(revision)
    if write_ref and not is_safe_path(revision):
        raise PlaceError(f"revision {revision!r} cannot be written under refs/; {job.source} is untouched",
                         target=job.target)
    rootfd = job.fd(_open_root(root))
    repofd = job.fd(_descend(job, rootfd, [repo_folder_name(repo)], root))
    repo_dir = root / repo_folder_name(repo)
    blobsfd = job.fd(_descend(job, repofd, ["blobs"], repo_dir))
    snapfd = job.fd(_descend(job, repofd, ["snapshots", commit, *parts[:-1]], repo_dir))
    link_text = "/".join([".."] * (len(parts) + 1) + ["blobs", etag])

    # the snapshot entry first: refuse before anything is written
    pointer_done = False
    existing = _lstat_at(snapfd, name)
    if existing is not None:
        if stat.S_ISLNK(existing.st_mode) and os.readlink(name, dir_fd=snapfd) == link_text:
            pointer_done = True
        elif stat.S_ISREG(existing.st_mode) and _identical(job, snapfd, name, existing):
            pointer_done = True  # a copy instead of a symlink, as huggingface_hub makes without symlinks
        else:
            raise PlaceError(
                f"{job.target} already exists and is not {entry.rfilename} at {commit[:12]}: not overwritten;"
                f" {job.source} is untouched",
                target=job.target,
            )

    blob_shown = str(repo_dir / "blobs" / etag)
    how = _put(job, blobsfd, etag, blob_shown, what="the cache blob")
    if not pointer_done:
        try:
            os.symlink(link_text, name, dir_fd=snapfd)
        except FileExistsError:
            if os.readlink(name, dir_fd=snapfd) != link_text:  # raced with another writer
                raise PlaceError(f"{job.target} appeared meanwhile and is not ours: not overwritten;"
                                 f" {job.source} is untouched", target=job.target) from None
        else:
            job.created(snapfd, name)
        os.fsync(snapfd)

    if write_ref:
        ref_parts = revision.split("/")
        refsfd = job.fd(_descend(job, repofd, ["refs", *ref_parts[:-1]], repo_dir))
        if _read_small(refsfd, ref_parts[-1]) != commit:
            # huggingface_hub reads refs without stripping: the commit, no newline
            _write_atomic(job, refsfd, ref_parts[-1], commit.encode())
    return how


def _place_local_dir(job: _Job, root: Path, commit: str, entry: ManifestEntry, etag: str) -> str:
    """place_dir/<path>, plus .cache/huggingface/download/<path>.metadata as `hf download --local-dir` keeps."""
    parts = entry.rfilename.split("/")
    if parts[:2] == [".cache", "huggingface"]:
        raise PlaceError(f"refusing to place {entry.rfilename!r}: it would collide with huggingface_hub's own"
                         f" metadata folder; {job.source} is untouched", target=job.target)
    name = parts[-1]
    rootfd = job.fd(_open_root(root))
    dirfd = job.fd(_descend(job, rootfd, parts[:-1], root))
    hfdir = root / ".cache" / "huggingface"
    hffd = job.fd(_descend(job, rootfd, [".cache", "huggingface"], root))
    metafd = job.fd(_descend(job, hffd, ["download", *parts[:-1]], hfdir))

    how = _put(job, dirfd, name, job.target, what="the file")
    # the timestamp must not be older than the file's mtime, or huggingface_hub re-hashes / re-downloads
    st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    timestamp = max(time.time(), st.st_mtime)
    _write_atomic(job, metafd, f"{name}.metadata", f"{commit}\n{etag}\n{timestamp}\n".encode())
    for extra, text in ((".gitignore", b"*"), ("CACHEDIR.TAG", _CACHEDIR_TAG)):
        with contextlib.suppress(OSError):  # what huggingface_hub adds beside its metadata; best effort
            fd = os.open(extra, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666,
                         dir_fd=hffd)
            try:
                os.write(fd, text)
            finally:
                os.close(fd)
    return how


_CACHEDIR_TAG = (
    b"Signature: 8a477f597d28d172789f06886806bc55\n"
    b"# This file is a cache directory tag created by huggingface_hub.\n"
    b"# For information about cache directory tags, see:\n"
    b"#\thttps://bford.info/cachedir/\n"
)


# --- mechanics ------------------------------------------------------------------------------------


class _Job:
    """One placement: its source, the descriptors it opened and what it created (to undo on failure)."""

    def __init__(self, source: str, src_st: os.stat_result, mode: str, target: str) -> None:
        self.source = source
        self.src_st = src_st
        self.mode = mode
        self.target = target
        self._fds: list[int] = []
        self._created: list[tuple[int, str]] = []

    def fd(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    def created(self, dirfd: int, name: str) -> None:
        self._created.append((dirfd, name))

    def rollback(self) -> None:
        for dirfd, name in reversed(self._created):
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=dirfd)
        self._created.clear()

    def close(self) -> None:
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()


def _open_root(root: Path) -> int:
    """The configured root: the user chose it, so it may be (or sit under) a symlink. Created if missing."""
    os.makedirs(root, exist_ok=True)
    return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def _descend(job: _Job, dirfd: int, names: list[str], shown: Path) -> int:
    """Open (creating as needed) each directory of `names` below `dirfd`, never following a symlink."""
    fd = os.dup(dirfd)
    try:
        for name in names:
            shown = shown / name
            try:
                nfd = _open_dir_at(fd, name)
            except FileNotFoundError:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o777, dir_fd=fd)
                nfd = _open_dir_at(fd, name)
            os.close(fd)
            fd = nfd
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise PlaceError(
                f"{shown} is a symlink or not a directory: refusing to follow it; {job.source} is untouched",
                target=job.target,
            ) from exc
        raise
    return fd


def _open_dir_at(dirfd: int, name: str) -> int:
    return os.open(name, _DIR_FLAGS, dir_fd=dirfd)


def _lstat_at(dirfd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _identical(job: _Job, dirfd: int, name: str, st: os.stat_result) -> bool:
    """Whether the regular file `name` is the source: the same inode, or the same size and bytes."""
    if not stat.S_ISREG(st.st_mode):
        return False
    if (st.st_dev, st.st_ino) == (job.src_st.st_dev, job.src_st.st_ino):
        return True
    if st.st_size != job.src_st.st_size:
        return False
    a = os.open(job.source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        b = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
        try:
            offset = 0
            while True:
                x = os.pread(a, _CHUNK, offset)
                y = os.pread(b, _CHUNK, offset)
                if x != y:
                    return False
                if not x:
                    return True
                offset += len(x)
        finally:
            os.close(b)
    finally:
        os.close(a)


def _put(job: _Job, dirfd: int, name: str, shown: str, *, what: str) -> str:
    """Make `name` in `dirfd` the source's content: "link", "copy", or "exists" (already identical)."""
    existing = _lstat_at(dirfd, name)
    if existing is not None:
        if _identical(job, dirfd, name, existing):
            return "exists"
        raise PlaceError(f"{shown} already exists and is a different file: {what} was not overwritten;"
                         f" {job.source} is untouched", target=job.target)
    if job.mode in ("link", "move"):
        try:
            os.link(job.source, name, dst_dir_fd=dirfd)
        except FileExistsError:
            return _raced(job, dirfd, name, shown)
        except OSError as exc:
            if exc.errno not in _NO_HARDLINK:
                raise
        else:
            job.created(dirfd, name)
            os.fsync(dirfd)
            return "link"
    return _copy_into(job, dirfd, name, shown)


def _raced(job: _Job, dirfd: int, name: str, shown: str) -> str:
    existing = _lstat_at(dirfd, name)
    if existing is not None and _identical(job, dirfd, name, existing):
        return "exists"
    raise PlaceError(f"{shown} appeared meanwhile and is a different file: not overwritten; {job.source} is untouched",
                     target=job.target)


def _copy_into(job: _Job, dirfd: int, name: str, shown: str) -> str:
    """Copy the source to a temp file beside `name`, fsync it, then publish it without overwriting: "copy"."""
    tmp = f".{name[:150]}.{secrets.token_hex(4)}.incomplete"
    src = os.open(job.source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666, dir_fd=dirfd)
        try:
            try:
                size = os.fstat(src).st_size
                _copy_fd(src, out, size)
                os.fsync(out)
            finally:
                os.close(out)
            if size != job.src_st.st_size:
                raise PlaceError(f"{job.source} changed while it was copied; {job.source} is untouched",
                                 target=job.target)
            try:
                os.link(tmp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)  # fails if the name exists
            except FileExistsError:
                return _raced(job, dirfd, name, shown)  # an identical file appeared meanwhile: keep it
            except OSError as exc:
                if exc.errno not in _NO_HARDLINK:
                    raise
                if _lstat_at(dirfd, name) is not None:  # no hard links here: check, then rename
                    return _raced(job, dirfd, name, shown)
                os.rename(tmp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
            job.created(dirfd, name)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dirfd)
        os.fsync(dirfd)
    finally:
        os.close(src)
    return "copy"


def _copy_fd(src: int, dst: int, size: int) -> None:
    """Copy `size` bytes: copy_file_range (reflinks where the filesystem can), else read/write."""
    offset = 0
    copy_range = getattr(os, "copy_file_range", None)
    while offset < size and copy_range is not None:
        try:
            n = copy_range(src, dst, min(size - offset, 1 << 30), offset, offset)
        except OSError as exc:
            if exc.errno not in _NO_COPY_RANGE or offset:
                raise
            break
        if n == 0:
            raise OSError(errno.EIO, "the source shrank while it was copied")
        offset += n
    while offset < size:
        data = os.pread(src, min(_CHUNK, size - offset), offset)
        if not data:
            raise OSError(errno.EIO, "the source shrank while it was copied")
        view = memoryview(data)
        while view:
            written = os.pwrite(dst, view, offset)
            view = view[written:]
            offset += written


def _read_small(dirfd: int, name: str) -> str | None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
    except OSError:
        return None
    try:
        return os.read(fd, 4096).decode("utf-8", "replace")
    finally:
        os.close(fd)


def _write_atomic(job: _Job, dirfd: int, name: str, data: bytes) -> None:
    """Replace our own bookkeeping file (refs, metadata) atomically: temp file, fsync, rename."""
    tmp = f".{name[:150]}.{secrets.token_hex(4)}.incomplete"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666, dir_fd=dirfd)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        existing = _lstat_at(dirfd, name)
        if existing is not None and not stat.S_ISREG(existing.st_mode):
            raise PlaceError(f"{name} (beside {job.target}) exists and is not a regular file: not replaced;"
                             f" {job.source} is untouched", target=job.target)
        os.rename(tmp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dirfd)
    os.fsync(dirfd)
