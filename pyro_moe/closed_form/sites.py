"""The site registry, and reading a model file for CAVI.

The model file is the single source of truth. :data:`SITES` says, for every sample site a
model file may have, which distribution CAVI can update in closed form, what that update
is, which term of the objective the site contributes, and which test proves the update
against Pyro's own ELBO or the objective's monotone ascent. It is what a newcomer reads to
learn "which update fits this site"; :func:`read_model` traces the model and checks every
site against it. A latent site it does not name is decided from the trace, not by its
name, by the conjugacy rule of :mod:`.conjugacy` (a conjugate hyperprior of w: an ARD
precision, a prior on w0_k, an inverse scale of A; a Gamma noise precision of y under any
name); a site that is neither, or not of its family, raises
:class:`~pyro_moe.errors.NonConjugateError` naming the site and its distribution, with
``method="svi"`` suggested: an edit is never silently ignored.

The equations are in ``docs/derivation.md``; the functions named in :data:`SITES` live in
:mod:`pyro_moe.closed_form.updates`.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import pyro.distributions as dist
import torch
from pyro.poutine.util import site_is_subsample

from .. import likelihood
from ..config import Config, gate_weights
from ..errors import ModelFileError, NonConjugateError
from ..likelihood import likelihood_mismatch, trace_model, unwrap
from ..model_file import Model
from . import updates as U
from .conjugacy import (
    WeightHyperprior,
    children,
    complete_conditional,
    family_of,
    read_hyperprior,
)
from .linearised import FactorisedPrior
from .observations import Observation, read_observation


@dataclass(frozen=True)
class Site:
    """One model-file site CAVI can fit: its conjugate family, its closed-form update,
    its term of the objective, and the tests that prove it."""

    name: str
    family: type
    role: str
    update: tuple[Callable, ...]
    objective: str
    tests: tuple[str, ...]


#: Every site CAVI knows, by name (``pyro_moe.parts`` writes them; the model files compose).
SITES: Mapping[str, Site] = MappingProxyType(
    {
        s.name: s
        for s in (
            Site(
                "w", dist.MultivariateNormal,
                "expert weights w_k ~ N(w0_k, A_k) (or Normal(w0_k, s_k).to_event(1): A_k diagonal)",
                (U.update_weights, U.update_prior_mean, U.update_prior_cov),
                "-KL(q(w_k) || p(w_k)), q(w_k) = N(m_k, B_k)  (weights_kl)",
                ("tests/test_pyro_elbo.py::test_closed_form_elbo_matches_pyro",
                 "tests/test_engines_natural.py::test_diagonal_gaussian_prior_is_conjugate",
                 "tests/test_errata.py::test_erratum_e_prior_cov_as_second_moment_is_wrong_for_nonzero_w0"),
            ),
            Site(
                "pi", dist.Dirichlet, "mixture weights pi ~ Dir(mu) (mixtures of models)",
                (U.dirichlet_expected_log,),
                "-KL(q(pi) || p(pi)), q(pi) = Dir(mu + N_k)  (dirichlet_kl)",
                ("tests/test_pyro_elbo.py::test_asymmetric_dirichlet_matches_pyro",),
            ),
            Site(
                "z", dist.Categorical, "assignments z_i ~ Cat(pi) or Cat(g(x_i))",
                (U.e_step, U.responsibilities),
                "sum_ik r_ik (log prior_ik - log r_ik)  (the entropy of q(Z))",
                ("tests/test_errata.py::test_erratum_a_published_qz_update_ignores_y_and_lowers_the_elbo",
                 "tests/test_cavi_monotone.py::test_objective_never_decreases"),
            ),
            Site(
                "y", dist.Normal, "observed targets y_i | z_i = k ~ N(w_k^T x_i, 1/beta)",
                (U.sufficient_stats, U.update_noise_precision),
                "sum_ik r_ik E log N(y_i | w_k^T x_i, 1/beta)  (likelihood.expected_log_densities)",
                ("tests/test_pyro_elbo.py::test_closed_form_elbo_matches_pyro",),
            ),
            Site(
                "noise_precision", dist.Gamma, "a latent noise precision beta ~ Gamma(a0, b0)",
                (U.update_noise_gamma,),
                "-KL(q(beta) || p(beta)), q(beta) = Gamma(a, b)  (gamma_kl)",
                ("tests/test_pyro_elbo.py::test_closed_form_elbo_matches_pyro_with_gamma_noise_prior",
                 "tests/test_model_file.py::test_gamma_noise_prior_fits_with_cavi"),
            ),
            Site(
                "prior_regularization", dist.MultivariateNormal,
                "observed w0_k - w0_k' ~ N(0, Xi) (the study's prior regularization)",
                (U.update_prior_mean,),
                "R(w0) = sum_{k != k'} log N(w0_k - w0_k' | 0, Xi)  (regularizer)",
                ("tests/test_errata.py::test_erratum_f_published_regularized_w0_update_lowers_the_objective",
                 "tests/test_errata.py::test_regularizer_identity_matches_the_sum_over_ordered_pairs"),
            ),
            Site(
                "y_noise", dist.Uniform,
                "observed targets of the noise expert, y_i | z_i = K ~ Uniform(lo, hi)",
                (U.e_step,),
                "sum_i r_iK log u, u = 1/(hi - lo)  (likelihood.noise_log_density)",
                ("tests/test_pyro_elbo.py::test_closed_form_elbo_matches_pyro_with_noise_expert",),
            ),
            Site(
                "gate_prior", dist.Normal,
                "the gate's weights observed under N(0, s^2) (MAP gate step)",
                (U.gate_log_prior,),
                "log p(V)  (gate_log_prior)",
                ("tests/test_pyro_elbo.py::test_closed_form_elbo_matches_pyro_with_a_gate_prior",
                 "tests/test_cavi_monotone.py::test_objective_never_decreases_with_the_gate_prior"),
            ),
        )
    }
)  # fmt: skip


@dataclass
class Conjugate:
    """What CAVI read from the model: structure and the prior values in the trace."""

    mixture: bool  # has pi ~ Dirichlet (mixture of models)
    gated: bool
    prior_mean: torch.Tensor  # (K, n) loc of w
    prior_cov: torch.Tensor  # (K, n, n) covariance of w
    concentration: torch.Tensor | None  # (K,)
    noise_precision: torch.Tensor | None  # beta used by y when it is not latent
    noise_prior: tuple[torch.Tensor, torch.Tensor] | None  # (a0, b0) of Gamma
    regularization_cov: torch.Tensor | None
    noise_log_density: torch.Tensor | None = None  # -log(hi - lo) of the noise expert
    gate_prior_scale: float | None = None  # s of p(V) = N(0, s^2 I) on the gate's weights
    #: a non-Gaussian factorised prior on w, for natural-gradient SVI's CVI step (None:
    #: w_k ~ N(w0_k, A_k)); only :func:`read_model` with ``linearise_w=True`` accepts one
    weight_factor: FactorisedPrior | None = None
    #: robust (Student-t) or logistic experts' local step and statistics
    #: (:func:`~pyro_moe.closed_form.observations.read_observation`); None: Gaussian experts
    observation: Observation | None = None
    #: conjugate hyperprior sites of w the file adds (an ARD precision, a prior on w0_k),
    #: found by the rule of :mod:`.conjugacy`, not by name (None: w_k ~ N(w0_k, A_k) fixed)
    hyperprior: WeightHyperprior | None = None


def _diagonal_gaussian(fn, base) -> bool:
    """``Normal(loc, scale).to_event(1)`` over the n weights: p(w_k) = N(w0_k, diag(s_k^2)),
    a MultivariateNormal with a diagonal covariance (the same closed forms)."""
    return isinstance(base, dist.Normal) and len(fn.event_shape) == 1


def _refuse(site: str, fn, why: str) -> NonConjugateError:
    return NonConjugateError(
        f"CAVI cannot fit site {site!r}: its distribution is {type(fn).__name__}, {why}. "
        f"Fit this model with method='svi' (SVI handles any prior)."
    )


def _factorised(fn, base) -> bool:
    """A univariate non-Gaussian density over the n weights, ``base.to_event(1)`` (Laplace,
    Student-t, ...): what natural-gradient SVI linearises (:mod:`.linearised`)."""
    return len(fn.event_shape) == 1 and tuple(base.event_shape) == ()


#: :func:`read_model`'s results kept by the fingerprint of what they are a function of
#: (the model file's text, the data, the config): its four Pyro traces on all rows were most
#: of a small fit's fixed cost (8 of 12.5 ms at N = 1000, benchmarks/results/speed.md),
#: paid again by every refit of the search and every fit of the same data
READ_CACHE_SIZE = 64
#: data up to this many elements of X and y are fingerprinted (hashed, ~1 ms per 10^6
#: elements); larger fits, or data off the CPU, read the file every time
READ_CACHE_ELEMENTS = 1 << 22
_read_cache: OrderedDict[bytes, Conjugate] = OrderedDict()
#: the batched reading (one trace at the stacked draws) holds D x N x C elements per tensor
#: of y's density: above this many the draws are traced one by one (their memory O(N C),
#: the per-row work, not a trace's fixed cost, the time)
BATCHED_ELEMENTS = 1 << 22
#: the site signature of a file's batched reading (:func:`_read_batched`) by its structure
#: key (:func:`_structure_key`: the file, the config's settings and shapes, not the data),
#: False where the batched reading did not agree with the full one
_plans: OrderedDict[bytes, tuple | bool] = OrderedDict()
_read_lock = threading.Lock()  # fits may run in threads (a Dask worker's, a caller's)


def _hash_tensor(h, t: torch.Tensor) -> None:
    """Feed a CPU tensor's dtype, shape and bytes to the hash ``h``."""
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(np.ascontiguousarray(t.detach().numpy()).reshape(-1).view(np.uint8))


def _hash_config_tensor(h, t: torch.Tensor, values: bool) -> bool:
    """Feed a tensor of the config to ``h``: its dtype, shape and device, or (``values``)
    its bytes (:func:`_hash_tensor`); False for values off the CPU."""
    if not values:
        h.update(f"{t.dtype}{tuple(t.shape)}{t.device.type}".encode())
        return True
    if t.device.type != "cpu":
        return False
    _hash_tensor(h, t)
    return True


def _hash_config(h, config: Config, values: bool) -> bool:
    """Feed every field of ``config`` to ``h``: tensors by dtype, shape and (``values``)
    bytes, the gate by its structure (and state), the rest by value. False when a field
    cannot be described (a tensor off the CPU with ``values``, an unknown type)."""
    for f in dataclasses.fields(config):
        v = getattr(config, f.name)
        h.update(f.name.encode())
        if torch.is_tensor(v):
            if not _hash_config_tensor(h, v, values):
                return False
        elif isinstance(v, torch.nn.Module):
            h.update(f"{type(v).__module__}.{type(v).__qualname__}|{v!r}".encode())
            for k, t in v.state_dict().items():
                h.update(k.encode())
                if not _hash_config_tensor(h, t, values):
                    return False
        elif isinstance(v, frozenset):
            h.update(repr(sorted(v)).encode())
        elif v is None or isinstance(v, int | float | str | bool):
            h.update(repr(v).encode())
        else:
            return False
    return True


def _fingerprint(model: Model, X, y, config: Config, linearise_w: bool) -> bytes | None:
    """A digest of everything :func:`read_model` reads (the file's text, X, y, every field
    of ``config``, the gate's structure and state), or None when it is not kept (no text,
    data off the CPU or larger than :data:`READ_CACHE_ELEMENTS`, a gate that cannot be
    described)."""
    if model.text is None or X.device.type != "cpu" or X.numel() + y.numel() > READ_CACHE_ELEMENTS:
        return None
    if any(t.dtype not in (torch.float32, torch.float64) for t in (X, y)):
        return None
    h = hashlib.blake2b(digest_size=24)
    h.update(f"{model.name}|{model.path}|{model.text.sha256}|{linearise_w}".encode())
    for t in (X, y):
        _hash_tensor(h, t)
    return h.digest() if _hash_config(h, config, values=True) else None


def _structure_key(model: Model, X, y, config: Config, linearise_w: bool) -> bytes | None:
    """A digest of what a file's structure may depend on besides the data's values: the
    file's text, the data's dtype, device and width, the config's settings and its tensors'
    shapes (not their values, not the number of rows); None when not kept (no text, a
    config field that cannot be described)."""
    if model.text is None:
        return None
    h = hashlib.blake2b(digest_size=24)
    h.update(f"{model.name}|{model.path}|{model.text.sha256}|{linearise_w}".encode())
    h.update(f"{X.dtype}|{y.dtype}|{X.device.type}|{tuple(X.shape[1:])}".encode())
    return h.digest() if _hash_config(h, config, values=False) else None


def _copied(conj: Conjugate) -> Conjugate:
    """A copy of ``conj`` whose tensors the caller may keep (a result holds some)."""

    def c(v):
        if torch.is_tensor(v):
            return v.clone()
        if isinstance(v, tuple):
            return tuple(c(t) for t in v)
        return v

    return dataclasses.replace(
        conj, **{f.name: c(getattr(conj, f.name)) for f in dataclasses.fields(conj)}
    )


def read_model(
    model: Model, X: torch.Tensor, y: torch.Tensor, config: Config, *, linearise_w: bool = False
) -> Conjugate:
    """Trace ``model.model`` on the data it will fit (every row: a model that fails on
    some rows fails here) and check every site against the closed forms.

    ``linearise_w=True`` (natural-gradient SVI) also accepts a factorised non-Gaussian
    prior on ``w`` (:func:`_factorised`), returned as ``weight_factor`` with w0 its ``loc``
    (``config.prior_mean`` without one) and A ``config.prior_cov`` (the Gaussian the
    fit starts from); w0 and A cannot then be learned (no closed-form M-step).

    A pure function of the file's text, the data and the config: its result is kept by their
    fingerprint (:data:`READ_CACHE_SIZE` of them, :func:`_fingerprint`), so the search's
    refits and repeated fits of the same data do not trace the file again. A file that
    fails is read again every time.

    New data of a file read before (the same config settings and shapes,
    :func:`_structure_key`) is read from one trace (:func:`_read_batched`): the file run
    once at the likelihood check's draws stacked (:func:`pyro_moe.likelihood.batched_draws`),
    its sites the same as the first reading's, every site read and y's density checked on
    every row at every draw. The first reading of a structure (:func:`_read_model`) is the
    site trace and that batched trace (:func:`_learn_plan`); the likelihood check's draws
    one trace each (four traces in all) where the batched trace does not go through. Those
    readings' refusals are the messages: anything the batched reading does not accept
    (another structure, a failure, a mismatch) is read in full."""
    try:
        key = _fingerprint(model, X, y, config, linearise_w)
    except (TypeError, RuntimeError):  # a tensor numpy cannot read (bfloat16, ...)
        key = None
    if key is not None:
        with _read_lock:
            kept = _read_cache.get(key)
            if kept is not None:
                _read_cache.move_to_end(key)
        if kept is not None:
            return _copied(kept)
    batch = X.shape[0] * config.components * likelihood.LIKELIHOOD_DRAWS
    skey = _structure_key(model, X, y, config, linearise_w) if batch <= BATCHED_ELEMENTS else None
    with _read_lock:
        plan = _plans.get(skey) if skey is not None else None
    conj = _read_batched(model, X, y, config, linearise_w, plan) if plan else None
    if conj is None:  # the full reading, which learns the plan of a structure not seen
        conj = _read_model(model, X, y, config, linearise_w, skey if plan is None else None)
    if key is not None and conj.weight_factor is None:
        with _read_lock:
            _read_cache[key] = _copied(conj)
            while len(_read_cache) > READ_CACHE_SIZE:
                _read_cache.popitem(last=False)
    return conj


def _sample_sites(trace) -> dict:
    """The trace's sample sites (not its subsample sites), by name, in the file's order."""
    return {
        n: s for n, s in trace.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)
    }


def _read_model(
    model: Model, X, y, config: Config, linearise_w: bool, skey: bytes | None = None
) -> Conjugate:
    """:func:`read_model` itself: the site trace (the latents drawn from their priors), the
    checks, and the likelihood check: with ``skey`` (a structure not read before) by one
    batched trace when it goes through, which also keeps the plan of that structure
    (:func:`_learn_plan`), else by the likelihood check's own traces, one per draw."""
    if config.gate is not None:  # pyro.module would rebind the gate's parameters
        config = copy.deepcopy(config)
    trace = trace_model(model, X, y, config)
    sites = _sample_sites(trace)
    # robust / logistic experts: their y and per-point site are read there
    observation = read_observation(model, X, y, config, sites)
    conj, beta_site, sites = _read_sites(
        model, X, y, config, linearise_w, trace, sites, observation
    )
    if observation is None:  # the others are proved by read_observation
        learned = skey is not None and _learn_plan(
            model, X, y, config, linearise_w, conj, sites, beta_site, skey
        )
        if not learned:
            check_likelihood(model, X, y, config, conj, sites, beta_site)
    return conj


class _NotPlain(Exception):
    """A site the batched reading does not read (a hyperprior, a noise precision under
    another name): the file is read by :func:`_read_model`."""


def _signature(sites: Mapping, N: int) -> tuple:
    """What the batched reading of a file must find again on new data: every sample site's
    name, whether observed, its distribution's wrappers and family, and the shapes of its
    distribution, value and plates (the number of rows N written as "N")."""

    def shape(s) -> tuple:
        return tuple("N" if d == N else int(d) for d in s)

    def chain(fn) -> tuple:
        out = [type(fn).__name__]
        while hasattr(fn, "base_dist"):
            fn = fn.base_dist
            out.append(type(fn).__name__)
        return tuple(out)

    return tuple(
        (
            name,
            bool(s["is_observed"]),
            chain(s["fn"]),
            shape(s["fn"].batch_shape),
            shape(s["fn"].event_shape),
            shape(torch.as_tensor(s["value"]).shape),
            tuple((f.name, f.dim, "N" if f.size == N else f.size) for f in s["cond_indep_stack"]),
        )
        for name, s in sites.items()
    )


def _batched(model: Model, X, y, config: Config, linearise_w: bool):
    """(the Conjugate, the site signature) of one trace at the stacked draws, the
    likelihood proved on every row at every draw; raises where it does not go through."""
    if config.gate is not None:  # pyro.module would rebind the gate's parameters
        config = copy.deepcopy(config)
    latents, beta = likelihood.batched_draws(config, X)
    trace = trace_model(model, X, y, config, replay=latents)
    sites = _sample_sites(trace)
    conj, _, _ = _read_sites(model, X, y, config, linearise_w, trace, sites, None, plain=True)
    if conj.weight_factor is not None:
        raise _NotPlain("w")
    if "noise_precision" not in sites:  # beta held fixed: the one CAVI will use, per draw
        beta = conj.noise_precision.to(X.dtype)
        beta = beta.expand(latents["w"].shape[:-1]) if beta.dim() == 1 else beta
    why = likelihood.density_mismatch(
        sites.get("y"), X, y, latents["w"], latents["z"], beta, config.maps, pointwise=True
    )
    if why is not None:
        raise _NotPlain("y")
    return conj, _signature(sites, X.shape[0])


def _read_batched(model: Model, X, y, config: Config, linearise_w: bool, plan: tuple):
    """The Conjugate of new data read from one trace (:func:`_batched`) when its sites are
    the ``plan``'s (those of the file's first, full reading); None (read it in full) when
    anything differs or fails: the full reading then refuses, or reads, with its own
    messages."""
    try:
        conj, signature = _batched(model, X, y, config, linearise_w)
    except Exception:  # a refusal, a failure or another structure: the full reading decides
        return None
    return conj if signature == plan else None


def _learn_plan(
    model: Model, X, y, config: Config, linearise_w: bool, conj: Conjugate, sites: Mapping,
    beta_site: str, skey: bytes,
) -> bool:  # fmt: skip
    """Prove the likelihood of a Gaussian file read in full (no robust or logistic
    observation, hyperprior, factorised prior or renamed beta) by its batched reading
    (:func:`_batched`) on the same data, and keep that reading's signature as the plan of
    the structure ``skey``: True when y's density is the closed form's in the site trace
    itself (at the latents it drew from their priors) and at every stacked draw, and the
    batched reading gives the same Conjugate. False (the plan kept as False: always read in
    full) when anything differs; the caller then proves the likelihood draw by draw."""
    plan: tuple | bool = False
    if (
        conj.observation is None
        and conj.hyperprior is None
        and conj.weight_factor is None
        and beta_site == "noise_precision"
    ):
        latent = sites.get("noise_precision")
        beta = conj.noise_precision if latent is None else latent["value"]
        own = likelihood.density_mismatch(
            sites["y"], X, y, sites["w"]["value"], sites["z"]["value"], beta, config.maps,
            pointwise=True,
        )  # fmt: skip
        try:
            batched, signature = _batched(model, X, y, config, linearise_w) if own is None else (
                None, None)  # fmt: skip
        except Exception:  # a refusal, a failure: the draws one by one decide
            batched = None
        if batched is not None and _same(batched, conj):
            plan = signature
    with _read_lock:
        _plans[skey] = plan
        while len(_plans) > READ_CACHE_SIZE:
            _plans.popitem(last=False)
    return plan is not False


def _same(a: Conjugate, b: Conjugate) -> bool:
    """Every field of two Conjugates equal (tensors exactly, in dtype and shape)."""

    def eq(u, v) -> bool:
        if torch.is_tensor(u) or torch.is_tensor(v):
            return (
                torch.is_tensor(u)
                and torch.is_tensor(v)
                and u.dtype == v.dtype
                and u.shape == v.shape
                and bool(torch.equal(u, v))
            )
        if isinstance(u, tuple) and isinstance(v, tuple):
            return len(u) == len(v) and all(eq(p, q) for p, q in zip(u, v, strict=True))
        return u == v

    return all(eq(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))


def _read_sites(
    model: Model, X, y, config: Config, linearise_w: bool, trace, sites: Mapping,
    observation: Observation | None, *, plain: bool = False,
) -> tuple[Conjugate, str, Mapping]:  # fmt: skip
    """The Conjugate of the traced ``sites`` (every site checked against the registry and
    the conjugacy rule, the priors read), the name of a latent beta's site, and the sites
    with that site also under the name "noise_precision".
    ``plain``: a latent site the registry does not name raises :class:`_NotPlain`."""
    own = () if observation is None else ("y", getattr(observation, "site", "y"))
    unseen = []  # latent sites the registry does not name: the conjugacy rule decides them
    for name, site in sites.items():
        if name in own:
            continue
        fn = unwrap(site["fn"])
        if name not in SITES and not site["is_observed"] and "w" in sites:
            if plain:
                raise _NotPlain(name)
            unseen.append(name)
            continue
        if name not in SITES:
            raise NonConjugateError(
                f"CAVI cannot fit site {name!r} ({type(fn).__name__}): it knows only the sites "
                f"{', '.join(SITES)} of the built-in models (pyro_moe.closed_form.sites.SITES). "
                "Fit this model with method='svi'."
            )
        family = SITES[name].family
        if name == "w" and _diagonal_gaussian(site["fn"], fn):
            continue  # N(w0, diag(s^2)) written Normal(...).to_event(1): the MVN's family
        if name == "w" and linearise_w and _factorised(site["fn"], fn):
            continue  # a Laplace, Student-t, ... prior: linearised by CVI
        if not isinstance(fn, family):
            raise _refuse(
                name,
                fn,
                f"which has no closed-form (conjugate) update; CAVI needs {family.__name__}",
            )
    beta_site = "noise_precision"
    if unseen and "noise_precision" not in sites:  # a latent beta under another name
        beta_site = _noise_alias(model, X, y, config, trace, sites, unseen)
        if beta_site != "noise_precision":
            unseen.remove(beta_site)
            sites = {**sites, "noise_precision": sites[beta_site]}
    for required in ("w", "z", "y"):
        if required not in sites:
            raise ModelFileError(f"model {model.name!r} has no sample site {required!r}")
    if not sites["y"]["is_observed"]:
        raise ModelFileError(f"site 'y' of model {model.name!r} is not observed")
    if "prior_regularization" in sites and not sites["prior_regularization"]["is_observed"]:
        raise _refuse(
            "prior_regularization", sites["prior_regularization"]["fn"], "but it is not observed"
        )

    K, n = config.experts, config.features
    w = unwrap(sites["w"]["fn"])
    factor = None
    if not isinstance(w, dist.MultivariateNormal | dist.Normal):
        loc = getattr(w, "loc", None)
        prior_mean = (config.prior_mean if loc is None else loc).expand(K, n).detach().clone()
        for name in ("prior_mean", "prior_cov"):
            if config.learns(name):
                raise _refuse(
                    "w", w, f"a prior with no closed-form M-step for the learned {name!r}; "
                    "hold it fixed (learn=...) or fit with optimizer='adam'",
                )  # fmt: skip
        factor = FactorisedPrior(w, prior_mean.to(X.dtype))
        prior_cov = config.prior_cov.expand(K, n, n).detach().clone()
    elif isinstance(w, dist.MultivariateNormal):
        prior_mean = w.loc.expand(K, n).detach().clone()
        prior_cov = w.covariance_matrix.expand(K, n, n).detach().clone()
    else:  # a diagonal Gaussian: A_k = diag(s_k^2)
        prior_mean = w.loc.expand(K, n).detach().clone()
        prior_cov = torch.diag_embed(w.scale.expand(K, n) ** 2).detach().clone()
    _check_learned(config, "prior_mean", prior_mean)
    _check_learned(config, "prior_cov", prior_cov)
    hyper = None
    if unseen:  # ---- conjugate hyperpriors found from the trace (closed_form.conjugacy) ----
        hyper, prior_mean, prior_cov = _hyperprior(model, X, y, config, trace, unseen, factor)

    concentration = None
    if "pi" in sites:
        concentration = unwrap(sites["pi"]["fn"]).concentration.detach().to(X.dtype).clone()
    noise_prior = noise_precision = None
    if "noise_precision" in sites:
        g = unwrap(sites["noise_precision"]["fn"])
        shape = (K,) if config.per_expert_noise else ()
        noise_prior = tuple(
            p.detach()
            .to(X.dtype)
            .reshape(-1)
            .expand(int(torch.Size(shape).numel()))
            .reshape(shape)
            .clone()
            for p in (g.concentration, g.rate)
        )
    elif observation is not None:  # beta checked by the observation's draws
        beta = config.noise_precision.detach()
        noise_precision = (beta if observation.has_noise else torch.ones_like(beta)).clone()
    elif config.per_expert_noise:
        noise_precision = _per_expert_precision(sites, config)
    else:
        scale = unwrap(sites["y"]["fn"]).scale
        noise_precision = (1.0 / scale.reshape(-1)[0] ** 2).detach().clone()
        _check_learned(config, "noise_precision", noise_precision)
    xi = None
    if "prior_regularization" in sites:
        reg = unwrap(sites["prior_regularization"]["fn"])
        if not torch.all(reg.loc == 0):
            raise _refuse(
                "prior_regularization", reg, "with a non-zero mean, which CAVI does not implement"
            )
        xi = reg.covariance_matrix.reshape(-1, n, n)[0].detach().clone()
    elif config.regularization_cov is not None and K > 1:
        raise ModelFileError(
            f"model {model.name!r} was given Xi but has no 'prior_regularization' site"
        )
    gate_prior_scale = (
        _gate_prior_scale(sites["gate_prior"], config) if "gate_prior" in sites else None
    )
    noise_log_density = None
    if "y_noise" in sites:
        u = unwrap(sites["y_noise"]["fn"])
        bounds = torch.stack([u.low.reshape(-1)[0], u.high.reshape(-1)[0]]).detach().to(X.dtype)
        noise_log_density = likelihood.noise_log_density(bounds)
    conj = Conjugate(
        noise_log_density=noise_log_density,
        gate_prior_scale=gate_prior_scale,
        mixture="pi" in sites,
        gated=config.gate is not None,
        prior_mean=prior_mean,
        prior_cov=prior_cov,
        concentration=concentration,
        noise_precision=noise_precision,
        noise_prior=noise_prior,
        regularization_cov=xi if xi is not None else config.regularization_cov,
        weight_factor=factor,
        hyperprior=hyper,
        observation=observation,
    )
    return conj, beta_site, sites


def _noise_alias(model: Model, X, y, config: Config, trace, sites, unseen) -> str:
    """The site of a latent noise precision the registry does not name (``beta ~ Gamma``
    written straight into the file): a Gamma site whose only child is ``y``, found
    conjugate by the rule (:func:`.conjugacy.complete_conditional`) and shaped as the
    config's beta (() shared, (K,) per expert). "noise_precision" when there is none."""
    for name in unseen:
        if family_of(sites[name]["fn"]) != "gamma":
            continue
        values = {n: s["value"].detach() for n, s in sites.items() if not s["is_observed"]}
        gen = torch.Generator().manual_seed(0)
        if children(model, X, y, config, values, name, gen) != ("y",):
            continue
        eta, _ = complete_conditional(model, X, y, config, name, values)
        shape = (config.experts,) if config.per_expert_noise else ()
        if eta is None or sites[name]["value"].shape != torch.Size(shape):
            raise _refuse(
                name, unwrap(sites[name]["fn"]),
                "a noise precision of y whose complete conditional is not a Gamma "
                f"of the config's shape {shape} (per_expert_noise={config.per_expert_noise})",
            )  # fmt: skip
        return name
    return "noise_precision"


def _hyperprior(model: Model, X, y, config: Config, trace, names, factor):
    """The hyperprior sites ``names`` read by :func:`.conjugacy.read_hyperprior` (or its
    refusal naming the site), and the prior of w the fit starts from: E[w0_k] and
    E[Lambda_k]^{-1} under the hyperpriors' own priors."""
    if factor is not None:
        raise _refuse(names[0], trace.nodes[names[0]]["fn"], "beside a non-Gaussian prior on w")
    hyper = read_hyperprior(model, X, y, config, trace, tuple(names))
    # w0 learned beside Gamma hyperpriors has its M-step (WeightHyperprior.with_prior_mean);
    # beside a Gaussian prior on the mean, or A learned beside a hyperprior, it has none here
    for name in ("prior_mean", "prior_cov"):
        if config.learns(name) and (name == "prior_cov" or hyper.gauss_names):
            raise NonConjugateError(
                f"the file gives w a latent hyperprior (site {names[0]!r}) and the fit learns "
                f"{name!r} as a point estimate too; hold it fixed (learn=...)"
            )
    st = hyper.start()
    return hyper, hyper.mean_moments(st)[0].clone(), U.precision_of(hyper.expected_precision(st))


def check_likelihood(
    model: Model, X, y, config: Config, conj: Conjugate, sites: Mapping,
    beta_site: str = "noise_precision",
) -> None:  # fmt: skip
    """Prove that the file's observation site ``y`` is the closed form's likelihood, not
    just of its family (:func:`likelihood_mismatch` at the beta CAVI will use, ``conj``):
    an edited mean (``(w^T x)**3``), an x-dependent or edited scale, anything the closed
    form would silently replace by the linear Gaussian model, raises
    :class:`~pyro_moe.errors.NonConjugateError` naming ``y``."""
    latent = sites["noise_precision"]["value"].shape if "noise_precision" in sites else None
    why = likelihood_mismatch(
        model, X, y, config, conj.noise_precision, latent_beta=latent, beta_site=beta_site
    )
    if why is not None:
        raise NonConjugateError(
            f"CAVI cannot fit site 'y': {why}; its location or scale is not the linear "
            "model's, so the closed-form engines would fit another model. Fit this file with "
            "method='svi', optimizer='adam' (Pyro's ELBO of the file itself) or method='nuts'."
        )


def _gate_prior_scale(site, config: Config) -> float:
    """s of the ``gate_prior`` site: Normal(0, s), one s for every entry, observed at the
    gate's weights (:func:`pyro_moe.config.gate_weights`) as they are."""
    fn = unwrap(site["fn"])
    if not site["is_observed"]:
        raise _refuse("gate_prior", fn, "but it is not observed")
    if config.gate is None:
        raise ModelFileError("the model has a 'gate_prior' site but no gate network")
    V = torch.cat([p.detach().reshape(-1) for p in gate_weights(config.gate)])
    loc, scale = torch.broadcast_tensors(fn.loc, fn.scale)
    value = site["value"].detach()
    if value.shape != V.shape or not torch.allclose(value.to(V.dtype), V, rtol=1e-10, atol=1e-12):
        raise _refuse(
            "gate_prior", fn, "but it is not observed at the gate's weights (parts.gate_prior)"
        )
    if not torch.all(loc == 0) or not torch.all(scale == scale.reshape(-1)[0]):
        raise _refuse(
            "gate_prior",
            fn,
            "with a non-zero mean or unequal scales, which CAVI does not implement",
        )
    return float(scale.reshape(-1)[0])


def _per_expert_precision(sites, config: Config) -> torch.Tensor:
    """beta_k of a model with one noise precision per expert: ``config.noise_precision``,
    checked against the scale the traced ``y`` site gives each point, 1/sqrt(beta_{z_i})."""
    beta = config.noise_precision.detach()
    z = sites["z"]["value"].reshape(-1)
    scale = unwrap(sites["y"]["fn"]).scale.detach().reshape(-1)
    gauss = z < config.experts  # the noise expert's points have no Gaussian scale
    if scale.numel() == z.numel() and bool(gauss.any()):
        want = beta[z[gauss]].rsqrt()
        if not torch.allclose(scale[gauss], want, rtol=1e-10, atol=1e-12):
            raise NonConjugateError(
                "the model's y scale is not 1/sqrt(beta_k) of each point's expert, so CAVI's "
                "closed-form noise update does not apply; use method='svi'"
            )
    return beta.clone()


def _check_learned(config: Config, name: str, traced: torch.Tensor) -> None:
    """A learned hyperparameter must reach its distribution unchanged for CAVI's M-step."""
    if config.learns(name) and not torch.allclose(
        traced, getattr(config, name), rtol=1e-10, atol=1e-12
    ):
        raise NonConjugateError(
            f"the model transforms the learned hyperparameter {name!r} before using it, so CAVI's "
            f"closed-form M-step does not apply; hold it fixed (learn=...) or use method='svi'"
        )
