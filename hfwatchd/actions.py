"""What follows a recorded verdict: placement into the HF cache or a local dir, and hooks."""

from __future__ import annotations

import dataclasses
import os

from .hashing import Signature
from .hooks import HookRunner, hook_env
from .judge import Outcome
from .logs import Log
from .manifest import MATCHED
from .placement import PlaceError, place_file
from .state import State, StateError


class Actions:
    """Runs in the worker that made the verdict, after its log line; a hook never blocks it."""

    def __init__(self, state: State, log: Log, hooks: HookRunner | None = None) -> None:
        self.state = state
        self.log = log
        self.hooks = hooks

    def __call__(self, o: Outcome) -> str | None:
        """Place and run hooks; returns where the file now lives if placement moved it."""
        v = o.verdict
        w = o.job.folder.config
        moved = None
        if v.status == MATCHED and w.place != "none" and v.repo and v.rfilename:
            moved = self._place(o)
        if self.hooks is not None:
            argv = w.hooks.for_status(v.status)
            if argv:
                env = hook_env(event=f"file.{v.status}", status=v.status, path=v.path, repo=v.repo,
                               rfilename=v.rfilename, commit=v.commit, size=v.size, expected=v.expected,
                               actual=v.actual)
                self.hooks.run(argv, env=env, timeout=w.hooks.timeout, hook=f"on_{v.status}", path=v.path)
        return moved

    def _place(self, o: Outcome) -> str | None:
        v, folder = o.verdict, o.job.folder
        w = folder.config
        m = folder.manifests.get(v.repo or "")
        entry = m.entries.get(v.rfilename or "") if m is not None else None
        if m is None or entry is None:
            return None
        try:
            placed = place_file(v.path, place=w.place, place_dir=w.place_dir, mode=w.place_mode, repo=m.repo,
                                commit=m.commit, entry=entry)
        except PlaceError as exc:
            self.log.error("file.place_failed", path=v.path, target=exc.target, error=str(exc), repo=v.repo,
                           rfilename=v.rfilename)
            return None
        self.log.info("file.placed", path=v.path, target=placed.target, place=w.place, mode=placed.mode,
                      repo=v.repo, rfilename=v.rfilename)
        if placed.mode == "move" and o.signature is not None:
            # the verified bytes live on at the target: keep their verdict, so they are not "missing"
            real = os.path.realpath(placed.target)
            try:
                sig = Signature.of(os.stat(real))
                # written whole at the new path (the source's deletion event may already have dropped its row)
                self.state.record(o.job.folder.key, os.fsencode(real), sig, dataclasses.replace(v, path=real),
                                  logged=True)
                self.state.forget(os.fsencode(v.path))
            except (OSError, StateError) as exc:
                self.log.warning("state.failed", path=real, error=str(exc))
            return real
        return None
