"""When a file in a download folder is finished: temp names, control files, browser placeholders.

See design.md section 2 for how each downloader looks on disk; these rules follow from it.
"""

from __future__ import annotations

import fnmatch
import os
import re
import time

TEMP_SUFFIXES = (".crdownload", ".part", ".aria2", ".aria2__temp", ".incomplete", ".lock")
_TEMP_GLOBS = (".org.chromium.Chromium.*", ".syncthing.*.tmp", "~syncthing~*", ".tmp-hfwatchd-*")
# folders whose files belong to a downloader, never to the user: huggingface_hub's `--local-dir`
# cache and hfd's state (`.hfd/aria2c_urls.txt`, `.hfd/repo_metadata.json`, ...)
METADATA_DIRS = (".cache/huggingface", ".hfd")
BROWSER_TEMP_SUFFIXES = (".part", ".crdownload")
# Firefox 153 renames its first temp file 10-250 ms (measured) after it creates the placeholder, so a few
# seconds of grace is plenty, and short enough that a stale temp file soon stops counting
BROWSER_TEMP_RECENT = 10.0
_FIREFOX_PART = re.compile(r"^(?P<stem>.+?)\.[A-Za-z0-9_-]{8}(?P<ext>\.[^.]+)?\.part$")


def is_temp_name(relpath: str) -> bool:
    """A path no verdict is ever given for: a downloader's temp or control file, or its metadata folder."""
    name = relpath.rsplit("/", 1)[-1]
    if name.endswith(TEMP_SUFFIXES):
        return True
    if any(fnmatch.fnmatchcase(name, g) for g in _TEMP_GLOBS):
        return True
    return any(relpath.startswith(d + "/") or f"/{d}/" in relpath for d in METADATA_DIRS)


def target_of_temp(path: str) -> str | None:
    """The final file a temp or control file stands for, when it can be told from the name (X.aria2 -> X)."""
    for suffix in (".aria2", ".crdownload"):
        if path.endswith(suffix):
            base = path[: -len(suffix)]
            return None if os.path.basename(base).startswith("Unconfirmed ") else base
    if path.endswith(".part"):
        d, name = os.path.split(path)
        m = _FIREFOX_PART.match(name)
        if m:
            return os.path.join(d, m["stem"] + (m["ext"] or ""))
        return path[: -len(".part")]
    return None


def control_file(path: str) -> str | None:
    """aria2c's control file beside `path`, if it exists: while it does, the download is not finished."""
    candidate = path + ".aria2"
    return candidate if os.path.lexists(candidate) else None


def _names_placeholder(temp: str, name: str) -> bool:
    """Whether the browser temp file called `temp` is, by its name alone, the download of `name`."""
    if temp in (name + ".crdownload", name + ".part"):
        return True
    if temp.startswith("Unconfirmed ") and temp.endswith(".crdownload"):
        return True  # Chromium before it knows the final name
    m = _FIREFOX_PART.match(temp)
    return m is not None and m["stem"] + (m["ext"] or "") == name


def placeholder_in_progress(path: str, *, recent: float = BROWSER_TEMP_RECENT, now: float | None = None) -> bool:
    """Whether the 0-byte file `path` may be a browser's placeholder whose download is still running.

    True when the same folder holds a browser temp file (`*.part`, `*.crdownload`) that either

    * is named after it: `X.crdownload`, `X.part`, `X.<8 chars>.part`, `<stem>.<8 chars>.<ext>.part`,
      or Chromium's `Unconfirmed N.crdownload`; or
    * whatever its name, changed (ctime: written, created or renamed) less than `recent` seconds
      before `now` (default: the clock). Firefox 153 writes into `<8 random chars>.<ext>.part`,
      creates the placeholder, and only 10-250 ms later renames the temp file to a name that shares
      X's stem; in that window nothing but timing ties the two. The extension is not compared:
      Firefox calls the temp file of `data.tar.gz` `<8 chars>.tar.part`.

    One `scandir` of the folder and a `stat` of its browser temp files only, so it stays cheap. A
    genuinely empty file with no browser download beside it (or only stale ones) is judged as usual.
    """
    d, name = os.path.split(path)
    if os.path.lexists(path + ".crdownload") or os.path.lexists(path + ".part"):
        return True
    cutoff_ns = int(((time.time() if now is None else now) - recent) * 1e9)
    try:
        with os.scandir(d or ".") as it:
            for entry in it:
                temp = entry.name
                if not temp.endswith(BROWSER_TEMP_SUFFIXES) or temp == name:
                    continue
                if _names_placeholder(temp, name):
                    return True
                try:
                    if entry.stat(follow_symlinks=False).st_ctime_ns > cutoff_ns:
                        return True
                except OSError:
                    continue  # renamed or deleted meanwhile: the next entry may still tell
    except OSError:
        return False
    return False
