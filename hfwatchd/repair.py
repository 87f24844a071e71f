"""Repair lists: what is still to download, as an aria2c input file or a wget URL list.

Pure renderers of the coverage model. Every entry lands where hfwatchd matches it by path (a
missing file at its repo path under the watched folder; a bad copy replaced or resumed where it
lies), and aria2c verifies LFS files itself. The Hub token is never written into a list.
"""

from __future__ import annotations

import os
import posixpath
import shlex
from collections.abc import Iterable
from urllib.parse import urlsplit

from .coverage import FileRecord, RepoCoverage, WatchCoverage
from .manifest import Status

_AUTH_HINT = ("# a gated or private repo needs your token, which is never written here: run"
               ' aria2c -i FILE --header="Authorization: Bearer $HF_TOKEN"')


def _clean(text: str) -> str:
    """One line, whatever a remote name holds: a newline in a name would start a new aria2c option."""
    return "".join(c if c.isprintable() else "?" for c in text)


def _target(watch: WatchCoverage, r: FileRecord) -> tuple[str, str] | None:
    """(dir, out) for an entry: where a bad copy lies, else its repo path under the watched folder."""
    if r.path is not None:
        return os.path.dirname(r.path), os.path.basename(r.path)
    if r.rfilename is None:
        return None
    d, name = posixpath.split(r.rfilename)
    return os.path.join(watch.path, *d.split("/")) if d else watch.path, name


def todo(watch: WatchCoverage) -> Iterable[tuple[RepoCoverage, FileRecord]]:
    for rc in watch.repos:
        for r in rc.todo():
            if r.url is not None:
                yield rc, r


def aria2_input(watches: Iterable[WatchCoverage]) -> str:
    """An aria2c input file (`aria2c -i F -x 4 -s 4 -c`) for every missing, mismatched or incomplete file."""
    lines = ["# hfwatchd repair list for aria2c: aria2c -i THIS_FILE -x 4 -s 4 -c", _AUTH_HINT]
    for w in watches:
        for rc, r in todo(w):
            where = _target(w, r)
            if where is None:
                continue
            d, out = where
            if any(not c.isprintable() for c in d + out + (r.url or "")):
                lines.append(f"# skipped {_clean(r.rfilename or '')!s}: its name cannot be written in an aria2c list")
                continue
            lines.append(f"# {r.status}: {rc.key}/{r.rfilename} ({r.expected_size} bytes)")
            lines.append(r.url or "")
            lines.append(f"  dir={d}")
            lines.append(f"  out={out}")
            if r.algorithm == "sha256" and r.expected:
                lines.append(f"  checksum=sha-256={r.expected}")
            if r.status == Status.MISMATCH:
                # the bytes there are wrong: start over on the same path rather than resume them
                lines.append("  allow-overwrite=true")
                lines.append("  continue=false")
            lines.append("  auto-file-renaming=false")
    return "\n".join(lines) + "\n"


def wget_list(watches: Iterable[WatchCoverage]) -> tuple[str, list[str]]:
    """URLs for `wget -x -nH --cut-dirs=N -c -P DIR -i F`, and the commands to run them (one per watch)."""
    urls: list[str] = []
    commands: list[str] = []
    for w in watches:
        depths = set()
        for _rc, r in todo(w):
            if r.url is None or r.rfilename is None:
                continue
            urls.append(r.url)
            # the URL path up to the commit: /[prefix/][datasets/]org/name/resolve/<commit>/<rfilename>
            segments = urlsplit(r.url).path.strip("/").split("/")
            depths.add(len(segments) - len(r.rfilename.split("/")))
        for n in sorted(depths):
            commands.append(f"wget -x -nH --cut-dirs={n} -c -P {shlex.quote(w.path)} -i FILE")
    return "".join(u + "\n" for u in urls), commands
