"""The engine templates: what every inference engine shares, written once.

:class:`Engine` is what every engine shares: its declared options (validated once,
:mod:`~pyro_moe.engines.options`), its registry entry (``name``), its progress bar, the
translation of a breakdown into one :class:`~pyro_moe.errors.NumericalError` or
:class:`~pyro_moe.errors.ModelFileError`, and the :class:`~pyro_moe.result.FitResult`
it returns from :meth:`Engine.run_fit`. Two kinds of engine implement ``run_fit``:

* :class:`Variational` (CAVI, SVI): the restart loop, as scikit-learn's
  ``BaseMixture.fit`` does for its mixtures: the initialisation schedule of the restarts,
  the ``n_init`` loop that keeps the best final objective, one
  :class:`~pyro_moe.errors.ConvergenceWarning` pointing at the user's own line, and the
  assembly of the result; each engine implements one restart (:meth:`Variational.run`).
  With ``search=True`` (the curve functions' default) the search over fixed points
  follows the restarts (:mod:`pyro_moe.search`), so an engine that fits a variational
  engine inside it (NUTS's CAVI) reaches the same optimum a user's fit would.
* a sampler (:class:`~pyro_moe.engines.nuts.NUTS`): its own run (chains, not restarts).

A restart returns a :class:`Run`: its objective history (total nats, one entry per
iteration, the last entry final), whether it converged, and the fitted
:class:`~pyro_moe.result.Posterior` and :class:`~pyro_moe.result.Hyperparameters`.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from tqdm import tqdm

from ..config import Config
from ..errors import ConvergenceWarning, NumericalError, PyroMoeError, find_stack_level
from ..model_file import Model, model_file_error
from ..result import FitResult, History, Hyperparameters, Posterior
from ..search import SearchPolicy, as_search_policy
from .options import Option, Options, resolve, with_file_defaults

__all__ = [
    "Engine",
    "Progress",
    "Run",
    "Variational",
    "find_stack_level",
    "fresh_gate",
    "init_schedule",
]


@dataclass
class Run:
    """One restart: the objective F (total nats) and ELBO per iteration, wall-clock time
    per iteration, convergence, and the fitted posterior and hyperparameters."""

    objective: list[float] = field(default_factory=list)
    elbo: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    converged: bool = False
    iterations: int = 0
    posterior: Posterior | None = None
    hyper: Hyperparameters | None = None
    gate: torch.nn.Module | None = None  # the fitted gate itself (cached by the result)
    summary: dict[str, Any] = field(default_factory=dict)  # engine-specific, per restart

    def record(self, objective: float, elbo: float, seconds: float) -> None:
        self.objective.append(float(objective))
        self.elbo.append(float(elbo))
        self.times.append(float(seconds))


class Progress:
    """A progress bar over one restart's iterations (tqdm on stderr), shown on a terminal
    for long runs, or as the ``progress`` option says."""

    def __init__(self, total: int, desc: str, show: bool):
        self._bar = tqdm(total=total, desc=desc, disable=not show, leave=False)
        self._n = 0

    def update(self, objective: float | None = None) -> None:
        self._bar.update()
        self._n += 1
        if objective is not None and self._n % 10 == 0:
            self._bar.set_postfix(objective=f"{objective:.6g}")

    def close(self) -> None:
        self._bar.close()


def init_schedule(options: Options, prior_mean: torch.Tensor) -> list[str]:
    """The initialisation of each restart.

    ``init="auto"``: "prior" first when the prior means differ between experts (it breaks
    the symmetry), then "subsets"; given responsibilities make a single "given" run.
    """
    if options.responsibilities is not None:
        return ["given"]
    if isinstance(options.init, list | tuple):
        return list(options.init)
    if options.init != "auto":
        return [options.init] * options.n_init
    distinct = not torch.allclose(prior_mean, prior_mean[:1].expand_as(prior_mean))
    first = ["prior"] if distinct else []
    return (first + ["subsets"] * options.n_init)[: options.n_init]


def fresh_gate(gate: torch.nn.Module | None, seed: int, restart: int) -> torch.nn.Module | None:
    """A copy of ``gate``; from the second restart on, re-initialised under ``seed``."""
    if gate is None:
        return None
    gate = copy.deepcopy(gate)
    if restart > 0:
        device = next(gate.parameters()).device
        gate = gate.cpu()  # re-initialised from the CPU generator: the same on every device
        with torch.random.fork_rng(devices=[]), torch.device("cpu"):
            torch.manual_seed(seed)
            for module in gate.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        gate = gate.to(device)
    return gate


class Engine:
    """Base class of the inference engines (the template method is :meth:`fit`).

    Subclasses set :attr:`name`, :attr:`declared` (their own options; the shared ones are
    :data:`pyro_moe.engines.options.COMMON`) and implement :meth:`run_fit` (a variational
    engine subclasses :class:`Variational`, which implements it, and implements one
    restart instead).
    """

    name: ClassVar[str] = ""
    declared: ClassVar[Mapping[str, Option]] = {}
    aliases: ClassVar[Mapping[str, str]] = {}
    #: what one iteration is, for messages ("iterations", "steps")
    unit: ClassVar[str] = "iterations"
    #: its objective is an ELBO whose fixed points the search can compare (not so for MCMC)
    variational: ClassVar[bool] = True

    @classmethod
    def options(cls, given: Mapping[str, Any]) -> Options:
        """Validate ``given`` against the shared and this engine's declared options."""
        return resolve(cls.name, cls.declared, given, aliases=cls.aliases)

    def __init__(
        self,
        model: Model,
        X: torch.Tensor,
        y: torch.Tensor,
        config: Config,
        options: Options,
        *,
        search: SearchPolicy | bool | None = None,
    ):
        # options a model file may default (gate_method), where the call left them None
        options = with_file_defaults(options, self.declared, model.settings, str(model.path))
        self.model, self.X, self.y, self.config, self.options = model, X, y, config, options
        #: after the restarts, search the fixed points (:meth:`search_fixed_points`) by this
        #: policy (None: no search); an engine that is not :attr:`variational` passes it to
        #: the fit it makes inside
        self.search = as_search_policy(search)

    def show_progress(self) -> bool:
        """Default of the ``progress`` option: on a terminal, for a large problem."""
        return sys.stderr.isatty() and self.X.shape[0] * self.config.experts > 10**6

    # ---- the template --------------------------------------------------------------
    def fit(self) -> FitResult:
        """Restarts from the schedule, the best final objective kept, one result.

        A numerical breakdown inside an engine (a failed Cholesky factorisation, a
        floating-point error) is one :class:`~pyro_moe.errors.NumericalError`; any other
        error raised inside the model file (its model, guide or gate, under any engine) is
        a :class:`~pyro_moe.errors.ModelFileError` naming the file and line.
        """
        try:
            result = self.run_fit()
            if self.search and self.variational and result.experts > 1:
                result = self.search_fixed_points(result)
            return result
        except PyroMoeError:
            raise
        except Exception as e:
            wrapped = model_file_error(self.model, e, f"under {self.name.upper()}")
            if wrapped is not None and not isinstance(e, torch.linalg.LinAlgError):
                raise wrapped from e
            if not isinstance(e, torch.linalg.LinAlgError | FloatingPointError | OverflowError):
                raise
            raise NumericalError(
                f"{self.name.upper()} broke down numerically ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}); the data may be degenerate "
                "(duplicated or collinear rows, a column of extreme values): check X and y, "
                "or fit fewer experts"
            ) from e

    def run_fit(self) -> FitResult:
        """The fit itself (restarts, chains, ...): one result (:meth:`result`)."""
        raise NotImplementedError

    def result(
        self,
        posterior: Posterior,
        hyper: Hyperparameters,
        history: History,
        learn: tuple[str, ...],
        restarts: list[dict[str, Any]],
        gate: torch.nn.Module | None,
        **extra: Any,
    ) -> FitResult:
        """The :class:`~pyro_moe.result.FitResult` of this engine on its model file and data
        (``extra``: engine-specific fields, e.g. a sampler's ``draws``)."""
        return FitResult(
            method=self.name, model_name=self.model.name, model_path=str(self.model.path),
            X=self.X, y=self.y, posterior=posterior, hyper=hyper, history=history,
            learn=learn, restarts=restarts, gate=gate, **extra,
        )  # fmt: skip


class Variational(Engine):
    """A variational engine: restarts from the schedule, the best final objective kept
    (:meth:`run_fit`), then the search over fixed points when asked.

    Subclasses implement :meth:`run` (one restart); they may override :meth:`prepare`
    (once per fit, before the restarts), :meth:`check` and :meth:`schedule_prior_mean`.
    """

    # ---- hooks ---------------------------------------------------------------------
    def prepare(self) -> None:
        """Work done once per fit, before the restarts (CAVI reads the model file)."""

    def schedule_prior_mean(self) -> torch.Tensor:
        """The prior means that decide ``init="auto"``'s first restart."""
        return self.config.prior_mean

    def check(self) -> None:
        """Checks of the options against the data (after :meth:`prepare`)."""

    def run(self, how: str, seed: int, restart: int, progress: Progress) -> Run:
        """One restart from initialisation ``how`` under ``seed``."""
        raise NotImplementedError

    def search_fixed_points(self, result: FitResult) -> FitResult:
        """:func:`pyro_moe.search.search` from ``result``, with refits of this engine from
        given responsibilities; one ConvergenceWarning at the end if the kept fit did not
        converge. ``result.search`` reports what it did."""
        given = dict(self.options)
        engine = type(self)

        def refit(R, max_iter=None):
            limit = {} if max_iter is None else {"max_iter": min(max_iter, self.options.max_iter)}
            opts = engine.options(
                {**given, "responsibilities": R, "n_init": 1, "init": "auto", **limit}
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                return engine(self.model, self.X, self.y, self.config, opts).fit()

        best, report = self.search.run(result, refit, seed=self.options.seed)
        if report.accepted and not best.converged:
            warnings.warn(
                f"{self.name.upper()} did not converge in max_iter={self.options.max_iter} "
                f"{self.unit} after the search moved an expert; raise max_iter",
                ConvergenceWarning,
                stacklevel=find_stack_level(),
            )
        best.search = dataclasses.asdict(report)
        return best

    def run_fit(self) -> FitResult:
        self.prepare()
        self.check()
        opts = self.options
        inits = init_schedule(opts, self.schedule_prior_mean())
        show = opts.progress if opts.progress is not None else self.show_progress()
        start = time.perf_counter()
        best: Run | None = None
        summaries: list[dict[str, Any]] = []
        for i, how in enumerate(inits):
            bar = Progress(opts.max_iter, f"{self.name.upper()} {i + 1}/{len(inits)}", show)
            try:
                run = self.run(how, opts.seed + i, i, bar)
            finally:
                bar.close()
            summaries.append(
                {
                    "init": how,
                    "seed": opts.seed + i,
                    "objective": run.objective[-1],
                    "iterations": run.iterations,
                    "converged": run.converged,
                    **run.summary,
                }
            )
            if best is None or run.objective[-1] > best.objective[-1]:
                best = run
        assert best is not None and best.posterior is not None and best.hyper is not None
        if not best.converged:
            warnings.warn(
                f"{self.name.upper()} did not converge in max_iter={opts.max_iter} {self.unit} "
                f"(tol={opts.tol}); raise max_iter or loosen tol",
                ConvergenceWarning,
                stacklevel=find_stack_level(),
            )
        history = History(
            objective=torch.tensor(best.objective, dtype=torch.float64, device="cpu"),
            elbo=torch.tensor(best.elbo, dtype=torch.float64, device="cpu"),
            time=torch.tensor(best.times, dtype=torch.float64, device="cpu"),
            iterations=best.iterations,
            wall_time=time.perf_counter() - start,
            converged=best.converged,
        )
        return self.result(
            best.posterior, best.hyper, history, tuple(sorted(self.config.learn)), summaries,
            best.gate,
        )  # fmt: skip


def closed_form_fit(
    run: Run,
    config: Config,
    log_r: torch.Tensor,
    q,
    *,
    alpha: torch.Tensor | None,
    qbeta: tuple[torch.Tensor, torch.Tensor] | None,
    e_beta,
    w0: torch.Tensor,
    A: torch.Tensor,
    mu: torch.Tensor | None,
    xi: torch.Tensor | None,
    rho: torch.Tensor | None,
    gate: torch.nn.Module | None,
) -> Run:
    """Fill ``run`` with the :class:`Posterior` and :class:`Hyperparameters` of a
    closed-form state (CAVI's, or natural-gradient SVI's): q(Z) from log r (N, C), q(W),
    q(pi) = Dir(alpha), q(beta) = Gamma(qbeta), E[beta], w0, A, mu, Xi, the noise share rho
    and the gate (handed over to the result, which caches it)."""
    like = config.prior_mean
    run.posterior = Posterior(
        # row-major: one (N, C) copy of a point-last log r, none of a row-major one
        responsibilities=log_r.exp() if log_r.is_contiguous() else log_r.contiguous().exp_(),
        mean=q.mean,
        cov=q.cov,
        alpha=alpha,
        noise_shape=qbeta[0] if qbeta is not None else None,
        noise_rate=qbeta[1] if qbeta is not None else None,
    )
    run.hyper = Hyperparameters(
        prior_mean=w0,
        prior_cov=A,
        noise_precision=torch.as_tensor(e_beta, dtype=like.dtype, device=like.device).reshape(
            config.noise_precision.shape
        ),
        concentration=mu if mu is not None else config.concentration,
        regularization_cov=xi,
        noise_bounds=config.noise_bounds,
        noise_weight=rho if gate is not None else None,
        gate_state=(
            {k: v.detach().clone() for k, v in gate.state_dict().items()}
            if gate is not None
            else None
        ),
        gate_hidden=config.gate_hidden,
        maps=config.maps,
        gate_prior_scale=config.gate_prior_scale if gate is not None else None,
    )
    run.gate = gate
    return run
