"""`hfwatchd service install|uninstall|status`: the systemd user unit, written for the running install."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from .config import Config, ConfigError, load_config
from .configfile import atomic_write_text, config_path
from .exits import ExitCode

UNIT_NAME = "hfwatchd.service"
EXIT_FAILED = 1  # systemctl refused; its own message is shown
SYSTEMCTL_TIMEOUT = 30.0
# passed on to the service, which does not inherit the installing shell's environment
CARRIED_ENV = ("HF_ENDPOINT", "HF_HOME", "HF_HUB_CACHE")
MARKER = "# Written by `hfwatchd service install`"

# The settings of systemd/hfwatchd.service (a test keeps the two in step), with this install's command.
_UNIT = """\
{marker} for {executable}; `hfwatchd service uninstall` removes it.
# Run again after moving the install or the config file.
[Unit]
Description=hfwatchd: verify Hugging Face downloads as they finish
{documentation}
[Service]
Type=notify
NotifyAccess=main
ExecStart={exec_start}
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=5
# 78: the configuration is wrong; restarting will not fix it. Fix the file, then `systemctl --user restart hfwatchd`.
RestartPreventExitStatus=78
TimeoutStopSec=20
KillSignal=SIGTERM
# Hashing yields to the person at the desk.
Nice=15
CPUSchedulingPolicy=batch
IOSchedulingClass=idle
Environment=PYTHONUNBUFFERED=1
{environment}
[Install]
WantedBy=default.target
"""


def unit_dir() -> Path:
    """Where the user manager reads units written by the user: `$XDG_CONFIG_HOME/systemd/user`."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "systemd" / "user"


def add_parser(sub: Any) -> None:
    """The `service` sub-command and its actions, on the CLI's sub-parsers."""
    s = sub.add_parser("service", help="install, remove or show the systemd user service",
                       description="The systemd user unit, written for this install. Exit 0 done, "
                       "1 systemctl failed, 78 no valid config file; status exits as systemctl status does.")
    actions = s.add_subparsers(dest="service_command", metavar="ACTION", required=True)
    i = actions.add_parser("install", help="write the unit for this install, enable and start it")
    i.add_argument("--config", type=Path, dest="sub_config", help="config file the service runs with")
    u = actions.add_parser("uninstall", help="stop and disable the service, remove the unit")
    u.add_argument("--config", type=Path, dest="sub_config", help=argparse.SUPPRESS)
    t = actions.add_parser("status", help="systemctl status of the service and the dashboard URL")
    t.add_argument("--config", type=Path, dest="sub_config", help="config file (for state_dir)")


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Dispatch `service install|uninstall|status`."""
    out = out or sys.stdout
    if args.service_command == "install":
        return install(config_path(args), out)
    if args.service_command == "uninstall":
        return uninstall(out)
    return status(config_path(args), out)


# --- the command the unit starts ---------------------------------------------------------------


def daemon_command(argv0: str | None = None, executable: str | None = None) -> list[str]:
    """The argv that starts this very install: the `hfwatchd` script run now, else `python -m hfwatchd`.

    `shutil.which("hfwatchd")` is not asked: it may find another install (pipx, a different venv) than
    the one running. Symlinks are kept (`~/.local/bin/hfwatchd` survives a pipx upgrade, its target may
    not); a venv's python must not be resolved either, or the venv's packages are lost.
    """
    argv0 = sys.argv[0] if argv0 is None else argv0
    executable = sys.executable if executable is None else executable
    script = Path(os.path.abspath(argv0)) if argv0 else None
    if script is not None and script.name == "hfwatchd" and os.access(script, os.X_OK):
        return [str(script)]
    sibling = Path(os.path.abspath(executable)).parent / "hfwatchd"  # `python -m hfwatchd` from a venv
    if executable and os.access(sibling, os.X_OK):
        return [str(sibling)]
    return [os.path.abspath(executable), "-m", "hfwatchd"]


def _quote(arg: str, *, command: bool = True) -> str:
    # % starts a specifier everywhere; $ a variable only in a command line (Environment= takes it as is)
    escaped = arg.replace("%", "%%")
    if command:
        escaped = escaped.replace("$", "$$")
    if escaped and not any(c.isspace() or c in "\"'\\;" for c in escaped):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def readme_path() -> Path | None:
    """The README of a source checkout (an editable install); a wheel installs none."""
    candidate = Path(__file__).resolve().parent.parent / "README.md"
    return candidate if candidate.is_file() else None


def render_unit(command: Sequence[str], config: Path, environ: dict[str, str] | None = None) -> str:
    """The unit file text for `command --config config`."""
    env = os.environ if environ is None else environ
    readme = readme_path()
    carried = [f"Environment={_quote(f'{k}={env[k]}', command=False)}" for k in CARRIED_ENV if env.get(k)]
    return _UNIT.format(
        marker=MARKER,
        executable=command[0],
        documentation=f"Documentation={readme.as_uri()}\n" if readme is not None else "",
        exec_start=" ".join(_quote(a) for a in [*command, "--config", str(config)]),
        environment="\n".join(carried) + "\n" if carried else "",
    )


# --- systemctl ---------------------------------------------------------------------------------


def user_manager() -> str | None:
    """The systemctl to use when a user manager answers (`systemctl --user show-environment`), else None."""
    import shutil
    import subprocess

    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return None
    try:
        probe = subprocess.run([systemctl, "--user", "show-environment"], capture_output=True,
                               timeout=SYSTEMCTL_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return systemctl if probe.returncode == 0 else None


def _systemctl(systemctl: str, *args: str, out: TextIO) -> bool:
    import subprocess

    cmd = [systemctl, "--user", *args]
    out.write(f"$ systemctl --user {' '.join(args)}\n")
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=SYSTEMCTL_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        sys.stderr.write(f"hfwatchd: systemctl --user {' '.join(args)} did not answer "
                         f"within {SYSTEMCTL_TIMEOUT:.0f}s\n")
        return False
    except OSError as exc:
        sys.stderr.write(f"hfwatchd: cannot run {systemctl}: {exc.strerror}\n")
        return False
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip()
        sys.stderr.write(f"hfwatchd: systemctl --user {' '.join(args)} failed (exit {done.returncode})"
                  + (f": {message}" if message else "") + "\n")
        return False
    return True


# --- install / uninstall / status --------------------------------------------------------------


def install(config: Path, out: TextIO) -> int:
    """Write the unit for this install and `config`, then reload, enable and start it if systemd answers."""
    try:
        loaded = load_config(config)
    except ConfigError as exc:
        if not config.exists():
            sys.stderr.write(f"hfwatchd: no config file at {config}; create it first:\n"
                      f"  hfwatchd config add REPO DIR" + ("" if _is_default(config) else f" --config {config}")
                      + "\n")
        else:
            sys.stderr.write(f"hfwatchd: bad configuration, no service installed: {exc}\n")
        return ExitCode.CONFIG
    command = daemon_command()
    unit = unit_dir() / UNIT_NAME
    text = render_unit(command, config)
    try:
        before: str | None = unit.read_text(encoding="utf-8")
    except FileNotFoundError:
        before = None
    except (OSError, UnicodeDecodeError):
        before = ""
    if before != text:
        try:
            atomic_write_text(unit, text, mode=0o644)
        except OSError as exc:
            sys.stderr.write(f"hfwatchd: cannot write {unit}: {exc.strerror}\n")
            return EXIT_FAILED
        out.write(f"{'wrote' if before is None else 'updated'} {unit}\n")
    else:
        out.write(f"{unit} is up to date\n")
    out.write(f"  ExecStart={' '.join([*command, '--config', str(config)])}\n")
    _warn_environment(loaded, out)
    systemctl = user_manager()
    if systemctl is None:
        out.write("no systemd user manager answers here; when one does, run:\n"
                  "  systemctl --user daemon-reload\n"
                  f"  systemctl --user enable --now {UNIT_NAME}\n"
                  "or run the daemon in the foreground without systemd:\n"
                  f"  {' '.join(command)} --config {config}\n")
        return ExitCode.OK
    ok = _systemctl(systemctl, "daemon-reload", out=out)
    if ok and before is not None and before != text:
        ok = _systemctl(systemctl, "try-restart", UNIT_NAME, out=out)  # a running daemon picks up the new unit
    ok = ok and _systemctl(systemctl, "enable", "--now", UNIT_NAME, out=out)
    if not ok:
        return EXIT_FAILED
    out.write("hfwatchd is running; follow its verdicts with:\n"
              "  journalctl --user -u hfwatchd -o cat -f\n"
              "it stops when you log out unless lingering is on: loginctl enable-linger\n")
    return ExitCode.OK


def _is_default(config: Path) -> bool:
    from .config import default_config_path

    return config == default_config_path().absolute()


def _warn_environment(config: Config, out: TextIO) -> None:
    carried = [k for k in CARRIED_ENV if os.environ.get(k)]
    if carried:
        out.write(f"  carried into the unit from this shell: {', '.join(carried)}\n")
    if os.environ.get("HF_TOKEN") and config.hub.token_file is None:
        # a token is never written into a unit file: other users may read it, `systemctl show` prints it
        out.write("  HF_TOKEN is set here but not given to the service; for gated or private repos put it in a "
                  "file and set [hub] token_file (or `hf auth login`)\n")


def uninstall(out: TextIO) -> int:
    """Stop and disable the service if systemd answers, then remove the unit file."""
    unit = unit_dir() / UNIT_NAME
    systemctl = user_manager()
    if not unit.exists():
        out.write(f"no unit at {unit}: nothing to remove\n")
        return ExitCode.OK
    if systemctl is not None and not _systemctl(systemctl, "disable", "--now", UNIT_NAME, out=out):
        return EXIT_FAILED
    if systemctl is None:
        # what `systemctl disable` would have removed: the link that starts it at login
        wanted = unit_dir() / "default.target.wants" / UNIT_NAME
        if wanted.is_symlink():
            wanted.unlink()
    unit.unlink()
    out.write(f"removed {unit}\n")
    if systemctl is not None:
        return ExitCode.OK if _systemctl(systemctl, "daemon-reload", out=out) else EXIT_FAILED
    out.write("no systemd user manager answers here; if one runs the service, stop it with:\n"
              f"  systemctl --user disable --now {UNIT_NAME} && systemctl --user daemon-reload\n")
    return ExitCode.OK


def status(config: Path, out: TextIO) -> int:
    """`systemctl --user status hfwatchd` and the dashboard URL; exits as systemctl status does."""
    unit = unit_dir() / UNIT_NAME
    out.write(f"unit: {unit}" + ("" if unit.exists() else " (not installed: hfwatchd service install)") + "\n")
    loaded: Config | None = None
    with contextlib.suppress(ConfigError):
        loaded = load_config(config)
    if loaded is None:
        out.write(f"config: {config} is missing or not valid (hfwatchd config check)\n")
    systemctl = user_manager()
    rc: int
    if systemctl is not None:
        import subprocess

        try:
            done = subprocess.run([systemctl, "--user", "status", "--no-pager", UNIT_NAME], capture_output=True,
                                  text=True, timeout=SYSTEMCTL_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            sys.stderr.write(f"hfwatchd: systemctl --user status did not answer: {exc}\n")
            rc = EXIT_FAILED
        else:
            out.write(done.stdout + done.stderr)
            rc = done.returncode
    else:
        pid = _daemon_pid(loaded.state_dir) if loaded is not None else None
        out.write("no systemd user manager answers here; "
                  + (f"a daemon runs on this state_dir (PID {pid})" if pid else "no daemon runs on this state_dir")
                  + "\n")
        rc = ExitCode.OK if pid else 3  # systemctl's "not running"
    if loaded is not None:
        url = _dashboard(loaded.state_dir)
        out.write(f"dashboard: {url}\n" if url else "dashboard: none (the daemon is not running, or [web] is off)\n")
    return rc


def _daemon_pid(state_dir: Path) -> int | None:
    from .state import read_lock_pid

    return read_lock_pid(state_dir)


def _dashboard(state_dir: Path) -> str | None:
    from .web import read_dashboard

    return read_dashboard(state_dir)
