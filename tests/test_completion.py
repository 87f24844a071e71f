"""The completion rules: which names are never judged, and when a 0-byte file is a download in progress."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from hfwatchd.completion import (
    BROWSER_TEMP_RECENT,
    control_file,
    is_temp_name,
    placeholder_in_progress,
    target_of_temp,
)

LATER = BROWSER_TEMP_RECENT + 60  # seconds after which a temp file written now no longer counts as recent


def touch(path: Path, data: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


class TestIsTempName:
    @pytest.mark.parametrize("rel", [
        "foo.part", "foo.crdownload", "foo.aria2", "foo.aria2__temp", "foo.incomplete", "foo.lock",
        "RSt7Rd9f.safetensors.part", "model.trG0lH_h.safetensors.part", "Unconfirmed 123456.crdownload",
        ".org.chromium.Chromium.abc123", ".syncthing.foo.tmp", "~syncthing~foo", ".tmp-hfwatchd-xyz",
        "sub/dir/model.safetensors.aria2",
    ])
    def test_temp_and_control_files(self, rel: str) -> None:
        """Downloaders' temp and control files are never judged, at any depth."""
        assert is_temp_name(rel)

    @pytest.mark.parametrize("rel", [
        ".hfd/aria2c_urls.txt", ".hfd/repo_metadata.json", ".hfd/last_download_command", ".hfd/",
        "gpt2/.hfd/wget_urls.txt", "a/b/.hfd/x/y.json",
        ".cache/huggingface/download/x.incomplete", ".cache/huggingface/", "sub/.cache/huggingface/x.lock",
        "/abs/watched/.hfd/repo_metadata.json",
    ])
    def test_downloader_metadata_folders(self, rel: str) -> None:
        """Everything under hfd's `.hfd/` or huggingface_hub's `.cache/huggingface/`, at any depth, is never judged."""
        assert is_temp_name(rel)

    @pytest.mark.parametrize("rel", [
        "model.safetensors", "config.json", "onnx/model.onnx", ".hfd", "x.hfd/config.json", "hfd/config.json",
        ".hfdx/config.json", ".cache/config.json", ".cache/huggingface", "model.partial.bin", "part",
        "sub/.hfd.json", "Unconfirmed 1.json",
    ])
    def test_ordinary_files(self, rel: str) -> None:
        """A file merely resembling a metadata folder or temp name is judged as usual."""
        assert not is_temp_name(rel)


class TestTargetOfTemp:
    @pytest.mark.parametrize(("temp", "target"), [
        ("/d/model.safetensors.aria2", "/d/model.safetensors"),
        ("/d/model.safetensors.crdownload", "/d/model.safetensors"),
        ("/d/model.safetensors.part", "/d/model.safetensors"),
        ("/d/model.safetensors.k3J9xQ2a.part", "/d/model.safetensors"),
        ("/d/model.trG0lH_h.safetensors.part", "/d/model.safetensors"),
        ("/d/Unconfirmed 12345.crdownload", None),
        ("/d/model.safetensors", None),
    ])
    def test_final_name(self, temp: str, target: str | None) -> None:
        """The final file a temp file stands for is told from its name where the name tells it."""
        assert target_of_temp(temp) == target


class TestControlFile:
    def test_aria2_beside(self, tmp_path: Path) -> None:
        """A file with an `.aria2` sibling has a control file; the same file without it has none."""
        target = touch(tmp_path / "model.safetensors", b"x" * 10)
        assert control_file(str(target)) is None
        aria2 = touch(tmp_path / "model.safetensors.aria2", b"ctl")
        assert control_file(str(target)) == str(aria2)


class TestPlaceholderInProgress:
    @pytest.mark.parametrize("temp", [
        "model.safetensors.crdownload", "model.safetensors.part", "Unconfirmed 987654.crdownload",
        "model.safetensors.k3J9xQ2a.part", "model.trG0lH_h.safetensors.part",
    ])
    def test_temp_named_after_it_counts_however_old(self, tmp_path: Path, temp: str) -> None:
        """A browser temp file named after the placeholder keeps it in progress even when it is long idle."""
        x = touch(tmp_path / "model.safetensors")
        touch(tmp_path / temp, b"partial")
        assert placeholder_in_progress(str(x), now=time.time() + LATER)

    @pytest.mark.parametrize("temp", ["RSt7Rd9f.safetensors.part", "fcXw32Bv.part", "Y1N9lT9c.tar.part",
                                      "J7r4rgRw.json.part", "zz.crdownload"])
    def test_unrelated_name_counts_while_recent(self, tmp_path: Path, temp: str) -> None:
        """Firefox 153's first temp name shares nothing with the placeholder: it counts while recently changed."""
        x = touch(tmp_path / "model.safetensors")
        touch(tmp_path / temp, b"partial")
        assert placeholder_in_progress(str(x))
        assert not placeholder_in_progress(str(x), now=time.time() + LATER)

    def test_recent_is_a_keyword(self, tmp_path: Path) -> None:
        """The grace period is the `recent` keyword: a temp file changed 5 s before `now` counts for 10 s, not 1 s."""
        x = touch(tmp_path / "data.tar.gz")
        touch(tmp_path / "Y1N9lT9c.tar.part", b"partial")
        now = time.time() + 5
        assert placeholder_in_progress(str(x), now=now, recent=10)
        assert not placeholder_in_progress(str(x), now=now, recent=1)

    def test_rename_refreshes(self, tmp_path: Path) -> None:
        """Renaming a stale temp file (Firefox's rename to the final name) makes it recent again: ctime, not mtime."""
        x = touch(tmp_path / "config.json")
        old = touch(tmp_path / "AbCdEfGh.json.part", b"{}")
        os.utime(old, (1_000_000, 1_000_000))  # mtime decades ago; ctime is now
        assert placeholder_in_progress(str(x))

    def test_empty_file_alone_is_judged(self, tmp_path: Path) -> None:
        """A 0-byte file with no browser temp file beside it is not in progress."""
        x = touch(tmp_path / "empty.txt")
        touch(tmp_path / "other.json", b"{}")
        touch(tmp_path / "model.safetensors.aria2", b"ctl")  # aria2c's control file is not a browser's
        touch(tmp_path / "sub" / "RSt7Rd9f.txt.part", b"partial")  # another folder's download
        assert not placeholder_in_progress(str(x))

    def test_stale_unrelated_temp_does_not_count(self, tmp_path: Path) -> None:
        """An idle browser temp file with an unrelated name no longer holds back an empty file."""
        x = touch(tmp_path / "empty.txt")
        touch(tmp_path / "Unrelated.bin.part", b"partial")
        touch(tmp_path / "other.safetensors.crdownload", b"partial")
        assert not placeholder_in_progress(str(x), now=time.time() + LATER)

    def test_directory_named_like_temp_counts_too(self, tmp_path: Path) -> None:
        """A folder called `*.part` changed just now is treated like a temp file: erring towards waiting is safe."""
        x = touch(tmp_path / "empty.txt")
        (tmp_path / "weird.part").mkdir()
        assert placeholder_in_progress(str(x))
        assert not placeholder_in_progress(str(x), now=time.time() + LATER)

    def test_missing_folder(self, tmp_path: Path) -> None:
        """A placeholder whose folder has gone is not in progress (and does not raise)."""
        assert not placeholder_in_progress(str(tmp_path / "gone" / "model.safetensors"))


class TestMeasuredSequences:
    def test_firefox_153_big_file(self, tmp_path: Path) -> None:
        """Firefox 153's sequence for a big file, as measured: X is in progress at every step until the final rename."""
        x = tmp_path / "model.safetensors"
        brief = touch(tmp_path / "WfDxzwF5.safetensors")  # created, closed and deleted within 0.1 ms
        brief.unlink()
        first = touch(tmp_path / "WfDxzwF5.safetensors.part", b"\0" * 786432)
        touch(x)  # the placeholder: nothing beside it shares its stem yet
        assert placeholder_in_progress(str(x))
        second = tmp_path / "model.trG0lH_h.safetensors.part"
        first.rename(second)  # 10-250 ms later
        assert placeholder_in_progress(str(x))
        assert placeholder_in_progress(str(x), now=time.time() + LATER)  # a stalled download stays in progress

    def test_firefox_153_small_file(self, tmp_path: Path) -> None:
        """A small file's first temp file is renamed straight over X: X is in progress until then, by timing alone."""
        x = tmp_path / "config.json"
        touch(tmp_path / "6iw88Rkj.json.part", b"{}\n")  # already complete when X appears
        touch(x)
        assert placeholder_in_progress(str(x))
        assert not placeholder_in_progress(str(x), now=time.time() + LATER)  # only the timing ties them

    def test_chromium(self, tmp_path: Path) -> None:
        """Chromium's Unconfirmed N.crdownload, then X.crdownload and the 0-byte X: in progress throughout."""
        x = tmp_path / "model.safetensors"
        unconfirmed = touch(tmp_path / "Unconfirmed 123456.crdownload", b"partial")
        touch(x)
        assert placeholder_in_progress(str(x), now=time.time() + LATER)
        unconfirmed.rename(tmp_path / "model.safetensors.crdownload")
        assert placeholder_in_progress(str(x), now=time.time() + LATER)
