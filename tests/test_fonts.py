"""The synthetic document pages never depend on the machine's fonts: by default the generator draws with fonts
from Python packages (so a fresh machine without CJK fonts draws the same Chinese pages), system fonts are read
only when asked for, and OCR reads the Chinese it draws."""

from __future__ import annotations

import difflib
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from labelpilot.testing import synthdocs
from tests.conftest import cache_folder

SYSTEM_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", str(Path.home() / ".fonts"),
               str(Path.home() / ".local/share/fonts"))


@pytest.fixture(autouse=True)
def _default_fonts(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in synthdocs.FONT_ENV.values():
        monkeypatch.delenv(var, raising=False)


def _digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _draw(directory: Path, lang: str, layout: str = "form", seed: int = 5) -> str:
    return _digest(synthdocs.make_page(directory / f"{lang}-{layout}-{seed}.png", lang=lang, layout=layout,
                                       seed=seed).path)


def test_default_fonts_come_from_installed_packages_not_the_machine() -> None:
    for lang in ("zh", "en"):
        fonts = synthdocs.available_fonts(lang)
        assert fonts, f"no {lang} font: {synthdocs.FONT_HINT[lang]}"
        for f in fonts:
            real = str(Path(f).resolve())
            assert not real.startswith(SYSTEM_DIRS), f
            assert "site-packages" in real, f
    zh = [Path(f).name for f in synthdocs.available_fonts("zh")]
    assert zh == ["NotoSansSC-Regular.otf", "NotoSerifSC-Regular.otf"]


def test_system_fonts_change_nothing_unless_asked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide the machine's fonts, then give it a different "system" font: the default pages are the same."""
    langs = ("zh", "en")
    monkeypatch.setattr(synthdocs, "SYSTEM_FONTS", {lang: () for lang in langs})
    hidden = {lang: _draw(tmp_path / "hidden", lang) for lang in langs}
    other = tmp_path / "system" / "Other.ttf"  # a font none of the defaults is: DejaVu Sans Mono
    other.parent.mkdir()
    shutil.copy(Path(synthdocs.bundled_fonts("en")[0]).with_name("DejaVuSansMono.ttf"), other)
    monkeypatch.setattr(synthdocs, "SYSTEM_FONTS", {lang: (str(other),) for lang in langs})
    assert {lang: _draw(tmp_path / "other", lang) for lang in langs} == hidden
    assert _draw(tmp_path / "again", "en") == hidden["en"]  # and the same seed draws the same page
    monkeypatch.setenv("LABELPILOT_FONT_EN", "system")  # asked for: now the system font is used
    assert synthdocs.available_fonts("en") == [str(other)]
    assert _draw(tmp_path / "asked", "en") != hidden["en"]


@pytest.mark.skipif(not shutil.which("unshare"), reason="needs unshare (util-linux) to hide the system fonts")
def test_pages_are_the_same_in_a_process_that_cannot_see_any_system_font(tmp_path: Path) -> None:
    """A child process in its own mount namespace with an empty tmpfs over every system font folder."""
    hide = " && ".join(f"mount -t tmpfs none {d}" for d in SYSTEM_DIRS if Path(d).is_dir())
    draw = ("import sys; from labelpilot.testing.synthdocs import make_page; "
            "[print(make_page(f'{sys.argv[1]}/{lang}.png', lang=lang, layout='grid', seed=9).path) "
            "for lang in ('zh', 'en')]")
    script = f'{hide or "true"} && echo hidden && ls -A /usr/share/fonts 2>/dev/null | wc -l && exec "$0" -c "$1" "$2"'
    env = {k: v for k, v in os.environ.items() if k not in synthdocs.FONT_ENV.values()}
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, sys.executable,
                           draw, str(tmp_path / "child")], capture_output=True, text=True, env=env, timeout=120)
    if not proc.stdout.startswith("hidden"):  # not root, or no CAP_SYS_ADMIN in this container
        pytest.skip(f"cannot hide the fonts in a mount namespace here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0, proc.stderr
    _, count, *paths = proc.stdout.split()
    assert count == "0"  # the child saw no system font at all
    for lang, child in zip(("zh", "en"), paths, strict=True):
        here = synthdocs.make_page(tmp_path / "here" / f"{lang}.png", lang=lang, layout="grid", seed=9)
        assert _digest(child) == _digest(here.path), lang


def test_font_settings_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    serif = synthdocs.bundled_fonts("zh")[1]
    monkeypatch.setenv("LABELPILOT_FONT_ZH", serif)
    assert synthdocs.available_fonts("zh") == [serif]
    missing = str(tmp_path / "nope.otf")
    monkeypatch.setenv("LABELPILOT_FONT_ZH", os.pathsep.join([serif, missing]))
    with pytest.raises(ValueError, match=r"LABELPILOT_FONT_ZH names font files that do not exist: \[.*nope\.otf"):
        synthdocs.available_fonts("zh")
    with pytest.raises(ValueError, match="lang must be one of"):
        synthdocs.available_fonts("fr")
    monkeypatch.setattr(synthdocs, "SYSTEM_FONTS", {"zh": (), "en": ()})
    monkeypatch.setenv("LABELPILOT_FONT_ZH", "system")
    assert synthdocs.available_fonts("zh") == []
    with pytest.raises(RuntimeError, match=r"no zh font to draw pages with: install the dev extra.*LABELPILOT_FONT_ZH"):
        synthdocs.make_page(tmp_path / "p.png", lang="zh")


@pytest.fixture
def _ocr_cache(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("LABELPILOT_CACHE_DIR", str(cache_folder(request, tmp_path_factory, "labelpilot-ocr")))
    yield


@pytest.mark.usefixtures("_ocr_cache")
@pytest.mark.parametrize("face", [0, 1], ids=["sans", "serif"])
def test_ocr_reads_the_chinese_drawn_in_each_packaged_font(face: int, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("rapidocr", reason="OCR needs rapidocr (the 'ocr' extra)")
    from labelpilot.ocr import OcrEngine

    monkeypatch.setenv("LABELPILOT_FONT_ZH", synthdocs.bundled_fonts("zh")[face])
    page = synthdocs.make_page(tmp_path / "zh.png", lang="zh", layout="two-column", seed=3)
    assert {label for label, _, _ in page.fields} == set(synthdocs.FIELDS)
    text = OcrEngine.get().page(page.path).text.replace("\n", "")
    values = [value for _, _, value in page.fields]
    assert sum(any("\u4e00" <= ch <= "\u9fff" for ch in v) for v in values) >= 3  # real Chinese on the page
    verbatim = [v for v in values if v in text]
    found = sum(difflib.SequenceMatcher(None, v, text, autojunk=False).find_longest_match().size for v in values)
    assert len(verbatim) >= 4, (values, text)
    assert found >= 0.9 * sum(len(v) for v in values), (values, text)
