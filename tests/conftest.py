"""Shared fixtures: small problems, the study's priors, and edited copies of model files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_moe import study
from pyro_moe.model_file import MODELS_DIR

# The study's prior means and regularizer, from their one home (re-exported to the tests).
STUDY_PRIOR_MEAN = [list(w) for w in study.STUDY_PRIOR_MEAN]
STUDY_XI = list(study.STUDY_XI)


def edited_model(tmp_path: Path, name: str, old: str, new: str) -> Path:
    """Copy ``models/<name>.py`` to tmp_path with one text edit (which must apply)."""
    text = (MODELS_DIR / f"{name}.py").read_text()
    assert old in text, f"edit target not found in {name}.py: {old!r}"
    path = tmp_path / f"{name}_edited.py"
    path.write_text(text.replace(old, new))
    return path


#: the weight prior of models/mixture_of_models.py, and two non-conjugate swaps of it for
#: edited_model (scale s_kj = sqrt(A_kj,jj): the Gaussian's sd)
GAUSSIAN_PRIOR = "return dist.MultivariateNormal(prior_mean, covariance_matrix=prior_cov)"
SWAPS = {
    "Laplace": "return dist.Laplace(prior_mean, "
    "prior_cov.diagonal(dim1=-2, dim2=-1).sqrt()).to_event(1)",
    "StudentT": "return dist.StudentT(3.0, prior_mean, "
    "prior_cov.diagonal(dim1=-2, dim2=-1).sqrt()).to_event(1)",
}


def two_circles(n: int = 60, jitter: float = 0.1, seed: int = 0):
    """X = [x, y, 1], t = x^2 + y^2 for points near circles r = 0.5 and 1.5."""
    rng = np.random.default_rng(seed)
    th = rng.uniform(0, 2 * np.pi, n)
    rad = np.where(rng.random(n) < 0.5, 0.5, 1.5)
    xy = np.c_[rad * np.cos(th), rad * np.sin(th)] + rng.normal(0, jitter, (n, 2))
    return np.c_[xy, np.ones(n)], (xy**2).sum(1)


@pytest.fixture(scope="module")
def client():
    """A 2-process dask.distributed LocalCluster's client, one per test module that asks
    (tests/test_distributed.py, tests/test_sweep.py); skipped without Dask."""
    distributed = pytest.importorskip("distributed")
    pytest.importorskip("dask.array")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(autouse=True)
def _seed_and_clean_param_store():
    import pyro

    pyro.clear_param_store()
    torch.manual_seed(0)
    yield
    pyro.clear_param_store()


#: the observation of models/mixture_of_experts.py, and the text a copy puts in its place
#: (:func:`observed_model`): z and y written out in the file, LIKELIHOOD and MEAN edited
OBSERVE = """    parts.observe_targets(
        X, y, w, beta, lambda x: dist.Categorical(logits=gate(x)), config, subsample
    )"""
INLINE_OBSERVE = """    with pyro.plate(parts.DATA_PLATE, X.shape[0], subsample=subsample) as idx:
        z = pyro.sample("z", dist.Categorical(logits=gate(X[idx])))
        mean = Vindex(X[idx] @ w.transpose(-1, -2))[..., z]
        scale = beta.rsqrt()
        pyro.sample("y", LIKELIHOOD, obs=y[idx])"""


def observed_model(
    tmp_path: Path, likelihood: str = "dist.Normal(mean, scale)", *, name: str = "observed"
) -> Path:
    """A copy of ``models/mixture_of_experts.py`` whose observation is written out in the
    file with the likelihood ``likelihood`` (an expression of ``mean``, the chosen
    expert's w_k^T x_i, and ``scale`` = 1/sqrt(beta)): e.g. ``dist.Normal(mean**3, scale)``
    (an edited mean), ``dist.StudentT(3.0, mean, scale)``, ``dist.Bernoulli(logits=mean)``."""
    text = (MODELS_DIR / "mixture_of_experts.py").read_text()
    assert OBSERVE in text
    text = text.replace(OBSERVE, INLINE_OBSERVE.replace("LIKELIHOOD", likelihood))
    text = text.replace("import pyro\n", "import pyro\nfrom pyro.ops.indexing import Vindex\n", 1)
    # the written-out observation has one scale for every expert: one shared beta
    shared = '"per_expert_noise": False'
    text = text.replace('"per_expert_noise": True', shared)
    assert shared in text
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    return path


#: the weight site of models/mixture_of_experts.py, and the guide's q(W) line
WEIGHTS = """    with pyro.plate(parts.EXPERTS_PLATE, config.experts):
        w = pyro.sample("w", weight_prior(config.hyper("prior_mean"), config.hyper("prior_cov")))"""
WEIGHTS_GUIDE = "    parts.weights_guide(config)"
#: an ARD precision per expert and feature, alpha_kj ~ Gamma(1, 1), w_kj ~ N(w0_kj, 1/alpha_kj)
ARD = """    with pyro.plate(parts.EXPERTS_PLATE, config.experts):
        ones = config.const(1.0).expand([config.features])
        alpha = pyro.sample("alpha", dist.Gamma(ones, ones).to_event(1))
        w = pyro.sample("w", dist.Normal(config.hyper("prior_mean"), alpha.rsqrt()).to_event(1))"""
ARD_GUIDE = """    from pyro.distributions import constraints

    K, n = config.experts, config.features
    a = pyro.param("alpha_shape", lambda: config.const(1.0).expand([K, n]).clone(),
                   constraint=constraints.positive)
    b = pyro.param("alpha_rate", lambda: config.const(1.0).expand([K, n]).clone(),
                   constraint=constraints.positive)
    with pyro.plate(parts.EXPERTS_PLATE, K) as experts:
        pyro.sample("alpha", dist.Gamma(a, b).to_event(1))
        parts.weights_guide(config, plate=experts)"""
#: a horseshoe-like global scale tau ~ HalfCauchy(1): w_k ~ N(w0_k, tau^2 I)
HORSESHOE = """    tau = pyro.sample("tau", dist.HalfCauchy(config.const(1.0)))
    with pyro.plate(parts.EXPERTS_PLATE, config.experts):
        w = pyro.sample("w", dist.Normal(config.hyper("prior_mean"), tau).to_event(1))"""
HORSESHOE_GUIDE = """    from pyro.distributions import constraints

    loc = pyro.param("tau_loc", lambda: config.const(0.0))
    s = pyro.param("tau_scale", lambda: config.const(0.1), constraint=constraints.positive)
    pyro.sample("tau", dist.LogNormal(loc, s))
    parts.weights_guide(config)"""


def added_site_model(tmp_path: Path, kind: str) -> Path:
    """A copy of ``models/mixture_of_experts.py`` with a latent site added to the model and
    its guide: ``"ard"`` (alpha (K, n) per expert and feature, in the experts plate) or
    ``"horseshoe"`` (a global scale tau)."""
    model, guide = {"ard": (ARD, ARD_GUIDE), "horseshoe": (HORSESHOE, HORSESHOE_GUIDE)}[kind]
    text = (MODELS_DIR / "mixture_of_experts.py").read_text()
    assert WEIGHTS in text and WEIGHTS_GUIDE in text
    text = text.replace(WEIGHTS, model).replace(WEIGHTS_GUIDE, guide)
    path = tmp_path / f"{kind}.py"
    path.write_text(text)
    return path


# ---- a conjugate site no part of the package names ---------------------------
#: kappa ~ Gamma(2, 3), an inverse scale of the weights' prior covariance: shared by the
#: experts (w_k ~ N(w0_k, A_k / kappa)) or one per expert (kappa_k, in the experts plate)
KAPPA = {
    "shared": """    kappa = pyro.sample("kappa", dist.Gamma(config.const(2.0), config.const(3.0)))
    with pyro.plate(parts.EXPERTS_PLATE, config.experts):
        cov = config.hyper("prior_cov") / kappa[..., None, None]
        w = pyro.sample("w", weight_prior(config.hyper("prior_mean"), cov))""",
    "per_expert": """    with pyro.plate(parts.EXPERTS_PLATE, config.experts):
        kappa = pyro.sample("kappa", dist.Gamma(config.const(2.0), config.const(3.0)))
        cov = config.hyper("prior_cov") / kappa[..., None, None]
        w = pyro.sample("w", weight_prior(config.hyper("prior_mean"), cov))""",
}
KAPPA_GUIDE = {
    "shared": """    from pyro.distributions import constraints

    a = pyro.param("kappa_shape", lambda: config.const(1.0), constraint=constraints.positive)
    b = pyro.param("kappa_rate", lambda: config.const(1.0), constraint=constraints.positive)
    pyro.sample("kappa", dist.Gamma(a, b))
    parts.weights_guide(config)""",
    "per_expert": """    from pyro.distributions import constraints

    K = config.experts
    a = pyro.param("kappa_shape", lambda: config.const(1.0).expand([K]).clone(),
                   constraint=constraints.positive)
    b = pyro.param("kappa_rate", lambda: config.const(1.0).expand([K]).clone(),
                   constraint=constraints.positive)
    with pyro.plate(parts.EXPERTS_PLATE, K) as experts:
        pyro.sample("kappa", dist.Gamma(a, b))
        parts.weights_guide(config, plate=experts)""",
}


#: the weight site of models/regularized_experts.py (its w0 is learned and regularised)
REGULARIZED_WEIGHTS = """    with pyro.plate(parts.EXPERTS_PLATE, config.experts):
        w = pyro.sample("w", weight_prior(prior_mean, config.hyper("prior_cov")))"""


def kappa_model(tmp_path: Path, kind: str, base: str = "mixture_of_models") -> Path:
    """A copy of ``models/<base>.py`` (mixture_of_models, mixture_of_experts or
    regularized_experts) with a new conjugate site ``kappa`` (:data:`KAPPA`) that no module
    of pyro_moe names."""
    text = (MODELS_DIR / f"{base}.py").read_text()
    site = KAPPA[kind]
    if base == "regularized_experts":
        text = text.replace(REGULARIZED_WEIGHTS, WEIGHTS)
        site = site.replace('config.hyper("prior_mean")', "prior_mean")
    assert WEIGHTS in text and WEIGHTS_GUIDE in text
    text = text.replace(WEIGHTS, site).replace(WEIGHTS_GUIDE, KAPPA_GUIDE[kind])
    path = tmp_path / f"kappa_{kind}_{base}.py"
    path.write_text(text)
    return path


#: an edit of a built-in file's noise_prior: a latent beta ~ Gamma(2, 0.5)
GAMMA_PRIOR_EDIT = (
    "    return None\n",
    "    return dist.Gamma(config.const(2.0), config.const(0.5))\n",
)
