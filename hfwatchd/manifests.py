"""The manifest service of `check` and the daemon: cache -> Hub -> stale cache, backoff, and its log lines.

`manifest.loaded` and `manifest.failed` are written here and nowhere else.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .hub import Hub, HubError, Loaded, read_token_file

if TYPE_CHECKING:
    from pathlib import Path

    from .config import Config, RepoConfig
    from .folder import WatchedFolder
    from .logs import Log
    from .manifest import Manifest
    from .state import State


def make_hub(config: Config, log: Log | None = None) -> Hub:
    """The Hub client for a configuration (token from hub.token_file, else huggingface_hub's own lookup)."""
    token = read_token_file(config.hub.token_file) if config.hub.token_file else None
    on_invalid = None
    if log is not None:
        def on_invalid(path: Path, error: str) -> None:
            log.warning("manifest.cache_invalid", path=str(path), error=error, action="fetching it again")
    return Hub(config.hub.endpoint, config.state_dir / "manifests", token=token, ttl=config.hub.manifest_ttl,
               timeout=config.hub.timeout, on_invalid=on_invalid)


class RepoTimer:
    """When to ask the Hub again for one repo, with exponential backoff after failures."""

    def __init__(self, base: float = 2.0) -> None:
        self.base = base
        self.failures = 0
        self.at = float("inf")

    def failed(self, now: float, at_least: float) -> float:
        self.failures += 1
        delay: float = min(3600.0, self.base * 2.0 ** (self.failures - 1))
        delay = max(at_least, delay * random.uniform(0.9, 1.1))  # jitter: many daemons, one mirror
        self.at = now + delay
        return delay

    def succeeded(self, now: float, ttl: float | None) -> None:
        self.failures = 0
        self.at = now + ttl if ttl is not None else float("inf")


@dataclass(frozen=True)
class Applied:
    """What using a manifest changed: the folder's previous one for the repo, if any."""

    manifest: Manifest
    previous: Manifest | None

    @property
    def changed(self) -> bool:
        p = self.previous
        return p is None or p.commit != self.manifest.commit or p.entries != self.manifest.entries


class Manifests:
    """Loads manifests into watched folders, records them in the state, logs what happened.

    `load` may block on the network (the daemon calls it from its hub thread); `apply` and
    `failed` are cheap and run where the caller owns the folders.
    """

    def __init__(self, hub: Hub, state: State | None, log: Log, *, ttl: float) -> None:
        self.hub = hub
        self.state = state
        self.log = log
        self.ttl = ttl
        self.timers: dict[tuple[str, str], RepoTimer] = {}
        self.given_up: set[tuple[str, str]] = set()  # the Hub said no (no such repo, gated): judge without it
        self.failures = 0  # manifest.failed lines written (the web page's metrics)

    def load(self, rc: RepoConfig, *, refresh: bool = False) -> Loaded | HubError:
        try:
            return self.hub.load(rc.ref, manifest_file=rc.manifest, refresh=refresh)
        except HubError as err:
            return err
        except Exception as exc:  # noqa: BLE001 - the caller (a long-lived thread) must outlive any one bad answer
            return HubError(f"{rc.ref.key}: {type(exc).__name__}: {exc}")

    def cached(self, folder: WatchedFolder, rc: RepoConfig) -> Applied | None:
        """Use the cached manifest at once, if there is one (the Hub may be down at start)."""
        if rc.manifest is not None:
            return None
        hit = self.hub.cached(rc.ref)
        if hit is None:
            return None
        return self.apply(folder, rc, Loaded(hit[0], "cache"))

    def apply(self, folder: WatchedFolder, rc: RepoConfig, result: Loaded | HubError) -> Applied | None:
        """Put a loaded manifest to use in `folder`, or note the failure; returns what changed."""
        key = (folder.key, rc.ref.key)
        timer = self.timers.setdefault(key, RepoTimer())
        now = time.monotonic()
        if isinstance(result, HubError):
            delay = timer.failed(now, result.retry_in)
            if result.permanent:
                self.given_up.add(key)
            self._failed(rc, result, delay, cached=False)
            return None
        m = result.manifest
        self.given_up.discard(key)
        previous = folder.set_manifest(m)
        if self.state is not None:
            from .state import StateError

            try:
                self.state.set_repo(folder.key, m.repo.key, m.repo.revision, m.commit, self.hub.endpoint,
                                    len(m.entries), result.source)
            except StateError as exc:  # status loses this repo's commit until the next write; judging goes on
                self.log.error("state.failed", error=str(exc))
        if result.error is not None:
            self._failed(rc, result.error, timer.failed(now, result.error.retry_in), cached=True)
        else:
            pinned = rc.manifest is not None or m.commit == rc.ref.revision
            timer.succeeded(now, None if pinned else self.ttl)
        applied = Applied(m, previous)
        if applied.changed:
            self._loaded(m, result, previous)
        return applied

    def record(self, folder: WatchedFolder) -> None:
        """Write the folder's manifests in use into the state again (a store rebuilt after damage)."""
        if self.state is None:
            return
        for m in folder.manifests.values():
            self.state.set_repo(folder.key, m.repo.key, m.repo.revision, m.commit, self.hub.endpoint,
                                len(m.entries), m.source)

    def waiting(self, folder: WatchedFolder) -> bool:
        """Whether some repo of the folder has no manifest yet and the Hub has not refused it."""
        return any(rc.ref.key not in folder.manifests and (folder.key, rc.ref.key) not in self.given_up
                   for rc in folder.config.repos)

    def due(self, now: float) -> list[tuple[str, str]]:
        """The (folder, repo) pairs whose timer has run out; each is reset until it is applied again."""
        out = []
        for key, timer in self.timers.items():
            if timer.at <= now:
                timer.at = float("inf")
                out.append(key)
        return out

    def next_due(self) -> float:
        return min((t.at for t in self.timers.values()), default=float("inf"))

    def forget(self, folder_key: str) -> None:
        for key in [k for k in self.timers if k[0] == folder_key]:
            del self.timers[key]
        self.given_up = {k for k in self.given_up if k[0] != folder_key}

    def _failed(self, rc: RepoConfig, err: HubError, delay: float, *, cached: bool) -> None:
        self.failures += 1
        log = self.log.warning if cached else self.log.error
        log("manifest.failed", repo=str(rc.ref), error=str(err), retry_in=round(delay, 1), cached=cached)

    def _loaded(self, m: Manifest, result: Loaded, previous: Manifest | None) -> None:
        fields: dict[str, Any] = {"repo": str(m.repo), "commit": m.commit or None, "files": len(m.entries),
                                  "source": result.source}
        fields["unsafe"] = m.unsafe  # manifest paths never placed (absolute, `..`, NUL, backslash)
        if previous is not None:
            fields["previous_commit"] = previous.commit or None
        if result.error is not None:
            fields["stale"] = True
        self.log.info("manifest.loaded", **fields)
