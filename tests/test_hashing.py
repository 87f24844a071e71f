"""Streaming hashes: the same digests as hashlib and git, and never a read of a non-regular file."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from hfwatchd.hashing import CHUNK_SIZE, GIT_SHA1, SHA256, Cancelled, NotRegularFile, hash_file


class TestDigests:
    @pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE * 2 + 17])
    def test_matches_hashlib_and_git(self, tmp_path: Path, size: int) -> None:
        """sha256 equals hashlib's and git-sha1 equals `git hash-object`, across chunk boundaries."""
        data = os.urandom(size)
        p = tmp_path / "f"
        p.write_bytes(data)
        digests, sig = hash_file(str(p), frozenset({SHA256, GIT_SHA1}))
        assert digests[SHA256] == hashlib.sha256(data).hexdigest()
        git = subprocess.run(["git", "hash-object", str(p)], capture_output=True, text=True, check=True).stdout.strip()
        assert digests[GIT_SHA1] == git
        assert sig.size == size

    def test_cancel_stops_hashing(self, tmp_path: Path) -> None:
        """A set cancel event abandons the file."""
        p = tmp_path / "f"
        p.write_bytes(b"x" * (CHUNK_SIZE * 3))
        cancel = threading.Event()
        cancel.set()
        with pytest.raises(Cancelled):
            hash_file(str(p), frozenset({SHA256}), cancel=cancel)


class TestNonRegular:
    def test_fifo_is_never_read(self, tmp_path: Path) -> None:
        """A FIFO is refused at once instead of blocking the worker."""
        p = tmp_path / "fifo"
        os.mkfifo(p)
        with pytest.raises(NotRegularFile):
            hash_file(str(p), frozenset({SHA256}))

    def test_symlink_is_not_followed(self, tmp_path: Path) -> None:
        """A symlink (here to /dev/zero) is not opened."""
        p = tmp_path / "link"
        p.symlink_to("/dev/zero")
        with pytest.raises(OSError):
            hash_file(str(p), frozenset({SHA256}))

    def test_socket_is_refused(self, tmp_path: Path) -> None:
        """A unix socket is not a file to hash."""
        p = tmp_path / "s"
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(p))
            with pytest.raises(OSError):
                hash_file(str(p), frozenset({SHA256}))
