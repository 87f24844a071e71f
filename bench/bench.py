"""Benchmark `hfwatchd check` and the daemon's verdict latency against the other ways to verify Hub files.

Default mode times, alternating the tools within each round and repeating rounds, on the same
real files (random bytes written under a temporary folder, in the page cache) served by the
tests' fake Hub as repo ``bench/model``:

1. the ceiling: N threads hashing an in-memory buffer with hashlib.sha256 (N = min(cpus, files));
2. ``hfwatchd check bench/model DIR`` (fresh state), its fixed cost (same repo, a folder holding only
   config.json) and its hashing net of that fixed cost;
3. a second ``hfwatchd check`` with the same state over the unchanged folder;
4. a careful two-thread ``hashlib.file_digest`` script against the seed-format manifest;
5. the single-thread 50 MB-read loop of the seed ``validate.py``;
6. ``sha256sum --check``;
7. ``hf cache verify bench/model --local-dir DIR`` (huggingface_hub's own checker).

``--latency`` instead measures how long after curl finishes a 1 GiB download (at about 100 MB/s,
from the fake Hub into a watched folder) the daemon logs its ``file.matched`` line, and the daemon's
CPU time for that file relative to one plain sha256 of it.

Run from the repository root: ``.venv/bin/python bench/bench.py [--quick] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = "bench/model"
ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20
CONFIG_JSON = json.dumps({"model_type": "bench", "hidden_size": 8}, indent=2).encode() + b"\n"
NOISY = 0.05  # a timed run during which other processes took more than this share of the machine is noisy
TOOL_TIMEOUT = 900.0  # seconds: a hung tool is killed and reported, not waited for forever

# The careful two-thread script: hashlib.file_digest (readinto a reused buffer, GIL released) in 2 threads.
TWO_THREAD_SCRIPT = """\
import hashlib, json, os, sys
from concurrent.futures import ThreadPoolExecutor

manifest, root = sys.argv[1], sys.argv[2]
with open(manifest, encoding="utf-8") as f:
    expected = json.load(f)

def digest(rel):
    with open(os.path.join(root, rel), "rb") as f:
        return rel, hashlib.file_digest(f, "sha256").hexdigest()

bad = 0
with ThreadPoolExecutor(2) as pool:
    for rel, actual in pool.map(digest, sorted(expected)):
        bad += actual != expected[rel]
        print(rel, "matched" if actual == expected[rel] else "MISMATCH")
sys.exit(1 if bad else 0)
"""

# The seed validate.py as people run it today (get_sha256 verbatim), minus its state file, which would
# make every later round skip the files; it exits 1 when a file is unmatched or missing.
SEED_LOOP_SCRIPT = """\
import hashlib, json, os, sys

def get_sha256(filepath):
    with open(filepath, "rb") as f:
        chunksize = 50 * 1024 * 1024
        m = hashlib.sha256()
        while True:
            chunk = f.read(chunksize)
            if not chunk:
                break
            m.update(chunk)
    return m.hexdigest()

validate_filepath, root_path = sys.argv[1], sys.argv[2]
with open(validate_filepath, "r") as fr:
    sha256_info = json.load(fr)
bad = 0
for prefix, folders, filenames in os.walk(root_path):
    for filename in filenames:
        filepath = os.path.join(prefix, filename)
        relpath = os.path.relpath(filepath, root_path).replace("\\\\", "/")
        if relpath in sha256_info:
            if sha256_info[relpath] == get_sha256(filepath):
                print(relpath, "matched")
            else:
                print(relpath, "unmatched, please redownload !!")
                bad += 1
            sha256_info.pop(relpath)
print(f"There are {len(sha256_info)} files should be download")
sys.exit(1 if bad or sha256_info else 0)
"""


# Measures one command from a small process. Linux records the *parent's* peak RSS in a child's ru_maxrss
# at exec (exec_mmap keeps the old mm's high-water mark), so a child spawned straight from this benchmark,
# which holds the whole data set in memory for the fake Hub, would report at least that. Spawned from this
# small wrapper, the child's ru_maxrss is its own (or the wrapper's ~10 MiB, whichever is larger). The
# wall time is taken here, around spawn and wait4, so the wrapper's own start-up is not counted; so is the
# machine's busy CPU time, to tell how much other processes took while the command ran.
MEASURE_SCRIPT = """\
import json, os, select, signal, sys, time
result, timeout, bench_pid, argv = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4:]
def busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    with open(f"/proc/{bench_pid}/stat") as f:
        own = f.read().rsplit(")", 1)[1].split()
    return sum(v[:3]) + sum(v[5:8]), int(own[11]) + int(own[12])
busy0, bench0 = busy()
started = time.perf_counter()
pid = os.posix_spawnp(argv[0], argv, os.environ)
pidfd = os.pidfd_open(pid)
timed_out = not select.select([pidfd], [], [], timeout)[0]
if timed_out:
    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
_, status, usage = os.wait4(pid, 0)
seconds, ended = time.perf_counter() - started, time.time()
busy1, bench1 = busy()
os.close(pidfd)
tick = os.sysconf("SC_CLK_TCK")
cpu = usage.ru_utime + usage.ru_stime
with open(result, "w") as f:
    json.dump({"seconds": seconds, "ended": ended, "returncode": os.waitstatus_to_exitcode(status),
               "timed_out": timed_out, "maxrss_kib": usage.ru_maxrss, "cpu": cpu,
               "other_cpu": max(0.0, (busy1 - busy0 - bench1 + bench0) / tick - cpu)}, f)
"""


def busy_ticks() -> tuple[int, int]:
    """(busy clock ticks of the whole machine, ticks of this process): /proc/stat, /proc/self/stat."""
    with open("/proc/stat", encoding="ascii") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    with open("/proc/self/stat", encoding="ascii") as f:
        own = f.read().rsplit(")", 1)[1].split()
    return sum(v[:3]) + sum(v[5:8]), int(own[11]) + int(own[12])


# --- machine and tools ---------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = "unknown"
    flags: set[str] = set()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() == "model name" and cpu == "unknown":
                cpu = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    mem_kib = 0
    with contextlib.suppress(OSError), open("/proc/meminfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    return {
        "cpu": cpu,
        "cores": os.cpu_count() or 1,
        "commit": source_revision(),
        "sha_ni": "sha_ni" in flags,
        "memory_gib": round(mem_kib / MIB, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "huggingface_hub": metadata.version("huggingface_hub"),
        "hfwatchd": metadata.version("hfwatchd"),
    }


def source_revision() -> str:
    """The git commit of this checkout, "+modified" when the working tree differs from it; "unknown" without git."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # read-only: never refresh the index behind someone's back
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, env=env, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet", "HEAD", "--"], capture_output=True,
                               env=env, check=False).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+modified" if dirty else "")


def compile_package(name: str) -> None:
    """Write the bytecode of package `name` where Python looks for it, as `pip install` does at install time."""
    import compileall
    import importlib.util

    spec = importlib.util.find_spec(name)
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        compileall.compile_dir(folder, quiet=1)


def executable(name: str) -> str:
    """A console script of the venv this interpreter belongs to, else the name as found on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)


def base_env(workdir: Path, endpoint: str) -> dict[str, str]:
    """The environment every tool runs in: the fake Hub, no token, no cache or state of the user's.

    PYTHONDONTWRITEBYTECODE is dropped: a tool installed with pip runs from bytecode, and an
    editable install without it compiles hfwatchd's modules again on every run (~0.1 s here).
    """
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGINGFACE_")) and k != "PYTHONDONTWRITEBYTECODE"}
    env.update(
        HF_ENDPOINT=endpoint,
        HF_HOME=str(workdir / "hf-home"),
        HF_HUB_DISABLE_TELEMETRY="1",
        XDG_STATE_HOME=str(workdir / "state-unused"),
        NO_COLOR="1",
    )
    return env


# --- running and timing a command ----------------------------------------------------------------


@dataclass
class Run:
    """One timed command: wall time, exit code, peak RSS and CPU of that process alone."""

    seconds: float
    returncode: int
    maxrss_mib: float
    cpu_seconds: float
    output: str
    ended: float  # wall clock (time.time()) when the process had exited
    other_cpu: float  # busy CPU seconds of the machine that were neither this command's nor the benchmark's

    @property
    def tail(self) -> str:
        lines = [line for line in self.output.strip().splitlines() if line.strip()]
        return " | ".join(lines[-2:])[:160] or "(no output)"


StepResult = list[tuple[str, Run, bool]]  # (tool key, timed run, whether it verified what it should)


def run_timed(argv: list[str], env: dict[str, str], cwd: Path | None = None, timeout: float = TOOL_TIMEOUT) -> Run:
    """Run `argv` to completion under MEASURE_SCRIPT: wall time, exit code and rusage of exactly that process."""
    with tempfile.TemporaryFile() as out, tempfile.NamedTemporaryFile(suffix=".json") as result:
        wrapper = subprocess.run([sys.executable, "-S", "-c", MEASURE_SCRIPT, result.name, str(timeout),
                                  str(os.getpid()), *argv], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                 check=False)
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
        if wrapper.returncode != 0:  # the command could not even be started (not installed, not executable)
            return Run(0.0, 127, 0.0, 0.0, text, time.time(), 0.0)
        measured = json.loads(Path(result.name).read_text(encoding="utf-8"))
    if measured["timed_out"]:
        text += f"\n(killed after {timeout:g}s)"
    return Run(measured["seconds"], measured["returncode"], measured["maxrss_kib"] / 1024, measured["cpu"], text,
               measured["ended"], measured["other_cpu"])


def wait_until_quiet(max_wait: float, cores: int) -> float:
    """Wait, up to `max_wait` seconds, for a quarter second in which other processes use under NOISY of the machine.

    Returns the share of the machine other processes used in the last window looked at.
    """
    tick = os.sysconf("SC_CLK_TCK")
    deadline = time.monotonic() + max_wait
    while True:
        busy0, own0 = busy_ticks()
        started = time.monotonic()
        time.sleep(0.25)  # a measuring window, not synchronisation
        busy1, own1 = busy_ticks()
        share = (busy1 - busy0 - own1 + own0) / tick / ((time.monotonic() - started) * cores)
        if share <= NOISY or time.monotonic() >= deadline:
            return share


# --- data ----------------------------------------------------------------------------------------


def make_files(count: int, size: int) -> dict[str, bytes]:
    """config.json plus `count` shards of random bytes, named like a sharded safetensors model."""
    names = [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]
    with ThreadPoolExecutor(min(count, os.cpu_count() or 1)) as pool:  # os.urandom releases the GIL
        blobs = list(pool.map(lambda _: os.urandom(size), names))
    return {"config.json": CONFIG_JSON, **dict(zip(names, blobs, strict=True))}


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def warm_page_cache(paths: list[Path]) -> None:
    """Flush the writes, then read every file once so every tool reads from the page cache."""
    os.sync()
    buf = bytearray(8 * MIB)
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass


# --- the ceiling ---------------------------------------------------------------------------------


def ceiling(buffer: bytes, total: int, threads: int) -> Run:
    """`threads` threads hashing `total` bytes of an in-memory buffer between them with hashlib.sha256."""
    view = memoryview(buffer)
    share = total // threads

    def work(n: int) -> str:
        h = hashlib.sha256()
        left = share + (total - share * threads if n == 0 else 0)
        while left > 0:
            take = min(left, len(view))
            h.update(view[:take])
            left -= take
        return h.hexdigest()

    barrier = threading.Barrier(threads + 1)

    def timed(n: int) -> str:
        barrier.wait()
        return work(n)

    tick = os.sysconf("SC_CLK_TCK")
    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(timed, n) for n in range(threads)]
        busy0, own0 = busy_ticks()
        barrier.wait()
        started = time.perf_counter()
        for f in futures:
            f.result()
        seconds = time.perf_counter() - started
        busy1, own1 = busy_ticks()
    own = (own1 - own0) / tick
    return Run(seconds, 0, 0.0, own, "", time.time(), max(0.0, (busy1 - busy0) / tick - own))


# --- bulk mode -----------------------------------------------------------------------------------


@dataclass
class Tool:
    """A row of the table: its samples and, when it could not run, why."""

    key: str
    label: str
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)
    other_cpu: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None

    def add(self, run: Run, ok: bool) -> None:
        if not ok:
            self.error = self.error or f"exit {run.returncode}: {run.tail}"
            return
        self.seconds.append(run.seconds)
        self.cpu.append(run.cpu_seconds)
        self.other_cpu.append(run.other_cpu)
        if run.maxrss_mib:
            self.rss_mib.append(run.maxrss_mib)


def bulk(args: argparse.Namespace, info: dict[str, Any]) -> dict[str, Any]:
    from fakehub import FakeHub  # the tests' fake Hub; tests/ is put on sys.path by main()

    size, count = args.size_mib * MIB, args.files
    threads = max(1, min(os.cpu_count() or 1, count))
    hfwatchd, hf = executable("hfwatchd"), executable("hf")
    workdir = Path(tempfile.mkdtemp(prefix="hfwatchd-bench-", dir=args.tmp_dir))
    hub = FakeHub()
    try:
        print(f"generating {count} x {args.size_mib} MiB of random bytes under {workdir} ...", flush=True)
        files = make_files(count, size)
        total = sum(len(files[rel]) for rel in files if rel != "config.json")
        data_dir, config_only = workdir / "model", workdir / "config-only"
        write_tree(data_dir, files)
        write_tree(config_only, {"config.json": CONFIG_JSON})
        hub.add_repo(REPO, files)
        hub.start()
        env = base_env(workdir, hub.url)
        shards = sorted(p for p in data_dir.rglob("*") if p.is_file())
        warm_page_cache(shards)
        buffer = files[next(rel for rel in files if rel != "config.json")]  # already in memory for the hub

        compile_package("hfwatchd")  # an editable install has no bytecode until a run writes it
        seed = workdir / "seed.json"
        export = run_timed([hfwatchd, "manifest", REPO, "--format", "seed", "--export", str(seed)],
                           {**env, "XDG_STATE_HOME": str(workdir / "export-state")})
        if export.returncode != 0:
            raise SystemExit(f"bench: `hfwatchd manifest --export` failed: {export.output}")
        expected = json.loads(seed.read_text(encoding="utf-8"))
        sums = workdir / "sha256sums.txt"
        sums.write_text("".join(f"{digest}  {rel}\n" for rel, digest in sorted(expected.items())), encoding="utf-8")

        tools = {t.key: t for t in (
            Tool("ceiling", f"ceiling: {threads} threads hashlib.sha256 on memory"),
            Tool("ceiling1", "  (1 thread hashlib.sha256 on memory)"),
            Tool("first", "hfwatchd check (fresh state)"),
            Tool("fixed", "hfwatchd check, fixed cost (config.json only)"),
            Tool("second", "hfwatchd check again (same state)"),
            Tool("seedfile", "hfwatchd check, manifest = the script's seed file"),
            Tool("two", "two-thread hashlib.file_digest script"),
            Tool("seed", "single-thread 50 MB-read loop (seed)"),
            Tool("sha256sum", "sha256sum --check"),
            Tool("hf", "hf cache verify --local-dir"),
        )}

        def run_ceiling(_: Path) -> StepResult:
            return [("ceiling", ceiling(buffer, total, threads), True), ("ceiling1", ceiling(buffer, total, 1), True)]

        def run_hfwatchd(scratch: Path) -> StepResult:
            state_env = {**env, "XDG_STATE_HOME": str(scratch / "state")}  # fresh: it fetches and hashes
            argv = [hfwatchd, "check", REPO, str(data_dir), "--no-progress"]
            first = run_timed(argv, state_env)
            second = run_timed(argv, state_env)
            return [("first", first, first.returncode == 0), ("second", second, second.returncode == 0)]

        def run_fixed(scratch: Path) -> StepResult:
            run = run_timed([hfwatchd, "check", REPO, str(config_only), "--no-progress"],
                            {**env, "XDG_STATE_HOME": str(scratch / "state")})
            return [("fixed", run, run.returncode == 2)]  # 2: the shards are missing, config.json matched

        def run_seedfile(scratch: Path) -> StepResult:
            # the same inputs as the two-thread script: a manifest file, no Hub, fresh state
            cfg = scratch / "seedfile.toml"
            cfg.write_text(f'state_dir = "{scratch / "state"}"\n[[watch]]\npath = "{data_dir}"\n'
                           f'repos = [{{ repo = "{REPO}", manifest = "{seed}" }}]\n', encoding="utf-8")
            run = run_timed([hfwatchd, "check", "--config", str(cfg), "--no-progress"], env)
            return [("seedfile", run, run.returncode == 0)]

        def run_script(key: str, script: str) -> StepResult:
            run = run_timed([sys.executable, "-c", script, str(seed), str(data_dir)], env)
            return [(key, run, run.returncode == 0)]

        def run_sha256sum(_: Path) -> StepResult:
            run = run_timed(["sha256sum", "--check", "--quiet", str(sums)], env, cwd=data_dir)
            return [("sha256sum", run, run.returncode == 0)]

        def run_hf(_: Path) -> StepResult:
            run = run_timed([hf, "cache", "verify", REPO, "--local-dir", str(data_dir), "--fail-on-missing-files"],
                            env)
            return [("hf", run, run.returncode == 0)]

        steps: list[tuple[str, Callable[[Path], StepResult]]] = [
            ("ceiling", run_ceiling),
            ("hfwatchd check x2", run_hfwatchd),
            ("hfwatchd fixed cost", run_fixed),
            ("hfwatchd check, seed file", run_seedfile),
            ("two-thread script", lambda _: run_script("two", TWO_THREAD_SCRIPT)),
            ("seed loop", lambda _: run_script("seed", SEED_LOOP_SCRIPT)),
            ("sha256sum", run_sha256sum),
            ("hf cache verify", run_hf),
        ]
        cores = os.cpu_count() or 1
        retried = 0
        for r in range(args.rounds):
            shift = r % len(steps)  # alternate: every round starts with another tool
            for name, step in steps[shift:] + steps[:shift]:
                why = ""
                for attempt in range(args.retry_noisy + 1):
                    if args.wait_quiet:
                        wait_until_quiet(args.wait_quiet, cores)
                    print(f"  round {r + 1}/{args.rounds}: {name}" + (f" (again: {why})" if attempt else ""),
                          flush=True)
                    scratch = Path(tempfile.mkdtemp(dir=workdir))
                    results = step(scratch)
                    shutil.rmtree(scratch)
                    noisy = [run.other_cpu / (run.seconds * cores) for _, run, _ in results if run.seconds > 0]
                    if max(noisy, default=0.0) <= NOISY or attempt == args.retry_noisy:
                        break
                    why = f"other processes took {max(noisy):.0%} of the machine"
                    retried += 1
                for key, run, ok in results:
                    tools[key].add(run, ok)
        if retried:
            print(f"  {retried} noisy step(s) were run again (--retry-noisy {args.retry_noisy})")
        return report_bulk(tools, total, threads, info, args)
    finally:
        hub.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _fmt(value: float | None, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def report_bulk(tools: dict[str, Tool], total: int, threads: int, info: dict[str, Any],
                args: argparse.Namespace) -> dict[str, Any]:
    """Print the table of medians and ratios; return the same as a JSON-able document."""
    gb = total / 1e9
    med = {key: t.median for key, t in tools.items()}
    first, fixed, second = med["first"], med["fixed"], med["second"]
    net = first - fixed if first is not None and fixed is not None and first > fixed else None

    def gbps(seconds: float | None) -> float | None:
        return gb / seconds if seconds else None

    print()
    print(f"{args.files} files x {args.size_mib} MiB = {gb:.2f} GB, page cache warm, medians of {args.rounds} rounds")
    header = (f"{'tool':<48} {'median s':>9} {'min s':>7} {'max s':>7} {'GB/s':>6} {'CPU s':>6} {'peak RSS':>9}"
              f" {'other CPU s':>11}")
    print(header)
    print("-" * len(header))
    rows: list[dict[str, Any]] = []
    for key, t in tools.items():
        if t.error is not None and not t.seconds:
            print(f"{t.label:<48} FAILED: {t.error}")
            rows.append({"tool": t.label, "key": key, "error": t.error})
            continue
        cpu = statistics.median(t.cpu) if t.cpu else None
        rss = max(t.rss_mib) if t.rss_mib else None
        other = statistics.median(t.other_cpu) if t.other_cpu else None
        rate = gbps(t.median) if key not in ("fixed", "second") else None
        print(f"{t.label:<48} {_fmt(t.median, '9.3f')} {_fmt(min(t.seconds), '7.3f')} {_fmt(max(t.seconds), '7.3f')}"
              f" {_fmt(rate, '6.2f'):>6} {_fmt(cpu, '6.2f'):>6} {_fmt(rss, '5.0f') + ' MiB' if rss else '-':>9}"
              f" {_fmt(other, '11.2f'):>11}" + (f"   (some rounds failed: {t.error})" if t.error else ""))
        if key == "fixed" and net is not None:
            print(f"{'hfwatchd check, hashing net of fixed cost':<48} {net:9.3f} {'':>7} {'':>7} {gbps(net):6.2f}")
        rows.append({"tool": t.label, "key": key, "median_s": t.median, "samples_s": t.seconds, "gb_per_s": rate,
                     "cpu_s": cpu, "peak_rss_mib": rss, "other_cpu_s": t.other_cpu, "error": t.error})
    timed = sum(sum(t.seconds) for t in tools.values())
    foreign = sum(sum(t.other_cpu) for t in tools.values())
    cores = info["cores"]
    noise = foreign / (timed * cores) if timed else 0.0
    print(f"other processes used {foreign:.1f} CPU-s during {timed:.1f} s of timed runs "
          f"({noise:.0%} of the machine's {cores} cores)"
          + ("  WARNING: the machine was not quiet; timings are pessimistic" if noise > NOISY else ""))

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    rss_first = max(tools["first"].rss_mib) if tools["first"].rss_mib else None
    targets = [
        ("hfwatchd check vs hf cache verify (speed-up)", ratio(med["hf"], first), ">=", 1.5, "x"),
        ("hfwatchd check vs two-thread script (speed-up)", ratio(med["two"], first), ">=", 1.0, "x"),
        ("  same, both from the seed file (speed-up)", ratio(med["two"], med["seedfile"]), ">=", 1.0, "x"),
        ("hfwatchd net hashing / ceiling", ratio(med["ceiling"], net), ">=", 0.9, ""),
        ("second check / first check", ratio(second, first), "<", 0.10, ""),
        ("hfwatchd check peak RSS (MiB)", rss_first, "<", 100.0, ""),
    ]
    info_ratios = [
        ("hfwatchd check vs single-thread seed loop", ratio(med["seed"], first)),
        ("hfwatchd check vs sha256sum", ratio(med["sha256sum"], first)),
        ("hfwatchd check (whole) / ceiling", ratio(med["ceiling"], first)),
        ("two-thread script (whole) / ceiling", ratio(med["ceiling"], med["two"])),
        ("hfwatchd fixed cost (s)", fixed),
    ]
    print()
    header = f"{'target':<48} {'value':>8} {'target':>9}  met"
    print(header)
    print("-" * len(header))
    doc_targets = []
    for name, value, op, goal, unit in targets:
        met = None if value is None else (value >= goal if op == ">=" else value < goal)
        print(f"{name:<48} {_fmt(value, '8.3f', 'n/a'):>8} {op + format(goal, 'g') + unit:>9}  "
              f"{'n/a' if met is None else ('yes' if met else 'NO')}")
        doc_targets.append({"target": name, "value": value, "op": op, "goal": goal, "met": met})
    for name, value in info_ratios:
        print(f"{name:<48} {_fmt(value, '8.3f', 'n/a'):>8}")
    return {
        "mode": "bulk",
        "machine": info,
        "files": args.files,
        "size_mib": args.size_mib,
        "rounds": args.rounds,
        "bytes": total,
        "threads": threads,
        "rows": rows,
        "net_hashing_s": net,
        "other_cpu_share": noise,
        "targets": doc_targets,
        "info": dict(info_ratios),
    }


# --- latency mode --------------------------------------------------------------------------------


class LogTail:
    """Follows a JSON-lines log file from a given offset; only whole lines are consumed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self._partial = b""

    def skip_to_end(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.offset = self.path.stat().st_size
        self._partial = b""

    def read(self) -> Iterator[dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        self.offset += len(data)
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        for line in lines:
            with contextlib.suppress(ValueError):
                yield json.loads(line)

    def wait_for(self, match: Callable[[dict[str, Any]], bool], timeout: float,
                 alive: Callable[[], bool]) -> dict[str, Any]:
        """The first new line that `match`es; polls the file with a short wait, gives up at `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.read():
                if match(event):
                    return event
            if not alive():
                raise RuntimeError("the daemon exited")
            time.sleep(0.005)
        raise TimeoutError(f"no matching line in {self.path} within {timeout:.0f}s")


def parse_timestamp(value: str) -> float:
    """Seconds since the epoch from an ISO 8601 UTC timestamp such as 2025-01-01T00:00:00.123456Z."""
    stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.timestamp()


def process_cpu(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process, in seconds, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def thread_cpu(pid: int) -> dict[int, tuple[float, float]]:
    """(utime, stime) in seconds of every thread of a process, by thread id, from /proc/PID/task."""
    out: dict[int, tuple[float, float]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            out[int(tid)] = (int(fields[11]) / tick, int(fields[12]) / tick)
    return out


def thread_names(profile: Path) -> dict[int, str]:
    """Thread id -> Python thread name, from the `thread (TID): name;...` stacks of a py-spy raw file."""
    names: dict[int, str] = {}
    with contextlib.suppress(OSError), open(profile, encoding="utf-8") as f:
        for line in f:
            head, sep, rest = line.partition("): ")
            if sep and head.startswith("thread ("):
                with contextlib.suppress(ValueError):
                    names.setdefault(int(head[8:].split(")")[0], 0), rest.split(";", 1)[0])
    return names


def plain_hash_cpu(path: Path) -> float:
    """CPU seconds of this thread for one plain streaming sha256 of `path` (page cache warm)."""
    started = time.thread_time()
    with open(path, "rb") as f:
        hashlib.file_digest(f, "sha256")
    return time.thread_time() - started


def start_profiler(pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy sampling every thread of `pid` (idle ones too) into `out`, raw format; None without py-spy."""
    spy = executable("py-spy")
    if shutil.which(spy) is None:
        print("  (py-spy not found: pip install py-spy)", flush=True)
        return None
    # --nonblocking: stopping the daemon for every sample would add to the very CPU time being measured
    proc = subprocess.Popen([spy, "record", "--idle", "--threads", "--nonblocking", "--rate", "250", "-p", str(pid),
                             "-o", str(out), "--format", "raw"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # py-spy attaches asynchronously; samples before the download starts are only idle stacks
    return proc


def stop_profiler(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None:
        proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class LatencyRun:
    download_s: float
    latency_s: float | None
    daemon_cpu_s: float | None
    plain_cpu_s: float | None
    daemon_sys_s: float | None = None  # the system-time part of daemon_cpu_s
    threads: list[tuple[str, float, float]] = field(default_factory=list)  # (thread, user s, system s), busiest first
    verdict_seconds: float | None = None  # the `seconds` field of the verdict line: the daemon's judging time
    progressive_bytes: int | None = None  # bytes hashed while the download was running, when the line says
    other_share: float | None = None  # share of the machine other processes used during the download
    note: str = ""


def latency_once(hub: Any, workdir: Path, name: str, size: int, hfwatchd: str, timeout: float,
                 profile: Path | None = None) -> LatencyRun:
    """Start a daemon on an empty folder, curl the file into it, time the verdict; stop the daemon."""
    watched, state = workdir / "watched", workdir / "state"
    watched.mkdir()
    log_file = state / "events.jsonl"
    config = workdir / "hfwatchd.toml"
    config.write_text(
        f"state_dir = {json.dumps(str(state))}\n"
        f"log_file = {json.dumps(str(log_file))}\n"
        'rescan_interval = "1h"\n\n'
        f"[hub]\nendpoint = {json.dumps(hub.url)}\n\n"
        f"[[watch]]\npath = {json.dumps(str(watched))}\nrepos = [{json.dumps(REPO)}]\n",
        encoding="utf-8",
    )
    env = base_env(workdir, hub.url)
    tail = LogTail(log_file)
    with open(workdir / "daemon.stderr", "wb") as stderr:
        daemon = subprocess.Popen([hfwatchd, "--config", str(config)], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=stderr, env=env)
    try:

        def alive() -> bool:
            return daemon.poll() is None

        tail.wait_for(lambda e: e.get("event") == "daemon.ready", 60, alive)
        tail.wait_for(lambda e: e.get("event") == "scan.finished", 60, alive)
        target = watched / name
        spy = start_profiler(daemon.pid, profile) if profile is not None else None
        user0, sys0 = process_cpu(daemon.pid)
        threads0 = thread_cpu(daemon.pid)
        run = run_timed(["curl", "--silent", "--show-error", "--fail", "--location", "--output", str(target),
                         hub.resolve_url(REPO, name)], env, timeout=timeout)
        curl_end = run.ended
        if run.returncode != 0:
            return LatencyRun(run.seconds, None, None, None, note=f"curl exit {run.returncode}: {run.tail}")
        verdicts = ("file.matched", "file.mismatch")
        try:
            line = tail.wait_for(lambda e: e.get("event") in verdicts and e.get("path") == str(target), 120, alive)
        except (TimeoutError, RuntimeError) as exc:
            return LatencyRun(run.seconds, None, None, None, note=str(exc))
        user1, sys1 = process_cpu(daemon.pid)
        threads1 = thread_cpu(daemon.pid)
        stop_profiler(spy)
        daemon_cpu = user1 - user0 + sys1 - sys0
        names = thread_names(profile) if profile is not None else {}
        per_thread = sorted(((names.get(tid, f"tid {tid}"), u - threads0.get(tid, (0.0, 0.0))[0],
                              s - threads0.get(tid, (0.0, 0.0))[1]) for tid, (u, s) in threads1.items()),
                            key=lambda t: -(t[1] + t[2]))
        latency = parse_timestamp(line["timestamp"]) - curl_end
        note = "" if line["event"] == "file.matched" else f"{line['event']}!"
        # the wrapper counts everything but curl and this process as "other": take the daemon out too
        other = max(0.0, run.other_cpu - daemon_cpu) / (run.seconds * (os.cpu_count() or 1))
        return LatencyRun(run.seconds, latency, daemon_cpu, plain_hash_cpu(target), sys1 - sys0,
                          [t for t in per_thread if t[1] + t[2] > 0], line.get("seconds"),
                          line.get("progressive_bytes"), other, note)
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        if daemon.returncode not in (0, None):
            print(f"  daemon exited {daemon.returncode}: "
                  f"{(workdir / 'daemon.stderr').read_text(errors='replace')[-400:]}", flush=True)


def latency(args: argparse.Namespace, info: dict[str, Any]) -> dict[str, Any]:
    from fakehub import FakeHub

    hfwatchd = executable("hfwatchd")
    if shutil.which("curl") is None:
        raise SystemExit("bench: --latency needs curl")
    size = args.latency_mib * MIB
    name = "model.safetensors"
    workdir = Path(tempfile.mkdtemp(prefix="hfwatchd-bench-latency-", dir=args.tmp_dir))
    hub = FakeHub()
    hub.rate = args.rate
    runs: list[LatencyRun] = []
    try:
        print(f"generating {args.latency_mib} MiB of random bytes ...", flush=True)
        hub.add_repo(REPO, {"config.json": CONFIG_JSON, name: os.urandom(size)})
        hub.start()
        download_timeout = 10 * size / args.rate + 60
        for r in range(args.rounds):
            run_dir = workdir / f"run-{r}"
            run_dir.mkdir()
            print(f"  run {r + 1}/{args.rounds}: curl {args.latency_mib} MiB at {args.rate / 1e6:.0f} MB/s",
                  flush=True)
            profile = None if args.profile is None else Path(f"{args.profile}-{r + 1}.txt")
            runs.append(latency_once(hub, run_dir, name, size, hfwatchd, download_timeout, profile))
            if profile is not None:
                print(f"  py-spy samples of the daemon: {profile}", flush=True)
            shutil.rmtree(run_dir)
    finally:
        hub.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return report_latency(runs, size, info, args)


def report_latency(runs: list[LatencyRun], size: int, info: dict[str, Any],
                   args: argparse.Namespace) -> dict[str, Any]:
    print()
    print(f"latency: curl downloads {size / 1e9:.2f} GB from the fake Hub at {args.rate / 1e6:.0f} MB/s into a "
          "watched folder; verdict = file.matched timestamp")
    header = (f"{'run':>4} {'download s':>10} {'MB/s':>6} {'verdict - curl end ms':>22} {'judging s':>9} "
              f"{'progressive MB':>14} {'daemon CPU s':>12} {'of it sys':>9} {'plain sha256 CPU s':>18} "
              f"{'CPU ratio':>9} {'other CPU':>9}")
    print(header)
    print("-" * len(header))
    for i, r in enumerate(runs, 1):
        ratio = r.daemon_cpu_s / r.plain_cpu_s if r.daemon_cpu_s is not None and r.plain_cpu_s else None
        print(f"{i:>4} {r.download_s:10.2f} {size / r.download_s / 1e6:6.0f} "
              f"{_fmt(r.latency_s and r.latency_s * 1000, '22.0f', 'n/a'):>22} {_fmt(r.verdict_seconds, '9.3f'):>9} "
              f"{_fmt(r.progressive_bytes and r.progressive_bytes / 1e6, '14.0f'):>14} "
              f"{_fmt(r.daemon_cpu_s, '12.2f'):>12} {_fmt(r.daemon_sys_s, '9.2f'):>9} "
              f"{_fmt(r.plain_cpu_s, '18.2f'):>18} {_fmt(ratio, '9.2f'):>9} "
              f"{'-' if r.other_share is None else format(r.other_share, '.0%'):>9}  {r.note}")
        if r.threads:
            print("       daemon CPU by thread (user + system s): "
                  + ", ".join(f"{name} {u:.2f}+{s:.2f}" for name, u, s in r.threads[:4]))
    good = [r for r in runs if r.latency_s is not None]
    lat = statistics.median(r.latency_s for r in good if r.latency_s is not None) if good else None
    ratios = [r.daemon_cpu_s / r.plain_cpu_s for r in good if r.daemon_cpu_s is not None and r.plain_cpu_s]
    cpu_ratio = statistics.median(ratios) if ratios else None
    print()
    header = f"{'target':<48} {'value':>8} {'target':>9}  met"
    print(header)
    print("-" * len(header))
    targets = [("median verdict latency after curl ends (ms)", lat and lat * 1000, 250.0),
               ("daemon CPU / one plain sha256", cpu_ratio, 1.15)]
    doc_targets = []
    for name, value, goal in targets:
        met = None if value is None else value <= goal
        print(f"{name:<48} {_fmt(value, '8.2f', 'n/a'):>8} {'<=' + format(goal, 'g'):>9}  "
              f"{'n/a' if met is None else ('yes' if met else 'NO')}")
        doc_targets.append({"target": name, "value": value, "op": "<=", "goal": goal, "met": met})
    return {
        "mode": "latency",
        "machine": info,
        "bytes": size,
        "rate": args.rate,
        "runs": [r.__dict__ for r in runs],
        "median_latency_s": lat,
        "median_cpu_ratio": cpu_ratio,
        "targets": doc_targets,
    }


# --- entry point ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mib", type=int, default=512, help="size of each generated file (default: 512)")
    p.add_argument("--files", type=int, default=4, help="number of generated files (default: 4)")
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds, or runs with --latency; medians are reported (default: 3)")
    p.add_argument("--quick", action="store_true", help="4 files of 64 MiB, overriding --size-mib and --files")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON to FILE")
    p.add_argument("--tmp-dir", type=Path, metavar="DIR", help="where the temporary folder goes (default: $TMPDIR)")
    p.add_argument("--retry-noisy", type=int, default=0, metavar="N",
                   help="run a step again, up to N times, when other processes took more than 5%% of the machine "
                   "while it was timed (default: 0)")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                   help="before each step, wait up to SECONDS for other processes to use under 5%% of the machine "
                   "(default: 0, do not wait)")
    p.add_argument("--latency", action="store_true", help="measure the daemon's verdict latency instead")
    p.add_argument("--latency-mib", type=int, default=1024,
                   help="with --latency: size of the downloaded file (default: 1024)")
    p.add_argument("--rate", type=int, default=100_000_000,
                   help="with --latency: download rate in bytes/s (default: 100000000)")
    p.add_argument("--profile", metavar="PREFIX",
                   help="with --latency: sample the daemon with py-spy from the download's start to its verdict, "
                   "into PREFIX-N.txt (raw format: one stack per line, with its count)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.size_mib, args.files = 64, 4
    if args.files < 1 or args.size_mib < 1 or args.rounds < 1 or args.latency_mib < 1 or args.rate < 1 \
            or args.retry_noisy < 0 or args.wait_quiet < 0:
        raise SystemExit("bench: sizes, counts, rounds and rate must be positive")
    sys.path.insert(0, str(ROOT / "tests"))
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores (SHA instructions: {'yes' if info['sha_ni'] else 'no'}), "
          f"{info['memory_gib']} GiB RAM, Linux {info['kernel']}")
    print(f"python {info['python']}, huggingface_hub {info['huggingface_hub']}, hfwatchd {info['hfwatchd']} "
          f"(source {info['commit']})")
    doc = latency(args, info) if args.latency else bulk(args, info)
    if args.json is not None:
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        print(f"\nwritten to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
