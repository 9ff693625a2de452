"""Media access: only Label Studio's host (with its token), allowlisted hosts, or a local root; limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from labelpilot.errors import ForbiddenError, MediaError
from labelpilot.lsclient import LabelStudioClient
from labelpilot.media import MediaFetcher


def test_label_studio_upload_with_token_and_cache(tmp_path: Path, fake_ls) -> None:
    fake_ls.tokens.add("Token k")
    fake_ls.files["/data/upload/1/note.txt"] = "北京欢迎你".encode()
    fetcher = MediaFetcher(tmp_path, ls=LabelStudioClient(fake_ls.url, "k"))
    assert fetcher.read_text("/data/upload/1/note.txt") == "北京欢迎你"
    n = len(fake_ls.requests)
    assert fetcher.read_text("/data/upload/1/note.txt") == "北京欢迎你"  # cached: no second download
    assert len(fake_ls.requests) == n
    assert fake_ls.requests[-1][2] == "Token k"


def test_other_hosts_refused_unless_allowlisted_and_get_no_token(tmp_path: Path, fake_ls) -> None:
    fake_ls.tokens.add("")  # the "other host" accepts anonymous requests
    fake_ls.files["/pic.txt"] = b"hello"
    other = fake_ls.url.replace("127.0.0.1", "localhost")
    ls = LabelStudioClient("http://127.0.0.1:1", "secret-token")
    with pytest.raises(ForbiddenError, match="LABELPILOT_MEDIA_ALLOWLIST"):
        MediaFetcher(tmp_path, ls=ls).fetch(other + "/pic.txt")
    host = other.split("//")[1]
    fetched = MediaFetcher(tmp_path, ls=ls, allowlist={host}).fetch(other + "/pic.txt")
    assert fetched.read_bytes() == b"hello"
    assert fake_ls.requests[-1][2] == ""  # Label Studio's token never goes to another host
    for bad in ("file:///etc/passwd", "ftp://x/y", "/etc/passwd"):
        with pytest.raises(ForbiddenError):
            MediaFetcher(tmp_path, ls=ls).fetch(bad)


def test_size_limit_and_http_errors(tmp_path: Path, fake_ls) -> None:
    fake_ls.tokens.add("Token k")
    fake_ls.files["/data/upload/1/big.bin"] = b"x" * 5000
    fetcher = MediaFetcher(tmp_path, ls=LabelStudioClient(fake_ls.url, "k"), max_bytes=1000)
    with pytest.raises(MediaError, match="larger than 1000"):
        fetcher.fetch("/data/upload/1/big.bin")
    assert not list(tmp_path.glob("*.part"))
    with pytest.raises(MediaError, match="HTTP 404"):
        fetcher.fetch("/data/upload/1/missing.png")
    with pytest.raises(MediaError, match="check the Label Studio token"):
        MediaFetcher(tmp_path / "c2", ls=LabelStudioClient(fake_ls.url, "wrong")).fetch("/data/upload/1/big.bin")


def test_local_files_stay_under_the_root(tmp_path: Path) -> None:
    root = tmp_path / "files"
    (root / "images").mkdir(parents=True)
    (root / "images" / "a.txt").write_text("ok")
    (tmp_path / "secret.txt").write_text("no")
    fetcher = MediaFetcher(tmp_path / "cache", local_root=root)
    assert fetcher.fetch("/data/local-files/?d=images/a.txt").read_text() == "ok"
    for escape in ("/data/local-files/?d=../secret.txt", "../secret.txt", str(tmp_path / "secret.txt")):
        with pytest.raises(ForbiddenError, match="outside"):
            fetcher.fetch(escape)
    with pytest.raises(ForbiddenError, match="local files are not allowed"):
        MediaFetcher(tmp_path / "cache").local_path("images/a.txt")
