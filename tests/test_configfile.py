"""`hfwatchd config add|check`: the config file edited in place, comments kept, validated, replaced atomically."""

from __future__ import annotations

import difflib
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ROOT, DaemonProc, run_cli, write_config
from fakehub import FakeHub

from hfwatchd.config import load_config
from hfwatchd.configfile import TEMPLATE

REPO = "org/model"
FILES = {"config.json": b'{"architectures": ["Bert"]}\n'}


def default_config() -> Path:
    return Path(os.environ["XDG_CONFIG_HOME"]) / "hfwatchd" / "config.toml"


def snapshot(path: Path) -> tuple[bytes, int, int]:
    st = path.stat()
    return path.read_bytes(), st.st_ino, st.st_mtime_ns


def only_added(before: str, after: str) -> list[str]:
    """The lines `after` adds to `before`; fails if any line of `before` was changed or removed."""
    diff = list(difflib.ndiff(before.splitlines(), after.splitlines()))
    removed = [d for d in diff if d.startswith("- ")]
    assert not removed, f"lines changed or removed: {removed}"
    return [d[2:] for d in diff if d.startswith("+ ")]


HANDWRITTEN = """\
# my hfwatchd config: the comments must survive
state_dir = "state"   # next to this file
workers = 2

[[watch]]
# where the browser saves things
path = "{dl}"
repos = [
    "org/model",  # the one I am downloading
]
place_mode = "copy"

[hub]
manifest_ttl = "2h"  # my mirror is slow
"""


class TestCreate:
    @pytest.mark.pyversions
    def test_new_file_from_the_commented_defaults(self, tmp_path: Path) -> None:
        """Without a config file, `config add` writes one with the defaults commented and one watch, and creates DIR."""
        folder = tmp_path / "downloads" / "bert"
        r = run_cli("config", "add", REPO, str(folder))
        assert r.returncode == 0, r.stderr
        path = default_config()
        text = path.read_text()
        assert text.startswith(TEMPLATE)
        assert "# state_dir = " in text and "# on_mismatch = " in text
        config = load_config(path)
        assert [w.path for w in config.watches] == [folder]
        assert [str(rc.ref) for rc in config.watches[0].repos] == [REPO]
        assert folder.is_dir()
        assert f"created {folder}" in r.stdout and "(new file)" in r.stdout

    def test_relative_dir_is_written_absolute(self, tmp_path: Path) -> None:
        """A relative DIR is written as the absolute folder it names from the current directory."""
        r = run_cli("config", "add", REPO, "dl", "--config", str(tmp_path / "c.toml"), cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert f'path = "{tmp_path / "dl"}"' in (tmp_path / "c.toml").read_text()

    def test_existing_dir_is_not_reported_created(self, tmp_path: Path) -> None:
        """A DIR that exists already is used as it is, without a "created" line."""
        (tmp_path / "dl").mkdir()
        r = run_cli("config", "add", REPO, str(tmp_path / "dl"))
        assert r.returncode == 0, r.stderr
        assert "created" not in r.stdout

    def test_template_carries_the_example_defaults(self) -> None:
        """Every top-level and [hub] setting of config.example.toml is in the new file's template, commented."""
        example = (ROOT / "config.example.toml").read_text()
        head, watch = example.split("\n[[watch]]\n", 1)
        settings = re.findall(r"^(?:# )?([a-z_]+ = .+)$", head, flags=re.MULTILINE)
        assert len(settings) >= 12
        missing = [s for s in settings if f"# {s}\n" not in TEMPLATE]
        assert not missing
        watch_keys = re.findall(r"^([a-z_]+) = ", watch, flags=re.MULTILINE)
        assert [k for k in watch_keys if k not in ("path", "repos") and f"#   {k} = " not in TEMPLATE] == []


class TestExtend:
    def test_new_folder_appends_a_watch_and_keeps_every_line(self, tmp_path: Path) -> None:
        """A DIR not watched yet gets its own [[watch]]; no line of the file is changed or removed."""
        cfg = tmp_path / "c.toml"
        before = HANDWRITTEN.format(dl=tmp_path / "dl")
        cfg.write_text(before)
        r = run_cli("config", "add", "datasets/org/data@v2", str(tmp_path / "other"), "--config", str(cfg))
        assert r.returncode == 0, r.stderr
        added = only_added(before, cfg.read_text())
        new_watch = ["[[watch]]", f'path = "{tmp_path / "other"}"', 'repos = ["datasets/org/data@v2"]']
        assert [a for a in added if a] == new_watch
        config = load_config(cfg)
        assert [w.path for w in config.watches] == [tmp_path / "dl", tmp_path / "other"]
        assert config.hub.manifest_ttl == 7200

    def test_repo_joins_the_folders_existing_watch(self, tmp_path: Path) -> None:
        """A DIR already watched gets REPO in its repos list, the list's comment kept."""
        cfg = tmp_path / "c.toml"
        before = HANDWRITTEN.format(dl=tmp_path / "dl")
        cfg.write_text(before)
        r = run_cli("config", "add", "org/tokenizer", str(tmp_path / "dl"), "--config", str(cfg))
        assert r.returncode == 0, r.stderr
        after = cfg.read_text()
        assert "# the one I am downloading" in after
        assert only_added(before, after) == ['    "org/tokenizer",']
        assert [str(rc.ref) for rc in load_config(cfg).watches[0].repos] == ["org/model", "org/tokenizer"]
        assert f"added org/tokenizer to the watch of {tmp_path / 'dl'}" in r.stdout

    def test_folder_written_with_tilde_or_relative_is_recognised(self, tmp_path: Path) -> None:
        """A watch written as `~/dl` or relative to the config file is the same folder as its absolute DIR."""
        home = tmp_path / "home"
        cfg = tmp_path / "conf" / "c.toml"
        cfg.parent.mkdir()
        cfg.write_text('[[watch]]\npath = "~/dl"\nrepos = ["org/a"]\n\n[[watch]]\npath = "rel"\nrepos = ["org/b"]\n')
        env = {**os.environ, "HOME": str(home)}
        assert run_cli("config", "add", "org/c", str(home / "dl"), "--config", str(cfg), env=env).returncode == 0
        assert run_cli("config", "add", "org/d", str(cfg.parent / "rel"), "--config", str(cfg), env=env).returncode == 0
        text = cfg.read_text()
        assert text.count("[[watch]]") == 2
        assert 'repos = ["org/a", "org/c"]' in text and 'repos = ["org/b", "org/d"]' in text

    def test_inline_watch_list_is_extended_inline(self, tmp_path: Path) -> None:
        """A config written as `watch = [{ ... }]` gets the new folder and repo in the same inline style."""
        cfg = tmp_path / "c.toml"
        cfg.write_text(f'watch = [{{ path = "{tmp_path}/a", repos = ["org/a"] }}]  # inline\n')
        assert run_cli("config", "add", "org/b", str(tmp_path / "a"), "--config", str(cfg)).returncode == 0
        assert run_cli("config", "add", "org/c", str(tmp_path / "c"), "--config", str(cfg)).returncode == 0
        text = cfg.read_text()
        assert "[[watch]]" not in text and "# inline" in text
        assert {str(w.path): [str(rc.ref) for rc in w.repos] for w in load_config(cfg).watches} == {
            f"{tmp_path}/a": ["org/a", "org/b"], f"{tmp_path}/c": ["org/c"]}

    def test_same_repo_twice_is_a_no_op(self, tmp_path: Path) -> None:
        """Adding a repo the folder already watches leaves the file byte for byte, and says so."""
        cfg = tmp_path / "c.toml"
        cfg.write_text(HANDWRITTEN.format(dl=tmp_path / "dl"))
        before = snapshot(cfg)
        r = run_cli("config", "add", "org/model@main", str(tmp_path / "dl"), "--config", str(cfg))
        assert r.returncode == 0, r.stderr
        assert snapshot(cfg) == before
        assert "already watches org/model" in r.stdout and "unchanged" in r.stdout

    def test_other_revision_replaces_the_listed_one(self, tmp_path: Path) -> None:
        """A repo listed at another revision is switched to the new one (the loader allows one per folder)."""
        cfg = tmp_path / "c.toml"
        cfg.write_text(HANDWRITTEN.format(dl=tmp_path / "dl"))
        r = run_cli("config", "add", "org/model@v1.0", str(tmp_path / "dl"), "--config", str(cfg))
        assert r.returncode == 0, r.stderr
        assert [str(rc.ref) for rc in load_config(cfg).watches[0].repos] == ["org/model@v1.0"]
        assert "instead of org/model" in r.stdout

    def test_symlinked_config_is_edited_through_the_link(self, tmp_path: Path) -> None:
        """A config file that is a symlink (a dotfile manager's) stays a link; its target gets the change."""
        real = tmp_path / "dotfiles" / "hfwatchd.toml"
        real.parent.mkdir()
        real.write_text(HANDWRITTEN.format(dl=tmp_path / "dl"))
        link = tmp_path / "c.toml"
        link.symlink_to(real)
        r = run_cli("config", "add", "org/other", str(tmp_path / "dl"), "--config", str(link))
        assert r.returncode == 0, r.stderr
        assert link.is_symlink() and "org/other" in real.read_text()

    def test_file_mode_is_kept(self, tmp_path: Path) -> None:
        """The replaced file keeps the permissions the user gave the old one."""
        cfg = tmp_path / "c.toml"
        cfg.write_text(HANDWRITTEN.format(dl=tmp_path / "dl"))
        cfg.chmod(0o640)
        assert run_cli("config", "add", "org/other", str(tmp_path / "dl"), "--config", str(cfg)).returncode == 0
        assert cfg.stat().st_mode & 0o777 == 0o640
        assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml", "dl"]  # no temporary file left


class TestConcurrent:
    def test_simultaneous_adds_all_land(self, tmp_path: Path) -> None:
        """Eight `config add` started at once for the same folder all end up in the file (none overwrites another)."""
        cfg = tmp_path / "c.toml"
        cfg.write_text(HANDWRITTEN.format(dl=tmp_path / "dl"))
        repos = [f"org/repo{i}" for i in range(8)]
        procs = [subprocess.Popen([sys.executable, "-m", "hfwatchd", "config", "add", repo, str(tmp_path / "dl"),
                                   "--config", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for repo in repos]
        for p in procs:
            _, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
        listed = [str(rc.ref) for rc in load_config(cfg).watches[0].repos]
        assert sorted(listed) == sorted(["org/model", *repos])


class TestRefused:
    @pytest.mark.parametrize("spec", ["not a repo", "org/name/extra", "datasets/onlyname", "org/na--me", "o/n@"])
    def test_malformed_repo_exits_64(self, tmp_path: Path, spec: str) -> None:
        """A malformed REPO exits 64 with the reason; no file is written, no folder created."""
        r = run_cli("config", "add", spec, str(tmp_path / "dl"))
        assert r.returncode == 64
        assert "Traceback" not in r.stderr and "unchanged" in r.stderr
        assert not default_config().exists() and not (tmp_path / "dl").exists()

    def test_dir_that_is_a_file_exits_64(self, tmp_path: Path) -> None:
        """DIR naming a regular file exits 64 and leaves the config file untouched."""
        cfg = tmp_path / "c.toml"
        cfg.write_text(HANDWRITTEN.format(dl=tmp_path / "dl"))
        before = snapshot(cfg)
        (tmp_path / "afile").write_bytes(b"x")
        r = run_cli("config", "add", REPO, str(tmp_path / "afile"), "--config", str(cfg))
        assert r.returncode == 64 and "is not a folder" in r.stderr
        assert snapshot(cfg) == before

    def test_dir_that_cannot_be_created_exits_64(self, tmp_path: Path) -> None:
        """A DIR under a regular file cannot be created: exit 64, and no config file appears."""
        (tmp_path / "afile").write_bytes(b"x")
        r = run_cli("config", "add", REPO, str(tmp_path / "afile" / "sub"))
        assert r.returncode == 64 and "cannot create" in r.stderr and "Traceback" not in r.stderr
        assert not default_config().exists()

    def test_invalid_toml_exits_78(self, tmp_path: Path) -> None:
        """An existing file that is not TOML exits 78, says so, and is left as it was."""
        cfg = tmp_path / "c.toml"
        cfg.write_text('[[watch]]\npath = "unterminated\n')
        before = snapshot(cfg)
        r = run_cli("config", "add", REPO, str(tmp_path / "dl"), "--config", str(cfg))
        assert r.returncode == 78 and "not valid TOML" in r.stderr and "Traceback" not in r.stderr
        assert snapshot(cfg) == before

    def test_config_that_does_not_validate_exits_78(self, tmp_path: Path) -> None:
        """An existing config the daemon would refuse exits 78 with the loader's key path, file untouched."""
        cfg = tmp_path / "c.toml"
        cfg.write_text('workers = "many"\n[[watch]]\npath = "/x"\nrepos = ["org/model"]\n')
        before = snapshot(cfg)
        r = run_cli("config", "add", "org/b", "/y", "--config", str(cfg))
        assert r.returncode == 78 and "workers: expected int" in r.stderr and "fix it first" in r.stderr
        assert snapshot(cfg) == before
        assert not Path("/y").exists()

    def test_nested_folder_is_refused_with_64(self, tmp_path: Path) -> None:
        """A DIR inside a watched folder would make a result the loader refuses: exit 64, file untouched."""
        cfg = tmp_path / "c.toml"
        cfg.write_text(HANDWRITTEN.format(dl=tmp_path / "dl"))
        before = snapshot(cfg)
        r = run_cli("config", "add", "org/b", str(tmp_path / "dl" / "inner"), "--config", str(cfg))
        assert r.returncode == 64 and "is nested with watch[0]" in r.stderr
        assert str(cfg) in r.stderr and ".check" not in r.stderr  # the real file is named, not the temporary one
        assert snapshot(cfg) == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]

    def test_config_without_action_is_usage(self) -> None:
        """`hfwatchd config` alone prints its usage and exits 64."""
        r = run_cli("config")
        assert r.returncode == 64 and "ACTION" in r.stderr


class TestReload:
    def test_running_daemon_gets_sighup_and_watches_the_new_folder(self, tmp_path: Path, fake_hub: FakeHub,
                                                                    daemon_factory: Callable[..., DaemonProc]) -> None:
        """With a daemon holding the state_dir, `config add` signals it and the new folder is judged at once."""
        fake_hub.add_repo(REPO, FILES)
        fake_hub.add_repo("org/second", FILES)
        (tmp_path / "dl").mkdir()
        cfg = write_config(tmp_path / "c.toml", hub=fake_hub, watches=[{"path": tmp_path / "dl", "repos": [REPO]}],
                           state_dir=tmp_path / "state", rescan_interval="1h")
        d = daemon_factory(cfg)
        r = run_cli("config", "add", "org/second", str(tmp_path / "second"), "--config", str(cfg))
        assert r.returncode == 0, r.stderr
        assert f"told the running daemon (PID {d.proc.pid}) to reload" in r.stdout
        assert d.wait_for("config.reloaded")["watches"] == 2
        (tmp_path / "second" / "config.json").write_bytes(FILES["config.json"])
        d.wait_for("file.matched", repo="org/second")

    def test_without_a_daemon_says_how_to_start_one(self, tmp_path: Path) -> None:
        """With no daemon on the state_dir, the output says none runs and how to start it."""
        r = run_cli("config", "add", REPO, str(tmp_path / "dl"))
        assert r.returncode == 0, r.stderr
        assert "no hfwatchd is running" in r.stdout and "hfwatchd service install" in r.stdout


class TestCheck:
    def test_prints_every_watch_and_repo(self, tmp_path: Path) -> None:
        """`config check` exits 0 and lists each watched path with its repos and place mode."""
        cfg = tmp_path / "c.toml"
        cfg.write_text(f'[[watch]]\npath = "{tmp_path}/a"\nrepos = ["org/model", "datasets/org/d@v1"]\n'
                       f'place = "hf-cache"\nplace_mode = "copy"\nplace_dir = "{tmp_path}/cache"\n\n'
                       f'[[watch]]\npath = "{tmp_path}/b"\nrepos = ["spaces/org/s"]\n')
        r = run_cli("config", "check", "--config", str(cfg))
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0] == f"{cfg}: valid"
        assert f"watch      {tmp_path}/a  (does not exist yet: watched once it does)" in lines
        assert "  repo     datasets/org/d@v1" in lines and "  repo     spaces/org/s" in lines
        assert f"  place    hf-cache -> {tmp_path}/cache, copy" in lines
        assert lines.count("  place    none") == 1
        assert lines[-1] == "web        127.0.0.1:8711  (`hfwatchd open` shows the page)"

    def test_web_off_is_shown(self, tmp_path: Path) -> None:
        """A config that turns the page off says so."""
        cfg = tmp_path / "c.toml"
        cfg.write_text('[web]\nlisten = ""\n[[watch]]\npath = "/x"\nrepos = ["org/model"]\n')
        r = run_cli("config", "check", "--config", str(cfg))
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[-1] == "web        off"

    def test_invalid_config_exits_78_with_the_key(self, tmp_path: Path) -> None:
        """`config check` on a config the daemon would refuse exits 78 naming the key, without a traceback."""
        cfg = tmp_path / "c.toml"
        cfg.write_text('[[watch]]\npath = "/x"\nrepos = ["org/model"]\nplace = "somewhere"\n')
        r = run_cli("config", "check", "--config", str(cfg))
        assert r.returncode == 78 and "watch[0].place" in r.stderr and "Traceback" not in r.stderr

    def test_missing_file_exits_78_and_names_config_add(self) -> None:
        """`config check` without a config file exits 78 and says how to create one."""
        r = run_cli("config", "check")
        assert r.returncode == 78 and "hfwatchd config add REPO DIR" in r.stderr
