"""The terminal rendering of log lines: one readable line per event in 100 columns; the JSON record unchanged."""

from __future__ import annotations

import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import unicodedata
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import cli_env, write_config
from fakehub import FakeHub

from hfwatchd.logs import Sink, human_size, render_console, to_json, wants_color

SGR = re.compile(r"\x1b\[[0-9;]*m")
TS = "2026-12-01T22:46:10.123456Z"
LOCAL = datetime(2026, 12, 1, 22, 46, 10, tzinfo=timezone.utc).astimezone().strftime("%H:%M:%S")


def columns(text: str) -> int:
    """What a terminal shows: SGR codes take nothing, wide characters two columns."""
    plain = SGR.sub("", text)
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in plain)


def verdict(status: str, **kw: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"timestamp": TS, "level": "info", "event": f"file.{status}",
                              "path": "/home/u/Downloads/model-00001-of-00002.safetensors", "repo": "org/model",
                              "rfilename": "model-00001-of-00002.safetensors", "commit": "a" * 40,
                              "size": 4_980_000_000, "algorithm": "sha256", "digest": "b" * 64, "seconds": 12.4}
    record.update(kw)
    return record


LONG_NAME = "/d/" + "consolidated-shard-with-a-very-long-name-" * 4 + "00001-of-00042.safetensors"
LONG_REPO = "datasets/SomeOrganisationWithALongName/an-enormous-pretraining-corpus-v2-deduplicated"


class TestVerdictLine:
    @pytest.mark.pyversions
    def test_fields_in_order(self) -> None:
        """A verdict line reads time, status, file name, repo, size and seconds, in that order."""
        line = render_console(verdict("matched"))
        assert line == f"{LOCAL} matched    model-00001-of-00002.safetensors  org/model  4.98 GB  12s"

    @pytest.mark.parametrize("status", ["matched", "mismatch", "incomplete", "unknown"])
    @pytest.mark.parametrize(("path", "repo"), [(LONG_NAME, "org/model"), ("/d/short.bin", LONG_REPO),
                                                (LONG_NAME, LONG_REPO), ("/d/" + "名前" * 60 + ".bin", LONG_REPO)])
    def test_fits_100_columns(self, status: str, path: str, repo: str) -> None:
        """Whatever the name and repo lengths (wide characters too), a verdict takes at most 100 columns."""
        line = render_console(verdict(status, path=path, repo=repo, expected_size=10**10), color=True)
        assert columns(line) <= 100
        assert "\n" not in line and line.startswith("\x1b[2m" + LOCAL)

    def test_long_name_is_shortened_in_the_middle(self) -> None:
        """A long file name loses its middle to …, so its start and its extension stay readable."""
        line = render_console(verdict("matched", path=LONG_NAME))
        name = line.split()[2]
        assert "…" in name and name.startswith("consolidated-shard") and name.endswith("00042.safetensors")
        assert "org/model" in line and line.endswith("4.98 GB  12s")

    def test_long_repo_is_shortened_too(self) -> None:
        """A repo id too long for the line is shortened in the middle, keeping its org and its end."""
        line = render_console(verdict("matched", path="/d/a.bin", repo=LONG_REPO))
        repo = line.split()[3]
        assert "…" in repo and repo.startswith("datasets/") and repo.endswith("deduplicated")

    def test_mismatch_says_download_again(self) -> None:
        """A mismatch line ends with what to do about it."""
        assert render_console(verdict("mismatch", seconds=0.04)).endswith("4.98 GB  0.04s  download again")

    def test_incomplete_shows_how_much_arrived(self) -> None:
        """An incomplete line shows the size reached out of the expected size."""
        line = render_console(verdict("incomplete", size=1_200_000, expected_size=4_980_000_000, seconds=None))
        assert line.endswith("1.2 MB of 4.98 GB")

    def test_unknown_has_no_repo(self) -> None:
        """An unknown file, which matches no repo, shows its name and size only."""
        line = render_console({"timestamp": TS, "level": "info", "event": "file.unknown", "path": "/d/x.iso",
                               "size": 700})
        assert line == f"{LOCAL} unknown    x.iso  700 B"

    def test_control_characters_in_names_are_escaped(self) -> None:
        """A file name carrying terminal escapes or a newline is shown escaped, never interpreted."""
        line = render_console(verdict("unknown", path="/d/evil\x1b]0;pwned\x07\nname\udcff.bin"), color=True)
        assert "\n" not in line and "\x07" not in line
        assert "\x1b" not in SGR.sub("", line)
        assert "evil\\x1b]0;pwned\\x07\\x0aname\\udcff.bin" in line

    def test_random_names_never_overflow_or_leak_controls(self) -> None:
        """A thousand random names and repos (wide, combining, control, surrogate) all fit and stay inert."""
        rng = random.Random(14)
        alphabet = ["a", "Z", "-", ".", " ", "名", "😀", "\u0301", "\u200d", "\x1b", "\x07", "\n", "\x9b", "\udcff",
                    "é", "ß"]
        for _ in range(1000):
            name = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 150)))
            repo = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 90)))
            status = rng.choice(["matched", "mismatch", "incomplete", "unknown"])
            line = render_console(verdict(status, path="/d/" + name, repo=repo, size=rng.randint(0, 10**13),
                                          expected_size=rng.randint(0, 10**13), seconds=rng.random() * 1000),
                                  color=rng.random() < 0.5)
            plain = SGR.sub("", line)
            assert columns(line) <= 100, line
            assert not any(unicodedata.category(c) == "Cc" for c in plain), repr(line)
            assert not any(0xD800 <= ord(c) <= 0xDFFF for c in plain), repr(line)

    @pytest.mark.parametrize(("n", "text"), [(0, "0 B"), (999, "999 B"), (1000, "1 kB"), (1_536_000, "1.54 MB"),
                                             (4_980_000_000, "4.98 GB"), (250_000_000_000, "250 GB"),
                                             (3_000_000_000_000_000, "3000 TB")])
    def test_human_sizes(self, n: int, text: str) -> None:
        """Sizes are decimal, as the Hub shows them, with three significant digits."""
        assert human_size(n) == text


class TestOtherEvents:
    def test_event_then_fields(self) -> None:
        """Any other event reads `event key=value`, strings with spaces quoted, after its level."""
        line = render_console({"timestamp": TS, "level": "info", "event": "daemon.ready", "watches": 2,
                               "version": "0.1.0", "note": "two words", "empty": ""})
        assert line == f'{LOCAL} info       daemon.ready watches=2 version=0.1.0 note="two words" empty=""'

    def test_long_line_is_cut_at_100_columns(self) -> None:
        """A long field list is cut with … at the 100th column."""
        line = render_console({"timestamp": TS, "level": "warning", "event": "manifest.failed", "repo": "org/m",
                               "error": "connection refused " * 20, "retry_in": 4.0}, color=True)
        assert columns(line) == 100 and line.endswith("…")
        assert "\x1b[33mwarning" in line

    def test_traceback_follows_in_full(self) -> None:
        """An exception's traceback is printed whole under the line, indented, never cut to the width."""
        tb = "Traceback (most recent call last):\n  File \"x.py\", line 1\n" + "ValueError: " + "y" * 150
        text = render_console({"timestamp": TS, "level": "error", "event": "worker.failed", "error": "y",
                               "exception": tb})
        first, *rest = text.split("\n")
        assert first == f"{LOCAL} error      worker.failed error=y"
        assert rest[0] == "    Traceback (most recent call last):" and rest[-1] == "    ValueError: " + "y" * 150

    def test_timestamp_is_shown_in_local_time(self) -> None:
        """The clock column is the UTC timestamp converted to local time."""
        env = {**os.environ, "TZ": "Asia/Kolkata"}
        code = ("from hfwatchd.logs import render_console as r; "
                f"print(r({{'timestamp': '{TS}', 'level': 'info', 'event': 'x'}}))")
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.startswith("04:16:10 ")


class TestColour:
    def test_colour_on_a_tty(self) -> None:
        """A terminal gets colour codes unless NO_COLOR is set; a pipe never does."""
        master, slave = os.openpty()
        try:
            with open(slave, "w", closefd=False) as tty:
                assert wants_color(tty, {})
                assert not wants_color(tty, {"NO_COLOR": "1"})
                assert wants_color(tty, {"NO_COLOR": ""})  # no-color.org: set *and* not empty
            assert not wants_color(io.StringIO(), {})
        finally:
            os.close(master)
            os.close(slave)

    def test_sink_on_a_tty_colours_and_no_color_stops_it(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A Sink on a terminal writes coloured console lines; with NO_COLOR the same lines come plain."""
        master, slave = os.openpty()
        try:
            with open(slave, "w", closefd=False) as tty:
                monkeypatch.delenv("NO_COLOR", raising=False)
                coloured = Sink(None, tty)
                monkeypatch.setenv("NO_COLOR", "1")
                plain = Sink(None, tty)
                assert coloured.console and coloured.color and plain.console and not plain.color
                for sink in (coloured, plain):
                    sink.write(20, verdict("mismatch"))
                    sink.close()
            got = b""
            while got.count(b"\n") < 2:
                got += os.read(master, 4096)
        finally:
            os.close(master)
            os.close(slave)
        first, second = got.decode().splitlines()[:2]
        assert "\x1b[1;31mmismatch" in first
        assert "\x1b" not in second and SGR.sub("", first) == second


class TestRecordsUnchanged:
    def test_log_file_and_pipe_get_the_full_json_line(self, tmp_path: Path) -> None:
        """Off a terminal, stderr and log_file both get exactly to_json(record), every field kept."""
        record = verdict("matched", path=LONG_NAME)
        stream = io.StringIO()
        sink = Sink(tmp_path / "events.jsonl", stream)
        sink.write(20, record)
        sink.close()
        assert not sink.console
        assert stream.getvalue() == to_json(record) + "\n"
        assert (tmp_path / "events.jsonl").read_text() == to_json(record) + "\n"
        assert json.loads(stream.getvalue()) == record

    def test_console_does_not_change_the_log_file(self, tmp_path: Path) -> None:
        """With the console rendering on, log_file still gets the full JSON line."""
        record = verdict("matched", path=LONG_NAME)
        stream = io.StringIO()
        sink = Sink(tmp_path / "events.jsonl", stream, console=True)
        sink.write(20, record)
        sink.close()
        assert stream.getvalue() == render_console(record) + "\n"
        assert json.loads((tmp_path / "events.jsonl").read_text()) == record


class TestDaemonOnATerminal:
    @pytest.mark.pyversions
    def test_verdict_reads_as_one_line_on_a_tty(self, tmp_path: Path, fake_hub: FakeHub) -> None:
        """The daemon with stderr on a terminal prints a readable verdict line; its log_file keeps the JSON."""
        data = b'{"architectures": ["Bert"]}\n'
        fake_hub.add_repo("org/model", {"config.json": data})
        watched = tmp_path / "dl"
        watched.mkdir()
        cfg = write_config(tmp_path / "c.toml", hub=fake_hub, watches=[{"path": watched, "repos": ["org/model"]}],
                           state_dir=tmp_path / "state", log_file=tmp_path / "events.jsonl", rescan_interval="1h")
        master, slave = os.openpty()
        env = cli_env()
        env.pop("NO_COLOR", None)
        proc = subprocess.Popen([sys.executable, "-m", "hfwatchd", "--config", str(cfg)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=slave, env=env)
        os.close(slave)
        seen = ""
        try:
            seen = read_until(master, "daemon.ready", seen)
            (watched / "config.json").write_bytes(data)
            seen = read_until(master, "matched", seen)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
            os.close(master)
        line = next(x for x in seen.splitlines() if "matched" in SGR.sub("", x))
        assert SGR.sub("", line).split()[1:4] == ["matched", "config.json", "org/model"]
        assert "\x1b[32m" in line and columns(line) <= 100
        records = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
        assert any(r["event"] == "file.matched" and r["rfilename"] == "config.json" for r in records)


def read_until(fd: int, text: str, seen: str, timeout: float = 30.0) -> str:
    """Read the pty until `text` has been printed (colour codes ignored), or fail after `timeout` seconds."""
    import select

    deadline = time.monotonic() + timeout
    while text not in SGR.sub("", seen):
        left = deadline - time.monotonic()
        assert left > 0, f"{text!r} not printed within {timeout}s:\n{seen}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the daemon closed its side
                chunk = b""
            assert chunk, f"the daemon exited before printing {text!r}:\n{seen}"
            seen += chunk.decode("utf-8", "replace")
    return seen
