"""`hfwatchd service install|uninstall|status`: the unit written for this install, systemctl absent or present."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, DaemonProc, write_config
from fakehub import FakeHub

from hfwatchd.service import daemon_command, render_unit

VENV_SCRIPT = Path(sys.executable).parent / "hfwatchd"

FAKE_SYSTEMCTL = """#!/bin/sh
# records its argv, one call a line; answers like a user manager would
printf '%s\\n' "$*" >> "$FAKE_SYSTEMCTL_LOG"
case "$*" in
    *show-environment*) exit "${FAKE_MANAGER_RC:-0}" ;;
    *"status --no-pager"*) echo "* hfwatchd.service - fake status line"; exit "${FAKE_STATUS_RC:-0}" ;;
    *"enable --now"*) [ "${FAKE_ENABLE_RC:-0}" = 0 ] || echo "Failed to enable unit: fake refusal" >&2
                      exit "${FAKE_ENABLE_RC:-0}" ;;
esac
exit 0
"""


class Sandbox:
    """A HOME of its own, a config file, and a PATH with or without a fake `systemctl`."""

    def __init__(self, tmp_path: Path, *, systemctl: bool) -> None:
        self.tmp = tmp_path
        self.home = tmp_path / "home"
        self.home.mkdir()
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        self.log = tmp_path / "systemctl.log"
        self.config = self.home / ".config" / "hfwatchd" / "config.toml"
        if systemctl:
            fake = self.bin / "systemctl"
            fake.write_text(FAKE_SYSTEMCTL)
            fake.chmod(0o755)
        self.env = {**os.environ, "HOME": str(self.home), "PATH": str(self.bin), "FAKE_SYSTEMCTL_LOG": str(self.log),
                    "XDG_CONFIG_HOME": str(self.home / ".config")}
        for name in ("HF_ENDPOINT", "HF_HOME", "HF_HUB_CACHE", "HF_TOKEN", "NO_COLOR"):
            self.env.pop(name, None)

    @property
    def unit(self) -> Path:
        return self.home / ".config" / "systemd" / "user" / "hfwatchd.service"

    def write_config(self) -> Path:
        self.config.parent.mkdir(parents=True, exist_ok=True)
        self.config.write_text(f'[[watch]]\npath = "{self.home}/Downloads"\nrepos = ["org/model"]\n')
        return self.config

    def run(self, *args: str, script: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
        """`hfwatchd ARGS` through the venv's console script (as a user types it), or `python -m hfwatchd`."""
        cmd = [str(VENV_SCRIPT)] if script else [sys.executable, "-m", "hfwatchd"]
        return subprocess.run([*cmd, *args], env={**self.env, **env}, capture_output=True, text=True, timeout=60,
                              check=False)

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


def unit_settings(text: str) -> dict[str, list[str]]:
    """Every `Key=value` of a unit, per key (Environment= may repeat), comments left out."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", ";")):
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


def exec_argv(value: str) -> list[str]:
    """ExecStart's words as systemd reads them: shell-like quoting, then %% and $$ unescaped."""
    return [w.replace("%%", "%").replace("$$", "$") for w in shlex.split(value)]


@pytest.fixture
def bare(tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path, systemctl=False)


@pytest.fixture
def managed(tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path, systemctl=True)


class TestInstallWithoutSystemd:
    @pytest.mark.pyversions
    def test_unit_runs_this_install_with_this_config(self, bare: Sandbox) -> None:
        """Without systemctl, the unit is written for the hfwatchd run and its config; the next steps are printed."""
        bare.write_config()
        r = bare.run("service", "install")
        assert r.returncode == 0, r.stderr
        settings = unit_settings(bare.unit.read_text())
        assert exec_argv(settings["ExecStart"][0]) == [str(VENV_SCRIPT), "--config", str(bare.config)]
        assert "systemctl --user daemon-reload" in r.stdout
        assert "systemctl --user enable --now hfwatchd.service" in r.stdout
        assert f"{VENV_SCRIPT} --config {bare.config}" in r.stdout  # the foreground alternative
        assert bare.calls() == []

    def test_same_settings_as_the_packaged_unit(self, bare: Sandbox) -> None:
        """The written unit has every setting of systemd/hfwatchd.service but its own ExecStart."""
        bare.write_config()
        assert bare.run("service", "install").returncode == 0
        written = unit_settings(bare.unit.read_text())
        packaged = unit_settings((ROOT / "systemd" / "hfwatchd.service").read_text())
        for settings in (written, packaged):
            settings.pop("ExecStart")
            settings.pop("Documentation", None)
        assert written == packaged
        assert packaged["Type"] == ["notify"] and packaged["RestartPreventExitStatus"] == ["78"]
        assert packaged["IOSchedulingClass"] == ["idle"] and packaged["ExecReload"] == ["/bin/kill -HUP $MAINPID"]

    def test_documentation_is_a_real_file_or_absent(self, bare: Sandbox) -> None:
        """Documentation= names the README of this checkout, never a web address; the packaged unit has none."""
        bare.write_config()
        assert bare.run("service", "install").returncode == 0
        docs = unit_settings(bare.unit.read_text()).get("Documentation", [])
        assert docs == [(ROOT / "README.md").as_uri()] and (ROOT / "README.md").is_file()
        assert "Documentation" not in unit_settings((ROOT / "systemd" / "hfwatchd.service").read_text())

    def test_home_config_dir_without_xdg(self, bare: Sandbox) -> None:
        """With XDG_CONFIG_HOME unset, the unit goes to ~/.config/systemd/user and the config is found there."""
        bare.write_config()
        del bare.env["XDG_CONFIG_HOME"]
        r = bare.run("service", "install")
        assert r.returncode == 0, r.stderr
        assert bare.unit.is_file()

    def test_xdg_config_home_is_honoured(self, bare: Sandbox) -> None:
        """With XDG_CONFIG_HOME set elsewhere, both the config and the unit are looked up there."""
        xdg = bare.tmp / "xdg"
        bare.env["XDG_CONFIG_HOME"] = str(xdg)
        bare.config = xdg / "hfwatchd" / "config.toml"
        bare.write_config()
        assert bare.run("service", "install").returncode == 0
        unit = xdg / "systemd" / "user" / "hfwatchd.service"
        assert exec_argv(unit_settings(unit.read_text())["ExecStart"][0])[-1] == str(bare.config)
        assert not bare.unit.exists()

    def test_python_m_uses_the_venvs_script(self, bare: Sandbox) -> None:
        """Run as `python -m hfwatchd`, the unit starts the hfwatchd script of that same environment."""
        bare.write_config()
        r = bare.run("service", "install", script=False)
        assert r.returncode == 0, r.stderr
        assert exec_argv(unit_settings(bare.unit.read_text())["ExecStart"][0])[0] == str(VENV_SCRIPT)

    def test_odd_config_path_is_quoted_for_systemd(self, bare: Sandbox) -> None:
        """A config path with a space, % and $ reaches the daemon as one unchanged argument."""
        odd = bare.tmp / "my configs" / "100% $HOME.toml"
        bare.config = odd
        bare.write_config()
        r = bare.run("service", "install", "--config", str(odd))
        assert r.returncode == 0, r.stderr
        text = bare.unit.read_text()
        assert exec_argv(unit_settings(text)["ExecStart"][0]) == [str(VENV_SCRIPT), "--config", str(odd)]
        if shutil.which("systemd-analyze"):
            check = subprocess.run(["systemd-analyze", "verify", "--man=no", str(bare.unit)], capture_output=True,
                                   text=True, timeout=60, check=False)
            assert check.returncode == 0, check.stderr

    def test_no_config_file_says_config_add_first(self, bare: Sandbox) -> None:
        """Without a config file, install writes nothing, exits 78 and names `hfwatchd config add REPO DIR`."""
        r = bare.run("service", "install")
        assert r.returncode == 78
        assert "hfwatchd config add REPO DIR" in r.stderr and "Traceback" not in r.stderr
        assert not bare.unit.exists()

    def test_invalid_config_is_not_installed(self, bare: Sandbox) -> None:
        """A config the daemon would refuse (and systemd would not restart) is reported; no unit is written."""
        bare.config.parent.mkdir(parents=True)
        bare.config.write_text("workers = 0\n")
        r = bare.run("service", "install")
        assert r.returncode == 78 and "workers" in r.stderr
        assert not bare.unit.exists()

    def test_hub_environment_is_carried_but_never_the_token(self, bare: Sandbox) -> None:
        """HF_ENDPOINT from the installing shell goes into the unit; HF_TOKEN does not, and the user is told."""
        bare.write_config()
        r = bare.run("service", "install", HF_ENDPOINT="http://mirror.invalid/hf", HF_TOKEN="hf_secret_123")
        assert r.returncode == 0, r.stderr
        text = bare.unit.read_text()
        assert unit_settings(text)["Environment"] == ["PYTHONUNBUFFERED=1", "HF_ENDPOINT=http://mirror.invalid/hf"]
        assert "hf_secret_123" not in text and "hf_secret_123" not in r.stdout
        assert "HF_TOKEN is set here but not given to the service" in r.stdout


class TestInstallWithSystemd:
    def test_reload_then_enable_now(self, managed: Sandbox) -> None:
        """With a user manager, install runs daemon-reload then enable --now, in that order."""
        managed.write_config()
        r = managed.run("service", "install")
        assert r.returncode == 0, r.stdout + r.stderr
        assert managed.calls() == ["--user show-environment", "--user daemon-reload",
                                   "--user enable --now hfwatchd.service"]
        assert "journalctl --user -u hfwatchd" in r.stdout

    def test_changed_unit_restarts_a_running_service(self, managed: Sandbox) -> None:
        """Installing again with another config restarts a running service; an unchanged unit is left alone."""
        managed.write_config()
        assert managed.run("service", "install").returncode == 0
        other = managed.tmp / "other.toml"
        shutil.copy(managed.config, other)
        managed.log.unlink()
        assert managed.run("service", "install", "--config", str(other)).returncode == 0
        assert "--user try-restart hfwatchd.service" in managed.calls()
        managed.log.unlink()
        r = managed.run("service", "install", "--config", str(other))
        assert "is up to date" in r.stdout
        assert "--user try-restart hfwatchd.service" not in managed.calls()

    def test_no_user_manager_prints_the_commands(self, managed: Sandbox) -> None:
        """When `systemctl --user` finds no manager (a container, ssh without lingering), nothing else is run."""
        managed.write_config()
        r = managed.run("service", "install", FAKE_MANAGER_RC="1")
        assert r.returncode == 0
        assert managed.calls() == ["--user show-environment"]
        assert "systemctl --user enable --now hfwatchd.service" in r.stdout and managed.unit.is_file()

    def test_enable_failure_exits_1_with_systemctls_message(self, managed: Sandbox) -> None:
        """A refused enable exits 1 and shows systemctl's own message; the unit file stays for a retry."""
        managed.write_config()
        r = managed.run("service", "install", FAKE_ENABLE_RC="1")
        assert r.returncode == 1
        assert "fake refusal" in r.stderr and managed.unit.is_file()


class TestUninstall:
    def test_disable_then_remove(self, managed: Sandbox) -> None:
        """Uninstall stops and disables the service, removes the unit, then reloads the manager."""
        managed.write_config()
        assert managed.run("service", "install").returncode == 0
        managed.log.unlink()
        r = managed.run("service", "uninstall")
        assert r.returncode == 0, r.stdout
        assert managed.calls() == ["--user show-environment", "--user disable --now hfwatchd.service",
                                   "--user daemon-reload"]
        assert not managed.unit.exists()

    def test_without_systemd_removes_the_unit_and_its_link(self, bare: Sandbox) -> None:
        """Without systemctl, the unit and the default.target.wants link are removed and the command is printed."""
        bare.write_config()
        assert bare.run("service", "install").returncode == 0
        wants = bare.unit.parent / "default.target.wants" / "hfwatchd.service"
        wants.parent.mkdir()
        wants.symlink_to(bare.unit)
        r = bare.run("service", "uninstall")
        assert r.returncode == 0
        assert not bare.unit.exists() and not wants.is_symlink()
        assert "systemctl --user disable --now hfwatchd.service" in r.stdout

    def test_not_installed_is_fine(self, managed: Sandbox) -> None:
        """Uninstalling what is not installed says so and exits 0 without touching systemd."""
        r = managed.run("service", "uninstall")
        assert r.returncode == 0 and "nothing to remove" in r.stdout
        assert "--user disable --now hfwatchd.service" not in managed.calls()


class TestStatus:
    def test_shows_systemctl_status_and_its_exit_code(self, managed: Sandbox) -> None:
        """`service status` prints systemctl's status and exits with its code (3: not running)."""
        managed.write_config()
        r = managed.run("service", "status", FAKE_STATUS_RC="3")
        assert r.returncode == 3
        assert "fake status line" in r.stdout and "--user status --no-pager hfwatchd.service" in managed.calls()
        assert "dashboard: none" in r.stdout

    def test_without_systemd_says_whether_a_daemon_runs(self, bare: Sandbox) -> None:
        """Without systemctl, status says no daemon holds the state_dir and exits 3."""
        bare.write_config()
        r = bare.run("service", "status")
        assert r.returncode == 3
        assert "no daemon runs on this state_dir" in r.stdout and "(not installed" in r.stdout


    def test_running_daemon_and_its_dashboard(self, bare: Sandbox, fake_hub: FakeHub,
                                              daemon_factory: Callable[..., DaemonProc]) -> None:
        """With a daemon running on the config's state_dir, status names its PID and the page's URL, exit 0."""
        fake_hub.add_repo("org/model", {"config.json": b"{}\n"})
        bare.config.parent.mkdir(parents=True)
        write_config(bare.config, hub=fake_hub, watches=[{"path": bare.tmp / "dl", "repos": ["org/model"]}],
                     state_dir=bare.tmp / "state")
        with bare.config.open("a") as f:
            f.write('[web]\nlisten = "127.0.0.1:0"\n')
        d = daemon_factory(bare.config)
        url = d.wait_for("web.started")["url"]
        r = bare.run("service", "status")
        assert r.returncode == 0, r.stdout
        assert f"a daemon runs on this state_dir (PID {d.proc.pid})" in r.stdout
        assert f"dashboard: {url}?token=" in r.stdout


class TestDaemonCommand:
    def test_script_path_is_kept_unresolved(self, tmp_path: Path) -> None:
        """argv[0] named hfwatchd is used as given: a ~/.local/bin symlink is not replaced by its target."""
        target = tmp_path / "venv" / "bin" / "hfwatchd"
        target.parent.mkdir(parents=True)
        target.write_text("#!/bin/sh\n")
        target.chmod(0o755)
        link = tmp_path / "local-bin" / "hfwatchd"
        link.parent.mkdir()
        link.symlink_to(target)
        assert daemon_command(str(link), "/usr/bin/python3") == [str(link)]

    def test_module_fallback_without_a_script(self, tmp_path: Path) -> None:
        """Run as a module from a Python with no hfwatchd script beside it, the unit uses `python -m hfwatchd`."""
        python = tmp_path / "bin" / "python3"
        python.parent.mkdir()
        python.write_text("")
        cmd = daemon_command(str(tmp_path / "src" / "hfwatchd" / "__main__.py"), str(python))
        assert cmd == [str(python), "-m", "hfwatchd"]

    def test_environment_values_keep_dollars(self, tmp_path: Path) -> None:
        """In Environment= only % is escaped: systemd expands no $ there, and a space is quoted."""
        text = render_unit(["/x/hfwatchd"], tmp_path / "c.toml", {"HF_HOME": "/data/$hf 100%"})
        assert unit_settings(text)["Environment"][-1] == '"HF_HOME=/data/$hf 100%%"'

    def test_render_quotes_the_module_fallback(self, tmp_path: Path) -> None:
        """The `python -m` fallback with a spaced interpreter path is still three words in ExecStart."""
        env: dict[str, Any] = {}
        text = render_unit(["/opt/my python/bin/python3", "-m", "hfwatchd"], tmp_path / "c.toml", env)
        argv = exec_argv(unit_settings(text)["ExecStart"][0])
        assert argv == ["/opt/my python/bin/python3", "-m", "hfwatchd", "--config", str(tmp_path / "c.toml")]
