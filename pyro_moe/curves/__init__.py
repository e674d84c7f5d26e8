"""The curve application: circles, conics and mixes of curve kinds from points or images.

Built on the core (:func:`pyro_moe.fit`, :class:`~pyro_moe.result.FitResult`,
:mod:`pyro_moe.selection`, :mod:`pyro_moe.search`) and on :mod:`pyro_moe.shapes` (images ->
points, curve kinds and their geometry, seeding, synthetic scenes; no Pyro), which the core
never imports:

* :mod:`pyro_moe.curves.design`: expert names, the curve layout over the monomials of a
  point, the design and the noise expert's support;
* :mod:`pyro_moe.curves.fitting`: :func:`fit_curves`, :func:`fit_circles`,
  :func:`fit_conics` (seeded start, the search with the plausible-curve rule);
* :mod:`pyro_moe.curves.result`: :class:`CurveFit`, the core result with its geometry;
* :mod:`pyro_moe.curves.selection`: :func:`select_curves`, :func:`curve_reports`;
* :mod:`pyro_moe.curves.uncertainty`: delta-method uncertainty of circles and conics;
* :mod:`pyro_moe.curves.distributed`: curve fits of points on a Dask cluster.
"""

from .fitting import fit_circles, fit_conics, fit_curves
from .result import CurveFit, load_fit
from .selection import CurveReport, curve_reports, select_circles, select_curves
from .uncertainty import circle_uncertainty, conic_uncertainty, curve_uncertainty

__all__ = [
    "CurveFit",
    "CurveReport",
    "circle_uncertainty",
    "conic_uncertainty",
    "curve_reports",
    "curve_uncertainty",
    "fit_circles",
    "fit_conics",
    "fit_curves",
    "load_fit",
    "select_circles",
    "select_curves",
]
