"""The closed-form mathematics both engines share (``docs/derivation.md``).

* :mod:`~pyro_moe.closed_form.updates`: the coordinate-ascent updates, one function per
  equation, the fused E-step and the closed-form ELBO;
* :mod:`~pyro_moe.closed_form.sites`: the site registry — for each model-file site its
  conjugate family, its update, its objective term and the test that proves it — and
  :func:`~pyro_moe.closed_form.sites.read_model`, which reads a model file's prior values
  from its trace and refuses a non-conjugate site by name;
* :mod:`~pyro_moe.closed_form.linearised`: a non-Gaussian factorised prior on w (Laplace,
  Student-t) linearised for natural-gradient SVI's CVI step (Gauss-Hermite expectations);
* :mod:`~pyro_moe.closed_form.robust`, :mod:`~pyro_moe.closed_form.logistic`: Student-t
  experts by the Gamma scale mixture and logistic experts by the Jaakkola-Jordan bound,
  their local steps (q(lambda) or xi with q(Z)) and reweighted statistics;
  :mod:`~pyro_moe.closed_form.observations`: which of them a file's ``y`` is;
* :mod:`~pyro_moe.closed_form.init`: initial responsibilities q(Z);
* :mod:`~pyro_moe.closed_form.bridge`: between Pyro's guide parameters and the closed
  form (the analytic objective at any guide parameters).

CAVI iterates these updates; SVI starts from them and scores its final state with the
closed-form objective.
"""
