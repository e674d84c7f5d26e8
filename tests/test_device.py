"""Device agnosticism (#8): the same code runs wherever the data are.

A machine without a GPU cannot run CUDA, but it can catch what breaks there: a tensor made
on the *default* device instead of the data's. A spy (a ``TorchFunctionMode``) records every
tensor factory that our code (``pyro_moe/``, ``models/``) calls without ``device=``, also
through torch (an ``nn.Linear`` built in a model file's ``make_gate``); a result meant for the
CPU (a history) says ``device="cpu"``. (Setting the default device to ``meta`` instead was
tried: torch and Pyro make default-device tensors on purpose, and meta ones then read as
garbage rather than failing.)

With a GPU present, fits on ``cuda`` must match the CPU fits.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
import torch
from torch.overrides import TorchFunctionMode

import pyro_moe
from pyro_moe.curves.uncertainty import curve_uncertainty
from pyro_moe.plots import plot_gate_map
from pyro_moe.shapes import circle_points

ROOT = Path(pyro_moe.__file__).resolve().parent.parent
OURS = (str(ROOT / "pyro_moe"), str(ROOT / "models"))
TORCH = str(Path(torch.__file__).resolve().parent)

FACTORIES = {
    torch.tensor, torch.as_tensor, torch.zeros, torch.ones, torch.empty, torch.full,
    torch.eye, torch.arange, torch.linspace, torch.logspace, torch.rand, torch.randn,
    torch.randint, torch.randperm, torch.tril_indices, torch.triu_indices,
}  # fmt: skip


class DefaultDeviceSpy(TorchFunctionMode):
    """Record (file, line) of each factory call from our code that names no device."""

    def __init__(self):
        super().__init__()
        self.calls: set[tuple[str, int]] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        implicit = func in FACTORIES and kwargs.get("device") is None
        if func is torch.as_tensor and args and torch.is_tensor(args[0]):
            implicit = False  # as_tensor keeps a tensor's device
        if implicit:
            frame = sys._getframe(1)
            while frame is not None and frame.f_code.co_filename.startswith(TORCH):
                frame = frame.f_back
            if frame is not None and frame.f_code.co_filename.startswith(OURS):
                name = Path(frame.f_code.co_filename).relative_to(ROOT)
                self.calls.add((str(name), frame.f_lineno))
        return func(*args, **kwargs)


def _points():
    xy, _ = circle_points([(0, 0), (0.05, -0.03)], [0.5, 1.5], 150, jitter=0.005, seed=0)
    return xy


CASES = {
    "mixture": dict(model="mixture_of_models", n_init=2),
    "noise expert": dict(model="mixture_of_models", noise_expert=True),
    "regularized, gate, restarts": dict(model="regularized_experts", noise_expert=True, n_init=2),
    "circle + ellipse": dict(experts="circle,ellipse"),
    "svi": dict(model="mixture_of_models", method="svi", max_iter=20),
    "svi minibatch, gate": dict(
        model="regularized_experts",
        method="svi",
        max_iter=20,
        batch_size=64,
        minibatch_from=0,
    ),
}


def _fit_and_use(device: str, **kw):
    """A fit and what users do with it: predictions, curves, their uncertainty, gate weights."""
    kw = {"experts": 2, "n_init": 1, "max_iter": 8, **kw}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = pyro_moe.fit_circles(_points(), device=device, **kw)
    r.predict(r.X[:5])
    r.expert_weights(r.X[:5])
    curves = r.curves()
    curve_uncertainty(r)
    plt.close(plot_gate_map(r, resolution=8))
    return r, curves


@pytest.mark.parametrize("case", list(CASES))
def test_our_code_names_the_device_of_every_tensor_it_makes(case):
    spy = DefaultDeviceSpy()
    with spy:
        _fit_and_use("cpu", **CASES[case])
    assert not spy.calls, f"tensors made on the default device at: {sorted(spy.calls)}"


def test_the_spy_catches_an_implicit_device():
    spy = DefaultDeviceSpy()
    from pyro_moe import parts  # any module of ours: a call made from a file under pyro_moe/

    code = compile("torch.zeros(3)", parts.__file__, "exec")
    with spy:
        exec(code, {"torch": torch})
    assert spy.calls == {(str(Path("pyro_moe") / "parts.py"), 1)}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("case", list(CASES))
def test_cuda_fit_matches_the_cpu_fit(case):
    kw = CASES[case]
    cpu, _ = _fit_and_use("cpu", **kw)
    gpu, _ = _fit_and_use("cuda", **kw)
    assert gpu.mean.device.type == "cuda"
    if kw.get("method") == "svi":  # different random streams: the same fit, not the same bits
        assert abs(gpu.objective - cpu.objective) < 0.05 * abs(cpu.objective) + 5
        return
    assert gpu.objective == pytest.approx(cpu.objective, rel=1e-8, abs=1e-6)
    torch.testing.assert_close(gpu.mean.cpu(), cpu.mean, rtol=1e-6, atol=1e-8)
