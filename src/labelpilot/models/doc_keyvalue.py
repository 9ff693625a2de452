"""Document fields before any annotation: where a field's name appears on the page as a key
(``日期：2024-01-05``, ``Report Date: Jan 5``, a ``Name`` cell of a form grid, a ``Conclusion`` heading), the
value next to it is proposed for that field.

Keys
    Each label of the control brings the names it is known by: its value (or alias), the ``value`` an alias
    replaced, its ``hint``, its ``predicted_values``, plus the synonyms of :data:`SYNONYMS` when one of those
    names is in a synonym group (日期/时间/Date, 姓名/Name, 金额/总计/Amount/Total, 编号/No./ID, ...; Chinese and
    English names share a group, so a label ``日期`` finds ``Date:`` on an English page). Texts are compared
    after NFKC (full-width colons and letters become half-width), lower-casing, and with spaces between CJK
    characters removed (``日 期`` is ``日期``). A key matches a name exactly, or ends / starts with it
    (``报告日期`` for ``日期``; ``Date of Test`` for ``Date``; whole words only for Latin names); the label's own
    names rank above synonyms, exact above partial, and a key that ends with a colon above one that does not.

Values
    The OCR segment right of the key on the same row (what :func:`labelpilot.models.document.segments_of`
    split off after the colon), else the one below it, when that is not itself a key; a value whose line runs
    to the right margin continues on the lines below it (a wrapped paragraph) until a short line, a gap or a
    key. A key followed by its value in one segment without a colon (``No. R-12345``) is split in two.

Each label gets at most one box per page: the value of its best-ranked key. Scores are honest and below a
trained model's: between 0.3 and 0.6, from the key match's rank and the OCR confidence. A label name that
means nothing as a key (``A``, ``Label 1``, ``Text``) gets no keys; a control without any meaningful name is
not zero-shot ready. Hand-written rules, not a library: no offline package does key/value pairing on OCR
output (layout models such as LayoutLM need weights from a hub).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from labelpilot.data.types import Box
from labelpilot.ocr import OcrPage
from labelpilot.schema.types import ControlSpec, placeholder_name

#: Groups of names one field goes by, Chinese and English together (compared after :func:`norm_key`).
SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("日期", "时间", "日 期", "date", "time", "dated"),
    ("姓名", "名字", "名称", "name", "full name", "患者", "受检人", "patient"),
    ("金额", "总计", "合计", "总额", "总金额", "价税合计", "amount", "total", "sum", "total amount"),
    ("编号", "号码", "单号", "编码", "no", "number", "id", "ref", "reference", "code"),
    ("电话", "手机", "联系电话", "tel", "phone", "telephone", "mobile"),
    ("地址", "住址", "address", "addr"),
    (
        "单位",
        "机构",
        "公司",
        "医院",
        "organization",
        "organisation",
        "company",
        "facility",
        "laboratory",
        "institution",
        "hospital",
    ),
    ("结论", "意见", "诊断", "诊断意见", "conclusion", "findings", "summary", "diagnosis", "opinion"),
    ("性别", "sex", "gender"),
    ("年龄", "age"),
    ("邮箱", "电子邮件", "email", "e-mail"),
    ("发票号码", "发票号", "invoice no", "invoice number"),
    ("税号", "纳税人识别号", "tax id", "vat no"),
)

#: Label names that say nothing about where a value is (Label Studio's OCR template uses Text/Handwriting).
GENERIC = frozenset(
    {
        "text",
        "handwriting",
        "printed",
        "label",
        "field",
        "box",
        "region",
        "object",
        "other",
        "others",
        "misc",
        "none",
        "unknown",
        "item",
        "value",
        "key",
        "title",
        "table",
        "figure",
        "image",
        "word",
        "line",
        "文本",
        "文字",
        "其他",
        "标签",
        "字段",
        "区域",
        "手写",
    }
)
_COLONS = ":：∶﹕"
_CJK_SPACE = re.compile(r"(?<=[\u3000-\u9fff\uf900-\ufaff])\s+(?=[\u3000-\u9fff\uf900-\ufaff])")

# ranks of a key match: own name / synonym x exact / ends with it / starts with it
_RANK = {
    ("own", "exact"): 1.0,
    ("own", "end"): 0.9,
    ("own", "start"): 0.85,
    ("syn", "exact"): 0.85,
    ("syn", "end"): 0.75,
    ("syn", "start"): 0.7,
}
NO_COLON = 0.85  # a key without a colon (a grid cell, a heading) is less sure
INLINE = 0.8  # a key and its value read as one segment without a colon
SCORE_MIN, SCORE_MAX = 0.3, 0.6
#: PP-OCR's line boxes are taller than the ink people draw boxes around: the top and bottom are moved in by
#: these fractions of the line height (medians measured on the synthetic pages; x is about right).
INK_TOP, INK_BOTTOM = 0.22, 0.18


class SegmentLike(Protocol):
    text: str
    box: tuple[float, float, float, float]
    score: float
    is_key: bool

    @property
    def height(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Proposal:
    label: str
    box: tuple[float, float, float, float]  # pixels of the (upright) page
    text: str
    score: float
    key: str  # the key text that was matched


def norm_key(text: str) -> str:
    """A key's text for comparison: NFKC, lower case, no spaces between CJK characters, no trailing colon
    or full stop, single spaces."""
    t = unicodedata.normalize("NFKC", text).lower().strip()
    t = _CJK_SPACE.sub("", t)
    t = t.rstrip(_COLONS + " ").rstrip(".").strip()
    return re.sub(r"\s+", " ", t)


def _is_cjk(text: str) -> bool:
    return any(unicodedata.east_asian_width(c) in ("W", "F") for c in text)


def meaningful(name: str) -> bool:
    """Whether a label name could be a key printed on a page (not ``A``, ``Label 1``, ``Text``, ``???``)."""
    n = norm_key(name)
    if placeholder_name(n) or n in GENERIC or len(n) > 24:
        return False
    return _is_cjk(n) or len(n.replace(" ", "")) >= 2


def label_names(control: ControlSpec) -> dict[str, list[tuple[str, str]]]:
    """label key -> [(normalised name, "own" | "syn")] for the labels that have meaningful names."""
    groups = [{norm_key(s) for s in g} for g in SYNONYMS]
    out: dict[str, list[tuple[str, str]]] = {}
    for lab in control.labels:
        own = [norm_key(n) for n in (lab.value, *lab.hints, *lab.predicted_values) if meaningful(n)]
        own = list(dict.fromkeys(own))
        if not own:
            continue
        names = [(n, "own") for n in own]
        for g in groups:
            if any(n in g for n in own):
                names.extend((s, "syn") for s in sorted(g) if s not in own and (s, "syn") not in names)
        out[lab.key] = names
    return out


def _match(key: str, name: str) -> str | None:
    """How ``key`` (normalised) matches ``name``: "exact", "end", "start" or None."""
    if key == name:
        return "exact"
    if len(key) <= len(name):
        return None
    if _is_cjk(name):
        if key.endswith(name):
            return "end"
        if key.startswith(name):
            return "start"
        return None
    kw, nw = key.split(), name.split()
    if len(kw) > len(nw) and kw[-len(nw) :] == nw:
        return "end"
    if len(kw) > len(nw) and kw[: len(nw)] == nw:
        return "start"
    return None


def _looks_like_key(key: str) -> bool:
    """Short enough to be a key: at most 10 CJK characters or 4 words."""
    if not key:
        return False
    return len(key) <= 10 if _is_cjk(key) else len(key.split()) <= 4 and len(key) <= 32


def best_match(key: str, names: dict[str, list[tuple[str, str]]]) -> tuple[str, float] | None:
    """The label whose names match ``key`` best, and the match's rank."""
    if not _looks_like_key(key):
        return None
    best: tuple[str, float] | None = None
    for label, cands in names.items():
        for name, kind in cands:
            how = _match(key, name)
            if how is None:
                continue
            rank = _RANK[(kind, how)]
            if best is None or rank > best[1]:
                best = (label, rank)
    return best


def _inline_split(text: str, names: dict[str, list[tuple[str, str]]]) -> tuple[str, str, str, float] | None:
    """``No. R-12345`` -> (label, key part, value part, rank): a segment that starts with a name and goes on
    with a space or a digit. The longest name that matches wins."""
    low = unicodedata.normalize("NFKC", text).lower()
    best: tuple[str, str, str, float] | None = None
    for label, cands in names.items():
        for name, kind in cands:
            if not low.startswith(name) or len(name) >= len(low):
                continue
            rest = low[len(name) :]
            if rest[:1] == "." and not name.endswith("."):
                rest = rest[1:]
            # a space after the name, or (after a CJK name) a switch to Latin letters or digits: 编号R-12345
            if not rest[:1].isspace() and not (rest[:1].isascii() and rest[:1].isalnum() and _is_cjk(name)):
                continue
            cut = len(text) - len(rest.lstrip())
            value = text[cut:].strip()
            rank = _RANK[(kind, "exact")] * INLINE
            if value and (best is None or rank > best[3] or (rank == best[3] and len(name) > len(best[1]))):
                best = (label, text[:cut].strip(), value, rank)
    return best


def _keys(
    segs: Sequence[SegmentLike], nb: np.ndarray, names: dict[str, list[tuple[str, str]]]
) -> list[tuple[int, str, float]]:
    """(segment index, label, rank) of every segment that reads as a key of some label. A key without a
    colon must start its row (a form cell, a heading): a word inside a row is a table header or prose."""
    out = []
    for i, s in enumerate(segs):
        if not s.is_key and nb[i, 0] >= 0:
            continue
        hit = best_match(norm_key(s.text), names)
        if hit is not None:
            out.append((i, hit[0], hit[1] * (1.0 if s.is_key else NO_COLON)))
    return out


def _union(boxes: Iterable[tuple[float, float, float, float]]) -> tuple[float, float, float, float]:
    bs = list(boxes)
    return (min(b[0] for b in bs), min(b[1] for b in bs), max(b[2] for b in bs), max(b[3] for b in bs))


def _join(parts: Sequence[str]) -> str:
    out = ""
    for p in parts:
        if out and not (_is_cjk(out[-1]) and _is_cjk(p[:1])):
            out += " "
        out += p
    return out


def _value_of(
    i: int, segs: Sequence[SegmentLike], nb: np.ndarray, keyish: set[int], width: int, right_margin: float
) -> list[int]:
    """The segments of the value of key segment ``i``: right of it, else below it, then its wrapped lines."""
    key = segs[i]
    h = key.height
    first = -1
    r = int(nb[i, 1])
    if r >= 0 and r not in keyish and segs[r].box[0] - key.box[2] <= 0.35 * width:
        first = r
    else:
        b = int(nb[i, 3])
        if b >= 0 and b not in keyish and segs[b].box[1] - key.box[3] <= 1.6 * h:
            first = b
    if first < 0:
        return []
    members = [first]
    cur = first
    while len(members) < 12:
        c = segs[cur]
        b = int(nb[cur, 3])
        if b < 0 or b in keyish or b in members or int(nb[b, 0]) in keyish:  # a key's own value
            break
        nxt = segs[b]
        wrapped = c.box[2] >= right_margin - 2.0 * c.height
        aligned = abs(nxt.box[0] - segs[first].box[0]) < 1.5 * c.height
        close = nxt.box[1] - c.box[3] < 1.0 * c.height
        if not (wrapped and aligned and close):
            break
        members.append(b)
        cur = b
    return members


def _ink(seg: SegmentLike) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = seg.box
    h = y1 - y0
    return (x0, y0 + INK_TOP * h, x1, y1 - INK_BOTTOM * h)


def char_weight(ch: str) -> float:
    """A character's share of a line's width: a wide (CJK, full-width) character counts 1, another 0.55."""
    return 1.0 if unicodedata.east_asian_width(ch) in ("W", "F") else 0.55


def _split_box(box: tuple[float, float, float, float], text: str, value: str) -> tuple[float, float, float, float]:
    """The box of the last ``len(value)`` characters of ``text``, shared out by character width."""
    w = [char_weight(ch) for ch in text]
    total = sum(w) or 1.0
    start = sum(w[: len(text) - len(value)]) / total
    return (box[0] + (box[2] - box[0]) * start, box[1], box[2], box[3])


def propose(
    segs: Sequence[SegmentLike],
    nb: np.ndarray,
    width: int,
    height: int,
    names: dict[str, list[tuple[str, str]]],
    labels: Iterable[str] | None = None,
) -> list[Proposal]:
    """At most one value per label (of ``labels``, default all of ``names``) from the page's keys.

    ``nb`` is the (n, 4) left/right/above/below neighbour table of ``segs``
    (:func:`labelpilot.models.document._neighbours`)."""
    wanted = set(names if labels is None else labels) & set(names)
    if not segs or not wanted:
        return []
    names = {k: v for k, v in names.items() if k in wanted}
    keys = _keys(segs, nb, names)
    keyish = {i for i, _, _ in keys} | {i for i, s in enumerate(segs) if s.is_key}
    cands = _candidates(segs, nb, names, keys, keyish, width)
    used: set[int] = set()
    done: set[str] = set()
    out: list[Proposal] = []
    for rank, i, label, what in cands:
        if label in done:
            continue
        if isinstance(what, tuple):  # key and value in one segment
            if i in used:
                continue
            key_text, value = what
            box = _split_box(_ink(segs[i]), segs[i].text, value)
            conf, members = segs[i].score, [i]
        else:
            if used & set(what) or i in used:
                continue
            members = what
            key_text = segs[i].text
            box = _union(_ink(segs[m]) for m in members)
            value = _join([segs[m].text for m in members])
            conf = float(np.mean([segs[m].score for m in members]))
            used.add(i)
        used.update(members)
        done.add(label)
        score = SCORE_MIN + (SCORE_MAX - SCORE_MIN) * max(0.0, min(1.0, (rank * conf - 0.5) / 0.5))
        out.append(Proposal(label, box, value, round(score, 6), key_text))
    out.extend(_lone_dates(segs, nb, names, done, used | keyish, keyish))
    return out


Candidate = tuple[float, int, str, "list[int] | tuple[str, str]"]


def _candidates(
    segs: Sequence[SegmentLike],
    nb: np.ndarray,
    names: dict[str, list[tuple[str, str]]],
    keys: list[tuple[int, str, float]],
    keyish: set[int],
    width: int,
) -> list[Candidate]:
    """(rank, key segment, label, value segments or (key text, value text) of an inline pair), best first."""
    right_margin = float(np.percentile([s.box[2] for s in segs], 95))
    cands: list[Candidate] = []
    with_value = set()
    for i, label, rank in keys:
        members = _value_of(i, segs, nb, keyish, width, right_margin)
        if members:
            cands.append((rank, i, label, members))
            with_value.add(i)
    for i, s in enumerate(segs):
        if s.is_key or i in with_value:
            continue
        inline = _inline_split(s.text, names)
        # a segment read as a longer key (编号758648 starts with 编号) with no value next to it is a key and its
        # value in one when what follows the name has a digit (not "Date of Test")
        if inline is not None and (i not in keyish or any(c.isdigit() for c in inline[2])):
            label, key, value, rank = inline
            cands.append((rank, i, label, (key, value)))
    cands.sort(key=lambda c: (-c[0], segs[c[1]].box[1], segs[c[1]].box[0]))
    return cands


_DATE_ONLY = re.compile(
    r"\s*((\d{4}\s*[-/.年]\s*\d{1,2}\s*[-/.月]\s*\d{1,2}日?)|(\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})|"
    r"([A-Za-z]{3,9}\.?\s+\d{1,2},?\s+\d{4})|(\d{1,2}\s+[A-Za-z]{3,9}\.?\s+\d{4}))\s*"
)
_DATE_GROUP = frozenset(norm_key(s) for s in SYNONYMS[0])


def _lone_dates(
    segs: Sequence[SegmentLike],
    nb: np.ndarray,
    names: dict[str, list[tuple[str, str]]],
    done: set[str],
    used: set[int],
    keyish: set[int],
) -> list[Proposal]:
    """A date label that found no key gets the top-most segment that is a date and nothing else (a letter's
    date at the top right), with the lowest score; a date right of some other key is that key's value."""
    out = []
    for label, cands in names.items():
        if label in done or not any(n in _DATE_GROUP for n, _ in cands):
            continue
        dates = [
            i
            for i, s in enumerate(segs)
            if i not in used and int(nb[i, 0]) not in keyish and _DATE_ONLY.fullmatch(s.text)
        ]  # not another key's value (a "printed on" date)
        if dates:
            i = min(dates, key=lambda j: (segs[j].box[1], segs[j].box[0]))
            used.add(i)
            out.append(Proposal(label, _ink(segs[i]), segs[i].text.strip(), SCORE_MIN, ""))
    return out


# ------------------------------------------------------------------- boxes on the image as stored


def to_original(box: Box, page: OcrPage) -> Box:
    """A box relative to the upright page (what the models see) made relative to the image as stored."""
    if not page.rotation:
        return box
    px = (box.x * page.width, box.y * page.height, (box.x + box.width) * page.width, (box.y + box.height) * page.height)
    x0, y0, x1, y1 = page.to_original(px)
    w, h = page.original_size
    return replace(box, x=x0 / w, y=y0 / h, width=(x1 - x0) / w, height=(y1 - y0) / h)


def from_original(box: Box, page: OcrPage) -> Box:
    """A box relative to the image as stored (an annotation) made relative to the upright page."""
    if not page.rotation:
        return box
    w, h = page.original_size
    x0, y0, x1, y1 = page.from_original((box.x * w, box.y * h, (box.x + box.width) * w, (box.y + box.height) * h))
    return replace(
        box, x=x0 / page.width, y=y0 / page.height, width=(x1 - x0) / page.width, height=(y1 - y0) / page.height
    )


def proposal_boxes(proposals: Iterable[Proposal], page: OcrPage, threshold: float = 0.0) -> tuple[Box, ...]:
    """Proposals as boxes relative to the image as stored, in reading order, those below ``threshold`` left out."""
    out = []
    for p in proposals:
        if p.score < threshold:
            continue
        x0, y0 = max(0.0, p.box[0]), max(0.0, p.box[1])
        x1, y1 = min(float(page.width), p.box[2]), min(float(page.height), p.box[3])
        if x1 <= x0 or y1 <= y0:
            continue
        b = Box(
            x0 / page.width,
            y0 / page.height,
            (x1 - x0) / page.width,
            (y1 - y0) / page.height,
            p.label,
            p.score,
            text=p.text,
        )
        out.append(b)
    out.sort(key=lambda b: (b.y, b.x))
    return tuple(to_original(b, page) for b in out)
