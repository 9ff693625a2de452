"""How well OCR (rapidocr) reads the Chinese field values of synthetic pages drawn in each packaged font.

    .venv/bin/python bench/fonts_ocr.py [--seeds 2]

For each packaged Chinese face (Noto Sans SC, Noto Serif SC) and each layout, draws ``--seeds`` noisy pages,
OCRs them (no cache) and reports the share of the five field values' characters found in the OCR text (longest
common run per value) and how many values appear verbatim.
"""

from __future__ import annotations

import argparse
import difflib
import os
import tempfile
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=2)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fonts-ocr-"))
    os.environ["LABELPILOT_CACHE_DIR"] = str(work / "cache")
    from labelpilot.ocr import OcrEngine
    from labelpilot.testing import synthdocs

    engine = OcrEngine.get()
    print(f"load {os.getloadavg()[0]:.1f}")
    for font in synthdocs.bundled_fonts("zh"):
        os.environ["LABELPILOT_FONT_ZH"] = font
        chars = found = verbatim = fields = 0
        for layout in synthdocs.LAYOUTS:
            for seed in range(args.seeds):
                page = synthdocs.make_page(work / f"{Path(font).stem}-{layout}-{seed}.png", lang="zh",
                                           layout=layout, seed=seed)
                text = engine.page(page.path, cache=False).text.replace("\n", "")
                for _, _, value in page.fields:
                    run = difflib.SequenceMatcher(None, value, text, autojunk=False).find_longest_match()
                    chars, found = chars + len(value), found + run.size
                    fields, verbatim = fields + 1, verbatim + (value in text)
        print(f"| {Path(font).name} | {found}/{chars} = {found / chars:.3f} | {verbatim}/{fields} |")


if __name__ == "__main__":
    main()
