"""Train a project's models from its annotations and register the result as a new version.

This runs in a worker (a child process of the server by default, or an RQ worker), never in a request.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from labelpilot.config import Settings
from labelpilot.data.types import FitReport
from labelpilot.errors import InputError, LabelpilotError, ModelOptionsError, TrainingError
from labelpilot.ids import ls_project_id
from labelpilot.jobs.audit_step import audit_due, run_audit
from labelpilot.jobs.state import ProjectStore
from labelpilot.jobs.sync import sync_for_training
from labelpilot.lsclient import LabelStudioClient
from labelpilot.media import MediaFetcher
from labelpilot.models.base import family_for, options_for, validate_options
from labelpilot.models.bundle import Bundle
from labelpilot.netpolicy import FetchPolicy
from labelpilot.registry import ModelVersion, Registry
from labelpilot.schema import LabelSchema
from labelpilot.training import fit_bundle

log = logging.getLogger("labelpilot.training")


def model_name(uid: str) -> str:
    """Registry name of a Label Studio project's model."""
    return f"ls-project-{uid}"


def ls_client_for(project: dict[str, Any], settings: Settings) -> LabelStudioClient:
    """Explicit configuration (LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY) wins over what /setup sent.

    A token from /setup is sent to the hostname it came with (the store clears it when the hostname moves
    to another origin), or to LABEL_STUDIO_URL when the operator set that: never to a host chosen later.
    Every request obeys the server's fetch policy (``netpolicy``)."""
    url = settings.label_studio_url or project.get("hostname") or ""
    if settings.label_studio_api_key:
        token, source = settings.label_studio_api_key, "env"
    else:
        token, source = project.get("access_token") or "", "setup"
    return LabelStudioClient(url, token, timeout=settings.http_timeout, token_source=source,
                             policy=FetchPolicy.from_settings(settings))


def media_fetcher(project: dict[str, Any] | None, settings: Settings) -> MediaFetcher:
    """Media access for a project: Label Studio's host (when known) plus the allowlist and local root."""
    try:
        ls = ls_client_for(project or {}, settings)
    except LabelpilotError:
        ls = None
    return MediaFetcher(
        Path(settings.data_dir) / "media-cache",
        ls=ls,
        allowlist=settings.allowlist,
        local_root=settings.local_files_root,
        max_bytes=settings.media_max_bytes,
        timeout=settings.http_timeout,
        policy=FetchPolicy.from_settings(settings),
    )


def fetch_tasks(store: ProjectStore, uid: str, settings: Settings, *, full_export: bool) -> tuple[list, list[str]]:
    """The project's annotated tasks. Start Training (``full_export``) or a copy never synced: brought up to date
    with Label Studio first (:func:`labelpilot.jobs.sync.sync_for_training`: only the changed tasks when the
    check agrees, else the full export); otherwise the copy kept from webhooks. Falls back to the copy, with a
    note, when Label Studio cannot be read."""
    project = store.project(uid) or {}
    ls_id = ls_project_id(uid)
    if (full_export or not project.get("synced")) and ls_id is not None:
        try:
            result = sync_for_training(
                store, uid, ls_id, ls_client_for(project, settings),
                incremental=settings.incremental_sync,
                max_changed=settings.sync_max_changed, export_timeout=settings.export_timeout,
                export_max_bytes=settings.export_max_bytes,
            )
            for note in result.notes:
                log.info("project %s: %s", uid, note)
            return result.tasks, result.notes
        except LabelpilotError as exc:
            local = store.tasks(uid)
            if not local:
                raise
            return local, [f"export failed ({exc.message}); trained from the {len(local)} tasks received by webhook"]
    return store.tasks(uid), []


def check_model_options(schema: LabelSchema, options: Any, families: Any = None) -> None:
    """Refuse, before anything is stored or trained, ``extra_params.model_options`` that a control's family does
    not take: a :class:`ModelOptionsError` whose field is ``extra_params.model_options[.<option>]`` and whose
    message names the control, the family, the option and the valid ones (``/setup`` answers it as a 422)."""
    if options is None:
        return
    if not isinstance(options, dict):
        raise InputError("extra_params.model_options must be an object of model options",
                         field="extra_params.model_options")
    wanted = families if isinstance(families, dict) else {}
    for control in schema.controls:
        try:
            family = family_for(control, wanted.get(control.name))
        except LabelpilotError:
            continue  # an unknown or unloadable family is /setup's warning (ls_backend.family_problems)
        if family is None:
            continue
        try:
            validate_options(family, control, options_for(options, control.name, family.name))
        except ModelOptionsError as exc:
            field = "extra_params.model_options" + (f".{exc.option}" if exc.option else "")
            err = ModelOptionsError(f"control {control.name!r}: {exc.message}", option=exc.option, valid=exc.valid,
                                    family=exc.family)
            err.field = field
            raise err from None


def train_bundle(
    label_config: str,
    tasks: list[dict[str, Any]],
    *,
    options: dict[str, Any] | None = None,
    families: dict[str, str] | None = None,
    min_examples: int = 4,
    progress=None,
    media: MediaFetcher | None = None,
) -> tuple[Bundle, FitReport]:
    """Fit one model per supported control from Label Studio tasks (:func:`labelpilot.training.fit_bundle`, no
    validation split). Controls without enough data are left out, with a note."""
    return fit_bundle(label_config, tasks, families=families, options=options, min_examples=min_examples,
                      progress=progress, media=media)


def train_project(
    settings: Settings, uid: str, job_id: int, *, full_export: bool, store: ProjectStore | None = None
) -> ModelVersion:
    store = store or ProjectStore.from_settings(settings)
    project = store.project(uid)
    if project is None or not project.get("label_config"):
        raise TrainingError(f"project {uid} is unknown: Label Studio has not called /setup or sent its config")

    def step(text: str) -> None:
        if not store.progress(job_id, text):  # taken for dead (a stale heartbeat) and queued again: stop
            raise TrainingError(f"job {job_id} was handed to another worker; this run stops")

    step("fetching annotations")
    tasks, notes = fetch_tasks(store, uid, settings, full_export=full_export)
    step(f"training on {len(tasks)} annotated tasks")

    def progress(done: int, total: int, message: str) -> None:
        step(f"{message} ({done}/{total})")

    extra = project.get("extra_params") or {}
    media = media_fetcher(project, settings)
    bundle, report = train_bundle(
        project["label_config"],
        tasks,
        options=extra.get("model_options") if isinstance(extra, dict) else None,
        families=extra.get("families") if isinstance(extra, dict) else None,
        min_examples=settings.min_examples,
        progress=progress,
        media=media,
    )
    report.notes = notes + report.notes
    registry = Registry.from_settings(settings)
    store.update_job(job_id, report=report.to_dict())  # readable from the job row as soon as the version serves
    step("registering the new version")
    mv = registry.register(model_name(uid), bundle, report=report, parent=None, promote=True)
    annotated = sum(1 for t in tasks if isinstance(t, dict) and t.get("annotations"))
    skip = audit_due(settings, full_export=full_export, n_tasks=annotated)
    if skip is None:  # the version is served already; the audit only adds to its report
        step("auditing labels")
        mv = run_audit(settings, project, tasks, mv, client=_client_or_none(project, settings), media=media,
                       progress=step)
    return mv


def _client_or_none(project: dict[str, Any], settings: Settings) -> LabelStudioClient | None:
    try:
        return ls_client_for(project, settings) if (settings.label_studio_url or project.get("hostname")) else None
    except LabelpilotError:
        return None


def run_job(
    settings: Settings, uid: str, job_id: int, full_export: bool, *, store: ProjectStore | None = None
) -> tuple[int, bool] | None:
    """Claim the queued job, run it to its end and record the outcome (never leaves it 'running').

    Returns the follow-up job (id, full_export) when more training was requested meanwhile. A job that is
    not queued any more (another process claimed it, or it was interrupted) is left alone: None.
    """
    store = store or ProjectStore.from_settings(settings)
    if store.claim(job_id) is None:
        log.warning("job %s of %s is not queued any more: another runner has it, or it was interrupted", job_id, uid)
        return None
    try:
        mv = train_project(settings, uid, job_id, full_export=full_export, store=store)
    except LabelpilotError as exc:
        log.warning("training %s failed: %s", uid, exc.message)
        return store.finish_and_next(job_id, fence=True, state="failed", error=exc.message)
    except Exception as exc:  # a bug: record it
        log.exception("training %s crashed", uid)
        return store.finish_and_next(job_id, fence=True, state="failed", error=f"{type(exc).__name__}: {exc}")
    log.info("project %s: new model version %s (%s examples)", uid, mv.tag, mv.n_examples)
    return store.finish_and_next(job_id, fence=True, state="done", version=mv.tag, progress="done",
                                 report=mv.report)
