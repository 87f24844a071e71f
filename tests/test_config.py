"""Configuration: every key validated before anything starts, errors naming the key path, exit 78."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli

from hfwatchd.config import ConfigError, load_config, parse_duration


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(text, encoding="utf-8")
    return p


VALID = """
state_dir = "state"
log_file = "state/events.jsonl"
log_level = "debug"
workers = 3
rescan_interval = "30s"
on_matched = ["true"]
hook_timeout = "5s"

[hub]
endpoint = "http://127.0.0.1:9"
manifest_ttl = "2h"

[[watch]]
path = "~/Downloads"
repos = ["google-bert/bert-base-uncased", "datasets/Skywork/SkyPile-150B@main"]
include = ["*.safetensors", "*.json"]
poll = true
place = "hf-cache"
place_mode = "copy"

[[watch]]
path = "data"
repos = [{ repo = "datasets/Skywork/SkyPile-150B", manifest = "seed.json" }]
on_matched = ["echo", "x"]
"""


class TestValid:
    @pytest.mark.pyversions
    def test_full_config_loads(self, tmp_path: Path) -> None:
        """Every documented key is accepted and typed; relative paths are relative to the config file."""
        c = load_config(write(tmp_path, VALID))
        assert c.workers == 3
        assert c.rescan_interval == 30
        assert c.hub.manifest_ttl == 7200
        assert c.state_dir == tmp_path / "state"
        assert c.watches[0].path == Path("~/Downloads").expanduser()
        assert c.watches[0].poll is True
        assert c.watches[1].repos[0].manifest == tmp_path / "seed.json"
        assert c.watches[1].hooks.on_matched == ("echo", "x")
        assert c.watches[0].hooks.on_matched == ("true",)
        assert c.watches[0].hooks.timeout == 5

    @pytest.mark.pyversions
    def test_example_config_is_valid(self) -> None:
        """config.example.toml, which documents every key, loads."""
        example = Path(__file__).resolve().parent.parent / "config.example.toml"
        c = load_config(example)
        assert c.watches

    @pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("10m", 600), ("1h", 3600), (45, 45), ("1.5s", 1.5),
                                                   ("1d", 86400), ("250ms", 0.25)])
    def test_durations(self, text: object, seconds: float) -> None:
        """Durations are "30s", "10m", "1h" or seconds."""
        assert parse_duration(text, "k") == seconds

    def test_include_exclude(self, tmp_path: Path) -> None:
        """include and exclude decide which manifest files count as expected."""
        c = load_config(write(tmp_path, '[[watch]]\npath = "d"\nrepos = ["o/n"]\ninclude = ["*.json", "data/*"]\n'
                                         'exclude = ["data/test*"]\n'))
        w = c.watches[0]
        assert w.expects("config.json") and w.expects("sub/tok.json") and w.expects("data/train.parquet")
        assert not w.expects("model.bin") and not w.expects("data/test.parquet")


class TestInvalid:
    @pytest.mark.parametrize(
        ("text", "key"),
        [
            ('bogus = 1\n[[watch]]\npath = "d"\nrepos = ["o/n"]', "bogus"),
            ('workers = "two"\n[[watch]]\npath = "d"\nrepos = ["o/n"]', "workers"),
            ('workers = 0\n[[watch]]\npath = "d"\nrepos = ["o/n"]', "workers"),
            ('rescan_interval = "soon"\n[[watch]]\npath = "d"\nrepos = ["o/n"]', "rescan_interval"),
            ('[hub]\nmanifest_ttl = "-1h"\n[[watch]]\npath = "d"\nrepos = ["o/n"]', "hub.manifest_ttl"),
            ('[hub]\nendpoint = "ftp://x"\n[[watch]]\npath = "d"\nrepos = ["o/n"]', "hub.endpoint"),
            ('[hub]\ntokn = "x"\n[[watch]]\npath = "d"\nrepos = ["o/n"]', "hub.tokn"),
            ('[[watch]]\npath = "d"\nrepos = ["o/n"]\n[[watch]]\npath = "e"\nrepos = ["bad spec!"]',
             "watch[1].repos[0]"),
            ('[[watch]]\npath = "d"\nrepos = [{ repo = "o/n", manifest = 3 }]', "watch[0].repos[0].manifest"),
            ('[[watch]]\npath = "d"\nrepos = []', "watch[0].repos"),
            ('[[watch]]\nrepos = ["o/n"]', "watch[0].path"),
            ('[[watch]]\npath = "d"\nrepos = ["o/n"]\nplace = "somewhere"', "watch[0].place"),
            ('[[watch]]\npath = "d"\nrepos = ["o/n"]\nplace = "local-dir"', "watch[0].place_dir"),
            ('[[watch]]\npath = "d"\nrepos = ["o/n"]\npoll = "yes"', "watch[0].poll"),
            ('[[watch]]\npath = "d"\nrepos = ["o/n"]\non_matched = "notify-send"', "watch[0].on_matched"),
            ('[[watch]]\npath = "d"\nrepos = ["o/n", "o/n"]', "watch[0].repos[1]"),
            ("log_level = 'loud'", "log_level"),
            ('[[watch]]\npath = "d"\nrepos = ["o/n"]\n[[watch]]\npath = "d/sub"\nrepos = ["o/m"]', "watch[1].path"),
            ("", "watch"),
        ],
    )
    def test_error_names_the_key(self, tmp_path: Path, text: str, key: str) -> None:
        """A bad key, type or value is refused with its key path in the message."""
        with pytest.raises(ConfigError) as info:
            load_config(write(tmp_path, text))
        assert f": {key}:" in str(info.value)

    def test_invalid_toml(self, tmp_path: Path) -> None:
        """A TOML syntax error names the file."""
        with pytest.raises(ConfigError, match="invalid TOML"):
            load_config(write(tmp_path, "workers = = 2"))

    def test_cli_exits_78_without_traceback(self, tmp_path: Path) -> None:
        """The daemon and check refuse a bad config with exit 78 and one clear line."""
        p = write(tmp_path, '[[watch]]\npath = "d"\nrepos = ["o/n"]\nworkrs = 2\n')
        for args in (["--config", str(p)], ["check", "--config", str(p)], ["status", "--config", str(p)]):
            r = run_cli(*args)
            assert r.returncode == 78, r.stderr
            assert "watch[0].workrs" in r.stderr
            assert "Traceback" not in r.stderr

    def test_unusable_log_file_is_a_config_error(self, tmp_path: Path) -> None:
        """A log_file that cannot be opened (here a directory) is exit 78 naming log_file, not a traceback."""
        p = write(tmp_path, f'log_file = "{tmp_path}"\n[[watch]]\npath = "d"\nrepos = ["o/n"]\n')
        for args in (["--config", str(p)], ["check", "--config", str(p)]):
            r = run_cli(*args)
            assert r.returncode == 78, r.stderr
            assert "log_file" in r.stderr and "Traceback" not in r.stderr

    def test_bad_hf_endpoint(self, tmp_path: Path) -> None:
        """A malformed HF_ENDPOINT is named, exit 78."""
        import os

        r = run_cli("check", "o/n", str(tmp_path), env=dict(os.environ, HF_ENDPOINT="notaurl"))
        assert r.returncode == 78
        assert "HF_ENDPOINT" in r.stderr

    def test_missing_config_file(self, tmp_path: Path) -> None:
        """A config path that does not exist is exit 78 with the path named."""
        r = run_cli("--config", str(tmp_path / "nope.toml"))
        assert r.returncode == 78
        assert "nope.toml" in r.stderr
