"""Build a :class:`LabelSchema` from a Label Studio label config (XML).

A small lxml parser rather than label-studio-sdk's ``LabelInterface``: the SDK pulls pandas, opencv,
nltk and more into the serving process for what is a 150-line walk over the XML (measured in the
issue note). It follows the SDK's ``parse_config`` rules: control tags have ``name`` and ``toName``;
object tags have ``name`` and ``value="$key"``; labels are the ``<Choice>``/``<Label>`` children of the
nearest control, keyed by ``alias`` when present.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

from lxml import etree

from labelpilot.errors import SchemaError
from labelpilot.ids import parse_uint
from labelpilot.schema.types import (
    SUPPORTED,
    TEXT_OBJECTS,
    ControlSpec,
    LabelSchema,
    LabelSpec,
    ObjectSpec,
    TaskKind,
    UnsupportedControl,
    supported_summary,
)

_LABEL_TAGS = {"choice", "label"}
_NOT_CONTROLS = {"filter", "view", "style", "header"}
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_comments=True)
MAX_CONFIG_BYTES = 1_000_000


def _truthy(value: str | None) -> bool:
    return str(value).strip().lower() in {"true", "1", "yes"}


def _float_attr(el: etree._Element, *names: str) -> float | None:
    for name in names:
        raw = el.get(name)
        if raw is None or raw.strip() == "":
            continue
        try:
            return float(raw)
        except ValueError as exc:
            raise SchemaError(
                f"<{el.tag} name=\"{el.get('name', '')}\">: {name}=\"{raw}\" is not a number",
                field=name,
            ) from exc
    return None


def _split_values(raw: str | None) -> tuple[str, ...]:
    if not raw:
        return ()
    return tuple(v.strip() for v in raw.split(",") if v.strip())


def _label_of(el: etree._Element, path: tuple[str, ...] = ()) -> LabelSpec:
    value = el.get("alias") or el.get("value")
    if value is None:
        raise SchemaError(f"<{el.tag}> without value inside <{el.getparent().tag}>", field="value")
    return LabelSpec(
        value=value,
        predicted_values=_split_values(el.get("predicted_values")),
        score_threshold=_float_attr(el, "model_score_threshold", "score_threshold"),
        path=path,
        hint=(el.get("hint") or "").strip() or None,
        hints=tuple(h.strip() for h in (el.get("value"), el.get("hint")) if h and h.strip() and h != value),
    )


def _taxonomy_labels(el: etree._Element, prefix: tuple[str, ...] = ()) -> list[LabelSpec]:
    out: list[LabelSpec] = []
    for child in el:
        if not isinstance(child.tag, str) or child.tag.lower() != "choice":
            continue
        value = child.get("alias") or child.get("value")
        if value is None:
            continue
        path = (*prefix, value)
        out.append(_label_of(child, path))
        out.extend(_taxonomy_labels(child, path))
    return out


def _flat_labels(el: etree._Element) -> list[LabelSpec]:
    labels: list[LabelSpec] = []
    for child in el.iter():
        if child is el or not isinstance(child.tag, str):
            continue
        if child.tag.lower() in _LABEL_TAGS and _nearest_control(child) is el:
            labels.append(_label_of(child))
    return labels


def _nearest_control(el: etree._Element) -> etree._Element | None:
    parent = el.getparent()
    while parent is not None:
        if parent.get("toName") is not None and parent.get("name") is not None:
            return parent
        parent = parent.getparent()
    return None


def _parse_xml(config: str) -> etree._Element:
    """The root element of ``config``, after the size and syntax checks."""
    if not isinstance(config, str) or not config.strip():
        raise SchemaError("the label config is empty", field="label_config")
    if len(config.encode()) > MAX_CONFIG_BYTES:
        raise SchemaError("the label config is larger than 1 MB", field="label_config")
    try:
        return etree.fromstring(config.encode(), parser=_PARSER)
    except etree.XMLSyntaxError as exc:
        raise SchemaError(f"the label config is not valid XML: {exc}", field="label_config") from exc


def _collect_tags(root: etree._Element) -> tuple[dict[str, ObjectSpec], list[etree._Element]]:
    """The object tags (by name) and the control tag elements, in document order."""
    objects: dict[str, ObjectSpec] = {}
    controls: list[etree._Element] = []
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        name = el.get("name")
        if name is None or (el.tag.lower() in _NOT_CONTROLS and el.get("toName") is None):
            # <Header value="$title"/> has no name; a named Header is an object.
            if name is not None and el.get("value", "").startswith("$"):
                objects[name] = ObjectSpec(name, el.tag, el.get("value")[1:])
            continue
        if el.get("toName") is not None:
            controls.append(el)
        elif el.get("value") is not None or el.get("valueList") is not None:
            raw = el.get("value") or el.get("valueList") or ""
            objects[name] = ObjectSpec(
                name, el.tag, raw[1:] if raw.startswith("$") else None, (el.get("valueType") or "").lower() or None
            )
    return objects, controls


def _control_labels(el: etree._Element) -> tuple[list[LabelSpec], bool]:
    """A control's labels and whether it takes several of them."""
    if el.tag.lower() == "taxonomy":
        return _taxonomy_labels(el), bool((parse_uint(el.get("maxUsages")) or 0) > 1)
    return _flat_labels(el), el.get("choice", "single").lower() == "multiple"


def _pair_key(obj: ObjectSpec, kind: TaskKind, objects: dict[str, ObjectSpec]) -> str | None:
    """A second text for text controls; for a <Video>, the task's text (title, transcript) to fuse."""
    if obj.type in TEXT_OBJECTS or kind is TaskKind.VIDEO_CHOICES:
        others = [o for o in objects.values() if o.type in TEXT_OBJECTS and o.name != obj.name and o.value_key]
        return others[0].value_key if others else None
    return None


def _control_spec(el: etree._Element, objects: dict[str, ObjectSpec]) -> ControlSpec | UnsupportedControl:
    """The spec of one control tag, or why labelpilot cannot pre-label it (the first reason found)."""
    name, ctype = el.get("name"), el.tag
    to_names = [t.strip() for t in el.get("toName", "").split(",") if t.strip()]
    to_name = to_names[0] if to_names else ""
    obj = objects.get(to_name)

    def reject(reason: str) -> UnsupportedControl:
        return UnsupportedControl(name, ctype, to_name, obj.type if obj else None, reason)

    if _truthy(el.get("model_skip")):
        return reject("skipped (model_skip=\"true\")")
    kinds = {k.lower(): v for k, v in SUPPORTED.items()}.get(ctype.lower())
    if kinds is None:
        return reject(f"labelpilot cannot pre-label <{ctype}> yet; supported: {supported_summary()}")
    if obj is None:
        return reject(f"toName=\"{to_name}\" names no object tag in the config")
    kind = {k.lower(): v for k, v in kinds.items()}.get(obj.type.lower())
    if kind is None:
        return reject(f"<{ctype}> on <{obj.type}> is not supported; supported: {supported_summary()}")
    if obj.value_key is None:
        return reject(f"object \"{obj.name}\" has no $variable to read task data from")
    if (el.get("value") or "").startswith("$") or el.get("apiUrl"):
        return reject("dynamic labels (value=\"$...\" or apiUrl) are not supported yet")
    labels, multiple = _control_labels(el)
    if not labels:
        return reject("the control has no labels")
    keys = [lab.key for lab in labels]
    if len(set(keys)) != len(keys):
        return reject(f"duplicate label(s) {sorted({k for k in keys if keys.count(k) > 1})}")
    return ControlSpec(
        name=name,
        type=ctype,
        to_name=to_name,
        object_type=obj.type,
        value_key=obj.value_key,
        kind=kind,
        labels=tuple(labels),
        multiple=multiple,
        score_threshold=_float_attr(el, "model_score_threshold", "score_threshold"),
        pair_key=_pair_key(obj, kind, objects),
        text_is_url=obj.type in TEXT_OBJECTS and obj.value_type == "url",
        attrs={k: v for k, v in el.attrib.items()},
    )


def _link_transcriptions(
    specs: list[ControlSpec], controls: list[etree._Element], unsupported: list[UnsupportedControl]
) -> tuple[list[ControlSpec], list[UnsupportedControl]]:
    """A <TextArea perRegion="true"> on an image that a <RectangleLabels> labels is that control's per-box
    transcription (Label Studio's OCR template): filled with the text a document model reads in each box."""
    per_region = {
        el.get("toName", "").split(",")[0].strip(): el.get("name")
        for el in controls
        if el.tag.lower() == "textarea" and _truthy(el.get("perRegion"))
    }
    linked: set[str] = set()
    specs = list(specs)
    for i, spec in enumerate(specs):
        name = per_region.get(spec.to_name)
        if name and spec.type.lower() == "rectanglelabels":
            specs[i] = replace(spec, transcription=name)
            linked.add(name)
    return specs, [u for u in unsupported if u.name not in linked]


@lru_cache(maxsize=256)
def parse_label_config(config: str) -> LabelSchema:
    """Parse a label config. Raises :class:`SchemaError` for XML that is not a label config.

    Controls that labelpilot cannot pre-label are listed in ``schema.unsupported`` with the reason;
    they never make parsing fail.
    """
    objects, controls = _collect_tags(_parse_xml(config))
    specs: list[ControlSpec] = []
    unsupported: list[UnsupportedControl] = []
    for el in controls:
        spec = _control_spec(el, objects)
        if isinstance(spec, ControlSpec):
            specs.append(spec)
        else:
            unsupported.append(spec)
    specs, unsupported = _link_transcriptions(specs, controls, unsupported)
    return LabelSchema(
        controls=tuple(specs), objects=tuple(objects.values()), unsupported=tuple(unsupported), config=config
    )


def require_supported(schema: LabelSchema) -> LabelSchema:
    """Raise a clear :class:`SchemaError` when no control of the config can be pre-labelled."""
    if schema.controls:
        return schema
    if schema.unsupported:
        raise SchemaError(
            "no control in the label config can be pre-labelled: " + "; ".join(schema.problems()),
            field="label_config",
        )
    raise SchemaError(
        f"the label config has no control tag (a tag with name and toName); supported: {supported_summary()}",
        field="label_config",
    )


def make_label_config(
    labels: list[str],
    *,
    kind: str = "choices",
    multiple: bool = False,
    pair: bool = False,
    text_key: str = "text",
    pair_key: str = "text_pair",
    control_name: str = "label",
) -> str:
    """A label config for data that does not come from Label Studio (CSV, CoNLL, image folders).

    Everything in labelpilot is described by a label config, so a model trained from files is the same
    kind of object as one trained from a Label Studio project. ``kind`` is one of ``choices``,
    ``taxonomy`` (labels given as "Parent/Child" paths), ``labels`` (spans), ``image-choices``,
    ``rectangles``, ``video-choices`` (with ``pair``: a ``<Text>`` beside the video, fused by the video model).
    """
    from xml.sax.saxutils import quoteattr

    def choice_tags(tag: str) -> str:
        return "".join(f"<{tag} value={quoteattr(lab)}/>" for lab in labels)

    text_obj = f'<Text name="text" value="${text_key}"/>'
    if pair:
        text_obj += f'<Text name="text_pair" value="${pair_key}"/>'
    name = quoteattr(control_name)
    if kind == "choices":
        choice = ' choice="multiple"' if multiple else ""
        body = f'{text_obj}<Choices name={name} toName="text"{choice}>{choice_tags("Choice")}</Choices>'
    elif kind == "labels":
        body = f'{text_obj}<Labels name={name} toName="text">{choice_tags("Label")}</Labels>'
    elif kind == "taxonomy":
        tree: dict[str, list[str]] = {}
        for lab in labels:
            parent, _, child = lab.partition("/")
            tree.setdefault(parent, [])
            if child:
                tree[parent].append(child)
        inner = "".join(
            f"<Choice value={quoteattr(p)}>" + "".join(f"<Choice value={quoteattr(c)}/>" for c in kids) + "</Choice>"
            for p, kids in tree.items()
        )
        usages = ' maxUsages="10"' if multiple else ""
        body = f'{text_obj}<Taxonomy name={name} toName="text"{usages}>{inner}</Taxonomy>'
    elif kind == "image-choices":
        choice = ' choice="multiple"' if multiple else ""
        body = (
            f'<Image name="image" value="$image"/><Choices name={name} toName="image"{choice}>'
            f'{choice_tags("Choice")}</Choices>'
        )
    elif kind == "video-choices":
        choice = ' choice="multiple"' if multiple else ""
        text = f'<Text name="text" value="${text_key}"/>' if pair else ""
        body = (
            f'<Video name="video" value="$video"/>{text}<Choices name={name} toName="video"{choice}>'
            f'{choice_tags("Choice")}</Choices>'
        )
    elif kind == "rectangles":
        body = (
            f'<Image name="image" value="$image"/><RectangleLabels name={name} toName="image">'
            f'{choice_tags("Label")}</RectangleLabels>'
        )
    else:
        raise SchemaError(f"unknown kind {kind!r}", field="kind")
    return f"<View>{body}</View>"
