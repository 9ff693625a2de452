"""Tiny synthetic data sets, one per task kind, for :func:`labelpilot.testing.check_model.check_model`.

Each set is a real label config (parsed like one from Label Studio), training examples, a few held-out
examples, and one *bad* example the family must survive (an unreadable image, a text that is not a string).
They are small on purpose: the contract check fits every family on them in seconds, so they prove the
plumbing (construction, options, fit, predict, save/load, pickling), not accuracy. Images are drawn with
Pillow into a folder the caller gives; nothing is downloaded.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labelpilot.data.types import Box, Example, Span, Target
from labelpilot.schema import parse_label_config
from labelpilot.schema.types import TAXONOMY_SEP, ControlSpec


@dataclass
class SyntheticSet:
    """A control, what to train on, what to predict, and one bad example (``bad_is_error``: must it get
    ``Prediction(error=...)``, or may it get an empty answer, as texts that are not strings do)."""

    name: str
    control: ControlSpec
    train: list[Example]
    test: list[Example]
    bad: Example
    bad_is_error: bool = False
    fit_options: dict[str, Any] = field(default_factory=dict)  # small settings so heavy families fit fast


_TOPICS = {
    "sports": ["the team won the match", "a late goal decided the final", "the striker scored twice",
               "the coach praised his players", "fans cheered the winning side", "the keeper saved a penalty",
               "the runner broke the record", "the club signed a midfielder"],
    "finance": ["the bank raised interest rates", "stocks fell on weak earnings", "bond yields rose again",
                "the fund bought tech shares", "investors sold the dollar", "the market rallied at noon",
                "profits beat the forecast", "the company issued new shares"],
    "weather": ["heavy rain is expected tonight", "a cold front brings snow", "sunny skies all weekend",
                "strong winds hit the coast", "the storm flooded the valley", "fog delays morning flights",
                "temperatures drop below zero", "hail damaged the crops"],
}


def _text_config(control: str, choice: str) -> str:
    choices = "".join(f'<Choice value="{t}"/>' for t in _TOPICS)
    return (f'<View><Text name="text" value="$text"/><Choices name="{control}" toName="text" choice="{choice}">'
            f"{choices}</Choices></View>")


def _control(config: str) -> ControlSpec:
    return parse_label_config(config).controls[0]


def choices_set() -> SyntheticSet:
    """Single-label text classification, three topics."""
    exs = [Example(text=t, target=Target(labels=(lab,)), id=f"{lab}-{i}")
           for lab, texts in _TOPICS.items() for i, t in enumerate(texts)]
    train = [e for i, e in enumerate(exs) if i % 8 < 6]
    test = [e for i, e in enumerate(exs) if i % 8 >= 6]
    return SyntheticSet("choices", _control(_text_config("topic", "single")), train, test, Example(text=None))  # type: ignore[arg-type]


def multilabel_set() -> SyntheticSet:
    """Multi-label text classification: a text of one topic, or two topics joined."""
    rng = random.Random(0)
    names = list(_TOPICS)
    exs = []
    for i in range(30):
        picked = tuple(sorted(rng.sample(names, 1 + i % 2)))
        text = " and ".join(rng.choice(_TOPICS[n]) for n in picked)
        exs.append(Example(text=text, target=Target(labels=picked), id=f"m{i}"))
    return SyntheticSet("multi-label", _control(_text_config("topics", "multiple")), exs[:24], exs[24:],
                        Example(text=None))  # type: ignore[arg-type]


def taxonomy_set() -> SyntheticSet:
    """A two-level taxonomy: News/<topic> leaves under one root."""
    leaves = "".join(f'<Choice value="{t}"/>' for t in _TOPICS)
    config = (f'<View><Text name="text" value="$text"/><Taxonomy name="category" toName="text">'
              f'<Choice value="News">{leaves}</Choice></Taxonomy></View>')
    exs = [Example(text=t, target=Target(labels=(TAXONOMY_SEP.join(("News", lab)),)), id=f"{lab}-{i}")
           for lab, texts in _TOPICS.items() for i, t in enumerate(texts)]
    return SyntheticSet("taxonomy", _control(config), [e for i, e in enumerate(exs) if i % 8 < 6],
                        [e for i, e in enumerate(exs) if i % 8 >= 6], Example(text=None))  # type: ignore[arg-type]


_PEOPLE = ["Alice Moore", "Bob Stone", "Carla Diaz", "David Brown", "Emma White", "Frank Green"]
_PLACES = ["Paris", "Berlin", "Madrid", "Oslo", "Lisbon", "Vienna"]
_FRAMES = ["{p} moved to {c} last year", "yesterday {p} flew to {c}", "{p} was born in {c}",
           "in {c} {p} opened a shop"]


def spans_set() -> SyntheticSet:
    """Named entities (PER, LOC) in template sentences."""
    config = ('<View><Text name="text" value="$text"/><Labels name="ner" toName="text">'
              '<Label value="PER"/><Label value="LOC"/></Labels></View>')
    exs = []
    for i in range(28):
        person, city, frame = _PEOPLE[i % 6], _PLACES[(i * 5) % 6], _FRAMES[i % 4]
        text = frame.format(p=person, c=city)
        spans = tuple(sorted((Span(text.index(person), text.index(person) + len(person), "PER"),
                              Span(text.index(city), text.index(city) + len(city), "LOC")),
                             key=lambda s: s.start))
        exs.append(Example(text=text, target=Target(spans=spans), id=f"s{i}"))
    return SyntheticSet("spans", _control(config), exs[:24], exs[24:], Example(text=None))  # type: ignore[arg-type]


def keywords_set() -> SyntheticSet:
    """Keyword spans: a ``<Labels>`` whose label has ``predicted_values="keyword"`` (no annotation needed)."""
    config = ('<View><Text name="text" value="$text"/><Labels name="kw" toName="text">'
              '<Label value="keyword" predicted_values="keyword"/></Labels></View>')
    texts = [t for ts in _TOPICS.values() for t in ts]
    exs = [Example(text=t, id=f"k{i}") for i, t in enumerate(texts)]
    return SyntheticSet("keywords", _control(config), exs[:20], exs[20:], Example(text=None))  # type: ignore[arg-type]


def _image(path: Path, draw_fn: Callable[[Any], None], size: tuple[int, int] = (96, 96), seed: int = 0) -> str:
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    img = Image.fromarray((rng.random((size[1], size[0], 3)) * 60 + 100).astype(np.uint8))
    draw_fn(ImageDraw.Draw(img))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return str(path)


def image_classes_set(directory: Path) -> SyntheticSet:
    """Image classification: a red or a blue disc on noise."""
    config = ('<View><Image name="image" value="$image"/><Choices name="colour" toName="image">'
              '<Choice value="red"/><Choice value="blue"/></Choices></View>')
    colours = {"red": (220, 20, 20), "blue": (20, 40, 220)}
    exs = []
    for i in range(16):
        label = "red" if i % 2 == 0 else "blue"
        r = 20 + (i * 7) % 15

        def disc(d: Any, r: int = r, fill: tuple[int, int, int] = colours[label]) -> None:
            d.ellipse((48 - r, 48 - r, 48 + r, 48 + r), fill=fill)

        exs.append(Example(image=_image(Path(directory) / f"c{i}.png", disc, seed=i), target=Target(labels=(label,)),
                           id=f"c{i}"))
    bad = Path(directory) / "broken.png"
    bad.write_bytes(b"not an image")
    return SyntheticSet("image classes", _control(config), exs[:12], exs[12:], Example(image=str(bad)),
                        bad_is_error=True, fit_options={"image_size": 128, "cv_folds": 3})


def boxes_set(directory: Path) -> SyntheticSet:
    """Object detection: one yellow square per image, at a random place."""
    config = ('<View><Image name="image" value="$image"/><RectangleLabels name="box" toName="image">'
              '<Label value="square"/></RectangleLabels></View>')
    rng = random.Random(0)
    exs = []
    w = h = 128
    for i in range(16):
        s = rng.randint(28, 44)
        x, y = rng.randint(0, w - s), rng.randint(0, h - s)

        def square(d: Any, x: int = x, y: int = y, s: int = s) -> None:
            d.rectangle((x, y, x + s - 1, y + s - 1), fill=(250, 250, 40))

        path = _image(Path(directory) / f"b{i}.png", square, size=(w, h), seed=100 + i)
        exs.append(Example(image=path, target=Target(boxes=(Box(x / w, y / h, s / w, s / h, "square"),)), id=f"b{i}"))
    bad = Path(directory) / "missing.png"  # never written
    return SyntheticSet("boxes", _control(config), exs[:10], exs[13:], Example(image=str(bad)), bad_is_error=True,
                        fit_options={"image_size": 128, "variants": 3, "epochs": 3, "batch_size": 16,
                                     "flip_test": False})


_FIELDS = {"Name": ["Alice Moore", "Bob Stone", "Carla Diaz", "David Brown", "Emma White", "Frank Green"],
           "Date": ["2024-03-05", "2023-11-20", "2022-07-14", "2021-01-30", "2024-09-09", "2020-05-18"],
           "Code": ["AB1234", "CX5678", "QZ9012", "LM3456", "TR7890", "PK2468"]}


def documents_set(directory: Path) -> SyntheticSet:
    """Document fields: pages with "Name: ...", "Date: ...", "Code: ..." lines (Pillow's built-in font); the
    boxes are the values, as an annotator of Label Studio's OCR template draws them."""
    from PIL import Image, ImageDraw, ImageFont

    labels = "".join(f'<Label value="{k}"/>' for k in _FIELDS)
    config = ('<View><Image name="image" value="$ocr"/><RectangleLabels name="field" toName="image">'
              f'{labels}</RectangleLabels><TextArea name="transcription" toName="image" editable="true" '
              'perRegion="true" required="false"/></View>')
    font = ImageFont.load_default(size=26)
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    exs = []
    w, h = 560, 300
    for i in range(4):
        img = Image.new("RGB", (w, h), "white")
        draw = ImageDraw.Draw(img)
        boxes = []
        for row, (key, values) in enumerate(_FIELDS.items()):
            y = 40 + row * 80 + (i % 3) * 8
            draw.text((30, y), f"{key}:", font=font, fill="black")
            value = values[i]
            x0 = 180 + (i % 2) * 30
            draw.text((x0, y), value, font=font, fill="black")
            x1, y1, x2, y2 = draw.textbbox((x0, y), value, font=font)
            boxes.append(Box(x1 / w, y1 / h, (x2 - x1) / w, (y2 - y1) / h, key, text=value))
        path = d / f"page{i}.png"
        img.save(path)
        exs.append(Example(image=str(path), target=Target(boxes=tuple(boxes)), id=path.name))
    # small pages, no orientation model: OCR is the cost of this family (results are cached on disk by image)
    return SyntheticSet("documents", _control(config), exs[:3], exs[3:], Example(image=str(d / "missing.png")),
                        bad_is_error=True, fit_options={"det_side": 576, "orient": False})


#: which synthetic set each built-in family is checked on (a family may be checked on several)
def videos_set(directory: Path) -> SyntheticSet:
    """Video classification: a red or a blue disc moving over noise, 6 frames (written with OpenCV)."""
    import cv2
    import numpy as np

    config = ('<View><Video name="video" value="$video"/><Choices name="colour" toName="video">'
              '<Choice value="red"/><Choice value="blue"/></Choices></View>')
    colours = {"red": (20, 20, 220), "blue": (220, 40, 20)}  # OpenCV writes BGR
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    exs = []
    for i in range(12):
        label = "red" if i % 2 == 0 else "blue"
        rng = np.random.default_rng(i)
        path = directory / f"v{i}.avi"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 6.0, (64, 64))
        bg = (rng.random((64, 64, 3)) * 60 + 100).astype(np.uint8)
        for t in range(6):
            frame = bg.copy()
            cv2.circle(frame, (14 + 6 * t, 32), 10, colours[label], -1)
            writer.write(frame)
        writer.release()
        exs.append(Example(image=str(path), target=Target(labels=(label,)), id=f"v{i}"))
    bad = directory / "broken.avi"
    bad.write_bytes(b"not a video")
    return SyntheticSet("videos", _control(config), exs[:9], exs[9:], Example(image=str(bad)), bad_is_error=True,
                        fit_options={"image_size": 128, "cv_folds": 3, "frames": 3})


FAMILY_SETS: dict[str, tuple[str, ...]] = {
    "text-linear": ("choices", "multi-label", "taxonomy"),
    "ner-crf": ("spans",),
    "keywords": ("keywords",),
    "image-classifier": ("image classes",),
    "image-detector": ("boxes",),
    "doc-fields": ("documents",),
    "video-frames": ("videos",),
}


def make_set(name: str, directory: Path) -> SyntheticSet:
    """The synthetic set called ``name`` (see :data:`FAMILY_SETS`); images go under ``directory``."""
    makers: dict[str, Callable[[], SyntheticSet]] = {
        "choices": choices_set, "multi-label": multilabel_set, "taxonomy": taxonomy_set, "spans": spans_set,
        "keywords": keywords_set, "image classes": lambda: image_classes_set(Path(directory) / "classes"),
        "boxes": lambda: boxes_set(Path(directory) / "boxes"),
        "documents": lambda: documents_set(Path(directory) / "documents"),
        "videos": lambda: videos_set(Path(directory) / "videos"),
    }
    return makers[name]()
