"""The daemon's page server over real HTTP on 127.0.0.1: token, Host, headers, methods, JSON, SSE, metrics.

Every request goes through http.client on a real socket; the SSE stream is read line by line with a
socket timeout. Status documents are hand-written in the shape `status --json` prints.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import cli_env, run_cli, write_config

from hfwatchd import web
from hfwatchd.config import ConfigError, load_config, parse_config
from hfwatchd.web import (
    DASHBOARD_FILE,
    MAX_STREAMS,
    TOKEN_FILE,
    Metrics,
    WebServer,
    read_dashboard,
    render_metrics,
)

HOSTILE = "<img src=x onerror=alert(1)>.bin"
HUB_TOKEN = "hf_KnownTestTokenThatMustNeverBeServed0123"
COMMIT = "a" * 40


def status_doc(name: str = "model.safetensors", status: str = "missing") -> list[dict[str, Any]]:
    """A `status --json` document: one watch, one repo with two files, one unknown file, one download."""
    return [{
        "path": "/home/u/Downloads", "unknown": 1, "pending": 0,
        "repos": [{
            "repo": "org/model", "commit": COMMIT, "source": "hub", "endpoint": "http://127.0.0.1:9",
            "expected": 2, "counts": {"pending": 0, "matched": 1, "mismatch": 0, "incomplete": 0, "missing": 1,
                                      "unknown": 0},
            "bytes_expected": 1012, "bytes_matched": 12, "note": None,
            "files": [
                {"status": "matched", "path": "/home/u/Downloads/config.json", "rfilename": "config.json",
                 "size": 12, "expected_size": 12, "algorithm": "git-sha1", "digest": "b" * 40, "expected": "b" * 40,
                 "commit": COMMIT, "judged_at": "2026-12-01T23:00:00Z", "matched_by": "path"},
                {"status": status, "rfilename": name, "size": None, "expected_size": 1000, "algorithm": "sha256",
                 "digest": None, "expected": "c" * 64, "commit": COMMIT, "judged_at": None, "matched_by": None,
                 "url": f"http://127.0.0.1:9/org/model/resolve/{COMMIT}/{name}"},
            ]}],
        "files": [{"status": "unknown", "path": f"/home/u/Downloads/{HOSTILE}", "size": 3, "digest": None,
                   "judged_at": "2026-12-01T23:00:00Z"}],
        "downloading": [{"path": "/home/u/Downloads/x.part", "size": 400, "bytes_hashed": 0, "rfilename": name,
                         "repo": "org/model", "expected_size": 1000}],
    }]


class RecordingLog:
    """A logger that keeps every line (thread-safe), like the daemon's JSON log."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def _add(self, level: str, event: str, fields: dict[str, Any]) -> None:
        with self._lock:
            self.lines.append({"level": level, "event": event, **fields})

    def info(self, event: str, **fields: Any) -> None:
        self._add("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._add("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._add("error", event, fields)

    def events(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            return [x for x in self.lines if x["event"] == name]


@dataclass
class Served:
    """A started WebServer and what a client needs to talk to it."""

    server: WebServer
    url: str
    port: int
    token: str
    log: RecordingLog
    state_dir: Path
    doc: list[dict[str, Any]]
    calls: list[str] = field(default_factory=list)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def cookie(self) -> str:
        return f"{self.server.cookie_name}={self.token}"


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


def request(s: Served, path: str, *, method: str = "GET", host: str | None = None, cookie: bool = True,
            headers: dict[str, str] | None = None, body: bytes | None = None) -> Reply:
    """One request on a fresh connection; `host` overrides the Host header ("" sends none)."""
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        h = host if host is not None else s.host
        if h:
            conn.putheader("Host", h)
        if cookie:
            conn.putheader("Cookie", s.cookie)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        streaming = path.startswith("/api/events") and method != "HEAD" and resp.status == 200
        data = b"" if streaming else resp.read()
        return Reply(resp.status, resp.headers, data)
    finally:
        conn.close()


def start(tmp_path: Path, doc: list[dict[str, Any]] | None = None, *, listen: str = "127.0.0.1:0",
          keepalive: float = 15.0, metrics: Metrics | None = None) -> Served:
    log = RecordingLog()
    state = tmp_path / "state"
    holder: dict[str, Any] = {}
    m = metrics or Metrics(verdicts={"matched": 3, "mismatch": 1}, hashed_bytes=123456, queued=2,
                           manifest_failures=1, last_scan={"/home/u/Downloads": 1764630000.5})

    def status() -> object:
        holder["served"].calls.append("status")
        return holder["served"].doc

    server = WebServer(listen, state, status=status, metrics=lambda: render_metrics(m), log=log, keepalive=keepalive)
    url = server.start()
    port = int(url.rsplit(":", 1)[1].rstrip("/"))
    token = json.loads((state / DASHBOARD_FILE).read_text())["token"]
    s = Served(server, url, port, token, log, state, doc if doc is not None else status_doc())
    holder["served"] = s
    return s


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = start(tmp_path)
    try:
        yield s
    finally:
        s.server.close()


# --------------------------------------------------------------------------------------------- SSE client


class Stream:
    """An /api/events client reading the raw stream line by line, with a deadline per read."""

    def __init__(self, s: Served, *, host: str | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", s.port), timeout=5)
        self.sock.sendall(
            f"GET /api/events HTTP/1.1\r\nHost: {host or s.host}\r\nCookie: {s.cookie}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode())
        self.file = self.sock.makefile("rb")
        self.status_line = self.file.readline().decode()
        self.headers: dict[str, str] = {}
        while (line := self.file.readline()) not in (b"\r\n", b""):
            k, _, v = line.decode().partition(":")
            self.headers[k.strip().lower()] = v.strip()

    def block(self, timeout: float = 5) -> list[str]:
        """The lines of the next SSE block (up to its blank line); [] at EOF."""
        self.sock.settimeout(timeout)
        lines: list[str] = []
        while True:
            raw = self.file.readline()
            if not raw:
                return lines
            line = raw.decode().rstrip("\n")
            if line == "":
                if lines:
                    return lines
                continue
            lines.append(line)

    def event(self, timeout: float = 5) -> dict[str, Any]:
        """The next `data:` event, skipping comments; fail at EOF or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.block(max(0.01, deadline - time.monotonic()))
            assert lines, "the stream ended before an event"
            data = [x[len("data: "):] for x in lines if x.startswith("data: ")]
            if data:
                rec: dict[str, Any] = json.loads("\n".join(data))
                return rec

    def read_to_eof(self, timeout: float = 5) -> bytes:
        self.sock.settimeout(timeout)
        chunks = []
        while chunk := self.file.read1(65536):
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@contextlib.contextmanager
def stream(s: Served) -> Iterator[Stream]:
    """An open stream whose `retry:` hint has arrived, so the server has registered it."""
    st = Stream(s)
    try:
        assert st.status_line.startswith("HTTP/1.1 200"), st.status_line
        assert st.block() == ["retry: 2000"]
        yield st
    finally:
        st.close()


# --------------------------------------------------------------------------------------------- metrics parser


def parse_exposition(text: str) -> dict[str, Any]:
    """A tiny Prometheus text-format parser: families with their HELP, TYPE and samples (labels unescaped)."""
    families: dict[str, dict[str, Any]] = {}
    sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
    label = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?')
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            _, kind, name, rest = line.split(" ", 3)
            fam = families.setdefault(name, {"samples": []})
            assert not fam["samples"], f"{kind} after samples of {name}"
            fam[kind.lower()] = rest
            continue
        m = sample.match(line)
        assert m, f"not an exposition line: {line!r}"
        name, raw_labels, value = m.groups()
        labels = {}
        if raw_labels:
            pos = 0
            while pos < len(raw_labels):
                lm = label.match(raw_labels, pos)
                assert lm, f"bad labels in {line!r}"
                labels[lm[1]] = re.sub(r'\\(.)', lambda e: "\n" if e[1] == "n" else e[1], lm[2])
                pos = lm.end()
        assert name in families and "type" in families[name], f"{name} has no TYPE before its samples"
        families[name]["samples"].append((labels, float(value)))
    return families


# --------------------------------------------------------------------------------------------- tests


class TestToken:
    @pytest.mark.parametrize("path", ["/", "/api/status", "/api/events", "/metrics"])
    def test_without_token_forbidden(self, served: Served, path: str) -> None:
        """Every endpoint but /healthz answers 403 to a request without the token, and shows no data."""
        r = request(served, path, cookie=False)
        assert r.status == 403
        assert b"org/model" not in r.body and b"hfwatchd_" not in r.body
        assert served.calls == []

    @pytest.mark.parametrize("how", ["query", "cookie", "bearer"])
    def test_wrong_token_forbidden(self, served: Served, how: str) -> None:
        """A wrong token is refused whether it comes as ?token=, as the cookie or as a Bearer header."""
        wrong = served.token[:-1] + ("A" if served.token[-1] != "A" else "B")
        if how == "query":
            r = request(served, f"/api/status?token={wrong}", cookie=False)
        elif how == "cookie":
            r = request(served, "/api/status", cookie=False,
                        headers={"Cookie": f"{served.server.cookie_name}={wrong}"})
        else:
            r = request(served, "/api/status", cookie=False, headers={"Authorization": f"Bearer {wrong}"})
        assert r.status == 403
        assert r.header("Set-Cookie") is None
        assert served.calls == []

    def test_query_token_sets_cookie_and_redirects(self, served: Served) -> None:
        """?token= answers 303 to the same path without the token and sets an HttpOnly SameSite=Strict cookie."""
        r = request(served, f"/?token={served.token}", cookie=False)
        assert r.status == 303
        assert r.header("Location") == "/"
        cookie = r.header("Set-Cookie") or ""
        attrs = [a.strip() for a in cookie.split(";")]
        assert attrs[0] == served.cookie
        assert "HttpOnly" in attrs and "SameSite=Strict" in attrs and "Path=/" in attrs
        page = request(served, "/", cookie=False, headers={"Cookie": attrs[0]})
        assert page.status == 200 and page.header("Content-Type") == "text/html; charset=utf-8"
        assert b"<title>hfwatchd</title>" in page.body

    def test_redirect_keeps_other_parameters(self, served: Served) -> None:
        """Only the token leaves the URL on redirect; other query parameters stay."""
        r = request(served, f"/api/status?x=1&token={served.token}&y=2", cookie=False)
        assert r.status == 303
        assert r.header("Location") == "/api/status?x=1&y=2"

    @pytest.mark.parametrize("path", ["//evil.example/", "/\\evil.example/", "/%5Cevil.example"])
    def test_redirect_stays_on_this_site(self, served: Served, path: str) -> None:
        """The token redirect never points at another site, whatever path it came with."""
        r = request(served, f"{path}?token={served.token}", cookie=False)
        assert r.status == 303
        location = r.header("Location") or ""
        assert location.startswith("/") and not location.startswith("//") and "\\" not in location
        assert urlsplit(location).netloc == "" and urlsplit(location).scheme == ""

    def test_bearer_token_for_scrapers(self, served: Served) -> None:
        """A Prometheus scraper without cookies reads /metrics with `Authorization: Bearer <token>`."""
        r = request(served, "/metrics", cookie=False, headers={"Authorization": f"Bearer {served.token}"})
        assert r.status == 200
        assert b"hfwatchd_verdicts_total" in r.body

    def test_healthz_needs_no_token(self, served: Served) -> None:
        """/healthz answers without a token and reveals nothing."""
        r = request(served, "/healthz", cookie=False)
        assert (r.status, r.body) == (200, b"ok\n")

    def test_token_files_are_private(self, served: Served) -> None:
        """web.json (url, token, pid) and web.token are mode 0600 and agree with read_dashboard."""
        for name in (DASHBOARD_FILE, TOKEN_FILE):
            assert stat.S_IMODE((served.state_dir / name).stat().st_mode) == 0o600, name
        doc = json.loads((served.state_dir / DASHBOARD_FILE).read_text())
        assert doc == {"url": served.url, "token": served.token, "pid": os.getpid()}
        assert (served.state_dir / TOKEN_FILE).read_text() == served.token
        assert read_dashboard(served.state_dir) == f"{served.url}?token={served.token}"
        assert len(served.token) >= 40

    def test_new_token_every_start(self, tmp_path: Path) -> None:
        """Each start draws a new token; the previous run's token is refused."""
        first = start(tmp_path)
        old = first.token
        first.server.close()
        second = start(tmp_path)
        try:
            assert second.token != old
            r = request(second, "/api/status", cookie=False, headers={"Authorization": f"Bearer {old}"})
            assert r.status == 403
        finally:
            second.server.close()


class TestHost:
    @pytest.mark.parametrize("host", ["evil.example:{port}", "127.0.0.1:1", "127.0.0.1", "",
                                      "127.0.0.1.nip.io:{port}", "[::1]:{port}", "localhost.evil.example:{port}"])
    def test_other_host_refused(self, served: Served, host: str) -> None:
        """A Host that is not the loopback address and port it listens on gets 421, even with the token."""
        r = request(served, "/api/status", host=host.format(port=served.port))
        assert r.status == 421
        assert b"org/model" not in r.body
        assert served.calls == []

    @pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LocalHost:{port}"])
    def test_loopback_names_accepted(self, served: Served, host: str) -> None:
        """127.0.0.1:PORT and localhost:PORT (any case) are this server."""
        assert request(served, "/api/status", host=host.format(port=served.port)).status == 200

    def test_ipv6_loopback(self, tmp_path: Path) -> None:
        """Listening on [::1], the Host [::1]:PORT is accepted and 127.0.0.1:PORT is not."""
        try:
            s = start(tmp_path, listen="[::1]:0")
        except OSError as exc:
            pytest.skip(f"no IPv6 loopback here: {exc}")
        try:
            assert s.url == f"http://[::1]:{s.port}/"
            for host, want in ((f"[::1]:{s.port}", 200), (f"127.0.0.1:{s.port}", 421)):
                conn = http.client.HTTPConnection("::1", s.port, timeout=5)
                try:
                    conn.putrequest("GET", "/api/status", skip_host=True)
                    conn.putheader("Host", host)
                    conn.putheader("Cookie", s.cookie)
                    conn.endheaders()
                    resp = conn.getresponse()
                    resp.read()
                    assert resp.status == want, host
                finally:
                    conn.close()
        finally:
            s.server.close()


SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class TestHeaders:
    @pytest.mark.parametrize(("path", "cookie", "host", "want"), [
        ("/", True, None, 200), ("/api/status", True, None, 200), ("/metrics", True, None, 200),
        ("/healthz", False, None, 200), ("/api/status", False, None, 403), ("/nope", True, None, 404),
        ("/", True, "evil.example", 421), ("/?token=x", False, None, 403),
    ])
    def test_security_headers_and_no_cors(self, served: Served, path: str, cookie: bool, host: str | None,
                                          want: int) -> None:
        """Every response carries CSP, nosniff, no-referrer and no-store, and no Access-Control-* header."""
        r = request(served, path, cookie=cookie, host=host,
                    headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"})
        assert r.status == want
        for k, v in SECURITY_HEADERS.items():
            assert r.header(k) == v, (k, r.headers)
        csp = r.header("Content-Security-Policy") or ""
        assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert not [k for k in r.headers if k.lower().startswith("access-control-")]

    def test_redirect_has_security_headers(self, served: Served) -> None:
        """The 303 that sets the cookie carries the same headers."""
        r = request(served, f"/?token={served.token}", cookie=False)
        assert r.status == 303
        for k, v in SECURITY_HEADERS.items():
            assert r.header(k) == v

    def test_page_scripts_carry_the_csp_nonce(self, served: Served) -> None:
        """The page's only script and style are inline with the nonce of this response's CSP, new every time."""
        nonces = []
        for _ in range(2):
            r = request(served, "/")
            m = re.search(r"script-src 'nonce-([A-Za-z0-9_-]+)'", r.header("Content-Security-Policy") or "")
            assert m, r.header("Content-Security-Policy")
            nonce = m[1]
            assert f"style-src 'nonce-{nonce}'" in (r.header("Content-Security-Policy") or "")
            page = r.body.decode()
            assert page.count("<script") == 1 and f'<script nonce="{nonce}">' in page
            assert page.count("<style") == 1 and f'<style nonce="{nonce}">' in page
            nonces.append(nonce)
        assert nonces[0] != nonces[1]

    def test_page_is_self_contained(self, served: Served) -> None:
        """The page loads nothing from elsewhere (no CDN, no web font) and never uses innerHTML."""
        page = request(served, "/").body.decode()
        assert not re.search(r"https?://", page)
        assert "@import" not in page and "src=" not in page.replace("<img src=x", "")
        assert "innerHTML" not in page and "insertAdjacentHTML" not in page and "document.write" not in page


class TestMethods:
    @pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
    def test_only_get_and_head(self, served: Served, method: str) -> None:
        """Anything but GET and HEAD is 405 with `Allow: GET, HEAD`, and reads nothing."""
        r = request(served, "/api/status", method=method, body=b'{"x": 1}')
        assert r.status == 405
        assert r.header("Allow") == "GET, HEAD"
        assert served.calls == []
        assert not [k for k in r.headers if k.lower().startswith("access-control-")]

    def test_head_has_headers_and_no_body(self, served: Served) -> None:
        """HEAD answers the GET's status and headers with an empty body."""
        get = request(served, "/api/status")
        head = request(served, "/api/status", method="HEAD")
        assert head.status == 200 and head.body == b""
        assert head.header("Content-Length") == get.header("Content-Length") == str(len(get.body))


class TestStatusApi:
    def test_serves_the_status_document(self, served: Served) -> None:
        """/api/status is status()'s document as JSON."""
        r = request(served, "/api/status")
        assert r.status == 200 and r.header("Content-Type") == "application/json"
        assert json.loads(r.body) == served.doc

    def test_hostile_name_is_escaped(self, tmp_path: Path) -> None:
        """A file name with markup is served JSON-escaped: no raw < or > in the body, the same name once parsed."""
        s = start(tmp_path, status_doc(HOSTILE, "mismatch"))
        try:
            r = request(s, "/api/status")
            assert b"<" not in r.body and b">" not in r.body
            assert b"\\u003cimg" in r.body
            doc = json.loads(r.body)
            assert doc[0]["repos"][0]["files"][1]["rfilename"] == HOSTILE
            assert doc[0]["files"][0]["path"].endswith(HOSTILE)
        finally:
            s.server.close()

    def test_names_not_utf8_survive(self, tmp_path: Path) -> None:
        """A local name that is not UTF-8 (surrogate escapes) is served as valid JSON."""
        doc = status_doc()
        doc[0]["files"][0]["path"] = os.fsdecode(b"/home/u/Downloads/caf\xe9.bin")
        s = start(tmp_path, doc)
        try:
            r = request(s, "/api/status")
            assert r.status == 200
            assert json.loads(r.body)[0]["files"][0]["path"] == doc[0]["files"][0]["path"]
        finally:
            s.server.close()

    def test_failing_status_is_500_and_logged(self, tmp_path: Path) -> None:
        """status() raising gives 500 and a web.error line; the server keeps serving."""
        log = RecordingLog()

        def broken() -> object:
            raise RuntimeError("read model exploded")

        server = WebServer("127.0.0.1:0", tmp_path / "state", status=broken, metrics=lambda: "", log=log)
        server.start()
        try:
            url = read_dashboard(tmp_path / "state")
            assert url is not None
            port = int(url.split(":")[2].split("/")[0])
            s = Served(server, server.url, port, server.token, log, tmp_path / "state", [])
            r = request(s, "/api/status")
            assert r.status == 500 and b"exploded" not in r.body
            assert [x["error"] for x in log.events("web.error")] == ["RuntimeError('read model exploded')"]
            assert request(s, "/healthz").status == 200
        finally:
            server.close()

    def test_hub_token_never_served(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """With a Hub token in the environment and in a token file, no endpoint's body or header contains it."""
        monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
        (tmp_path / "token").write_text(HUB_TOKEN)
        s = start(tmp_path)
        try:
            seen = []
            for path in ("/", "/api/status", "/metrics", "/healthz", "/nope", f"/?token={s.token}"):
                for cookie in (True, False):
                    r = request(s, path, cookie=cookie)
                    seen.append(r.body + str(r.headers).encode())
            with stream(s) as st:
                s.server.publish({"event": "file.matched", "path": "/x", "repo": "org/model"})
                ev = st.event()
                seen.append(json.dumps(ev).encode())
            assert len(seen) == 13
            assert not [x for x in seen if HUB_TOKEN.encode() in x]
        finally:
            s.server.close()


class TestEvents:
    def test_published_event_within_one_second(self, served: Served) -> None:
        """A published verdict reaches a connected stream as one `data:` JSON line within a second."""
        with stream(served) as st:
            assert st.headers["content-type"].startswith("text/event-stream")
            assert st.headers["cache-control"] == "no-store"
            verdict = {"timestamp": "2026-12-01T23:00:00Z", "level": "info", "event": "file.matched",
                       "path": Path("/home/u/Downloads/config.json"), "repo": "org/model", "rfilename": "config.json",
                       "size": 12}
            t0 = time.monotonic()
            served.server.publish(verdict)
            ev = st.event(timeout=1.0)
            assert time.monotonic() - t0 < 1.0
            assert ev == {**verdict, "path": "/home/u/Downloads/config.json"}

    def test_events_in_order_to_every_client(self, served: Served) -> None:
        """Two streams each receive every event, in publish order, hostile names included."""
        with stream(served) as a, stream(served) as b:
            assert served.server.streams == 2
            names = [f"f{i}.bin" for i in range(20)] + [HOSTILE]
            for n in names:
                served.server.publish({"event": "file.mismatch", "rfilename": n})
            for st in (a, b):
                assert [st.event()["rfilename"] for _ in names] == names

    def test_hostile_name_escaped_in_stream(self, served: Served) -> None:
        """An event's markup characters are \\u-escaped on the wire."""
        with stream(served) as st:
            served.server.publish({"event": "file.unknown", "path": HOSTILE})
            raw = st.block()
            assert raw[0].startswith("data: ") and "<" not in raw[0] and ">" not in raw[0]
            assert json.loads(raw[0][len("data: "):])["path"] == HOSTILE

    def test_keepalive_comment(self, tmp_path: Path) -> None:
        """An idle stream gets a `: keepalive` comment every keepalive interval."""
        s = start(tmp_path, keepalive=0.2)
        try:
            with stream(s) as st:
                assert st.block(timeout=3) == [": keepalive"]
                assert st.block(timeout=3) == [": keepalive"]
        finally:
            s.server.close()

    def test_slow_client_never_blocks_publish(self, served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
        """A client that reads nothing is dropped once it falls behind; publish never waits for it."""
        # a short queue and big events: the socket's buffers fill first, so the stream's thread is blocked
        # in a write when the drop comes
        monkeypatch.setattr(web, "SSE_BACKLOG", 8)
        slow = Stream(served)
        assert slow.block() == ["retry: 2000"]
        big = "x" * 262_144
        done = threading.Event()
        took: list[float] = []

        def flood() -> None:
            for i in range(200):
                t0 = time.monotonic()
                served.server.publish({"event": "file.matched", "i": i, "pad": big})
                took.append(time.monotonic() - t0)
            done.set()

        t = threading.Thread(target=flood, name="flood")
        t.start()
        finished = done.wait(20)
        t.join(20)
        try:
            assert finished, "publish blocked behind a client that reads nothing"
            assert max(took) < 0.5, max(took)
            # its server thread, blocked writing to a full socket, is let go at once, before the client reads
            for worker in [x for x in threading.enumerate() if "process_request" in x.name]:
                worker.join(5)
                assert not worker.is_alive(), "the dropped stream's thread still waits on its client"
            # dropped: the server ended its stream; what the kernel had buffered is all it gets
            tail = slow.read_to_eof(timeout=10)
            received = tail.count(b"data: ")
            assert received < 200
            assert served.server.streams == 0
            with stream(served) as fresh:  # the server still streams to a new client
                served.server.publish({"event": "file.matched", "i": "after"})
                assert fresh.event()["i"] == "after"
        finally:
            slow.close()

    def test_closed_client_does_not_break_publish(self, served: Served) -> None:
        """A client that hung up costs publish nothing, and the others still receive."""
        gone = Stream(served)
        assert gone.block() == ["retry: 2000"]
        gone.close()
        with stream(served) as st:
            for i in range(50):
                served.server.publish({"event": "file.matched", "i": i})
            assert [st.event()["i"] for _ in range(50)] == list(range(50))

    def test_close_ends_streams_and_joins_threads(self, tmp_path: Path) -> None:
        """close() ends every open stream at once, joins its threads and removes web.json and web.token."""
        s = start(tmp_path)
        a, b = Stream(s), Stream(s)
        try:
            assert a.block() == b.block() == ["retry: 2000"]
            idle = http.client.HTTPConnection("127.0.0.1", s.port, timeout=5)  # a keep-alive connection, idle
            idle.request("GET", "/healthz", headers={"Host": s.host})
            idle.getresponse().read()
            t0 = time.monotonic()
            s.server.close()
            assert time.monotonic() - t0 < 5
            assert a.read_to_eof() == b"" and b.read_to_eof() == b""
            assert not [t for t in threading.enumerate() if t.name == "hfwatchd-web" or "process_request" in t.name]
            assert not (s.state_dir / DASHBOARD_FILE).exists() and not (s.state_dir / TOKEN_FILE).exists()
            assert read_dashboard(s.state_dir) is None
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", s.port), timeout=2).close()
            idle.close()
        finally:
            a.close()
            b.close()

    def test_stream_limit(self, served: Served) -> None:
        """Beyond MAX_STREAMS concurrent streams, a new one gets 503 with Retry-After instead of a thread."""
        streams = [Stream(served) for _ in range(MAX_STREAMS)]
        try:
            for st in streams:
                assert st.block() == ["retry: 2000"]
            extra = request(served, "/api/events")
            assert extra.status == 503 and extra.header("Retry-After") == "5"
        finally:
            for st in streams:
                st.close()

    def test_stream_needs_token_and_host(self, served: Served) -> None:
        """/api/events is refused without the token and with a foreign Host."""
        assert request(served, "/api/events", cookie=False).status == 403
        st = Stream(served, host="evil.example")
        try:
            assert st.status_line.startswith("HTTP/1.1 421")
        finally:
            st.close()
        assert served.server.streams == 0


class TestMetrics:
    def test_exposition_parses(self) -> None:
        """Every family has HELP and TYPE before its samples; counters end in _total; values are as given."""
        m = Metrics(verdicts={"matched": 7, "mismatch": 2}, hashed_bytes=10**12, queued=3, manifest_failures=4,
                    last_scan={"/a": 1764630000.25, "/b": 1764630001.0})
        fams = parse_exposition(render_metrics(m))
        assert set(fams) == {"hfwatchd_verdicts_total", "hfwatchd_hashed_bytes_total", "hfwatchd_queued_files",
                             "hfwatchd_manifest_failures_total", "hfwatchd_last_scan_timestamp_seconds"}
        for name, fam in fams.items():
            assert fam["help"] and fam["type"] in ("counter", "gauge"), name
            assert (fam["type"] == "counter") == name.endswith("_total"), name
        verdicts = {lab["status"]: v for lab, v in fams["hfwatchd_verdicts_total"]["samples"]}
        assert verdicts == {"matched": 7, "mismatch": 2, "incomplete": 0, "unknown": 0}
        assert fams["hfwatchd_hashed_bytes_total"]["samples"] == [({}, 1e12)]
        assert fams["hfwatchd_queued_files"]["samples"] == [({}, 3)]
        assert fams["hfwatchd_manifest_failures_total"]["samples"] == [({}, 4)]
        assert fams["hfwatchd_last_scan_timestamp_seconds"]["samples"] == [
            ({"folder": "/a"}, 1764630000.25), ({"folder": "/b"}, 1764630001.0)]

    def test_label_values_escaped(self) -> None:
        """Backslash, double quote and newline in a folder are escaped; a non-UTF-8 byte becomes \\udcXX text."""
        odd = 'C:\\dl "quoted"\nline2'
        raw = os.fsdecode(b"/caf\xe9")
        text = render_metrics(Metrics({}, 0, 0, 0, {odd: 1.0, raw: 2.0}))
        assert 'folder="C:\\\\dl \\"quoted\\"\\nline2"' in text
        text.encode("utf-8")  # a surrogate would raise here
        folders = {lab["folder"]: v for lab, v in parse_exposition(text)["hfwatchd_last_scan_timestamp_seconds"]
                   ["samples"]}
        assert folders == {odd: 1.0, "/caf\\udce9": 2.0}

    def test_empty_daemon(self) -> None:
        """A daemon that has judged nothing exposes zeroes, and no scan sample yet."""
        fams = parse_exposition(render_metrics(Metrics({}, 0, 0, 0, {})))
        assert all(v == 0 for _, v in fams["hfwatchd_verdicts_total"]["samples"])
        assert fams["hfwatchd_last_scan_timestamp_seconds"]["samples"] == []

    def test_metrics_endpoint(self, served: Served) -> None:
        """/metrics serves the exposition with Prometheus's text content type."""
        r = request(served, "/metrics")
        assert r.status == 200
        assert r.header("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
        fams = parse_exposition(r.body.decode())
        assert fams["hfwatchd_queued_files"]["samples"] == [({}, 2)]


class TestLifecycle:
    def test_port_in_use_raises_oserror(self, tmp_path: Path) -> None:
        """start() on a port another socket listens on raises OSError and leaves no file and no thread."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            server = WebServer(f"127.0.0.1:{port}", tmp_path / "state", status=list, metrics=str, log=RecordingLog())
            before = set(threading.enumerate())
            with pytest.raises(OSError):
                server.start()
            assert set(threading.enumerate()) == before
            assert not (tmp_path / "state" / DASHBOARD_FILE).exists()
            server.close()  # harmless after a failed start

    def test_fixed_port(self, tmp_path: Path) -> None:
        """A configured port is the one served, and the URL says so."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        s = start(tmp_path, listen=f"localhost:{port}")
        try:
            assert s.url == f"http://localhost:{port}/"
            assert request(s, "/api/status", host=f"localhost:{port}").status == 200
        finally:
            s.server.close()

    def test_started_is_logged_without_token(self, served: Served) -> None:
        """start() logs web.started with the URL, never the token."""
        (line,) = served.log.events("web.started")
        assert line["url"] == served.url
        assert served.token not in json.dumps(served.log.lines)

    def test_dashboard_of_dead_daemon(self, tmp_path: Path) -> None:
        """read_dashboard ignores a web.json left by a daemon killed with -9 (its pid is gone)."""
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
        (tmp_path / DASHBOARD_FILE).write_text(json.dumps(
            {"url": "http://127.0.0.1:1/", "token": "t", "pid": int(dead.stdout)}))
        assert read_dashboard(tmp_path) is None

    def test_dashboard_of_closed_port(self, tmp_path: Path) -> None:
        """read_dashboard ignores a web.json whose port nobody listens on (a recycled pid)."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        (tmp_path / DASHBOARD_FILE).write_text(json.dumps(
            {"url": f"http://127.0.0.1:{port}/", "token": "t", "pid": os.getpid()}))
        assert read_dashboard(tmp_path) is None

    @pytest.mark.parametrize("content", ["", "{", "[]", '{"url": 1}', '{"url": "x", "token": "t", "pid": "no"}'])
    def test_dashboard_file_damaged(self, tmp_path: Path, content: str) -> None:
        """A damaged web.json reads as no page, never an exception."""
        (tmp_path / DASHBOARD_FILE).write_text(content)
        assert read_dashboard(tmp_path) is None


class TestWebConfig:
    def parse(self, web: dict[str, Any] | None) -> str:
        data: dict[str, Any] = {"watch": [{"path": "/x", "repos": ["org/name"]}]}
        if web is not None:
            data["web"] = web
        return parse_config(data, base=Path("/")).web_listen

    def test_default(self) -> None:
        """Without a [web] table the page listens on 127.0.0.1:8711."""
        assert self.parse(None) == "127.0.0.1:8711"

    @pytest.mark.parametrize("listen", ["", "127.0.0.1:0", "127.0.0.1:8711", "[::1]:8711", "localhost:9000",
                                        "127.1.2.3:80"])
    def test_accepted(self, listen: str) -> None:
        """Off, a free port, and loopback addresses are accepted as written."""
        assert self.parse({"listen": listen}) == listen

    @pytest.mark.parametrize(("listen", "why"), [
        ("0.0.0.0:8711", "not a loopback address"), ("192.168.1.5:8711", "not a loopback address"),
        ("[::]:8711", "not a loopback address"), ("example.com:80", "not a loopback address"),
        ("127.0.0.1", "expected \"HOST:PORT\""), ("127.0.0.1:99999", "port must be"), (":8711", "expected"),
    ])
    def test_refused(self, listen: str, why: str) -> None:
        """A non-loopback host or a malformed address is a ConfigError naming web.listen."""
        with pytest.raises(ConfigError, match=r"^web\.listen: .*" + re.escape(why)):
            self.parse({"listen": listen})

    def test_unknown_key_and_type(self) -> None:
        """[web] refuses unknown keys and a listen that is not a string."""
        with pytest.raises(ConfigError, match=r"^web\.port: unknown key"):
            self.parse({"port": 1})
        with pytest.raises(ConfigError, match=r"^web\.listen: expected str"):
            self.parse({"listen": 8711})

    def test_daemon_exits_78(self, tmp_path: Path) -> None:
        """The daemon refuses a non-loopback [web] listen before anything starts: exit 78, key path in stderr."""
        cfg = write_config(tmp_path / "c.toml", hub=None, watches=[{"path": tmp_path, "repos": ["org/name"]}],
                           state_dir=tmp_path / "state")
        cfg.write_text(cfg.read_text() + '[web]\nlisten = "0.0.0.0:8711"\n')
        with pytest.raises(ConfigError):
            load_config(cfg)
        r = run_cli("--config", str(cfg))
        assert r.returncode == 78, r.stderr
        assert "web.listen: 0.0.0.0 is not a loopback address" in r.stderr


class TestOpenCommand:
    def config(self, tmp_path: Path) -> Path:
        return write_config(tmp_path / "c.toml", hub=None, watches=[{"path": tmp_path, "repos": ["org/name"]}],
                            state_dir=tmp_path / "state")

    def test_no_daemon_exits_69(self, tmp_path: Path) -> None:
        """`hfwatchd open --print` without a running page says so and exits 69."""
        r = run_cli("open", "--config", str(self.config(tmp_path)), "--print")
        assert r.returncode == 69
        assert r.stdout == ""
        assert "no running daemon serves a page" in r.stderr

    def test_print_url_with_token(self, tmp_path: Path) -> None:
        """`open --print` prints the live page's URL with this run's token."""
        cfg = self.config(tmp_path)
        s = start(tmp_path)
        try:
            r = run_cli("open", "--config", str(cfg), "--print")
            assert r.returncode == 0, r.stderr
            assert r.stdout == f"{s.url}?token={s.token}\n"
        finally:
            s.server.close()

    def test_opens_browser(self, tmp_path: Path) -> None:
        """`open` hands the URL with its token to the user's browser ($BROWSER) and prints none of it."""
        cfg = self.config(tmp_path)
        got = tmp_path / "browser-argv"
        fake = tmp_path / "fake-browser"
        fake.write_text(f'#!/bin/sh\nprintf "%s" "$1" > {got}\n')
        fake.chmod(0o755)
        s = start(tmp_path)
        try:
            r = subprocess.run([sys.executable, "-m", "hfwatchd", "open", "--config", str(cfg)],
                               env=cli_env(BROWSER=str(fake)), capture_output=True, text=True, timeout=60,
                               check=False)
            assert r.returncode == 0, r.stderr
            assert got.read_text() == f"{s.url}?token={s.token}"
            assert s.token not in r.stdout + r.stderr
        finally:
            s.server.close()
