"""The study's setup: Grabovoy & Strijov, "Prior distribution choices for a mixture of
experts" — its prior means and regularizer, the prior choices f1/f2/f3, the data sets,
the published S, and the engine settings and seed counts of the reproduction.

Every constant is a plain value: copy an entry before editing it
(``dict(CHOICES["f2"])``).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CAVI_SETTINGS",
    "CHOICES",
    "DATASETS",
    "PUBLISHED_S",
    "ROWS",
    "STUDY_PRIOR_MEAN",
    "STUDY_XI",
    "SVI_SETTINGS",
]

#: The study's prior means (standardized units): w0_1 = [0, 0, 0.1], w0_2 = [0, 0, 2].
STUDY_PRIOR_MEAN: tuple[tuple[float, ...], ...] = ((0.0, 0.0, 0.1), (0.0, 0.0, 2.0))
#: The regularizer's Xi = diag(0.01, 0.01, 1) (a covariance: it ties the centres).
STUDY_XI: tuple[float, ...] = (0.01, 0.01, 1.0)

#: The study's prior choices as keyword arguments of :func:`pyro_moe.fit` plus ``model``
#: (the model file).
#:
#: * f1, no prior information: gated mixture of experts, w0_k = 0 and A_k = I as initial
#:   values, everything learned (w0, A, beta, gate).
#: * f2, informative fixed priors: the study's w0_k, A_k = I, held fixed; beta and the gate
#:   learned.
#: * f3, regularized experts: the study's w0_k as start, A_k = I, Xi ties the prior means;
#:   w0 learned under the regularizer R(w0), beta and the gate learned.
#: The study's mixture of experts: one noise precision shared by the experts, a
#: maximum-likelihood gate (no prior on it) and L-BFGS's gate step, not the file's
#: regression defaults (with its Gauss-Newton step Synthetic 3's f2 ended at median S 0.61
#: where L-BFGS reaches 0.11, at the same ELBO per point: docs/cavi_notes.md section 6).
STUDY_GATE: dict[str, Any] = {
    "per_expert_noise": False,
    "gate_prior_scale": False,
    "gate_method": "lbfgs",
}

CHOICES: dict[str, dict[str, Any]] = {
    "f1": {"model": "mixture_of_experts", "learn": "all", **STUDY_GATE},
    "f2": {
        "model": "mixture_of_experts",
        **STUDY_GATE,
        "prior_mean": STUDY_PRIOR_MEAN,
        "prior_cov": 1.0,
        "learn": ("noise_precision", "gate"),
    },
    "f3": {
        "model": "regularized_experts",
        "prior_mean": STUDY_PRIOR_MEAN,
        "prior_cov": 1.0,
        "regularization_cov": STUDY_XI,
    },
}

#: The rows of the S table and of the sweep: the three choices, plus f3 with a uniform
#: background component (``noise_expert=True``, which also puts the model file's Gaussian
#: prior on the gate's weights), which the study did not have.
ROWS: dict[str, dict[str, Any]] = {
    **CHOICES,
    "f3 + noise expert": {**CHOICES["f3"], "noise_expert": True},
}

#: Engine settings of every fit (K = 2, one restart). CAVI stops by the engines' default
#: rule (tol = 1e-8, the same as full-batch natural SVI's): at tol = 1e-6 the gated fits
#: stopped while still creeping, their posterior sds up to 68 % from the converged ones.
CAVI_SETTINGS: dict[str, Any] = {"experts": 2, "n_init": 1, "max_iter": 3000}
SVI_SETTINGS: dict[str, Any] = {"experts": 2, "n_init": 1, "max_iter": 3000}

#: The study's data sets, by key: display name.
DATASETS: dict[str, str] = {
    "synthetic_1": "Synthetic 1",
    "synthetic_2": "Synthetic 2",
    "synthetic_3": "Synthetic 3",
}

#: The study's published S (one number per cell; no spread was published).
PUBLISHED_S: dict[str, dict[str, float]] = {
    "synthetic_1": {"f1": 1e-5, "f2": 1e-5, "f3": 1e-5},
    "synthetic_2": {"f1": 0.6, "f2": 1e-3, "f3": 1e-3},
    "synthetic_3": {"f1": 0.6, "f2": 1e-3, "f3": 1e-3},
}

# The reproduction's sizes.
FULL_SEEDS = 10
QUICK_SEEDS = 3
FULL_SVI_SEEDS = 5  # SVI costs ~10 s a fit (3000 steps): 5 seeds keep the full run < 10 min
QUICK_SVI_SEEDS = 1
QUICK_SVI_DATASETS = ("synthetic_1", "synthetic_2")
FULL_LEVELS = (0.0, 0.25, 0.5, 0.75, 1.0)
QUICK_LEVELS = (0.0, 0.5, 1.0)
#: Noise points of the sweep at level 1 (Synthetic 3 adds round(200 * level) points).
SWEEP_NOISE_POINTS = 200
EYE_MASK = "1_mask_2.jpg"
EYE_ROWS = ("f2", "f3", "f3 + noise expert")
PARTS = ("table", "sweep", "eye")
SWEEP_ROWS = tuple(ROWS)
