"""The model file is loaded once per fit and carried by the result; a saved result never
makes pyro_moe run a file it names (issue #25; reliability SEC-1, SW-8, SW-9, WE-6, WE-7)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import two_circles

import pyro_moe
from pyro_moe.diagnostics import psis_khat
from pyro_moe.model_file import MODELS_DIR


def counted_copy(tmp_path, name: str = "mixture_of_experts", stem: str = "counted"):
    """A copy of a built-in model file that appends a line to ``<stem>.count`` each time it
    is executed; returns (path, a function giving the count)."""
    counter = tmp_path / f"{stem}.count"
    text = (MODELS_DIR / f"{name}.py").read_text()
    head = f"with open({str(counter)!r}, 'a') as _fh:\n    _fh.write('x')\n"  # one char per run
    path = tmp_path / f"{stem}.py"
    path.write_text(head + text)
    return path, lambda: len(counter.read_text()) if counter.exists() else 0


def evil_file(tmp_path):
    """A .py file that leaves a marker when it runs."""
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.py"
    text = (MODELS_DIR / "mixture_of_experts.py").read_text()
    evil.write_text(f"open({str(marker)!r}, 'w').close()\n" + text)
    return evil, marker


def rewrite_meta(src, dst, **changes):
    with np.load(src) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["meta"]))
    meta.update(changes)
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(dst, **arrays)
    return dst


def test_a_fit_executes_its_model_file_once_and_never_again(tmp_path):
    path, count = counted_copy(tmp_path)
    X, y = two_circles(80, seed=1)
    res = pyro_moe.fit(path, X, y, experts=2, n_init=2)
    assert count() == 1
    res.predict(X[:5])
    psis_khat(res, draws=50)
    back = pyro_moe.FitResult.load(res.save(tmp_path / "fit.npz"), model=path)
    back.predict(X[:5])
    assert count() == 2  # the load with model= ran it once more; nothing else did
    assert res.model_text.sha256 == back.model_text.sha256


def test_a_fit_survives_its_model_file_deleted_or_edited_after_the_fit(tmp_path):
    path, _ = counted_copy(tmp_path)
    X, y = two_circles(80, seed=1)
    res = pyro_moe.fit(path, X, y, experts=2, n_init=1)
    first = res.predict(X[:5]).mean
    khat = psis_khat(res, draws=50)
    path.write_text(path.read_text().replace("nn.Sigmoid()", "nn.Tanh()"))
    res.gate = None  # force a rebuild of the gate: from the carried module, not the file
    torch.testing.assert_close(res.predict(X[:5]).mean, first)
    path.unlink()
    assert psis_khat(res, draws=50) == pytest.approx(khat)


def test_a_loaded_result_never_runs_the_file_its_archive_names(tmp_path):
    path, _ = counted_copy(tmp_path)
    X, y = two_circles(80, seed=1)
    saved = pyro_moe.fit(path, X, y, experts=2, n_init=1).save(tmp_path / "g.npz")
    evil, marker = evil_file(tmp_path)
    tampered = [
        {"model_path": str(evil)},
        {"model_path": str(tmp_path / "missing.py"), "model_name": str(evil)},
        {"model_name": "evil", "model_path": str(evil)},
    ]
    for i, change in enumerate(tampered):
        bad = rewrite_meta(saved, tmp_path / f"t{i}.npz", **change)
        back = pyro_moe.FitResult.load(bad)
        with pytest.raises(pyro_moe.PyroMoeError, match="does not run|model="):
            back.predict(X[:3])
        with pytest.raises(pyro_moe.PyroMoeError, match="does not run|model="):
            psis_khat(back, draws=20)
    # the archive's own model text replaced by the evil file's, with a matching digest
    import hashlib

    text = evil.read_text()
    sha = hashlib.sha256(text.encode()).hexdigest()
    for name in ("evil", "mixture_of_experts"):  # a built-in's name: its digest differs
        bad = rewrite_meta(
            saved, tmp_path / f"s_{name}.npz", model_text=text, model_sha256=sha, model_name=name
        )
        with pytest.raises(pyro_moe.PyroMoeError):
            pyro_moe.FitResult.load(bad).predict(X[:3])
    # altered text, old digest: refused at load
    bad = rewrite_meta(saved, tmp_path / "alt.npz", model_text=text)
    with pytest.raises(pyro_moe.InputError, match="altered"):
        pyro_moe.FitResult.load(bad)
    assert not marker.exists()


def test_load_checks_a_given_model_file_before_running_it(tmp_path):
    path, count = counted_copy(tmp_path)
    X, y = two_circles(80, seed=1)
    res = pyro_moe.fit(path, X, y, experts=2, n_init=1)
    saved = res.save(tmp_path / "g.npz")
    evil, marker = evil_file(tmp_path)
    with pytest.raises(pyro_moe.ModelFileError, match="not the one"):
        pyro_moe.FitResult.load(saved, model=evil)
    assert not marker.exists()
    edited = tmp_path / "edited.py"
    edited.write_text(path.read_text().replace("nn.Sigmoid()", "nn.Tanh()"))
    with pytest.raises(pyro_moe.ModelFileError, match="not the one"):
        pyro_moe.FitResult.load(saved, model=edited)
    before = count()
    back = pyro_moe.FitResult.load(saved, model=path)
    torch.testing.assert_close(back.predict(X[:5]).mean, res.predict(X[:5]).mean)
    assert count() == before + 1


def test_a_builtin_result_loads_and_predicts_without_naming_its_file(tmp_path):
    X, y = two_circles(80, seed=2)
    res = pyro_moe.fit("mixture_of_experts", X, y, experts=2, n_init=1)
    back = pyro_moe.FitResult.load(res.save(tmp_path / "b.npz"))
    torch.testing.assert_close(back.predict(X[:4]).mean, res.predict(X[:4]).mean)
    assert back.model.path == MODELS_DIR / "mixture_of_experts.py"


def test_the_cli_runs_a_model_file_once(tmp_path, capsys):
    from cli_helpers import run_cli, table_csv

    path, count = counted_copy(tmp_path, "mixture_of_models")
    code, out, err = run_cli(
        capsys, "fit", table_csv(tmp_path), "--target", "y", "--model", path, "--json"
    )
    assert code == 0, err
    assert json.loads(out)["khat"] is not None
    assert count() == 1


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda a, m: a.__setitem__("mean", np.full_like(a["mean"], np.nan)), "NaN"),
        (lambda a, m: a.__setitem__("cov", -a["cov"]), "positive definite"),
        (lambda a, m: a.__setitem__("mean", np.array(1.0)), "cannot read"),
        (lambda a, m: m.__setitem__("format", 99), "unknown format"),
        (lambda a, m: m.clear() or m.update({"list": 1}), "cannot read"),
        (lambda a, m: a.__setitem__("noise_precision", -a["noise_precision"]), "positive"),
    ],
)
def test_load_checks_values_not_only_shapes(tmp_path, change, match):
    X, y = two_circles(40)
    res = pyro_moe.fit("mixture_of_models", X, y, experts=2, n_init=1)
    with np.load(res.save(tmp_path / "fit.npz")) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["meta"]))
    change(arrays, meta)
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(pyro_moe.InputError, match=match):
        pyro_moe.FitResult.load(tmp_path / "bad.npz")


def test_meta_that_is_not_an_object_is_an_input_error(tmp_path):
    X, y = two_circles(40)
    res = pyro_moe.fit("mixture_of_models", X, y, experts=2, n_init=1)
    with np.load(res.save(tmp_path / "fit.npz")) as data:
        arrays = {k: data[k] for k in data.files}
    for i, meta in enumerate(([1, 2], "abc")):
        arrays["meta"] = np.array(json.dumps(meta))
        np.savez(tmp_path / f"m{i}.npz", **arrays)
        with pytest.raises(pyro_moe.InputError, match="not an object"):
            pyro_moe.FitResult.load(tmp_path / f"m{i}.npz")


def test_an_integer_design_saved_by_hand_predicts(tmp_path):
    X, y = two_circles(40)
    res = pyro_moe.fit("mixture_of_models", X, y, experts=2, n_init=1)
    with np.load(res.save(tmp_path / "fit.npz")) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["X"] = np.round(arrays["X"]).astype(np.int64)
    np.savez(tmp_path / "int.npz", **arrays)
    back = pyro_moe.FitResult.load(tmp_path / "int.npz")
    assert back.X.dtype == torch.float64
    assert torch.isfinite(back.predict(X[:3]).mean).all()
