"""A fake Hugging Face Hub: a real local HTTP server that speaks the Hub's wire format.

The machine the tests run on cannot reach huggingface.co, so this module serves the endpoints
`huggingface_hub` 2.x actually calls, with the payloads and headers its client code reads:

* ``GET /api/{models,datasets,spaces}/{repo_id}[/revision/{rev}]``: repo info (``id``, ``sha``,
  ``siblings``, ``private``, ``gated``, ``lastModified``...); ``?blobs=true`` adds ``size``, ``blobId``
  and ``lfs`` to every sibling (``files_metadata=True``), ``?expand=...`` filters the keys.
* ``GET /api/{type}s/{repo_id}/tree/{rev}[/{path}]?recursive=&expand=``: ``list_repo_tree`` entries,
  ``page_size`` per page, followed through a GitHub-style ``Link: <...&cursor=...>; rel="next"`` header.
* ``POST /api/{type}s/{repo_id}/paths-info/{rev}`` and ``GET /api/{type}s/{repo_id}/refs``.
* ``GET``/``HEAD /[datasets/|spaces/]{repo_id}/resolve/{rev}/{path}``: a regular file is answered with its
  bytes, ``ETag`` (git blob SHA-1), ``X-Repo-Commit``, ``Content-Disposition`` and byte-range support;
  an LFS file is answered, like the Hub does, with a 302 to a signed CDN-like URL
  (``/cdn/{sha256}?...``, on this same server) carrying ``X-Linked-Etag`` (the sha256),
  ``X-Linked-Size`` and ``X-Repo-Commit``. Range requests get 206 / 416 as from a real server.
* Errors carry the Hub's ``X-Error-Code`` / ``X-Error-Message`` headers, so ``hf_raise_for_status``
  raises ``RepositoryNotFoundError``, ``RevisionNotFoundError``, ``GatedRepoError``,
  ``RemoteEntryNotFoundError`` exactly as against huggingface.co.

Like the Hub: a private repo is invisible (401 ``RepoNotFound``) without a token; a gated repo's
metadata (info, tree) is public and only its file downloads need a token (401 ``GatedRepo``), unless
``FakeHub.gated_api`` is set. A token is any ``Authorization: Bearer hf_...``; another Authorization
value is refused with 401 "Invalid credentials in Authorization header" as by the Hub.

Run ``python tests/fakehub.py --port 8765 --repo org/name`` to serve a demo repo by hand.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import email.utils
import hashlib
import hmac
import http
import json
import mimetypes
import secrets
import socket
import socketserver
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import pytest

__all__ = ["LFS_SUFFIXES", "FakeFile", "FakeHub", "default_lfs_rule", "fake_hub", "git_blob_sha1", "main"]

LFS_SUFFIXES = (".safetensors", ".bin", ".parquet", ".gguf", ".pt", ".h5", ".onnx", ".msgpack")
LFS_MIN_SIZE = 1024
REPO_TYPES = ("model", "dataset", "space")
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_API_SEGMENT = {"models": "model", "datasets": "dataset", "spaces": "space"}
_EXPAND_PAGE_SIZE = 50  # the Hub pages `expand=true` tree listings by 50 entries
_EPOCH = 1_700_000_000  # commit dates are deterministic: this epoch plus one minute per commit
_CDN_TTL = 3600
_JSON = "application/json; charset=utf-8"


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob holding `data`: sha1(b"blob <size>\\0" + data)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def default_lfs_rule(path: str, content: bytes) -> bool:
    """The Hub's usual `.gitattributes`: big files and weight / data formats are stored with LFS."""
    return len(content) >= LFS_MIN_SIZE or path.lower().endswith(LFS_SUFFIXES)


def _iso(ts: float) -> str:
    """A timestamp in the Hub's JSON date format, e.g. '2023-11-14T22:13:20.000Z'."""
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass
class FakeFile:
    """One file of a commit, with the identifiers the Hub advertises for it."""

    path: str
    content: bytes
    lfs: bool

    @property
    def size(self) -> int:
        """Size of the real content (for LFS files too, as the Hub reports it)."""
        return len(self.content)

    @cached_property
    def sha256(self) -> str:
        """sha256 of the content: the LFS oid, and the ETag of an LFS file."""
        return hashlib.sha256(self.content).hexdigest()

    @cached_property
    def git_sha1(self) -> str:
        """git blob SHA-1 of the content itself: the ETag and `oid` of a regular file."""
        return git_blob_sha1(self.content)

    @property
    def pointer(self) -> bytes:
        """The git-lfs pointer text stored in git in place of an LFS file."""
        return b"version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n" % (
            self.sha256.encode(),
            self.size,
        )

    @cached_property
    def oid(self) -> str:
        """The tree entry `oid` / sibling `blobId`: git blob SHA-1 of what git stores (pointer for LFS)."""
        return git_blob_sha1(self.pointer) if self.lfs else self.git_sha1

    @property
    def etag(self) -> str:
        """The unquoted ETag the Hub sends for this file."""
        return self.sha256 if self.lfs else self.git_sha1

    def lfs_info(self) -> dict[str, Any]:
        """The `lfs` object of a tree entry (`oid`) — siblings use the key `sha256` instead."""
        return {"oid": self.sha256, "size": self.size, "pointerSize": len(self.pointer)}


@dataclass
class _Commit:
    sha: str
    files: dict[str, FakeFile]
    timestamp: float
    title: str
    parent: str | None
    _listings: dict[tuple[str, bool], list[tuple[str, str]]] = field(default_factory=dict, repr=False)

    @cached_property
    def tree_oids(self) -> dict[str, str]:
        """git tree SHA-1 of every directory of the commit ('' is the root)."""
        children: dict[str, dict[str, tuple[bool, str]]] = {"": {}}  # dir -> name -> (is_dir, path)
        for path in self.files:
            parts = path.split("/")
            for depth in range(len(parts)):
                parent = "/".join(parts[:depth])
                child = "/".join(parts[: depth + 1])
                children.setdefault(parent, {})[parts[depth]] = (depth < len(parts) - 1, child)
                if depth < len(parts) - 1:
                    children.setdefault(child, {})
        oids: dict[str, str] = {}

        def tree_oid(directory: str) -> str:
            entries = []
            for name, (is_dir, path) in children[directory].items():
                if is_dir:
                    entries.append((name + "/", b"40000 %s\0" % name.encode() + bytes.fromhex(tree_oid(path))))
                else:
                    entries.append((name, b"100644 %s\0" % name.encode() + bytes.fromhex(self.files[path].oid)))
            body = b"".join(raw for _, raw in sorted(entries, key=lambda e: e[0].encode()))
            oids[directory] = hashlib.sha1(b"tree %d\0" % len(body) + body).hexdigest()
            return oids[directory]

        tree_oid("")
        return oids

    @cached_property
    def paths(self) -> list[str]:
        """Every directory and file path of the commit, sorted (a directory comes before its content)."""
        return sorted(path for path in [*self.tree_oids, *self.files] if path)

    def listing(self, base: str, recursive: bool) -> list[tuple[str, str]] | None:
        """(kind, path) entries under `base`; None if `base` is not a directory of the commit."""
        if base and base not in self.tree_oids:
            return None
        key = (base, recursive)
        if key not in self._listings:
            prefix = base + "/" if base else ""
            self._listings[key] = [
                ("directory" if path in self.tree_oids else "file", path)
                for path in self.paths
                if path.startswith(prefix) and (recursive or "/" not in path[len(prefix) :])
            ]
        return self._listings[key]


@dataclass
class _Repo:
    repo_type: str
    repo_id: str
    private: bool
    gated: bool
    created: float
    commits: dict[str, _Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> _Commit | None:
        sha = self.branches.get(revision, revision)
        return self.commits.get(sha)


@dataclass
class _Rule:
    kind: str  # fail | hang | garbage
    path_contains: str
    times: int
    status: int = 200
    retry_after: int | None = None
    error_code: str | None = None
    seconds: float = 0.0


@dataclass
class _Reply:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    throttled: bool = False  # file content: streamed at `FakeHub.rate` when set


class _HubError(Exception):
    """An answer with the Hub's error headers; raised inside request handling."""

    def __init__(self, status: int, code: str | None, message: str, extra: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra or []

    def reply(self) -> _Reply:
        header_safe = self.message.encode("ascii", "backslashreplace").decode("ascii")
        headers = [("Content-Type", _JSON), ("X-Error-Message", header_safe), *self.extra]
        if self.code is not None:
            headers.append(("X-Error-Code", self.code))
        return _Reply(self.status, headers, json.dumps({"error": self.message}).encode())


class _Unsatisfiable(Exception):
    """A byte range that starts past the end of the file (answered 416)."""


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single `bytes=` range; None when the header is to be ignored (RFC 9110)."""
    unit, _, spec = value.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None  # other units and multi-range requests: answer the whole file
    first_s, dash, last_s = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if not first_s:  # suffix range: the last N bytes
            n = int(last_s)
            if n <= 0:
                raise _Unsatisfiable
            return max(0, size - n), size - 1
        first = int(first_s)
        last = int(last_s) if last_s else None
    except ValueError:
        return None
    if last is not None and last < first:
        return None  # syntactically invalid: ignored
    if first >= size:
        raise _Unsatisfiable
    return first, size - 1 if last is None else min(last, size - 1)


class _Handler(BaseHTTPRequestHandler):
    """Quiet HTTP/1.1 keep-alive handler; all the Hub logic lives in FakeHub."""

    protocol_version = "HTTP/1.1"
    server_version = "fakehub/1.0"
    sys_version = ""
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Never write access logs to stderr."""

    def version_string(self) -> str:
        return self.server_version

    def handle(self) -> None:
        try:
            super().handle()
        except OSError:  # client went away (BrokenPipe, ConnectionReset) or stop() shut the socket
            self.close_connection = True

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()

    def _any(self) -> None:
        self.server.hub._serve(self)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _any


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its connections, so stop() can close them and join their threads."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], hub: FakeHub) -> None:
        self.hub = hub
        self.connections: dict[threading.Thread, socket.socket] = {}
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can hang offline.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"fakehub-conn-{client_address[1]}",
            daemon=True,
        )
        with self.connections_lock:
            self.connections[thread] = request
        thread.start()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.connections_lock:
                self.connections.pop(threading.current_thread(), None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.hub.errors.append(traceback.format_exc())


class FakeHub:
    """An in-memory Hub served over HTTP on 127.0.0.1; see the module docstring for the endpoints."""

    rate: int | None = None
    """When set, file bodies (/resolve and /cdn) are streamed at about this many bytes per second."""
    cdn_host: str | None = None
    """Host name used in LFS redirects. None: the server's own address (same origin, the client follows
    the redirect for metadata). "localhost": another origin, like the Hub's CDN: huggingface_hub then
    reads the metadata from the 302 itself and drops the Authorization header for the download."""
    gated_api: bool = False
    """When True, gated repos also refuse their API metadata (info, tree) without a token."""

    def __init__(self, page_size: int = 1000, *, port: int = 0) -> None:
        self.page_size = page_size
        self.port = port
        self.url = ""
        self.requests: list[tuple[str, str]] = []
        self.authorized: list[bool] = []  # parallel to `requests`: whether an Authorization header was sent
        self.errors: list[str] = []  # tracebacks of unexpected exceptions in the server: should stay empty
        self._lock = threading.RLock()
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._corrupt: dict[tuple[str, str, str], bytes] = {}
        self._rules: list[_Rule] = []
        self._secret = secrets.token_bytes(16)
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeHub:
        """Bind 127.0.0.1 (ephemeral port unless `port` was given) and serve in a background thread."""
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", self.port), self)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fakehub-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close every open connection and join every server thread."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._stopping.set()  # wakes hang() and throttled transfers
        server.shutdown()
        thread.join()
        with server.connections_lock:
            connections = list(server.connections.items())
        for _, sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + 5
        for conn_thread, _ in connections:
            conn_thread.join(max(0.0, deadline - time.monotonic()))
        server.server_close()
        self._server = self._thread = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ content

    def add_repo(
        self,
        repo: str,
        files: dict[str, bytes],
        *,
        repo_type: str = "model",
        revision: str = "main",
        lfs: Callable[[str, bytes], bool] | None = None,
        gated: bool = False,
        private: bool = False,
    ) -> str:
        """Create or update `repo` with a new commit holding exactly `files`; move `revision` to it.

        Returns the new commit sha. Older commits stay resolvable by sha. `gated` / `private` are
        (re)set on every call.
        """
        if repo_type not in REPO_TYPES:
            raise ValueError(f"repo_type must be one of {REPO_TYPES}, not {repo_type!r}")
        rule = lfs or default_lfs_rule
        fake_files = {path: FakeFile(path, bytes(data), rule(path, data)) for path, data in files.items()}
        with self._lock:
            key = (repo_type, repo)
            record = self._repos.get(key)
            if record is None:
                record = _Repo(repo_type, repo, private, gated, created=_EPOCH)
                self._repos[key] = record
            record.private, record.gated = private, gated
            parent = record.branches.get(revision)
            timestamp = _EPOCH + 60 * (len(record.commits) + 1)
            seed = f"{repo_type}\0{repo}\0{revision}\0{parent}\0{len(record.commits)}"
            digest = hashlib.sha1(seed.encode())
            for path in sorted(fake_files):
                digest.update(b"\0%s\0%s" % (path.encode(), fake_files[path].oid.encode()))
            sha = digest.hexdigest()
            title = "initial commit" if parent is None else f"Update {revision}"
            record.commits[sha] = _Commit(sha, fake_files, timestamp, title, parent)
            record.branches[revision] = sha
            return sha

    def file(self, repo: str, path: str, *, repo_type: str = "model", revision: str = "main") -> FakeFile:
        """The FakeFile `path` of `repo` at `revision` (branch or commit sha); KeyError if absent."""
        with self._lock:
            record = self._repos[(repo_type, repo)]
            commit = record.resolve(revision)
            if commit is None:
                raise KeyError(f"{repo}@{revision}")
            return commit.files[path]

    def corrupt(self, repo: str, path: str, data: bytes, *, repo_type: str = "model") -> None:
        """From now on downloads of `path` (any revision) serve `data`; metadata still shows the original."""
        with self._lock:
            self._corrupt[(repo_type, repo, path)] = bytes(data)

    def fail(
        self,
        status: int,
        *,
        times: int = 1,
        retry_after: int | None = None,
        error_code: str | None = None,
        path_contains: str = "/api/",
    ) -> None:
        """The next `times` requests whose path contains `path_contains` are answered `status`."""
        self._add_rule(
            _Rule("fail", path_contains, times, status=status, retry_after=retry_after, error_code=error_code)
        )

    def hang(self, seconds: float, *, times: int = 1, path_contains: str = "/api/") -> None:
        """The next `times` matching requests stall `seconds` before being answered (stop() wakes them)."""
        self._add_rule(_Rule("hang", path_contains, times, seconds=seconds))

    def garbage(self, *, times: int = 1, path_contains: str = "/api/") -> None:
        """The next `times` matching requests are answered 200 with a body that is not valid JSON."""
        self._add_rule(_Rule("garbage", path_contains, times))

    def resolve_url(self, repo: str, path: str, *, repo_type: str = "model", revision: str = "main") -> str:
        """The /resolve URL of a file, written the way `hf_hub_url` writes it."""
        return f"{self.url}/{_URL_PREFIX[repo_type]}{repo}/resolve/{quote(revision, safe='')}/{quote(path)}"

    def _add_rule(self, rule: _Rule) -> None:
        if rule.times > 0:
            with self._lock:
                self._rules.append(rule)

    def _take_rule(self, target: str) -> _Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.path_contains in target:
                    rule.times -= 1
                    if rule.times <= 0:
                        self._rules.remove(rule)
                    return rule
        return None

    # ------------------------------------------------------------------ HTTP

    def _serve(self, handler: _Handler) -> None:
        """Answer one request on `handler` (called from the connection's thread)."""
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length > 0 else b""
        if handler.headers.get("Transfer-Encoding"):
            handler.close_connection = True  # a chunked request body is not read: do not reuse the connection
        split = urlsplit(handler.path)
        with self._lock:
            self.requests.append((handler.command, split.path))
            self.authorized.append(handler.headers.get("Authorization") is not None)
        try:
            reply = self._answer(handler, split.path, split.query, body)
        except _HubError as err:
            reply = err.reply()
        except Exception:  # a bug of the fake reaches the test as a 500 instead of killing the thread
            self.errors.append(traceback.format_exc())
            reply = _Reply(500, [("Content-Type", "text/plain")], b"fakehub internal error")
        self._send(handler, reply)

    def _send(self, handler: _Handler, reply: _Reply) -> None:
        handler.send_response(reply.status)
        for name, value in reply.headers:
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(reply.body)))
        handler.end_headers()
        if handler.command == "HEAD" or not reply.body:
            return
        rate = self.rate
        if not reply.throttled or not rate:
            handler.wfile.write(reply.body)
            return
        chunk = max(1, rate // 20)
        started = time.monotonic()
        for offset in range(0, len(reply.body), chunk):
            handler.wfile.write(reply.body[offset : offset + chunk])
            handler.wfile.flush()
            delay = started + (offset + chunk) / rate - time.monotonic()
            if delay > 0 and self._stopping.wait(delay):
                handler.close_connection = True  # stopping: abandon the transfer
                return

    def _answer(self, handler: _Handler, path: str, query: str, body: bytes) -> _Reply:
        rule = self._take_rule(handler.path)
        if rule is not None:
            if rule.kind == "hang":
                self._stopping.wait(rule.seconds)
            elif rule.kind == "garbage":
                return _Reply(200, [("Content-Type", _JSON)], b'{"id": "truncated", "siblings": [<html>')
            else:
                return self._failure(rule)
        segments = [unquote(s) for s in path.split("/")[1:]]
        params = parse_qs(query, keep_blank_values=True)
        if segments[:1] == ["cdn"]:
            return self._cdn(handler, segments[1:], params)
        auth = handler.headers.get("Authorization")
        if auth is not None and not auth.startswith("Bearer hf_"):
            raise _HubError(401, None, "Invalid credentials in Authorization header")
        authorized = auth is not None
        if len(segments) >= 2 and segments[0] == "api" and segments[1] in _API_SEGMENT:
            return self._api(handler, _API_SEGMENT[segments[1]], segments[2:], params, body, authorized)
        if "resolve" in segments[1:4]:
            return self._resolve(handler, segments, authorized)
        return _Reply(404, [("Content-Type", "text/plain")], b"Not Found")

    def _failure(self, rule: _Rule) -> _Reply:
        try:
            message = http.HTTPStatus(rule.status).phrase
        except ValueError:
            message = f"HTTP {rule.status}"
        headers = [("Content-Type", _JSON), ("X-Error-Message", message)]
        if rule.error_code is not None:
            headers.append(("X-Error-Code", rule.error_code))
        if rule.retry_after is not None:
            headers.append(("Retry-After", str(rule.retry_after)))
            if rule.status == 429:  # what the Hub sends with a rate limit, parsed by huggingface_hub
                headers.append(("RateLimit", f'"api";r=0;t={rule.retry_after}'))
                headers.append(("RateLimit-Policy", '"fixed window";"api";q=500;w=300'))
        return _Reply(rule.status, headers, json.dumps({"error": message}).encode())

    # ------------------------------------------------------------------ repos and revisions

    def _repo(self, repo_type: str, repo_id: str, authorized: bool, *, download: bool) -> _Repo:
        """The repo, or the Hub's error for a missing / private / gated one."""
        with self._lock:
            record = self._repos.get((repo_type, repo_id))
        if record is None or (record.private and not authorized):
            # The Hub answers 401 to anonymous requests and 404 to authenticated ones.
            raise _HubError(404 if authorized else 401, "RepoNotFound", "Repository not found")
        if record.gated and not authorized and (download or self.gated_api):
            raise _HubError(
                401,
                "GatedRepo",
                f"Access to {repo_type} {repo_id} is restricted. You must have access to it and be "
                "authenticated to access it. Please log in.",
            )
        return record

    def _commit(self, record: _Repo, revision: str) -> _Commit:
        with self._lock:
            commit = record.resolve(revision)
        if commit is None:
            raise _HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return commit

    def _split_repo_id(self, repo_type: str, rest: list[str]) -> tuple[str, list[str]]:
        """Split `org/name/...` or `name/...` (legacy ids without namespace) into (repo_id, remainder)."""
        with self._lock:
            if len(rest) >= 2 and (repo_type, f"{rest[0]}/{rest[1]}") in self._repos:
                return f"{rest[0]}/{rest[1]}", rest[2:]
            if rest and (repo_type, rest[0]) in self._repos:
                return rest[0], rest[1:]
        if len(rest) >= 2 and rest[1] not in ("revision", "tree", "paths-info", "refs", "resolve"):
            return f"{rest[0]}/{rest[1]}", rest[2:]
        return (rest[0] if rest else ""), rest[1:]

    # ------------------------------------------------------------------ /api

    def _api(
        self,
        handler: _Handler,
        repo_type: str,
        rest: list[str],
        params: dict[str, list[str]],
        body: bytes,
        authorized: bool,
    ) -> _Reply:
        repo_id, rest = self._split_repo_id(repo_type, rest)
        method = handler.command
        if method in ("GET", "HEAD") and (not rest or (len(rest) == 2 and rest[0] == "revision")):
            record = self._repo(repo_type, repo_id, authorized, download=False)
            commit = self._commit(record, rest[1] if rest else "main")
            return self._json(self._info(record, commit, params))
        if method in ("GET", "HEAD") and len(rest) >= 2 and rest[0] == "tree":
            record = self._repo(repo_type, repo_id, authorized, download=False)
            commit = self._commit(record, rest[1])
            return self._tree(handler, record, commit, "/".join(rest[2:]).strip("/"), params)
        if method == "POST" and len(rest) == 2 and rest[0] == "paths-info":
            record = self._repo(repo_type, repo_id, authorized, download=False)
            commit = self._commit(record, rest[1])
            form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
            expand = form.get("expand", ["False"])[-1].lower() == "true"
            entries = []
            for asked in form.get("paths", []):
                wanted = asked.strip("/")
                if wanted in commit.files:
                    entries.append(self._entry(commit, "file", wanted, expand))
                elif wanted in commit.tree_oids:
                    entries.append(self._entry(commit, "directory", wanted, expand))
            return self._json(entries)
        if method in ("GET", "HEAD") and rest == ["refs"]:
            record = self._repo(repo_type, repo_id, authorized, download=False)
            with self._lock:
                branches = [
                    {"name": name, "ref": f"refs/heads/{name}", "targetCommit": sha}
                    for name, sha in sorted(record.branches.items())
                ]
            return self._json({"branches": branches, "converts": [], "tags": [], "pullRequests": []})
        return _Reply(404, [("Content-Type", "text/plain")], b"Not Found")

    def _info(self, record: _Repo, commit: _Commit, params: dict[str, list[str]]) -> dict[str, Any]:
        blobs = params.get("blobs", ["false"])[-1].lower() in ("true", "1")
        siblings: list[dict[str, Any]] = []
        for path in sorted(commit.files):
            f = commit.files[path]
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling.update({"blobId": f.oid, "size": f.size})
                if f.lfs:
                    sibling["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": len(f.pointer)}
            siblings.append(sibling)
        author = record.repo_id.split("/")[0] if "/" in record.repo_id else None
        info: dict[str, Any] = {
            "_id": hashlib.sha1(f"{record.repo_type}/{record.repo_id}".encode()).hexdigest()[:24],
            "id": record.repo_id,
            "author": author,
            "sha": commit.sha,
            "lastModified": _iso(commit.timestamp),
            "createdAt": _iso(record.created),
            "private": record.private,
            "gated": "manual" if record.gated else False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(f.size for f in commit.files.values()),
        }
        if record.repo_type == "model":
            info["modelId"] = record.repo_id
        elif record.repo_type == "space":
            info.update({"sdk": "static", "subdomain": record.repo_id.replace("/", "-").lower()})
        if params.get("securityStatus", ["false"])[-1].lower() in ("true", "1"):
            info["securityRepoStatus"] = {"scansDone": True, "filesWithIssues": []}
        expand = params.get("expand") or params.get("expand[]")
        if expand:
            info = {key: value for key, value in info.items() if key in ("_id", "id", *expand)}
        return info

    def _entry(self, commit: _Commit, kind: str, path: str, expand: bool) -> dict[str, Any]:
        entry: dict[str, Any]
        if kind == "directory":
            entry = {"type": "directory", "oid": commit.tree_oids[path], "size": 0, "path": path}
        else:
            f = commit.files[path]
            entry = {"type": "file", "oid": f.oid, "size": f.size, "path": path}
            if f.lfs:
                entry["lfs"] = f.lfs_info()
        if expand:
            entry["lastCommit"] = {"id": commit.sha, "title": commit.title, "date": _iso(commit.timestamp)}
            if kind == "file":
                entry["securityFileStatus"] = {
                    "status": "safe",
                    "avScan": {"virusFound": False, "virusNames": None},
                    "pickleImportScan": None,
                }
        return entry

    def _tree(
        self, handler: _Handler, record: _Repo, commit: _Commit, base: str, params: dict[str, list[str]]
    ) -> _Reply:
        recursive = params.get("recursive", ["false"])[-1].lower() in ("true", "1")
        expand = params.get("expand", ["false"])[-1].lower() in ("true", "1")
        listing = commit.listing(base, recursive)
        if listing is None:
            raise _HubError(
                404,
                "EntryNotFound",
                f"{base} does not exist on {commit.sha}",
                [("X-Repo-Commit", commit.sha)],
            )
        page_size = max(1, min(self.page_size, _EXPAND_PAGE_SIZE) if expand else self.page_size)
        start = 0
        if "cursor" in params:
            try:
                start = int(json.loads(base64.urlsafe_b64decode(params["cursor"][-1]))["offset"])
            except (ValueError, KeyError, TypeError, binascii.Error):
                raise _HubError(400, None, "Invalid cursor") from None
        page = listing[start : start + page_size]
        headers = [("Content-Type", _JSON)]
        if start + page_size < len(listing):
            cursor = base64.urlsafe_b64encode(json.dumps({"offset": start + page_size}).encode()).decode()
            query = urlencode({"recursive": str(recursive).lower(), "expand": str(expand).lower(), "cursor": cursor})
            host = handler.headers.get("Host") or f"127.0.0.1:{self.port}"
            next_url = f"http://{host}{urlsplit(handler.path).path}?{query}"
            headers.append(("Link", f'<{next_url}>; rel="next"'))
        entries = [self._entry(commit, kind, path, expand) for kind, path in page]
        return _Reply(200, headers, json.dumps(entries).encode())

    @staticmethod
    def _json(payload: Any) -> _Reply:
        return _Reply(200, [("Content-Type", _JSON)], json.dumps(payload).encode())

    # ------------------------------------------------------------------ /resolve and /cdn

    def _resolve(self, handler: _Handler, segments: list[str], authorized: bool) -> _Reply:
        repo_type = "model"
        if segments[0] in ("datasets", "spaces"):
            repo_type, segments = _API_SEGMENT[segments[0]], segments[1:]
        if len(segments) >= 4 and segments[2] == "resolve":
            repo_id, revision, parts = f"{segments[0]}/{segments[1]}", segments[3], segments[4:]
        elif len(segments) >= 3 and segments[1] == "resolve":
            repo_id, revision, parts = segments[0], segments[2], segments[3:]
        else:
            return _Reply(404, [("Content-Type", "text/plain")], b"Not Found")
        path = "/".join(parts)
        record = self._repo(repo_type, repo_id, authorized, download=True)
        commit = self._commit(record, revision)
        f = commit.files.get(path)
        if f is None:
            raise _HubError(404, "EntryNotFound", "Entry not found", [("X-Repo-Commit", commit.sha)])
        if f.lfs:
            location = self._cdn_url(handler, record, commit, f)
            headers = [
                ("Location", location),
                ("Content-Type", "text/plain; charset=utf-8"),
                ("ETag", f'"{f.sha256}"'),
                ("X-Linked-Etag", f'"{f.sha256}"'),
                ("X-Linked-Size", str(f.size)),
                ("X-Repo-Commit", commit.sha),
                ("Accept-Ranges", "bytes"),
            ]
            return _Reply(302, headers, f"Found. Redirecting to {location}".encode())
        return self._content(handler, record, commit, f, [])

    def _signature(self, sha256: str, query: dict[str, str]) -> str:
        message = "\0".join([sha256, query["repo"], query["path"], query["commit"], query["Expires"]])
        return hmac.new(self._secret, message.encode(), hashlib.sha256).hexdigest()

    def _cdn_url(self, handler: _Handler, record: _Repo, commit: _Commit, f: FakeFile) -> str:
        query = {
            "repo": f"{record.repo_type}s/{record.repo_id}",
            "path": f.path,
            "commit": commit.sha,
            "Expires": str(int(time.time()) + _CDN_TTL),
        }
        query["Signature"] = self._signature(f.sha256, query)
        if self.cdn_host is not None:
            host = f"{self.cdn_host}:{self.port}"
        else:
            host = handler.headers.get("Host") or f"127.0.0.1:{self.port}"
        return f"http://{host}/cdn/{f.sha256}?{urlencode(query)}"

    def _cdn(self, handler: _Handler, rest: list[str], params: dict[str, list[str]]) -> _Reply:
        query = {key: values[-1] for key, values in params.items()}
        denied = _Reply(403, [("Content-Type", "text/plain")], b"AccessDenied")
        needed = ("repo", "path", "commit", "Expires", "Signature")
        if len(rest) != 1 or any(key not in query for key in needed):
            return denied
        if not hmac.compare_digest(query["Signature"], self._signature(rest[0], query)):
            return denied
        if not query["Expires"].isdigit() or int(query["Expires"]) < time.time():
            return denied
        plural, _, repo_id = query["repo"].partition("/")
        with self._lock:
            record = self._repos.get((_API_SEGMENT.get(plural, ""), repo_id))
            commit = record.commits.get(query["commit"]) if record else None
        f = commit.files.get(query["path"]) if commit else None
        if record is None or commit is None or f is None:
            return _Reply(404, [("Content-Type", "text/plain")], b"NoSuchKey")
        # huggingface_hub follows a same-origin redirect for its metadata HEAD: answer what it reads there.
        extra = [("X-Linked-Etag", f'"{f.sha256}"'), ("X-Linked-Size", str(f.size))]
        return self._content(handler, record, commit, f, extra)

    def _content(
        self, handler: _Handler, record: _Repo, commit: _Commit, f: FakeFile, extra: list[tuple[str, str]]
    ) -> _Reply:
        """The bytes of `f` (or its corrupted stand-in) with the Hub's headers and Range support."""
        with self._lock:
            data = self._corrupt.get((record.repo_type, record.repo_id, f.path), f.content)
        etag = f'"{f.etag}"'
        last_modified = email.utils.formatdate(commit.timestamp, usegmt=True)
        basename = f.path.rsplit("/", 1)[-1]
        ascii_name = basename.encode("ascii", "replace").decode("ascii").replace('"', "_").replace("\\", "_")
        disposition = f"attachment; filename*=UTF-8''{quote(basename)}; filename=\"{ascii_name}\";"
        headers = [
            ("Content-Type", mimetypes.guess_type(basename)[0] or "application/octet-stream"),
            ("ETag", etag),
            ("Last-Modified", last_modified),
            ("X-Repo-Commit", commit.sha),
            ("Accept-Ranges", "bytes"),
            ("Content-Disposition", disposition),
            *extra,
        ]
        wanted = handler.headers.get("Range")
        if_range = handler.headers.get("If-Range")
        if wanted and (if_range is None or if_range.strip() in (etag, last_modified)):
            try:
                span = _parse_range(wanted, len(data))
            except _Unsatisfiable:
                return _Reply(416, [*headers, ("Content-Range", f"bytes */{len(data)}")])
            if span is not None:
                first, last = span
                headers.append(("Content-Range", f"bytes {first}-{last}/{len(data)}"))
                return _Reply(206, headers, data[first : last + 1], throttled=True)
        return _Reply(200, headers, data, throttled=True)


@pytest.fixture
def fake_hub() -> Iterator[FakeHub]:
    """A started FakeHub; stopped, with its threads joined, after the test."""
    hub = FakeHub().start()
    try:
        yield hub
    finally:
        hub.stop()


def _demo_files(size_mib: float) -> dict[str, bytes]:
    """A small model repo: config, tokenizer, README, a nested folder and a big deterministic weight file."""
    big = bytearray()
    block = hashlib.sha256(b"fakehub").digest()
    while len(big) < int(size_mib * 1024 * 1024):
        block = hashlib.sha256(block).digest()
        big += block * 1024
    return {
        "README.md": b"# Demo repo served by tests/fakehub.py\n",
        "config.json": json.dumps({"model_type": "demo", "hidden_size": 8}, indent=2).encode() + b"\n",
        "tokenizer.json": json.dumps({"version": "1.0", "vocab": {"a": 0, "b": 1}}).encode(),
        "model.safetensors": bytes(big[: int(size_mib * 1024 * 1024)]),
        "onnx/model.onnx": b"\x08\x07" * 600,
        "onnx/config.json": b'{"opset": 17}\n',
    }


def main(argv: list[str] | None = None) -> int:
    """Serve a demo repo until Ctrl-C: `python tests/fakehub.py --port 8765 --repo org/name`."""
    parser = argparse.ArgumentParser(description="Serve a fake Hugging Face Hub on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=8765, help="TCP port (0: any free port)")
    parser.add_argument("--repo", default="org/name", help="demo repo id, e.g. org/name")
    parser.add_argument("--repo-type", choices=REPO_TYPES, default="model")
    parser.add_argument("--size-mib", type=float, default=16.0, help="size of model.safetensors in MiB")
    parser.add_argument("--rate", type=int, default=None, help="throttle file bodies to this many bytes/s")
    parser.add_argument("--page-size", type=int, default=1000, help="tree entries per page")
    parser.add_argument("--cdn-host", default=None, help='host name for LFS redirects, e.g. "localhost"')
    args = parser.parse_args(argv)

    hub = FakeHub(page_size=args.page_size, port=args.port)
    hub.rate = args.rate
    hub.cdn_host = args.cdn_host
    commit = hub.add_repo(args.repo, _demo_files(args.size_mib), repo_type=args.repo_type)
    with hub:
        try:  # Ctrl-C may come at any point once the URL is out, even while the banner is printed
            prefix = _URL_PREFIX[args.repo_type]
            print(f"fake Hub at {hub.url}: {prefix}{args.repo} @ main = {commit}", flush=True)
            repo_type = args.repo_type
            print(f"  HF_ENDPOINT={hub.url} hf download {args.repo} --repo-type {repo_type} --local-dir ./demo")
            print(f"  curl -L -O {hub.resolve_url(args.repo, 'model.safetensors', repo_type=repo_type)}")
            print("Ctrl-C to stop.", flush=True)
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("\nstopping")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
