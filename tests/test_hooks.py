"""Hooks: real processes, their environment, failures, timeouts and a clean shutdown, without blocking the caller."""

from __future__ import annotations

import os
import queue
import select
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hfwatchd.hooks import HookRunner, hook_env

WAIT = 20.0  # upper bound for anything to happen; tests never wait this long when they pass


class QueueLog:
    """A structlog-like logger whose lines a test can wait for."""

    def __init__(self) -> None:
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.put({"event": event, **fields})

    def next(self) -> dict[str, Any]:
        return self.lines.get(timeout=WAIT)

    def empty(self) -> bool:
        return self.lines.empty()


class Fifo:
    """A named pipe the test reads from: a hook writes to it, and EOF means every writer has exited."""

    def __init__(self, path: Path) -> None:
        self.path = path
        os.mkfifo(path)
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # no writer yet: does not block
        self.buf = b""

    def _read(self, deadline: float) -> bytes:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"nothing from {self.path} within {WAIT}s")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    return os.read(self.fd, 4096)
                except BlockingIOError:
                    continue

    def line(self) -> str:
        deadline = time.monotonic() + WAIT
        while b"\n" not in self.buf:
            chunk = self._read(deadline)
            if not chunk:
                raise AssertionError(f"{self.path} closed before a full line: {self.buf!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def wait_closed(self) -> None:
        """Return once every writer has closed the pipe (they exited, or were killed)."""
        deadline = time.monotonic() + WAIT
        while self._read(deadline):
            pass

    def close(self) -> None:
        os.close(self.fd)


def env_for(path: str = "/dl/config.json") -> dict[str, str]:
    return hook_env(event="file.matched", status="matched", path=path, repo="org/model", rfilename="config.json",
                    commit="c" * 40, size=42, expected="e" * 40, actual="e" * 40)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def log() -> QueueLog:
    return QueueLog()


@pytest.fixture
def runner(log: QueueLog) -> Iterator[HookRunner]:
    r = HookRunner(log, max_running=4)
    yield r
    r.close(timeout=5)


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Fifo]:
    f = Fifo(tmp_path / "fifo")
    yield f
    f.close()


class TestEnvironment:
    def test_fields_become_variables(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """hook_env puts every verdict field in HFWATCHD_* (empty when unknown) over the daemon's environment."""
        monkeypatch.setenv("SOMETHING_OF_THE_USER", "kept")
        env = hook_env(event="file.incomplete", status="incomplete", path="/dl/x.bin", repo=None, rfilename=None,
                       commit=None, size=7, expected=None, actual=None)
        assert env["SOMETHING_OF_THE_USER"] == "kept"
        assert {k: v for k, v in env.items() if k.startswith("HFWATCHD_")} == {
            "HFWATCHD_EVENT": "file.incomplete", "HFWATCHD_STATUS": "incomplete", "HFWATCHD_PATH": "/dl/x.bin",
            "HFWATCHD_REPO": "", "HFWATCHD_RFILENAME": "", "HFWATCHD_COMMIT": "", "HFWATCHD_SIZE": "7",
            "HFWATCHD_EXPECTED": "", "HFWATCHD_ACTUAL": "",
        }

    def test_variables_reach_the_hook(self, runner: HookRunner, log: QueueLog, tmp_path: Path) -> None:
        """A hook run by argv (no shell of ours) sees the HFWATCHD_* variables and the inherited PATH."""
        out = tmp_path / "env.txt"
        runner.run(("sh", "-c", 'env > "$1"', "sh", str(out)), env=env_for(), timeout=WAIT, hook="on_matched",
                   path="/dl/config.json")
        runner.close(timeout=WAIT)
        seen = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
        assert seen["HFWATCHD_EVENT"] == "file.matched"
        assert seen["HFWATCHD_STATUS"] == "matched"
        assert seen["HFWATCHD_PATH"] == "/dl/config.json"
        assert seen["HFWATCHD_REPO"] == "org/model"
        assert seen["HFWATCHD_RFILENAME"] == "config.json"
        assert seen["HFWATCHD_COMMIT"] == "c" * 40
        assert seen["HFWATCHD_SIZE"] == "42"
        assert seen["HFWATCHD_EXPECTED"] == seen["HFWATCHD_ACTUAL"] == "e" * 40
        assert seen["PATH"] == os.environ["PATH"]
        assert log.empty()


class TestFailures:
    def test_nonzero_exit_is_logged(self, runner: HookRunner, log: QueueLog) -> None:
        """A hook exiting non-zero gives hook.failed with its returncode and the tail of its stderr."""
        runner.run(("sh", "-c", "echo 'no notifier' >&2; exit 3"), env=env_for(), timeout=WAIT, hook="on_mismatch",
                   path="/dl/a.bin")
        line = log.next()
        assert line == {"event": "hook.failed", "hook": "on_mismatch", "path": "/dl/a.bin", "returncode": 3,
                        "stderr": "no notifier"}

    def test_missing_executable_is_logged(self, runner: HookRunner, log: QueueLog) -> None:
        """A command that does not exist gives hook.failed with an error, and the runner keeps working."""
        runner.run(("/nonexistent/notify-me",), env=env_for(), timeout=WAIT, hook="on_matched", path="/dl/a")
        line = log.next()
        assert line["event"] == "hook.failed" and line["hook"] == "on_matched" and line["path"] == "/dl/a"
        assert "/nonexistent/notify-me" in line["error"] and "No such file" in line["error"]
        runner.run(("sh", "-c", "exit 5"), env=env_for(), timeout=WAIT, hook="on_matched", path="/dl/b")
        assert log.next()["returncode"] == 5

    def test_exits_are_noticed_without_pidfd(self, runner: HookRunner, log: QueueLog,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
        """Where pidfd_open is missing (older kernels), the reaper polls and still reports the exit."""
        def no_pidfd(pid: int, flags: int = 0) -> int:
            raise OSError(38, "Function not implemented")

        monkeypatch.setattr(os, "pidfd_open", no_pidfd)
        runner.run(("sh", "-c", "exit 4"), env=env_for(), timeout=WAIT, hook="on_incomplete", path="/dl/p")
        assert log.next() == {"event": "hook.failed", "hook": "on_incomplete", "path": "/dl/p", "returncode": 4}

    def test_timeout_kills_the_whole_process_group(self, runner: HookRunner, log: QueueLog, fifo: Fifo) -> None:
        """A hook past its timeout is killed with its children, and hook.failed says it timed out."""
        script = '(echo "$$"; exec sleep 600) > "$1" & wait'  # the child keeps the fifo open while it lives
        runner.run(("sh", "-c", script, "sh", str(fifo.path)), env=env_for(), timeout=1, hook="on_matched",
                   path="/dl/slow")
        leader = int(fifo.line())
        line = log.next()
        assert line == {"event": "hook.failed", "hook": "on_matched", "path": "/dl/slow",
                        "error": "timed out after 1s"}
        fifo.wait_closed()  # the grandchild `sleep` was killed too: nobody holds the pipe any more
        assert gone(leader)


class TestNeverBlocks:
    def test_run_returns_at_once_and_close_kills_what_is_left(self, log: QueueLog, fifo: Fifo) -> None:
        """run() returns immediately for a long hook; close() past its timeout kills it and joins the reaper thread."""
        runner = HookRunner(log)
        started = time.monotonic()
        runner.run(("sh", "-c", 'echo "$$" > "$1"; exec sleep 600', "sh", str(fifo.path)), env=env_for(),
                   timeout=600, hook="on_matched", path="/dl/slow")
        assert time.monotonic() - started < 0.5
        pid = int(fifo.line())
        assert runner.running == 1
        runner.close(timeout=0)
        assert log.next() == {"event": "hook.failed", "hook": "on_matched", "path": "/dl/slow",
                              "error": "killed: still running when hfwatchd stopped"}
        assert gone(pid)
        assert runner.running == 0

    def test_more_than_max_running_are_queued(self, log: QueueLog, tmp_path: Path, fifo: Fifo) -> None:
        """Past max_running, hooks wait in a queue (the caller does not) and run once a slot frees up."""
        runner = HookRunner(log, max_running=1)
        release = tmp_path / "release"
        os.mkfifo(release)
        gate = os.open(release, os.O_RDWR)  # holds the fifo open, so neither side ever blocks on open()
        first = 'touch "$2"; echo started > "$1"; read x < "$3"; rm "$2"'
        second = 'if [ -e "$2" ]; then echo overlap; else echo alone; fi > "$1"'
        running, result = tmp_path / "first-running", tmp_path / "second.txt"
        started = time.monotonic()
        runner.run(("sh", "-c", first, "sh", str(fifo.path), str(running), str(release)), env=env_for(),
                   timeout=WAIT, hook="on_matched", path="/dl/1")
        for i in range(5):
            runner.run(("sh", "-c", second, "sh", str(result), str(running)), env=env_for(), timeout=WAIT,
                       hook="on_matched", path=f"/dl/{i + 2}")
        assert time.monotonic() - started < 0.5
        assert fifo.line() == "started"
        assert (runner.running, runner.queued) == (1, 5)  # the first holds the only slot until released
        try:
            os.write(gate, b"go\n")
            runner.close(timeout=WAIT)
        finally:
            os.close(gate)
        assert result.read_text() == "alone\n"
        assert log.empty()

    def test_close_waits_for_running_hooks(self, log: QueueLog, tmp_path: Path) -> None:
        """close() lets a hook that finishes within its timeout complete instead of killing it."""
        runner = HookRunner(log)
        done = tmp_path / "done"
        runner.run(("sh", "-c", 'sleep 0.2; echo ok > "$1"', "sh", str(done)), env=env_for(), timeout=WAIT,
                   hook="on_matched", path="/dl/a")
        runner.close(timeout=WAIT)
        assert done.read_text() == "ok\n"
        assert log.empty()

    def test_close_drops_queued_hooks_with_a_log_line(self, log: QueueLog, fifo: Fifo) -> None:
        """Hooks still queued when close() gives up are not started, and each one is logged."""
        runner = HookRunner(log, max_running=1)
        runner.run(("sh", "-c", 'echo "$$" > "$1"; exec sleep 600', "sh", str(fifo.path)), env=env_for(),
                   timeout=600, hook="on_matched", path="/dl/running")
        runner.run(("sh", "-c", "exit 0"), env=env_for(), timeout=600, hook="on_matched", path="/dl/queued")
        pid = int(fifo.line())
        runner.close(timeout=0)
        lines = {}
        for _ in range(2):
            line = log.next()
            lines[line["path"]] = line["error"]
        assert lines == {"/dl/running": "killed: still running when hfwatchd stopped",
                         "/dl/queued": "not run: hfwatchd stopped first"}
        assert gone(pid)

    def test_run_after_close_is_logged_not_started(self, log: QueueLog, tmp_path: Path) -> None:
        """A hook submitted after close() is refused with a log line and starts no thread or process."""
        runner = HookRunner(log)
        runner.close()
        runner.run(("sh", "-c", 'touch "$1"', "sh", str(tmp_path / "ran")), env=env_for(), timeout=5,
                   hook="on_matched", path="/dl/late")
        assert log.next()["error"] == "not run: hfwatchd is shutting down"
        assert not (tmp_path / "ran").exists()
