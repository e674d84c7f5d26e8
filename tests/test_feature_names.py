"""Feature names (issue 26): a DataFrame's columns and a CSV header are carried into the
result (``result.feature_names``), its summary, the saved ``.npz`` and ArviZ's ``feature``
coordinate; without names the weights stay ``w0, w1, ...``."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pandas as pd
import pytest
from cli_helpers import run_cli, table_csv

import pyro_moe


def regimes(N: int = 80, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, N)
    y = np.where(x < 0, 1 + 2 * x, -1 + 0.5 * x) + 0.1 * rng.normal(size=N)
    return pd.DataFrame({"dose": x, "const": np.ones(N)}), pd.Series(y, name="response")


@pytest.fixture(scope="module")
def named():
    X, y = regimes()
    return pyro_moe.fit("mixture_of_models", X, y, experts=2, n_init=1, seed=0)


def test_a_dataframe_names_the_weights_everywhere(named, tmp_path):
    assert named.feature_names == ("dose", "const")
    text = named.summary()
    assert "expert 0: dose " in text and ", const " in text
    idata = named.to_inference_data(draws=20)
    assert list(idata.posterior["feature"].values) == ["dose", "const"]
    assert list(idata.constant_data["X"].coords["feature"].values) == ["dose", "const"]
    path = named.save(tmp_path / "named.npz")
    loaded = pyro_moe.FitResult.load(path)
    assert loaded.feature_names == ("dose", "const")
    assert list(loaded.to_inference_data(draws=5).posterior["feature"].values) == ["dose", "const"]


def test_the_same_fit_from_arrays_has_no_names_and_the_same_numbers(named):
    X, y = regimes()
    plain = pyro_moe.fit("mixture_of_models", X.to_numpy(), y.to_numpy(), experts=2, n_init=1,
                         seed=0)  # fmt: skip
    assert plain.feature_names is None
    assert plain.objective == named.objective
    assert list(plain.to_inference_data(draws=5).posterior["feature"].values) == ["w0", "w1"]
    assert "expert 0: w0 " in plain.summary()


def test_a_file_saved_without_names_loads_without_them(named, tmp_path):
    """Format-3 files written before the names (no ``feature_names`` in meta) still load."""
    path = named.save(tmp_path / "named.npz")
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["meta"]))
    del meta["feature_names"], meta["info"]
    arrays["meta"] = np.array(json.dumps(meta))
    old = tmp_path / "old.npz"
    np.savez(old, **arrays)
    assert zipfile.is_zipfile(old)
    loaded = pyro_moe.FitResult.load(old)
    assert loaded.feature_names is None and loaded.info == {}
    torch_mean = loaded.mean.numpy()
    np.testing.assert_array_equal(torch_mean, named.mean.numpy())


def test_names_that_do_not_fit_the_columns_are_refused_on_load(named, tmp_path):
    path = named.save(tmp_path / "named.npz")
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["meta"]))
    meta["feature_names"] = ["only one"]
    arrays["meta"] = np.array(json.dumps(meta))
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    with pytest.raises(pyro_moe.InputError, match="1 feature names for 2 columns"):
        pyro_moe.FitResult.load(bad)


def test_duplicate_column_names_are_refused():
    X, y = regimes()
    X.columns = ["x", "x"]
    with pytest.raises(pyro_moe.InputError, match="duplicate column name.*'x'"):
        pyro_moe.fit("mixture_of_models", X, y, experts=2, n_init=1)


def test_non_text_column_names_become_text():
    X, y = regimes()
    X.columns = [0, 1]
    fit = pyro_moe.fit("mixture_of_models", X, y, experts=2, n_init=1, seed=0)
    assert fit.feature_names == ("0", "1")


def test_the_cli_carries_the_csv_header(capsys, tmp_path):
    save = tmp_path / "fit.npz"
    code, _, err = run_cli(capsys, "fit", table_csv(tmp_path), "--target", "y", "-k", "2",
                           "--save", save)  # fmt: skip
    assert code == 0, err
    loaded = pyro_moe.FitResult.load(save)
    assert loaded.feature_names == ("a", "b", "(intercept)")
    assert "expert 0: a " in loaded.summary()
