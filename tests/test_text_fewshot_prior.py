"""The few-shot head keeps the label names' prior while data is small: class centroids with the names as
pseudo-examples (exact leave-one-out cosines), logit weights whose prior counts as held-out rows, a mix
weight shrunk toward the head when few held-out rows chose it, and the head's save/load."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from labelpilot.data.types import Example, Target
from labelpilot.encoders import encoder_problem
from labelpilot.models import text_fewshot
from labelpilot.models.text_fewshot import FewShotHead, _fit_ab, centroids_loo
from labelpilot.models.text_linear import TextLinearModel
from labelpilot.prelabel import datasets as dsets
from labelpilot.schema import parse_label_config
from labelpilot.testing.corpora import default_data_root
from tests.conftest import LABELPILOT

PROBLEM = encoder_problem()
needs_encoder = pytest.mark.skipif(PROBLEM is not None, reason=f"text encoder not available: {PROBLEM}")


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    v = rng.normal(size=(n, d))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_centroid_leave_one_out_cosines_are_exact() -> None:
    rng = np.random.default_rng(0)
    v, protos = _unit(rng, 12, 8), _unit(rng, 4, 8)
    y = np.array([0, 0, 0, 1, 1, 2, 0, 1, 2, 2, 0, 1])  # label 3 has no example: its centroid is its name
    beta = 1.5
    cen, cos = centroids_loo(v, y, 4, protos, beta)
    assert np.allclose(cen[3], protos[3], atol=1e-6)
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        for j in range(4):
            c = v[keep & (y == j)].sum(axis=0) + beta * protos[j]
            assert cos[i, j] == pytest.approx(float(v[i] @ c / np.linalg.norm(c)), abs=1e-9)
    # a label whose only example is left out (and no name) is a zero centroid, not a NaN
    _, cos2 = centroids_loo(v[:6], np.array([0, 0, 1, 1, 2, 3]), 4, None, 0.0)
    assert np.isfinite(cos2).all() and cos2[5, 3] == 0.0


def test_a_few_examples_do_not_pull_the_head_off_the_label_names() -> None:
    """Five examples on which the zero-shot logits happen to be wrong: with the prior worth
    ``PRIOR_ROWS`` rows the label-name weight stays near 1; with the old one-row prior it collapses."""
    rng = np.random.default_rng(1)
    k, m = 6, 5
    y = rng.integers(0, k, size=m)
    zs = rng.normal(size=(m, k))
    zs[np.arange(m), y] -= 0.5  # the names lean a little away from every annotated label
    ridge = rng.normal(size=(m, k)) * 0.05
    _, b_weak, _ = _fit_ab(ridge, zs, y, prior_rows=1.0)
    _, b_strong, _ = _fit_ab(ridge, zs, y, prior_rows=text_fewshot.PRIOR_ROWS)
    assert text_fewshot.PRIOR_ROWS >= 5
    assert b_weak < 0.05 and b_strong > 0.4
    # with many rows the data wins again
    y_big = rng.integers(0, k, size=400)
    zs_big = rng.normal(size=(400, k))
    zs_big[np.arange(400), y_big] -= 0.5
    _, b_big, _ = _fit_ab(rng.normal(size=(400, k)) * 0.05, zs_big, y_big, prior_rows=text_fewshot.PRIOR_ROWS)
    assert b_big < 0.05


def test_the_head_saves_and_loads_its_centroids() -> None:
    rng = np.random.default_rng(2)
    w, protos, cen = rng.normal(size=(9, 3)).astype(np.float32), _unit(rng, 3, 8), _unit(rng, 3, 8)
    head = FewShotHead("enc", w, 2.0, 0.7, 0.9, protos, None, 0.4, cen)
    arrays, meta = head.to_saved()
    back = FewShotHead.from_saved(arrays, meta)
    assert back is not None and back.c == pytest.approx(0.4)
    x = _unit(rng, 5, 8)
    assert np.allclose(back.head_probs(x), head.head_probs(x), atol=1e-6)
    # a head saved before centroids existed loads with none
    old = {k: v for k, v in arrays.items() if k != "fs_centroids"}
    old_meta = {k: v for k, v in meta.items() if k != "c"}
    legacy = FewShotHead.from_saved(old, old_meta)
    assert legacy is not None and legacy.c == 0.0 and legacy.centroids is None
    no_c = FewShotHead("enc", w, 2.0, 0.7, 0.9, protos)
    assert np.allclose(legacy.head_probs(x), no_c.head_probs(x))


SENTIMENT = """<View><Text name="text" value="$text"/>
<Choices name="s" toName="text"><Choice value="negative"/><Choice value="positive"/></Choices></View>"""


@needs_encoder
def test_an_early_model_agrees_with_zero_shot_where_its_few_examples_say_little() -> None:
    """Four annotations, three of one label: the model must not turn the clear cases of the other label
    around (a head weight chosen on 4 held-out rows used to hand the prediction to a 4-example TF-IDF model)."""
    spec = parse_label_config(SENTIMENT).controls[0]
    train = [("a wonderful, moving film", "positive"), ("great acting and a lovely story", "positive"),
             ("I enjoyed every minute", "positive"), ("boring and far too long", "negative")]
    model = TextLinearModel(spec)
    report = model.fit([Example(text=t, target=Target(labels=(lab,))) for t, lab in train])
    assert model.fewshot_ is not None and model.fewshot_.mix >= 0.7, report.notes
    probe = ["a dreadful, tedious mess", "the worst movie I have seen this year", "a delightful and funny film"]
    zero = TextLinearModel(spec).predict([Example(text=t) for t in probe])
    early = model.predict([Example(text=t) for t in probe])
    assert [p.labels for p in early] == [p.labels for p in zero] == [("negative",), ("negative",), ("positive",)]


def test_bench_task_orders_differ_by_seed() -> None:
    root = default_data_root()
    why = dsets.missing("trec", root)
    if why:
        pytest.skip(f"shared data absent: {why}")
    a, b = dsets.load("trec", root, 20, seed=0), dsets.load("trec", root, 20, seed=1)
    assert a.tasks == dsets.load("trec", root, 20).tasks  # seed 0 is the default, reported order
    assert [t["data"]["text"] for t in a.tasks] != [t["data"]["text"] for t in b.tasks]
    assert a.label_config == b.label_config


def test_bench_prelabel_help_lists_the_seed() -> None:
    proc = subprocess.run([str(LABELPILOT), "bench", "prelabel", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and "--seed" in proc.stdout, proc.stderr[-2000:]
