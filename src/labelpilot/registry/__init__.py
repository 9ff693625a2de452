"""Model repository: versions, metrics, promote/rollback (SQLite + atomic folders)."""

from labelpilot.registry.store import ModelVersion, Registry, parse_model_ref

__all__ = ["ModelVersion", "Registry", "parse_model_ref"]
