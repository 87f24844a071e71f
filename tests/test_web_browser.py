"""The page in real headless Chromium (DevTools protocol over a pipe): rendering, live updates, escaping.

Every wait is a DOM condition checked inside the page on each mutation (tests/cdp.py), with a
timeout. `TestDaemonLoop` runs the real daemon with `[web] listen = "127.0.0.1:0"`: a wget download
and a click on a missing file's pinned link turn its row matched.

HFWATCHD_SCREENSHOT=docs/dashboard.png makes TestScreenshot write the README's picture there.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cdp import DevTools, Page, chromium_exe
from conftest import DaemonProc, run_cli, write_config
from fakehub import FakeHub

from hfwatchd.web import WebServer, read_dashboard

pytestmark = pytest.mark.e2e

HOSTILE = "<img src=x onerror=alert(1)>.bin"
C1 = "a3f1c9e0b7d24e8f9c1d2b3a4e5f60718293a4b5"
C2 = "0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e"
HOME = "/home/ada/Downloads"


def iso(seconds_ago: float) -> str:
    t = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=seconds_ago)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def entry(status: str, rfilename: str, expected_size: int, *, size: int | None = None, by: str | None = None,
          ago: float | None = None, repo: str = "google-bert/bert-base-uncased", commit: str = C1,
          local: str | None = None, algorithm: str = "sha256") -> dict[str, Any]:
    """One expected file's record, as `status --json` writes it."""
    rec: dict[str, Any] = {
        "status": status, "rfilename": rfilename, "size": size if size is not None else (
            None if status == "missing" else expected_size),
        "expected_size": expected_size, "algorithm": algorithm, "digest": None, "expected": "ab" * 32,
        "commit": commit, "judged_at": iso(ago) if ago is not None else None, "matched_by": by,
    }
    if status != "missing":
        rec["path"] = f"{HOME}/{local or rfilename}"
    if status != "matched":
        rec["url"] = f"http://127.0.0.1:9/{repo}/resolve/{commit}/{rfilename}"
    return rec


def repo(name: str, commit: str, source: str, files: list[dict[str, Any]]) -> dict[str, Any]:
    counts = dict.fromkeys(("pending", "matched", "mismatch", "incomplete", "missing", "unknown"), 0)
    for f in files:
        counts[f["status"]] += 1
    return {"repo": name, "commit": commit, "source": source, "endpoint": "http://127.0.0.1:9",
            "expected": len(files), "counts": counts, "note": None, "files": files,
            "bytes_expected": sum(f["expected_size"] for f in files),
            "bytes_matched": sum(f["expected_size"] for f in files if f["status"] == "matched")}


def dashboard_doc(*, hostile: bool = False, downloaded: int = 214_425_284) -> list[dict[str, Any]]:
    """A realistic status document: a model half downloaded, a dataset, an unknown file, a running download."""
    bert = [
        entry("matched", "config.json", 570, by="path", ago=3400, algorithm="git-sha1"),
        entry("matched", "tokenizer.json", 466_062, by="name", ago=3300, algorithm="git-sha1"),
        entry("matched", "vocab.txt", 231_508, by="path", ago=3200, algorithm="git-sha1"),
        entry("mismatch", "model.safetensors", 440_449_768, by="path", ago=20),
        entry("incomplete", "pytorch_model.bin", 440_473_133, size=120_000_000, by="path", ago=600),
        entry("missing", "tf_model.h5", 536_063_208),
        entry("missing", "coreml/fill-mask/float32_model.mlpackage/Data/com.apple.CoreML/weights/weight.bin",
              531_833_856),
        entry("pending", "onnx/model.onnx", 532_091_246),
    ]
    if hostile:
        bert.append(entry("missing", HOSTILE, 12))
    ds = "datasets/HuggingFaceFW/fineweb-edu-sample"
    data = [
        entry("matched", "data/train-00000-of-00002.parquet", 250_000_000, by="content", ago=90, repo=ds,
              commit=C2, local="train-00000-of-00002 (1).parquet"),
        entry("missing", "data/train-00001-of-00002.parquet", 249_800_000, repo=ds, commit=C2),
        entry("matched", "README.md", 4210, by="path", ago=100, repo=ds, commit=C2, algorithm="git-sha1"),
    ]
    return [{
        "path": HOME, "unknown": 1, "pending": 1,
        "repos": [repo("google-bert/bert-base-uncased", C1, "hub", bert), repo(ds, C2, "cache", data)],
        "files": [{"status": "unknown", "path": f"{HOME}/holiday-photos.zip", "size": 48_213_000, "digest": None,
                   "judged_at": iso(7200)}],
        "downloading": [{"path": f"{HOME}/tf_model.h5.crdownload", "size": downloaded, "bytes_hashed": downloaded,
                         "rfilename": "tf_model.h5", "repo": "google-bert/bert-base-uncased",
                         "expected_size": 536_063_208}],
    }]


class QuietLog:
    def info(self, event: str, **fields: Any) -> None:
        pass

    warning = error = info


class Dashboard:
    """A WebServer serving a document the test can change, and the page open in Chromium."""

    def __init__(self, tmp_path: Path, browser: DevTools, doc: list[dict[str, Any]], *, port: int = 0) -> None:
        self.doc = doc
        self.lock = threading.Lock()
        self.state_dir = tmp_path / "state"
        self.browser = browser
        self.server = self.serve(port)
        self.page: Page | None = None

    def serve(self, port: int) -> WebServer:
        def status() -> object:
            with self.lock:
                return self.doc

        server = WebServer(f"127.0.0.1:{port}", self.state_dir, status=status, metrics=str, log=QuietLog())
        server.start()
        return server

    def open(self) -> Page:
        url = read_dashboard(self.state_dir)
        assert url is not None and "?token=" in url
        self.page = self.browser.open_page(url)
        self.page.wait_for("document.querySelectorAll('#watches tbody tr').length > 0")
        return self.page

    def set(self, doc: list[dict[str, Any]]) -> None:
        with self.lock:
            self.doc = doc

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[DevTools]:
    b = DevTools(chromium_exe(), tmp_path / "chromium-profile", tmp_path / "chromium.log")
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def dash(tmp_path: Path, browser: DevTools) -> Iterator[Dashboard]:
    d = Dashboard(tmp_path, browser, dashboard_doc(hostile=True))
    try:
        yield d
    finally:
        d.close()


def row(rfilename: str) -> str:
    """JS: the table row of an expected file."""
    return ("[...document.querySelectorAll('tr[data-rfilename]')]"
            f".find(r => r.dataset.rfilename === {json.dumps(rfilename)})")


class TestRendering:
    def test_token_leaves_the_address_bar(self, dash: Dashboard) -> None:
        """Opened with ?token=, the page ends up at / with the token only in its HttpOnly cookie."""
        page = dash.open()
        assert page.evaluate("location.pathname + location.search") == "/"
        assert page.evaluate("document.cookie") == ""  # HttpOnly: not readable by the page's script

    def test_rows_and_counts(self, dash: Dashboard) -> None:
        """Each repo shows matched/expected files and bytes, and one row per expected file with its status."""
        page = dash.open()
        repos = page.evaluate("""[...document.querySelectorAll('article.repo')].map(a => ({
            repo: a.dataset.repo,
            files: a.querySelector('.meter-label b').textContent,
            rows: [...a.querySelectorAll('tbody tr')].map(r => [r.dataset.rfilename, r.dataset.status]),
        }))""")
        assert [r["repo"] for r in repos] == ["google-bert/bert-base-uncased",
                                              "datasets/HuggingFaceFW/fineweb-edu-sample"]
        assert repos[0]["files"] == "3 / 9 matched"
        assert repos[1]["files"] == "2 / 3 matched"
        bert = dict(repos[0]["rows"])
        assert len(repos[0]["rows"]) == 9
        assert bert["model.safetensors"] == "mismatch" and bert["pytorch_model.bin"] == "incomplete"
        assert bert[HOSTILE] == "missing" and bert["config.json"] == "matched"
        recognised = page.evaluate(f"{row('data/train-00000-of-00002.parquet')}.cells[3].textContent")
        assert recognised == "by content"
        local = page.evaluate(f"{row('data/train-00000-of-00002.parquet')}.querySelector('.local').textContent")
        assert local == "as train-00000-of-00002 (1).parquet"
        unknown = page.evaluate("[...document.querySelectorAll('section.unknown tbody tr')].map(r => r.textContent)")
        assert len(unknown) == 1 and "holiday-photos.zip" in unknown[0]

    def test_download_links_pinned(self, dash: Dashboard) -> None:
        """Missing, mismatched and incomplete rows link to their pinned URL; matched, pending and downloading don't."""
        page = dash.open()
        links = dict(page.evaluate("""[...document.querySelectorAll('article.repo tbody tr')].map(r => {
            const a = r.querySelector('a.dl-link'); return [r.dataset.rfilename, a ? a.href : null]; })"""))
        doc = dash.doc
        downloading = {d["rfilename"] for d in doc[0]["downloading"]}
        assert downloading == {"tf_model.h5"}
        for r in doc[0]["repos"]:
            for f in r["files"]:
                if f["status"] in ("missing", "mismatch", "incomplete") and f["rfilename"] not in downloading:
                    # exactly the document's pinned URL, as the browser writes it (new URL(...).href)
                    assert links[f["rfilename"]] == page.evaluate(f"new URL({json.dumps(f['url'])}).href")
                    assert f"/resolve/{r['commit']}/" in links[f["rfilename"]]
                else:
                    assert links[f["rfilename"]] is None, f["rfilename"]
        label = page.evaluate(f"{row('model.safetensors')}.querySelector('a').textContent")
        assert label == "download again"

    def test_download_in_progress(self, dash: Dashboard) -> None:
        """A running download shows "downloading 40%" (bytes so far / expected) on its row and in the list."""
        page = dash.open()
        assert page.evaluate(f"{row('tf_model.h5')}.querySelector('.badge').textContent") == "downloading 40%"
        assert page.evaluate(f"{row('tf_model.h5')}.querySelector('progress').value") == 214_425_284
        listed = page.evaluate("document.querySelector('.downloads li').textContent")
        assert "google-bert/bert-base-uncased: tf_model.h5" in listed and "downloading 40%" in listed

    def test_hostile_name_is_text(self, dash: Dashboard) -> None:
        """A file named like markup is shown as that text: no element is created from it."""
        page = dash.open()
        assert page.evaluate(f"{row(HOSTILE)}.querySelector('.rfilename').textContent") == HOSTILE
        assert page.evaluate("document.querySelectorAll('img').length") == 0
        assert page.evaluate("document.querySelectorAll('[onerror]').length") == 0
        assert page.evaluate(f"{row(HOSTILE)}.querySelector('a').getAttribute('download')") == HOSTILE

    def test_links_only_http(self, tmp_path: Path, browser: DevTools) -> None:
        """A url that is not http(s) (javascript:, data:) is never made into a link."""
        doc = dashboard_doc()
        files = doc[0]["repos"][0]["files"]
        files[5]["url"] = "javascript:alert(1)"
        files[6]["url"] = "data:text/html,<b>x</b>"
        d = Dashboard(tmp_path, browser, doc)
        try:
            page = d.open()
            assert page.evaluate(f"{row(files[5]['rfilename'])}.querySelector('a')") is None
            assert page.evaluate(f"{row(files[6]['rfilename'])}.querySelector('a')") is None
            assert page.evaluate(f"{row('model.safetensors')}.querySelector('a') !== null") is True
        finally:
            d.close()


    def test_repo_without_manifest(self, tmp_path: Path, browser: DevTools) -> None:
        """A repo whose manifest could not be loaded shows its note and no commit, and the page still renders."""
        doc = dashboard_doc()
        note = "no manifest: the Hub is unreachable and nothing is cached; run `hfwatchd check` once"
        doc[0]["repos"].append({"repo": "org/offline", "commit": None, "source": None, "endpoint": "http://x",
                                "expected": 0, "counts": {}, "bytes_expected": 0, "bytes_matched": 0, "note": note,
                                "files": []})
        d = Dashboard(tmp_path, browser, doc)
        try:
            page = d.open()
            got = page.evaluate("""(() => { const a = [...document.querySelectorAll('article.repo')]
                .find(x => x.dataset.repo === 'org/offline');
                return [a.querySelector('.note').textContent, a.querySelector('.meta').textContent,
                        a.querySelector('.meter-label b').textContent]; })()""")
            assert got == [note, "no commit yet", "0 / 0 matched"]
        finally:
            d.close()

    def test_accessible_structure(self, dash: Dashboard) -> None:
        """Tables have captions and column headers, progress bars and links have names, the search box a label."""
        page = dash.open()
        problems = page.evaluate("""(() => {
            const bad = [];
            for (const t of document.querySelectorAll('table')) {
                if (!t.caption || !t.caption.textContent) bad.push('table without caption');
                if (!t.querySelector('thead th[scope=col]')) bad.push('table without column headers');
            }
            for (const p of document.querySelectorAll('progress'))
                if (!p.getAttribute('aria-label')) bad.push('unnamed progress');
            for (const a of document.querySelectorAll('a.dl-link'))
                if (!(a.getAttribute('aria-label') || '').includes(a.closest('tr').dataset.rfilename)) bad.push('link');
            for (const b of document.querySelectorAll('button')) if (!b.textContent.trim()) bad.push('empty button');
            if (!document.getElementById('q').closest('label')) bad.push('search without label');
            if (document.documentElement.lang !== 'en') bad.push('no lang');
            return bad; })()""")
        assert problems == []
        assert page.evaluate("document.querySelectorAll('progress').length") >= 5
        assert page.evaluate("document.getElementById('announce').getAttribute('aria-live')") == "polite"


class TestLive:
    def test_verdict_shows_without_reload(self, dash: Dashboard) -> None:
        """A published verdict turns its row within a second, in the same document (no reload)."""
        page = dash.open()
        page.wait_for("document.getElementById('conn').textContent === 'live'")
        page.evaluate("window.__sameDocument = 42")
        doc = dashboard_doc(hostile=True)
        bert = doc[0]["repos"][0]
        bert["files"][3] = entry("matched", "model.safetensors", 440_449_768, by="path", ago=0)
        bert["counts"]["mismatch"], bert["counts"]["matched"] = 0, 4
        dash.set(doc)
        t0 = time.monotonic()
        dash.server.publish({"event": "file.matched", "path": f"{HOME}/model.safetensors",
                             "repo": "google-bert/bert-base-uncased", "rfilename": "model.safetensors"})
        # read in the same tick as the change: the page re-renders every 1.5 s while a download runs
        got = page.wait_for(f"{row('model.safetensors')}.dataset.status === 'matched' && "
                            f"{{cls: {row('model.safetensors')}.className, "
                            "files: document.querySelector('article.repo .meter-label b').textContent}", timeout=1.0)
        assert time.monotonic() - t0 < 1.5
        assert page.evaluate("window.__sameDocument") == 42
        assert got == {"cls": "changed", "files": "4 / 9 matched"}  # the changed row is highlighted
        assert page.evaluate("document.getElementById('last').textContent") == "matched: model.safetensors"

    def test_unchanged_status_keeps_the_dom(self, dash: Dashboard) -> None:
        """An event that changes nothing re-reads the status but leaves the DOM as it is (a selection survives)."""
        page = dash.open()
        page.wait_for("document.getElementById('conn').textContent === 'live'")
        n = int(page.evaluate("document.body.dataset.refreshes"))
        page.evaluate(f"window.__row = {row('config.json')}")
        dash.server.publish({"event": "file.matched", "rfilename": "config.json"})
        page.wait_for(f"Number(document.body.dataset.refreshes) > {n}", timeout=5)
        assert page.evaluate("window.__row.isConnected") is True

    def test_focus_survives_an_update(self, dash: Dashboard) -> None:
        """A focused download link keeps the keyboard focus when a verdict rebuilds the tables."""
        page = dash.open()
        page.wait_for("document.getElementById('conn').textContent === 'live'")
        page.evaluate(f"{row('tf_model.h5')} && {row('pytorch_model.bin')}.querySelector('a').focus()")
        page.evaluate(f"window.__row = {row('pytorch_model.bin')}")
        doc = dashboard_doc(hostile=True)
        doc[0]["repos"][0]["files"][0]["status"] = "mismatch"
        dash.set(doc)
        dash.server.publish({"event": "file.mismatch", "rfilename": "config.json"})
        page.wait_for(f"{row('config.json')}.dataset.status === 'mismatch'", timeout=5)
        assert page.evaluate("window.__row.isConnected") is False  # rebuilt, not patched
        assert page.evaluate("document.activeElement.closest('tr').dataset.rfilename") == "pytorch_model.bin"
        assert page.evaluate("document.activeElement.tagName") == "A"

    def test_download_progress_polls(self, tmp_path: Path, browser: DevTools) -> None:
        """While a download runs the page re-reads the status by itself: 40% becomes 80% without any event."""
        d = Dashboard(tmp_path, browser, dashboard_doc())
        try:
            page = d.open()
            assert page.evaluate(f"{row('tf_model.h5')}.querySelector('.badge').textContent") == "downloading 40%"
            d.set(dashboard_doc(downloaded=428_850_567))
            page.wait_for(f"{row('tf_model.h5')}.querySelector('.badge').textContent === 'downloading 80%'",
                          timeout=4)
        finally:
            d.close()

    def test_filter_by_status_and_name(self, dash: Dashboard) -> None:
        """The status buttons and the name box narrow every table to the matching rows."""
        page = dash.open()
        page.click("button[data-filter='mismatch']")
        page.wait_for("document.querySelector(\"button[data-filter='mismatch']\").getAttribute('aria-pressed')"
                      " === 'true'")
        shown = page.evaluate("[...document.querySelectorAll('#watches tbody tr')].map(r => r.dataset.status)")
        assert shown == ["mismatch"]
        page.click("button[data-filter='todo']")
        page.wait_for("document.querySelectorAll('#watches tbody tr').length === 6")
        statuses = set(page.evaluate("[...document.querySelectorAll('#watches tbody tr')].map(r => r.dataset.status)"))
        assert statuses == {"mismatch", "incomplete", "missing"}
        page.click("button[data-filter='all']")
        page.click("#q")
        page.call("Input.insertText", text="parquet")
        page.wait_for("document.querySelectorAll('#watches tbody tr').length === 2")
        names = page.evaluate("[...document.querySelectorAll('#watches tbody tr')].map(r => r.dataset.rfilename)")
        assert sorted(names) == ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]

    def test_restarted_daemon_asks_for_new_link(self, tmp_path: Path, browser: DevTools) -> None:
        """When the daemon restarts (a new token), the open page says to run `hfwatchd open` again."""
        d = Dashboard(tmp_path, browser, dashboard_doc())
        try:
            page = d.open()
            page.wait_for("document.getElementById('conn').textContent === 'live'")
            port = int(d.server.url.rsplit(":", 1)[1].rstrip("/"))
            d.server.close()
            d.server = d.serve(port)  # same port, new token: the page's cookie is now wrong
            # (a fetch between the two servers may first show "does not answer; retrying")
            text = page.wait_for("!document.getElementById('notice').hidden && "
                                 "document.getElementById('notice').textContent.includes('hfwatchd open') && "
                                 "document.getElementById('notice').textContent", timeout=10)
            assert text == "This page's token is no longer valid: the daemon restarted. Run `hfwatchd open` again."
            assert page.evaluate("document.getElementById('conn').textContent") == "disconnected"
        finally:
            d.close()


class TestScreenshot:
    def test_screenshot(self, tmp_path: Path, browser: DevTools) -> None:
        """The page renders to a full-page PNG (the README's picture when HFWATCHD_SCREENSHOT names a file)."""
        d = Dashboard(tmp_path, browser, dashboard_doc())
        try:
            page = d.open()
            page.wait_for("document.getElementById('conn').textContent === 'live'")
            target = Path(os.environ.get("HFWATCHD_SCREENSHOT") or tmp_path / "dashboard.png")
            data = page.screenshot(target)
            assert data[:8] == b"\x89PNG\r\n\x1a\n"
            width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
            assert width == 1280 and height > 600
        finally:
            d.close()


# --------------------------------------------------------------------------------------------- the real daemon

REPO = "org/web-model"
FILES = {
    "config.json": b'{"architectures": ["WebModel"]}\n',
    "model.safetensors": bytes(range(256)) * 8192,  # 2 MiB, LFS
    "tokenizer.json": b'{"vocab": {"a": 0}}\n',
}
HUB_TOKEN = "hf_DaemonLoopTokenNeverOnThePage0123456789"

Start = Callable[..., DaemonProc]


class Loop:
    def __init__(self, hub: FakeHub, folder: Path, daemon: DaemonProc, url: str, config: Path) -> None:
        self.hub, self.folder, self.daemon, self.url, self.config = hub, folder, daemon, url, config


@pytest.fixture
def loop(tmp_path: Path, fake_hub: FakeHub, daemon_factory: Start) -> Loop:
    fake_hub.add_repo(REPO, FILES)
    folder = tmp_path / "downloads"
    folder.mkdir()
    token_file = tmp_path / "hub-token"
    token_file.write_text(HUB_TOKEN)
    cfg = write_config(tmp_path / "hfwatchd.toml", hub=fake_hub, watches=[{"path": folder, "repos": [REPO]}],
                       state_dir=tmp_path / "state", rescan_interval="1h", workers=2,
                       hub_table={"token_file": token_file})
    cfg.write_text(cfg.read_text() + '[web]\nlisten = "127.0.0.1:0"\n')
    d = daemon_factory(cfg)
    started = d.wait_for("web.started")
    assert HUB_TOKEN not in json.dumps(started)
    r = run_cli("open", "--config", str(cfg), "--print")
    assert r.returncode == 0, r.stderr
    url = r.stdout.strip()
    assert url.startswith(started["url"] + "?token=")
    return Loop(fake_hub, folder, d, url, cfg)


class TestDaemonLoop:
    def test_wget_turns_row_matched(self, loop: Loop, browser: DevTools) -> None:
        """wget into the watched folder: the open page turns the file's row from missing to matched."""
        wget = shutil.which("wget")
        assert wget, "wget is not installed (tests/run.sh installs it)"
        page = browser.open_page(loop.url)
        page.wait_for(f"{row('config.json')} && {row('config.json')}.dataset.status === 'missing'", timeout=15)
        subprocess.run([wget, "-q", "-O", str(loop.folder / "config.json"), loop.hub.resolve_url(REPO, "config.json")],
                       check=True, timeout=60)
        page.wait_for(f"{row('config.json')}.dataset.status === 'matched'", timeout=15)
        assert page.evaluate(f"{row('config.json')}.querySelector('a')") is None

    def test_click_missing_link_downloads_and_matches(self, loop: Loop, browser: DevTools) -> None:
        """Clicking a missing file's pinned link downloads it into the watched folder; its row turns matched."""
        browser.call("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(loop.folder),
                     eventsEnabled=True)
        page = browser.open_page(loop.url)
        page.wait_for(f"{row('model.safetensors')} && {row('model.safetensors')}.querySelector('a.dl-link')",
                      timeout=15)
        href = page.evaluate(f"{row('model.safetensors')}.querySelector('a.dl-link').href")
        commit = loop.daemon.wait_for("manifest.loaded", repo=REPO)["commit"]
        assert f"/resolve/{commit}/model.safetensors" in href
        page.click("tr[data-rfilename='model.safetensors'] a.dl-link")
        begin = browser.event("Browser.downloadWillBegin")
        done = browser.event("Browser.downloadProgress",
                             lambda p: p["guid"] == begin["guid"] and p["state"] in ("completed", "canceled"))
        assert done["state"] == "completed", done
        page.wait_for(f"{row('model.safetensors')}.dataset.status === 'matched'", timeout=20)
        assert (loop.folder / "model.safetensors").read_bytes() == FILES["model.safetensors"]

    def test_daemon_endpoints_never_show_hub_token(self, loop: Loop, browser: DevTools) -> None:
        """The daemon's page, status, metrics and event stream never contain the Hub token."""
        page = browser.open_page(loop.url)
        page.wait_for(f"{row('tokenizer.json')} !== undefined", timeout=15)
        (loop.folder / "tokenizer.json").write_bytes(FILES["tokenizer.json"])
        page.wait_for(f"{row('tokenizer.json')}.dataset.status === 'matched'", timeout=15)
        bodies = page.evaluate("""Promise.all(['/', '/api/status', '/metrics', '/healthz'].map(
            p => fetch(p).then(r => r.text())))""")
        assert "hfwatchd_verdicts_total" in bodies[2]
        for body in bodies:
            assert HUB_TOKEN not in body
        assert HUB_TOKEN not in page.evaluate("document.documentElement.outerHTML")

    def test_status_api_is_status_json(self, loop: Loop, browser: DevTools) -> None:
        """/api/status serves the same document `hfwatchd status --json` prints."""
        (loop.folder / "config.json").write_bytes(FILES["config.json"])
        loop.daemon.wait_for("file.matched", rfilename="config.json")
        page = browser.open_page(loop.url)
        api = page.evaluate("fetch('/api/status').then(r => r.json())")
        cli = run_cli("status", "--config", str(loop.config), "--json")
        assert cli.returncode == 0, cli.stderr
        expected = json.loads(cli.stdout)
        for watch in (*api, *expected):
            watch.pop("downloading", None)  # a live view of the daemon's progress: `status` reads the store only
        assert api == expected, json.dumps([api, expected], indent=1)
