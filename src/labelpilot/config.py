"""Settings, from the environment (and ``labelpilot serve`` flags). One place lists every knob."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: settings that are credentials (or URLs that may hold one): never sent to RQ jobs through Redis; a worker
#: reads them from its own environment (:meth:`Settings.public_values`)
SECRET_FIELDS = frozenset({
    "basic_auth_user", "basic_auth_pass", "webhook_secret", "api_tokens", "label_studio_api_key", "database_url",
    "redis_url",
})


def parse_schedule(text: str | None) -> tuple[int, ...]:
    """``"1, 2,5"`` -> (1, 2, 5): sorted, duplicates dropped. Raises ValueError naming the bad entry."""
    out: set[int] = set()
    for part in (text or "").replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or int(part) < 1:
            raise ValueError(f"retrain_schedule: {part!r} is not a positive whole number of annotations")
        out.add(int(part))
    return tuple(sorted(out))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LABELPILOT_", extra="ignore", populate_by_name=True)

    data_dir: Path = Path("./labelpilot-data")
    host: str = "127.0.0.1"
    port: int = 9090

    # Auth. Basic auth protects every endpoint but /health and / when both are set.
    basic_auth_user: str | None = Field(None, validation_alias=AliasChoices("BASIC_AUTH_USER", "basic_auth_user"))
    basic_auth_pass: str | None = Field(None, validation_alias=AliasChoices("BASIC_AUTH_PASS", "basic_auth_pass"))
    #: When set, every route is also served under /s/<secret>/..., and webhooks through that prefix need
    #: no other credential (Label Studio's webhook engine sends no basic auth).
    webhook_secret: str | None = None
    #: Bearer tokens accepted by the predict service (/v1/...), comma-separated.
    api_tokens: str | None = None

    # Training.
    retrain_every: int = Field(10, ge=0)  # annotation events between automatic retrains; 0 = only on Start Training
    #: annotation counts at which a young project retrains as well (jobs/schedule.py); "" = every N only
    retrain_schedule: str = "1,2,5"
    min_examples: int = Field(1, ge=1)  # fewer annotated tasks than this: training is skipped with a reason
    #: run jobs in one long-lived trainer process (imports loaded once); False = a fresh process per job
    warm_trainer: bool = True
    redis_url: str | None = None  # jobs go to RQ on this Redis when set; in-process otherwise
    train_timeout: float = 3600.0

    # Shared state (issue 14): projects, webhook copies and jobs on PostgreSQL when set (postgresql://...);
    # SQLite in the data dir otherwise. Every API replica and worker of one deployment sets the same URL.
    database_url: str | None = None
    job_heartbeat: float = Field(5.0, gt=0)  # seconds between heartbeats of the jobs a process owns
    #: a queued/running job whose heartbeat is older than this is taken for dead (its process stopped) and is
    #: marked interrupted at start-up; live processes' jobs are left alone
    job_stale_after: float = Field(60.0, gt=0)
    #: RQ: times a job whose worker died mid-job (SIGKILL, OOM, a lost machine) is queued again before it is
    #: marked failed with that reason (jobs/recovery.py)
    job_retries: int = Field(1, ge=0)
    #: the RQ queue the servers fill and ``labelpilot worker`` empties (one per deployment sharing a Redis)
    rq_queue: str = Field("labelpilot-train", min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")

    # Label Studio access (win over what /setup sends).
    label_studio_url: str | None = Field(
        None, validation_alias=AliasChoices("LABEL_STUDIO_URL", "LABEL_STUDIO_HOST", "label_studio_url")
    )
    label_studio_api_key: str | None = Field(
        None,
        validation_alias=AliasChoices("LABEL_STUDIO_API_KEY", "LABEL_STUDIO_ACCESS_TOKEN", "label_studio_api_key"),
    )

    # Media and export downloads.
    media_allowlist: str = ""  # extra hosts (comma-separated, e.g. "images.example.com,cdn.example.org:8443")
    #: hosts, IPs or CIDR networks (comma-separated, or "*") that may be reached although they are loopback or
    #: private addresses; the LABEL_STUDIO_URL host and allowlisted hosts are allowed without being listed here
    allow_private_hosts: str = ""
    max_redirects: int = Field(5, ge=0)
    local_files_root: Path | None = None  # local paths under this root may be read
    media_max_bytes: int = 50_000_000
    export_max_bytes: int = 2_000_000_000
    http_timeout: float = 30.0
    export_timeout: float = 600.0
    #: Start Training checks Label Studio's counts and its tasks changed since the last sync, fetches only those
    #: and falls back to the full export when anything disagrees (jobs/sync.py); False: always the full export
    incremental_sync: bool = True
    sync_max_changed: int = Field(5000, ge=0)  # more changed tasks than this: the full export is cheaper

    # Request limits (issue 11): bodies are counted while they stream in, so an oversized one is refused
    # with 413 before it is held in memory.
    max_body_mb: float = Field(32.0, gt=0)  # /setup, /predict, /v1 (a base64 image of 20 MB fits)
    max_webhook_body_mb: float = Field(256.0, gt=0)  # /webhook: a bulk ANNOTATIONS_CREATED is large
    max_tasks: int = Field(1000, ge=1)  # tasks per /predict (Label Studio sends a few hundred at most)
    max_text_chars: int = Field(200_000, ge=1)  # characters in one text field of a task (~100 pages)
    predict_timeout: float = Field(90.0, gt=0)  # /predict answers 503 after this (Label Studio waits 100 s)
    # Suspect annotations after a training (jobs/audit_step.py): "start" = after Start Training jobs, "always" =
    # after every training, "off"; only for projects with audit_min_tasks..audit_max_tasks annotated tasks.
    audit: str = Field("start", pattern="^(start|always|off)$")
    audit_min_tasks: int = Field(10, ge=2)
    audit_max_tasks: int = Field(20000, ge=2)
    setup_wait: float = Field(2.0, gt=0)  # /setup waits this long for models to load (Label Studio waits 3 s)
    model_threads: int = Field(2, ge=1)  # threads that run model work (predictions) off the event loop
    max_queued: int = Field(64, ge=1)  # predictions waiting for a thread; more get 503 + Retry-After
    max_queued_events: int = Field(16, ge=1)  # webhook bodies waiting to be stored; more get 503

    log_level: str = Field("INFO", validation_alias=AliasChoices("LOG_LEVEL", "LABELPILOT_LOG_LEVEL"))

    @field_validator("retrain_schedule")
    @classmethod
    def _schedule(cls, v: str) -> str:
        return ",".join(map(str, parse_schedule(v)))

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, v: str | None) -> str | None:
        if not v:
            return None
        if not v.startswith(("postgresql://", "postgres://")):
            raise ValueError("database_url: expected a postgresql://user@host:port/dbname URL")
        return v

    def public_values(self) -> dict[str, object]:
        """The settings as JSON values without :data:`SECRET_FIELDS`: what may travel through a queue.
        ``Settings(**values)`` in the receiving process fills the secrets from its own environment."""
        return self.model_dump(mode="json", exclude=set(SECRET_FIELDS))

    @property
    def schedule(self) -> tuple[int, ...]:
        return parse_schedule(self.retrain_schedule)

    @property
    def basic_auth(self) -> tuple[str, str] | None:
        if self.basic_auth_user and self.basic_auth_pass:
            return self.basic_auth_user, self.basic_auth_pass
        return None

    @property
    def allowlist(self) -> set[str]:
        return {h.strip().lower() for h in self.media_allowlist.split(",") if h.strip()}

    @property
    def tokens(self) -> set[str]:
        return {t.strip() for t in (self.api_tokens or "").split(",") if t.strip()}


def _thread_count(var: str) -> int:
    env = os.environ.get(var)
    if env and env.isascii() and env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, min(2, os.cpu_count() or 1))


def ort_threads() -> int:
    """onnxruntime's intra-op threads (vision backbone, OCR, page orientation, text encoder):
    ``$LABELPILOT_ORT_THREADS``, else min(2, cores) — the machine this is sized for has 2 cores."""
    return _thread_count("LABELPILOT_ORT_THREADS")


def torch_threads() -> int:
    """torch's threads for eager vision models: ``$LABELPILOT_TORCH_THREADS``, else min(2, cores)."""
    return _thread_count("LABELPILOT_TORCH_THREADS")


def cache_dir(kind: str) -> Path:
    """Where files labelpilot can rebuild are kept (exported ONNX graphs, OCR results): ``$LABELPILOT_CACHE_DIR/
    <kind>``, else ``$XDG_CACHE_HOME/labelpilot/<kind>``, else ``~/.cache/labelpilot/<kind>``."""
    env = os.environ.get("LABELPILOT_CACHE_DIR")
    if env:
        return Path(env) / kind
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "labelpilot" / kind


def write_cache_file(path: Path, data: bytes) -> None:
    """Write a cache file atomically (a temporary file in the same folder, then a rename), readable by all,
    so a reader never sees half a file. Raises ``OSError`` when the folder cannot be written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
