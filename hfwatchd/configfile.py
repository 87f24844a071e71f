"""`hfwatchd config add|check`: edit the config file in place, comments kept, validated before it is replaced.

The file is edited with tomlkit, which keeps the user's comments, order and layout (tomllib only reads).
Every change is validated by the daemon's own loader on a temporary file beside the real one, and only
then moved over it, so a failed `config add` leaves the file exactly as it was.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from .config import Config, ConfigError, default_config_path, load_config
from .exits import ExitCode
from .manifest import RepoRef, SpecError

# What a new config file starts with: the defaults of config.example.toml, commented out, so the file
# documents itself (config.example.toml is not installed with the package; a test keeps the two in step).
TEMPLATE = """\
# hfwatchd configuration, written by `hfwatchd config add`; edit it freely, comments are kept.
# Commented lines show the defaults. `hfwatchd config check` validates the file; the daemon re-reads
# it on SIGHUP (`systemctl --user reload hfwatchd`).
# Durations are "30s", "10m", "1h", "1d" or a number of seconds. Paths may use ~ and $VARS;
# a relative path is relative to this file's folder.

# Where the SQLite state and the manifest cache live (created mode 0700).
# state_dir = "~/.local/state/hfwatchd"

# JSON lines appended here as well as to stderr (journald). Reopened on SIGHUP for logrotate.
# log_file = "~/.local/state/hfwatchd/events.jsonl"

# debug | info | warning | error
# log_level = "info"

# How many files are hashed at once. Default: the number of CPUs.
# workers = 2

# A full pass over every watched folder this often, in case an event was missed.
# rescan_interval = "10m"

# Hooks: argv lists run without a shell after a verdict, with HFWATCHD_EVENT, HFWATCHD_STATUS,
# HFWATCHD_PATH, HFWATCHD_REPO, HFWATCHD_RFILENAME, HFWATCHD_COMMIT, HFWATCHD_SIZE,
# HFWATCHD_EXPECTED, HFWATCHD_ACTUAL in the environment. A [[watch]] may set its own.
# on_matched = ["notify-send", "hfwatchd", "a download matched"]
# on_mismatch = ["notify-send", "--urgency=critical", "hfwatchd", "a download is corrupt: download it again"]
# on_incomplete = ["logger", "-t", "hfwatchd", "incomplete download"]
# hook_timeout = "30s"

[hub]
# Default: $HF_ENDPOINT, then https://huggingface.co. A mirror works the same way.
# endpoint = "https://huggingface.co"
# A file holding a Hub token, for gated or private repos. Without it, huggingface_hub's own lookup
# applies (HF_TOKEN, then ~/.cache/huggingface/token). The token is never logged or stored.
# token_file = "~/.cache/huggingface/token"
# How long a branch -> commit resolution is trusted before asking the Hub again.
# manifest_ttl = "1h"
# Timeout of each HTTP request to the Hub.
# timeout = "30s"

[web]
# The daemon's page (`hfwatchd open`): files, progress, pinned download links, live verdicts.
# Loopback only: "127.0.0.1:PORT", "[::1]:PORT" or "localhost:PORT"; port 0 picks a free port; "" turns it off.
# listen = "127.0.0.1:8711"

# One [[watch]] per download folder; `hfwatchd config add REPO DIR` appends them. Per watch, optionally:
#   include = ["*.safetensors", "*.json"]   only these manifest files count as expected
#   exclude = []
#   poll = false                 true: poll the folder (NFS/SMB, where inotify sees nothing)
#   place = "none"               after file.matched: "none" | "hf-cache" | "local-dir"
#   place_dir = "~/.cache/huggingface/hub"
#   place_mode = "link"          "link" (hard link, a copy across filesystems) | "copy" | "move"
"""


class ConfigFileError(Exception):
    """A `config` sub-command refused its input; the file is untouched. Carries the exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code



def config_path(args: argparse.Namespace) -> Path:
    """The file a sub-command works on: `--config` after or before the sub-command, else the default."""
    path: Path | None = getattr(args, "sub_config", None) or getattr(args, "config", None)
    return (path if path is not None else default_config_path()).expanduser().absolute()


def add_parser(sub: Any) -> None:
    """The `config` sub-command and its own sub-commands, on the CLI's sub-parsers."""
    c = sub.add_parser("config", help="create or extend the config file, or validate it",
                       description="Edit the config file with its comments kept, or check it. "
                       "Exit 0 done, 64 bad REPO or DIR, 78 the config file is not valid.")
    actions = c.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    a = actions.add_parser("add", help="watch DIR for REPO's files (creates the file if there is none)",
                           description="Add REPO to DIR's [[watch]], or a new [[watch]] for DIR, creating the "
                           "config file and DIR if needed; a running daemon is told to reload.")
    a.add_argument("repo", help="org/name, datasets/org/name or spaces/org/name, optionally @revision")
    a.add_argument("dir", type=Path, help="the folder the files are downloaded into")
    a.add_argument("--config", type=Path, dest="sub_config", help=f"config file (default: {default_config_path()})")
    k = actions.add_parser("check", help="validate the config file and print what it watches")
    k.add_argument("--config", type=Path, dest="sub_config", help=f"config file (default: {default_config_path()})")


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Dispatch `config add` / `config check`; every refusal is a message and an exit code, never a traceback."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        if args.config_command == "add":
            return add(args.repo, args.dir, config_path(args), out)
        return check(config_path(args), out)
    except ConfigFileError as exc:
        err.write(f"hfwatchd: {exc}\n")
        return exc.exit_code


# --- add ---------------------------------------------------------------------------------------


class Edit:
    """What `add` decided: the new text and the sentence that tells the user what changed."""

    # a plain class: every command's parser imports this module, and @dataclass compiles code at import
    __slots__ = ("changed", "message", "text")

    def __init__(self, text: str, message: str, changed: bool) -> None:
        self.text, self.message, self.changed = text, message, changed


def add(spec: str, folder: Path, path: Path, out: TextIO) -> int:
    """`config add REPO DIR`: edit, validate, create DIR, replace the file atomically, tell the daemon."""
    try:
        ref = RepoRef.parse(spec)
    except SpecError as exc:
        raise ConfigFileError(f"{exc}; the config file is unchanged", ExitCode.USAGE) from None
    target = Path(os.path.abspath(os.path.expandvars(os.path.expanduser(folder))))
    if target.exists() and not target.is_dir():
        raise ConfigFileError(f"{target} is not a folder; the config file is unchanged", ExitCode.USAGE)
    # a config file that is a symlink (dotfile managers) is edited where it points, and stays a link
    real = path.resolve() if path.is_symlink() else path
    with _folder_lock(real.parent):
        return _add_locked(ref, target, path, real, out)


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Two `config add` at once would each write their own edit of the same old text: the second one wins."""
    import fcntl

    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigFileError(f"cannot use {folder}: {_reason(exc)}", ExitCode.CONFIG) from None
    try:
        with contextlib.suppress(OSError):  # a filesystem without flock: editing stays as safe as a text editor
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _add_locked(ref: RepoRef, target: Path, path: Path, real: Path, out: TextIO) -> int:
    old: str | None
    try:
        old = real.read_text(encoding="utf-8")
    except FileNotFoundError:
        old = None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"{path}: cannot read it: {_reason(exc)}", ExitCode.CONFIG) from None
    edit = edit_text(old, ref, target, base=real.parent)
    if not edit.changed:
        out.write(f"{edit.message}; {path} is unchanged\n")
        return ExitCode.OK
    created_dir = False
    validated = _validate(edit.text, real, old)
    if not target.exists():
        try:
            target.mkdir(parents=True)
        except OSError as exc:
            raise ConfigFileError(f"cannot create {target}: {_reason(exc)}; the config file is unchanged",
                                  ExitCode.USAGE) from None
        created_dir = True
    try:
        atomic_write_text(real, edit.text, mode=_mode(real))
    except OSError as exc:
        raise ConfigFileError(f"cannot write {path}: {_reason(exc)}; it is unchanged", ExitCode.CONFIG) from None
    out.write(f"{edit.message} in {path}" + (" (new file)" if old is None else "") + "\n")
    if created_dir:
        out.write(f"created {target} (downloads saved there are judged as they finish)\n")
    out.write(reload_daemon(validated.state_dir) + "\n")
    return ExitCode.OK


def edit_text(old: str | None, ref: RepoRef, folder: Path, *, base: Path) -> Edit:
    """The config text with `ref` watched in `folder` (pure: no file is read or written)."""
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    text = TEMPLATE if old is None else old
    if text and not text.endswith("\n"):
        text += "\n"  # so the table appended below starts on its own line
    try:
        doc = tomlkit.parse(text)
    except TOMLKitError as exc:
        raise ConfigFileError(f"the config file is not valid TOML ({exc}); fix it first, it is unchanged",
                              ExitCode.CONFIG) from None
    watches = doc.get("watch")
    if watches is not None and not isinstance(watches, list):
        raise ConfigFileError("watch: expected [[watch]] tables; fix it first, the config file is unchanged",
                              ExitCode.CONFIG)
    for i, watch in enumerate(watches or []):
        if not isinstance(watch, dict) or not isinstance(watch.get("path"), str):
            continue  # the loader names the problem in _validate
        if not _same_folder(watch["path"], folder, base):
            continue
        repos = watch.get("repos")
        if repos is None:
            watch["repos"] = [str(ref)]
            return Edit(tomlkit.dumps(doc), f"added {ref} to the watch of {folder}", True)
        if not isinstance(repos, list):
            raise ConfigFileError(f"watch[{i}].repos: expected a list; fix it first, the config file is unchanged",
                                  ExitCode.CONFIG)
        for j, entry in enumerate(repos):
            listed = _listed_ref(entry)
            if listed is None or listed.key != ref.key:
                continue
            if listed.revision == ref.revision:
                return Edit(text, f"{folder} already watches {ref}", False)
            # one revision per repo and folder (the loader refuses a repo listed twice): the new one wins
            if isinstance(entry, dict):
                entry["repo"] = str(ref)
            else:
                repos[j] = str(ref)
            return Edit(tomlkit.dumps(doc), f"{folder} now watches {ref} instead of {listed}", True)
        repos.append(str(ref))
        return Edit(tomlkit.dumps(doc), f"added {ref} to the watch of {folder}", True)
    table = tomlkit.table()
    table.add("path", str(folder))
    table.add("repos", [str(ref)])
    table.add(tomlkit.nl())
    if watches is None:
        aot = tomlkit.aot()
        aot.append(table)
        doc.append("watch", aot)
    elif isinstance(watches, tomlkit.items.AoT):
        if len(watches) and not watches[-1].as_string().endswith("\n\n"):
            watches[-1].add(tomlkit.nl())  # a blank line between two [[watch]] tables, as a person writes them
        watches.append(table)
    else:  # `watch = [{ ... }]` written inline
        inline = tomlkit.inline_table()
        inline.update({"path": str(folder), "repos": [str(ref)]})
        watches.append(inline)
    # the blank line that separates tables would otherwise be left dangling at the end of the file
    return Edit(tomlkit.dumps(doc).rstrip("\n") + "\n", f"added a watch of {folder} for {ref}", True)


def _listed_ref(entry: Any) -> RepoRef | None:
    spec = entry.get("repo") if isinstance(entry, dict) else entry
    if not isinstance(spec, str):
        return None
    try:
        return RepoRef.parse(spec)
    except SpecError:
        return None


def _same_folder(value: str, folder: Path, base: Path) -> bool:
    # the loader's own rules: ~ and $VARS expanded, relative to the config file's folder
    p = Path(os.path.expandvars(os.path.expanduser(value)))
    p = p if p.is_absolute() else base / p
    if os.path.normpath(p) == os.path.normpath(folder):
        return True
    with contextlib.suppress(OSError):
        return p.exists() and folder.exists() and os.path.samefile(p, folder)
    return False


def _validate(text: str, real: Path, old: str | None) -> Config:
    """The new text through the daemon's loader, from a temporary file beside the real one (same base)."""
    error = _load_error(text, real)
    if isinstance(error, Config):
        return error
    if old is not None and not isinstance(_load_error(old, real), Config):
        # the file was already broken: that is the user's config to fix, not this command's input
        raise ConfigFileError(f"the config file is not valid, fix it first (it is unchanged): {error}", ExitCode.CONFIG)
    raise ConfigFileError(f"refused, the result would not be valid (the config file is unchanged): {error}",
                          ExitCode.USAGE)


def _load_error(text: str, real: Path) -> Config | str:
    import tempfile

    try:
        real.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{real.name}.", suffix=".check", dir=real.parent)
    except OSError as exc:
        raise ConfigFileError(f"cannot write in {real.parent}: {_reason(exc)}", ExitCode.CONFIG) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        try:
            return load_config(Path(tmp))
        except ConfigError as exc:
            return str(exc).replace(tmp, str(real))
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def atomic_write_text(path: Path, text: str, *, mode: int = 0o600) -> None:
    """Write a temporary file beside `path`, fsync it, move it over `path`, fsync the folder."""
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with contextlib.suppress(OSError):  # some filesystems refuse fsync on a folder; the rename is done
            os.fsync(dfd)
    finally:
        os.close(dfd)


def _mode(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o644


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def reload_daemon(state_dir: Path) -> str:
    """SIGHUP to the daemon holding `state_dir`'s lock; the sentence saying what happened."""
    import signal

    from .state import read_lock_pid

    pid = read_lock_pid(state_dir)
    if pid is None:
        return ("no hfwatchd is running on this state_dir; start it with `hfwatchd service install` "
                "(or `hfwatchd --config FILE` in the foreground)")
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return "the daemon has just stopped; the change applies when it starts again"
    except PermissionError:
        return f"cannot signal the daemon (PID {pid}, another user?): run `systemctl --user reload hfwatchd`"
    return f"told the running daemon (PID {pid}) to reload"


# --- check -------------------------------------------------------------------------------------


def check(path: Path, out: TextIO) -> int:
    """`config check`: validate with the daemon's loader and say what it would watch."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        hint = " (create it with `hfwatchd config add REPO DIR`)" if not path.exists() else ""
        raise ConfigFileError(f"bad configuration: {exc}{hint}", ExitCode.CONFIG) from None
    out.write(describe(config, path))
    return ExitCode.OK


def describe(config: Config, path: Path) -> str:
    """What a valid config watches, as the lines `config check` prints."""
    lines = [f"{path}: valid", f"state_dir  {config.state_dir}"]
    if config.log_file is not None:
        lines.append(f"log_file   {config.log_file}")
    lines.append(f"hub        {config.hub.endpoint}")
    for w in config.watches:
        where = "" if w.path.is_dir() else "  (does not exist yet: watched once it does)"
        lines.append(f"watch      {w.path}{where}")
        for rc in w.repos:
            lines.append(f"  repo     {rc.ref}" + (f"  (offline manifest {rc.manifest})" if rc.manifest else ""))
        place = w.place if w.place == "none" else f"{w.place} -> {w.place_dir or 'the huggingface_hub cache'}"
        lines.append(f"  place    {place}" + (f", {w.place_mode}" if w.place != "none" else ""))
        if w.poll:
            lines.append("  poll     true (no inotify)")
    lines.append(f"web        {config.web_listen}  (`hfwatchd open` shows the page)" if config.web_listen
                 else "web        off")
    return "\n".join(lines) + "\n"
