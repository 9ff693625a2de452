"""Turn Label Studio tasks into Label Studio predictions with the project's serving model version.

Bundles are loaded once per process into the server's one :func:`bundle_cache` (shared with the ``/v1``
predict service) and kept until a newer version is served or the cache's count bound pushes them out (no
model is rebuilt per request), and warmed with one throw-away prediction (:func:`warm_up`, also used by the
single-model app of ``serve-model``). One bad task gets an empty prediction; the others still get theirs.

Which version a model serves comes from :class:`ServingPointers`, a per-process copy of the registry's
serving pointers checked against the registry at most once a :data:`POINTER_TTL` (not once a request), so
a version registered or promoted by another replica or worker is served here within about a second.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from labelpilot.data.labelstudio import IMAGE_KINDS, prediction_regions, refine_drawn_boxes, task_example
from labelpilot.data.types import Example, Prediction
from labelpilot.data.vision_formats import image_size
from labelpilot.jobs.training import model_name
from labelpilot.media import MediaFetcher, resolve_media
from labelpilot.models.base import Model, build_model, can_predict_untrained, family_for
from labelpilot.models.bundle import Bundle
from labelpilot.registry import ModelVersion, Registry
from labelpilot.registry.cache import VersionCache
from labelpilot.registry.store import local_changes
from labelpilot.schema import ControlSpec, LabelSchema, TaskKind
from labelpilot.server.offload import freeze_heap

#: tasks predicted at a time when a config reads media and the request has a deadline (see predict_tasks)
MEDIA_CHUNK = 4

log = logging.getLogger("labelpilot.predict")

UNTRAINED = "untrained"

#: How many loaded bundles a server process keeps (least recently used out first): more than the start-up
#: warm-up loads (16 projects), so the warm models are all still there when traffic starts.
MAX_LOADED_BUNDLES = 32

LoadedBundle = tuple[ModelVersion, Bundle]

#: Seconds a process trusts its copy of the serving pointers before asking the registry whether any moved.
#: With the load of a new bundle on top, a replica serves another's new version well inside 5 s.
POINTER_TTL = 1.0


class ServingPointers:
    """This process's copy of every model's serving version, refreshed by polling with a short TTL.

    Polling, not PostgreSQL LISTEN/NOTIFY: one code path for both back ends (a SQLite data dir shared by
    processes has no notifications), no connection and thread held open per replica for a listener, and
    nothing lost when a connection drops (a notification sent meanwhile would be). The poll is cheap: at most
    once a ``ttl``, the first request after it reads :meth:`Registry.serving_stamp` (one row); only when that
    moved are the pointers read again (one query for all models). Every other request reads a dict. A change
    committed in this process (:func:`labelpilot.registry.store.local_changes`) is seen at the next read.

    A pointer only ever names a version whose files were complete before its row was committed
    (:meth:`Registry.register`), so what is read here can always be loaded whole. If the registry cannot be
    read, the last pointers known are kept and the check is tried again a ``ttl`` later.
    """

    def __init__(self, registry: Registry, ttl: float = POINTER_TTL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = registry
        self.ttl = ttl
        self.clock = clock
        self.checks = 0  # stamp reads (a test or /metrics can see the registry is not asked per request)
        self._pointers: dict[str, int] | None = None
        self._stamp: tuple[int, float] | None = None
        self._checked = float("-inf")
        self._local = -1
        self._lock = threading.Lock()

    def version(self, name: str) -> int | None:
        """The version ``name`` serves, as of at most ``ttl`` seconds ago (None: no version served)."""
        if self._pointers is None or local_changes() != self._local or self.clock() - self._checked >= self.ttl:
            self._refresh()
        assert self._pointers is not None
        return self._pointers.get(name)

    def expire(self) -> None:
        """Check the registry at the next read (e.g. when a trainer in another process has just finished)."""
        self._checked = float("-inf")

    def _refresh(self) -> None:
        # one thread checks; the others go on with the pointers they have (the first read of all waits)
        if not self._lock.acquire(blocking=self._pointers is None):
            return
        try:
            local = local_changes()
            try:
                stamp = self.registry.serving_stamp()  # read before the pointers: a later move shows next time
                if self._pointers is None or stamp != self._stamp or local != self._local:
                    self._pointers = self.registry.serving_pointers()
                self.checks += 1
            except Exception as exc:
                if self._pointers is None:
                    raise
                log.warning("could not check the serving versions (keeping the last known): %s", exc)
                stamp = self._stamp
            self._stamp, self._local, self._checked = stamp, local, self.clock()
        finally:
            self._lock.release()


def warm_up(bundle: Bundle) -> None:
    """One throw-away prediction, so lazy resources (jieba's dictionary, ONNX sessions) load at start-up
    and not in the first user's request."""
    for name, model in bundle.models.items():
        control = bundle.schema.control(name)
        warm = getattr(model, "warm_up", None)
        if callable(warm):  # e.g. the OCR engine of a document model
            try:
                warm()
            except Exception as exc:
                log.warning("warm-up of %s failed: %s", name, exc)
        if control.kind.value.startswith("text"):
            try:
                model.predict([Example(text="预热 warm-up 文本", text_pair="预热")])
            except Exception as exc:  # warming is best effort
                log.warning("warm-up of %s failed: %s", name, exc)


def bundle_cache(registry: Registry, max_entries: int = MAX_LOADED_BUNDLES) -> VersionCache[LoadedBundle]:
    """The server's one cache of loaded bundles: each version loaded from ``registry`` once, warmed up
    (:func:`warm_up`) and moved out of the garbage collector's reach (:func:`freeze_heap`)."""

    def load(name: str, version: int) -> LoadedBundle:
        mv, bundle = registry.load(name, version)
        warm_up(bundle)
        freeze_heap()
        log.info("loaded %s v%s (%s)", name, mv.version, mv.tag)
        return mv, bundle

    return VersionCache(load, max_entries)


class Predictor:
    def __init__(self, registry: Registry, media_for: Callable[[str | None], MediaFetcher | None] | None = None,
                 bundles: VersionCache[LoadedBundle] | None = None):
        self.registry = registry
        self.media_for = media_for or (lambda uid: None)
        self.bundles = bundles if bundles is not None else bundle_cache(registry)
        self.pointers = ServingPointers(registry)
        self._untrained: dict[str, tuple[str, Bundle | None]] = {}

    def serving(self, uid: str | None) -> tuple[ModelVersion | None, Bundle | None]:
        """The version a project serves now, loading its bundle the first time it is asked for."""
        if not uid:
            return None, None
        name = model_name(uid)
        version = self.pointers.version(name)
        if version is None:
            return None, None
        cached = self.bundles.peek(name, version)
        if cached is not None:
            return cached
        stale = self.bundles.newest(name)
        if stale is not None and self.bundles.loading(name, version):
            return stale[1]  # a retrain's new version is being loaded (the runner warms it): keep serving this one
        return self.bundles.get(name, version)

    def warm(self, uid: str) -> None:
        """Load the version ``uid`` serves now, asking the registry first (a trainer just registered one)."""
        self.pointers.expire()
        self.serving(uid)

    def untrained(self, schema: LabelSchema) -> tuple[str, Bundle | None]:
        """Before any training: models that can pre-label anyway (zero-shot, keywords), and their version
        string (``zero-shot-<families>``), or ``untrained`` with no bundle."""
        cached = self._untrained.get(schema.config)
        if cached is not None:
            return cached
        models: dict[str, Model] = {}
        for control in schema.controls:
            try:
                family = family_for(control)
                model = build_model(family, control) if family else None
            except Exception as exc:  # a family that cannot even be built never breaks /setup
                log.warning("no zero-shot model for %s: %s", control.name, exc)
                continue
            if model is not None and can_predict_untrained(model):
                models[control.name] = model
        if models:
            value = (f"zero-shot-{'+'.join(sorted({m.name for m in models.values()}))}", Bundle(schema, models))
        else:
            value = (UNTRAINED, None)
        if len(self._untrained) > 64:
            self._untrained.clear()
        self._untrained[schema.config] = value
        return value

    def version_tag(self, uid: str | None, schema: LabelSchema | None = None) -> str:
        name = model_name(uid) if uid else None
        version = self.pointers.version(name) if name else None
        if version is None or name is None:
            return self.untrained(schema)[0] if schema is not None else UNTRAINED
        cached = self.bundles.peek(name, version)
        if cached is not None:
            return cached[0].tag
        return self.registry.get(name, version).tag

    def predict_tasks(
        self, tasks: Sequence[Any], schema: LabelSchema, uid: str | None, context: Any = None,
        deadline: float | None = None,
    ) -> tuple[list[Any], list[str]]:
        """One Label Studio prediction per task, in order, plus the problems met (for logs).

        With an interactive ``context`` holding rectangles the annotator drew, the answer for the (single)
        task is those rectangles snapped to the detector's best-overlapping boxes.

        ``deadline`` (a ``time.monotonic()`` instant): a config that reads media (images, documents, video,
        ``valueType="url"`` text) is predicted :data:`MEDIA_CHUNK` tasks at a time, and once the next chunk would
        end past the deadline, the tasks left get ``[]`` — an empty *list* of predictions, which Label Studio
        stores nothing for, so it asks for those tasks again — instead of the whole batch missing Label
        Studio's timeout. Text-only configs are one chunk: they are fast and gain from one vectorised call."""
        mv, bundle = self.serving(uid)
        if mv is not None:
            tag = mv.tag
        else:
            tag, bundle = self.untrained(schema)
        reads_media = any(c.text_is_url or c.kind in IMAGE_KINDS for c in schema.controls)
        step = MEDIA_CHUNK if reads_media and deadline is not None else max(1, len(tasks))
        results: list[Any] = []
        problems: list[str] = []
        slowest = 0.0
        for lo in range(0, len(tasks), step):
            started = time.monotonic()
            if lo and deadline is not None and started + slowest > deadline:
                left = len(tasks) - lo
                problems.append(f"{left} of {len(tasks)} tasks left unpredicted: the next {step} would end past "
                                "the request's deadline (LABELPILOT_PREDICT_TIMEOUT); Label Studio asks again")
                results.extend([] for _ in range(left))
                break
            results.extend(self._predict_chunk(tasks[lo:lo + step], schema, uid, bundle, tag, problems, lo))
            slowest = max(slowest, time.monotonic() - started)
        drawn = context.get("result") if isinstance(context, Mapping) else None
        if drawn and len(tasks) == 1 and results and any(c.kind is TaskKind.IMAGE_BOXES for c in schema.controls):
            refined = refine_drawn_boxes(drawn, results[0]["result"])
            if refined:
                scores = [r["score"] for r in refined if r.get("score") is not None]
                results[0] = {"result": refined, "model_version": tag,
                              "score": round(float(sum(scores) / len(scores)), 6) if scores else results[0]["score"]}
        return results, problems

    def _predict_chunk(
        self, tasks: Sequence[Any], schema: LabelSchema, uid: str | None, bundle: Bundle | None, tag: str,
        problems: list[str], offset: int,
    ) -> list[dict[str, Any]]:
        regions: list[list[dict[str, Any]]] = [[] for _ in tasks]
        scores: list[list[float]] = [[] for _ in tasks]
        bad: set[int] = set()
        for i, task in enumerate(tasks):
            if not isinstance(task, Mapping) or not isinstance(task.get("data"), Mapping):
                bad.add(i)
                problems.append(f"task #{offset + i}: not an object with a 'data' object")
        if bundle is not None:
            for control in schema.controls:
                model = bundle.models.get(control.name)
                if model is None:
                    continue
                self._predict_control(model, control, tasks, bad, regions, scores, problems, uid)
        results = []
        for i in range(len(tasks)):
            score = sum(scores[i]) / len(scores[i]) if scores[i] else 0.0
            results.append({"result": regions[i], "score": round(float(score), 6), "model_version": tag})
        return results

    def _predict_control(
        self,
        model: Model,
        control: ControlSpec,
        tasks: Sequence[Any],
        bad: set[int],
        regions: list[list[dict[str, Any]]],
        scores: list[list[float]],
        problems: list[str],
        uid: str | None,
    ) -> None:
        examples: list[Example] = []
        index: list[int] = []
        for i, task in enumerate(tasks):
            if i in bad:
                continue
            try:
                examples.append(task_example(task, control))
                index.append(i)
            except (KeyError, TypeError) as exc:
                problems.append(f"task {task.get('id')}: {control.name}: {exc}")
        if control.text_is_url or control.kind in IMAGE_KINDS:
            errors = resolve_media(examples, control, self.media_for(uid))
            for i, err in zip(list(index), errors, strict=True):
                if err:
                    problems.append(f"task {tasks[i].get('id')}: {control.name}: {err}")
            keep = [k for k, err in enumerate(errors) if not err]
            examples = [examples[k] for k in keep]
            index = [index[k] for k in keep]
        if not examples:
            return
        try:
            preds = model.predict(examples)
        except Exception as exc:  # isolate the bad example(s): retry one by one
            log.warning("batch predict failed for %s (%s); retrying task by task", control.name, exc)
            preds = []
            for ex in examples:
                try:
                    preds.extend(model.predict([ex]))
                except Exception as one_exc:
                    preds.append(Prediction(error=f"{type(one_exc).__name__}: {one_exc}"))
        examples_by_task = dict(zip(index, examples, strict=True))
        for i, pred in zip(index, preds, strict=True):
            if pred.error:
                problems.append(f"task {tasks[i].get('id')}: {control.name}: {pred.error}")
                continue
            size = None
            if control.kind is TaskKind.IMAGE_BOXES and examples_by_task.get(i) is not None:
                size = _image_size(examples_by_task[i].image)
            regions[i].extend(prediction_regions(pred, control, image_size=size))
            scores[i].append(pred.score)


def _image_size(path: str | None) -> tuple[int, int] | None:
    """The upright size of an image file, for ``original_width``/``original_height`` of box regions."""
    if not path:
        return None
    try:

        return image_size(path)
    except Exception:  # the size is optional in Label Studio's format
        return None
