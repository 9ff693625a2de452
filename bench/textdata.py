"""Text classification datasets of ../shared/data for the benchmarks: (texts, labels) and a label config each.

Each dataset's label config is what a user would write in Label Studio: TNEWS keeps its English
``label_desc`` values with the usual Chinese category name as ``hint``; TREC keeps its coarse codes with the
meaning as ``hint``; SST-2 uses ``Negative``/``Positive``.
"""

from __future__ import annotations

import json
from pathlib import Path
from xml.sax.saxutils import quoteattr

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = next(
    (p for p in (REPO.parent / "shared" / "data", REPO.parents[1] / "shared" / "data") if p.exists()),
    REPO.parent / "shared" / "data",
)

TNEWS_HINTS = {
    "news_story": "故事", "news_culture": "文化", "news_entertainment": "娱乐", "news_sports": "体育",
    "news_finance": "财经", "news_house": "房产", "news_car": "汽车", "news_edu": "教育", "news_tech": "科技",
    "news_military": "军事", "news_travel": "旅游", "news_world": "国际", "news_stock": "股票",
    "news_agriculture": "农业", "news_game": "游戏",
}
TREC_HINTS = {
    "ABBR": "abbreviation", "DESC": "description, definition or reason", "ENTY": "entity, thing",
    "HUM": "person or group of people", "LOC": "location, place", "NUM": "number, date or quantity",
}
SST2_LABELS = {"0": "Negative", "1": "Positive"}


def load(name: str, split: str, data_dir: Path = DEFAULT_DATA) -> tuple[list[str], list[str]]:
    """(texts, label values) of a dataset split: tnews train/dev, sst2 train/dev/test, trec train/test."""
    texts: list[str] = []
    labels: list[str] = []
    if name == "tnews":
        for line in (data_dir / "tnews" / f"{split}.json").open(encoding="utf-8"):
            if line.strip():
                row = json.loads(line)
                texts.append(row["sentence"])
                labels.append(row["label_desc"])
    elif name == "sst2":
        for line in (data_dir / "sst2" / f"sentiment-{split}").open(encoding="utf-8"):
            if line.strip():
                text, _, lab = line.rstrip("\n").rpartition("\t")
                texts.append(text.strip())
                labels.append(SST2_LABELS[lab.strip()])
    elif name == "trec":
        fname = "train_5500.label" if split == "train" else "TREC_10.label"
        for line in (data_dir / "trec" / fname).open(encoding="latin-1"):
            if line.strip():
                head, _, text = line.strip().partition(" ")
                texts.append(text)
                labels.append(head.split(":")[0])
    else:
        raise ValueError(name)
    return texts, labels


def label_config(name: str, use_hints: bool = True) -> str:
    """The Label Studio config of a dataset (hints on the choices unless ``use_hints`` is False)."""
    if name == "tnews":
        values, hints = list(TNEWS_HINTS), TNEWS_HINTS
    elif name == "trec":
        values, hints = list(TREC_HINTS), TREC_HINTS
    else:
        values, hints = list(SST2_LABELS.values()), {}
    choices = "".join(
        f"<Choice value={quoteattr(v)}" + (f" hint={quoteattr(hints[v])}" if use_hints and v in hints else "") + "/>"
        for v in values
    )
    return f'<View><Text name="text" value="$text"/><Choices name="label" toName="text">{choices}</Choices></View>'
