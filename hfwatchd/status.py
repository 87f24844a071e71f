"""Answers from the state store, without hashing and without the Hub: counts, missing files, their URLs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from .config import Config
from .hub import Hub, HubError
from .manifest import INCOMPLETE, MATCHED, MISMATCH, MISSING, PENDING, STATUSES, UNKNOWN, Manifest, RepoRef


@dataclass
class RepoStatus:
    repo: str
    revision: str
    commit: str | None
    endpoint: str
    source: str | None
    expected: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    todo: list[dict[str, Any]] = field(default_factory=list)  # expected files not matched yet
    note: str | None = None


@dataclass
class WatchStatus:
    path: str
    repos: list[RepoStatus] = field(default_factory=list)
    unknown: int = 0
    pending: int = 0


def _manifest_for(hub: Hub, config_repo: Any, commit: str | None) -> Manifest | None:
    if config_repo.manifest is not None:
        try:
            return hub.load(config_repo.ref, manifest_file=config_repo.manifest).manifest
        except HubError:
            return None
    m = hub.manifest_at(config_repo.ref, commit) if commit else None
    if m is None:
        # nothing judged yet (no check, no daemon run): every expected file is still to download,
        # so fetch the manifest (cache or Hub) rather than answer "nothing to do"
        try:
            m = hub.load(config_repo.ref).manifest
        except HubError:
            return None
    return m


def collect_status(config: Config, state: Any, hub: Hub) -> list[WatchStatus]:
    """Per watch and repo: counts per status, and the expected files still to download."""
    out: list[WatchStatus] = []
    for w in config.watches:
        key = os.path.abspath(w.path)
        ws = WatchStatus(key)
        rows = state.files(key) if state is not None else []
        repo_rows = {r.repo: r for r in state.repos(key)} if state is not None else {}
        by_repo: dict[str, dict[str, list[Any]]] = {}
        for row in rows:
            if row.repo is None:
                if row.status == UNKNOWN:
                    ws.unknown += 1
                elif row.status == PENDING:
                    ws.pending += 1
                continue
            by_repo.setdefault(row.repo, {}).setdefault(row.rfilename or "", []).append(row)
        for rc in w.repos:
            rr = repo_rows.get(rc.ref.key)
            rs = RepoStatus(str(rc.ref), rc.ref.revision, rr.commit if rr else None,  # commit set below if None
                            (rr.endpoint if rr and rr.endpoint else config.hub.endpoint), rr.source if rr else None)
            files = by_repo.get(rc.ref.key, {})
            for entries in files.values():
                for row in entries:
                    rs.counts[row.status] = rs.counts.get(row.status, 0) + 1
            m = _manifest_for(hub, rc, rs.commit)
            if m is None:
                rs.note = "no manifest: the Hub is unreachable and nothing is cached; run `hfwatchd check` once"
                ws.repos.append(rs)
                continue
            rs.commit = rs.commit or m.commit or None
            for e in m.entries.values():
                if not w.expects(e.rfilename):
                    continue
                rs.expected += 1
                statuses = {r.status for r in files.get(e.rfilename, [])}
                if MATCHED in statuses:
                    continue
                status = next((s for s in (MISMATCH, INCOMPLETE, PENDING) if s in statuses), MISSING)
                if status == MISSING:
                    rs.counts[MISSING] += 1
                url = None
                if m.commit and e.safe:
                    url = RepoRef(rc.ref.repo_type, rc.ref.repo_id, m.commit).resolve_url(rs.endpoint, m.commit,
                                                                                        e.rfilename)
                rs.todo.append({"rfilename": e.rfilename, "status": status, "size": e.size, "url": url})
            ws.repos.append(rs)
        out.append(ws)
    return out

