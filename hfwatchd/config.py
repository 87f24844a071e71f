"""TOML configuration -> frozen, validated dataclasses; every error names its key path."""

from __future__ import annotations

import fnmatch
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .exits import ExitCode
from .manifest import RepoRef, SpecError

LOG_LEVELS = ("debug", "info", "warning", "error")
PLACES = ("none", "hf-cache", "local-dir")
PLACE_MODES = ("link", "copy", "move")
HOOK_KEYS = ("on_matched", "on_mismatch", "on_incomplete")


class ConfigError(ValueError):
    """The configuration cannot be used; the message starts with the key path."""

    exit_code = ExitCode.CONFIG


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any, key: str) -> float:
    """Seconds from `"30s"`, `"10m"`, `"1h"`, `"1d"` or a number of seconds."""
    if isinstance(value, bool):
        raise ConfigError(f'{key}: expected a duration like "30s", "10m", "1h" or seconds, got {value!r}')
    try:
        if isinstance(value, (int, float)):
            seconds = float(value)
        elif isinstance(value, str) and (m := _DURATION.fullmatch(value)):
            seconds = float(m[1]) * _UNITS[m[2]]
        else:
            raise ConfigError(f'{key}: expected a duration like "30s", "10m", "1h" or seconds, got {value!r}')
    except OverflowError:
        seconds = float("inf")
    if not (0 < seconds < 10 * 365 * 86400):
        raise ConfigError(f"{key}: must be positive and under ten years, got {value!r}")
    return seconds


def default_config_path() -> Path:
    """`$XDG_CONFIG_HOME/hfwatchd/config.toml`: where every command looks without --config."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "hfwatchd" / "config.toml"


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "hfwatchd"


@dataclass(frozen=True)
class Hooks:
    """Commands (argv lists, no shell) run after a verdict."""

    on_matched: tuple[str, ...] | None = None
    on_mismatch: tuple[str, ...] | None = None
    on_incomplete: tuple[str, ...] | None = None
    timeout: float = 30.0

    def for_status(self, status: str) -> tuple[str, ...] | None:
        return {"matched": self.on_matched, "mismatch": self.on_mismatch, "incomplete": self.on_incomplete}.get(
            status
        )


@dataclass(frozen=True)
class RepoConfig:
    """One repo of a watch, optionally verified against a local manifest file instead of the Hub."""

    ref: RepoRef
    manifest: Path | None = None


@dataclass(frozen=True)
class WatchConfig:
    """One watched folder and the repos whose files land in it."""

    path: Path
    repos: tuple[RepoConfig, ...]
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    poll: bool = False
    place: str = "none"
    place_dir: Path | None = None
    place_mode: str = "link"
    hooks: Hooks = field(default_factory=Hooks)

    def expects(self, rfilename: str) -> bool:
        """Whether a manifest file counts as expected in this folder (include / exclude)."""
        if not self.include and not self.exclude:
            return True  # the common case, asked once per entry of 100,000-file manifests

        def hit(patterns: tuple[str, ...]) -> bool:
            base = rfilename.rsplit("/", 1)[-1]
            return any(fnmatch.fnmatchcase(rfilename, p) or fnmatch.fnmatchcase(base, p) for p in patterns)

        if self.include and not hit(self.include):
            return False
        return not hit(self.exclude)


@dataclass(frozen=True)
class HubConfig:
    endpoint: str
    token_file: Path | None = None
    manifest_ttl: float = 3600.0
    timeout: float = 30.0


@dataclass(frozen=True)
class Config:
    state_dir: Path
    hub: HubConfig
    watches: tuple[WatchConfig, ...]
    log_file: Path | None = None
    log_level: str = "info"
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    rescan_interval: float = 600.0
    hooks: Hooks = field(default_factory=Hooks)
    source: Path | None = None
    web_listen: str = "127.0.0.1:8711"  # [web] listen: "" off, port 0 a free port, loopback only


DEFAULT_WEB_LISTEN = "127.0.0.1:8711"


def parse_listen(value: str, key: str = "web.listen") -> tuple[str, int]:
    """(host, port) from "127.0.0.1:8711", "[::1]:8711" or "localhost:0"; a non-loopback host is refused."""
    import ipaddress

    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([A-Za-z0-9.-]+):(\d{1,5})", value)
    if m is None:
        raise ConfigError(f'{key}: expected "HOST:PORT" such as "127.0.0.1:8711" or "[::1]:8711" '
                          f'("" turns the page off), got {value!r}')
    host, port = (m[1], int(m[2])) if m[1] is not None else (m[3], int(m[4]))
    if port > 65535:
        raise ConfigError(f"{key}: port must be 0 (a free port) to 65535, got {port}")
    if host.lower() != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            # the page lists local paths and download links; like Jupyter's default it is for this machine only
            raise ConfigError(f"{key}: {host} is not a loopback address; the page is served to this machine "
                              "only (127.0.0.1, [::1] or localhost)")
    return host, port


def default_endpoint() -> str:
    endpoint = (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    if not re.match(r"^https?://[^\s/]+", endpoint):
        raise ConfigError(f"HF_ENDPOINT: expected an http(s) URL, got {endpoint!r}")
    return endpoint


class _Reader:
    """Typed access to one TOML table that remembers the key path and refuses unknown keys."""

    def __init__(self, table: Mapping[str, Any], where: str, allowed: tuple[str, ...], base: Path) -> None:
        self.table, self.where, self.base = table, where, base
        unknown = sorted(set(table) - set(allowed))
        if unknown:
            raise ConfigError(
                f"{self.key(unknown[0])}: unknown key (allowed here: {', '.join(allowed)})"
            )

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def get(self, name: str, types: type | tuple[type, ...], default: Any = None) -> Any:
        if name not in self.table:
            return default
        value = self.table[name]
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in _as_tuple(types))
        if not ok:
            names = " or ".join(t.__name__ for t in _as_tuple(types))
            raise ConfigError(f"{self.key(name)}: expected {names}, got {type(value).__name__} {value!r}")
        return value

    def path(self, name: str, default: Path | None = None) -> Path | None:
        value = self.get(name, str)
        if value is None:
            return default
        if not value.strip() or "\0" in value:
            raise ConfigError(f"{self.key(name)}: must be a non-empty path")
        p = Path(os.path.expandvars(os.path.expanduser(value)))
        return p if p.is_absolute() else (self.base / p)

    def strings(self, name: str) -> tuple[str, ...]:
        value = self.get(name, list, [])
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise ConfigError(f"{self.key(name)}[{i}]: expected a non-empty string, got {item!r}")
        return tuple(value)

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.get(name, str, default)
        if value not in choices:
            raise ConfigError(f"{self.key(name)}: must be one of {', '.join(choices)}, got {value!r}")
        return str(value)

    def argv(self, name: str) -> tuple[str, ...] | None:
        if name not in self.table:
            return None
        value = self.strings(name)
        if not value:
            raise ConfigError(f'{self.key(name)}: a hook is a non-empty list of strings, e.g. ["notify-send", "hf"]')
        return value


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _hooks(r: _Reader, inherited: Hooks | None) -> Hooks:
    base = inherited or Hooks()
    timeout = base.timeout
    if "hook_timeout" in r.table:
        timeout = parse_duration(r.table["hook_timeout"], r.key("hook_timeout"))
    values = {k: r.argv(k) for k in HOOK_KEYS}
    return Hooks(
        on_matched=values["on_matched"] if values["on_matched"] is not None else base.on_matched,
        on_mismatch=values["on_mismatch"] if values["on_mismatch"] is not None else base.on_mismatch,
        on_incomplete=values["on_incomplete"] if values["on_incomplete"] is not None else base.on_incomplete,
        timeout=timeout,
    )


def _repo(value: Any, key: str, base: Path) -> RepoConfig:
    if isinstance(value, str):
        try:
            return RepoConfig(RepoRef.parse(value))
        except SpecError as exc:
            raise ConfigError(f"{key}: {exc}") from None
    if isinstance(value, dict):
        r = _Reader(value, key, ("repo", "manifest"), base)
        spec = r.get("repo", str)
        if spec is None:
            raise ConfigError(f"{key}.repo: required (e.g. \"datasets/org/name\")")
        try:
            ref = RepoRef.parse(spec)
        except SpecError as exc:
            raise ConfigError(f"{key}.repo: {exc}") from None
        return RepoConfig(ref, r.path("manifest"))
    raise ConfigError(f"{key}: expected a repo string or a table {{ repo = ..., manifest = ... }}, got {value!r}")


def _watch(table: Any, where: str, base: Path, hooks: Hooks) -> WatchConfig:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table ([[watch]])")
    r = _Reader(
        table,
        where,
        ("path", "repos", "include", "exclude", "poll", "place", "place_dir", "place_mode", "hook_timeout", *HOOK_KEYS),
        base,
    )
    path = r.path("path")
    if path is None:
        raise ConfigError(f"{where}.path: required (the folder to watch)")
    repos_raw = r.get("repos", list)
    if not repos_raw:
        raise ConfigError(f"{where}.repos: required, a non-empty list of repos")
    repos = tuple(_repo(v, f"{where}.repos[{i}]", base) for i, v in enumerate(repos_raw))
    seen: set[str] = set()
    for i, rc in enumerate(repos):
        if rc.ref.key in seen:
            raise ConfigError(f"{where}.repos[{i}]: {rc.ref.key} is listed twice")
        seen.add(rc.ref.key)
    place = r.choice("place", PLACES, "none")
    place_dir = r.path("place_dir")
    if place == "local-dir" and place_dir is None:
        raise ConfigError(f"{where}.place_dir: required when place = \"local-dir\"")
    if place == "local-dir" and len(repos) > 1:
        raise ConfigError(f"{where}.place: \"local-dir\" holds one repo's tree; this watch lists {len(repos)} repos")
    for key in ("include", "exclude"):
        r.strings(key)
    return WatchConfig(
        path=path,
        repos=repos,
        include=r.strings("include"),
        exclude=r.strings("exclude"),
        poll=bool(r.get("poll", bool, False)),
        place=place,
        place_dir=place_dir,
        place_mode=r.choice("place_mode", PLACE_MODES, "link"),
        hooks=_hooks(r, hooks),
    )


def parse_config(data: Mapping[str, Any], *, base: Path, source: Path | None = None) -> Config:
    """Validate a parsed TOML document into a Config."""
    top = _Reader(
        data,
        "",
        ("state_dir", "log_file", "log_level", "workers", "rescan_interval", "hub", "watch", "hook_timeout",
         "web", *HOOK_KEYS),
        base,
    )
    web = _Reader(top.get("web", dict, {}), "web", ("listen",), base)
    web_listen = web.get("listen", str, DEFAULT_WEB_LISTEN)
    if web_listen:
        parse_listen(web_listen)
    hub_table = top.get("hub", dict, {})
    h = _Reader(hub_table, "hub", ("endpoint", "token_file", "manifest_ttl", "timeout"), base)
    endpoint = h.get("endpoint", str) or default_endpoint()
    if not re.match(r"^https?://[^\s/]+", endpoint):
        raise ConfigError(f"hub.endpoint: expected an http(s) URL, got {endpoint!r}")
    hub = HubConfig(
        endpoint=endpoint.rstrip("/"),
        token_file=h.path("token_file"),
        manifest_ttl=parse_duration(hub_table.get("manifest_ttl", "1h"), "hub.manifest_ttl"),
        timeout=parse_duration(hub_table.get("timeout", "30s"), "hub.timeout"),
    )
    workers = top.get("workers", int, os.cpu_count() or 1)
    if not 1 <= workers <= 256:
        raise ConfigError(f"workers: must be between 1 and 256, got {workers}")
    hooks = _hooks(top, None)
    state_dir = top.path("state_dir") or default_state_dir()
    log_file = top.path("log_file")
    log_level = top.choice("log_level", LOG_LEVELS, "info")
    rescan_interval = parse_duration(data.get("rescan_interval", "10m"), "rescan_interval")
    watches_raw = top.get("watch", list, [])
    if not watches_raw:
        raise ConfigError("watch: at least one [[watch]] table is required")
    watches = tuple(_watch(w, f"watch[{i}]", base, hooks) for i, w in enumerate(watches_raw))
    seen: dict[Path, int] = {}
    for i, w in enumerate(watches):
        key = Path(os.path.normpath(w.path))
        if key in seen:
            raise ConfigError(f"watch[{i}].path: {w.path} is already watched by watch[{seen[key]}]")
        for other, j in seen.items():
            if key.is_relative_to(other) or other.is_relative_to(key):
                # every file belongs to one watch: nested folders would judge it twice, against different repos
                raise ConfigError(f"watch[{i}].path: {w.path} is nested with watch[{j}] ({other}); "
                                  "list the inner folder's repos on one watch instead")
        seen[key] = i
    return Config(
        state_dir=state_dir,
        hub=hub,
        watches=watches,
        log_file=log_file,
        log_level=log_level,
        workers=workers,
        rescan_interval=rescan_interval,
        hooks=hooks,
        source=source,
        web_listen=web_listen,
    )


def load_config(path: Path) -> Config:
    """Read and validate a config file; every problem is a ConfigError naming the file and key."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file (start from config.example.toml)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised only on 3.10
        import tomli as tomllib
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    try:
        return parse_config(data, base=path.resolve().parent, source=path)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def single_watch_config(repo: str, folder: Path, *, state_dir: Path | None = None,
                        more: tuple[str, ...] = ()) -> Config:
    """The config `check REPO DIR` and `watch REPO DIR [REPO...]` run with: one watch, defaults elsewhere."""
    try:
        refs = [RepoRef.parse(spec) for spec in (repo, *more)]
    except SpecError as exc:
        raise ConfigError(str(exc)) from None
    return Config(
        state_dir=state_dir or default_state_dir(),
        hub=HubConfig(endpoint=default_endpoint()),
        watches=(WatchConfig(path=folder.absolute(), repos=tuple(RepoConfig(ref) for ref in refs)),),
    )
