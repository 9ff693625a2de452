"""Label audit (issue 16): out-of-fold predictions, likely label errors, annotator agreement.

Names resolve lazily so that ``import labelpilot.audit`` (the CLI registers its command from here) stays light.
"""

from __future__ import annotations

from typing import Any

_NAMES = {
    "Suspect": "labelpilot.audit.suspects",
    "find_suspects": "labelpilot.audit.suspects",
    "suspects_from_oof": "labelpilot.audit.suspects",
    "out_of_fold": "labelpilot.audit.oof",
    "OutOfFold": "labelpilot.audit.oof",
    "agreement": "labelpilot.audit.agreement",
    "Agreement": "labelpilot.audit.agreement",
    "audit_project": "labelpilot.audit.project",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        import importlib

        return getattr(importlib.import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'labelpilot.audit' has no attribute {name!r}")
