"""Shared fixtures: the fake Hub, an isolated environment, the CLI and the daemon as a user runs them."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tqdm
from fakehub import FakeHub, fake_hub  # noqa: F401 - the fixture, for every test module

# tqdm's monitor is a process-wide helper thread started by the first progress bar; it is not ours to leak
tqdm.tqdm.monitor_interval = 0

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def no_thread_leak() -> Iterator[None]:
    """Fail a test that leaves a thread running behind it."""
    before = set(threading.enumerate())
    yield
    leaked = []
    for t in set(threading.enumerate()) - before:
        t.join(timeout=5)
        if t.is_alive():
            leaked.append(t.name)
    assert not leaked, f"threads leaked: {leaked}"


@pytest.fixture(autouse=True)
def hf_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep the user's Hub token, cache and state out of every test."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT", "HF_HUB_OFFLINE", "NOTIFY_SOCKET",
                 "HF_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg_state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg_config"))


def cli_env(hub: FakeHub | None = None, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    if hub is not None:
        env["HF_ENDPOINT"] = hub.url
    env.update(extra)
    return env


def run_cli(*args: str, hub: FakeHub | None = None, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`hfwatchd ARGS` as a user runs it, in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "hfwatchd", *args],
        env=env if env is not None else cli_env(hub),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, (str, Path)):
        return json.dumps(str(v))
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(v)


def write_config(path: Path, *, hub: FakeHub | None, watches: list[dict[str, Any]], **top: Any) -> Path:
    """A config file: top-level keys, a [hub] table pointing at the fake Hub, and [[watch]] tables."""
    hub_table = top.pop("hub_table", {})
    lines = [f"{k} = {toml_value(v)}" for k, v in top.items()]
    lines.append("[hub]")
    if hub is not None:
        lines.append(f"endpoint = {toml_value(hub.url)}")
    lines += [f"{k} = {toml_value(v)}" for k, v in hub_table.items()]
    for w in watches:
        lines.append("[[watch]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in w.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def watch_empty_folder(tmp_path: Path, hub: FakeHub, start: Callable[..., DaemonProc], repo: str,
                       commit: str) -> tuple[Path, DaemonProc]:
    """A daemon watching a new empty folder for `repo`, its manifest loaded and its first scan done."""
    watched = tmp_path / "dl"
    watched.mkdir()
    state = tmp_path / "state"
    cfg = write_config(tmp_path / "hfwatchd.toml", hub=hub, watches=[{"path": watched, "repos": [repo]}],
                       state_dir=state, log_file=state / "events.jsonl", rescan_interval="1h", workers=2)
    d = start(cfg)
    d.wait_for("manifest.loaded", repo=repo, commit=commit)
    d.wait_for("scan.finished")
    return watched, d


class DaemonProc:
    """`hfwatchd --config FILE` in a subprocess, with its JSON log lines readable as a queue."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hfwatchd", "--config", str(config)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env=env if env is not None else cli_env(),
        )
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._reader = threading.Thread(target=self._read, name="daemon-log-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.raw.append(line)
            try:
                self.lines.put(json.loads(line))
            except json.JSONDecodeError:
                self.lines.put({"event": "<not json>", "line": line})
        self.lines.put(None)

    def wait_for(self, event: str, timeout: float = 20.0, **match: Any) -> dict[str, Any]:
        """The next log line with this event (and these field values), or fail after `timeout` seconds."""
        return self.wait_until(lambda r: r.get("event") == event and all(r.get(k) == v for k, v in match.items()),
                               timeout, f"{event} {match}")

    def wait_until(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 20.0,
                   what: str = "a matching line") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {what} within {timeout}s; log so far:\n" + "".join(self.raw[-40:]))
            try:
                rec = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if rec is None:
                self.lines.put(None)
                raise AssertionError(f"daemon exited ({self.proc.poll()}) before {what}:\n" + "".join(self.raw[-40:]))
            self.seen.append(rec)
            if pred(rec):
                return rec

    def drain(self) -> list[dict[str, Any]]:
        """Lines logged so far and not yet consumed."""
        out = []
        while True:
            try:
                rec = self.lines.get_nowait()
            except queue.Empty:
                return out
            if rec is None:
                self.lines.put(None)
                return out
            self.seen.append(rec)
            out.append(rec)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._close()
        return rc

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._close()

    def _close(self) -> None:
        self._reader.join(timeout=5)
        if self.proc.stderr is not None and not self._reader.is_alive():
            self.proc.stderr.close()


@pytest.fixture
def daemon_factory() -> Iterator[Callable[..., DaemonProc]]:
    """Start daemons; every one still running is stopped after the test."""
    started: list[DaemonProc] = []

    def start(config: Path, env: dict[str, str] | None = None, ready: bool = True) -> DaemonProc:
        d = DaemonProc(config, env)
        started.append(d)
        if ready:
            d.wait_for("daemon.ready")
        return d

    yield start
    for d in started:
        d.stop()
