"""A bundle: the models of every supported control of one label schema, saved and versioned together.

A Label Studio project may ask for several things at once (a sentiment ``<Choices>`` and a NER
``<Labels>``); one training run produces one bundle, which the registry stores as one version.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from labelpilot.errors import NotFoundError
from labelpilot.models.base import Model, get_family
from labelpilot.schema import LabelSchema, parse_label_config

MANIFEST = "bundle.json"
FORMAT = 1


class Bundle:
    """Models keyed by control name (``from_name``), plus the schema they were trained for."""

    def __init__(self, schema: LabelSchema, models: Mapping[str, Model]) -> None:
        self.schema = schema
        self.models = dict(models)

    @property
    def families(self) -> list[str]:
        return sorted({m.name for m in self.models.values()})

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        controls = {}
        for i, (name, model) in enumerate(self.models.items()):
            sub = f"control-{i}"
            model.save(directory / sub)
            controls[name] = {"family": model.name, "dir": sub}
        manifest = {"format": FORMAT, "label_config": self.schema.config, "controls": controls}
        (directory / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> Bundle:
        path = directory / MANIFEST
        if not path.is_file():
            raise NotFoundError(f"{directory} holds no model bundle ({MANIFEST} missing)")
        manifest = json.loads(path.read_text(encoding="utf-8"))
        schema = parse_label_config(manifest["label_config"])
        models: dict[str, Model] = {}
        for name, entry in manifest["controls"].items():
            family = get_family(entry["family"], allow_import=True)
            models[name] = family.load(directory / entry["dir"], schema.control(name))
        return cls(schema, models)
