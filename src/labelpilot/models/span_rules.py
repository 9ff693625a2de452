"""Rule recognisers for spans whose shape says what they are, in Chinese and English.

Each recogniser finds one concept of :mod:`labelpilot.models.span_synonyms` and has a fixed ``score``
(below what a trained CRF gives its spans, which are mostly > 0.8): it ranks rule pre-labels under model
ones in Label Studio's "sort by prediction score". The figures are precision-minded guesses checked on
the hand-made cases in ``tests/test_span_zeroshot.py``; they are not calibrated on data.

==========  =====  ===============================================================================
concept     score  what is found
==========  =====  ===============================================================================
URL         0.60   ``http(s)://...``, ``www....`` (trailing punctuation left out)
EMAIL       0.60   ``name@host.tld``
ID          0.55   Chinese resident ID: 18 digits (last may be X), valid birth date and ISO 7064 checksum
PHONE       0.50   Chinese mobile ``1[3-9]xxxxxxxxx`` (+86), landline ``0xx(x)-xxxxxxx(x)``, ``400-xxx-xxxx``,
                   North-American/international ``+1 (555) 123-4567``, ``555-123-4567``
TIME        0.45   zh: ``2024年1月5日``, ``1月5号``, ``上午9点半``, ``9:30``, ``去年``, ``周三``;
                   en: ``Jan 5, 2024``, ``5 January 2024``, ``2024-01-05``, ``01/05/2024``, ``Monday``,
                   ``9:30 am``, ``yesterday``, ``last week``
MONEY       0.50   ``3999元``, ``5万元``, ``￥12.5``, ``三百块``, ``$1.2 billion``, ``€20``, ``20 dollars``, ``USD 5``
PERCENT     0.50   ``12%``, ``12.5 ％``, ``百分之三十``, ``3个百分点``, ``12 percent``
ID (other)  0.35   codes of capital letters and >= 4 digits (``INV-2024-001``, ``AB123456``)
NUMBER      0.35   ``1,234.5``, ``42`` (not part of a longer word or any span above), ``三百``
==========  =====  ===============================================================================

Overlaps are resolved by the order of the table (earlier wins), then by length. Written with ``re``
rather than a library: the maintained ones (dateparser, phonenumbers, price-parser) each cover one kind,
parse rather than locate, and add dependencies several times the size of this module.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

_ZH_NUM = "零〇一二两三四五六七八九十百千万亿"
_MONTHS = (
    "Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
    "Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?"
)
_NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_ZH_UNIT = r"(?:万亿|千万|百万|十万|亿|万|千|百)?"
_CURRENCY_WORD = (
    r"(?:元人民币|元|块钱|块|角|美元|美金|欧元|英镑|日元|港元|港币|韩元|卢布|人民币|dollars?|euros?|pounds?|yuan|"
    r"USD|EUR|GBP|RMB|CNY|JPY|HKD)"
)
_SCALE_EN = r"(?:\s?(?:million|billion|trillion|thousand|bn|mln|m|k)\b)?"


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


@dataclass(frozen=True)
class Recogniser:
    concept: str
    score: float
    patterns: tuple[re.Pattern[str], ...]
    check: str | None = None  # name of a validator applied to the match

    def find(self, text: str) -> Iterable[tuple[int, int]]:
        for pat in self.patterns:
            for m in pat.finditer(text):
                s, e = m.span("x") if "x" in pat.groupindex else m.span()
                if s < e and (self.check is None or _CHECKS[self.check](text[s:e])):
                    yield s, e


def _cn_id_ok(s: str) -> bool:
    """Chinese resident ID (GB 11643): a real birth date and the ISO 7064 MOD 11-2 check character."""
    try:
        born = date(int(s[6:10]), int(s[10:12]), int(s[12:14]))
    except ValueError:
        return False
    if not 1900 <= born.year <= date.today().year:
        return False
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    total = sum(int(c) * w for c, w in zip(s[:17], weights, strict=True))
    return "10X98765432"[total % 11] == s[17].upper()


def _has_digits(s: str) -> bool:
    return sum(c.isdigit() for c in s) >= 4 and any(c.isalpha() for c in s)


_CHECKS = {"cn_id": _cn_id_ok, "code": _has_digits}
_B = r"(?<![A-Za-z0-9_])"  # not inside a Latin word/number
_E = r"(?![A-Za-z0-9_])"

RECOGNISERS: tuple[Recogniser, ...] = (
    Recogniser("URL", 0.60, (_rx(r"(?P<x>(?:https?://|www\.)[^\s<>\"'，。、；：！？（）【】《》“”]+?)[.,;:!?)]*(?=[\s<>\"'，。、；：！？（）【】《》“”]|$)"),)),
    Recogniser(
        "EMAIL", 0.60, (_rx(_B + r"[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}" + _E),)
    ),
    Recogniser("ID", 0.55, (re.compile(r"(?<!\d)\d{17}[\dXx](?![\dA-Za-z])"),), check="cn_id"),
    Recogniser(
        "PHONE",
        0.50,
        (
            re.compile(r"(?<![\d+])(?:(?:\+|00)86[- ]?)?1[3-9]\d(?:[- ]?\d{4}){2}(?!\d)"),
            re.compile(r"(?<!\d)(?:\(0\d{2,3}\)|0\d{2,3}-)\d{7,8}(?!\d)"),
            re.compile(r"(?<!\d)400-?\d{3}-?\d{4}(?!\d)"),
            re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}(?!\d)"),
        ),
    ),
    Recogniser(
        "TIME",
        0.45,
        (
            # zh dates, with an optional time of day after them
            re.compile(
                r"(?:(?:\d{4}|[零〇一二三四五六七八九]{4})年(?:\d{1,2}|[一二三四五六七八九十]{1,2})月"
                r"(?:(?:\d{1,2}|[一二三四五六七八九十]{1,3})[日号])?"
                r"|(?<!\d)\d{1,2}月\d{1,2}[日号]|(?<![\d年])\d{4}年(?!龄|级)|(?<!\d)\d{1,2}月份?(?!\d)"
                r"|[一二三四五六七八九十]{1,2}月[一二三四五六七八九十]{1,3}[日号])"
                r"(?:\s?(?:凌晨|早上|早晨|上午|中午|下午|傍晚|晚上|夜里|夜间)?\s?\d{1,2}[点时:：](?:\d{1,2}分?|半)?)?"
            ),
            re.compile(
                r"(?:凌晨|早上|早晨|上午|中午|下午|傍晚|晚上|夜里|夜间)?(?:\d{1,2}|[一二三四五六七八九十]{1,3})[点时]"
                r"(?:半|一刻|三刻|\d{1,2}分|[一二三四五六七八九十]{1,3}分)?(?:钟)?(?![\d间期段候代])"
            ),
            re.compile(r"(?:前天|昨天|今天|明天|后天|去年|今年|明年|前年|后年|上周|本周|下周|上个月|这个月|下个月|上月|本月|下月"
                       r"|凌晨|早上|上午|中午|下午|傍晚|晚上|周末|(?:周|星期|礼拜)[一二三四五六日天])"),
            # en dates and times
            _rx(_B + r"(?:(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day,?\s)?(?:" + _MONTHS + r")\.?\s"
                r"\d{1,2}(?:st|nd|rd|th)?"
                r"(?:,?\s\d{4})?" + _E),
            _rx(_B + r"\d{1,2}(?:st|nd|rd|th)?\s(?:of\s)?(?:" + _MONTHS + r")\.?(?:,?\s\d{4})?" + _E),
            _rx(_B + r"(?:" + _MONTHS + r")\.?\s\d{4}" + _E),
            re.compile(r"(?<![\d-])\d{4}-\d{1,2}-\d{1,2}(?:[T ]\d{1,2}:\d{2}(?::\d{2})?)?(?![\d-])"),
            re.compile(r"(?<![\d/.])\d{1,2}/\d{1,2}/(?:\d{4}|\d{2})(?![\d/])|(?<![\d.])\d{4}[/.]\d{1,2}[/.]\d{1,2}(?![\d.])"),
            _rx(_B + r"\d{1,2}(?::\d{2})?\s?(?:a\.m\.|p\.m\.|am|pm)(?![A-Za-z])"),
            re.compile(r"(?<![\d:])\d{1,2}:\d{2}(?::\d{2})?(?![\d:])"),
            _rx(_B + r"(?:(?:last|next|this)\s(?:week|month|year|weekend|monday|tuesday|wednesday|thursday|friday|"
                r"saturday|sunday)|yesterday|today|tomorrow|tonight)" + _E),
            re.compile(_B + r"(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day" + _E),
        ),
    ),
    Recogniser(
        "MONEY",
        0.50,
        (
            re.compile(r"(?:[¥￥$€£]|US\$|HK\$)\s?(?:" + _NUM + r")" + _ZH_UNIT + r"(?:元)?"),
            re.compile(r"(?<![\d.,])(?:" + _NUM + r")\s?" + _ZH_UNIT + r"\s?" + _CURRENCY_WORD + r"(?![A-Za-z])"),
            re.compile(r"[" + _ZH_NUM + r"]+(?:元|块钱|块|美元|欧元|英镑|日元)"),
            _rx(_B + r"(?:[$€£]|US\$)\s?(?:" + _NUM + r")" + _SCALE_EN),
            _rx(_B + r"(?:" + _NUM + r")" + _SCALE_EN + r"\s(?:US\s)?(?:dollars?|euros?|pounds?|yuan|cents?)" + _E),
            _rx(_B + r"(?:USD|EUR|GBP|RMB|CNY|JPY|HKD)\s?(?:" + _NUM + r")" + _SCALE_EN + _E),
        ),
    ),
    Recogniser(
        "PERCENT",
        0.50,
        (
            re.compile(r"(?<![\d.])(?:" + _NUM + r")\s?[%％‰]"),
            re.compile(r"百分之[零一二三四五六七八九十百点]+|(?<![\d.])(?:" + _NUM + r")个百分点"),
            _rx(_B + r"(?:" + _NUM + r")\s?(?:percent|per cent|percentage points?)" + _E),
        ),
    ),
    Recogniser("ID", 0.35, (re.compile(_B + r"[A-Z]{1,5}(?:-?\d+)+(?:-?[A-Z]+\d*)?" + _E),), check="code"),
    Recogniser(
        "NUMBER",
        0.35,
        (
            re.compile(r"(?<![A-Za-z0-9_.,])[-+]?(?:" + _NUM + r")(?![A-Za-z0-9_]|[.,]\d)"),
            re.compile(r"(?<![\d.])(?:" + _NUM + r")(?=[\u4e00-\u9fff])"),  # 12个, 3岁
            re.compile(r"[一二两三四五六七八九十百千万亿]{2,}(?=[个名位只条件次年天岁人])"),
        ),
    ),
)


def find_rule_spans(text: str, concepts: Iterable[str] | None = None) -> list[tuple[int, int, str, float]]:
    """Non-overlapping ``(start, end, concept, score)`` of the recognisers for ``concepts`` (None = all),
    sorted by start. Earlier recognisers win overlaps, then longer matches."""
    want = None if concepts is None else set(concepts)
    cands: list[tuple[int, int, int, str, float]] = []
    for rank, rec in enumerate(RECOGNISERS):
        if want is not None and rec.concept not in want:
            continue
        for s, e in rec.find(text):
            cands.append((rank, s, e, rec.concept, rec.score))
    cands.sort(key=lambda c: (c[0], c[1] - c[2], c[1]))
    taken: list[tuple[int, int, str, float]] = []
    for _, s, e, concept, score in cands:
        if all(e <= a or s >= b for a, b, _, _ in taken):
            taken.append((s, e, concept, score))
    return sorted(taken)
