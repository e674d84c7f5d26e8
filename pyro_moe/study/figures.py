"""The report's figures, rendered to PNG bytes: S and ELBO per point against the noise
level, and the fits over the eye points."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from .constants import SWEEP_NOISE_POINTS, SWEEP_ROWS

__all__ = ["eye_figure", "sweep_figure"]


def sweep_figure(sweep: list[dict[str, Any]]) -> bytes:
    """S (median, IQR band, log scale) and median ELBO per point against the noise level,
    from the sweep's summary rows (``Report.sweep``: choice, level, S_summary,
    elbo_summary)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    ax_s, ax_l = fig.subplots(1, 2)
    for i, choice in enumerate(SWEEP_ROWS):
        rows = [r for r in sweep if r["choice"] == choice]
        lv = np.array([r["level"] for r in rows])
        med = np.array([r["S_summary"]["median"] for r in rows])
        q25 = np.array([r["S_summary"]["q25"] for r in rows])
        q75 = np.array([r["S_summary"]["q75"] for r in rows])
        color, style = f"C{i}", "osD^"[i % 4] + ("--" if i % 2 else "-")
        finite = np.isfinite(med)
        ax_s.plot(lv[finite], med[finite], style, color=color, label=choice, mfc="none")
        band = np.isfinite(q25) & np.isfinite(q75)
        ax_s.fill_between(lv[band], q25[band], q75[band], color=color, alpha=0.15, lw=0)
        elbo = np.array([r["elbo_summary"]["median"] for r in rows])
        ax_l.plot(lv, elbo, style, color=color, label=choice, mfc="none")
    ax_s.set_yscale("log")
    xlabel = f"noise level (uniform points / {SWEEP_NOISE_POINTS})"
    ax_s.set_xlabel(xlabel)
    ax_s.set_ylabel("circle error S (median, IQR band)")
    ax_s.set_title("S against noise (CAVI)")
    ax_l.set_xlabel(xlabel)
    ax_l.set_ylabel("ELBO per point (nats, median)")
    ax_l.set_title("ELBO / N against noise (CAVI)")
    ax_s.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def eye_figure(results: dict[str, Any]) -> bytes:
    """One panel per choice: the eye points coloured by expert, the fitted circles."""
    from matplotlib.figure import Figure

    from pyro_moe import plots

    fig = Figure(figsize=(4.3 * len(results), 4.3))
    axes = np.atleast_1d(fig.subplots(1, len(results)))
    for ax, (choice, res) in zip(axes, results.items(), strict=True):
        plots.plot_fit(res, ax=ax, title=f"eye, {choice} (CAVI)")
        ax.invert_yaxis()  # these points have y up, not the image convention
        ax.set_xlabel("u (standardized)")
        ax.set_ylabel("v (standardized, up)")
    fig.tight_layout()
    return _png(fig)


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()
