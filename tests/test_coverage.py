"""The coverage read model and the repair lists: values in, values out (no files, threads or sockets)."""

from __future__ import annotations

import os
from pathlib import Path

from hfwatchd.config import RepoConfig, WatchConfig
from hfwatchd.coverage import cover, status_document
from hfwatchd.hashing import Signature
from hfwatchd.manifest import Manifest, ManifestEntry, RepoRef, Status
from hfwatchd.repair import aria2_input, wget_list
from hfwatchd.state import FileRow

REF = RepoRef.parse("datasets/org/data")
COMMIT = "c" * 40
EP = "http://127.0.0.1:1"
WATCH = Path("/w")


def entry(name: str, size: int, lfs: bool = True) -> ManifestEntry:
    return ManifestEntry(name, size, ("1" * 64) if lfs else None, "2" * 40)


def manifest(*entries: ManifestEntry) -> Manifest:
    return Manifest(REF, COMMIT, {e.rfilename: e for e in entries})


def row(path: str, status: str, rfilename: str | None, size: int = 10, repo: str | None = REF.key) -> FileRow:
    return FileRow(os.fsencode(path), str(WATCH), Signature(1, 2, size, 3), status, repo if rfilename else None,
                   "main", rfilename, COMMIT, "sha256", "d" * 64, "1" * 64, size, 1_764_630_000.0)


def watch(**kw: object) -> WatchConfig:
    return WatchConfig(path=WATCH, repos=(RepoConfig(REF),), **kw)  # type: ignore[arg-type]


M = manifest(entry("a.parquet", 10), entry("b.parquet", 20), entry("sub/c.parquet", 30), entry("README.md", 5, False))


class TestStatuses:
    def test_each_expected_entry_has_one_status(self) -> None:
        """matched, mismatch, incomplete and missing entries are counted once each; bytes follow the entries."""
        rows = [row("/w/a.parquet", "matched", "a.parquet"), row("/w/b.parquet", "mismatch", "b.parquet", 20),
                row("/w/sub/c.parquet", "incomplete", "sub/c.parquet", 3)]
        rc = cover(watch(), {REF.key: M}, rows, endpoint=EP).repos[0]
        assert rc.counts == {"pending": 0, "matched": 1, "mismatch": 1, "incomplete": 1, "missing": 1, "unknown": 0}
        assert rc.expected == 4 and rc.bytes_expected == 65 and rc.bytes_matched == 10

    def test_a_good_copy_wins_over_a_bad_duplicate(self) -> None:
        """An entry with one matched and one mismatched copy is matched; both files stay listed."""
        rows = [row("/w/a.parquet", "matched", "a.parquet"), row("/w/a (1).parquet", "mismatch", "a.parquet")]
        rc = cover(watch(), {REF.key: M}, rows, endpoint=EP).repos[0]
        assert rc.entry_status["a.parquet"] == Status.MATCHED and rc.counts["matched"] == 1
        assert [f.status for f in rc.files if f.rfilename == "a.parquet"] == [Status.MISMATCH, Status.MATCHED]
        assert all(t.rfilename != "a.parquet" for t in rc.todo())

    def test_include_exclude_decide_what_is_expected(self) -> None:
        """Only included, not excluded entries are expected, listed and counted."""
        rc = cover(watch(include=("*.parquet",), exclude=("sub/*",)), {REF.key: M}, [], endpoint=EP).repos[0]
        assert sorted(rc.entry_status) == ["a.parquet", "b.parquet"]

    def test_unknown_and_pending_files_per_watch(self) -> None:
        """Files mapped to no entry are the watch's unknown (or pending) list, not a repo's."""
        rows = [row("/w/x.bin", "unknown", None), row("/w/y.bin", "pending", None)]
        wc = cover(watch(), {REF.key: M}, rows, endpoint=EP)
        assert [r.path for r in wc.unknown] == ["/w/x.bin"] and [r.path for r in wc.pending] == ["/w/y.bin"]

    def test_no_manifest_gives_a_note_not_a_guess(self) -> None:
        """A repo with no manifest at all says so instead of listing nothing as missing."""
        rc = cover(watch(), {REF.key: None}, [], endpoint=EP).repos[0]
        assert rc.note and "no manifest" in rc.note and rc.expected == 0


class TestUrls:
    def test_pinned_urls_for_every_entry_not_matched(self) -> None:
        """Missing and bad entries carry the resolve URL at the commit, quoted; matched ones none."""
        weird = manifest(entry("a b#?.parquet", 10), entry("ok.parquet", 10))
        rows = [row("/w/ok.parquet", "matched", "ok.parquet")]
        rc = cover(watch(), {REF.key: weird}, rows, endpoint=EP).repos[0]
        urls = {f.rfilename: f.url for f in rc.files}
        assert urls["a b#?.parquet"] == f"{EP}/datasets/org/data/resolve/{COMMIT}/a%20b%23%3F.parquet"
        assert urls["ok.parquet"] is None

    def test_unsafe_manifest_path_gets_no_url(self) -> None:
        """An entry whose path escapes the folder counts but is never given a download target."""
        wc = cover(watch(), {REF.key: manifest(entry("../escape.txt", 3))}, [], endpoint=EP)
        assert wc.repos[0].files[0].status == Status.MISSING and wc.repos[0].files[0].url is None
        assert "escape" not in aria2_input([wc])


class TestDocument:
    def test_status_document_per_file_records(self) -> None:
        """status --json carries per-file records with the contract's fields, missing ones without a path."""
        rows = [row("/w/a.parquet", "matched", "a.parquet"), row("/w/x.bin", "unknown", None)]
        doc = status_document([cover(watch(), {REF.key: M}, rows, endpoint=EP)])
        w = doc[0]
        files = {f["rfilename"]: f for f in w["repos"][0]["files"]}
        assert set(files["a.parquet"]) >= {"status", "path", "rfilename", "size", "expected_size", "algorithm",
                                           "digest", "expected", "commit", "judged_at", "matched_by"}
        assert files["a.parquet"]["judged_at"].endswith("Z") and "url" not in files["a.parquet"]
        assert "path" not in files["b.parquet"] and files["b.parquet"]["url"].startswith(EP)
        assert w["files"] == [{"status": "unknown", "path": "/w/x.bin", "size": 10, "digest": "d" * 64,
                               "judged_at": files["a.parquet"]["judged_at"]}]


class TestRepairLists:
    def test_aria2_entries_land_where_they_are_matched_by_path(self) -> None:
        """Missing files go to their repo path under the watch, bad copies are replaced where they lie."""
        rows = [row("/w/a.parquet", "matched", "a.parquet"), row("/w/dl/b (1).parquet", "mismatch", "b.parquet", 20)]
        text = aria2_input([cover(watch(), {REF.key: M}, rows, endpoint=EP)])
        blocks = {b.split("\n", 1)[0]: b for b in text.split("\n# ")[1:]}
        c = next(b for k, b in blocks.items() if "sub/c.parquet" in k)
        assert "  dir=/w/sub\n  out=c.parquet\n" in c and f"  checksum=sha-256={'1' * 64}" in c
        b = next(b for k, b in blocks.items() if k.startswith("mismatch"))
        assert "  dir=/w/dl\n  out=b (1).parquet\n" in b and "allow-overwrite=true" in b
        readme = next(b for k, b in blocks.items() if "README.md" in k)
        assert "checksum" not in readme  # a git file has no sha256 aria2c could check
        assert not any("a.parquet" in k for k in blocks)

    def test_name_with_newline_cannot_inject_an_option(self) -> None:
        """A remote name holding a newline is skipped, never written as a new aria2c option line."""
        evil = manifest(entry("x\n  dir=/etc\nout=passwd", 10))
        text = aria2_input([cover(watch(), {REF.key: evil}, [], endpoint=EP)])
        assert "\n  dir=/etc" not in text and "skipped" in text

    def test_wget_list_and_its_cut_dirs(self) -> None:
        """The wget list holds one pinned URL per file, and the command cuts the URL down to the repo path."""
        text, commands = wget_list([cover(watch(), {REF.key: M}, [], endpoint=EP)])
        assert len(text.splitlines()) == 4
        assert commands == ["wget -x -nH --cut-dirs=5 -c -P /w -i FILE"]
