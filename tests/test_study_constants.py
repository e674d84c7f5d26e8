"""The study's setup (:mod:`pyro_moe.study.constants`): the prior choices as notebook 02
and the tests use them."""

from __future__ import annotations

import numpy as np

from pyro_moe.study import (
    CHOICES,
    DATASETS,
    PUBLISHED_S,
    ROWS,
    STUDY_PRIOR_MEAN,
    STUDY_XI,
)


def test_the_choices_are_the_notebooks_mapping():
    # the study's mixture of experts: one shared beta, a maximum-likelihood gate (not the
    # model file's regression defaults)
    study_gate = {"per_expert_noise": False, "gate_prior_scale": False, "gate_method": "lbfgs"}
    assert CHOICES["f1"] == {"model": "mixture_of_experts", "learn": "all", **study_gate}
    assert {k: CHOICES["f2"][k] for k in study_gate} == study_gate
    assert CHOICES["f2"]["model"] == "mixture_of_experts"
    assert CHOICES["f2"]["learn"] == ("noise_precision", "gate")
    assert np.allclose(CHOICES["f2"]["prior_mean"], [[0, 0, 0.1], [0, 0, 2]])
    assert CHOICES["f3"]["model"] == "regularized_experts"
    assert np.allclose(CHOICES["f3"]["regularization_cov"], [0.01, 0.01, 1.0])
    assert STUDY_PRIOR_MEAN == CHOICES["f3"]["prior_mean"] and STUDY_XI == (0.01, 0.01, 1.0)
    assert ROWS["f3 + noise expert"] == {**CHOICES["f3"], "noise_expert": True}
    assert "noise_expert" not in CHOICES["f3"]


def test_published_values_cover_every_data_set_and_choice():
    assert set(PUBLISHED_S) == set(DATASETS)
    for cells in PUBLISHED_S.values():
        assert set(cells) == set(CHOICES)
