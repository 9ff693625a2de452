"""Label schema: what a project asks a model to produce. Plain dataclasses, no I/O."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from enum import StrEnum


class TaskKind(StrEnum):
    """What a control asks for, on which kind of object."""

    TEXT_CHOICES = "text-choices"  # <Choices> on <Text>: single- or multi-label classification
    TEXT_TAXONOMY = "text-taxonomy"  # <Taxonomy> on <Text>: hierarchical classification
    TEXT_SPANS = "text-spans"  # <Labels> on <Text>: named entities / spans
    IMAGE_CHOICES = "image-choices"  # <Choices> on <Image>: image classification
    IMAGE_BOXES = "image-boxes"  # <RectangleLabels> on <Image>: object detection
    VIDEO_CHOICES = "video-choices"  # <Choices> on <Video>: video classification from sampled frames


# Control tag -> (object tag -> kind). Everything else is reported as unsupported.
SUPPORTED: dict[str, dict[str, TaskKind]] = {
    "Choices": {
        "Text": TaskKind.TEXT_CHOICES,
        "HyperText": TaskKind.TEXT_CHOICES,
        "Paragraphs": TaskKind.TEXT_CHOICES,
        "Image": TaskKind.IMAGE_CHOICES,
        "Video": TaskKind.VIDEO_CHOICES,
    },
    "Taxonomy": {"Text": TaskKind.TEXT_TAXONOMY, "HyperText": TaskKind.TEXT_TAXONOMY},
    "Labels": {"Text": TaskKind.TEXT_SPANS},
    "RectangleLabels": {"Image": TaskKind.IMAGE_BOXES},
}

TEXT_OBJECTS = frozenset({"Text", "HyperText", "Paragraphs", "Header"})

#: Separator of taxonomy path parts inside a label key ("Animals/Cat"). Paths themselves are kept as tuples.
TAXONOMY_SEP = "/"


def supported_summary() -> str:
    """Human-readable list of what labelpilot can pre-label, for error messages."""
    parts = []
    for control, objects in SUPPORTED.items():
        parts.append(f"<{control}> on " + " / ".join(f"<{o}>" for o in objects))
    return "; ".join(parts)


@dataclass(frozen=True)
class ObjectSpec:
    """An object tag (the thing being labelled): ``<Text name="text" value="$text"/>``."""

    name: str
    type: str
    value_key: str | None  # the task data key without "$", None for static values
    value_type: str | None = None  # valueType="url": the task holds a URL to the text, not the text


_PLACEHOLDER_PREFIX = (
    "label|class|cls|category|cat|type|tag|option|choice|item|group|level|lbl|field|region|box|object|id"
    "|l|c|t|x|y|标签|字段|类别"
)
_PLACEHOLDER = re.compile(
    rf"^(?:(?:{_PLACEHOLDER_PREFIX})[\s_.#:-]*)?[\d\s_.#:-]+$"  # "7", "Label 2", "class-3", "字段1"
    r"|^[a-z]?\d+[a-z]?$"  # "c12", "A3"
    r"|^(?=[0-9a-f]*\d)[0-9a-f]{6,}$",  # a hash: "deadbeef42" (but not the word "facade")
    re.IGNORECASE,
)


def placeholder_name(name: str) -> bool:
    """A label name that says nothing about its label: empty, without a letter, or a numbered or id-like
    placeholder (``Label 2``, ``c12``, ``deadbeef42``). The one test behind both zero-shot families'
    "meaningful name" checks (``models/text_zeroshot``: can an encoder match it; ``models/doc_keyvalue``:
    could it be a key printed on a page), which each add their own rules on top."""
    s = unicodedata.normalize("NFKC", name).strip()
    return not s or not any(c.isalpha() for c in s) or _PLACEHOLDER.match(s) is not None


@dataclass(frozen=True)
class LabelSpec:
    """One ``<Choice>`` / ``<Label>`` of a control."""

    value: str  # what Label Studio stores in results (alias when given, else value)
    predicted_values: tuple[str, ...] = ()
    score_threshold: float | None = None  # per-label threshold (multi-label), from model_score_threshold
    path: tuple[str, ...] = ()  # taxonomy: path from the root, ending with this label
    hint: str | None = None  # a description of the label (the <Choice hint="..."> attribute), for zero-shot
    hints: tuple[str, ...] = ()  # other names the config gives it: its value when an alias is stored, its hint

    @property
    def key(self) -> str:
        """The label's identity inside models: the value, or the joined path for taxonomy labels."""
        return TAXONOMY_SEP.join(self.path) if self.path else self.value


@dataclass(frozen=True)
class ControlSpec:
    """A control tag (what the annotator produces) that labelpilot can pre-label."""

    name: str  # from_name
    type: str  # "Choices", "Labels", ...
    to_name: str
    object_type: str
    value_key: str | None  # data key of the object it labels
    kind: TaskKind
    labels: tuple[LabelSpec, ...]
    multiple: bool = False  # Choices choice="multiple" (or Taxonomy with several selections allowed)
    score_threshold: float | None = None  # model_score_threshold on the control
    pair_key: str | None = None  # optional second text field (another text object in the config)
    text_is_url: bool = False  # the object has valueType="url": the text must be downloaded
    transcription: str | None = None  # a <TextArea perRegion="true"> on the same image (OCR template): its name
    attrs: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def label_keys(self) -> list[str]:
        return [lab.key for lab in self.labels]

    def label(self, key: str) -> LabelSpec | None:
        for lab in self.labels:
            if lab.key == key:
                return lab
        return None

    def map_predicted(self, model_name: str) -> str | None:
        """Map a name a pretrained model uses to this control's label key (``predicted_values``).

        Follows Label Studio's ``build_label_map``: ``predicted_values`` first, then an exact
        match, then a case-insensitive match. Returns None when nothing maps.
        """
        for lab in self.labels:
            if model_name in lab.predicted_values:
                return lab.key
        for lab in self.labels:
            if lab.value == model_name and not lab.predicted_values:
                return lab.key
        low = model_name.lower()
        for lab in self.labels:
            if lab.value.lower() == low and not lab.predicted_values:
                return lab.key
        return None


@dataclass(frozen=True)
class UnsupportedControl:
    name: str
    type: str
    to_name: str
    object_type: str | None
    reason: str


@dataclass(frozen=True)
class LabelSchema:
    """Everything labelpilot needs to know about a project's label config."""

    controls: tuple[ControlSpec, ...]
    objects: tuple[ObjectSpec, ...]
    unsupported: tuple[UnsupportedControl, ...] = ()
    config: str = ""  # the XML it was built from, kept so a saved model can rebuild its schema

    def control(self, name: str) -> ControlSpec:
        for c in self.controls:
            if c.name == name:
                return c
        raise KeyError(name)

    def problems(self) -> list[str]:
        """Messages for controls that will not get predictions (empty when all are supported)."""
        return [
            f"control <{u.type} name=\"{u.name}\"> on {u.object_type or '?'} \"{u.to_name}\": {u.reason}"
            for u in self.unsupported
        ]
