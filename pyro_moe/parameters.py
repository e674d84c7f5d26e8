"""Every option and hyperparameter of a fit, declared once, with its default, its
constraint, what it means and who reads it; nothing here imports torch or numpy (the
command line builds its help from this table before any heavy library is loaded).

* :data:`COMMON`: the run options every engine takes, with the same meaning everywhere:
  ``max_iter`` is the number of objective-improving iterations (a CAVI sweep, one SVI
  step), ``tol`` the relative change of the objective that counts as converged, ``n_init``
  the restarts (the best final objective is kept), ``seed`` the seed of the first restart
  (restart i uses seed + i).
* :data:`CLOSED_FORM`: the closed-form sweep's options, read by CAVI and natural SVI.
* :data:`ENGINE_OPTIONS`: each engine's own options, by engine name (its ``declared``).
* :data:`HYPERPARAMETERS`: the model's hyperparameters and settings, read by
  :meth:`pyro_moe.model_file.Model.config`.
* :data:`FIT`: the keywords of :func:`pyro_moe.fit` itself (the data, the engine, where to
  compute, distributed data).

:func:`pyro_moe.fit`'s signature is checked against these tables (``tests/test_parameters.py``),
the command line takes its names (``--n-init``, ``--max-iter``, ...), help and engine
defaults from them, and :mod:`pyro_moe.engines.options` validates against them (one
:class:`~pyro_moe.errors.InputError` naming a bad option, whatever the engine).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

#: Initialisation strategies of q(Z) (:mod:`pyro_moe.closed_form.init`); "auto" picks.
INITS = ("auto", "prior", "subsets", "random")
#: Seeds are restart seeds seed, seed + 1, ...: numpy and torch accept [0, 2**32).
SEED_MAX = 2**32 - 1 - 1000
#: Restarts when neither ``n_init`` nor a list of ``init`` says how many.
DEFAULT_RESTARTS = 5
#: At most this many restarts (seed + i stays below 2**32; each restart is a full fit).
MAX_RESTARTS = 1000


@dataclass(frozen=True)
class Constraint:
    """A predicate on an option's value with the words that say what is allowed."""

    check: Callable[[Any], bool]
    allowed: str

    def __call__(self, value: Any) -> bool:
        try:
            return bool(self.check(value))
        except (TypeError, ValueError):
            return False


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def integer(low: int | None = None, high: int | None = None, *, none: bool = False) -> Constraint:
    """An integer in [low, high] (either end open when None); ``none``: None allowed too."""

    def check(v: Any) -> bool:
        if v is None:
            return none
        return _is_int(v) and (low is None or v >= low) and (high is None or v <= high)

    words = "an integer" + (f" >= {low}" if low is not None else "")
    words += f" <= {high}" if high is not None else ""
    return Constraint(check, words + (" or None" if none else ""))


def number(
    low: float | None = None,
    *,
    strict: bool = False,
    high: float | None = None,
    high_strict: bool = False,
    none: bool = False,
) -> Constraint:
    """A finite real number above ``low`` (``strict``: > low, else >= low) and below
    ``high``; ``none``: None allowed too. NaN and inf are never allowed."""

    def check(v: Any) -> bool:
        if v is None:
            return none
        if not _is_real(v) or not math.isfinite(v):
            return False
        if low is not None and (v <= low if strict else v < low):
            return False
        return high is None or (v < high if high_strict else v <= high)

    words = "a finite number"
    if low is not None:
        words += f" {'>' if strict else '>='} {low}"
    if high is not None:
        words += f" {'<' if high_strict else '<='} {high}"
    return Constraint(check, words + (" or None" if none else ""))


def one_of(*values: Any, none: bool = False) -> Constraint:
    """One of ``values`` (compared with ==, bools apart from ints)."""

    def check(v: Any) -> bool:
        if v is None:
            return none
        return any(type(v) is type(w) and v == w for w in values)

    words = "one of " + ", ".join(repr(v) for v in values)
    return Constraint(check, words + (" or None" if none else ""))


def boolean(*, none: bool = False) -> Constraint:
    """True or False (``none``: or None, meaning 'decide for me')."""
    return Constraint(
        lambda v: isinstance(v, bool) or (none and v is None),
        "True or False" + (" or None" if none else ""),
    )


def _init_ok(v: Any) -> bool:
    if isinstance(v, str):
        return v in INITS
    if isinstance(v, list | tuple):
        return len(v) > 0 and all(isinstance(s, str) and s in INITS[1:] for s in v)
    return False


def _responsibilities_ok(v: Any) -> bool:
    if v is None:
        return True
    import numpy as np  # here, not at import: the command line's --help needs neither
    import torch

    if torch.is_tensor(v):
        return v.dim() == 2 and not v.is_complex()
    a = np.asarray(v)
    return a.ndim == 2 and np.issubdtype(a.dtype, np.number) and not np.iscomplexobj(a)


#: any value (checked where it is read)
_anything_doc = "checked where it is read"


@dataclass(frozen=True)
class Option:
    """One option: its default and its constraint."""

    default: Any
    constraint: Constraint
    doc: str = ""


_anything = Constraint(lambda v: True, _anything_doc)

#: The options every engine takes, with the same meaning everywhere.
COMMON: Mapping[str, Option] = MappingProxyType(
    {
        "n_init": Option(
            None,
            integer(1, MAX_RESTARTS, none=True),
            "restarts; the best final objective is kept (None: one per entry of an init "
            f"list, else {DEFAULT_RESTARTS})",
        ),
        "init": Option(
            "auto",
            Constraint(
                _init_ok,
                "one of 'auto', 'prior', 'subsets', 'random', or a non-empty list of "
                "'prior'/'subsets'/'random' (one per restart)",
            ),
            "initialisation of q(Z) for each restart",
        ),
        "seed": Option(0, integer(0, SEED_MAX), "seed of the first restart"),
        "responsibilities": Option(
            None,
            Constraint(_responsibilities_ok, "None or a real (N, C) array"),
            "initial q(Z); overrides init",
        ),
        "progress": Option(None, boolean(none=True), "progress bar (None: on a terminal)"),
        "max_iter": Option(None, integer(1), "iteration limit (a CAVI sweep, an SVI step)"),
        "tol": Option(None, number(0.0), "relative change of the objective to converge"),
    }
)


#: The closed-form sweep's options (:mod:`pyro_moe.engines.sweep`), declared once and read
#: by every engine that runs it (CAVI, natural-gradient SVI, both on Dask too).
#:
#: prior_var_min, noise_precision_max: the floors for noise-free data (eigenvalues of A_k
#: >= prior_var_min, beta <= noise_precision_max, default 1e10 / Var(y)).
#: gate_method: the gate's M-step on the full batch (pyro_moe.engines.gate): "lbfgs",
#: "newton" (damped Gauss-Newton, for a gate of known form) or "auto" (Gauss-Newton below
#: 1e5 points, else L-BFGS); None: the model file's SETTINGS["gate_method"], else "lbfgs"
#: (models/mixture_of_experts.py: "auto"; why, file by file: docs/cavi_notes.md section 6).
#: gate_steps: the gate's iterations per step on the full batch: L-BFGS iterations of its
#: M-step (None: 10), or at most that many Gauss-Newton iterations
#: (pyro_moe.engines.gate.GATE_NEWTON_STEPS = 1 per sweep); Adam steps on a minibatch
#: (None: 1). gate_dtype:
#: "auto" (the data's dtype), "float32" (an L-BFGS gate step on a float32 copy) or
#: "float64"; the accept test is always in the data's dtype. gate_warm_start (L-BFGS):
#: keep the L-BFGS history across sweeps (None: from
#: GATE_WARM_START_N points). Measured (benchmarks/results/cavi.md, and 15 iterations at
#: 1e6 points: float64 warm 8.8 s, float32 warm 16.6 s, same objective): float32 does not
#: pay here, because converged float32 L-BFGS never meets its tolerance and spends every
#: step; below 1e5 points the float64 cold start is cheap. gate_skip_tol: a gate step that
#: gained at most min(gate_skip_tol, tol) * max(|F|, N) nats is skipped for the next 1, 2,
#: 4, ... GATE_MAX_BACKOFF sweeps (the gate is the costliest block), never after the first
#: step, and the fit is not declared converged on a sweep that held the gate. With the
#: warm start, while the last gate step gained > GATE_PRESAMPLE_GAIN nats per point,
#: L-BFGS first runs on a subsample of GATE_PRESAMPLE rows (docs/cavi_notes.md section 6).
CLOSED_FORM: Mapping[str, Option] = MappingProxyType(
    {
        "prior_var_min": Option(1e-10, number(0.0, strict=True), "floor of A_k's eigenvalues"),
        "noise_precision_max": Option(
            None, number(0.0, strict=True, none=True), "ceiling of beta (None: 1e10 / Var y)"
        ),
        "gate_steps": Option(
            None, integer(1, none=True), "gate iterations per step (None: 10 L-BFGS, 1 Adam)"
        ),
        "gate_method": Option(
            None,
            one_of("auto", "newton", "lbfgs", none=True),
            "the gate's M-step (None: the model file's SETTINGS, else lbfgs)",
        ),
        "gate_dtype": Option("auto", one_of("auto", "float32", "float64"), "the gate's dtype"),
        "gate_warm_start": Option(None, boolean(none=True), "keep L-BFGS history"),
        "gate_tolerance": Option(
            None, number(0.0, strict=True, none=True), "L-BFGS tolerance_change"
        ),
        "gate_skip_tol": Option(1e-7, number(0.0), "skip gate steps that gain less"),
    }
)


def _is_fit_result(v: Any) -> bool:
    """None or a :class:`pyro_moe.result.FitResult` (by its type's name: the table sits
    below the result type and imports nothing of it)."""
    return v is None or any(
        c.__name__ == "FitResult" and c.__module__ == "pyro_moe.result" for c in type(v).__mro__
    )


#: CAVI's own options (the shared ones are :data:`pyro_moe.engines.options.COMMON`, the
#: closed-form sweep's :data:`pyro_moe.engines.options.CLOSED_FORM`). Converged when
#: |F_t - F_{t-1}| <= tol * max(|F_t|, N): a relative change, measured against N when F is
#: near zero (F is a sum over N points).
CAVI: Mapping[str, Option] = MappingProxyType(
    {
        "tol": Option(1e-8, number(0.0), "relative change of F that counts as converged"),
        "max_iter": Option(1000, integer(1), "CAVI iterations (full sweeps)"),
        **CLOSED_FORM,
    }
)


#: SVI's own options (the shared ones are :data:`pyro_moe.engines.options.COMMON`).
#: Defaults, and why:
#:
#: * ``lr=None``: 0.002 on the guide's own parameters, 0.01 in whitened coordinates
#:   (``whiten``, below). ``lr_decay=0.1``. On the guide's own parameters Adam moves
#:   every unconstrained parameter by about ``lr`` per step even at the optimum (its
#:   first steps are ~lr * sign(grad)), and the posterior sd of w on the study's
#:   circles is ~1e-3, so a large lr throws the closed-form start away (lr=0.01 drops F
#:   from 333 to 250 nats on synthetic 1 with beta = 1e3) and a small one is slow;
#:   0.005 decaying to 5e-4 ended within 0.13 % of CAVI there (and stopped early at 0.7
#:   % while climbing back), 0.002 within 0.01 %. Raise lr for a start far from the
#:   optimum (``start="guide"``, non-conjugate priors).
#: * ``start="closed_form"``: q(W), q(pi) [q(beta)] from the initial q(Z) in closed form;
#:   ``"guide"`` keeps the guide's own initial values (only q(Z) is initialised).
#: * ``tol=1e-3`` on the relative change of a ``window=50``-step rolling mean, tested
#:   every ``eval_every=50`` steps, mean and median of the last ``history=5`` changes:
#:   the per-step objective's Monte Carlo sd at convergence is a few nats (2.7 nats on
#:   synthetic 1), so the rolling mean's relative change has a noise floor of about
#:   0.2 sd / max(|F|, N), measured 5e-4 to 1e-3 at N = 200; a tol of 1e-4 would never
#:   trigger below N ~ 1e4 and only runs the clock to ``max_iter`` (Stan ADVI's
#:   default tol_rel_obj is 1e-2, on a 100-draw estimate). The floor falls like 1/N
#:   (F grows with N, the noise of the global draws does not), so big data stop on drift.
#: * ``max_iter=3000`` steps; ``clip_norm=10`` (ClippedAdam's elementwise gradient clip).
#:   The final q is the mean of the iterates (Polyak-Ruppert averaging, exponentially
#:   weighted over the last ~``window`` steps): Adam's iterate keeps a spread of ~lr about
#:   the optimum; measured on a Laplace-prior file (CVI's F as the reference), the gap went
#:   0.054 -> 0.035 nats (two circles, N = 200) and 0.143 -> 0.067 (Synthetic 1).
#: * ``whiten=None``: Adam on q(W) in coordinates whitened by the closed-form start
#:   (:class:`Whitening`: a step is ~lr posterior sds) when natural gradient falls back on
#:   Adam (a site it has no step for: an added scale tau, a multivariate non-Gaussian
#:   prior, a learned w0 or A under a non-Gaussian prior); plain Adam on the guide's own
#:   parameters when ``optimizer="adam"`` is asked for (the comparison's baseline). On the
#:   Laplace file: the stop rule met after 550 and 150 steps (6 s, 2 s) against 2150 and
#:   not in 3000 (37 s, 41 s) on the guide's own parameters, the same gap.
#: * ``batch_size=None``: full batch; an int B gives minibatch SVI (module docstring).
#: * ``optimizer="natural"``: natural-gradient steps for the conjugate sites (module
#:   docstring); ``step_size=None`` is rho = 1 on the full batch (CAVI) and Robbins-Monro
#:   (t + tau)^-kappa, ``kappa=0.7``, ``tau=10`` on minibatches (scikit-learn's online
#:   LDA; the first step, from the full data's initial statistics, has rho = 1). tau = 1
#:   (rho = 0.62, 0.46, ... after it) needed about half the steps to come within 0.1 %
#:   with stray points at N = 1e4, B = 1e3 (15-20 against 30), but on 3.csv (N = 400,
#:   B = 100) it ended in a worse fixed point, 5.3 nats below CAVI (tau = 10: 0.1).
#:   On minibatches the gate takes ``gate_steps`` (None: 1) Adam steps of ``gate_lr=0.01``
#:   per step; on the full batch CAVI's L-BFGS M-step, skip rule included.
#: * The closed-form sweep's options (``prior_var_min``, ``noise_precision_max``, the gate's
#:   ``gate_*``) are CAVI's, :data:`pyro_moe.engines.options.CLOSED_FORM`.
#: * ``tol=None``: 1e-3 for Adam, 1e-8 for natural gradient on the full batch (an exact
#:   objective, CAVI's tolerance), 1e-6 on minibatches (the change of F between two
#:   evaluations on all rows, or on a fixed subsample of EVAL_ROWS beyond that many,
#:   :data:`pyro_moe.engines.natural.EVAL_ROWS`; at 1e-5 a run at N = 1e6 with stray points
#:   stopped 8.3 nats below CAVI, at 1e-6 1.9 nats).
#: * ``minibatch_from=50_000``: natural-gradient SVI takes ``batch_size`` from this N on
#:   and the full batch's exact steps (CAVI's iterates) below it. A natural step costs
#:   ~3 ms of fixed work (the global update, the KL terms) beside ~1.7 us a point, so a
#:   full step on N = 1e3 points costs no more than a minibatch step, and with stray
#:   points a minibatch run needs 20-100 steps to come within 0.1 %: measured time to
#:   0.1 % with minibatches (B = min(1000, N/4)) 43x CAVI's at N = 1e3, 4x at 1e4, 0.88x
#:   at 1e5, 0.23x at 1e6, against 1.1-1.5x on the full batch
#:   (benchmarks/results/natural_scaling.md). The restarts' summaries report the
#:   ``batch_size`` used. 0 always honours ``batch_size``.
SVI_TOL = MappingProxyType({"adam": 1e-3, "natural": 1e-8, "natural_minibatch": 1e-6})
#: * ``max_iter=None``: the step budget by optimizer, as ``tol``; natural gradient's is
#:   Adam's too where it falls back on Adam (a site without a natural-gradient step).
SVI_MAX_ITER = MappingProxyType({"adam": 3000, "natural": 3000})
#: * ``lr=None``: Adam's learning rate by case: ``"adam"`` 0.002 on the guide's own
#:   parameters and ``"whitened"`` 0.01 in whitened coordinates (both above), and
#:   ``"fallback"`` 0.1, whitened, where natural gradient falls back on Adam (its start is
#:   the closed form of another model, further from the file's optimum). Measured with
#:   tol 1e-3 and 3000 steps on an ARD file and a Student-t file (N = 200, K = 2,
#:   benchmarks/results/svi_adam.md): lr 0.01 stopped after 1600 and 1150 steps at
#:   F = -66.64 and -70.21, 0.03 after 1250 and 1150 at -64.46 and -67.24, 0.1 after 2900
#:   and 1800 at -63.21 and -65.97, above lr 0.01's 6000 steps (-63.78) and 3000 steps
#:   (-68.14); natural gradient's tol 1e-8 was never met (3000 steps and a warning).
SVI_LR = MappingProxyType({"adam": 0.002, "whitened": 0.01, "fallback": 0.1})
SVI: Mapping[str, Option] = MappingProxyType(
    {
        "optimizer": Option("natural", one_of("natural", "adam"), "natural gradient or Adam"),
        "tol": Option(
            SVI_TOL["adam"], number(0.0, none=True), "relative change of the objective (None: auto)"
        ),
        "max_iter": Option(SVI_MAX_ITER["natural"], integer(1), "SVI steps (None: auto)"),
        "lr": Option(
            None, number(0.0, strict=True, none=True), "Adam's learning rate (None: auto)"
        ),
        "whiten": Option(
            None, boolean(none=True), "Adam on q(W) in whitened coordinates (None: auto)"
        ),
        "lr_decay": Option(
            0.1, number(0.0, strict=True, high=1.0), "lr falls to lr * lr_decay by max_iter"
        ),
        "clip_norm": Option(10.0, number(0.0, strict=True), "ClippedAdam's gradient clip"),
        "num_particles": Option(1, integer(1), "draws of the globals per step"),
        "batch_size": Option(None, integer(1, none=True), "minibatch size (None: full batch)"),
        "eval_every": Option(50, integer(1), "steps between convergence tests"),
        "window": Option(50, integer(1), "steps in the rolling mean"),
        "history": Option(2, integer(1), "window tests in a row that must pass (Adam)"),
        "final_particles": Option(200, integer(1), "draws of the final Monte Carlo ELBO"),
        "start": Option("closed_form", one_of("closed_form", "guide"), "start of q(W), q(pi)"),
        "step_size": Option(
            None, number(0.0, strict=True, high=1.0, none=True), "rho of natural steps"
        ),
        "kappa": Option(0.7, number(0.5, strict=True, high=1.0), "Robbins-Monro exponent"),
        "tau": Option(10.0, number(0.0), "Robbins-Monro delay"),
        "gate_lr": Option(0.01, number(0.0, strict=True), "Adam's lr for the gate (natural)"),
        "minibatch_from": Option(
            50_000, integer(0), "natural gradient takes batch_size from this N on"
        ),
        **CLOSED_FORM,
    }
)


#: NUTS's own options (the shared ones are :data:`pyro_moe.engines.options.COMMON`;
#: ``n_init``, ``init``, ``seed``, ``responsibilities`` and ``tol`` go to the CAVI fit that
#: fixes the hyperparameters, ``seed + c`` also seeds chain c).
NUTS: Mapping[str, Option] = MappingProxyType(
    {
        # split R-hat halves each chain and needs two draws per half
        "max_iter": Option(1000, integer(4), "draws kept per chain, after the warm-up"),
        "tol": Option(1e-8, number(0.0), "tol of the CAVI fit that fixes the hyperparameters"),
        "warmup": Option(200, integer(1), "warm-up (adaptation) iterations per chain"),
        "chains": Option(4, integer(1), "chains, run one after another"),
        "target_accept": Option(
            0.8, number(0.0, strict=True, high=1.0, high_strict=True), "NUTS's target acceptance"
        ),
        "max_tree_depth": Option(10, integer(1, 20), "NUTS's largest tree depth"),
        "marginalize": Option(
            "auto", one_of("auto", "sum", "enumerate"), "how z is summed out (auto: sum)"
        ),
        "precondition": Option("cavi", one_of("cavi", "none"), "affine map from CAVI's q"),
        "gate": Option(
            "fixed",
            one_of("fixed", "sampled"),
            "a gated file's gate: fixed at the variational fit's values, or sampled (its "
            "parameters latent: the file's gate prior on the weights, else N(0, 2.5^2))",
        ),
        "cavi_max_iter": Option(1000, integer(1), "max_iter of the CAVI fit"),
        "hyper_from": Option(
            None,
            Constraint(_is_fit_result, "None or a FitResult"),
            "a variational fit of the same data whose h and q NUTS takes (None: CAVI's)",
        ),
        "cavi_options": Option(
            None,
            Constraint(
                lambda v: v is None or isinstance(v, Mapping), "None or a dict of CAVI's options"
            ),
            "CAVI's own options for the CAVI fit (prior_var_min, gate_steps, ...)",
        ),
    }
)


#: Each engine's own options, by engine name (the shared ones are :data:`COMMON`).
ENGINE_OPTIONS: Mapping[str, Mapping[str, Option]] = MappingProxyType(
    {"cavi": CAVI, "svi": SVI, "nuts": NUTS}
)


def engine_defaults(name: str) -> dict[str, Any]:
    """The default of option ``name`` in each built-in engine that declares its own."""
    return {e: opts[name].default for e, opts in ENGINE_OPTIONS.items() if name in opts}


#: The hyperparameters and model settings a fit passes to the model file's configuration
#: (:meth:`pyro_moe.model_file.Model.config`, which checks their values against the data:
#: shapes, positive definiteness, counts; their constraint here is "checked where read"). ``None``: the model file's default (its ``SETTINGS``),
#: in the data's units unless ``prior_units="unit"``.
HYPERPARAMETERS: Mapping[str, Option] = MappingProxyType(
    {
        "learn": Option(
            None,
            _anything,
            "hyperparameters to point-estimate: 'all', 'none' or names among prior_mean, "
            "prior_cov, noise_precision, gate (None: the file's SETTINGS['learn'])",
        ),
        "prior_mean": Option(None, _anything, "w0_k, the prior means of the weights"),
        "prior_cov": Option(None, _anything, "A_k, the prior covariances of the weights"),
        "noise_precision": Option(
            None, _anything, "beta, the noise precision (its start when learned)"
        ),
        "concentration": Option(None, _anything, "mu, the Dirichlet concentration of pi"),
        "regularization_cov": Option(None, _anything, "Xi, the covariance of w0_k - w0_k'"),
        "gate_hidden": Option(None, _anything, "hidden units of the gate"),
        "noise_expert": Option(None, _anything, "a uniform background component for outliers"),
        "per_expert_noise": Option(None, _anything, "one noise precision beta_k per expert"),
        "gate_prior_scale": Option(
            None, _anything, "s of the gate prior N(0, s^2) (None: the file's; False: none)"
        ),
        "noise_range": Option(None, _anything, "(lo, hi), the noise expert's support"),
        "maps": Option(None, _anything, "expert maps T (K, n + 1, d): each expert's features"),
    }
)

#: The keywords of :func:`pyro_moe.fit` besides the run options and the hyperparameters
#: (``prior_units`` is checked against its constraint by ``fit``; the others where read:
#: the engine registry, ``check_count``, the Dask connection).
FIT: Mapping[str, Option] = MappingProxyType(
    {
        "experts": Option(2, _anything, "K, the number of experts"),
        "method": Option("cavi", _anything, "the engine (a name registered in pyro_moe.engines)"),
        "device": Option(None, _anything, "where to compute (cpu, cuda)"),
        "prior_units": Option(
            "data",
            one_of("data", "unit"),
            "'data': default priors in the data's units; 'unit': the file's defaults as they are",
        ),
        "search": Option(False, _anything, "move between fixed points after the restarts"),
        "scheduler": Option(None, _anything, "a dask.distributed scheduler address"),
        "workers": Option(None, _anything, "workers of a LocalCluster"),
        "collect": Option(None, _anything, "gather distributed rows into the result"),
        "start_from": Option(None, _anything, "given globals whose E-step starts a Dask fit"),
    }
)


def fit_keywords() -> tuple[str, ...]:
    """Every keyword :func:`pyro_moe.fit` names (the engines' own options come on top)."""
    return (*COMMON, *HYPERPARAMETERS, *FIT)
