"""Label schema: which task kinds a project asks for, built from a Label Studio label config."""

from labelpilot.schema.labelconfig import make_label_config, parse_label_config, require_supported
from labelpilot.schema.types import (
    TAXONOMY_SEP,
    ControlSpec,
    LabelSchema,
    LabelSpec,
    ObjectSpec,
    TaskKind,
    UnsupportedControl,
)

__all__ = [
    "TAXONOMY_SEP",
    "ControlSpec",
    "LabelSchema",
    "LabelSpec",
    "ObjectSpec",
    "TaskKind",
    "UnsupportedControl",
    "make_label_config",
    "parse_label_config",
    "require_supported",
]
