"""``pyro-moe fit DATA.csv --target COL``: a mixture of linear experts on a CSV table
(read by :func:`pyro_moe.tables.read_xy`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .base import EXIT_OK, Context, check_output_paths, load_model, write_outputs
from .options import (
    add_command,
    add_fit_options,
    check_method,
    columns_arg,
    fit_options,
    resolve_experts,
)
from .render import emit_json, finite, format_table, num, summary_json, summary_lines

INTERCEPT = "(intercept)"


def register(sub: Any) -> None:
    p = add_command(
        sub,
        "fit",
        help="fit a mixture of linear experts to a CSV table",
        description="Fit a mixture of K linear experts y = w_k^T x to a CSV table (header row "
        "required) and print, per expert, the posterior mean weights, the weight share and "
        "the noise precision, with the objective, ELBO, iterations and seconds.",
    )
    p.add_argument("data", type=Path, metavar="DATA.csv", help="CSV file with a header row")
    p.add_argument("--target", required=True, metavar="COL", help="name of the target column")
    p.add_argument(
        "--features",
        type=columns_arg,
        default=None,
        metavar="COL,...",
        help="comma-separated feature columns (default: every column but the target)",
    )
    p.add_argument(
        "--intercept",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"add a column of ones (named '{INTERCEPT}') to the features",
    )
    add_fit_options(p, default_model="mixture_of_models")
    p.add_argument(
        "--noise-expert",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add a uniform component over the observed target range for outlying rows; "
        "--no-noise-expert: none (default: the model file's SETTINGS['noise_expert'])",
    )
    p.set_defaults(handler=run, plot=None)


def run(args: argparse.Namespace, ctx: Context) -> int:
    """Per expert: posterior mean weights, share and noise precision; then the summary."""
    import numpy as np

    import pyro_moe
    from pyro_moe.tables import read_xy

    check_method(args.method)
    check_output_paths(args.save)
    model = load_model(args.model)
    experts = resolve_experts(args.experts)
    X, y, names = read_xy(args.data, args.target, args.features)
    if args.intercept:
        X = np.column_stack([X, np.ones(len(y))])
        names = [*names, INTERCEPT]
    result = pyro_moe.fit(
        model, X, y, experts=experts, noise_expert=args.noise_expert, **fit_options(args)
    )
    write_outputs(result, save=args.save, plot=None, staged=ctx.outputs)
    mean = result.mean.detach().cpu().numpy()
    sd = np.sqrt(np.diagonal(result.cov.detach().cpu().numpy(), axis1=-2, axis2=-1))
    share = result.weights.detach().cpu().numpy()
    beta = result.noise_precision.detach().cpu().numpy().reshape(-1)
    betas = [float(beta[k] if beta.size == result.experts else beta[0]) for k in range(experts)]
    if args.json:
        items = [
            {
                "weights": {n: finite(mean[k, j]) for j, n in enumerate(names)},
                "weight_sd": {n: finite(sd[k, j]) for j, n in enumerate(names)},
                "share": finite(share[k]),
                "noise_precision": finite(betas[k]),
            }
            for k in range(experts)
        ]
        emit_json(
            {"target": args.target, "features": names, "experts": items, **summary_json(result)},
            ctx.out,
        )
        return EXIT_OK
    print(
        f"{args.data}: {len(y)} rows, target {args.target!r}, {len(names)} features, "
        f"K = {experts} experts",
        file=ctx.out,
    )
    print(file=ctx.out)
    headers = ["expert", *names, "share", "noise precision"]
    rows = [
        [
            str(k + 1),
            *(num(mean[k, j]) for j in range(len(names))),
            f"{share[k]:.3f}",
            num(betas[k]),
        ]
        for k in range(experts)
    ]
    print(format_table(headers, rows), file=ctx.out)
    print("(posterior mean weights per feature)", file=ctx.out)
    print(file=ctx.out)
    print("\n".join(summary_lines(result)), file=ctx.out)
    return EXIT_OK
