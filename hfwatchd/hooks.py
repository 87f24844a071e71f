"""Run the user's `on_matched` / `on_mismatch` / `on_incomplete` commands without ever blocking a worker.

`HookRunner.run` only queues the command and returns. One background thread (started on the first
hook, joined by `close`) starts queued hooks while fewer than `max_running` are running, waits on
them all at once (pidfds and their stderr pipes in one selector, so it sleeps until something
happens), kills a hook's whole process group when it runs past its timeout, and logs `hook.failed`
for a non-zero exit, a timeout or a command that cannot be started. Hooks run without a shell,
with stdin and stdout on /dev/null; the tail of stderr is kept for the log line.
"""

from __future__ import annotations

import contextlib
import math
import os
import selectors
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .logs import Log

_STDERR_TAIL = 2000  # bytes of a hook's stderr kept for its hook.failed line
_POLL = 0.05  # only where pidfd_open is unavailable: how often exits are polled


def hook_env(
    *,
    event: str,
    status: str,
    path: str,
    repo: str | None,
    rfilename: str | None,
    commit: str | None,
    size: int | None,
    expected: str | None,
    actual: str | None,
) -> dict[str, str]:
    """The daemon's environment plus the verdict's fields as HFWATCHD_* variables (empty when unknown)."""

    def text(value: object) -> str:
        return "" if value is None else str(value)

    env = dict(os.environ)
    env.update(
        {
            "HFWATCHD_EVENT": event,
            "HFWATCHD_STATUS": status,
            "HFWATCHD_PATH": path,
            "HFWATCHD_REPO": text(repo),
            "HFWATCHD_RFILENAME": text(rfilename),
            "HFWATCHD_COMMIT": text(commit),
            "HFWATCHD_SIZE": text(size),
            "HFWATCHD_EXPECTED": text(expected),
            "HFWATCHD_ACTUAL": text(actual),
        }
    )
    return env


@dataclass
class _Job:
    argv: tuple[str, ...]
    env: dict[str, str]
    timeout: float
    hook: str
    path: str


@dataclass
class _Running:
    job: _Job
    proc: subprocess.Popen[bytes]
    deadline: float
    pidfd: int | None
    stderr_fd: int | None
    tail: bytearray = field(default_factory=bytearray)


class HookRunner:
    """Runs hooks in the background, at most `max_running` at a time; the rest wait in a queue."""

    def __init__(self, log: Log, *, max_running: int = 4, max_queued: int = 1000) -> None:
        if max_running < 1:
            raise ValueError("max_running must be at least 1")
        self._log = log
        self._max_running = max_running
        self._max_queued = max_queued
        self._lock = threading.Lock()
        self._queue: deque[_Job] = deque()
        self._running = 0
        self._closing = False
        self._close_deadline = math.inf
        self._thread: threading.Thread | None = None
        self._wake_r = -1
        self._wake_w = -1

    @property
    def queued(self) -> int:
        """Hooks waiting for a free slot (not started yet)."""
        with self._lock:
            return len(self._queue)

    @property
    def running(self) -> int:
        """Hooks started and not yet finished."""
        with self._lock:
            return self._running

    def run(self, argv: tuple[str, ...], *, env: dict[str, str], timeout: float, hook: str, path: str) -> None:
        """Queue `argv` to run with `env`; returns at once. Failures are logged, never raised."""
        job = _Job(tuple(argv), dict(env), float(timeout), hook, path)
        refused = None
        with self._lock:
            if self._closing:
                refused = "not run: hfwatchd is shutting down"
            elif not job.argv:
                refused = "empty command"
            elif len(self._queue) >= self._max_queued:
                refused = f"not run: {len(self._queue)} hooks are already waiting"
            else:
                self._queue.append(job)
                if self._thread is None:
                    self._wake_r, self._wake_w = os.pipe()
                    os.set_blocking(self._wake_r, False)
                    os.set_blocking(self._wake_w, False)
                    self._thread = threading.Thread(target=self._reap, name="hfwatchd-hooks", daemon=True)
                    self._thread.start()
        if refused is not None:
            self._failed(job, error=refused)
            return
        self._wake()

    def close(self, timeout: float = 5.0) -> None:
        """Let running and queued hooks finish for up to `timeout` seconds, kill the rest, join the thread."""
        with self._lock:
            if not self._closing:
                self._closing = True
                self._close_deadline = time.monotonic() + max(0.0, timeout)
            thread = self._thread
        if thread is None:
            return
        self._wake()
        thread.join()
        with self._lock:
            if self._wake_r >= 0:
                os.close(self._wake_r)
                os.close(self._wake_w)
                self._wake_r = self._wake_w = -1

    # --- the reaper thread ---------------------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"\0")

    def _failed(self, job: _Job, **fields: Any) -> None:
        # a broken log sink must not kill the reaper thread
        with contextlib.suppress(Exception):
            self._log.warning("hook.failed", hook=job.hook, path=job.path, **fields)

    def _reap(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._wake_r, selectors.EVENT_READ, None)
        running: list[_Running] = []
        try:
            while True:
                with self._lock:
                    starting: list[_Job] = []
                    while self._queue and len(running) + len(starting) < self._max_running:
                        starting.append(self._queue.popleft())
                    self._running = len(running) + len(starting)  # counted before they can run
                    closing, close_deadline = self._closing, self._close_deadline
                for job in starting:
                    r = self._start(job, sel)
                    if r is not None:
                        running.append(r)
                self._set_running(len(running))
                now = time.monotonic()
                if closing and (now >= close_deadline or (not running and not self.queued)):
                    return
                wait = min([r.deadline for r in running] + [close_deadline if closing else math.inf]) - now
                if any(r.pidfd is None for r in running):
                    wait = min(wait, _POLL)
                for key, _ in sel.select(None if wait == math.inf else max(0.0, wait)):
                    if key.data is None:
                        with contextlib.suppress(BlockingIOError):
                            while os.read(self._wake_r, 512):
                                pass
                    elif key.fd == key.data.stderr_fd:
                        self._read_stderr(key.data, sel)
                now = time.monotonic()
                for r in list(running):
                    rc = r.proc.poll()
                    if rc is not None:
                        running.remove(r)
                        self._finish(r, sel)
                        if rc != 0:
                            fields: dict[str, Any] = {"returncode": rc}
                            if r.tail:
                                fields["stderr"] = r.tail.decode("utf-8", "replace").strip()[-500:]
                            self._failed(r.job, **fields)
                    elif now >= r.deadline:
                        running.remove(r)
                        self._kill(r, sel)
                        self._failed(r.job, error=f"timed out after {r.job.timeout:g}s")
        finally:
            for r in running:  # shutting down (or an unexpected error): nothing is left behind
                self._kill(r, sel)
                self._failed(r.job, error="killed: still running when hfwatchd stopped")
            with self._lock:
                dropped = list(self._queue)
                self._queue.clear()
                self._running = 0
            for job in dropped:
                self._failed(job, error="not run: hfwatchd stopped first")
            sel.close()

    def _set_running(self, n: int) -> None:
        with self._lock:
            self._running = n

    def _start(self, job: _Job, sel: selectors.BaseSelector) -> _Running | None:
        try:
            proc = subprocess.Popen(
                job.argv,
                env=job.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own process group, so a timeout kills its children too
                close_fds=True,
            )
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self._failed(job, error=f"cannot run {job.argv[0]!r}: {reason}")
            return None
        pidfd: int | None = None
        with contextlib.suppress(AttributeError, OSError):
            pidfd = os.pidfd_open(proc.pid)
        stderr_fd: int | None = None
        if proc.stderr is not None:
            stderr_fd = proc.stderr.fileno()
            os.set_blocking(stderr_fd, False)
        r = _Running(job, proc, time.monotonic() + job.timeout, pidfd, stderr_fd)
        if pidfd is not None:
            sel.register(pidfd, selectors.EVENT_READ, r)  # readable once the process has exited
        if stderr_fd is not None:
            sel.register(stderr_fd, selectors.EVENT_READ, r)
        return r

    def _read_stderr(self, r: _Running, sel: selectors.BaseSelector) -> None:
        if r.stderr_fd is None:
            return
        try:
            while True:
                chunk = os.read(r.stderr_fd, 65536)
                if not chunk:  # EOF: the hook (and every child) closed it
                    sel.unregister(r.stderr_fd)
                    self._close_stderr(r)
                    return
                r.tail += chunk
                del r.tail[:-_STDERR_TAIL]
        except BlockingIOError:
            return
        except OSError:
            with contextlib.suppress(KeyError, ValueError):
                sel.unregister(r.stderr_fd)
            self._close_stderr(r)

    def _close_stderr(self, r: _Running) -> None:
        if r.proc.stderr is not None:
            with contextlib.suppress(OSError):
                r.proc.stderr.close()
        r.stderr_fd = None

    def _finish(self, r: _Running, sel: selectors.BaseSelector) -> None:
        """The process has been reaped: keep what it wrote to stderr, release its descriptors."""
        self._read_stderr(r, sel)  # what is already in the pipe; a child may keep it open forever
        if r.stderr_fd is not None:
            with contextlib.suppress(KeyError, ValueError):
                sel.unregister(r.stderr_fd)
            self._close_stderr(r)
        if r.pidfd is not None:
            with contextlib.suppress(KeyError, ValueError):
                sel.unregister(r.pidfd)
            os.close(r.pidfd)
            r.pidfd = None

    def _kill(self, r: _Running, sel: selectors.BaseSelector) -> None:
        """SIGKILL the hook's process group (the leader is not reaped yet, so its group id is still its own)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(r.proc.pid, signal.SIGKILL)
        r.proc.wait()
        self._finish(r, sel)
