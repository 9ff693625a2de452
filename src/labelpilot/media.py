"""Fetch task media (images, text files) from Label Studio or allowed hosts, with limits and a cache.

What may be read: URLs on Label Studio's own host (the one /setup named, or LABEL_STUDIO_URL), hosts on
the explicit allowlist (LABELPILOT_MEDIA_ALLOWLIST), and local paths under LABELPILOT_LOCAL_FILES_ROOT.
Everything else is refused with a :class:`ForbiddenError` naming the URL. Credentials are only sent to
Label Studio's host. Downloads stop at a size and a time limit.
"""

from __future__ import annotations

import base64
import hashlib
import time
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx

from labelpilot.errors import ForbiddenError, MediaError
from labelpilot.lsclient import LabelStudioClient, origin

LS_PREFIXES = ("/data/upload/", "/data/local-files", "/storage-data/", "/upload/", "upload/")
CLOUD_SCHEMES = ("s3://", "gs://", "azure-blob://")


def looks_like_media_url(value: str) -> bool:
    return value.startswith(LS_PREFIXES + CLOUD_SCHEMES + ("http://", "https://"))


class MediaFetcher:
    def __init__(
        self,
        cache_dir: Path,
        *,
        ls: LabelStudioClient | None = None,
        allowlist: set[str] | None = None,
        local_root: Path | None = None,
        max_bytes: int = 50_000_000,
        timeout: float = 30.0,
    ) -> None:
        self.cache_dir = cache_dir
        self.ls = ls
        self.allowlist = {h.lower() for h in (allowlist or set())}
        self.local_root = local_root.resolve() if local_root else None
        self.max_bytes = max_bytes
        self.timeout = timeout

    def _target(self, url: str, task_id: int | None) -> tuple[str, bool]:
        """The absolute URL to download and whether it is Label Studio's (so credentials may be sent)."""
        if url.startswith(CLOUD_SCHEMES):
            if self.ls is None or task_id is None:
                raise MediaError(f"{url}: cloud storage files are fetched through Label Studio, which is not known")
            b64 = base64.urlsafe_b64encode(url.encode()).decode()
            return f"{self.ls.base_url}/tasks/{task_id}/presign/?fileuri={b64}", True
        if url.startswith(LS_PREFIXES):
            if self.ls is None:
                raise MediaError(f"{url}: a Label Studio path, but Label Studio's address is not known "
                                 "(no /setup hostname and no LABEL_STUDIO_URL)")
            path = url if url.startswith("/data/") or url.startswith("/storage-data/") else "/data/" + url.lstrip("/")
            return urljoin(self.ls.base_url + "/", path.lstrip("/")), True
        if url.startswith(("http://", "https://")):
            host = urlsplit(url).netloc.lower()
            if self.ls is not None and origin(url) == origin(self.ls.base_url):
                return url, True
            if host in self.allowlist or urlsplit(url).hostname in self.allowlist:
                return url, False
            raise ForbiddenError(f"{url}: host {host!r} is not Label Studio's and not on LABELPILOT_MEDIA_ALLOWLIST",
                                 field="url")
        raise ForbiddenError(f"{url}: not a URL labelpilot may read", field="url")

    def local_path(self, url: str) -> Path:
        """A local path under the configured root (``/data/local-files/?d=...`` or a plain path)."""
        if self.local_root is None:
            raise ForbiddenError(f"{url}: local files are not allowed (set LABELPILOT_LOCAL_FILES_ROOT)", field="url")
        rel = parse_qs(urlsplit(url).query).get("d", [url])[0] if url.startswith("/data/local-files") else url
        path = (self.local_root / rel).resolve()
        if not path.is_relative_to(self.local_root):
            raise ForbiddenError(f"{url}: outside LABELPILOT_LOCAL_FILES_ROOT", field="url")
        if not path.is_file():
            raise MediaError(f"{url}: no such file under the local files root")
        return path

    def fetch(self, url: str, *, task_id: int | None = None) -> Path:
        """A local file with the URL's content (downloaded once, then cached)."""
        if self.local_root is not None and (url.startswith("/data/local-files") or not looks_like_media_url(url)):
            return self.local_path(url)
        target, is_ls = self._target(url, task_id)
        key = hashlib.sha256(url.encode()).hexdigest()[:24]
        cached = self.cache_dir / key
        if cached.exists():
            return cached
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        headers = self.ls.auth_header() if is_ls and self.ls else {}
        tmp = cached.with_suffix(".part")
        deadline = time.monotonic() + self.timeout
        try:
            with httpx.stream("GET", target, headers=headers, timeout=self.timeout, follow_redirects=False) as r:
                if r.status_code in (301, 302, 303, 307, 308) and is_ls:  # presigned cloud URL: no credentials
                    location = r.headers.get("location", "")
                    return self._download_plain(location, cached)
                if r.status_code != 200:
                    raise MediaError(f"{url}: HTTP {r.status_code}" + (" (check the Label Studio token)"
                                                                       if r.status_code in (401, 403) else ""))
                self._write_limited(r.iter_bytes(), tmp, url, deadline)
        except httpx.HTTPError as exc:
            raise MediaError(f"{url}: {exc}") from exc
        tmp.replace(cached)
        return cached

    def _download_plain(self, url: str, cached: Path) -> Path:
        if not url.startswith(("http://", "https://")):
            raise MediaError(f"redirect to {url!r} is not an http(s) URL")
        deadline = time.monotonic() + self.timeout
        tmp = cached.with_suffix(".part")
        with httpx.stream("GET", url, timeout=self.timeout, follow_redirects=False) as r:
            if r.status_code != 200:
                raise MediaError(f"{url}: HTTP {r.status_code}")
            self._write_limited(r.iter_bytes(), tmp, url, deadline)
        tmp.replace(cached)
        return cached

    def _write_limited(self, chunks, tmp: Path, url: str, deadline: float) -> None:
        size = 0
        with tmp.open("wb") as fh:
            for chunk in chunks:
                size += len(chunk)
                if size > self.max_bytes:
                    fh.close()
                    tmp.unlink(missing_ok=True)
                    raise MediaError(f"{url}: larger than {self.max_bytes} bytes")
                if time.monotonic() > deadline:
                    fh.close()
                    tmp.unlink(missing_ok=True)
                    raise MediaError(f"{url}: took longer than {self.timeout} s")
                fh.write(chunk)

    def read_text(self, url: str, *, task_id: int | None = None, max_chars: int = 1_000_000) -> str:
        data = self.fetch(url, task_id=task_id).read_bytes()
        try:
            return data.decode("utf-8")[:max_chars]
        except UnicodeDecodeError as exc:
            raise MediaError(f"{url}: not UTF-8 text") from exc


def resolve_media(examples: list, control, fetcher: MediaFetcher | None) -> list[str | None]:
    """Replace media references in examples by what models read: a local file path for images, the text
    for ``valueType="url"`` text. Returns one error message (or None) per example; a failed example keeps
    going nowhere, the others are unaffected."""
    from labelpilot.data.labelstudio import IMAGE_KINDS

    errors: list[str | None] = [None] * len(examples)
    is_image = control.kind in IMAGE_KINDS
    if not is_image and not control.text_is_url:
        return errors
    for i, ex in enumerate(examples):
        ref = ex.image if is_image else ex.text
        task_id = int(ex.id) if ex.id and str(ex.id).isdigit() else None
        try:
            if fetcher is None:
                raise MediaError(f"{ref}: no way to fetch media (Label Studio unknown, no local root)")
            if is_image:
                ex.image = str(fetcher.fetch(ref, task_id=task_id))
            else:
                ex.text = fetcher.read_text(ref, task_id=task_id)
        except (MediaError, ForbiddenError) as exc:
            errors[i] = exc.message
    return errors
