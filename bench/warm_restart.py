"""Warm restart: with N files already verified, how soon is the daemon ready, and how much memory does it use?

Usage: .venv/bin/python bench/warm_restart.py [--files 100000]
Generates N tiny files of a fake-Hub dataset, verifies them once with `hfwatchd check`, times a
second check, then starts the daemon on the same state and reports when `daemon.ready` and
`scan.finished` arrive, how many files it re-hashed, and its peak RSS (VmHWM).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fakehub import FakeHub  # noqa: E402

HFWATCHD = [sys.executable, "-m", "hfwatchd"]
# as installed by pip: from bytecode (an environment that forbids writing it would time compiling instead)
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def vm(pid: int, key: str) -> int:
    """A /proc/PID/status memory figure in MiB."""
    text = Path(f"/proc/{pid}/status").read_text()
    return int(text.split(f"{key}:")[1].split()[0]) // 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=100_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="hfwatchd-warm-") as tmp, FakeHub() as hub:
        base = Path(tmp)
        files = {f"data/shard-{i // 1000:03d}/part-{i:06d}.json": b'{"i": %d}\n' % i for i in range(args.files)}
        hub.add_repo("o/big", files, repo_type="dataset")
        watched = base / "w"
        for rel, data in files.items():
            p = watched / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        cfg = base / "c.toml"
        cfg.write_text(f'state_dir = "{base / "state"}"\nrescan_interval = "1h"\n[hub]\nendpoint = "{hub.url}"\n'
                       f'[[watch]]\npath = "{watched}"\nrepos = ["datasets/o/big"]\n')
        for label in ("first check", "second check"):
            t = time.monotonic()
            r = subprocess.run([*HFWATCHD, "check", "--config", str(cfg), "--no-progress"], capture_output=True,
                               text=True, check=False, env=ENV)
            print(f"{label}: {time.monotonic() - t:.1f} s, exit {r.returncode}: {r.stdout.splitlines()[-1]}")
        t = time.monotonic()
        proc = subprocess.Popen([*HFWATCHD, "--config", str(cfg)], stderr=subprocess.PIPE, text=True, env=ENV)
        assert proc.stderr is not None
        try:
            for line in proc.stderr:
                rec = json.loads(line)
                if rec["event"] in ("daemon.ready", "scan.finished"):
                    extra = {k: rec[k] for k in ("queued", "unchanged") if k in rec}
                    print(f"{rec['event']}: {time.monotonic() - t:.2f} s, peak RSS {vm(proc.pid, 'VmHWM')} MiB {extra}")
                if rec["event"] == "scan.finished":
                    break
            print(f"steady RSS {vm(proc.pid, 'VmRSS')} MiB, peak {vm(proc.pid, 'VmHWM')} MiB")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
