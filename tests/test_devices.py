"""Rotational disks: one stream reading from the disk at a time, while the page cache is read in parallel."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from hfwatchd.devices import DeviceGate, rotational_from_sys, streams_allowed
from hfwatchd.hashing import CHUNK_SIZE, SHA256, Cancelled, cached, hash_file

HDD = os.makedev(8, 0)  # sda
HDD_PART = os.makedev(8, 1)  # sda1
NVME = os.makedev(259, 0)  # nvme0n1
NVME_PART = os.makedev(259, 1)  # nvme0n1p1
UNKNOWN = os.makedev(0, 42)  # tmpfs, overlay, NFS: no block device

JOIN = 10.0  # seconds: generous bounds for threads that should be done at once


@pytest.fixture
def fake_sys(tmp_path: Path) -> Path:
    """A /sys with a spinning sda (partition sda1) and an nvme0n1 (partition p1), linked as the kernel does."""
    root = tmp_path / "sys"
    block = root / "devices" / "pci0000:00" / "block"
    for disk, part, rotational in (("sda", "sda1", "1"), ("nvme0n1", "nvme0n1p1", "0")):
        (block / disk / part).mkdir(parents=True)  # a partition's folder has no queue/ of its own
        (block / disk / "queue").mkdir()
        (block / disk / "queue" / "rotational").write_text(rotational + "\n")
    links = root / "dev" / "block"
    links.mkdir(parents=True)
    for dev, target in ((HDD, "sda"), (HDD_PART, "sda/sda1"), (NVME, "nvme0n1"), (NVME_PART, "nvme0n1/nvme0n1p1")):
        (links / f"{os.major(dev)}:{os.minor(dev)}").symlink_to(Path("../../devices/pci0000:00/block") / target)
    return root


class TestRule:
    def test_one_stream_on_a_rotational_device(self) -> None:
        """A spinning disk gets one stream whatever the worker count; other devices get every worker."""
        spins = {HDD: True, NVME: False}
        assert streams_allowed(HDD, 4, lambda d: spins.get(d, False)) == 1
        assert streams_allowed(NVME, 4, lambda d: spins.get(d, False)) == 4
        assert streams_allowed(UNKNOWN, 2, lambda d: spins.get(d, False)) == 2

    def test_whole_disk_and_partition(self, fake_sys: Path) -> None:
        """A partition answers with its parent disk's queue/rotational; the disk with its own."""
        assert rotational_from_sys(HDD, fake_sys) is True
        assert rotational_from_sys(HDD_PART, fake_sys) is True
        assert rotational_from_sys(NVME, fake_sys) is False
        assert rotational_from_sys(NVME_PART, fake_sys) is False

    def test_unknown_device_is_not_rotational(self, fake_sys: Path, tmp_path: Path) -> None:
        """A device /sys does not know, or no /sys at all, counts as not rotational (parallel)."""
        assert rotational_from_sys(UNKNOWN, fake_sys) is False
        assert rotational_from_sys(HDD, tmp_path / "no-sys") is False

    def test_unreadable_queue_is_not_rotational(self, fake_sys: Path) -> None:
        """A disk whose queue/rotational is gone counts as not rotational."""
        (fake_sys / "devices" / "pci0000:00" / "block" / "sda" / "queue" / "rotational").unlink()
        assert rotational_from_sys(HDD_PART, fake_sys) is False


def _overlap(gate: DeviceGate, dev: int) -> tuple[int, list[str]]:
    """Two threads take `dev`'s slot and try to meet inside it; returns the most inside at once and their fates."""
    meet = threading.Barrier(2, timeout=0.5)  # only a gate that lets both in lets them meet
    start = threading.Barrier(2, timeout=JOIN)
    lock = threading.Lock()
    inside, most, fates = 0, 0, []

    def worker() -> None:
        nonlocal inside, most
        start.wait()
        with gate.slot(dev):
            with lock:
                inside += 1
                most = max(most, inside)
            try:
                meet.wait()
                fate = "met"
            except threading.BrokenBarrierError:
                fate = "alone"
            with lock:
                inside -= 1
                fates.append(fate)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN)
    assert not any(t.is_alive() for t in threads)
    return most, sorted(fates)


class TestGate:
    def test_serialises_a_rotational_device(self) -> None:
        """Two threads on a spinning disk never hold its slot at once."""
        most, fates = _overlap(DeviceGate(lambda d: d == HDD), HDD)
        assert most == 1
        assert fates == ["alone", "alone"]

    def test_parallel_on_an_ssd(self) -> None:
        """Two threads on an SSD hold its slot at once."""
        most, fates = _overlap(DeviceGate(lambda d: d == HDD), NVME)
        assert most == 2
        assert fates == ["met", "met"]

    def test_devices_are_independent(self) -> None:
        """Each rotational device has its own lock; others have none; the rule is asked once per device."""
        asked: list[int] = []

        def rotational(dev: int) -> bool:
            asked.append(dev)
            return dev in (HDD, HDD_PART)

        gate = DeviceGate(rotational)
        a, b = gate.disk(HDD), gate.disk(HDD_PART)
        assert a is not None and b is not None and a is not b
        assert gate.disk(HDD) is a
        assert gate.disk(NVME) is None
        assert asked == [HDD, HDD_PART, NVME]


class _WatchedLock:
    """A real lock that says when someone asks for it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.asked = threading.Event()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        self.asked.set()
        return self.lock.acquire(blocking, timeout)

    def release(self) -> None:
        self.lock.release()


def _in_memory_fs(path: Path) -> bool:
    """Whether `path` is on a filesystem whose files live in memory (tmpfs, ramfs): never evicted."""
    best, fstype = "", ""
    with open("/proc/self/mounts", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            mount = fields[1].replace("\\040", " ")
            if str(path).startswith(mount.rstrip("/") + "/") and len(mount) > len(best):
                best, fstype = mount, fields[2]
    return fstype in ("tmpfs", "ramfs")


def _hash_in_thread(path: Path, disk: Any, cancel: threading.Event) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(hash_file(str(path), frozenset({SHA256}), disk=disk, cancel=cancel)[0][SHA256])
        except Cancelled as exc:
            out.append(exc)

    t = threading.Thread(target=run)
    t.start()
    return t, out


class TestPageCache:
    def test_cached_file_needs_no_slot(self, tmp_path: Path) -> None:
        """A file in the page cache is hashed while another reader holds its device's lock."""
        data = os.urandom(3 * CHUNK_SIZE + 5)
        p = tmp_path / "fresh"
        p.write_bytes(data)  # just written: every page is in memory
        disk = _WatchedLock()
        cancel = threading.Event()
        with disk.lock:
            t, out = _hash_in_thread(p, disk, cancel)
            t.join(JOIN)
            cancel.set()  # only matters if the test fails: never leave the thread waiting
            t.join(JOIN)
        assert out == [hashlib.sha256(data).hexdigest()]
        assert not disk.asked.is_set()

    def test_uncached_file_waits_for_the_slot(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A read the page cache cannot answer waits for the device's lock, and gives it back when done."""
        data = os.urandom(2 * CHUNK_SIZE)
        p = tmp_path / "cold"
        p.write_bytes(data)
        # as a spinning disk answers: the bytes are not in memory (a fast virtual disk may answer at once)
        monkeypatch.setattr("hfwatchd.hashing._read_cached", lambda fd, view, offset: None)
        disk = _WatchedLock()
        cancel = threading.Event()
        disk.lock.acquire()
        try:
            t, out = _hash_in_thread(p, disk, cancel)
            assert disk.asked.wait(JOIN)
            assert out == []  # asked, and the lock is held here: nothing read yet
        finally:
            disk.lock.release()
        t.join(JOIN)
        assert out == [hashlib.sha256(data).hexdigest()]
        assert not disk.lock.locked()  # released by the reader

    def test_the_disk_lock_is_held_for_a_turn(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A reader that needs the disk holds its lock for DISK_TURN bytes, then gives others a turn."""
        data = os.urandom(3 * CHUNK_SIZE)
        p = tmp_path / "cold"
        p.write_bytes(data)
        monkeypatch.setattr("hfwatchd.hashing._read_cached", lambda fd, view, offset: None)
        monkeypatch.setattr("hfwatchd.hashing.DISK_TURN", CHUNK_SIZE)
        turns = 0

        class Counting(_WatchedLock):
            def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
                nonlocal turns
                got = super().acquire(blocking, timeout)
                turns += got
                return got

        disk: Any = Counting()
        assert hash_file(str(p), frozenset({SHA256}), disk=disk)[0][SHA256] == hashlib.sha256(data).hexdigest()
        assert turns == 3
        assert not disk.lock.locked()

    def test_cancel_while_waiting_for_the_slot(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A reader waiting for the disk gives up when cancelled, without the lock."""
        p = tmp_path / "cold"
        p.write_bytes(os.urandom(CHUNK_SIZE))
        monkeypatch.setattr("hfwatchd.hashing._read_cached", lambda fd, view, offset: None)
        disk = _WatchedLock()
        cancel = threading.Event()
        with disk.lock:
            t, out = _hash_in_thread(p, disk, cancel)
            assert disk.asked.wait(JOIN)
            cancel.set()
            t.join(JOIN)
        assert len(out) == 1 and isinstance(out[0], Cancelled)

    def test_no_nowait_reads_take_the_slot(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Where no read can be told not to wait (no RWF_NOWAIT), a rotational disk's lock is taken, then released."""
        data = os.urandom(CHUNK_SIZE + 1)
        p = tmp_path / "f"
        p.write_bytes(data)
        monkeypatch.delattr(os, "RWF_NOWAIT")
        disk: Any = _WatchedLock()
        assert hash_file(str(p), frozenset({SHA256}), disk=disk)[0][SHA256] == hashlib.sha256(data).hexdigest()
        assert disk.asked.is_set()
        assert not disk.lock.locked()

    def test_cached_reports_residency(self, tmp_path: Path) -> None:
        """cached() says yes for a file just written and no once the kernel dropped it."""
        p = tmp_path / "f"
        p.write_bytes(os.urandom(CHUNK_SIZE))
        fd = os.open(p, os.O_RDONLY)
        try:
            assert cached(fd, 0, CHUNK_SIZE) is True
            assert cached(fd, 123, 0) is True
        finally:
            os.close(fd)
        if _in_memory_fs(p):
            pytest.skip("this filesystem keeps files in memory")
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # clean pages of a disk filesystem do go
            assert cached(fd, 0, CHUNK_SIZE) is False
        finally:
            os.close(fd)
