"""Streaming sha256 and git blob SHA-1 of regular files, in fixed-size reused buffers."""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import mmap
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .manifest import GIT_SHA1, SHA256, Algorithm

DISK_TURN = 64 << 20  # bytes read from a rotational disk per hold of its lock: a seek per 64 MiB costs ~2%
CHUNK_SIZE = 4 << 20  # 4 MiB: hashlib releases the GIL for it, and each GIL hand-over buys ~2 ms of hashing



class NotRegularFile(OSError):
    """The path is not a regular file (FIFO, socket, device, directory): it is never read."""


class FileChanged(OSError):
    """The file changed while it was hashed; its digest means nothing."""


class Cancelled(Exception):
    """Hashing was abandoned because the caller is shutting down."""


@dataclass(frozen=True, slots=True)
class Signature:
    """What must stay equal for an earlier verdict on a file to still hold."""

    dev: int
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> Signature:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def git_blob_header(size: int) -> bytes:
    return b"blob %d\0" % size


def open_regular(path: str | bytes) -> tuple[int, os.stat_result]:
    """Open `path` for reading without following a final symlink and without blocking on a FIFO."""
    if not stat.S_ISREG(os.lstat(path).st_mode):
        # checked before open: opening a FIFO or a device has effects (a FIFO writer unblocks, a tape rewinds)
        raise NotRegularFile(f"not a regular file: {os.fsdecode(path)!r}")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(f"not a regular file: {os.fsdecode(path)!r}")  # noqa: TRY301 - fd closed below
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


class StreamHasher:
    """Incremental digests of one file's content: sha256 and/or git blob SHA-1.

    The git header needs the final size up front, so a git-sha1 hasher is built for
    a known size; feeding it a different number of bytes gives a digest that cannot match.
    """

    __slots__ = ("_git", "_sha", "offset")

    def __init__(self, algorithms: frozenset[Algorithm], size: int) -> None:
        self._sha = hashlib.sha256() if SHA256 in algorithms else None
        self._git = None
        if GIT_SHA1 in algorithms:
            self._git = hashlib.sha1(usedforsecurity=False)
            self._git.update(git_blob_header(size))
        self.offset = 0

    @classmethod
    def resume(cls, sha256: Any, offset: int) -> StreamHasher:
        """Carry on a sha256 computed over the first `offset` bytes (progressive hashing)."""
        h = cls(frozenset(), 0)
        h._sha = sha256
        h.offset = offset
        return h

    def update(self, data: memoryview | bytes) -> None:
        if self._sha is not None:
            self._sha.update(data)
        if self._git is not None:
            self._git.update(data)
        self.offset += len(data)

    def digests(self) -> dict[Algorithm, str]:
        out: dict[Algorithm, str] = {}
        if self._sha is not None:
            out[SHA256] = self._sha.hexdigest()
        if self._git is not None:
            out[GIT_SHA1] = self._git.hexdigest()
        return out

    def feed_fd(
        self,
        fd: int,
        until: int,
        buf: bytearray,
        progress: Callable[[int], None] | None = None,
        cancel: threading.Event | None = None,
        disk: threading.Lock | None = None,
    ) -> None:
        """Read from the current offset up to `until` bytes of the file through `buf`.

        With `disk` (the lock of a rotational device, see devices.py), bytes in the page cache are
        read without it; a read that must wait for the disk takes the lock and keeps it for the next
        DISK_TURN bytes: long sequential turns on a spinning disk, and a file that lost a few pages
        of the cache (a VM reclaiming memory does that) serialises for a turn, not to its end.
        A read with RWF_NOWAIT costs nothing when the bytes are cached (it is the read) where asking
        mincore first would cost ~0.2 ms a 4 MiB chunk, ~6% of hashing it. It may start a readahead
        without the lock: on a disk fast enough to finish it at once the read then succeeds (no harm:
        that disk does not seek); on a spinning one it is one stray readahead where a file's uncached
        part begins.
        """
        view = memoryview(buf)
        held: threading.Lock | None = None
        turn_end = 0
        try:
            while self.offset < until:
                if cancel is not None and cancel.is_set():
                    raise Cancelled
                want = min(len(buf), until - self.offset)
                if held is not None and self.offset >= turn_end:
                    held.release()  # another reader's turn on the disk
                    held = None
                if disk is not None and held is None:
                    n = _read_cached(fd, view[:want], self.offset)
                    if n is None:
                        held = _acquire(disk, cancel)
                        turn_end = self.offset + DISK_TURN
                        n = os.preadv(fd, [view[:want]], self.offset)
                else:
                    n = os.preadv(fd, [view[:want]], self.offset)
                if n == 0:
                    raise FileChanged("file shrank while it was hashed")
                self.update(view[:n])
                if progress is not None:
                    progress(n)
        finally:
            if held is not None:
                held.release()


def _read_cached(fd: int, view: memoryview, offset: int) -> int | None:
    """Read what the page cache holds at `offset` without waiting for the disk; None if the disk is needed."""
    nowait = getattr(os, "RWF_NOWAIT", None)
    if nowait is None:
        return None  # not Linux: no read that refuses to wait, so every read may need the disk
    try:
        return os.preadv(fd, [view], offset, nowait)
    except BlockingIOError:
        # not only "not cached": a cached page carrying the readahead mark refuses RWF_NOWAIT too
        # (about one 4 MiB read in three over a file fully in memory), so ask the page cache itself
        pass
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
        return None  # RWF_NOWAIT not supported here: every read may need the disk
    if cached(fd, offset, len(view)):
        return os.preadv(fd, [view], offset)
    return None


def _acquire(lock: threading.Lock, cancel: threading.Event | None) -> threading.Lock:
    """Take `lock`, giving up (Cancelled) when `cancel` is set while another reader holds it."""
    while not lock.acquire(timeout=0.1):
        if cancel is not None and cancel.is_set():
            raise Cancelled
    return lock


class _Libc:
    """mmap / mincore / munmap through ctypes: Python's mmap module cannot ask which pages are resident."""

    def __init__(self) -> None:
        import ctypes  # only a read from a rotational device that missed the page cache gets here

        libc = ctypes.CDLL(None, use_errno=True)
        self.ctypes = ctypes
        self.mmap: Any = getattr(libc, "mmap64", libc.mmap)
        self.mmap.restype = ctypes.c_void_p
        self.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int64]
        self.mincore: Any = libc.mincore
        self.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        self.munmap: Any = libc.munmap
        self.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        self.failed = ctypes.c_void_p(-1).value


_RESIDENT_BIT = bytes(b & 1 for b in range(256))


@functools.cache
def _bind() -> _Libc:
    return _Libc()


def cached(fd: int, offset: int, length: int) -> bool | None:
    """Whether every page of bytes [offset, offset + length) of `fd` is in the page cache; None if unknown.

    The range is mapped but never touched (no page fault, so no SIGBUS if the file shrinks meanwhile):
    mincore(2) only reports residency.
    """
    if length <= 0:
        return True
    try:
        c = _bind()
    except (OSError, AttributeError):  # no C library to load, or one without mincore
        return None
    start = offset - offset % mmap.PAGESIZE
    span = offset + length - start
    addr = c.mmap(None, span, mmap.PROT_READ, mmap.MAP_SHARED, fd, start)
    if addr is None or addr == c.failed:
        return None
    try:
        vec = (c.ctypes.c_ubyte * ((span + mmap.PAGESIZE - 1) // mmap.PAGESIZE))()
        if c.mincore(addr, span, vec) != 0:
            return None
        return b"\x00" not in bytes(vec).translate(_RESIDENT_BIT)  # bit 0: resident; the others are reserved
    finally:
        c.munmap(addr, span)


def hash_file(
    path: str | bytes,
    algorithms: frozenset[Algorithm],
    *,
    expected: Signature | None = None,
    progress: Callable[[int], None] | None = None,
    cancel: threading.Event | None = None,
    buf: bytearray | None = None,
    resume: StreamHasher | None = None,
    disk: threading.Lock | None = None,
) -> tuple[dict[Algorithm, str], Signature]:
    """Hash a regular file with the given algorithms in one streaming pass (or finish `resume`'s).

    `disk` is the lock of the file's device when it is rotational (`DeviceGate.disk`): held
    only while bytes come from the disk itself, not from the page cache.

    Raises FileChanged if the file is not the one `expected` describes, or if it
    changed while it was read (checked again with fstat after the last byte).
    """
    fd, st = open_regular(path)
    try:
        before = Signature.of(st)
        if expected is not None and before != expected:
            raise FileChanged("file changed before it was hashed")
        with contextlib.suppress(OSError):  # some filesystems (FUSE, NFS) refuse advice; it is only a hint
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        hasher = resume if resume is not None and resume.offset <= before.size else StreamHasher(algorithms,
                                                                                                   before.size)
        hasher.feed_fd(fd, before.size, buf if buf is not None else bytearray(CHUNK_SIZE), progress, cancel, disk)
        after = Signature.of(os.fstat(fd))
        if after != before:
            raise FileChanged("file changed while it was hashed")
        return hasher.digests(), before
    finally:
        os.close(fd)
