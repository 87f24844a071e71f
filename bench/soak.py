"""Soak test: the daemon for a set time under a stream of real downloads, every verdict checked.

Runs ``hfwatchd --config`` (a subprocess, as systemd runs it) on one watched folder against the
tests' fake Hub (in this process), while a few threads keep doing what users do with real
``wget``, ``curl`` and ``aria2c``: good downloads, downloads the server corrupts, downloads killed
half-way, files deleted (also mid-download), renamed and downloaded again over themselves. Each
action knows the status its file must get; every verdict line the daemon logs is checked against
it, every action that needs a verdict must get one within ``--verdict-timeout``, and at the end the
state database must hold exactly the files still on disk with the right statuses. RSS, open
descriptors, threads and CPU time of the daemon are sampled at the start, every 30 s and at the
end.

Not part of the test suite. Run from the repository root::

    .venv/bin/python bench/soak.py                 # 10 minutes
    .venv/bin/python bench/soak.py --minutes 2 --json soak.json

Exit status 0 when every verdict was right and none was missing, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REPO = "soak/model"
VERDICTS = {"file.matched": "matched", "file.mismatch": "mismatch", "file.incomplete": "incomplete",
            "file.unknown": "unknown"}
KEEP = 40  # files kept on disk at most; older ones are deleted (a deletion is an action too)
MIB = 1 << 20


# --- the daemon and its log ---------------------------------------------------------------------


@dataclass
class Line:
    index: int
    record: dict[str, Any]


class DaemonLog:
    """Every JSON line of the daemon's stderr, indexed, with a condition to wait on."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[Line] = []
        self.not_json: list[str] = []
        self.by_path: dict[str, list[Line]] = {}
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, name="soak-log", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            try:
                rec = json.loads(raw)
            except json.JSONDecodeError:
                with self.cond:
                    self.not_json.append(raw.rstrip("\n"))
                continue
            with self.cond:
                line = Line(len(self.lines), rec)
                self.lines.append(line)
                if rec.get("event") in VERDICTS and isinstance(rec.get("path"), str):
                    self.by_path.setdefault(rec["path"], []).append(line)
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def mark(self) -> int:
        with self.cond:
            return len(self.lines)

    def wait_event(self, event: str, timeout: float, since: int = 0) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines[since:]:
                    if line.record.get("event") == event:
                        return line.record
                since = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return None
                self.cond.wait(left)

    def wait_verdict(self, path: str, since: int, timeout: float) -> dict[str, Any] | None:
        """The first verdict line for `path` logged at or after line index `since`."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.by_path.get(path, []):
                    if line.index >= since:
                        return line.record
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return None
                self.cond.wait(left)

    def verdicts_since(self, path: str, since: int) -> list[dict[str, Any]]:
        with self.cond:
            return [line.record for line in self.by_path.get(path, []) if line.index >= since]


def usage(pid: int) -> dict[str, float]:
    """RSS (MiB), open descriptors, threads and CPU seconds of a live process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = {k: v.strip() for k, _, v in (line.partition(":") for line in status.splitlines())}
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        stat = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return {
        "rss_mib": round(int(fields["VmRSS"].split()[0]) / 1024, 1),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": int(fields["Threads"]),
        "cpu_s": round((int(stat[11]) + int(stat[12])) / tick, 2),
    }


def signature(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def deleted_fds(pid: int) -> list[str]:
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.endswith("(deleted)"):
                out.append(target)
    return out


# --- the actions ---------------------------------------------------------------------------------


@dataclass
class Tally:
    """What happened, per action kind, and every problem found, in words."""

    done: Counter[str] = field(default_factory=Counter)
    right: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ok(self, kind: str) -> None:
        with self.lock:
            self.done[kind] += 1
            self.right[kind] += 1

    def bad(self, kind: str, what: str) -> None:
        with self.lock:
            self.done[kind] += 1
            self.problems.append(f"{kind}: {what}")
            print(f"  PROBLEM {kind}: {what}", file=sys.stderr, flush=True)


@dataclass
class Alive:
    """A file on disk with a final verdict, available to be renamed, downloaded again or deleted."""

    path: Path
    rfilename: str
    status: str


class World:
    """The fake Hub's repo, the watched folder, and what is on disk with which expected status."""

    def __init__(self, hub: Any, folder: Path, files: dict[str, bytes], bad: set[str], log: DaemonLog,
                 tally: Tally, timeout: float, seed: int) -> None:
        self.hub, self.folder, self.files, self.bad = hub, folder, files, bad
        self.log, self.tally, self.timeout = log, tally, timeout
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.alive: list[Alive] = []
        self.busy: set[Path] = set()
        self.gone: dict[str, int] = {}  # path -> log index from which no verdict may appear for it
        self.expected: dict[str, str] = {}  # every path with a verdict that must hold at the end
        self.counter = 0
        # one shard the server sometimes corrupts, for corrupt_redownload alone (serialised)
        self.flaky = sorted(p for p in files if p.endswith(".safetensors") and p not in bad)[0]
        self.flaky_lock = threading.Lock()

    def fresh_name(self, rfilename: str, style: str) -> Path:
        with self.lock:
            self.counter += 1
            n = self.counter
        stem, dot, ext = rfilename.rpartition(".")
        # the duplicate suffixes the downloaders themselves use: wget X.1, aria2 X.1.ext
        name = f"{rfilename}.{n}" if style == "wget" or not dot else f"{stem}.{n}.{ext}"
        return self.folder / name

    def url(self, rfilename: str) -> str:
        return str(self.hub.resolve_url(REPO, rfilename))

    def pick(self, *, good_only: bool = False) -> Alive | None:
        with self.lock:
            choices = [a for a in self.alive if a.path not in self.busy and (a.status == "matched" or not good_only)]
            if not choices:
                return None
            a = self.rng.choice(choices)
            self.busy.add(a.path)
            return a

    def done_with(self, a: Alive, *, keep: bool) -> None:
        with self.lock:
            self.busy.discard(a.path)
            if not keep:
                self.alive = [x for x in self.alive if x.path != a.path]

    def add_alive(self, a: Alive) -> list[Alive]:
        """Keep `a`; returns the oldest files over KEEP, now reserved for deletion."""
        with self.lock:
            self.alive.append(a)
            over = [x for x in self.alive if x.path not in self.busy][: max(0, len(self.alive) - KEEP)]
            for x in over:
                self.busy.add(x.path)
            return over

    # -- one action, start to verdict --------------------------------------------------------------

    def expect(self, kind: str, path: Path, status: str, since: int, rfilename: str) -> bool:
        rec = self.log.wait_verdict(str(path), since, self.timeout)
        if rec is None:
            self.tally.bad(kind, f"no verdict for {path.name} within {self.timeout:g}s (expected {status})")
            return False
        got = VERDICTS[rec["event"]]
        if got != status or (rec.get("rfilename") not in (None, rfilename)):
            self.tally.bad(kind, f"{path.name}: {got} ({rec.get('rfilename')}), expected {status} ({rfilename})")
            return False
        with self.lock:
            self.expected[str(path)] = status
        self.tally.ok(kind)
        return True

    def download(self, kind: str, tool: str, rfilename: str, status: str) -> None:
        path = self.fresh_name(rfilename, "aria2" if tool == "aria2c" else "wget")
        since = self.log.mark()
        url = self.url(rfilename)
        if tool == "wget":
            argv = ["wget", "-q", "-O", str(path), url]
        elif tool == "curl":
            argv = ["curl", "-sSfL", "-o", str(path), url]
        else:  # as hfd runs it: several connections writing at several offsets, a control file beside
            argv = ["aria2c", "-q", "--allow-overwrite=true", "--auto-file-renaming=false", "--file-allocation=none",
                    "-x", "4", "-s", "4", "-k", "1M", "-d", str(path.parent), "-o", path.name, url]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            self.tally.bad(kind, f"{tool} failed ({result.returncode}): {result.stderr.strip()[:200]}")
            return
        if self.expect(kind, path, status, since, rfilename):
            for old in self.add_alive(Alive(path, rfilename, status)):
                self.delete(old)

    def interrupted(self) -> None:
        """curl killed once it has written part of the file (the fake Hub sends at --rate): a truncated download."""
        kind = "interrupted"
        rfilename = self.rng.choice(self.good_shards())
        path = self.fresh_name(rfilename, "wget")
        since = self.log.mark()
        proc = subprocess.Popen(["curl", "-sSfL", "-o", str(path), self.url(rfilename)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (not path.exists() or path.stat().st_size < 256 * 1024):
            time.sleep(0.02)
        proc.kill()
        proc.wait()
        if not path.exists() or path.stat().st_size >= len(self.files[rfilename]):
            self.tally.bad(kind, f"curl did not leave a partial {path.name}")
            return
        if self.expect(kind, path, "incomplete", since, rfilename):
            for old in self.add_alive(Alive(path, rfilename, "incomplete")):
                self.delete(old)

    def deleted_mid_download(self) -> None:
        """A download whose file is deleted while curl still writes it: no verdict, nothing left in state."""
        kind = "deleted mid-download"
        rfilename = self.rng.choice(self.good_shards())
        path = self.fresh_name(rfilename, "wget")
        proc = subprocess.Popen(["curl", "-sSfL", "-o", str(path), self.url(rfilename)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (not path.exists() or path.stat().st_size < 128 * 1024):
            time.sleep(0.02)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        with self.lock:
            self.gone[str(path)] = self.log.mark()
        proc.wait(120)
        self.tally.ok(kind)  # checked at the end: no verdict after the deletion, no row in state

    def delete(self, a: Alive) -> None:
        a.path.unlink()
        with self.lock:
            self.gone[str(a.path)] = self.log.mark()
            self.expected.pop(str(a.path), None)
        self.done_with(a, keep=False)
        self.tally.ok("deleted")

    def rename(self) -> None:
        a = self.pick()
        if a is None:
            return
        target = self.fresh_name(a.rfilename, "wget")
        since = self.log.mark()
        os.rename(a.path, target)
        with self.lock:
            self.gone[str(a.path)] = since
            self.expected.pop(str(a.path), None)
            self.alive = [x for x in self.alive if x.path != a.path]
            self.busy.discard(a.path)
        if self.expect("renamed", target, a.status, since, a.rfilename):
            for old in self.add_alive(Alive(target, a.rfilename, a.status)):
                self.delete(old)

    def redownload(self) -> None:
        """The same file downloaded again over itself (wget -O and curl -o truncate and rewrite the same inode)."""
        a = self.pick(good_only=True)
        if a is None:
            return
        kind = "re-downloaded"
        before = signature(a.path)
        since = self.log.mark()
        tool = self.rng.choice(["wget", "curl"])
        argv = (["wget", "-q", "-O", str(a.path), self.url(a.rfilename)] if tool == "wget"
                else ["curl", "-sSfL", "-o", str(a.path), self.url(a.rfilename)])
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            self.tally.bad(kind, f"{tool} failed: {result.stderr.strip()[:200]}")
        elif signature(a.path) == before:
            # wget sets the mtime back to the server's Last-Modified: same inode, size and mtime, so the
            # daemon rightly keeps its verdict (the bytes are the same here; see corrupt_redownload)
            self.tally.ok(kind + " (same signature)")
        else:
            self.expect(kind, a.path, "matched", since, a.rfilename)
        self.done_with(a, keep=True)

    def corrupt_redownload(self) -> None:
        """A good file downloaded again with wget, and this time the bytes come back wrong (same size, same date)."""
        kind = "re-downloaded corrupt (wget)"
        rfilename = self.flaky
        if not self.flaky_lock.acquire(blocking=False):
            return  # another thread is using the flaky shard: do something else this time
        try:
            path = self.fresh_name(rfilename, "wget")
            since = self.log.mark()
            subprocess.run(["wget", "-q", "-O", str(path), self.url(rfilename)], check=True, timeout=120)
            if not self.expect(kind + ", first download", path, "matched", since, rfilename):
                return
            self.hub.corrupt(REPO, rfilename, self.rng.randbytes(len(self.files[rfilename])))
            try:
                since = self.log.mark()
                subprocess.run(["wget", "-q", "-O", str(path), self.url(rfilename)], check=True, timeout=120)
            finally:
                self.hub.corrupt(REPO, rfilename, self.files[rfilename])  # the server is right again
        finally:
            self.flaky_lock.release()
        self.expect(kind, path, "mismatch", since, rfilename)
        path.unlink()  # gone again: the state must forget it, whatever its verdict was
        with self.lock:
            self.gone[str(path)] = self.log.mark()
            self.expected.pop(str(path), None)

    def good_shards(self) -> list[str]:
        return [p for p in self.files if p.endswith(".safetensors") and p not in self.bad and p != self.flaky]

    def one(self) -> None:
        roll = self.rng.random()
        good = [p for p in self.files if p not in self.bad and p != self.flaky]
        if roll < 0.45:
            tool = self.rng.choice(["wget", "curl", "aria2c"])
            self.download(f"good ({tool})", tool, self.rng.choice(good), "matched")
        elif roll < 0.55:
            tool = self.rng.choice(["wget", "curl", "aria2c"])
            self.download(f"corrupted ({tool})", tool, self.rng.choice(sorted(self.bad)), "mismatch")
        elif roll < 0.65:
            self.interrupted()
        elif roll < 0.72:
            self.deleted_mid_download()
        elif roll < 0.82:
            self.rename()
        elif roll < 0.89:
            self.redownload()
        elif roll < 0.92:
            self.corrupt_redownload()
        else:
            a = self.pick()
            if a is not None:
                self.delete(a)


# --- the run -------------------------------------------------------------------------------------


def make_repo(rng: random.Random, shards: int) -> tuple[dict[str, bytes], set[str]]:
    files = {
        "config.json": json.dumps({"model_type": "soak", "hidden_size": 64}, indent=2).encode() + b"\n",
        "tokenizer_config.json": b'{"model_max_length": 512}\n',
        "README.md": b"# soak\n\nA repo for the soak test.\n",
    }
    for i in range(1, shards + 1):
        files[f"model-{i:05d}-of-{shards:05d}.safetensors"] = rng.randbytes(rng.randint(MIB, 4 * MIB))
    bad = {f"model-{i:05d}-of-{shards:05d}.safetensors" for i in (1, 2)}
    return files, bad


@contextlib.contextmanager
def daemon(config: Path, env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], DaemonLog]]:
    proc = subprocess.Popen([sys.executable, "-m", "hfwatchd", "--config", str(config)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    log = DaemonLog(proc)
    try:
        yield proc, log
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.thread.join(5)


def state_rows(state_dir: Path) -> dict[str, str]:
    db = sqlite3.connect(f"file:{state_dir / 'state.sqlite3'}?mode=ro", uri=True, timeout=30)
    try:
        return {os.fsdecode(bytes(p)): str(s) for p, s in db.execute("SELECT path, status FROM files")}
    finally:
        db.close()


def final_check(world: World, state_dir: Path, timeout: float) -> list[str]:
    """The state holds exactly the files on disk with their expected statuses; no verdict for a gone file."""
    problems = []
    for path, since in sorted(world.gone.items()):
        late = world.log.verdicts_since(path, since)
        if late and not Path(path).exists():
            problems.append(f"a verdict for {Path(path).name} after it was deleted or renamed: {late[0]['event']}")
    deadline = time.monotonic() + timeout
    while True:
        rows = state_rows(state_dir)
        on_disk = {str(p) for p in world.folder.iterdir() if p.is_file()}
        wrong = [f"{Path(p).name}: state says {rows.get(p)}, expected {s}" for p, s in world.expected.items()
                 if rows.get(p) != s]
        stale = [f"{Path(p).name}: in state ({s}) but not on disk" for p, s in rows.items() if p not in on_disk]
        unjudged = [f"{Path(p).name}: on disk, not in state" for p in on_disk if p not in rows]
        if not (wrong or stale or unjudged) or time.monotonic() > deadline:
            return problems + wrong + stale + unjudged
        time.sleep(0.5)  # the last deletions are forgotten within a moment; this is the end-of-run settle


def run(args: argparse.Namespace) -> int:
    from fakehub import FakeHub

    for tool in ("wget", "curl", "aria2c"):
        if shutil.which(tool) is None:
            print(f"soak: {tool} is needed", file=sys.stderr)
            return 2
    rng = random.Random(args.seed)
    files, bad = make_repo(rng, args.shards)
    work = Path(tempfile.mkdtemp(prefix="hfwatchd-soak-", dir=args.tmp_dir))
    try:
        with FakeHub() as hub:
            # downloads last a while: the progressive tracker follows them, and kills land mid-way
            hub.rate = int(args.rate * 1_000_000)
            hub.add_repo(REPO, files)
            for path in bad:  # the server sends the right size with the wrong bytes: every download is corrupt
                hub.corrupt(REPO, path, rng.randbytes(len(files[path])))
            folder = work / "Downloads"
            folder.mkdir()
            state_dir = work / "state"
            config = work / "hfwatchd.toml"
            config.write_text(
                f'state_dir = "{state_dir}"\nworkers = 2\nrescan_interval = "{args.rescan}"\n'
                f'[hub]\nendpoint = "{hub.url}"\n[web]\nlisten = "127.0.0.1:0"\n'
                f'[[watch]]\npath = "{folder}"\nrepos = ["{REPO}"]\n', encoding="utf-8")
            env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
            env.update(HF_HOME=str(work / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1",
                       XDG_STATE_HOME=str(work / "xdg-state"), XDG_CONFIG_HOME=str(work / "xdg-config"))
            with daemon(config, env) as (proc, log):
                if log.wait_event("scan.finished", 60) is None:
                    print("soak: the daemon did not finish its first scan:\n" + "\n".join(log.not_json[-20:]),
                          file=sys.stderr)
                    return 1
                start = usage(proc.pid)
                samples = [{"t": 0.0, **start}]
                print(f"soak: {args.minutes:g} min, {args.parallel} parallel, repo of {len(files)} files "
                      f"({sum(map(len, files.values())) / MIB:.0f} MiB, {len(bad)} served corrupt); daemon pid "
                      f"{proc.pid}: {start}", flush=True)
                tally = Tally()
                world = World(hub, folder, files, bad, log, tally, args.verdict_timeout, args.seed)
                t0 = time.monotonic()
                end = t0 + args.minutes * 60
                stop = threading.Event()

                def worker() -> None:
                    while not stop.is_set() and time.monotonic() < end and proc.poll() is None:
                        try:
                            world.one()
                        except Exception as exc:
                            tally.bad("soak itself", f"{type(exc).__name__}: {exc}")

                threads = [threading.Thread(target=worker, name=f"soak-{i}") for i in range(args.parallel)]
                for t in threads:
                    t.start()
                next_sample = t0 + 30
                try:
                    while any(t.is_alive() for t in threads):
                        for t in threads:
                            t.join(max(0.0, min(next_sample, end + 300) - time.monotonic()))
                        if time.monotonic() >= next_sample and proc.poll() is None:
                            samples.append({"t": round(time.monotonic() - t0, 1), **usage(proc.pid)})
                            s = samples[-1]
                            print(f"  {s['t']:6.0f} s: {sum(tally.done.values())} actions, RSS {s['rss_mib']} MiB, "
                                  f"{s['fds']} fds, {s['threads']} threads, CPU {s['cpu_s']} s", flush=True)
                            next_sample += 30
                except KeyboardInterrupt:
                    stop.set()
                    for t in threads:
                        t.join()
                alive = proc.poll() is None
                if not alive:
                    tally.problems.append(f"the daemon exited ({proc.returncode}) during the run")
                else:
                    tally.problems.extend(final_check(world, state_dir, 30))
                    leaked = deleted_fds(proc.pid)
                    if leaked:
                        tally.problems.append(f"descriptors of deleted files still open: {leaked[:5]}")
                    samples.append({"t": round(time.monotonic() - t0, 1), **usage(proc.pid)})
                alarms = ("worker.failed", "scan.failed", "state.failed", "daemon.failed")
                failures = [r.record for r in log.lines
                            if r.record.get("event") in alarms or r.record.get("level") == "critical"]
                tally.problems.extend(f"logged {r['event']}: {r.get('error')}" for r in failures)
                if log.not_json:
                    tally.problems.append(f"{len(log.not_json)} lines not JSON, e.g. {log.not_json[0][:200]}")
            report(args, tally, samples, log)
            if args.json:
                Path(args.json).write_text(json.dumps({
                    "minutes": args.minutes, "parallel": args.parallel, "seed": args.seed,
                    "actions": dict(tally.done), "right": dict(tally.right), "problems": tally.problems,
                    "samples": samples, "log_lines": len(log.lines),
                    "verdict_lines": sum(len(v) for v in log.by_path.values()),
                }, indent=2) + "\n", encoding="utf-8")
            return 0 if not tally.problems else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(args: argparse.Namespace, tally: Tally, samples: list[dict[str, Any]], log: DaemonLog) -> None:
    print()
    print(f"{'action':<44} {'done':>6} {'right':>6}")
    for kind in sorted(tally.done):
        print(f"{kind:<44} {tally.done[kind]:>6} {tally.right[kind]:>6}")
    print(f"{'total':<44} {sum(tally.done.values()):>6} {sum(tally.right.values()):>6}")
    verdict_lines = sum(len(v) for v in log.by_path.values())
    print(f"\n{len(log.lines)} log lines, {verdict_lines} verdict lines")
    first, last = samples[0], samples[-1]
    print(f"{'':>12} {'RSS MiB':>8} {'fds':>5} {'threads':>8} {'CPU s':>8}")
    for name, s in (("start", first), ("end", last)):
        print(f"{name:>12} {s['rss_mib']:>8} {s['fds']:>5} {s['threads']:>8} {s['cpu_s']:>8}")
    peak = max(s["rss_mib"] for s in samples)
    print(f"{'peak RSS':>12} {peak:>8}   (samples every 30 s: {len(samples)})")
    if tally.problems:
        print(f"\n{len(tally.problems)} PROBLEMS:")
        for p in tally.problems[:50]:
            print("  " + p)
    else:
        print("\nno problem: every verdict right, none missing, state consistent with the folder")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to run (default 10)")
    parser.add_argument("--parallel", type=int, default=3, help="actions running at once (default 3)")
    parser.add_argument("--shards", type=int, default=10, help="LFS shards in the repo, 1-4 MiB each (default 10)")
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--rate", type=float, default=20.0, help="MB/s the fake Hub sends each file at (default 20)")
    parser.add_argument("--rescan", default="2m", help="the daemon's rescan_interval (default 2m)")
    parser.add_argument("--verdict-timeout", type=float, default=30.0,
                        help="seconds a verdict may take after its download ends (default 30)")
    parser.add_argument("--tmp-dir", default=None)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests"))
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
