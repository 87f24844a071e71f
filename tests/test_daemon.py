"""The daemon as systemd runs it: real inotify on real folders, the fake Hub, signals, sd_notify."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import DaemonProc, write_config
from fakehub import FakeHub

REPO = "org/model"
FILES = {
    "config.json": b'{"architectures": ["Bert"]}\n',
    "model.safetensors": b"\x01" * 1_500_000,
    "sub/tokenizer.json": b'{"vocab": {}}\n',
    "sentinel.json": b'{"sentinel": true}\n',
}

Start = Callable[..., DaemonProc]


def write(path: Path, data: bytes) -> None:
    """Write like wget or curl: data straight into the final name, then close."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


@pytest.fixture
def setup(tmp_path: Path, fake_hub: FakeHub) -> dict[str, Any]:
    fake_hub.add_repo(REPO, FILES)
    watched = tmp_path / "dl"
    watched.mkdir()
    state = tmp_path / "state"
    cfg = write_config(tmp_path / "hfwatchd.toml", hub=fake_hub, watches=[{"path": watched, "repos": [REPO]}],
                       state_dir=state, log_file=state / "events.jsonl", rescan_interval="1h", workers=2)
    return {"dir": watched, "state": state, "config": cfg, "hub": fake_hub, "tmp": tmp_path}


def sentinel(d: DaemonProc, folder: Path) -> list[dict[str, Any]]:
    """Drop a known file, wait for its verdict, and return every line logged before it."""
    write(folder / "sentinel.json", FILES["sentinel.json"])
    d.wait_for("file.matched", rfilename="sentinel.json")
    return d.seen


def verdicts(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [x for x in lines if str(x.get("event", "")).startswith("file.")]


class TestLifecycle:
    def test_ready_then_clean_stop(self, setup: dict[str, Any], daemon_factory: Start) -> None:
        """The daemon logs daemon.ready, finishes its first scan, and stops on SIGTERM with exit 0."""
        d = daemon_factory(setup["config"])
        d.wait_for("manifest.loaded", repo=REPO, source="hub", files=len(FILES))
        d.wait_for("scan.finished")
        assert d.stop() == 0
        d.wait_for("daemon.stopped")

    def test_sigint_stops_too(self, setup: dict[str, Any], daemon_factory: Start) -> None:
        """SIGINT (Ctrl-C in a terminal) stops as cleanly as SIGTERM."""
        d = daemon_factory(setup["config"])
        d.signal(signal.SIGINT)
        d.wait_for("daemon.stopped")
        assert d.proc.wait(10) == 0

    def test_log_file_gets_the_same_json_lines(self, setup: dict[str, Any], daemon_factory: Start) -> None:
        """log_file receives one JSON object per line with timestamp, level and event."""
        import json

        d = daemon_factory(setup["config"])
        write(setup["dir"] / "config.json", FILES["config.json"])
        d.wait_for("file.matched", rfilename="config.json")
        d.stop()
        lines = [json.loads(x) for x in (setup["state"] / "events.jsonl").read_text().splitlines()]
        assert {"daemon.ready", "file.matched", "daemon.stopped"} <= {x["event"] for x in lines}
        assert all({"timestamp", "level", "event"} <= x.keys() for x in lines)
        assert all(x["timestamp"].endswith("Z") for x in lines)

    def test_sd_notify(self, setup: dict[str, Any], daemon_factory: Start, tmp_path: Path) -> None:
        """READY=1 is sent over $NOTIFY_SOCKET once watching, STOPPING=1 on SIGTERM."""
        addr = str(tmp_path / "notify.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(addr)
            sock.settimeout(20)
            env = dict(os.environ, NOTIFY_SOCKET=addr)
            d = daemon_factory(setup["config"], env=env)
            first = sock.recv(4096).decode()
            assert "READY=1" in first and "STATUS=watching" in first
            d.signal(signal.SIGTERM)
            while "STOPPING=1" not in (msg := sock.recv(4096).decode()):
                assert "READY=1" not in msg
            assert d.proc.wait(10) == 0


class TestVerdicts:
    @pytest.mark.pyversions
    def test_close_write_gives_one_verdict(self, setup: dict[str, Any], daemon_factory: Start) -> None:
        """A file written and closed in place (wget, curl) gets exactly one file.matched with every field."""
        d = daemon_factory(setup["config"])
        d.wait_for("scan.finished")
        write(setup["dir"] / "model.safetensors", FILES["model.safetensors"])
        rec = d.wait_for("file.matched", rfilename="model.safetensors")
        assert rec["repo"] == REPO and rec["size"] == len(FILES["model.safetensors"])
        assert rec["algorithm"] == "sha256" and len(rec["digest"]) == 64 and len(rec["commit"]) == 40
        assert isinstance(rec["seconds"], float)
        lines = sentinel(d, setup["dir"])
        assert [x["event"] for x in verdicts(lines) if x.get("rfilename") == "model.safetensors"] == ["file.matched"]

    def test_mismatch_line(self, setup: dict[str, Any], daemon_factory: Start) -> None:
        """Same size, wrong bytes: one file.mismatch with expected, actual and expected_size."""
        d = daemon_factory(setup["config"])
        d.wait_for("scan.finished")
        write(setup["dir"] / "model.safetensors", b"\x02" * len(FILES["model.safetensors"]))
        rec = d.wait_for("file.mismatch", rfilename="model.safetensors")
        assert rec["expected"] != rec["actual"] and rec["expected_size"] == rec["size"]
        assert rec["digest"] == rec["actual"] and rec["algorithm"] == "sha256" and len(rec["commit"]) == 40

    def test_browser_link_name_from_wget(self, setup: dict[str, Any], daemon_factory: Start) -> None:
        """wget of a Hub browser link saves `X?download=true`; a corrupt one is still a mismatch of X, not unknown."""
        import shutil
        import subprocess

        wget = shutil.which("wget")
        if wget is None:
            pytest.fail("wget is missing: apt-get install wget")
        hub: FakeHub = setup["hub"]
        size = len(FILES["model.safetensors"])
        hub.corrupt(REPO, "model.safetensors", b"\x03" * size)
        d = daemon_factory(setup["config"])
        d.wait_for("scan.finished")
        url = hub.resolve_url(REPO, "model.safetensors") + "?download=true"
        subprocess.run([wget, "-q", url], cwd=setup["dir"], check=True, timeout=60)
        assert (setup["dir"] / "model.safetensors?download=true").exists()
        rec = d.wait_for("file.mismatch", rfilename="model.safetensors")
        assert rec["matched_by"] == "name" and rec["path"].endswith("?download=true")

    def test_file_moved_in_from_elsewhere(self, setup: dict[str, Any], daemon_factory: Start) -> None:
        """A finished file moved or hard-linked in (no close event in the folder) is judged at once."""
        d = daemon_factory(setup["config"])
        d.wait_for("scan.finished")
        outside = setup["tmp"] / "elsewhere"
        outside.mkdir()
        for name in ("config.json", "model.safetensors"):
            write(outside / name, FILES[name])
            old = os.stat(outside / name).st_mtime - 60
            os.utime(outside / name, (old, old))  # downloaded a minute ago
        os.rename(outside / "config.json", setup["dir"] / "config.json")
        os.link(outside / "model.safetensors", setup["dir"] / "model.safetensors")
        judged = {d.wait_for("file.matched")["rfilename"] for _ in range(2)}
        assert judged == {"config.json", "model.safetensors"}

    def test_file_replaced_after_verdict_is_judged_again(self, setup: dict[str, Any], daemon_factory: Start) -> None:
        """A matched file overwritten with other bytes gets a new verdict."""
        d = daemon_factory(setup["config"])
        d.wait_for("scan.finished")
        write(setup["dir"] / "config.json", FILES["config.json"])
        d.wait_for("file.matched", rfilename="config.json")
        write(setup["dir"] / "config.json", FILES["config.json"].upper())
        d.wait_for("file.mismatch", rfilename="config.json")

    def test_temp_names_are_silent(self, setup: dict[str, Any], daemon_factory: Start) -> None:
        """Downloader temp and control files never produce a line."""
        d = daemon_factory(setup["config"])
        d.wait_for("scan.finished")
        temps = ["a.part", "b.crdownload", "c.aria2", "d.incomplete", "e.lock", ".org.chromium.Chromium.x1",
                 ".cache/huggingface/download/f.incomplete"]
        for name in temps:
            write(setup["dir"] / name, b"junk")
        lines = sentinel(d, setup["dir"])
        mentioned = [x for x in verdicts(lines) if any(t.split("/")[-1] in str(x.get("path")) for t in temps)]
        assert mentioned == []

    def test_new_subdirectory_is_scanned(self, setup: dict[str, Any], daemon_factory: Start) -> None:
        """Files written into a freshly created subdirectory are judged (hf download --local-dir layout)."""
        d = daemon_factory(setup["config"])
        d.wait_for("scan.finished")
        write(setup["dir"] / "sub" / "tokenizer.json", FILES["sub/tokenizer.json"])
        rec = d.wait_for("file.matched", rfilename="sub/tokenizer.json")
        assert rec["matched_by"] == "path"

    def test_files_present_at_start_are_judged(self, setup: dict[str, Any], daemon_factory: Start) -> None:
        """Whatever landed while the daemon was down is judged by the start-up scan, and only once."""
        write(setup["dir"] / "config.json", FILES["config.json"])
        d = daemon_factory(setup["config"])
        d.wait_for("file.matched", rfilename="config.json")
        d.stop()
        d2 = daemon_factory(setup["config"])
        rec = d2.wait_for("scan.finished")
        assert rec["unchanged"] == 1
        lines = sentinel(d2, setup["dir"])
        assert not [x for x in verdicts(lines) if x.get("rfilename") == "config.json"]


    def test_verdict_committed_but_not_logged_is_replayed(self, setup: dict[str, Any],
                                                          daemon_factory: Start) -> None:
        """A verdict stored by a run killed before its log line is logged at the next start, marked replayed."""
        import sqlite3

        d = daemon_factory(setup["config"])
        d.wait_for("scan.finished")
        write(setup["dir"] / "model.safetensors", b"\x02" * len(FILES["model.safetensors"]))
        d.wait_for("file.mismatch", rfilename="model.safetensors")
        d.kill()
        # the state a kill -9 between the commit and the log line leaves behind
        db = sqlite3.connect(setup["state"] / "state.sqlite3")
        with db:
            db.execute("UPDATE files SET logged = 0")
        db.close()
        d2 = daemon_factory(setup["config"], ready=False)
        rec = d2.wait_for("file.mismatch", rfilename="model.safetensors")
        assert rec["replayed"] is True and rec["expected"] != rec["actual"]
        d2.wait_for("daemon.ready")
        d2.stop()
        d3 = daemon_factory(setup["config"])
        d3.wait_for("scan.finished")
        assert not [x for x in d3.seen if x.get("replayed")]


class TestFolders:
    def test_folder_created_later(self, tmp_path: Path, fake_hub: FakeHub, daemon_factory: Start) -> None:
        """A watched folder that does not exist yet is reported, then watched once it appears."""
        fake_hub.add_repo(REPO, FILES)
        later = tmp_path / "later"
        cfg = write_config(tmp_path / "c.toml", hub=fake_hub, watches=[{"path": later, "repos": [REPO]}],
                           state_dir=tmp_path / "state", rescan_interval="1h")
        d = daemon_factory(cfg, ready=False)
        d.wait_for("watch.missing", path=str(later))
        later.mkdir()
        d.wait_for("watch.started", path=str(later), timeout=30)
        write(later / "config.json", FILES["config.json"])
        d.wait_for("file.matched", rfilename="config.json")

    def test_folder_deleted_while_watched(self, setup: dict[str, Any], daemon_factory: Start) -> None:
        """A watched folder removed and created again is watched again; the daemon keeps running."""
        import shutil

        d = daemon_factory(setup["config"])
        d.wait_for("scan.finished")
        shutil.rmtree(setup["dir"])
        d.wait_for("watch.missing", timeout=30)
        setup["dir"].mkdir()
        d.wait_for("watch.started", timeout=30)
        write(setup["dir"] / "config.json", FILES["config.json"])
        d.wait_for("file.matched", rfilename="config.json")

    def test_sighup_adds_and_removes_watches(self, setup: dict[str, Any], daemon_factory: Start) -> None:
        """SIGHUP re-reads the config: a new watch is judged, a removed one is dropped, without a restart."""
        d = daemon_factory(setup["config"])
        d.wait_for("scan.finished")
        other = setup["tmp"] / "other"
        other.mkdir()
        write_config(setup["config"], hub=setup["hub"], watches=[{"path": other, "repos": [REPO]}],
                     state_dir=setup["state"], log_file=setup["state"] / "events.jsonl", rescan_interval="1h")
        d.signal(signal.SIGHUP)
        d.wait_for("config.reloaded")
        write(other / "config.json", FILES["config.json"])
        d.wait_for("file.matched", rfilename="config.json", path=str(other / "config.json"))

    def test_bad_config_on_sighup_keeps_running(self, setup: dict[str, Any], daemon_factory: Start) -> None:
        """A broken config on SIGHUP is reported and the running one is kept."""
        d = daemon_factory(setup["config"])
        setup["config"].write_text("workers = 'many'\n")
        d.signal(signal.SIGHUP)
        rec = d.wait_for("config.invalid")
        assert "workers" in rec["error"]
        write(setup["dir"] / "config.json", FILES["config.json"])
        d.wait_for("file.matched", rfilename="config.json")

    def test_unwritable_log_file_on_sighup_keeps_running(self, setup: dict[str, Any], daemon_factory: Start) -> None:
        """If log_file cannot be reopened on SIGHUP, the daemon says so on stderr and keeps judging."""
        import shutil

        d = daemon_factory(setup["config"])
        d.wait_for("scan.finished")
        shutil.rmtree(setup["state"] / "events.jsonl", ignore_errors=True)
        (setup["state"] / "events.jsonl").unlink()
        (setup["state"] / "events.jsonl").mkdir()
        d.signal(signal.SIGHUP)
        d.wait_for("log.failed")
        write(setup["dir"] / "config.json", FILES["config.json"])
        d.wait_for("file.matched", rfilename="config.json")

    def test_log_file_reopened_on_sighup(self, setup: dict[str, Any], daemon_factory: Start) -> None:
        """After logrotate moves the log away, SIGHUP makes the daemon write a fresh file."""
        d = daemon_factory(setup["config"])
        log = setup["state"] / "events.jsonl"
        log.rename(log.with_suffix(".1"))
        d.signal(signal.SIGHUP)
        d.wait_for("config.reloaded")
        write(setup["dir"] / "config.json", FILES["config.json"])
        d.wait_for("file.matched", rfilename="config.json")
        assert "file.matched" in log.read_text()


class TestPolling:
    def test_poll_watch_judges_files(self, tmp_path: Path, fake_hub: FakeHub, daemon_factory: Start) -> None:
        """poll = true (NFS/SMB, where inotify sees nothing) still judges a new file, by periodic polling."""
        fake_hub.add_repo(REPO, FILES)
        watched = tmp_path / "nfs"
        watched.mkdir()
        cfg = write_config(tmp_path / "c.toml", hub=fake_hub, watches=[{"path": watched, "repos": [REPO],
                                                                         "poll": True}],
                           state_dir=tmp_path / "state", rescan_interval="1h")
        d = daemon_factory(cfg, ready=False)
        d.wait_for("watch.started", poll=True)
        d.wait_for("scan.finished")
        write(watched / "config.json", FILES["config.json"])
        d.wait_for("file.matched", rfilename="config.json", timeout=30)


class TestSystemdUnit:
    def test_unit_settings(self) -> None:
        """The user unit is Type=notify, restarts on failure but not on a bad config (78), and runs at low priority."""
        unit = (Path(__file__).resolve().parent.parent / "systemd" / "hfwatchd.service").read_text()
        lines = {line.split("=", 1)[0]: line.split("=", 1)[1] for line in unit.splitlines()
                 if "=" in line and not line.startswith("#")}
        assert lines["Type"] == "notify"
        assert lines["Restart"] == "on-failure"
        assert lines["RestartPreventExitStatus"] == "78"
        assert int(lines["Nice"]) > 0 and lines["IOSchedulingClass"] == "idle"
        assert lines["ExecStart"].split()[1:] == ["--config", "%h/.config/hfwatchd/config.toml"]
        assert lines["WantedBy"] == "default.target" and "After" not in lines  # no ordering cycle


class TestHub:
    def test_hub_down_at_start_then_back(self, setup: dict[str, Any], daemon_factory: Start) -> None:
        """With the Hub failing and nothing cached, the daemon keeps watching, backs off and judges once it is back."""
        hub: FakeHub = setup["hub"]
        hub.fail(503, times=2)
        write(setup["dir"] / "config.json", FILES["config.json"])
        d = daemon_factory(setup["config"])
        first = d.wait_for("manifest.failed")
        assert first["retry_in"] > 0 and "503" in first["error"]
        d.wait_for("manifest.loaded", timeout=30)
        d.wait_for("file.matched", rfilename="config.json")

    def test_retry_after_is_honoured(self, setup: dict[str, Any], daemon_factory: Start) -> None:
        """A 429's Retry-After is the least the daemon waits before asking again."""
        setup["hub"].fail(429, times=1, retry_after=5)
        d = daemon_factory(setup["config"])
        rec = d.wait_for("manifest.failed")
        assert rec["retry_in"] >= 5

    def test_cached_manifest_when_hub_is_down(self, setup: dict[str, Any], daemon_factory: Start) -> None:
        """A restart with the Hub down judges with the cached manifest and says so."""
        d = daemon_factory(setup["config"])
        d.wait_for("manifest.loaded", source="hub")
        d.stop()
        setup["hub"].stop()
        write(setup["dir"] / "config.json", FILES["config.json"])
        d2 = daemon_factory(setup["config"])
        d2.wait_for("file.matched", rfilename="config.json")

    def test_new_commit_rejudges_changed_files(self, tmp_path: Path, fake_hub: FakeHub,
                                               daemon_factory: Start) -> None:
        """When the branch moves, files whose entry changed get a new verdict against the new commit."""
        first = fake_hub.add_repo(REPO, FILES)
        watched = tmp_path / "dl"
        watched.mkdir()
        cfg = write_config(tmp_path / "c.toml", hub=fake_hub, watches=[{"path": watched, "repos": [REPO]}],
                           state_dir=tmp_path / "state", rescan_interval="1h", hub_table={"manifest_ttl": "1s"})
        write(watched / "config.json", FILES["config.json"])
        write(watched / "model.safetensors", FILES["model.safetensors"])
        d = daemon_factory(cfg)
        judged = {d.wait_for("file.matched", commit=first)["rfilename"] for _ in range(2)}
        assert judged == {"config.json", "model.safetensors"}
        second = fake_hub.add_repo(REPO, {**FILES, "config.json": b'{"architectures": ["Gpt"]}\n'})
        rec = d.wait_for("manifest.loaded", commit=second, timeout=30)
        assert rec["previous_commit"] == first
        bad = d.wait_for("file.mismatch", rfilename="config.json", commit=second)
        assert bad["path"] == str(watched / "config.json")


class TestOneScanPerPass:
    def test_restart_with_cached_manifest_scans_each_folder_once(self, setup: dict[str, Any],
                                                                 daemon_factory: Start) -> None:
        """A restart whose manifest is cached gives one scan.finished per folder, not one per trigger."""
        write(setup["dir"] / "config.json", FILES["config.json"])
        first = daemon_factory(setup["config"])
        first.wait_for("scan.finished")
        assert first.stop() == 0
        d = daemon_factory(setup["config"])  # returns once daemon.ready is logged
        if not any(x["event"] == "scan.finished" for x in d.seen):
            d.wait_for("scan.finished")
        sentinel(d, setup["dir"])  # a verdict after the scan: a second scan would have been logged by now
        assert d.stop() == 0
        assert any(x["event"] == "manifest.loaded" and x["source"] == "cache" for x in d.seen)
        scans = [x for x in d.seen if x["event"] == "scan.finished"]
        assert len(scans) == 1 and scans[0]["unchanged"] == 1, scans
