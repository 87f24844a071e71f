"""The daemon's page on loopback: `/` the page, `/api/status`, `/api/events` (SSE), `/metrics` (stdlib http.server).

Modelled on Jupyter's local server: a random token per start (kept in `state_dir/web.json`, mode 0600)
is required on every request except `/healthz`; `?token=` once sets an HttpOnly, SameSite=Strict cookie,
and scrapers send `Authorization: Bearer <token>` (the bare token is also in `state_dir/web.token`, the
file Prometheus's `credentials_file` reads on every scrape). `Host` must name the loopback address it
listens on (DNS rebinding), no CORS header is ever sent, and nothing served changes state.
"""

from __future__ import annotations

import contextlib
import hmac
import http.server
import json
import math
import os
import queue
import secrets
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qsl, urlencode, urlsplit

from .config import parse_listen
from .exits import ExitCode
from .logs import Log

DASHBOARD_FILE = "web.json"
TOKEN_FILE = "web.token"  # noqa: S105 - a file name, not a secret
VERDICT_STATUSES = ("matched", "mismatch", "incomplete", "unknown")  # every series exists from the start
SSE_BACKLOG = 256  # events queued per client; a client further behind than this is dropped, never waited for
MAX_STREAMS = 32  # concurrent /api/events streams: each holds a thread
RETRY_MS = 2000
EXIT_NO_PAGE = ExitCode.UNAVAILABLE  # `hfwatchd open` finds no daemon serving a page


# --------------------------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class Metrics:
    """What `/metrics` exposes; the daemon fills it from its counters and the queue."""

    verdicts: Mapping[str, int]  # by status, since the daemon started
    hashed_bytes: int
    queued: int
    manifest_failures: int
    last_scan: Mapping[str, float]  # watched folder -> unix time its last full pass ended


def _label(value: str) -> str:
    # a folder name need not be UTF-8: its surrogate escapes become visible \udcXX text, then the
    # exposition format's own escapes (backslash, double quote, newline) apply
    text = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def render_metrics(m: Metrics) -> str:
    """Prometheus text exposition (format 0.0.4) of `m`."""
    out: list[str] = []

    def family(name: str, kind: str, help_text: str, samples: Iterable[tuple[str, float]]) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(f"{name}{labels} {_number(v)}" for labels, v in samples)

    verdicts = {**dict.fromkeys(VERDICT_STATUSES, 0), **m.verdicts}
    family("hfwatchd_verdicts_total", "counter", "Verdicts logged since the daemon started, by status.",
           ((f'{{status="{_label(s)}"}}', n) for s, n in sorted(verdicts.items())))
    family("hfwatchd_hashed_bytes_total", "counter", "Bytes hashed since the daemon started.",
           [("", m.hashed_bytes)])
    family("hfwatchd_queued_files", "gauge", "Files waiting to be judged.", [("", m.queued)])
    family("hfwatchd_manifest_failures_total", "counter",
           "Times a manifest could not be fetched from the Hub since the daemon started.",
           [("", m.manifest_failures)])
    family("hfwatchd_last_scan_timestamp_seconds", "gauge",
           "Unix time the last full pass over a watched folder ended.",
           ((f'{{folder="{_label(f)}"}}', t) for f, t in sorted(m.last_scan.items())))
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------- the dashboard file


def _write_private(path: Path, data: bytes) -> None:
    """Write `path` mode 0600 atomically: readers see the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's: not ours, but the port check below decides
        return True
    return True


def read_dashboard(state_dir: Path) -> str | None:
    """The page's full URL with its token, if a live daemon serves one for this state_dir."""
    try:
        doc = json.loads((state_dir / DASHBOARD_FILE).read_text(encoding="utf-8"))
        url, token, pid = str(doc["url"]), str(doc["token"]), int(doc["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _pid_alive(pid):
        return None  # a daemon killed with -9 leaves its file behind
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None:
        return None
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=2):
            pass
    except OSError:
        return None
    return f"{url}?{urlencode({'token': token})}"


# --------------------------------------------------------------------------------------------- server


def _json_bytes(doc: object) -> bytes:
    # ensure_ascii keeps odd names (surrogate escapes) valid; <, > and & escaped as \\u00XX so the body
    # reads the same however a client mistakes its type
    text = json.dumps(doc, ensure_ascii=True, separators=(",", ":"), default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode("ascii")


@dataclass(eq=False)  # identity, not value: streams live in a set
class _Stream:
    """One /api/events client: its own bounded queue, and its socket so a drop can unblock its writer."""

    events: queue.Queue[bytes | None]
    sock: socket.socket
    dropped: bool = False


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True  # server_close() joins every request thread

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily, web: WebServer) -> None:
        self.address_family = family
        self.web = web
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would resolve the host's FQDN: a DNS lookup we have no use for
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def end_connections(self) -> None:
        """Shut every open connection down so idle keep-alive and stream threads return at once."""
        with self.connections_lock:
            conns = list(self.connections)
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]  # called from inside the request thread's except block
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return  # a browser tab closed mid-response
        self.web.log.error("web.error", error=repr(exc))


class WebServer:
    """Serves the page on a loopback address in its own threads; `publish` feeds the live stream."""

    def __init__(self, listen: str, state_dir: Path, *, status: Callable[[], object], metrics: Callable[[], str],
                 log: Log, keepalive: float = 15.0) -> None:
        self.host, self.port = parse_listen(listen)
        self.state_dir = state_dir
        self.status = status
        self.metrics = metrics
        self.log = log
        self.keepalive = keepalive
        self.token = ""
        self.url = ""
        self.cookie_name = ""
        self.allowed_hosts: frozenset[str] = frozenset()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._streams: set[_Stream] = set()
        self._lock = threading.Lock()
        self._closing = threading.Event()

    # -- life cycle

    def start(self) -> str:
        """Bind and serve in a thread; the URL without its token. OSError (port in use) leaves nothing behind."""
        bind_host = "127.0.0.1" if self.host.lower() == "localhost" else self.host
        family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
        server = _Server((bind_host, self.port), family, self)
        port = int(server.server_address[1])
        shown = f"[{bind_host}]" if family == socket.AF_INET6 else self.host.lower()
        self.url = f"http://{shown}:{port}/"
        literal = f"[{bind_host}]" if family == socket.AF_INET6 else bind_host
        self.allowed_hosts = frozenset({f"{literal}:{port}", f"localhost:{port}"})
        self.token = secrets.token_urlsafe(32)
        # cookies ignore the port: two daemons on one machine must not overwrite each other's
        self.cookie_name = f"hfwatchd-token-{port}"
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            # no newline: the whole file is the credential (Prometheus's credentials_file)
            _write_private(self.state_dir / TOKEN_FILE, self.token.encode("ascii"))
            _write_private(self.state_dir / DASHBOARD_FILE, json.dumps(
                {"url": self.url, "token": self.token, "pid": os.getpid()}).encode("utf-8") + b"\n")
        except OSError:
            server.server_close()
            self._remove_files()
            raise
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="hfwatchd-web", daemon=True)
        self._thread.start()
        self.log.info("web.started", url=self.url)
        return self.url

    def close(self) -> None:
        """Stop serving, end every stream, join the threads and remove the dashboard files."""
        self._closing.set()
        with self._lock:
            streams = list(self._streams)
            self._streams.clear()
        for s in streams:
            self._drop(s)
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.end_connections()
            server.server_close()  # joins the request threads
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._remove_files()

    def _remove_files(self) -> None:
        if not self.token:
            return
        try:
            doc = json.loads((self.state_dir / DASHBOARD_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            doc = {}
        if isinstance(doc, dict) and doc.get("token") == self.token:  # never another run's file
            with contextlib.suppress(OSError):
                (self.state_dir / DASHBOARD_FILE).unlink()
        with contextlib.suppress(OSError):
            if (self.state_dir / TOKEN_FILE).read_text(encoding="ascii").strip() == self.token:
                (self.state_dir / TOKEN_FILE).unlink()

    # -- the live stream

    def publish(self, event: Mapping[str, Any]) -> None:
        """Send one verdict line's dict to every stream; never blocks: a client that is behind is dropped."""
        data = b"data: " + _json_bytes(dict(event)) + b"\n\n"
        with self._lock:
            streams = list(self._streams)
        for s in streams:
            try:
                s.events.put_nowait(data)
            except queue.Full:
                self._drop(s)

    def _drop(self, s: _Stream) -> None:
        with self._lock:
            self._streams.discard(s)
        s.dropped = True
        with contextlib.suppress(queue.Full):
            s.events.put_nowait(None)
        with contextlib.suppress(OSError):
            s.sock.shutdown(socket.SHUT_RDWR)  # a writer blocked on a full socket buffer returns now

    def _open_stream(self, sock: socket.socket) -> _Stream | None:
        s = _Stream(queue.Queue(SSE_BACKLOG), sock)
        with self._lock:
            if self._closing.is_set() or len(self._streams) >= MAX_STREAMS:
                return None
            self._streams.add(s)
        return s

    def _close_stream(self, s: _Stream) -> None:
        with self._lock:
            self._streams.discard(s)

    @property
    def streams(self) -> int:
        """How many /api/events clients are connected."""
        with self._lock:
            return len(self._streams)

    # -- auth

    def token_ok(self, candidate: str | None) -> bool:
        if not candidate or not self.token:
            return False
        return hmac.compare_digest(candidate.encode("utf-8", "surrogateescape"), self.token.encode("ascii"))



def _csp(nonce: str) -> str:
    return ("default-src 'none'; "
            f"script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
            "connect-src 'self'; img-src 'self' data:; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "hfwatchd"
    sys_version = ""
    timeout = 30  # a client that sends nothing (or reads nothing) for this long is let go

    def log_message(self, format: str, *args: Any) -> None:
        pass  # no access log: the daemon's log is for verdicts

    def version_string(self) -> str:
        return "hfwatchd"

    # -- responses

    def _headers(self, status: int, content_type: str | None, length: int | None, *,
                 nonce: str | None = None, extra: Iterable[tuple[str, str]] = ()) -> None:
        self.send_response(status)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.send_header("Content-Security-Policy", _csp(nonce or secrets.token_urlsafe(16)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()

    def _send(self, status: int, body: bytes, content_type: str, *, nonce: str | None = None,
              extra: Iterable[tuple[str, str]] = ()) -> None:
        self._headers(status, content_type, len(body), nonce=nonce, extra=extra)
        if self.command != "HEAD":
            self.wfile.write(body)

    def _text(self, status: int, text: str, extra: Iterable[tuple[str, str]] = ()) -> None:
        self._send(status, text.encode("utf-8"), "text/plain; charset=utf-8", extra=extra)

    def _refuse_method(self) -> None:
        self.close_connection = True  # its body, if any, is not read
        self._text(HTTPStatus.METHOD_NOT_ALLOWED, "only GET and HEAD: this page never changes anything\n",
                   extra=[("Allow", "GET, HEAD")])

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _refuse_method

    # -- checks

    def _host_ok(self) -> bool:
        host = (self.headers.get("Host") or "").strip().lower()
        return host in self.server.web.allowed_hosts

    def _cookie_token(self) -> str | None:
        from http.cookies import CookieError, SimpleCookie

        name = self.server.web.cookie_name
        for header in self.headers.get_all("Cookie") or []:
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(header)
            except CookieError:
                continue
            if name in jar:
                return jar[name].value
        return None

    def _bearer_token(self) -> str | None:
        auth = self.headers.get("Authorization") or ""
        scheme, _, value = auth.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None

    # -- dispatch

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        web = self.server.web
        if not self._host_ok():
            # a page on another origin that resolves its name to 127.0.0.1 (DNS rebinding) lands here
            self.close_connection = True
            self._text(HTTPStatus.MISDIRECTED_REQUEST, "hfwatchd answers only to its loopback address\n")
            return
        parts = urlsplit(self.path)
        path = parts.path
        if path == "/healthz":
            self._text(HTTPStatus.OK, "ok\n")
            return
        query = parse_qsl(parts.query, keep_blank_values=True)
        given = [v for k, v in query if k == "token"]
        if given:
            if not web.token_ok(given[-1]):
                self._text(HTTPStatus.FORBIDDEN, "wrong token: run `hfwatchd open` for this run's link\n")
                return
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            if not path.startswith("/") or path.startswith("//") or "\\" in path:
                path = "/"  # browsers read /\host and //host as another site: never redirect there
            # the token leaves the address bar (and the history) at once; the cookie carries it from now on
            cookie = f"{web.cookie_name}={web.token}; HttpOnly; SameSite=Strict; Path=/"
            self._headers(HTTPStatus.SEE_OTHER, "text/plain; charset=utf-8", 0,
                          extra=[("Location", path + (f"?{rest}" if rest else "")), ("Set-Cookie", cookie)])
            return
        if not (web.token_ok(self._cookie_token()) or web.token_ok(self._bearer_token())):
            self._text(HTTPStatus.FORBIDDEN, "this page needs its token: run `hfwatchd open`, or "
                       "`hfwatchd open --print` for the link\n")
            return
        if path == "/":
            from .webpage import render_page

            nonce = secrets.token_urlsafe(16)
            self._send(HTTPStatus.OK, render_page(nonce).encode("utf-8"), "text/html; charset=utf-8", nonce=nonce)
        elif path == "/api/status":
            try:
                body = _json_bytes(web.status())
            except Exception as exc:  # noqa: BLE001 - a failing read model must not take the page down
                web.log.error("web.error", path=path, error=repr(exc))
                self._text(HTTPStatus.INTERNAL_SERVER_ERROR, "the status could not be read; see the daemon's log\n")
                return
            self._send(HTTPStatus.OK, body, "application/json")
        elif path == "/metrics":
            try:
                body = web.metrics().encode("utf-8")
            except Exception as exc:  # noqa: BLE001 - as above
                web.log.error("web.error", path=path, error=repr(exc))
                self._text(HTTPStatus.INTERNAL_SERVER_ERROR, "metrics could not be read; see the daemon's log\n")
                return
            self._send(HTTPStatus.OK, body, "text/plain; version=0.0.4; charset=utf-8")
        elif path == "/api/events":
            self._events()
        elif path == "/favicon.ico":
            self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        else:
            self._text(HTTPStatus.NOT_FOUND, "not found\n")

    def _events(self) -> None:
        web = self.server.web
        if self.command == "HEAD":
            self._headers(HTTPStatus.OK, "text/event-stream", None)
            return
        stream = web._open_stream(self.connection)
        if stream is None:
            self._text(HTTPStatus.SERVICE_UNAVAILABLE, "too many live streams\n", extra=[("Retry-After", "5")])
            return
        self.close_connection = True  # the body ends when the connection does
        try:
            self._headers(HTTPStatus.OK, "text/event-stream; charset=utf-8", None, extra=[("Connection", "close")])
            self.wfile.write(f"retry: {RETRY_MS}\n\n".encode("ascii"))
            self.wfile.flush()
            while not stream.dropped:
                try:
                    item = stream.events.get(timeout=web.keepalive)
                except queue.Empty:
                    item = b": keepalive\n\n"  # proxies and browsers keep an idle stream open
                if item is None or stream.dropped:
                    break
                self.wfile.write(item)
                self.wfile.flush()
        except OSError:
            pass  # the client went away, or close()/a drop shut the socket
        finally:
            web._close_stream(stream)


def _await_dashboard(state_dir: Path, timeout: float = 10.0) -> str | None:
    """A daemon that holds the store but serves no page yet is starting (`service install && open`): wait."""
    from .state import read_lock_pid

    deadline = time.monotonic() + timeout
    while read_lock_pid(state_dir) is not None and time.monotonic() < deadline:
        url = read_dashboard(state_dir)
        if url is not None:
            return url
        time.sleep(0.1)  # polling a file another process writes: no event to wait on
    return None


def open_dashboard(state_dir: Path, *, print_only: bool, out: TextIO, err: TextIO) -> int:
    """`hfwatchd open`: the page in the user's browser, or its URL on `out`; 69 when no daemon serves one."""
    url = read_dashboard(state_dir)
    if url is None:
        url = _await_dashboard(state_dir)
    if url is None:
        err.write(f"hfwatchd: no running daemon serves a page for {state_dir}: start it (systemctl --user start "
                  "hfwatchd, or hfwatchd --config FILE), and check that [web] listen is not \"\"\n")
        return EXIT_NO_PAGE
    if print_only:
        out.write(url + "\n")
        return 0
    import webbrowser

    if webbrowser.open(url):
        err.write(f"hfwatchd: opened {url.split('?', 1)[0]} in the browser\n")
        return 0
    err.write("hfwatchd: no browser found; open this link (it carries this run's token):\n")
    out.write(url + "\n")
    return 0
