"""``pyro_moe.fit``: one entry point for every engine and model file."""

from __future__ import annotations

from pathlib import Path

import torch

from .checks import as_array, check_count, check_device, check_magnitude, keeps_global_rngs
from .distributed import is_distributed
from .engines import ENGINES, get_engine
from .errors import InputError
from .model_file import Model, load_model
from .parameters import COMMON, FIT, HYPERPARAMETERS
from .result import FitResult
from .search import SearchPolicy, as_search_policy

#: the units of the default priors (``fit(prior_units=...)``)


def as_data(X, y, *, dtype=torch.float64, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate and convert a design (N, n) and targets (N,) to real, finite tensors
    (:func:`pyro_moe.checks.as_array`: complex, non-numeric, NaN/inf and values whose squares
    overflow are refused; a tensor that requires grad is read detached)."""
    X = as_array("X", X, dtype=dtype, device=device)
    y = as_array("y", y, dtype=dtype, device=device)
    if X.dim() != 2:
        raise InputError(
            f"X must be a 2-d array (N points x n features), got shape {tuple(X.shape)}"
        )
    if y.dim() == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.dim() != 1:
        raise InputError(f"y must be a 1-d array of N targets, got shape {tuple(y.shape)}")
    if X.shape[0] != y.shape[0]:
        raise InputError(f"X has {X.shape[0]} rows but y has {y.shape[0]} entries")
    if X.shape[0] == 0:
        raise InputError("no data: X and y are empty")
    if X.shape[1] == 0:
        raise InputError("X has no columns (features)")
    check_magnitude("X", X)
    check_magnitude("y", y)
    return X, y


def feature_names(X) -> tuple[str, ...] | None:
    """The names of the columns of a design: a pandas DataFrame's columns (as text), else
    None (an array, a tensor: the results name the weights ``w0, w1, ...``). Two columns of
    one name are an InputError (the names label the weights in tables and ArviZ)."""
    columns = getattr(X, "columns", None)
    if columns is None or getattr(X, "ndim", 2) != 2:
        return None
    names = tuple(str(c) for c in columns)
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"X has duplicate column name(s) {', '.join(map(repr, dupes))}")
    return names


def weight_scale(X: torch.Tensor, y: torch.Tensor, unit: float | None = None) -> torch.Tensor:
    """The data's unit of each weight: s_j = rms(y) / rms(x_j), shape (n,); with ``unit``
    (a model file's ``SETTINGS["weight_unit"]``, e.g. logit units for a 0/1 target, whose
    rms means nothing) s_j = unit / rms(x_j).

    The default priors of :func:`fit` are in these units (A_k = diag(s)^2, Xi scaled by
    diag(s) on both sides): the same as standardizing each column of X and y by its root
    mean square, fitting with the file's defaults and mapping the weights back, so the fit
    does not depend on the data's scale (X -> X c, y -> y d gives weights w d / c). A column
    or a y that is all zero counts as scale 1. The root mean squares are taken of the values
    divided by their largest magnitude, so tiny columns do not underflow to 0; a scale outside
    the range that float64 holds (:data:`SCALE_RANGE`) is an InputError saying to rescale.
    See "Units of the priors" in the README.
    """
    return weight_scale_of(_rms(X), _rms(y) if unit is None else torch.tensor(float(unit)))


def _rms(a: torch.Tensor) -> torch.Tensor:
    """The root mean square over the rows (dim 0), computed without underflow or overflow."""
    top = a.abs().amax(0)
    unit = torch.where(top > 0, top, torch.ones_like(top))
    return (a / unit).square().mean(0).sqrt() * unit


#: the range of rms(x_j), rms(y) and s_j = rms(y) / rms(x_j) that the default priors hold:
#: beyond it the squares (Var y, A_k = diag(s)^2, X^T X) underflow or overflow float64
SCALE_RANGE = (1e-150, 1e150)


def weight_scale_of(rms_x: torch.Tensor, rms_y: torch.Tensor) -> torch.Tensor:
    """:func:`weight_scale` from the root mean squares of the columns (n,) and of y.

    A root mean square (other than 0) or a ratio s_j outside :data:`SCALE_RANGE` is an
    InputError saying to rescale."""
    lo, hi = SCALE_RANGE
    named = [(f"rms of column {j} of X", v) for j, v in enumerate(rms_x.reshape(-1).tolist())]
    named.append(("rms of y", float(rms_y)))
    rms_x = torch.where(rms_x > 0, rms_x, torch.ones_like(rms_x))
    rms_y = rms_y if float(rms_y) > 0 else torch.ones_like(rms_y)
    s = rms_y / rms_x
    named += [(f"rms(y) / rms(column {j} of X)", v) for j, v in enumerate(s.reshape(-1).tolist())]
    for what, v in named:
        if v != 0 and not lo <= v <= hi:
            raise InputError(
                f"the {what} is {v:.3g}, outside [{lo:.0e}, {hi:.0e}]: the default priors "
                "(in the data's units) would underflow or overflow float64; rescale the data "
                "(the fit does not depend on the scale of each column)"
            )
    return s


@keeps_global_rngs  # the caller's torch / numpy / random states are left as they were
def fit(
    model: str | Path | Model,
    X,
    y,
    *,
    experts: int = 2,
    method: str = "cavi",
    n_init: int | None = None,
    init: str | list[str] = "auto",
    responsibilities=None,
    tol: float | None = None,
    max_iter: int | None = None,
    seed: int = 0,
    learn=None,
    prior_mean=None,
    prior_cov=None,
    noise_precision=None,
    concentration=None,
    regularization_cov=None,
    gate_hidden: int | None = None,
    noise_expert: bool | None = None,
    per_expert_noise: bool | None = None,
    gate_prior_scale: float | bool | None = None,
    noise_range=None,
    device: str | torch.device | None = None,
    progress: bool | None = None,
    prior_units: str = "data",
    maps=None,
    search: bool | SearchPolicy = False,
    scheduler: str | None = None,
    workers: int | None = None,
    collect: bool | None = None,
    start_from=None,
    **engine_options,
) -> FitResult:
    """Fit a model file to a design X (N, n) and targets y (N,).

    Args:
        model: a built-in model name (``"mixture_of_models"``, ``"mixture_of_experts"``,
            ``"regularized_experts"``), a path to a model file, or a loaded :class:`Model`.
        X: the design (N, n): an array, a tensor or a pandas DataFrame, whose column names
            the result carries (``result.feature_names``: its summary, the saved file,
            ArviZ's ``feature`` coordinate; :func:`feature_names`).
        y: the targets (N,): an array, a tensor or a pandas Series.
        experts: K, the number of experts (1 <= K <= N).
        method: an engine registered in :mod:`pyro_moe.engines`: ``"cavi"`` (closed-form
            variational EM) or ``"svi"`` (Pyro SVI).
        n_init: restarts; the run with the best final objective is kept (None: one per
            entry of an ``init`` list, else 5).
        init: ``"auto"`` ("prior" first when the prior means differ, then "subsets"),
            ``"prior"``, ``"subsets"``, ``"random"``, or a list, one per restart.
        responsibilities: initial q(Z) (N, K); overrides ``init``.
        tol: relative change of the objective that counts as converged (None: the
            engine's default).
        max_iter: the iteration limit: CAVI sweeps or SVI steps (None: the engine's
            default).
        seed: the seed of the first restart (restart i uses seed + i).
        learn: hyperparameters to point-estimate ("all", "none", or names among
            prior_mean, prior_cov, noise_precision, gate); the rest stay fixed.
            Default: the model file's ``SETTINGS["learn"]``.
        prior_mean: a hyperparameter's value (its initial value when learned), in the data's
            units; so are ``prior_cov``, ``noise_precision``, ``concentration``,
            ``regularization_cov`` and ``gate_hidden``. The defaults' units are
            ``prior_units``'.
        prior_units: the units of the default priors. ``"data"`` (default): the data's own
            units (:func:`weight_scale`): A_k = diag(rms(y) / rms(x_j))^2 and
            beta = 1 / Var(y), so scaling X or y does not change the fit. ``"unit"``: the
            model file's defaults as written (A_k = I), for data already standardized (the
            curve functions, :mod:`pyro_moe.curves`, use it). With ``maps`` the experts'
            weights have no common data units and the priors are always ``"unit"``.
        noise_expert: add a uniform background component over the observed target range
            (outliers; default: the model file's ``SETTINGS["noise_expert"]``). The result's
            responsibilities then have K + 1 columns, the noise expert last.
        per_expert_noise: one noise precision beta_k per expert (default: the model file's
            ``SETTINGS["per_expert_noise"]``, else one beta shared by the experts).
        gate_prior_scale: s of a gated file's prior N(0, s^2) on the gate's weights: None
            (default) the file's (``SETTINGS["gate_prior_scale"]``, with the noise expert
            ``SETTINGS["noise_gate_prior_scale"]`` where the file has it), a positive
            number that s, False no prior (a maximum-likelihood gate, the study's).
        noise_range: (lo, hi), the support of the noise expert's uniform density over the
            targets (default: the observed range; the curve functions pass the range of the
            target over the points' bounding box).
        device: where to compute ("cpu", "cuda"); CAVI computes in float64.
        progress: show a progress bar (default: only on a terminal for long runs).
        maps: expert maps T (K, n + 1, d), one per expert, for experts with their own
            features and targets (:mod:`pyro_moe.experts`; :func:`pyro_moe.fit_curves`
            builds them from expert names). None: every expert regresses y on X.
        search: after the restarts, move between fixed points: re-seed experts that
            duplicate another, hold almost nothing, or lose to the noise expert, on the points
            the others explain worst, and keep a move only when the converged objective
            improves (:mod:`pyro_moe.search`; the curve functions turn it on). True: the
            default :class:`~pyro_moe.search.SearchPolicy`; a policy sets the search's
            settings and an admissibility rule for the experts (the curve functions pass
            one that refuses implausible curves).
        scheduler: distributed data (:mod:`pyro_moe.distributed`, ``docs/distributed.md``):
            X a Dask array (y too), a ``.npy`` path (y another), a directory of ``X.npy``
            and ``y.npy`` or a zarr store (y None) is fitted by CAVI on a
            ``dask.distributed`` cluster: the scheduler at address ``scheduler`` when given,
            else a ``LocalCluster`` of ``workers`` when given, else the active client or a
            2-worker ``LocalCluster``.
        workers: the number of worker processes of that ``LocalCluster`` (default 2).
        collect: gather X, y and q(Z) of distributed data into the result (default: when
            they take at most 1 GiB; otherwise the result's X, y and responsibilities have
            no rows).
        start_from: distributed data only: a :class:`pyro_moe.distributed.Start` (given globals,
            e.g. of a fit to a subsample) whose E-step on each chunk is the initial q(Z)
            (the curve functions' distributed path sets it); in memory, give
            ``responsibilities`` (``start_from.log_responsibilities(X, y).exp()``) instead
            (``start`` is SVI's own option).
        engine_options: the engine's own options (e.g. ``prior_var_min``, ``gate_steps``
            for CAVI, ``lr``, ``batch_size`` for SVI), validated with the shared ones
            (:mod:`pyro_moe.engines.options`): an unknown or out-of-range option is an
            :class:`~pyro_moe.errors.InputError` naming it, for every engine alike.

    Returns:
        A :class:`FitResult` whose objective history is the total ELBO in nats (plus the
        regularizer R(w0) for the regularized model, and the gate prior log p(V) of a gated
        model with the noise expert).
    """
    given = dict(locals())  # fit's own keywords (a copy), as declared in pyro_moe.parameters
    engine = get_engine(method)
    options = engine.options({**{n: given[n] for n in COMMON}, **engine_options})
    device = check_device(device)
    if not FIT["prior_units"].constraint(prior_units):  # declared in pyro_moe.parameters
        raise InputError(
            f"prior_units must be {FIT['prior_units'].constraint.allowed}, got {prior_units!r}"
        )
    search = as_search_policy(search)
    data_units = prior_units == "data" and maps is None
    model = load_model(model)
    hyper = {n: given[n] for n in HYPERPARAMETERS}
    if is_distributed(X) or scheduler is not None or workers is not None:
        if search is not None:
            raise InputError(
                "search=True needs the data in memory; fit distributed data without it"
            )
        from .distributed import fit_on_dask

        result = fit_on_dask(
            engine, options, model, X, y, experts, hyper,
            weight_scale_of=weight_scale_of if data_units else None,
            scheduler=scheduler, workers=workers, collect=collect, start=start_from,
        )  # fmt: skip
        return result.attach_model(model)
    if start_from is not None:
        raise InputError("start_from= is for distributed data; in memory give responsibilities")
    names = feature_names(X)
    X, y = as_data(X, y, device=device)
    N = X.shape[0]
    experts = check_count("experts", experts, 1)
    if experts > N:
        raise InputError(f"experts = {experts} is more than the number of points ({N})")
    config = model.config(
        X,
        y,
        int(experts),
        seed=options.seed,
        weight_scale=weight_scale(X, y, model.settings.get("weight_unit")) if data_units else None,
        **hyper,
    )
    result = engine(model, X, y, config, options, search=search).fit().attach_model(model)
    result.feature_names = names
    return result


METHODS = tuple(ENGINES)
