"""What the commands print and draw: aligned tables, JSON, fit summaries, and the curves of
a shape fit (one renderer for ``circles``, ``conics`` and ``curves``, each expert printed
as its own kind of curve) with their plot (:func:`pyro_moe.plots.plot_fit`)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from pyro_moe.curves import CurveFit
    from pyro_moe.result import FitResult

# --------------------------------------------------------------------------- numbers and tables


def finite(value: float) -> float | None:
    """A float for JSON, or None when it is NaN or infinite (JSON has no NaN)."""
    value = float(value)
    return value if math.isfinite(value) else None


def fmt(value: float | None, digits: int = 3) -> str:
    """Fixed point with ``digits`` decimals; ``-`` for None."""
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}f}"


def num(value: float) -> str:
    """A number for a table: fixed point for ordinary magnitudes, else scientific."""
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4f}"
    return f"{value:.3e}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An aligned text table: the first column left-aligned, the others right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        out = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def emit_json(obj: dict[str, Any], out: TextIO) -> None:
    """One indented JSON object (no NaN: see :func:`finite`)."""
    out.write(json.dumps(obj, indent=2, allow_nan=False) + "\n")


#: the JSON fields that hold wall-clock times (left out by ``--deterministic``)
TIMING_KEYS = ("seconds", "timings_s", "input_seconds")


def without_timings(text: str) -> str:
    """``--deterministic``: the JSON object(s) of ``text`` without :data:`TIMING_KEYS`,
    re-printed as :func:`emit_json` prints them (JSON lines, batch mode: one per line)."""

    def strip(o: Any) -> Any:
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items() if k not in TIMING_KEYS}
        if isinstance(o, list):
            return [strip(v) for v in o]
        return o

    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > 1 and all(line.startswith("{") and line.endswith("}") for line in lines):
        try:  # JSON lines (batch mode): each line on its own, kept one per line
            objs = [json.loads(line) for line in lines]
        except json.JSONDecodeError:
            objs = None
        if objs is not None:
            return "".join(json.dumps(strip(o), allow_nan=False) + "\n" for o in objs)
    return json.dumps(strip(json.loads(text)), indent=2, allow_nan=False) + "\n"


# --------------------------------------------------------------------------- fit summaries


def khat(result: FitResult) -> float | None:
    """PSIS k-hat of a variational fit (:func:`pyro_moe.diagnostics.psis_khat`); None for
    a NUTS result (it has draws of the exact posterior, no q to grade), and for a distributed
    fit whose data were not gathered into the result (no rows to grade q on)."""
    if result.draws is not None or result.y.shape[0] == 0:
        return None
    from pyro_moe.diagnostics import psis_khat  # arviz: imported only when a fit is printed

    return psis_khat(result)


def khat_text(value: float | None) -> str:
    """k-hat with its reading (Yao et al. 2018): < 0.5 q close to the posterior, 0.5-0.7
    usable, > 0.7 q too far from it (its uncertainties not to be trusted)."""
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    words = "q close to the posterior" if value < 0.5 else "q usable, spread doubtful"
    words = "q far from the posterior: do not trust its sds" if value > 0.7 else words
    return f"{value:.2f} ({words}; < 0.5 good, > 0.7 bad)"


def summary_lines(result: FitResult) -> list[str]:
    """The fit's summary rows; a NUTS fit's are its log joint (not an ELBO) and the fit
    that set its hyperparameters (``draws.info["hyper_method"]``)."""
    if result.draws is None:
        head = [f"objective   {result.objective:.6g} nats", f"ELBO        {result.elbo:.6g} nats"]
    else:
        lp, info = result.draws.log_joint, result.draws.info
        head = [
            f"log joint   {float(lp.mean()):.6g} nats (mean over {lp.numel()} draws; not an ELBO)",
            f"hyper from  {info.get('hyper_method', '-')} fit "
            f"(objective {info.get('hyper_objective', float('nan')):.6g} nats)",
        ]
    lines = [
        *head,
        f"iterations  {result.iterations}",
        f"seconds     {result.wall_time:.3g}",
        f"converged   {'yes' if result.converged else 'no'}",
        f"method      {result.method}",
        f"model       {result.model_name}",
    ]
    if result.draws is None:
        lines.append(f"k-hat       {khat_text(khat(result))}")
    else:
        d = result.draws
        lines.append(
            f"draws       {d.w.shape[0]} chains x {d.w.shape[1]}, "
            f"{int(d.diverging.sum())} divergent, split R-hat <= {d.info['split_rhat_max']:.4g}"
        )
    return lines


def summary_json(result: FitResult) -> dict[str, Any]:
    return {
        "objective": finite(result.objective),
        "elbo": finite(result.elbo),
        "iterations": int(result.iterations),
        "seconds": float(result.wall_time),
        "method": result.method,
        "model": result.model_name,
        "converged": bool(result.converged),
        "points": len(result.y),
        "khat": None if (k := khat(result)) is None else finite(k),
    }


def shares(result: FitResult) -> list[float]:
    """Share of the points per expert: the mean responsibility (the noise expert excluded,
    so the shares sum to 1 minus the noise expert's share)."""
    return [float(s) for s in result.responsibilities.mean(0)[: result.experts].cpu()]


def outlier_json(result: FitResult) -> dict[str, Any]:
    """``noise_expert``; ``outlier_share``: the share of points the noise expert explains
    best; ``noise_share``: its mean responsibility, so that the experts' shares plus
    ``noise_share`` sum to 1 (both 0.0 without a noise expert)."""
    noise = result.responsibilities[:, result.experts :].sum(-1).mean()
    return {
        "noise_expert": bool(result.noise_expert),
        "outlier_share": float(result.outliers.float().mean()),
        "noise_share": float(noise) if result.noise_expert else 0.0,
    }


def selection_json(selection: Any) -> dict[str, Any]:
    rows = [
        {
            "experts": row["experts"],
            "objective": finite(row["objective"]),
            "score": finite(row["score"]),
            "converged": row["converged"],
            "distinct": row["distinct"],
            "admissible": row["admissible"],
            "note": row["note"],
        }
        for row in selection.table
    ]
    return {"experts": selection.experts, "criterion": selection.criterion, "table": rows}


def selection_lines(selection: Any) -> list[str]:
    headers = ["K", "objective", "ELBO + log K!", "distinct", "admissible", "note"]
    rows = [
        [
            f"{row['experts']}{' *' if row['experts'] == selection.experts else ''}",
            num(row["objective"]),
            num(row["score"]),
            str(row["distinct"]),
            "yes" if row["admissible"] else "no",
            row["note"] or "-",
        ]
        for row in selection.table
    ]
    return [
        f"K chosen by --experts auto: {selection.experts} ({selection.criterion})",
        format_table(headers, rows),
    ]


# --------------------------------------------------------------------------- one curve


def circle_json(c: Any) -> dict[str, Any]:
    return {
        "x0": finite(c.x0),
        "y0": finite(c.y0),
        "r": finite(c.r) if c.valid else None,
        "valid": bool(c.valid),
    }


def conic_json(c: Any) -> dict[str, Any]:
    return {
        "kind": c.kind,
        "center": None if c.center is None else [finite(v) for v in c.center],
        "semi_axes": None if c.semi_axes is None else [finite(v) for v in c.semi_axes],
        "angle_degrees": None if c.angle is None else finite(math.degrees(c.angle)),
        "coefficients": [finite(v) for v in c.coefficients],
    }


def kind_of(curve: Any) -> str | None:
    """``circle``, ``conic``, ``line``, or None for an expert read as weights only."""
    from pyro_moe.shapes import Circle, Conic, Line

    for cls, name in ((Circle, "circle"), (Conic, "conic"), (Line, "line")):
        if isinstance(curve, cls):
            return name
    return None


def sd_value(value: float | None, wide: bool = False) -> float | None:
    """A posterior sd for JSON: None when not finite, or when the posterior is too wide to
    mean anything (``wide``, :func:`pyro_moe.curve_reports`)."""
    return None if value is None or wide else finite(value)


def sd_text(value: float | None, wide: bool = False) -> str:
    """A posterior sd for a table: ``wide`` for a posterior too wide to mean anything,
    ``-`` when there is none."""
    return "wide" if wide else fmt(value)


def curve_json(curve: Any, sd: Any, wide: bool = False) -> dict[str, Any]:
    """The JSON fields of one expert by its kind: a circle's x0, y0, r, valid and sds; a
    conic's kind, centre, semi-axes, angle, coefficients and sds; a line's a, c, angle;
    else the weights. ``wide``: the sds are null (too wide to mean anything)."""
    kind = kind_of(curve)
    if kind == "circle":
        return {
            **circle_json(curve),
            "sd_x0": sd_value(sd.sd_x0, wide),
            "sd_y0": sd_value(sd.sd_y0, wide),
            "sd_r": sd_value(sd.sd_r, wide),
        }
    if kind == "conic":
        sds = None if sd.sd is None or wide else {k: finite(v) for k, v in sd.sd.items()}
        return {**conic_json(curve), "sd": sds}
    if kind == "line":
        return {k: finite(v) for k, v in curve.as_dict().items()}
    return {"weights": [finite(v) for v in curve]}


def report_json(rep: Any) -> dict[str, Any]:
    """One expert's JSON item (:class:`pyro_moe.CurveReport`): its curve's fields
    (:func:`curve_json`), ``share``, ``valid`` (a curve of the data: share, a real curve,
    a posterior that means something, a fit, no duplicate) and ``reason`` (why not, or
    null); a circle also ``r_corrected`` (the Kasa bias removed) and ``noise_px``."""
    item = {**curve_json(rep.curve, rep.sd, rep.wide), "share": rep.share}
    if kind_of(rep.curve) == "circle":
        item["r_corrected"] = sd_value(rep.r_corrected)
        item["noise_px"] = sd_value(rep.noise_px)
    item["valid"] = bool(rep.valid)
    item["reason"] = rep.reason
    return item


def curve_text(curve: Any, sd: Any, wide: bool = False) -> tuple[str, str]:
    """One expert in words by its kind, and its posterior sds (``-`` when none, ``wide``
    when too wide to mean anything)."""
    kind = kind_of(curve)
    if kind == "circle":
        c = curve
        what = f"circle x0={fmt(c.x0)} y0={fmt(c.y0)} r={fmt(c.r) if c.valid else 'invalid'}"
        if wide:
            return what, "wide"
        return what, f"{fmt(sd.sd_x0)} {fmt(sd.sd_y0)} {fmt(sd.sd_r)}"
    if kind == "conic":
        c = curve
        what = c.kind
        if c.center is not None:
            what += f" centre=({fmt(c.center[0])}, {fmt(c.center[1])})"
        if c.semi_axes is not None:
            what += f" axes=({fmt(c.semi_axes[0])}, {fmt(c.semi_axes[1])})"
        if c.angle is not None:
            what += f" angle={fmt(math.degrees(c.angle), 2)}deg"
        if wide:
            return what, "wide"
        sds = "-" if sd.sd is None else " ".join(fmt(sd.sd[f]) for f in ("cx", "cy", "a", "b"))
        return what, sds
    if kind == "line":
        return f"line x = {fmt(curve.a)} y + {fmt(curve.c)}", "-"
    return "weights " + " ".join(fmt(float(v)) for v in curve), "-"


def _circle_row(rep: Any) -> list[str]:
    c, sd, wide = rep.curve, rep.sd, rep.wide
    return [
        fmt(c.x0),
        fmt(c.y0),
        fmt(c.r) if c.valid else "invalid",
        f"{rep.share:.3f}",
        "yes" if rep.valid else "no",
        sd_text(sd.sd_x0, wide),
        sd_text(sd.sd_y0, wide),
        sd_text(sd.sd_r, wide),
        fmt(rep.r_corrected),
        rep.reason or "",
    ]


def _conic_row(rep: Any) -> list[str]:
    c = rep.curve
    cx, cy = c.center if c.center is not None else (None, None)
    a, b = c.semi_axes if c.semi_axes is not None else (None, None)
    angle = None if c.angle is None else math.degrees(c.angle)
    valid = "yes" if rep.valid else "no"
    return [c.kind, fmt(cx), fmt(cy), fmt(a), fmt(b), fmt(angle, 2), f"{rep.share:.3f}", valid,
            rep.reason or ""]  # fmt: skip


# --------------------------------------------------------------------------- the curve report

#: Per layout (also the JSON key): the table's headers and the note under it. ``circles``
#: and ``conics`` print one column per parameter; ``curves`` one description per expert.
LAYOUTS: dict[str, tuple[list[str], str | None]] = {
    "circles": (
        ["circle", "x0", "y0", "r", "share", "valid", "sd x0", "sd y0", "sd r", "r corr", "note"],
        "(r corr: r with the Kasa bias removed by the circle's own noise; sd: posterior "
        "standard deviations, delta method, 'wide': too wide to mean anything)",
    ),
    "conics": (
        ["conic", "kind", "cx", "cy", "a", "b", "angle (deg)", "share", "valid", "note"],
        None,
    ),
    "curves": (
        ["expert", "name", "curve", "sd", "share", "valid", "note"],
        "(sd: posterior standard deviations, delta method: circles x0 y0 r, "
        "conics cx cy a b; 'wide': too wide to mean anything)",
    ),
}

#: An outlier share at or above this is pointed out under the table (stray pixels, or
#: more curves than K).
OUTLIER_NOTE = 0.1


def render_curves(
    result: CurveFit,
    out: TextIO,
    *,
    layout: str,
    title: str,
    as_json: bool = False,
    names: Sequence[str] | None = None,
    selection: Any = None,
    source: str | None = None,
) -> None:
    """Print the experts of a curve fit (:class:`pyro_moe.curves.CurveFit`), each as its own kind of curve with its validity
    (:func:`pyro_moe.curve_reports`), as a table or one JSON object.

    ``layout``: ``circles`` or ``conics`` (one column per parameter; JSON key ``circles`` /
    ``conics``) or ``curves`` (one description per expert, named by ``names``; JSON key
    ``curves``). Below the table: the selection of K (``selection``), the outlier share
    when a noise expert is fitted, and the fit summary. ``source``: the input's path, a
    JSON field ``input`` (batch mode).
    """
    from pyro_moe.curves.selection import curve_reports

    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    reports = curve_reports(result)
    names = list(names) if names is not None else [str(k + 1) for k in range(len(reports))]
    outliers = outlier_json(result)
    if as_json:
        if layout == "curves":
            items = [
                {"expert": n, "kind": kind_of(rep.curve), **report_json(rep)}
                for n, rep in zip(names, reports, strict=True)
            ]
        else:
            items = [report_json(rep) for rep in reports]
        extra = {} if selection is None else {"selection": selection_json(selection)}
        head = {} if source is None else {"input": source, "ok": True}
        emit_json({**head, layout: items, **outliers, **extra, **summary_json(result)}, out)
        return
    headers, note = LAYOUTS[layout]
    rows = []
    for k, (n, rep) in enumerate(zip(names, reports, strict=True)):
        if layout == "circles":
            rows.append([str(k + 1), *_circle_row(rep)])
        elif layout == "conics":
            rows.append([str(k + 1), *_conic_row(rep)])
        else:
            valid = "yes" if rep.valid else "no"
            what, sds = curve_text(rep.curve, rep.sd, rep.wide)
            rows.append([str(k + 1), n, what, sds, f"{rep.share:.3f}", valid, rep.reason or ""])
    print(f"{title} (pixel units: x = column, y = row from the top-left)", file=out)
    print(file=out)
    print(format_table(headers, rows), file=out)
    if note:
        print(note, file=out)
    bad = sum(not rep.valid for rep in reports)
    if bad:
        print(f"warning: {bad} of {len(reports)} experts are not valid curves (see 'note')",
              file=out)  # fmt: skip
    print(file=out)
    if selection is not None:
        print("\n".join(selection_lines(selection)), file=out)
        print(file=out)
    if outliers["noise_expert"]:
        share = outliers["outlier_share"]
        line = f"outliers    {share:.3f} of the points"
        if share >= OUTLIER_NOTE:
            line += " (stray pixels, or more curves than K: try --experts auto)"
        print(line, file=out)
    print("\n".join(summary_lines(result)), file=out)


# --------------------------------------------------------------------------- the plot


def plot_png(result: CurveFit, path: Path, *, title: str, format: str = "png") -> None:
    """Save a PNG (or another matplotlib ``format``) of a shape fit drawn by
    :func:`pyro_moe.plots.plot_fit` (points coloured by their most responsible expert, the
    fitted curves, pixel units, y down)."""
    from matplotlib.figure import Figure

    from pyro_moe.plots import plot_fit

    fig = Figure(figsize=(6, 6), dpi=100)
    plot_fit(result, ax=fig.add_subplot(), title=title)
    fig.savefig(path, format=format)


def curve_plot_title(result: CurveFit | FitResult, what: str) -> str:
    """``<what>, <METHOD>, objective <F>``: the title of a curve plot."""
    return f"{what}, {result.method.upper()}, objective {result.objective:.4g}"
