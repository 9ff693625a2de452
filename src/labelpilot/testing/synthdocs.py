"""Synthetic report pages with known field boxes, for tests and the document benchmark (like sklearn's make_*).

Each page is an A4 report (1240 x 1754 px, 150 dpi) in Chinese or English, drawn with Pillow in one of four
layouts, with its own values, fonts, sizes, margins, field order, distractors (other key/value pairs, a table
of results, a second "printed on" date) and noise (speckle, blur, JPEG). The fields a project would label
are the *values* of: 日期 (report date), 编号 (report number), 姓名 (name), 单位 (organisation) and 结论
(conclusion, one to three wrapped lines). Their boxes are the pixel bounds of the drawn value text.

Layouts:
- ``form``: key/value rows at the left, a results table, then "结论：" with the conclusion wrapped after it.
- ``two-column``: key/value pairs in two columns, conclusion under a heading of its own.
- ``grid``: a ruled table of key | value cells, conclusion in the last row.
- ``letter``: the date at the top right without a key, "No." under the title, the rest inline; the
  conclusion is a paragraph after an opening sentence.

Fonts come from Python packages, never from the machine, so the same seed draws the same page on every machine
(and a machine without CJK fonts draws Chinese pages): Chinese in Noto Sans SC / Noto Serif SC from
``pylopdf-fonts-zh-cn`` (SIL OFL 1.1, the ``dev`` extra), English in DejaVu Sans / DejaVu Serif from
matplotlib's own data. ``LABELPILOT_FONT_ZH`` / ``LABELPILOT_FONT_EN`` override this with font files
(``os.pathsep``-separated), or with ``system`` for the Debian font packages listed in ``SYSTEM_FONTS``. Text is
laid out with Pillow's basic engine, so whether the machine has libraqm/fribidi does not change a page either.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FIELDS = ("日期", "编号", "姓名", "单位", "结论")
LAYOUTS = ("form", "two-column", "grid", "letter")
PAGE = (1240, 1754)

FONT_ENV = {"zh": "LABELPILOT_FONT_ZH", "en": "LABELPILOT_FONT_EN"}
# read only when FONT_ENV[lang] is "system" (Debian: fonts-wqy-microhei fonts-wqy-zenhei fonts-arphic-uming
# fonts-noto-cjk, fonts-dejavu-core)
SYSTEM_FONTS = {
    "zh": (
        "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
        "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
        "/usr/share/fonts/truetype/arphic/uming.ttc",
        "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    ),
    "en": (
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf",
        "/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed.ttf",
    ),
}
FONT_HINT = {
    "zh": "install the dev extra (pip install 'labelpilot[dev]', it brings pylopdf-fonts-zh-cn)",
    "en": "matplotlib's DejaVu fonts are missing",
}

KEYS = {
    "zh": {
        "日期": ["报告日期", "检验日期", "日期"],
        "编号": ["报告编号", "编号", "样本编号"],
        "姓名": ["姓名", "患者姓名", "受检人"],
        "单位": ["送检单位", "检测机构", "单位"],
        "结论": ["结论", "检验结论", "诊断意见"],
    },
    "en": {
        "日期": ["Report Date", "Date", "Date of Test"],
        "编号": ["Report No.", "Reference", "Sample ID"],
        "姓名": ["Name", "Patient", "Patient Name"],
        "单位": ["Laboratory", "Organization", "Facility"],
        "结论": ["Conclusion", "Findings", "Summary"],
    },
}
TITLES = {
    "zh": ["检验报告单", "体检报告", "检测报告", "化验单"],
    "en": ["Laboratory Report", "Test Report", "Medical Examination Report"],
}
DISTRACT_KEYS = {
    "zh": ["性别", "年龄", "电话", "床号", "标本类型", "送检医生"],
    "en": ["Sex", "Age", "Phone", "Ward", "Specimen", "Physician"],
}
PRINTED = {"zh": "打印时间", "en": "Printed on"}
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华建国志红"
FIRST = ["John", "Mary", "Alice", "Robert", "Linda", "James", "Susan", "David", "Karen", "Peter", "Emma", "Lucas"]
LAST = ["Smith", "Johnson", "Brown", "Taylor", "Wilson", "Clark", "Lewis", "Walker", "Young", "King"]
ORG_ZH = ["市第一人民医院检验科", "中心医院病理科", "华康体检中心", "省疾控中心实验室", "仁和医院检验中心"]
ORG_EN = ["City General Hospital Lab", "North Clinic Pathology", "Central Health Center", "Riverside Medical Lab"]
CONCL_ZH = [
    "未见明显异常，建议定期复查。",
    "血常规各项指标均在参考范围内。",
    "肝功能轻度异常，请结合临床并于三个月后复查。",
    "样本检测结果阴性，未检出相关病原体。",
    "血糖偏高，建议控制饮食并复诊内分泌科。",
    "心电图提示窦性心律，正常范围心电图。",
]
CONCL_EN = [
    "No abnormality found, routine follow-up advised.",
    "All blood count values are within the reference range.",
    "Mildly elevated liver enzymes; repeat the test in three months.",
    "The sample tested negative for the listed pathogens.",
    "Fasting glucose is high; dietary control and an endocrinology visit are advised.",
    "Sinus rhythm, normal electrocardiogram.",
]
ITEMS_ZH = ["白细胞", "红细胞", "血红蛋白", "血小板", "谷丙转氨酶", "总胆固醇", "甘油三酯", "肌酐"]
ITEMS_EN = ["WBC", "RBC", "Hemoglobin", "Platelets", "ALT", "Cholesterol", "Triglycerides", "Creatinine"]


@dataclass
class SynthPage:
    path: str
    lang: str
    layout: str
    width: int
    height: int
    fields: list[tuple[str, tuple[float, float, float, float], str]] = field(default_factory=list)  # label, box, text

    def ls_result(
        self, from_name: str = "label", to_name: str = "image", transcription: str | None = None
    ) -> list[dict[str, Any]]:
        """The page's fields as a Label Studio annotation result (percent coordinates)."""
        out: list[dict[str, Any]] = []
        for i, (label, (x0, y0, x1, y1), text) in enumerate(self.fields):
            value = {
                "x": 100 * x0 / self.width,
                "y": 100 * y0 / self.height,
                "width": 100 * (x1 - x0) / self.width,
                "height": 100 * (y1 - y0) / self.height,
                "rotation": 0,
            }
            rid = f"f{i}"
            out.append(
                {
                    "id": rid,
                    "from_name": from_name,
                    "to_name": to_name,
                    "type": "rectanglelabels",
                    "original_width": self.width,
                    "original_height": self.height,
                    "value": {**value, "rectanglelabels": [label]},
                }
            )
            if transcription:
                out.append(
                    {
                        "id": rid,
                        "from_name": transcription,
                        "to_name": to_name,
                        "type": "textarea",
                        "value": {**value, "text": [text]},
                    }
                )
        return out


def bundled_fonts(lang: str) -> list[str]:
    """The fonts shipped by Python packages for ``lang`` (empty when the package is not installed)."""
    if lang == "zh":
        try:
            import pylopdf_fonts_zh_cn as noto_sc
        except ImportError:
            return []
        paths = [noto_sc.sans_path(), noto_sc.serif_path()]
    else:
        import matplotlib

        ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
        paths = [ttf / "DejaVuSans.ttf", ttf / "DejaVuSerif.ttf"]
    return [str(p) for p in paths if Path(p).is_file()]


def available_fonts(lang: str) -> list[str]:
    """The fonts pages in ``lang`` are drawn with: ``LABELPILOT_FONT_<LANG>`` (font files, or ``system``),
    else the packaged fonts. An empty list means none is installed; a named file that is missing is an error."""
    if lang not in FONT_ENV:
        raise ValueError(f"lang must be one of {sorted(FONT_ENV)}, not {lang!r}")
    value = os.environ.get(FONT_ENV[lang], "").strip()
    if value == "system":
        return [f for f in SYSTEM_FONTS[lang] if Path(f).is_file()]
    if value:
        paths = [p for p in value.split(os.pathsep) if p]
        missing = [p for p in paths if not Path(p).is_file()]
        if missing:
            raise ValueError(f"{FONT_ENV[lang]} names font files that do not exist: {missing}")
        return paths
    return bundled_fonts(lang)


def _date(rng: random.Random, lang: str) -> str:
    y, m, d = rng.randint(2019, 2026), rng.randint(1, 12), rng.randint(1, 28)
    months = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ]
    if lang == "zh":
        return rng.choice([f"{y}-{m:02d}-{d:02d}", f"{y}年{m}月{d}日", f"{y}/{m:02d}/{d:02d}"])
    return rng.choice([f"{y}-{m:02d}-{d:02d}", f"{d:02d}/{m:02d}/{y}", f"{months[m - 1]} {d}, {y}"])


def _values(rng: random.Random, lang: str) -> dict[str, str]:
    if lang == "zh":
        name = rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.randint(1, 2)))
        org, concl = rng.choice(ORG_ZH), "".join(rng.sample(CONCL_ZH, rng.randint(1, 2)))
    else:
        name, org = f"{rng.choice(FIRST)} {rng.choice(LAST)}", rng.choice(ORG_EN)
        concl = " ".join(rng.sample(CONCL_EN, rng.randint(1, 2)))
    number = rng.choice(
        [
            f"R-{rng.randint(10000, 99999)}",
            f"BG{rng.randint(2019, 2026)}-{rng.randint(1, 9999):04d}",
            f"{rng.randint(100000, 999999)}",
        ]
    )
    return {"日期": _date(rng, lang), "编号": number, "姓名": name, "单位": org, "结论": concl}


def _distractor(rng: random.Random, lang: str, key: str) -> str:
    if key in ("性别", "Sex"):
        return rng.choice(["男", "女"] if lang == "zh" else ["M", "F"])
    if key in ("年龄", "Age"):
        return f"{rng.randint(3, 90)}" + ("岁" if lang == "zh" else "")
    if key in ("电话", "Phone"):
        return f"1{rng.randint(3, 9)}{rng.randint(100000000, 999999999)}"
    if key in ("床号", "Ward"):
        return f"{rng.randint(1, 40)}"
    if key in ("标本类型", "Specimen"):
        return rng.choice(["血清", "全血", "尿液"] if lang == "zh" else ["Serum", "Whole blood", "Urine"])
    return rng.choice(SURNAMES) + rng.choice(GIVEN) if lang == "zh" else f"Dr. {rng.choice(LAST)}"


class _Canvas:
    def __init__(self, rng: random.Random, lang: str) -> None:
        from PIL import Image, ImageDraw, ImageFont

        self.rng, self.lang = rng, lang
        self.img = Image.new("L", PAGE, 255)
        self.draw = ImageDraw.Draw(self.img)
        fonts = available_fonts(lang)
        if not fonts:
            raise RuntimeError(f"no {lang} font to draw pages with: {FONT_HINT[lang]}, or set {FONT_ENV[lang]}")
        path = rng.choice(fonts)
        self.size = rng.randint(26, 33)
        basic = ImageFont.Layout.BASIC  # raqm is used only where the machine has fribidi: pages would differ
        self.font = ImageFont.truetype(path, self.size, layout_engine=basic)
        self.big = ImageFont.truetype(path, int(self.size * 1.5), layout_engine=basic)
        self.fields: list[tuple[str, tuple[float, float, float, float], str]] = []
        self.ink = rng.randint(0, 60)

    def text(
        self, xy: tuple[float, float], s: str, *, big: bool = False, label: str | None = None
    ) -> tuple[float, ...]:
        font = self.big if big else self.font
        self.draw.text(xy, s, font=font, fill=self.ink)
        box = self.draw.textbbox(xy, s, font=font)
        if label:
            self.fields.append((label, tuple(float(v) for v in box), s))  # type: ignore[arg-type]
        return box

    def width(self, s: str) -> float:
        return self.font.getlength(s)

    def wrap(self, s: str, max_w: float) -> list[str]:
        words = list(s) if self.lang == "zh" else s.split(" ")
        sep = "" if self.lang == "zh" else " "
        lines, cur = [], ""
        for w in words:
            cand = cur + (sep if cur else "") + w
            if cur and self.width(cand) > max_w:
                lines.append(cur)
                cur = w
            else:
                cur = cand
        return [*lines, cur] if cur else lines

    def paragraph(self, x: float, y: float, s: str, max_w: float, label: str | None) -> float:
        """Draw wrapped text; the field box is the union of its lines. Returns the y below it."""
        boxes = []
        for line in self.wrap(s, max_w):
            boxes.append(self.text((x, y), line))
            y += self.size * 1.6
        if label and boxes:
            u = (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))
            self.fields.append((label, tuple(float(v) for v in u), s))  # type: ignore[arg-type]
        return y


def _colon(lang: str) -> str:
    return "：" if lang == "zh" else ": "


def _layout_form(c: _Canvas, v: dict[str, str], keys: dict[str, str], extra: list[tuple[str, str]]) -> None:
    rng, lang = c.rng, c.lang
    x0 = rng.randint(90, 160)
    y = rng.randint(80, 140)
    c.text((x0 + rng.randint(150, 350), y), rng.choice(TITLES[lang]), big=True)
    y += c.size * 3
    rows = [(k, keys[k], v[k]) for k in ("日期", "编号", "姓名", "单位")] + [(None, a, b) for a, b in extra]
    rng.shuffle(rows)
    vx = x0 + max(c.width(r[1] + _colon(lang)) for r in rows) + rng.randint(10, 40)
    for label, key, val in rows:
        c.text((x0, y), key + _colon(lang))
        c.text((vx, y), val, label=label)
        y += c.size * rng.uniform(1.7, 2.1)
    y = _table(c, x0, y + c.size)
    c.text((x0, y), keys["结论"] + _colon(lang))
    _printed(c, x0, c.paragraph(vx, y, v["结论"], PAGE[0] - vx - x0, "结论") + c.size)


def _layout_two_column(c: _Canvas, v: dict[str, str], keys: dict[str, str], extra: list[tuple[str, str]]) -> None:
    rng, lang = c.rng, c.lang
    x0 = rng.randint(80, 130)
    y = rng.randint(70, 120)
    c.text((PAGE[0] / 2 - 200 + rng.randint(-40, 40), y), rng.choice(TITLES[lang]), big=True)
    y += c.size * 3.2
    pairs = [(k, keys[k], v[k]) for k in ("日期", "编号", "姓名", "单位")] + [(None, a, b) for a, b in extra[:2]]
    rng.shuffle(pairs)
    col = PAGE[0] / 2 + rng.randint(-20, 40)
    for i, (label, key, val) in enumerate(pairs):
        x = x0 if i % 2 == 0 else col
        k = key + _colon(lang)
        c.text((x, y), k)
        c.text((x + c.width(k) + rng.randint(4, 20), y), val, label=label)
        if i % 2 == 1:
            y += c.size * 2
    y += c.size * 2.5
    y = _table(c, x0, y)
    c.text((x0, y), keys["结论"], big=True)
    y += c.size * 2.4
    _printed(c, x0, c.paragraph(x0 + rng.randint(0, 40), y, v["结论"], PAGE[0] - 2 * x0 - 40, "结论") + c.size)


def _layout_grid(c: _Canvas, v: dict[str, str], keys: dict[str, str], extra: list[tuple[str, str]]) -> None:
    rng, lang = c.rng, c.lang
    x0 = rng.randint(70, 110)
    y = rng.randint(80, 130)
    c.text((x0 + rng.randint(200, 320), y), rng.choice(TITLES[lang]), big=True)
    y += c.size * 3
    rows = [(k, keys[k], v[k]) for k in ("日期", "编号", "姓名", "单位")] + [(None, a, b) for a, b in extra[:3]]
    rng.shuffle(rows)
    x1 = PAGE[0] - x0
    kx = x0 + max(c.width(r[1]) for r in rows) + 40
    h = c.size * 2.2
    for label, key, val in rows:
        c.draw.rectangle((x0, y, x1, y + h), outline=c.ink, width=2)
        c.draw.line((kx - 20, y, kx - 20, y + h), fill=c.ink, width=2)
        c.text((x0 + 12, y + h * 0.25), key)
        c.text((kx, y + h * 0.25), val, label=label)
        y += h
    y = _table(c, x0, y + c.size * 1.5)
    lines = c.wrap(v["结论"], x1 - kx - 20)
    hh = max(h, len(lines) * c.size * 1.6 + c.size)
    c.draw.rectangle((x0, y, x1, y + hh), outline=c.ink, width=2)
    c.draw.line((kx - 20, y, kx - 20, y + hh), fill=c.ink, width=2)
    c.text((x0 + 12, y + c.size * 0.5), keys["结论"])
    c.paragraph(kx, y + c.size * 0.5, v["结论"], x1 - kx - 20, "结论")
    _printed(c, x0, y + hh + c.size)


def _layout_letter(c: _Canvas, v: dict[str, str], keys: dict[str, str], extra: list[tuple[str, str]]) -> None:
    rng, lang = c.rng, c.lang
    x0 = rng.randint(100, 150)
    y = rng.randint(70, 110)
    c.text((PAGE[0] - x0 - c.width(v["日期"]), y), v["日期"], label="日期")
    y += c.size * 2.5
    c.text((x0 + rng.randint(180, 300), y), rng.choice(TITLES[lang]), big=True)
    y += c.size * 2.6
    no = "编号" if lang == "zh" else "No."
    kx = x0 + rng.randint(180, 300)
    c.text((kx, y), no)
    c.text((kx + c.width(no) + rng.randint(20, 60), y), v["编号"], label="编号")
    y += c.size * 3
    for label, key in (("姓名", keys["姓名"]), ("单位", keys["单位"])):
        k = key + _colon(lang)
        c.text((x0, y), k)
        c.text((x0 + c.width(k) + 12, y), v[label], label=label)
        y += c.size * 2
    for key, val in extra[:2]:
        c.text((x0, y), key + _colon(lang) + val)
        y += c.size * 2
    opening = "经检验，结果如下：" if lang == "zh" else "After examination, the findings are as follows:"
    c.text((x0, y + c.size), opening)
    y += c.size * 3
    y = c.paragraph(x0 + 40, y, v["结论"], PAGE[0] - 2 * x0 - 40, "结论") + c.size
    y = _table(c, x0, y + c.size)
    _printed(c, x0, y)


def _table(c: _Canvas, x: float, y: float) -> float:
    rng, lang = c.rng, c.lang
    items = rng.sample(ITEMS_ZH if lang == "zh" else ITEMS_EN, rng.randint(3, 6))
    head = ["项目", "结果", "参考范围"] if lang == "zh" else ["Item", "Result", "Reference"]
    cols = [x, x + 330, x + 560]
    for cx, h in zip(cols, head, strict=True):
        c.text((cx, y), h)
    y += c.size * 1.8
    for it in items:
        lo = rng.randint(1, 50)
        for cx, s in zip(cols, [it, f"{rng.uniform(lo, lo * 3):.1f}", f"{lo}-{lo * 3}"], strict=True):
            c.text((cx, y), s)
        y += c.size * 1.6
    return y + c.size


def _printed(c: _Canvas, x: float, y: float) -> None:
    """A second date (when the page was printed): a distractor for the 日期 field."""
    if c.rng.random() < 0.7 and y < PAGE[1] - 100:
        c.text(
            (x + c.rng.randint(0, 500), min(y + c.size, PAGE[1] - 80)),
            PRINTED[c.lang] + _colon(c.lang) + _date(c.rng, c.lang),
        )


_LAYOUTS = {"form": _layout_form, "two-column": _layout_two_column, "grid": _layout_grid, "letter": _layout_letter}


def _noise(img: Any, rng: random.Random) -> Any:
    import numpy as np
    from PIL import ImageFilter

    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.9)))
    arr = np.asarray(img, dtype=np.int16)
    nr = np.random.default_rng(rng.randint(0, 2**31))
    arr = arr + nr.normal(0, rng.uniform(2, 10), arr.shape).astype(np.int16)
    speck = nr.random(arr.shape) < rng.uniform(0, 0.002)
    arr[speck] = 0
    from PIL import Image

    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")


def make_page(
    path: str | Path, *, lang: str = "zh", layout: str = "form", seed: int = 0, noise: bool = True
) -> SynthPage:
    """Draw one report page to ``path`` (PNG or JPEG by suffix) and return its field boxes."""
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}")
    rng = random.Random(f"{lang}-{layout}-{seed}")
    c = _Canvas(rng, lang)
    keys = {k: rng.choice(opts) for k, opts in KEYS[lang].items()}
    extra = [(k, _distractor(rng, lang, k)) for k in rng.sample(DISTRACT_KEYS[lang], rng.randint(2, 4))]
    _LAYOUTS[layout](c, _values(rng, lang), keys, extra)
    img = _noise(c.img, rng) if noise else c.img
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        img.save(path, quality=rng.randint(60, 90))
    else:
        img.save(path)
    return SynthPage(str(path), lang, layout, PAGE[0], PAGE[1], c.fields)


def make_pages(
    directory: str | Path,
    n: int,
    *,
    langs: tuple[str, ...] = ("zh", "en"),
    layouts: tuple[str, ...] = LAYOUTS,
    seed: int = 0,
    noise: bool = True,
) -> list[SynthPage]:
    """``n`` pages cycling through ``langs`` x ``layouts`` (seeded, so the same call draws the same pages)."""
    d = Path(directory)
    out = []
    combos = [(lang, lay) for lang in langs for lay in layouts]
    for i in range(n):
        lang, lay = combos[i % len(combos)]
        ext = ".jpg" if (i // len(combos)) % 3 == 2 else ".png"
        out.append(
            make_page(d / f"page-{seed}-{i:04d}{ext}", lang=lang, layout=lay, seed=seed * 100_000 + i, noise=noise)
        )
    return out
