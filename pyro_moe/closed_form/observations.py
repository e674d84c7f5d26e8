"""Which observation model a file's ``y`` is, for the closed form.

:func:`read_observation` reads the traced sites of a model file and returns

* None: the Gaussian experts of :mod:`pyro_moe.closed_form.updates` (checked by
  :func:`pyro_moe.closed_form.sites.check_likelihood`);
* :class:`~pyro_moe.closed_form.robust.RobustExperts`: ``y`` is Normal and the file has
  exactly one more latent site in the data plate, a Gamma(c, c) with one constant c (its
  name is free): the Gamma scale mixture of a Student-t with nu = 2c, proved at random draws
  to enter ``y`` as its precision, y_i ~ N(w_k^T x_i, 1/(beta_k lambda_i))
  (:func:`~pyro_moe.closed_form.robust.robust_mismatch`);
* :class:`~pyro_moe.closed_form.logistic.LogisticExperts`: ``y`` is Bernoulli, proved at
  random draws to have logits w_k^T x_i (:func:`~pyro_moe.closed_form.logistic.logistic_mismatch`).

Anything else that is not the Gaussian's is refused by site name, as before. Both kinds
are read for the shared design only (no expert maps, no noise expert).
"""

from __future__ import annotations

from collections.abc import Mapping

import pyro.distributions as dist
import torch

from ..config import Config
from ..errors import NonConjugateError
from ..likelihood import unwrap
from ..model_file import Model
from ..parts import DATA_PLATE
from .logistic import LogisticExperts, logistic_mismatch
from .robust import RobustExperts, robust_mismatch

__all__ = ["Observation", "read_observation"]

Observation = RobustExperts | LogisticExperts


def _refuse(why: str) -> NonConjugateError:
    return NonConjugateError(
        f"CAVI cannot fit site 'y': {why}. Fit this file with method='svi', "
        "optimizer='adam' (Pyro's ELBO of the file itself) or method='nuts'."
    )


def _local_latents(sites: Mapping) -> list[str]:
    """Latent sites in the data plate other than z (a per-point latent)."""
    return [
        n
        for n, s in sites.items()
        if n != "z"
        and not s["is_observed"]
        and any(f.name == DATA_PLATE for f in s["cond_indep_stack"])
    ]


def _constant_gamma(fn) -> float | None:
    """c of a Gamma(c, c) whose concentration and rate are one and the same constant."""
    if not isinstance(fn, dist.Gamma):
        return None
    c, r = torch.as_tensor(fn.concentration), torch.as_tensor(fn.rate)
    c0 = c.reshape(-1)[0]
    if not (bool((c == c0).all()) and bool((r == c0).all())):
        return None
    return float(c0)


def read_observation(
    model: Model, X: torch.Tensor, y: torch.Tensor, config: Config, sites: Mapping
) -> Observation | None:
    """The observation model of the traced ``sites`` (module docstring), None for the
    Gaussian experts; a file that is neither the Gaussian nor one of these is left to the
    Gaussian checks, which refuse it by name."""
    node = sites.get("y")
    if node is None or not node["is_observed"]:
        return None
    fn = unwrap(node["fn"])
    local = _local_latents(sites)
    if isinstance(fn, dist.Bernoulli):
        if local or "noise_precision" in sites or "y_noise" in sites or config.maps is not None:
            raise _refuse(
                "Bernoulli experts are fitted in closed form with the gate or pi, w and z "
                "only (no noise precision, noise expert, expert maps or per-point latent)"
            )
        why = logistic_mismatch(model, X, y, config)
        if why is not None:
            raise _refuse(why)
        return LogisticExperts()
    if not isinstance(fn, dist.Normal) or len(local) != 1:
        return None
    name = local[0]
    c = _constant_gamma(unwrap(sites[name]["fn"]))
    if c is None:
        raise _refuse(
            f"the per-point latent site {name!r} is not a Gamma(nu/2, nu/2) scale weight "
            "(the Student-t's scale mixture)"
        )
    if config.maps is not None or "y_noise" in sites:
        raise _refuse(
            "robust experts are fitted in closed form without expert maps or a noise expert"
        )
    latent = sites["noise_precision"]["value"].shape if "noise_precision" in sites else None
    why = robust_mismatch(model, X, y, config, name, 2.0 * c, latent)
    if why is not None:
        raise _refuse(why)
    return RobustExperts(nu=2.0 * c, site=name)
