"""The study's computational experiment, apart from the core: Grabovoy & Strijov, "Prior
distribution choices for a mixture of experts", re-run end to end by :func:`reproduce`.

Three parts, each optional (``parts=``):

1. **The S table**: the study's circle error S (:func:`~pyro_moe.shapes.circle_error`, the
   sum over the two circles of the squared error of (x0, y0, r), Hungarian-matched) for the
   prior choices f1/f2/f3 (:data:`CHOICES`) and an extra row "f3 + noise expert", on
   Synthetic 1–3, median and spread over seeds, by CAVI and by SVI, next to the published
   values (:data:`PUBLISHED_S`) and the least-squares floor with the true labels.
2. **The noise sweep**: S and the ELBO per point against the share of uniform noise
   (:func:`~pyro_moe.shapes.noise_sweep`), CAVI, for every row of :data:`ROWS`.
3. **The eye image**: f2, f3 and f3 + noise expert on the study's eye points
   (:func:`~pyro_moe.shapes.study_eye_points`: standardized per axis, y up), when the
   study's data folder is present or an eye mask is given.

Everything is written atomically to ``out``: ``report.md``, ``results.json``,
``sweep.png`` and ``eye_fit.png``.

Modules: :mod:`~pyro_moe.study.constants` (the study's data sets, priors, prior choices,
published numbers and the run's sizes), :mod:`~pyro_moe.study.runner` (fitting and
scheduling, :func:`reproduce`), :mod:`~pyro_moe.study.stats` (summaries over seeds),
:mod:`~pyro_moe.study.report` (tables, JSON, ``report.md``), :mod:`~pyro_moe.study.figures`.

    >>> from pyro_moe.study import reproduce, main_table
    >>> report = reproduce(quick=True)          # doctest: +SKIP
    >>> print(main_table(report))               # doctest: +SKIP
"""

from .constants import (
    CAVI_SETTINGS,
    CHOICES,
    DATASETS,
    PUBLISHED_S,
    ROWS,
    STUDY_PRIOR_MEAN,
    STUDY_XI,
    SVI_SETTINGS,
)
from .report import Report, main_table
from .runner import fit_choice, reproduce

__all__ = [
    "CAVI_SETTINGS",
    "CHOICES",
    "DATASETS",
    "PUBLISHED_S",
    "ROWS",
    "STUDY_PRIOR_MEAN",
    "STUDY_XI",
    "SVI_SETTINGS",
    "Report",
    "fit_choice",
    "main_table",
    "reproduce",
]
