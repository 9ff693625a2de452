"""Named, versioned indexes: items in (texts, images, vectors), top-k out. Shared by the HTTP API and the CLI.

Storage: a :class:`labelpilot.registry.Registry` rooted at ``<data dir>/indexes`` (its own SQLite file and
folders, so ``/v1/models`` does not list indexes). Every change is written as a new version with the
registry's atomic folder write (temporary folder, fsync, rename, then the version row), so a crash leaves the
previous version; only the newest ``KEEP_VERSIONS`` are kept on disk. A loaded index is cached per process
(the registry's :class:`~labelpilot.registry.cache.VersionCache`, the one the server keeps its bundles in)
and reloaded when another process (``labelpilot index build``) registered a newer version.

Vectors: texts through the product's multilingual encoder (``labelpilot.encoders.get_encoder``); images
through the vision families' EfficientNet-Lite0 pooled features (the image classifier's feature code, with
its size checks and feature cache); plain vectors as given (``kind="vector"``, or any index of that size).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from labelpilot.data.types import FitReport
from labelpilot.encoders import EncoderUnavailable, get_encoder
from labelpilot.errors import InputError, LabelpilotError, MediaError, NotFoundError
from labelpilot.models.vision.backbone import FEATURE_DIM, INSTALL_HINT, torch_available
from labelpilot.models.vision.inputs import ImageFeatures
from labelpilot.registry import Registry
from labelpilot.registry.cache import VersionCache
from labelpilot.retrieval.index import Hit, VectorIndex, check_id, normalise

KINDS = ("text", "image", "vector")
KEEP_VERSIONS = 3
#: Loaded indexes kept per process. Changes are applied to the cached object and then saved, so an index
#: pushed out of the cache is reloaded from its last saved version; the bound is far above the number of
#: indexes one server changes at once, so two concurrent changes of one index always meet the same object.
MAX_LOADED_INDEXES = 64
MAX_IMAGE_BYTES = 20_000_000
MAX_META_CHARS = 2000
IMAGE_OPTIONS = {"image_size": 224, "resize": "center_crop", "engine": "auto", "batch_size": 16,
                 "max_pixels": 40_000_000}
IMAGE_ENCODER = "efficientnet-lite0-pooled-224-center_crop"


def image_features(paths: Sequence[str]) -> tuple[np.ndarray, list[str | None]]:
    """(n, 1280) L2-normalised backbone features and a per-path error (None when fine)."""

    return ImageFeatures(IMAGE_OPTIONS).compute(list(paths))


def text_vectors(texts: Sequence[str]) -> tuple[np.ndarray, str]:

    enc = get_encoder()
    return enc.encode(list(texts)), enc.name


def kind_dim(kind: str, dim: int | None) -> tuple[int, str | None]:
    """The vector size and encoder name of a new index of ``kind``. A kind this installation cannot make
    vectors for is a 422 naming ``kind`` (the client may choose another; e.g. ``vector`` with its own)."""
    if kind == "text":

        try:
            enc = get_encoder()
        except EncoderUnavailable as exc:
            raise InputError(f"this server cannot make text vectors: {exc.message}", field="kind") from exc
        return enc.dim, enc.name
    if kind == "image":

        if not torch_available():
            raise InputError(f"this server cannot make image vectors: {INSTALL_HINT}", field="kind")
        return FEATURE_DIM, IMAGE_ENCODER
    if kind == "vector":
        if not isinstance(dim, int) or isinstance(dim, bool) or not 1 <= dim <= 8192:
            raise InputError("a 'vector' index needs 'dim' (1 to 8192)", field="dim")
        return dim, None
    raise InputError(f"'kind' must be one of {', '.join(KINDS)}", field="kind")


@dataclass(slots=True)
class Item:
    """One parsed input: exactly one of text / image (bytes or a local path) / url / vector."""

    field: str
    id: str | None = None
    text: str | None = None
    image: bytes | None = None
    path: str | None = None
    url: str | None = None
    vector: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def parse_item(raw: Any, where: str, index: VectorIndex, *, need_id: bool) -> Item:
    """Check one item against the index (kind and vector size); errors name ``where.<key>``."""
    if not isinstance(raw, dict):
        raise InputError(f"{where}: an item is an object", field=where)
    item = Item(field=where)
    if need_id:
        item.id = check_id(raw.get("id"), f"{where}.id")
    given = [k for k in ("text", "image", "image_url", "vector") if raw.get(k) is not None]
    if len(given) != 1:
        raise InputError(f"{where}: give exactly one of 'text', 'image' (base64), 'image_url' or 'vector'",
                         field=where)
    key = given[0]
    value = raw[key]
    if key == "vector":
        item.vector = normalise(value, index.dim, f"{where}.vector")
    elif key == "text":
        if index.kind != "text":
            raise InputError(f"{where}.text: this is {'an' if index.kind == 'image' else 'a'} {index.kind} index; "
                             "it takes no texts", field=f"{where}.text")
        if not isinstance(value, str):
            raise InputError(f"{where}.text: must be a string", field=f"{where}.text")

        current = get_encoder().name
        if index.encoder and index.encoder != current:
            raise InputError(f"{where}.text: the index holds vectors of the encoder {index.encoder!r}, this server "
                             f"encodes with {current!r}; rebuild the index", field=f"{where}.text")
        item.text = value
    else:
        if index.kind != "image":
            raise InputError(f"{where}.{key}: this is a {index.kind} index; it takes no images", field=f"{where}.{key}")
        if not isinstance(value, str):
            raise InputError(f"{where}.{key}: must be a string", field=f"{where}.{key}")
        if key == "image_url":
            item.url = value
        else:
            try:
                item.image = base64.b64decode(value.split(",", 1)[-1], validate=True)
            except (binascii.Error, ValueError) as exc:
                raise InputError(f"{where}.image: not base64", field=f"{where}.image") from exc
            if len(item.image) > MAX_IMAGE_BYTES:
                raise InputError(f"{where}.image: larger than {MAX_IMAGE_BYTES} bytes", field=f"{where}.image")
    meta = raw.get("meta")
    if meta is not None:
        if not isinstance(meta, dict) or len(json.dumps(meta, ensure_ascii=False)) > MAX_META_CHARS:
            raise InputError(f"{where}.meta: an object of at most {MAX_META_CHARS} characters as JSON",
                             field=f"{where}.meta")
        item.meta = meta
    return item


#: fetches an image URL to a local file (the server's media fetcher with its netpolicy), or None: refused
Fetch = Callable[[str], Path] | None


def vectorise(items: Sequence[Item], dim: int, fetch: Fetch = None) -> tuple[np.ndarray, list[dict | None]]:
    """Vectors of the items (rows of failed items are zero) and, per item, None or an error (422 or 403 body)."""
    out = np.zeros((len(items), dim), dtype=np.float32)
    errors: list[dict | None] = [None] * len(items)
    texts = [i for i, it in enumerate(items) if it.text is not None]
    if texts:
        vecs, _ = text_vectors([items[i].text or "" for i in texts])
        out[texts] = vecs
    images = [i for i, it in enumerate(items) if it.vector is None and it.text is None]
    with tempfile.TemporaryDirectory(prefix="lp-index-") as tmp:
        paths: list[str] = []
        ok: list[int] = []
        for i in images:
            it = items[i]
            try:
                if it.image is not None:
                    p = Path(tmp) / hashlib.sha256(it.image).hexdigest()[:24]
                    p.write_bytes(it.image)
                    paths.append(str(p))
                elif it.url is not None:
                    if fetch is None:
                        raise MediaError(f"{it.url}: image URLs are not fetched here", field=f"{it.field}.image_url")
                    paths.append(str(fetch(it.url)))
                else:
                    paths.append(str(it.path))
                ok.append(i)
            except LabelpilotError as exc:
                errors[i] = {"status": exc.status_code, **exc.to_dict(), "field": exc.field or it.field}
        if ok:
            feats, errs = image_features(paths)
            for row, i in enumerate(ok):
                if errs[row] is None:
                    out[i] = feats[row]
                else:
                    key = "image_url" if items[i].url else "image"
                    errors[i] = {"status": 422, "error": "MediaError", "detail": errs[row],
                                 "field": f"{items[i].field}.{key}"}
    for i, it in enumerate(items):
        if it.vector is not None:
            out[i] = it.vector[0]
    return out, errors


def payload(item: Item) -> dict[str, Any]:
    out: dict[str, Any] = dict(item.meta)
    if item.text is not None:
        out.setdefault("text", item.text[:200])
    elif item.url or item.path:
        out.setdefault("source", item.url or item.path)
    return out


class _Saved:
    """What the registry needs of a thing it versions: ``save(folder)`` and ``families``."""

    def __init__(self, index: VectorIndex) -> None:
        self.index = index
        self.families = [f"index-{index.kind}-{index.type}"]

    def save(self, directory: Path) -> None:
        self.index.save(directory)


class IndexStore:
    """The indexes of one data dir: create, load by name (cached), save as a new registry version."""

    def __init__(self, root: Path) -> None:
        self.registry = Registry(Path(root))
        self.registry.cleanup()
        self._cache: VersionCache[VectorIndex] = VersionCache(
            lambda name, version: VectorIndex.load(self.registry.get(name, version).path), MAX_LOADED_INDEXES)

    def names(self) -> list[str]:
        return [m["name"] for m in self.registry.list_models()]

    def exists(self, name: str) -> bool:
        return self.registry.serving_version(name) is not None

    def get(self, name: str) -> tuple[int, VectorIndex]:
        version = self.registry.serving_version(name)
        if version is None:
            raise NotFoundError(f"unknown index {name!r}", field="index")
        return version, self._cache.get(name, version)

    def create(self, name: str, kind: str, dim: int | None = None, *, hnsw_min: int | None = None) -> VectorIndex:
        if self.exists(name):
            raise InputError(f"index {name!r} exists", field="index")
        size, encoder = kind_dim(kind, dim)
        return VectorIndex(kind, size, encoder=encoder, hnsw_min=hnsw_min)

    def save(self, name: str, index: VectorIndex, note: str = "") -> int:
        """Register ``index`` as the next version of ``name`` and keep the newest ``KEEP_VERSIONS``."""
        report = FitReport(n_examples=len(index), notes=[note] if note else [],
                           metrics={"count": float(len(index))})
        try:
            mv = self.registry.register(name, _Saved(index), report=report)  # type: ignore[arg-type]
        except BaseException:
            self.forget(name)  # the in-memory change was not stored: reload what is on disk
            raise
        self._cache.put(name, mv.version, index)
        for old in self.registry.list_versions(name)[:-KEEP_VERSIONS]:
            self.registry.delete_version(name, old.version)
        return mv.version

    def forget(self, name: str) -> None:
        self._cache.forget(name)

    def describe(self, name: str) -> dict[str, Any]:
        version, index = self.get(name)
        return {"name": name, "version": version, **index.describe()}

    def hits(self, hits: list[Hit]) -> list[dict[str, Any]]:
        return [{"id": h.id, "score": round(h.score, 6), **({"item": h.payload} if h.payload else {})} for h in hits]
