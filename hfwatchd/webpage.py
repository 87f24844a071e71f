# ruff: noqa: E501 - the page is HTML, CSS and JS; its lines are theirs, not Python's
"""The daemon's page: one self-contained HTML document (CSS and JS inline, no CDN, no build step).

The script builds every node with createElement/textContent (file names come from the Internet, so
never innerHTML), renders the `/api/status` document, and re-fetches it when `/api/events` reports a
verdict, or every 1.5 s while a download is running. The CSP allows only the nonce'd style and script.
"""

from __future__ import annotations

_NONCE = "__NONCE__"


def render_page(nonce: str) -> str:
    """The page with its per-response CSP nonce."""
    return PAGE.replace(_NONCE, nonce)


PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>hfwatchd</title>
<link rel="icon" href="data:,">
<style nonce="__NONCE__">
:root {
  --bg: #f4f5f7; --panel: #fff; --ink: #1d2330; --muted: #5d6675; --line: #dde1e7; --head: #f8f9fb;
  --bar: #2b3442; --bar-ink: #f2f4f8; --track: #e4e7ec;
  --ok: #1e7d3c; --ok-bg: #e3f4e8; --bad: #b3261e; --bad-bg: #fbe7e5; --warn: #8a5300; --warn-bg: #fdf0d5;
  --miss: #45536b; --miss-bg: #e8ecf3; --pend: #1f5fae; --pend-bg: #e3eefb; --unk: #5d6675; --unk-bg: #eceef1;
  --link: #1f5fae; --flash: #fff3b0;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #15181e; --panel: #1e222a; --ink: #e6e9ef; --muted: #a0a8b6; --line: #323845; --head: #242933;
    --bar: #0f1216; --bar-ink: #e6e9ef; --track: #343a47;
    --ok: #6fd08c; --ok-bg: #1c3525; --bad: #ff8a80; --bad-bg: #3d1f1d; --warn: #f5c26b; --warn-bg: #3a2e16;
    --miss: #b4c0d6; --miss-bg: #2a303c; --pend: #8ab8f5; --pend-bg: #1d2b40; --unk: #a0a8b6; --unk-bg: #2a2e36;
    --link: #8ab8f5; --flash: #4a4420;
  }
}
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink); }
a { color: var(--link); }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace; font-size: .92em; }
.sr-only { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
header.bar { display: flex; align-items: center; gap: 1rem; padding: .6rem 1.25rem; background: var(--bar); color: var(--bar-ink); }
header.bar h1 { font-size: 1.15rem; margin: 0; letter-spacing: .02em; }
header.bar h1 .tag { font-weight: 400; opacity: .75; margin-left: .5rem; font-size: .9rem; }
.conn { margin-left: auto; display: inline-flex; align-items: center; gap: .4rem; font-size: .9rem; }
.conn::before { content: ""; width: .6rem; height: .6rem; border-radius: 50%; background: #9aa3b2; }
.conn.live::before { background: #4cd07d; }
.conn.down::before { background: #ff6b5e; }
.last { font-size: .85rem; opacity: .85; max-width: 40vw; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
main { max-width: 1200px; margin: 0 auto; padding: 1rem 1.25rem 2rem; }
.controls { display: flex; flex-wrap: wrap; align-items: center; gap: .75rem; margin-bottom: 1rem; }
.filters { display: inline-flex; flex-wrap: wrap; border: 1px solid var(--line); border-radius: .4rem; overflow: hidden; background: var(--panel); }
.filters button { font: inherit; border: 0; border-right: 1px solid var(--line); background: transparent; color: var(--ink); padding: .35rem .7rem; cursor: pointer; }
.filters button:last-child { border-right: 0; }
.filters button[aria-pressed="true"] { background: var(--bar); color: var(--bar-ink); }
.filters button .n { color: var(--muted); margin-left: .3rem; font-variant-numeric: tabular-nums; }
.filters button[aria-pressed="true"] .n { color: inherit; opacity: .8; }
.search { display: inline-flex; align-items: center; gap: .4rem; color: var(--muted); }
.search input { font: inherit; padding: .35rem .55rem; border: 1px solid var(--line); border-radius: .4rem; background: var(--panel); color: var(--ink); min-width: 16rem; }
:focus-visible { outline: 2px solid var(--link); outline-offset: 2px; }
.notice { padding: .75rem 1rem; border-radius: .4rem; background: var(--bad-bg); color: var(--bad); margin-bottom: 1rem; }
.watch { background: var(--panel); border: 1px solid var(--line); border-radius: .5rem; margin-bottom: 1.25rem; overflow: hidden; }
.watch > h2 { margin: 0; padding: .6rem 1rem; font-size: 1rem; background: var(--head); border-bottom: 1px solid var(--line); display: flex; gap: .75rem; align-items: baseline; flex-wrap: wrap; }
.watch > h2 .sub { font-weight: 400; color: var(--muted); font-size: .88rem; }
.repo { border-bottom: 1px solid var(--line); }
.repo:last-child { border-bottom: 0; }
.repo-head { display: grid; grid-template-columns: minmax(14rem, 1.2fr) 1fr 1fr; gap: .5rem 1.5rem; padding: .75rem 1rem; align-items: center; }
.repo-head h3 { margin: 0; font-size: 1rem; word-break: break-all; }
.repo-head .meta { color: var(--muted); font-size: .85rem; margin-top: .15rem; }
.meter-label { display: flex; justify-content: space-between; font-size: .85rem; color: var(--muted); margin-bottom: .2rem; }
.meter-label b { color: var(--ink); font-weight: 600; font-variant-numeric: tabular-nums; }
progress { -webkit-appearance: none; appearance: none; display: block; width: 100%; height: .55rem; border: 0; border-radius: .3rem; background: var(--track); overflow: hidden; }
progress::-webkit-progress-bar { background: var(--track); border-radius: .3rem; }
progress::-webkit-progress-value { background: var(--ok); border-radius: .3rem; }
progress::-moz-progress-bar { background: var(--ok); border-radius: .3rem; }
progress.dl::-webkit-progress-value { background: var(--pend); }
progress.dl::-moz-progress-bar { background: var(--pend); }
.chips { grid-column: 1 / -1; display: flex; flex-wrap: wrap; gap: .35rem; }
.chip { font-size: .8rem; padding: .08rem .5rem; border-radius: 1rem; font-variant-numeric: tabular-nums; }
.note { grid-column: 1 / -1; color: var(--warn); font-size: .88rem; }
details > summary { cursor: pointer; padding: .35rem 1rem; color: var(--muted); font-size: .88rem; user-select: none; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; min-width: 64rem; font-size: .9rem; table-layout: fixed; }
col.c-status { width: 9.5rem; } col.c-size { width: 10rem; } col.c-how { width: 8rem; } col.c-when { width: 7.5rem; } col.c-get { width: 8.5rem; }
th, td { text-align: left; padding: .35rem .75rem; border-top: 1px solid var(--line); vertical-align: top; }
th { font-weight: 600; color: var(--muted); font-size: .8rem; text-transform: uppercase; letter-spacing: .04em; background: var(--head); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.name { word-break: break-all; }
td.name .local { display: block; color: var(--muted); font-size: .82rem; }
td.when { white-space: nowrap; color: var(--muted); }
tr.changed td { animation: flash 2.5s ease-out; }
@keyframes flash { from { background: var(--flash); } to { background: transparent; } }
.badge { display: inline-block; min-width: 5.8rem; text-align: center; font-size: .78rem; font-weight: 600; padding: .1rem .45rem; border-radius: .3rem; white-space: nowrap; }
.s-matched { color: var(--ok); background: var(--ok-bg); }
.s-mismatch { color: var(--bad); background: var(--bad-bg); }
.s-incomplete { color: var(--warn); background: var(--warn-bg); }
.s-missing { color: var(--miss); background: var(--miss-bg); }
.s-pending, .s-downloading { color: var(--pend); background: var(--pend-bg); }
.s-unknown { color: var(--unk); background: var(--unk-bg); }
td.status progress { margin-top: .25rem; height: .35rem; }
a.dl-link { white-space: nowrap; }
.more { padding: .4rem 1rem .7rem; color: var(--muted); font-size: .85rem; }
.downloads { padding: .5rem 1rem .75rem; border-bottom: 1px solid var(--line); }
.downloads h3, .unknown h3 { font-size: .9rem; margin: .25rem 0 .4rem; }
.downloads ul { list-style: none; margin: 0; padding: 0; display: grid; gap: .45rem; }
.downloads li { display: grid; grid-template-columns: minmax(10rem, 2fr) 1fr auto; gap: .75rem; align-items: center; font-size: .88rem; }
.downloads li .what { word-break: break-all; }
.unknown h3 { padding: .5rem 1rem 0; }
.empty { color: var(--muted); padding: 2rem; text-align: center; }
footer { max-width: 1200px; margin: 0 auto; padding: 0 1.25rem 2rem; color: var(--muted); font-size: .85rem; }
@media (max-width: 760px) { .repo-head { grid-template-columns: 1fr; } .last { display: none; } }
</style>
</head>
<body>
<header class="bar">
  <h1>hfwatchd<span class="tag">downloads, verified</span></h1>
  <span class="last" id="last"></span>
  <span class="conn" id="conn" role="status">connecting</span>
</header>
<main>
  <div class="controls">
    <div class="filters" id="filters" role="group" aria-label="Show files by status"></div>
    <label class="search">Name <input type="search" id="q" placeholder="filter by file name" autocomplete="off"></label>
  </div>
  <div class="notice" id="notice" role="alert" hidden></div>
  <div id="watches" aria-busy="true"></div>
</main>
<footer>Updated <time id="updated">never</time> · <a href="/api/status">status JSON</a> · <a href="/metrics">metrics</a></footer>
<div class="sr-only" id="announce" aria-live="polite"></div>
<script nonce="__NONCE__">
"use strict";
(() => {
  const ROW_LIMIT = 500;        // rows per table; the filter narrows the rest down
  const POLL_MS = 1500;         // while a download runs
  const DEBOUNCE_MS = 120;      // verdicts arriving together cost one fetch
  const TODO = ["mismatch", "incomplete", "missing"];
  const ORDER = { mismatch: 0, incomplete: 1, missing: 2, pending: 3, matched: 4, unknown: 5 };
  const FILTERS = [
    ["all", "All"], ["todo", "To download"], ["matched", "Matched"], ["mismatch", "Mismatch"],
    ["incomplete", "Incomplete"], ["missing", "Missing"], ["pending", "Pending"], ["unknown", "Unknown"],
  ];
  const BY = { path: "by path", name: "by name", content: "by content" };

  const $ = (id) => document.getElementById(id);
  let doc = null, filter = "all", query = "", closed = new Set(), lastStatus = null;
  let timer = 0, pollTimer = 0, inflight = false, again = false, dead = false, lastText = null, refreshes = 0;

  // every node is built here: strings become text nodes, never markup
  function el(tag, attrs, ...kids) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const kid of kids) {
      if (kid === null || kid === undefined || kid === false) continue;
      node.append(typeof kid === "string" || typeof kid === "number" ? document.createTextNode(String(kid)) : kid);
    }
    return node;
  }

  function bytes(n) {
    if (n === null || n === undefined) return "—";
    const units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let i = 0, v = Number(n);
    while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
    return (i === 0 ? String(v) : v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)) + " " + units[i];
  }
  const exact = (n) => (n === null || n === undefined) ? "" : Number(n).toLocaleString() + " bytes";
  const pct = (a, b) => b > 0 ? Math.min(100, Math.floor(100 * a / b)) : 0;

  function agoText(t) {
    const s = Math.max(0, Math.round((Date.now() - t) / 1000));
    return s < 45 ? "just now" : s < 3600 ? Math.round(s / 60) + " min ago"
      : s < 86400 ? Math.round(s / 3600) + " h ago" : new Date(t).toLocaleDateString();
  }

  function ago(iso) {
    if (!iso) return null;
    const t = Date.parse(iso);
    if (Number.isNaN(t)) return null;
    return el("time", { datetime: iso, title: new Date(t).toLocaleString() }, agoText(t));
  }

  function safeUrl(u) {
    try { const p = new URL(u); return (p.protocol === "https:" || p.protocol === "http:") ? p.href : null; }
    catch (e) { return null; }
  }

  function progress(value, max, label, cls) {
    const p = el("progress", { max: Math.max(1, max), value: Math.min(value, Math.max(1, max)), class: cls });
    p.setAttribute("aria-label", label);
    return p;
  }

  function shows(status, name) {
    if (query && !name.toLowerCase().includes(query)) return false;
    if (filter === "all") return true;
    if (filter === "todo") return TODO.includes(status);
    return status === filter;
  }

  function baseName(p) { const i = p.lastIndexOf("/"); return i < 0 ? p : p.slice(i + 1); }

  // ---------------------------------------------------------------- rendering

  function fileRow(w, r, f, dl, seen) {
    const key = w.path + "\0" + r.repo + "\0" + f.rfilename;
    seen.set(key, f.status + (dl ? "+dl" : ""));
    const tr = el("tr", { "data-status": f.status, "data-rfilename": f.rfilename });
    if (lastStatus && lastStatus.has(key) && lastStatus.get(key) !== seen.get(key)) tr.className = "changed";
    const status = el("td", { class: "status" });
    if (dl && f.status !== "matched") {
      const p = pct(dl.size, dl.expected_size || f.expected_size);
      status.append(el("span", { class: "badge s-downloading" }, "downloading " + p + "%"),
        progress(dl.size, dl.expected_size || f.expected_size || 1, "downloaded " + p + "%", "dl"));
    } else {
      status.append(el("span", { class: "badge s-" + f.status }, f.status));
    }
    const name = el("td", { class: "name" }, el("span", { class: "rfilename mono" }, f.rfilename));
    if (f.path && !f.path.endsWith("/" + f.rfilename)) {
      name.append(el("span", { class: "local", title: f.path }, "as " + baseName(f.path)));
    }
    let size;
    if (f.status === "incomplete" && f.size !== null && f.size !== undefined) {
      size = el("td", { class: "num", title: exact(f.size) + " of " + exact(f.expected_size) },
        bytes(f.size) + " of " + bytes(f.expected_size));
    } else {
      size = el("td", { class: "num", title: exact(f.expected_size) }, bytes(f.expected_size));
    }
    const how = el("td", {}, f.matched_by ? (BY[f.matched_by] || f.matched_by) : "—");
    const when = el("td", { class: "when" }, ago(f.judged_at) || "—");
    const get = el("td", {});
    const url = f.url ? safeUrl(f.url) : null;
    if (url && TODO.includes(f.status) && !dl) {  // no second download of a file already on its way
      const a = el("a", { class: "dl-link", href: url, download: baseName(f.rfilename), rel: "noreferrer" },
        f.status === "mismatch" ? "download again" : "download");
      a.setAttribute("aria-label", (f.status === "mismatch" ? "download again " : "download ") + f.rfilename);
      a.title = "the file at commit " + (f.commit || r.commit || "?");
      get.append(a);
    }
    tr.append(status, name, size, how, when, get);
    return tr;
  }

  function table(caption, heads, rows, total) {
    const cols = el("colgroup", {}, ...heads.map(([, , w]) => el("col", { class: w ? "c-" + w : null })));
    const thead = el("thead", {}, el("tr", {}, ...heads.map(([t, c]) => el("th", { scope: "col", class: c }, t))));
    const t = el("table", {}, el("caption", { class: "sr-only" }, caption), cols, thead, el("tbody", {}, ...rows));
    const box = el("div", { class: "scroll" }, t);
    if (total > rows.length) {
      box.append(el("p", { class: "more" }, (total - rows.length) + " more rows not shown: narrow them with the filter"));
    }
    return box;
  }

  function repoBlock(w, r, seen) {
    const c = r.counts || {};
    const matched = c.matched || 0;
    const dls = new Map();
    for (const d of w.downloading || []) if (d.repo === r.repo && d.rfilename) dls.set(d.rfilename, d);
    const head = el("div", { class: "repo-head" },
      el("div", {}, el("h3", {}, r.repo),
        el("div", { class: "meta" },
          r.commit ? el("code", { title: r.commit }, r.commit.slice(0, 12)) : "no commit yet",
          r.source ? " · manifest from " + r.source : "")),
      el("div", {},
        el("div", { class: "meter-label" }, el("span", {}, "Files"), el("b", {}, matched + " / " + r.expected + " matched")),
        progress(matched, r.expected, "files matched: " + matched + " of " + r.expected)),
      el("div", {},
        el("div", { class: "meter-label" }, el("span", {}, "Bytes"),
          el("b", { title: exact(r.bytes_matched) + " of " + exact(r.bytes_expected) },
            bytes(r.bytes_matched) + " / " + bytes(r.bytes_expected))),
        progress(r.bytes_matched || 0, r.bytes_expected || 0, "bytes matched: " + pct(r.bytes_matched || 0, r.bytes_expected || 0) + "%")));
    const chips = el("div", { class: "chips" });
    for (const s of ["matched", "mismatch", "incomplete", "missing", "pending"]) {
      if (c[s]) chips.append(el("span", { class: "chip s-" + s }, c[s] + " " + s));
    }
    if (dls.size) chips.append(el("span", { class: "chip s-downloading" }, dls.size + " downloading"));
    head.append(chips);
    if (r.note) head.append(el("div", { class: "note" }, r.note));
    const files = (r.files || []).slice().sort((a, b) =>
      (ORDER[a.status] ?? 9) - (ORDER[b.status] ?? 9) || (a.rfilename < b.rfilename ? -1 : a.rfilename > b.rfilename ? 1 : 0));
    const visible = files.filter((f) => shows(f.status, f.rfilename + " " + (f.path || "")));
    const rows = visible.slice(0, ROW_LIMIT).map((f) => fileRow(w, r, f, dls.get(f.rfilename), seen));
    const key = w.path + "\0" + r.repo;
    const det = el("details", { open: !closed.has(key) },
      el("summary", {}, visible.length === files.length ? files.length + " files" : visible.length + " of " + files.length + " files"),
      table("Files of " + r.repo, [["Status", null, "status"], ["File"], ["Size", "num", "size"], ["Recognised", null, "how"],
        ["Judged", null, "when"], ["Download", null, "get"]],
        rows, visible.length));
    det.addEventListener("toggle", () => { if (det.open) closed.delete(key); else closed.add(key); });
    return el("article", { class: "repo", "data-repo": r.repo }, head, det);
  }

  function downloadsBlock(w) {
    const list = el("ul");
    for (const d of w.downloading) {
      const p = pct(d.size, d.expected_size || 0);
      const what = d.rfilename ? (d.repo ? d.repo + ": " : "") + d.rfilename : baseName(d.path);
      list.append(el("li", {},
        el("span", { class: "what mono", title: d.path }, what),
        d.expected_size ? progress(d.size, d.expected_size, "downloading " + what + " " + p + "%", "dl") : el("span"),
        el("span", { class: "num" }, d.expected_size ? "downloading " + p + "% · " + bytes(d.size) + " of " + bytes(d.expected_size)
          : "downloading · " + bytes(d.size))));
    }
    return el("div", { class: "downloads" }, el("h3", {}, "Downloading"), list);
  }

  function unknownBlock(w) {
    const files = (w.files || []).filter((f) => shows(f.status || "unknown", f.path));
    if (!files.length) return null;
    const rows = files.slice(0, ROW_LIMIT).map((f) => el("tr", { "data-status": f.status || "unknown" },
      el("td", { class: "status" }, el("span", { class: "badge s-" + (f.status || "unknown") }, f.status || "unknown")),
      el("td", { class: "name" }, el("span", { class: "rfilename mono" }, f.path)),
      el("td", { class: "num", title: exact(f.size) }, bytes(f.size)),
      el("td", { class: "when" }, ago(f.judged_at) || "—")));
    return el("section", { class: "unknown" }, el("h3", {}, "Local files that match no watched repo"),
      table("Unknown files in " + w.path, [["Status", null, "status"], ["Path"], ["Size", "num", "size"], ["Seen", null, "when"]], rows, files.length));
  }

  function render() {
    const seen = new Map();
    const root = $("watches");
    const out = [];
    const tally = Object.fromEntries(FILTERS.map(([k]) => [k, 0]));
    for (const w of doc) {
      for (const r of w.repos || []) for (const f of r.files || []) {
        tally.all++; tally[f.status] = (tally[f.status] || 0) + 1; if (TODO.includes(f.status)) tally.todo++;
      }
      for (const f of w.files || []) { tally.all++; tally[f.status || "unknown"]++; }
      const bits = [(w.repos || []).length + ((w.repos || []).length === 1 ? " repo" : " repos")];
      if (w.unknown) bits.push(w.unknown + " unknown");
      if (w.pending) bits.push(w.pending + " pending");
      if ((w.downloading || []).length) bits.push(w.downloading.length + " downloading");
      const sec = el("section", { class: "watch", "data-path": w.path },
        el("h2", {}, el("span", { class: "mono" }, w.path), el("span", { class: "sub" }, bits.join(" · "))));
      if ((w.downloading || []).length) sec.append(downloadsBlock(w));
      for (const r of w.repos || []) sec.append(repoBlock(w, r, seen));
      const u = unknownBlock(w);
      if (u) sec.append(u);
      out.push(sec);
    }
    if (!out.length) out.push(el("p", { class: "empty" }, "Nothing is watched yet: add a [[watch]] to the config file."));
    // keyboard focus survives the rebuild: the same link or row control gets it back
    const focused = document.activeElement && root.contains(document.activeElement) ? focusKey(document.activeElement) : null;
    root.replaceChildren(...out);
    if (focused) { const again = findFocus(focused); if (again) again.focus(); }
    root.setAttribute("aria-busy", "false");
    for (const b of $("filters").querySelectorAll("button")) b.querySelector(".n").textContent = String(tally[b.dataset.filter] || 0);
    lastStatus = seen;
  }

  function focusKey(node) {
    const tr = node.closest("tr[data-rfilename]"), art = node.closest("article.repo");
    if (node.tagName === "SUMMARY" && art) return { repo: art.dataset.repo, summary: true };
    return tr && art ? { repo: art.dataset.repo, rfilename: tr.dataset.rfilename } : null;
  }

  function findFocus(key) {
    const art = [...document.querySelectorAll("article.repo")].find((a) => a.dataset.repo === key.repo);
    if (!art) return null;
    if (key.summary) return art.querySelector("summary");
    const tr = [...art.querySelectorAll("tr[data-rfilename]")].find((r) => r.dataset.rfilename === key.rfilename);
    return tr ? tr.querySelector("a") : null;
  }

  // ---------------------------------------------------------------- live updates

  function setConn(state, text) { const c = $("conn"); c.className = "conn " + state; c.textContent = text; }

  function stop(message) {
    dead = true;
    const n = $("notice"); n.textContent = message; n.hidden = false;
    setConn("down", "disconnected");
    if (source) source.close();
  }

  function schedule(delay) {
    if (timer || dead) return;
    timer = setTimeout(() => { timer = 0; refresh(); }, delay);
  }

  async function refresh() {
    if (inflight) { again = true; return; }
    inflight = true;
    clearTimeout(pollTimer); pollTimer = 0;
    try {
      const resp = await fetch("/api/status", { cache: "no-store", credentials: "same-origin" });
      if (resp.status === 403) { stop("This page's token is no longer valid: the daemon restarted. Run `hfwatchd open` again."); return; }
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      const text = await resp.text();
      $("notice").hidden = true;
      $("updated").textContent = new Date().toLocaleTimeString();
      if (text !== lastText) {  // unchanged: the DOM (and any text the user is selecting) stays as it is
        lastText = text;
        doc = JSON.parse(text);
        render();
      }
      document.body.dataset.refreshes = String(++refreshes);  // how many status reads were handled
      if (doc.some((w) => (w.downloading || []).length)) pollTimer = setTimeout(refresh, POLL_MS);
    } catch (e) {
      if (!dead) { const n = $("notice"); n.textContent = "The daemon does not answer (" + e.message + "); retrying."; n.hidden = false; }
      pollTimer = setTimeout(refresh, 3000);
    } finally {
      inflight = false;
      if (again) { again = false; schedule(0); }
    }
  }

  let source = null;
  function connect() {
    source = new EventSource("/api/events");
    source.addEventListener("open", () => { setConn("live", "live"); schedule(0); });
    // the stream broke: the daemon stopped, or restarted with a new token; a fetch tells which
    source.addEventListener("error", () => { if (!dead) { setConn("down", "reconnecting"); schedule(500); } });
    source.addEventListener("message", (m) => {
      let ev;
      try { ev = JSON.parse(m.data); } catch (e) { return; }
      const what = (ev.event || "verdict").replace(/^file\./, "") + ": " + (ev.rfilename || (ev.path ? baseName(String(ev.path)) : ""));
      $("last").textContent = what;
      $("announce").textContent = what;
      schedule(DEBOUNCE_MS);
    });
  }

  // ---------------------------------------------------------------- controls

  for (const [k, label] of FILTERS) {
    const b = el("button", { type: "button", "data-filter": k, "aria-pressed": k === filter ? "true" : "false" },
      label, el("span", { class: "n" }, "0"));
    b.addEventListener("click", () => {
      filter = k;
      for (const o of $("filters").querySelectorAll("button")) o.setAttribute("aria-pressed", o === b ? "true" : "false");
      if (doc) render();
    });
    $("filters").append(b);
  }
  $("q").addEventListener("input", (e) => { query = e.target.value.trim().toLowerCase(); if (doc) render(); });
  // relative times ("3 min ago") stay true without a fetch
  setInterval(() => {
    for (const t of document.querySelectorAll("#watches time[datetime]")) t.textContent = agoText(Date.parse(t.getAttribute("datetime")));
  }, 30000);

  connect();
  refresh();
})();
</script>
</body>
</html>
"""
