"""``check_model``: one family against the model contract, in the spirit of sklearn's ``check_estimator``.

Run over every registered family by ``tests/test_model_contract.py``; a third-party family (a
``labelpilot.models`` entry point) can run it on its own data too. Each check raises ``AssertionError`` with what
broke; the function returns the names of the checks that ran (capabilities a family does not declare are not
checked, and say so by their absence).

What is checked (see :mod:`labelpilot.models.base`):

- the class is a :class:`ModelBase` with a name, task kinds that include the control's, declared options;
- construction with defaults: ``get_options()`` is the declared defaults; the options rebuild an equal model;
- an unknown option and a value of the wrong type are refused with :class:`ModelOptionsError` naming the option
  and listing the valid ones (the error maps to a 4xx);
- ``fit`` on the examples returns a ``FitReport`` and leaves the model fitted;
- ``predict`` returns one ``Prediction`` per example, in order (a reversed batch gives the reversed answers);
- a bad example gets ``Prediction(error=...)`` (or, for texts, an answer of its own) without changing the
  others' answers;
- ``save`` -> ``load`` into a fresh object predicts the same, with the metadata ``read_meta`` accepts; a loaded
  model saves again; a pickle round trip predicts the same;
- declared capabilities work: :class:`Embeds` gives finite ``(n, d)`` vectors, :class:`PredictsUntrained` says
  a bool and then predicts every example, :class:`TokenMarginals` gives one row of tag probabilities per token.
"""

from __future__ import annotations

import math
import pickle
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from labelpilot.data.types import Example, FitReport, Prediction
from labelpilot.errors import LabelpilotError, ModelOptionsError
from labelpilot.models.base import Embeds, Model, ModelBase, PredictsUntrained, TokenMarginals, read_meta

_UNKNOWN = "no_such_option_for_the_contract_check"


def answer(p: Prediction) -> tuple[Any, ...]:
    """What a prediction proposes, rounded so that the same model state compares equal (float16 storage and
    ONNX vs torch kernels move scores in the 4th decimal)."""

    def r(v: float | None) -> float | None:
        return None if v is None else round(float(v), 3)

    return (p.error is not None, tuple(p.labels), tuple((s.start, s.end, s.label) for s in p.spans),
            tuple((b.label, round(b.x, 2), round(b.y, 2), round(b.width, 2), round(b.height, 2)) for b in p.boxes),
            r(p.score) if p.error is None else None)


def _same(a: Sequence[Prediction], b: Sequence[Prediction], what: str) -> None:
    assert len(a) == len(b), f"{what}: {len(a)} predictions vs {len(b)}"
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        ka, kb = answer(x), answer(y)
        if ka[:4] == kb[:4] and (ka[4] is None or kb[4] is None or math.isclose(ka[4], kb[4], abs_tol=2e-3)):
            continue
        raise AssertionError(f"{what}: example {i} differs: {ka} vs {kb}")


def _wrong_type(default: Any) -> Any:
    """A value no declared type of an option with this default accepts."""
    return {"not": "an option value"} if not isinstance(default, dict) else "not a mapping"


def _check_options(cls: type[ModelBase], control: Any, done: list[str]) -> None:
    defaults = cls.option_defaults()
    assert isinstance(defaults, dict) and all(isinstance(k, str) for k in defaults), "DEFAULTS: option name -> default"
    try:
        cls.create(control, {_UNKNOWN: 1})
    except ModelOptionsError as exc:
        assert _UNKNOWN in exc.message and exc.valid == sorted(defaults), exc.message
        assert 400 <= exc.status_code < 500 and exc.field == f"options.{_UNKNOWN}", (exc.status_code, exc.field)
    else:
        raise AssertionError(f"{cls.name}: unknown option {_UNKNOWN!r} was accepted")
    done.append("unknown option refused")
    typed = [k for k in sorted(defaults) if cls.option_types(k) is not None]
    for key in typed[:3]:
        try:
            cls.create(control, {key: _wrong_type(defaults[key])})
        except ModelOptionsError as exc:
            assert exc.option == key and key in exc.message and exc.field == f"options.{key}", exc.message
        else:
            raise AssertionError(f"{cls.name}: option {key!r} accepted a value of the wrong type")
    if typed:
        done.append("badly typed option refused")


def _check_class(cls: type[ModelBase], control: Any) -> None:
    """The family class has a registry name and a metadata file, and serves ``control``'s kind."""
    assert isinstance(cls.name, str) and cls.name, "a family has a registry name"
    assert control.kind in cls.kinds, f"{cls.name} does not serve {control.kind}"
    assert cls.META_FILE, f"{cls.name} names its metadata file (META_FILE)"


def _check_construction(cls: type[ModelBase], control: Any, done: list[str]) -> None:
    """Construction with defaults and the options round trip."""
    fresh = cls(control)
    assert isinstance(fresh, Model), f"{cls.name} does not satisfy the Model protocol"
    assert fresh.get_options() == cls.option_defaults(), "a default model's options are the declared defaults"
    assert cls.create(control, fresh.get_options()).get_options() == fresh.get_options()
    assert isinstance(fresh.is_fitted, bool)
    done.append("constructed with defaults")


def _check_untrained(model: Any, test: list[Example], done: list[str]) -> None:
    """A PredictsUntrained model that says it is ready predicts every example."""
    if isinstance(model, PredictsUntrained):
        ready = model.zero_shot_ready()
        assert isinstance(ready, bool), "zero_shot_ready() is a bool"
        if ready and not model.is_fitted:
            preds = model.predict(test)
            assert len(preds) == len(test) and all(isinstance(p, Prediction) for p in preds)
        done.append("predicts untrained (capability)")


def _check_fit_predict(model: Any, examples: Sequence[Example], test: list[Example], done: list[str]
                       ) -> list[Prediction]:
    """Fit, then predict: one Prediction per example, in order. Returns the predictions of ``test``."""
    report = model.fit(list(examples))
    assert isinstance(report, FitReport), f"fit returned {type(report).__name__}, not a FitReport"
    assert model.is_fitted, "fit leaves the model fitted"
    done.append("fit")
    preds = model.predict(test)
    assert len(preds) == len(test) and all(isinstance(p, Prediction) for p in preds), "one Prediction per example"
    assert all(p.error is None for p in preds), [p.error for p in preds if p.error]
    assert model.predict([]) == [], "an empty batch gives an empty list"
    _same(model.predict(test[::-1])[::-1], preds, "reversed batch")
    done.append("predict: one per example, in order")
    return preds


def _check_bad_example(model: Any, test: list[Example], preds: list[Prediction], bad: Example,
                       bad_is_error: bool, done: list[str]) -> None:
    """A bad example does not spoil the batch."""
    mixed = model.predict([test[0], bad, *test[1:]])
    assert len(mixed) == len(test) + 1 and isinstance(mixed[1], Prediction)
    if bad_is_error:
        assert mixed[1].error, f"the bad example got no error: {mixed[1]}"
    _same([mixed[0], *mixed[2:]], preds, "a batch with a bad example")
    done.append("bad example isolated")


def _check_save_load(cls: type[ModelBase], control: Any, model: Any, test: list[Example],
                     preds: list[Prediction], workdir: Path | None, done: list[str]) -> None:
    """Save -> load predicts the same; loading from a folder without a model is a 4xx error."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        folder = Path(tmp) / "model"
        model.save(folder)
        meta = read_meta(folder, cls.META_FILE, cls.name, cls.FORMAT_VERSION)
        assert meta["options"] == {k: v for k, v in meta["options"].items() if k in cls.DEFAULTS}
        loaded = cls.load(folder, control)
        assert isinstance(loaded, cls) and loaded.is_fitted, "a loaded model is fitted"
        assert loaded.get_options() == model.get_options(), "options survive save/load"
        _same(loaded.predict(test), preds, "save -> load")
        loaded.save(Path(tmp) / "again")
        done.append("save -> load predicts the same")
        try:
            cls.load(Path(tmp) / "empty-folder", control)
        except LabelpilotError as exc:
            assert 400 <= exc.status_code < 500, exc
        else:
            raise AssertionError("loading from a folder without a model succeeded")


def _check_pickle(model: Any, test: list[Example], preds: list[Prediction], done: list[str]) -> None:
    clone = pickle.loads(pickle.dumps(model))
    assert clone.is_fitted and clone.get_options() == model.get_options()
    _same(clone.predict(test), preds, "pickle round trip")
    done.append("pickle round trip")


def _check_capabilities(model: Any, test: list[Example], done: list[str]) -> None:
    """The optional capabilities a fitted model declares: Embeds, TokenMarginals."""
    if isinstance(model, Embeds):
        vectors = model.embed(test)
        assert vectors is not None, "a fitted model that Embeds gives vectors"
        vectors = np.asarray(vectors)
        assert vectors.ndim == 2 and vectors.shape[0] == len(test) and np.isfinite(vectors).all(), vectors.shape
        done.append("embeds (capability)")
    if isinstance(model, TokenMarginals):
        text = next(ex.text for ex in test if isinstance(ex.text, str) and ex.text)
        offsets, names, tags, marginals, logp = model.marginals(text)
        assert marginals.shape == (len(offsets), len(names)) and len(tags) == len(offsets)
        assert np.allclose(marginals.sum(axis=1), 1.0, atol=1e-3) and math.isfinite(logp)
        done.append("token marginals (capability)")


def check_model(
    family_cls: type,
    control: Any,
    examples: Sequence[Example],
    *,
    test: Sequence[Example] | None = None,
    bad: Example | None = None,
    bad_is_error: bool = False,
    fit_options: Mapping[str, Any] | None = None,
    workdir: Path | None = None,
) -> list[str]:
    """Check ``family_cls`` on ``control``: fit on ``examples`` (with ``fit_options``, e.g. a small image size),
    predict ``test`` (default: the first few examples) and the ``bad`` example. Returns the checks that ran."""
    done: list[str] = []
    cls = family_cls
    assert isinstance(cls, type) and issubclass(cls, ModelBase), f"{cls!r} does not build on models.base.ModelBase"
    _check_class(cls, control)
    _check_construction(cls, control, done)
    _check_options(cls, control, done)
    test = list(test) if test is not None else list(examples[:4])
    assert test, "check_model needs examples to predict"
    model = cls.create(control, fit_options)
    _check_untrained(model, test, done)
    preds = _check_fit_predict(model, examples, test, done)
    if bad is not None:
        _check_bad_example(model, test, preds, bad, bad_is_error, done)
    _check_save_load(cls, control, model, test, preds, workdir, done)
    _check_pickle(model, test, preds, done)
    _check_capabilities(model, test, done)
    return done
