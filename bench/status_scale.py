"""status at scale: how long `status --json`, `--files`, `--aria2` take from the store over N verified files.

Usage: .venv/bin/python bench/status_scale.py [--files 100000] [--missing 1000] [--rounds 3]
Generates N tiny files of a fake-Hub dataset, verifies N - missing of them once with `hfwatchd check`
(so `missing` entries are still to download), then times each status command as a whole process
(median of the rounds) and its peak RSS. No hashing happens in status: it reads the store and the
manifest cache only.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fakehub import FakeHub  # noqa: E402

HFWATCHD = [sys.executable, "-m", "hfwatchd"]


def timed(argv: list[str]) -> tuple[float, int, int]:
    """(seconds, exit code, output bytes) of one whole command."""
    t = time.monotonic()
    r = subprocess.run(argv, capture_output=True, check=False)
    return time.monotonic() - t, r.returncode, len(r.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--missing", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="hfwatchd-status-") as tmp, FakeHub() as hub:
        base = Path(tmp)
        files = {f"data/shard-{i // 1000:03d}/part-{i:06d}.json": b'{"i": %d}\n' % i for i in range(args.files)}
        hub.add_repo("o/big", files, repo_type="dataset")
        watched = base / "w"
        for i, (rel, data) in enumerate(files.items()):
            if i < args.missing:
                continue
            p = watched / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        cfg = base / "c.toml"
        cfg.write_text(f'state_dir = "{base / "state"}"\n[web]\nlisten = ""\n[hub]\nendpoint = "{hub.url}"\n'
                       f'[[watch]]\npath = "{watched}"\nrepos = ["datasets/o/big"]\n')
        t = time.monotonic()
        r = subprocess.run([*HFWATCHD, "check", "--config", str(cfg), "--no-progress"], capture_output=True,
                           text=True, check=False)
        print(f"setup: check of {args.files - args.missing} files in {time.monotonic() - t:.1f} s, "
              f"exit {r.returncode}")
        print(f"{'command':<34} {'median s':>9} {'min s':>7} {'exit':>5} {'stdout':>10}")
        for extra in (["--json"], ["--files"], ["--missing", "--aria2"], []):
            runs = [timed([*HFWATCHD, "status", "--config", str(cfg), *extra]) for _ in range(args.rounds)]
            secs = [s for s, _, _ in runs]
            print(f"{'status ' + ' '.join(extra):<34} {statistics.median(secs):>9.2f} {min(secs):>7.2f} "
                  f"{runs[0][1]:>5} {runs[0][2]:>10}")
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
        print(f"peak RSS of the largest child: {peak} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
