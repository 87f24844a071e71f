"""End to end: real headless Firefox ESR downloads from the fake Hub into a folder the daemon watches.

Firefox 153 writes into `<8 random chars>.<ext>.part`, creates the 0-byte placeholder X, and only
10-250 ms later renames the temp file to `<stem>.<8 chars>.<ext>.part` (or, for a small file, straight
over X). A kernel inotify queue, read after the fact (no thread), records that sequence for every
download, so each test proves the race really happened on disk, not just that the verdict came.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import DaemonProc, watch_empty_folder
from fakehub import FakeHub, git_blob_sha1
from test_e2e_downloaders import E2E, SENTINELS, Inotify, sha256

pytestmark = pytest.mark.e2e

REPO = "org/firefox-model"
FILES: dict[str, bytes] = {
    "model.safetensors": random.Random(153).randbytes(6 * 1024 * 1024),  # renamed twice: tied .part name
    "model.gguf": random.Random(154).randbytes(2 * 1024 * 1024),
    "config.json": b'{"architectures": ["FirefoxModel"], "hidden_size": 8}\n',  # renamed once, over X
    "tokenizer.json": b'{"version": "1.0", "vocab": {"a": 0, "b": 1, "c": 2}}\n',
    "data.tar.gz": random.Random(155).randbytes(40_000),  # Firefox's temp name: <8 chars>.tar.part
    **{name: b'{"sentinel": %d}\n' % i for i, name in enumerate(SENTINELS)},
}
# user.js of a fresh profile: save every download into the watched folder without asking, and stay
# quiet and offline (no updates, telemetry, safe-browsing lookups, first-run pages)
PREFS: dict[str, Any] = {
    "browser.download.folderList": 2,
    "browser.download.useDownloadDir": True,
    "browser.download.always_ask_before_handling_new_types": False,
    "browser.download.start_downloads_in_tmp_dir": False,
    "browser.download.alwaysOpenPanel": False,
    "browser.download.manager.showWhenStarting": False,
    "browser.download.open_pdf_attachments_inline": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.downloads.remote.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.startup.page": 0,
    "browser.aboutwelcome.enabled": False,
    "browser.newtabpage.enabled": False,
    "browser.sessionstore.resume_from_crash": False,
    "browser.tabs.warnOnClose": False,
    "app.update.auto": False,
    "app.update.enabled": False,
    "app.normandy.enabled": False,
    "extensions.update.enabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.unified": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "network.dns.disablePrefetch": True,
    "network.prefetch-next": False,
}


_NAMED_PART = re.compile(r"^(?P<stem>.+?)\.[A-Za-z0-9_-]{8}(?P<ext>\.[^.]+)?\.part$")


def tied(part: str, name: str) -> bool:
    """Whether a `.part` name tells by itself that it is the download of `name` (all the old rule looked at)."""
    m = _NAMED_PART.match(part)
    return part == f"{name}.part" or (m is not None and m["stem"] + (m["ext"] or "") == name)


@dataclass
class FirefoxTrace:
    """The on-disk sequence of one download, from the inotify record."""

    name: str
    placeholder_created: bool = False
    parts_at_placeholder: list[str] = field(default_factory=list)  # the .part files when X appeared
    renamed_over: str | None = None  # the .part finally renamed to X
    part_names: list[str] = field(default_factory=list)  # every .part name seen, in order

    @property
    def untied_window(self) -> bool:
        """X existed while no .part beside it was named after it: the window the old rule judged early."""
        return self.placeholder_created and not any(tied(p, self.name) for p in self.parts_at_placeholder)


def trace_of(events: list[tuple[str, str]], name: str) -> FirefoxTrace:
    t = FirefoxTrace(name)
    parts: list[str] = []
    last_from: str | None = None
    for kind, n in events:
        if n.endswith(".part") and n not in t.part_names:
            t.part_names.append(n)
        if kind == "create" and n == name and t.renamed_over is None:
            t.placeholder_created = True
            t.parts_at_placeholder = list(parts)
        elif kind in ("create", "moved_to") and n.endswith(".part"):
            parts.append(n)
        elif kind in ("delete", "moved_from") and n in parts:
            parts.remove(n)
        if kind == "moved_from":
            last_from = n
        elif kind == "moved_to" and n == name and last_from is not None and last_from.endswith(".part"):
            t.renamed_over = last_from
    return t


# --------------------------------------------------------------------------------------------- Firefox


class Firefox:
    """Headless Firefox ESR in its own process group, with a fresh profile that saves into one folder."""

    def __init__(self, exe: str, home: Path, download_dir: Path) -> None:
        self.exe = exe
        self.home = home
        self.download_dir = download_dir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.runs = 0

    def download(self, url: str) -> subprocess.Popen[bytes]:
        """Start a new Firefox, on a fresh profile, at `url` (served as an attachment: a download)."""
        self.runs += 1
        profile = self.home / f"profile-{self.runs}"
        profile.mkdir(parents=True)
        prefs = {**PREFS, "browser.download.dir": str(self.download_dir)}
        (profile / "user.js").write_text(
            "".join(f"user_pref({_js(k)}, {_js(v)});\n" for k, v in prefs.items()), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MOZ_", "DISPLAY", "WAYLAND"))}
        # headless needs no display; a HOME of its own keeps ~/.mozilla untouched (and works as root)
        env.update(HOME=str(self.home), MOZ_HEADLESS="1", MOZ_CRASHREPORTER_DISABLE="1",
                   XDG_CACHE_HOME=str(self.home / "cache"), XDG_CONFIG_HOME=str(self.home / "config"))
        log = open(self.home / f"firefox-{self.runs}.log", "wb")  # noqa: SIM115 - closed with the process
        with log:
            proc = subprocess.Popen([self.exe, "--headless", "--no-remote", "--profile", str(profile), url],
                                    env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs.append(proc)
        return proc

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.home / f"firefox-{self.runs}.log").read_text(errors="replace")[-3000:]
        return ""

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """Kill Firefox's whole process group (content processes too): the profile is thrown away anyway."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def close(self) -> None:
        for proc in self.procs:
            self.stop(proc)


def _js(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.fixture
def firefox(tmp_path: Path) -> Iterator[Firefox]:
    exe = shutil.which("firefox-esr") or shutil.which("firefox")
    if exe is None:
        pytest.skip("firefox-esr is not installed (Debian: apt-get install firefox-esr; tests/run.sh installs it)")
    browser = Firefox(exe, tmp_path / "firefox-home", tmp_path / "dl")
    try:
        yield browser
    finally:
        browser.close()


@dataclass
class Session:
    """A daemon watching `env.dir` for REPO, an inotify record of that folder, and Firefox to download."""

    env: E2E
    inotify: Inotify
    firefox: Firefox

    def download(self, rel: str, until: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], FirefoxTrace]:
        """Download `rel` with a fresh Firefox, wait for the verdict `until` returns, then quit Firefox."""
        proc = self.firefox.download(self.env.hub.resolve_url(REPO, rel))
        try:
            rec = until()
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nFirefox log:\n{self.firefox.log_tail()}\n"
                                 f"on disk: {self.inotify.read()}") from None
        finally:
            self.firefox.stop(proc)
        return rec, trace_of(self.inotify.read(), rel)


@pytest.fixture
def session(tmp_path: Path, fake_hub: FakeHub, daemon_factory: Callable[..., DaemonProc],
            firefox: Firefox) -> Iterator[Session]:
    """The fake Hub serving REPO, a daemon watching an empty folder (first scan done), and Firefox."""
    commit = fake_hub.add_repo(REPO, FILES)
    watched, d = watch_empty_folder(tmp_path, fake_hub, daemon_factory, REPO, commit)
    ino = Inotify(watched)
    try:
        yield Session(E2E(fake_hub, watched, tmp_path, d, commit), ino, firefox)
    finally:
        ino.close()


def check_sequence(trace: FirefoxTrace, rel: str) -> None:
    """The download went the Firefox way: 0-byte X created first, then a .part renamed over it."""
    assert trace.placeholder_created, trace
    assert trace.renamed_over is not None and trace.renamed_over.endswith(".part"), trace
    first = trace.part_names[0]
    assert not tied(first, rel), f"Firefox's first temp name {first!r} is named after {rel!r}: {trace}"


# --------------------------------------------------------------------------------------------- tests


class TestFirefoxDownload:
    @pytest.mark.parametrize("rel", ["model.safetensors", "config.json", "model.gguf", "tokenizer.json",
                                     "data.tar.gz"])
    def test_matched_once_without_early_verdict(self, session: Session, rel: str,
                                                record_property: Callable[[str, object], None]) -> None:
        """A real Firefox download is one file.matched, and its 0-byte placeholder never gets a verdict."""
        session.env.hub.rate = 12_000_000 if len(FILES[rel]) > 1 << 20 else None  # big ones: several writes
        rec, trace = session.download(rel, lambda: session.env.daemon.wait_for("file.matched", 30, rfilename=rel))
        record_property("untied_window", trace.untied_window)  # --junitxml: how often the race was on
        check_sequence(trace, rel)
        assert (rec["path"], rec["size"]) == (str(session.env.dir / rel), len(FILES[rel]))
        data = FILES[rel]
        assert rec["digest"] == (sha256(data) if rec["algorithm"] == "sha256" else git_blob_sha1(data))
        session.env.assert_only({rel: ["file.matched"]})
        assert sorted(os.listdir(session.env.dir)) == sorted([rel, SENTINELS[0]])  # no .part left behind

    def test_corrupted_download_is_mismatch(self, session: Session,
                                            record_property: Callable[[str, object], None]) -> None:
        """Wrong bytes of the right size downloaded by Firefox are one file.mismatch, never file.incomplete."""
        rel = "model.safetensors"
        bad = bytearray(FILES[rel])
        bad[len(bad) // 3] ^= 0xFF
        session.env.hub.corrupt(REPO, rel, bytes(bad))
        session.env.hub.rate = 12_000_000
        rec, trace = session.download(rel, lambda: session.env.daemon.wait_for("file.mismatch", 30, rfilename=rel))
        record_property("untied_window", trace.untied_window)
        check_sequence(trace, rel)
        assert (rec["expected"], rec["actual"]) == (sha256(FILES[rel]), sha256(bytes(bad)))
        assert rec["size"] == rec["expected_size"] == len(bad)
        session.env.assert_only({rel: ["file.mismatch"]})
