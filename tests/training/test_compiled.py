"""Compiled forests: the same predictions as Booster.predict, cached once per model, never a half-written cache."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from tests.conftest import served_models
from training.compiled import CompileError, _check, compile_model, probe_rows


@pytest.fixture(scope="module")
def champions(champions_store):
    """Both champions trained on the ten-week twin, as the service loads them."""
    return served_models(store=champions_store)


@pytest.mark.parametrize("name", ["carrier_delay", "node_congestion"])
def test_a_compiled_forest_predicts_what_the_booster_predicts(champions, tables, name, tmp_path):
    model = getattr(champions, name).model
    forest = compile_model(model=model, cache_dir=tmp_path)
    rows = tables[name].tail(2_000)
    X = model.encode_frame(rows)
    X[::7, 0] = np.nan  # a missing category
    X[::11, 0] = 10_000  # a category code the model never saw
    expected = model.booster_.predict(X, num_iteration=model.best_iteration_, num_threads=1)
    np.testing.assert_allclose(forest.predict(X), expected, rtol=0, atol=1e-12)
    assert np.ptp(expected) > 0.05  # real rows that the trees tell apart, not one leaf


def test_a_model_scores_with_its_compiled_forest_once_it_has_one(champions, tmp_path):
    model = champions.carrier_delay.model
    X = probe_rows(model=model, n=300)
    before = model.risk(X)
    compiled = compile_model(model=model, cache_dir=tmp_path)
    calls = []
    model.compiled_ = _Counting(forest=compiled, calls=calls)
    try:
        after = model.risk(X)
        batch = model.risk(X, num_threads=0)  # a backtest's batch keeps LightGBM's threads
    finally:
        model.compiled_ = None
    assert calls == [300]
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(batch, before)


def test_a_version_compiles_once_and_a_damaged_cache_file_is_compiled_afresh(champions, tmp_path):
    model = champions.node_congestion.model
    compile_model(model=model, cache_dir=tmp_path)
    [binary] = tmp_path.glob("*.o")
    written = binary.stat().st_mtime_ns
    compile_model(model=model, cache_dir=tmp_path)
    assert binary.stat().st_mtime_ns == written  # loaded, not compiled again

    # What a disk error would leave (a crash mid-write cannot: the file is renamed into place whole).
    binary.write_bytes(b"\x7fELF half a file")
    forest = compile_model(model=model, cache_dir=tmp_path)
    X = probe_rows(model=model, n=200)
    expected = model.booster_.predict(X, num_iteration=model.best_iteration_, num_threads=1)
    np.testing.assert_allclose(forest.predict(X), expected, rtol=0, atol=1e-12)
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".o", ".sha256", ".txt"]  # no temporary files left


def test_a_compiled_forest_that_disagrees_with_its_booster_is_refused(champions, tmp_path):
    model = champions.carrier_delay.model
    shorter = copy.copy(model)
    shorter.best_iteration_ = model.best_iteration_ - 3  # the same forest less its last trees
    truncated = compile_model(model=shorter, cache_dir=tmp_path)
    with pytest.raises(CompileError, match="differ from Booster.predict"):
        _check(model=model, forest=truncated)
    other = compile_model(model=champions.node_congestion.model, cache_dir=tmp_path)
    with pytest.raises(CompileError, match="failed on probe rows"):
        _check(model=model, forest=other)  # another model's code, on this model's rows


def test_compiling_without_the_compiler_is_a_clear_error(champions, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_lleaves(name, *args, **kwargs):
        if name == "lleaves":
            raise ImportError("No module named 'lleaves'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_lleaves)
    with pytest.raises(CompileError, match="not available"):
        compile_model(model=champions.carrier_delay.model, cache_dir=tmp_path)


class _Counting:
    """A compiled forest that records the batch sizes it was asked for."""

    def __init__(self, *, forest, calls: list) -> None:
        self.forest, self.calls = forest, calls

    def predict(self, X: np.ndarray) -> np.ndarray:
        self.calls.append(len(X))
        return self.forest.predict(X)


def test_probe_rows_cover_every_category_and_missing_values(champions):
    model = champions.node_congestion.model
    X = probe_rows(model=model, n=2_000)
    j = model.features_.index("node_id")
    seen = set(pd.Series(X[:, j]).dropna().astype(int))
    assert seen == set(range(len(model.categories_["node_id"])))
    assert np.isnan(X).mean() == pytest.approx(0.1, abs=0.02)
