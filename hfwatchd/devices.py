"""Disks that cannot take parallel reads: one stream reading from a rotational device at a time.

Two interleaved sequential reads make a spinning disk seek between them, so both get slower
than one after the other. SSDs, NVMe and the page cache do not care. The rule is a pure
function of a device map; `DeviceGate` applies it with the map read from /sys.

The page cache matters more than it seems: virtual disks (virtio-blk, most cloud volumes)
report `rotational = 1` whatever backs them, and a file just downloaded is still in memory.
So the gate is taken per read, not per file: a reader takes its device's lock only when the
bytes it needs next are not in the page cache (see `StreamHasher.feed_fd`), and keeps it for a
turn of `DISK_TURN` bytes (64 MiB) of sequential reading. Files in memory are hashed in parallel
on any device.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path


def rotational_from_sys(dev: int, sys_root: Path = Path("/sys")) -> bool:
    """Whether the block device holding files of `st_dev` spins (`queue/rotational` is 1).

    A partition's own folder has no queue/: its parent (the whole disk) has. Anything that
    cannot be told (tmpfs, overlay, NFS, no /sys) counts as not rotational: parallel as before.
    """
    base = sys_root / "dev" / "block" / f"{os.major(dev)}:{os.minor(dev)}"
    try:
        real = base.resolve(strict=True)
    except OSError:
        return False
    for d in (real, real.parent):
        try:
            return (d / "queue" / "rotational").read_text().strip() == "1"
        except OSError:
            continue
    return False


def streams_allowed(dev: int, workers: int, rotational: Callable[[int], bool]) -> int:
    """How many files of device `dev` may be read from the disk at once: one on a spinning disk, else `workers`."""
    return 1 if rotational(dev) else workers


class DeviceGate:
    """Hands out disk-reading slots per device: at most one at a time on a rotational one."""

    def __init__(self, rotational: Callable[[int], bool] = rotational_from_sys) -> None:
        self._rotational = rotational
        self._known: dict[int, threading.Lock | None] = {}
        self._lock = threading.Lock()

    def disk(self, dev: int) -> threading.Lock | None:
        """The lock a reader holds while it reads device `dev` from the disk itself; None where parallel is fine."""
        with self._lock:
            if dev not in self._known:
                self._known[dev] = threading.Lock() if streams_allowed(dev, 2, self._rotational) == 1 else None
            return self._known[dev]

    @contextlib.contextmanager
    def slot(self, dev: int) -> Iterator[None]:
        """Hold `dev`'s slot for a whole block of work, whatever the page cache holds (no-op off rotational disks)."""
        lock = self.disk(dev)
        if lock is None:
            yield
            return
        with lock:
            yield
