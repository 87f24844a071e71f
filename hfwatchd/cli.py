"""Command line: argparse, sub-commands, exit codes."""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import sys
from pathlib import Path
from typing import NoReturn, TextIO

from . import __version__
from .check import CheckResult, run_check
from .config import Config, ConfigError, default_config_path, load_config, single_watch_config
from .exits import ExitCode, UsageError
from .hub import HubError
from .logs import Log, Sink, make_logger
from .manifest import RepoRef, SpecError, Status
from .manifests import make_hub
from .state import State, StateError

EXIT_OK, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_CONFIG = ExitCode.OK, ExitCode.USAGE, ExitCode.UNAVAILABLE, ExitCode.CONFIG


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="hfwatchd",
        description="Verify hand-downloaded Hugging Face files the moment they finish downloading.",
        epilog="Without a sub-command, runs the daemon in the foreground (what systemd starts).",
    )
    p.add_argument("--version", action="version", version=f"hfwatchd {__version__}")
    p.add_argument("--config", type=Path, help=f"config file (default: {default_config_path()})")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    c = sub.add_parser("check", help="one pass over every watched folder, then exit",
                       description="Judge every file once. Exit 0 all matched, 1 a mismatch, 2 missing or incomplete, "
                       "64 bad usage, 69 Hub unreachable and no cached manifest, 78 bad config.")
    c.add_argument("repo", nargs="?", help="org/name, datasets/org/name or spaces/org/name, optionally @revision")
    c.add_argument("dir", nargs="?", type=Path, help="the folder holding the downloaded files")
    c.add_argument("--config", type=Path, dest="sub_config", help="config file")
    c.add_argument("--json", action="store_true", help="one JSON record per file on stdout")
    c.add_argument("--state-dir", type=Path, help="state directory (default: $XDG_STATE_HOME/hfwatchd)")
    c.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    c.add_argument("--workers", type=int, help="hashing threads (default: config, or the number of CPUs)")

    s = sub.add_parser("status", help="summary from the state store, per watch and repo")
    s.add_argument("--config", type=Path, dest="sub_config", help="config file")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.add_argument("--missing", action="store_true", help="list the expected files not matched yet")
    s.add_argument("--urls", action="store_true", help="with --missing: pinned download URLs on stdout")
    s.add_argument("--files", action="store_true", help="every file's record as a table")
    s.add_argument("--aria2", action="store_true",
                   help="with --missing: an aria2c input file that downloads and verifies what is left")
    s.add_argument("--wget", action="store_true", help="with --missing: a URL list for wget -x -i")
    s.add_argument("--output", type=Path, metavar="FILE", help="write the list to FILE (atomically), not stdout")
    s.add_argument("--state-dir", type=Path,
                   help="state directory (default: the config's; without a config, what `watch`/`check REPO DIR` used)")

    wt = sub.add_parser("watch", help="the daemon on one folder, without a config file",
                        description="Run the daemon in the foreground on DIR for REPO (and more repos); Ctrl-C stops.")
    wt.add_argument("repo", help="org/name, datasets/org/name or spaces/org/name, optionally @revision")
    wt.add_argument("dir", type=Path, help="the download folder to watch")
    wt.add_argument("more", nargs="*", metavar="REPO", help="more repos whose files land in DIR")
    wt.add_argument("--state-dir", type=Path, help="state directory (default: $XDG_STATE_HOME/hfwatchd)")

    m = sub.add_parser("manifest", help="fetch a manifest, print or export it")
    m.add_argument("repo", help="org/name, datasets/org/name or spaces/org/name, optionally @revision")
    m.add_argument("--export", type=Path, metavar="FILE", help="write it to FILE instead of stdout")
    m.add_argument("--format", choices=("seed", "full"), default="full",
                   help='seed: {"path": "sha256"} of LFS files, as get_hash.py writes; full: every file (default)')
    m.add_argument("--config", type=Path, dest="sub_config", help="config file (for hub and state_dir)")
    m.add_argument("--refresh", action="store_true", help="ask the Hub even if a cached manifest is fresh")

    o = sub.add_parser("open", help="open the daemon's page in the browser (or print its URL)",
                       description="Open the running daemon's page ([web] listen) in the browser. "
                       "Exit 69 when no daemon serves one.")
    o.add_argument("--config", type=Path, dest="sub_config", help="config file (for state_dir)")
    o.add_argument("--state-dir", type=Path, help="state directory of a daemon started with `watch --state-dir`")
    o.add_argument("--print", action="store_true", dest="print_url",
                   help="print the page's URL, with this run's token, instead of opening it")

    from . import configfile, service  # small modules; tomlkit is imported only when a file is edited

    configfile.add_parser(sub)
    service.add_parser(sub)
    return p


def _config_path(args: argparse.Namespace) -> Path | None:
    path: Path | None = getattr(args, "sub_config", None) or args.config
    return path


def _load(args: argparse.Namespace, *, required: bool) -> Config | None:
    path = _config_path(args)
    if path is None:
        default = default_config_path()
        if not default.exists():
            if required:
                raise UsageError(f"no config file: pass --config FILE or create {default} (see config.example.toml)")
            return None
        path = default
    return load_config(path)


def _console_log(config: Config | None, *, quiet: bool) -> tuple[Log, Sink]:
    import logging

    try:
        sink = Sink(config.log_file if config else None, stream_level=logging.WARNING if quiet else logging.INFO)
    except OSError as exc:
        raise ConfigError(f"log_file: cannot open {config.log_file if config else ''}: {exc.strerror}") from None
    return make_logger(sink, config.log_level if config else "info"), sink


# --- check -------------------------------------------------------------------------------------

_COLORS = {Status.MATCHED: "32", Status.MISMATCH: "31", Status.INCOMPLETE: "33", Status.MISSING: "33",
           Status.UNKNOWN: "90"}


def _print_check(result: CheckResult, out: TextIO, as_json: bool) -> None:
    from .status import one_line  # one escaping for every human listing of remote names

    if as_json:
        for r in result.records:
            rec = {"status": str(r.status), "path": r.path, "repo": r.repo, "rfilename": r.rfilename, "size": r.size,
                   "expected_size": r.expected_size, "algorithm": r.algorithm, "expected": r.expected,
                   "actual": r.digest, "commit": r.commit, "url": r.url if r.status != Status.MATCHED else None}
            out.write(json.dumps(rec, ensure_ascii=True) + "\n")
        return
    color = out.isatty() and not os.environ.get("NO_COLOR")
    for r in result.records:
        status = f"{r.status:<10}"
        if color:
            status = f"\033[{_COLORS.get(r.status, '0')}m{status}\033[0m"
        # one line per file, whatever its name: a newline in a name is shown escaped
        where = one_line(r.path) if r.path is not None else "-"
        what = f"{r.repo}:{one_line(r.rfilename)}" if r.rfilename else ""
        if r.path is not None and r.rfilename and r.path.endswith("/" + r.rfilename):
            what = r.repo or ""
        extra = ""
        if r.status == Status.INCOMPLETE and r.size is None:
            extra = "  (still downloading: a control file is beside it)"
        elif r.status == Status.INCOMPLETE and r.expected_size is not None:
            extra = f"  ({r.size} of {r.expected_size} bytes)"
        elif r.status == Status.MISMATCH:
            extra = "  download again"
        elif r.status == Status.MISSING and r.url:
            extra = f"  {r.url}"
        out.write(f"{status} {where}  {what}{extra}\n")
    c = result.counts()
    summary = ", ".join(f"{n} {s}" for s, n in c.items())
    rate = result.hashed_bytes / result.seconds / 1e6 if result.seconds else 0.0
    out.write(f"{summary}; hashed {result.hashed_files} files, {result.hashed_bytes / 1e6:.1f} MB "
              f"in {result.seconds:.2f}s ({rate:.0f} MB/s)\n")


def _one_watch(repos: list[str], folder: Path, state_dir: Path | None) -> Config:
    for spec in repos:
        try:
            RepoRef.parse(spec)
        except SpecError as exc:
            raise UsageError(str(exc)) from None
    return single_watch_config(repos[0], folder, state_dir=state_dir, more=tuple(repos[1:]))


def cmd_check(args: argparse.Namespace) -> int:
    if args.repo is not None and args.dir is None:
        raise UsageError("check takes REPO and DIR together, e.g. `hfwatchd check org/name ./downloads`")
    if args.repo is not None and _config_path(args) is not None:
        raise UsageError("give either REPO DIR or --config, not both")
    if args.repo is not None:
        if not args.dir.is_dir():
            raise UsageError(f"{args.dir}: " + ("not a folder" if args.dir.exists() else "no such folder"))
        config = _one_watch([args.repo], args.dir, args.state_dir)
    else:
        loaded = _load(args, required=True)
        assert loaded is not None
        config = loaded
        if args.state_dir is not None:
            config = dataclasses.replace(config, state_dir=args.state_dir)
    if args.workers is not None:
        if args.workers < 1:
            raise UsageError("--workers must be at least 1")
        config = dataclasses.replace(config, workers=args.workers)
    log, sink = _console_log(config, quiet=True)
    state = State(config.state_dir, on_recovered=lambda moved, error: log.error(
        "state.recovered", path=str(moved), error=error, action="every file is judged again"))
    hub = make_hub(config, log)
    try:
        result, failed = run_check(config, state, hub, log, progress=False if args.no_progress else None)
    finally:
        hub.close()
        state.close()
        sink.close()
    if failed:
        for _repo, err in failed:
            sys.stderr.write(f"hfwatchd: no manifest, nothing judged: {err}\n")
        if all(err.permanent for _, err in failed):
            # the Hub answered: the repo, revision or access is wrong, not the network
            return EXIT_USAGE if args.repo is not None else EXIT_CONFIG
        return EXIT_UNAVAILABLE
    _print_check(result, sys.stdout, args.json)
    return result.exit_code


def cmd_watch(args: argparse.Namespace) -> int:
    if args.dir.exists() and not args.dir.is_dir():
        raise UsageError(f"{args.dir}: not a folder")
    config = _one_watch([args.repo, *args.more], args.dir, args.state_dir)
    if not args.dir.exists():
        # as `config add` does: the downloads need a place to go
        try:
            args.dir.mkdir(parents=True)
        except OSError as exc:
            raise UsageError(f"cannot create {args.dir}: {exc.strerror}") from None
        sys.stderr.write(f"hfwatchd: created {args.dir.absolute()} (downloads saved there are judged as they finish)\n")
    from .daemon import run_daemon

    return run_daemon(config)


# --- status ------------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    from . import status

    config = _load(args, required=False)
    if config is not None and args.state_dir is not None:
        config = dataclasses.replace(config, state_dir=args.state_dir)
    if config is None:
        # no config file: `watch REPO DIR` and `check REPO DIR` ran without one; their store says what they watched
        from .config import default_state_dir

        state_dir = args.state_dir or default_state_dir()
        config = status.config_from_store(state_dir)
        if config is None:
            raise UsageError(f"no config file ({default_config_path()}) and nothing judged in {state_dir}: pass "
                             "--config FILE, or --state-dir of a `watch` / `check REPO DIR` run")
    lists = [name for name in ("urls", "aria2", "wget") if getattr(args, name)]
    if len(lists) > 1:
        raise UsageError("--urls, --aria2 and --wget are different lists: choose one")
    if args.output is not None and not lists:
        raise UsageError("--output writes a list: use it with --urls, --aria2 or --wget")
    state = None
    if (config.state_dir / "state.sqlite3").exists():
        state = State(config.state_dir, readonly=True)
    hub = make_hub(config)
    try:
        watches = status.collect(config, state, hub)
    finally:
        hub.close()
        if state is not None:
            state.close()
    if lists:
        return status.write_list(lists[0], watches, args.output)
    if args.json:
        from .coverage import status_document

        doc = status_document(watches, with_missing=args.missing)
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        return EXIT_OK
    if args.files:
        status.print_files(watches, sys.stdout)
        return EXIT_OK
    status.print_summary(watches, sys.stdout, missing=args.missing, dashboard=status.dashboard(config.state_dir))
    return EXIT_OK


# --- manifest ----------------------------------------------------------------------------------


def cmd_manifest(args: argparse.Namespace) -> int:
    from .config import HubConfig, default_endpoint, default_state_dir

    try:
        ref = RepoRef.parse(args.repo)
    except SpecError as exc:
        raise UsageError(str(exc)) from None
    config = _load(args, required=False)
    if config is None:
        config = Config(state_dir=default_state_dir(), hub=HubConfig(endpoint=default_endpoint()), watches=())
    _, sink = _console_log(config, quiet=True)
    hub = make_hub(config)
    try:
        loaded = hub.load(ref, refresh=args.refresh)
    except HubError as err:
        sys.stderr.write(f"hfwatchd: {err}\n")
        return EXIT_USAGE if err.permanent else EXIT_UNAVAILABLE
    finally:
        hub.close()
        sink.close()
    if loaded.error is not None:
        sys.stderr.write(f"hfwatchd: Hub unreachable, using the cached manifest: {loaded.error}\n")
    m = loaded.manifest
    if args.format == "seed":
        # exactly what the seed get_hash.py writes: json.dump(..., ensure_ascii=False, indent=4)
        text = json.dumps(m.to_seed(), ensure_ascii=False, indent=4)
    else:
        text = json.dumps(m.to_full(), ensure_ascii=False, indent=2)
    if args.export is None:
        sys.stdout.write(text + "\n")
        return EXIT_OK
    try:
        from .hub import atomic_write

        atomic_write(args.export.absolute(), text.encode("utf-8"), make_parents=False)
    except OSError as exc:
        sys.stderr.write(f"hfwatchd: cannot write {args.export}: {exc.strerror}\n")
        return EXIT_USAGE
    sys.stderr.write(f"{m.repo} at {m.commit}: {len(m.entries)} files, written to {args.export} ({args.format})\n")
    return EXIT_OK


# --- open --------------------------------------------------------------------------------------


def cmd_open(args: argparse.Namespace) -> int:
    from .config import default_state_dir
    from .web import open_dashboard

    config = _load(args, required=False)
    state_dir = args.state_dir or (config.state_dir if config is not None else default_state_dir())
    return open_dashboard(state_dir, print_only=args.print_url, out=sys.stdout, err=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    if isinstance(sys.stdout, io.TextIOWrapper):
        # a file name that is not UTF-8 is printed as its own bytes, as ls does, never a crash
        sys.stdout.reconfigure(errors="surrogateescape")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            code = cmd_check(args)
            if argv is None:
                # a process of its own, all written and closed (state, log, output): the interpreter's
                # teardown of huggingface_hub's modules would add ~0.08 s to every check, for nothing
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
            return code
        if args.command == "status":
            return cmd_status(args)
        if args.command == "manifest":
            return cmd_manifest(args)
        if args.command == "open":
            return cmd_open(args)
        if args.command == "watch":
            return cmd_watch(args)
        if args.command == "config":
            from .configfile import run as run_config

            return run_config(args)
        if args.command == "service":
            from .service import run as run_service

            return run_service(args)
        from .daemon import run_daemon

        config = _load(args, required=True)
        assert config is not None
        return run_daemon(config)
    except (UsageError, ConfigError, StateError, HubError) as exc:
        # each carries its exit code (borg's style): 64 usage, 78 configuration, 74/75 state, 69 the Hub
        prefix = "bad configuration: " if isinstance(exc, ConfigError) else ""
        sys.stderr.write(f"hfwatchd: {prefix}{exc}\n")
        return int(exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("hfwatchd: interrupted; verdicts so far are kept\n")
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
