"""Fetch task media (images, text files) from Label Studio or allowed hosts, with limits and a cache.

What may be read (the fetch policy; the address rules every request also obeys are in ``netpolicy``):

* Label Studio's media paths (``/data/...``, ``/storage-data/...``, ``/upload/...``, cloud ``s3://`` etc.
  through ``/tasks/<id>/presign/``) on Label Studio's origin: LABEL_STUDIO_URL, else the ``hostname`` sent at
  /setup. An absolute URL on that origin is read only when its path is one of those media paths, so naming a
  host at /setup does not make every URL on it readable. Label Studio's token goes with these requests only.
* any URL on a host of LABELPILOT_MEDIA_ALLOWLIST (``host`` or ``host:port``), without credentials;
* local paths under LABELPILOT_LOCAL_FILES_ROOT.

Redirects are re-checked hop by hop with the same rules; the one widening is Label Studio's presign endpoint,
whose redirect to the cloud bucket may go to any host that passes the address rules (public addresses).
Everything else is refused with a :class:`ForbiddenError` naming the URL. Downloads stop at a size and a
time limit.
"""

from __future__ import annotations

import base64
import hashlib
import time
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx

from labelpilot.data.labelstudio import IMAGE_KINDS
from labelpilot.errors import ForbiddenError, MediaError
from labelpilot.ids import parse_uint
from labelpilot.lsclient import LabelStudioClient
from labelpilot.netpolicy import FetchPolicy, host_keys, origin

LS_PREFIXES = ("/data/upload/", "/data/local-files", "/storage-data/", "/upload/", "upload/")
LS_MEDIA_PATHS = ("/data/", "/storage-data/", "/upload/")
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
        policy: FetchPolicy | None = None,
    ) -> None:
        self.cache_dir = cache_dir
        self.ls = ls
        self.allowlist = {h.lower() for h in (allowlist or set())}
        self.local_root = local_root.resolve() if local_root else None
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.policy = policy or (ls.policy if ls is not None else FetchPolicy.open())

    def _is_ls_media(self, url: str) -> bool:
        return (self.ls is not None and origin(url) == self.ls.origin
                and urlsplit(url).path.startswith(LS_MEDIA_PATHS))

    def _permit(self, url: str) -> None:
        """Raise unless an absolute URL may be read: Label Studio's media paths or an allowlisted host."""
        if not url.startswith(("http://", "https://")):
            raise ForbiddenError(f"{url}: not a URL labelpilot may read", field="url")
        if self._is_ls_media(url) or host_keys(url) & self.allowlist:
            return
        host = urlsplit(url).netloc.lower()
        raise ForbiddenError(f"{url}: host {host!r} is not Label Studio's (or not one of its media paths) and not "
                             "on LABELPILOT_MEDIA_ALLOWLIST", field="url")

    def _target(self, url: str, task_id: int | None) -> tuple[str, bool]:
        """The absolute URL to download and whether it is Label Studio's presign endpoint (whose redirect to
        the cloud bucket may leave Label Studio's origin)."""
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
            return urljoin(self.ls.base_url + "/", path.lstrip("/")), False
        self._permit(url)
        return url, False

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
        target, presign = self._target(url, task_id)
        key = hashlib.sha256(url.encode()).hexdigest()[:24]
        cached = self.cache_dir / key
        if cached.exists():
            return cached
        self.cache_dir.mkdir(parents=True, exist_ok=True)

        def permit(hop_url: str, hop: int) -> None:
            if presign and hop <= 1:
                return  # Label Studio's presign endpoint and the bucket URL it signed (address rules apply)
            self._permit(hop_url)

        ls_origin = self.ls.origin if self.ls is not None else None
        headers = self.ls.auth_header() if ls_origin and origin(target) == ls_origin else {}
        tmp = cached.with_suffix(".part")
        deadline = time.monotonic() + self.timeout
        try:
            with self.policy.stream("GET", target, permit=permit, headers=headers, credential_origin=ls_origin,
                                    timeout=self.timeout) as r:
                if r.status_code != 200:
                    raise MediaError(f"{url}: HTTP {r.status_code}" + (" (check the Label Studio token)"
                                                                       if r.status_code in (401, 403) else ""))
                self._write_limited(r.iter_bytes(), tmp, url, deadline)
        except httpx.HTTPError as exc:
            raise MediaError(f"{url}: {exc}") from exc
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
    errors: list[str | None] = [None] * len(examples)
    is_image = control.kind in IMAGE_KINDS
    if not is_image and not control.text_is_url:
        return errors
    for i, ex in enumerate(examples):
        ref = ex.image if is_image else ex.text
        task_id = parse_uint(ex.id)
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
