"""`status`: the coverage of every watch from the state store and the manifest cache, without hashing."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TextIO

from .config import Config, RepoConfig
from .coverage import WatchCoverage, cover
from .exits import UsageError
from .hub import Hub, HubError
from .manifest import Manifest
from .state import State


def _manifest_for(hub: Hub, rc: RepoConfig, commit: str | None) -> Manifest | None:
    if rc.manifest is not None:
        try:
            return hub.load(rc.ref, manifest_file=rc.manifest).manifest
        except HubError:
            return None
    m = hub.manifest_at(rc.ref, commit) if commit else None
    if m is None:
        # nothing judged yet (no check, no daemon run): every expected file is still to download,
        # so fetch the manifest (cache or Hub) rather than answer "nothing to do"
        try:
            m = hub.load(rc.ref).manifest
        except HubError:
            return None
    return m


def config_from_store(state_dir: Path) -> Config | None:
    """What a run without a config file (`watch`, `check REPO DIR`) watched, read back from its store."""
    from .config import HubConfig, RepoConfig, WatchConfig, default_endpoint
    from .manifest import RepoRef, SpecError

    if not (state_dir / "state.sqlite3").exists():
        return None
    state = State(state_dir, readonly=True)
    try:
        rows = state.repos()
    finally:
        state.close()
    watches: dict[str, list[RepoConfig]] = {}
    endpoint = None
    for r in rows:
        try:
            ref = RepoRef.parse(r.repo if r.revision == "main" else f"{r.repo}@{r.revision}")
        except SpecError:
            continue
        watches.setdefault(r.watch, []).append(RepoConfig(ref))
        endpoint = endpoint or r.endpoint
    if not watches:
        return None
    return Config(state_dir=state_dir, hub=HubConfig(endpoint=endpoint or default_endpoint()),
                  watches=tuple(WatchConfig(path=Path(w), repos=tuple(rcs)) for w, rcs in sorted(watches.items())))


def collect(config: Config, state: State | None, hub: Hub) -> list[WatchCoverage]:
    """Per watch: every expected entry with its local files, the unknown files, counts and bytes."""
    out: list[WatchCoverage] = []
    for w in config.watches:
        key = os.path.abspath(w.path)
        rows = state.files(key) if state is not None else []
        repo_rows = {r.repo: r for r in state.repos(key)} if state is not None else {}
        manifests = {}
        for rc in w.repos:
            rr = repo_rows.get(rc.ref.key)
            manifests[rc.ref.key] = _manifest_for(hub, rc, rr.commit if rr is not None else None)
        out.append(cover(w, manifests, rows, repo_rows=repo_rows, endpoint=config.hub.endpoint))
    return out


# --- rendering ---------------------------------------------------------------------------------


def dashboard(state_dir: Path) -> str | None:
    """The page's URL while a daemon serves it (None before the web module or without a daemon)."""
    try:
        from .web import read_dashboard
    except ImportError:  # pragma: no cover
        return None
    return read_dashboard(state_dir)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))} | {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}


def one_line(text: str) -> str:
    """A remote name on one line of a terminal: control characters (a newline, ESC) shown escaped.

    Bytes that are not UTF-8 stay as they are (stdout writes them back with surrogateescape, as ls does).
    """
    return text.translate(_ESCAPES)




def _bytes_of(done: int, total: int) -> str:
    """`1.2 GiB of 4.0 GiB`; exact bytes where rounding would show a part as the whole."""
    a, b = _size(done), _size(total)
    if a == b and done != total:
        return f"{done:,} of {total:,} bytes"
    return f"{a} of {b}"


def print_summary(watches: list[WatchCoverage], out: TextIO, *, missing: bool, dashboard: str | None) -> None:
    for w in watches:
        out.write(f"{one_line(w.path)}\n")
        for r in w.repos:
            c = r.counts
            commit = (r.commit or "?")[:12]
            out.write(
                f"  {r.repo} @ {commit}: {c['matched']}/{r.expected} matched "
                f"({_bytes_of(r.bytes_matched, r.bytes_expected)}), {c['mismatch']} mismatch, "
                f"{c['incomplete']} incomplete, {c['missing']} missing, {c['pending']} pending"
                + (f"  ({r.note})" if r.note else "") + "\n"
            )
            if missing:
                for t in r.todo():
                    out.write(f"    {t.status:<10} {one_line(t.rfilename or '')}\n")
        if w.unknown:
            out.write(f"  {len(w.unknown)} unknown file(s) match no watched repo\n")
    if dashboard:
        out.write(f"dashboard: {dashboard}\n")


def print_files(watches: list[WatchCoverage], out: TextIO) -> None:
    """Every file's record as a table: status, size, how it was recognised, when, and the name."""
    from .coverage import iso

    out.write(f"{'STATUS':<10} {'SIZE':>10} {'BY':<7} {'JUDGED':<20} FILE\n")
    for w in watches:
        out.write(f"# {one_line(w.path)}\n")
        for r in w.records():
            name = f"{r.repo}:{r.rfilename}" if r.rfilename else ""
            where = f"  {one_line(r.path)}" if r.path and not (r.rfilename and r.path.endswith("/" + r.rfilename)) \
                else ""
            size = r.size if r.size is not None else r.expected_size
            out.write(f"{r.status:<10} {_size(size):>10} {r.matched_by or '-':<7} {iso(r.judged_at) or '-':<20} "
                      f"{one_line(name or (r.path or ''))}{where if name else ''}\n")


def write_list(kind: str, watches: list[WatchCoverage], output: Path | None) -> int:
    """--urls, --aria2, --wget: the files still to download, to stdout or atomically to `output`."""
    from . import repair

    # a repo with no manifest cannot be listed: say so rather than hand out an empty list
    notes: list[str] = [f"# {r.repo}: nothing listed: {r.note}" for w in watches for r in w.repos if r.note]
    if kind == "aria2":
        text = repair.aria2_input(watches)
        notes.append("run: aria2c -i " + (str(output) if output else "FILE") + " -x 4 -s 4 -c")
    elif kind == "wget":
        text, commands = repair.wget_list(watches)
        if len(commands) > 1:
            raise UsageError("a wget list downloads into one folder at one URL depth, and these files need "
                             f"{len(commands)}: use --aria2 (each entry carries its folder), or one watch per list")
        notes.extend("run: " + c.replace("FILE", str(output) if output else "FILE") for c in commands)
        # wget -c keeps a full-size file as it is: a wrong one must go before the list can replace it
        notes.extend(f"remove first: {t.path}" for w in watches for r in w.repos for t in r.todo()
                     if t.status == "mismatch" and t.path is not None)
    else:
        lines: list[str] = []
        for w in watches:
            for r in w.repos:
                todo = r.todo()
                notes.append(f"# {r.repo} at {r.commit or '?'}: {len(todo)} to download into {w.path}")
                lines.extend(t.url for t in todo if t.url)
        text = "".join(u + "\n" for u in lines)
    count = sum(len([t for t in r.todo() if t.url]) for w in watches for r in w.repos)
    if output is None:
        sys.stdout.write(text)
    else:
        from .hub import atomic_write

        try:
            atomic_write(output.absolute(), text.encode("utf-8"), make_parents=False)
        except OSError as exc:
            raise UsageError(f"cannot write {output}: {exc.strerror}") from None
        notes.append(f"{count} file(s) to download, written to {output}")
    for n in notes:
        sys.stderr.write(n + "\n")
    return 0
