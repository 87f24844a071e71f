"""When a file in a download folder is finished: temp names, control files, browser placeholders.

See design.md section 2 for how each downloader looks on disk; these rules follow from it.
"""

from __future__ import annotations

import fnmatch
import os
import re

TEMP_SUFFIXES = (".crdownload", ".part", ".aria2", ".aria2__temp", ".incomplete", ".lock")
_TEMP_GLOBS = (".org.chromium.Chromium.*", ".syncthing.*.tmp", "~syncthing~*", ".tmp-hfwatchd-*")
_CACHE_DIR = ".cache/huggingface"
_FIREFOX_PART = re.compile(r"^(?P<stem>.+?)\.[A-Za-z0-9_-]{8}(?P<ext>\.[^.]+)?\.part$")


def is_temp_name(relpath: str) -> bool:
    """A path no verdict is ever given for: a downloader's temp or control file, or huggingface_hub's cache."""
    name = relpath.rsplit("/", 1)[-1]
    if name.endswith(TEMP_SUFFIXES):
        return True
    if any(fnmatch.fnmatchcase(name, g) for g in _TEMP_GLOBS):
        return True
    return relpath.startswith(_CACHE_DIR + "/") or f"/{_CACHE_DIR}/" in relpath


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


def placeholder_in_progress(path: str) -> bool:
    """A 0-byte file some browser is still downloading into a temp file beside it.

    Chromium creates X (0 bytes) and keeps data in X.crdownload or `Unconfirmed N.crdownload`;
    Firefox keeps data in X.<8 chars>.part or <stem>.<8 chars>.<ext>.part.
    """
    d, name = os.path.split(path)
    if os.path.lexists(path + ".crdownload") or os.path.lexists(path + ".part"):
        return True
    stem = name.rsplit(".", 1)[0] if "." in name else name
    try:
        with os.scandir(d or ".") as it:
            for entry in it:
                n = entry.name
                if n.startswith("Unconfirmed ") and n.endswith(".crdownload"):
                    return True
                if n.endswith(".part") and n.startswith(stem):
                    m = _FIREFOX_PART.match(n)
                    if m and m["stem"] + (m["ext"] or "") == name:
                        return True
    except OSError:
        return False
    return False
