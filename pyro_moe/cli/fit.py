"""``pyro-moe fit DATA.csv --target COL``: a mixture of linear experts on a CSV table
(read by :func:`pyro_moe.tables.read_xy`); ``pyro-moe fit STORE`` on an on-disk store
(a directory of ``X.npy`` and ``y.npy``, or a zarr store) computed on Dask: the scheduler at
``--scheduler ADDRESS``, or a local cluster of ``--workers N`` (:mod:`pyro_moe.distributed`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .base import EXIT_OK, Context, check_output_paths, load_model, write_outputs
from .options import (
    UsageError,
    add_command,
    add_fit_options,
    check_method,
    columns_arg,
    fit_options,
    int_at_least,
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
    p.add_argument(
        "data",
        type=Path,
        metavar="DATA.csv|STORE",
        help="CSV file with a header row, or a store: a directory of X.npy and y.npy (the "
        "design and the targets as stored) or a zarr store with arrays X and y, fitted on Dask",
    )
    p.add_argument(
        "--target", default=None, metavar="COL", help="name of the target column (CSV tables)"
    )
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
        default=None,
        help=f"add a column of ones (named '{INTERCEPT}') to the features (CSV tables; default)",
    )
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="fit a STORE on the Dask scheduler at ADDRESS (e.g. tcp://host:8786)",
    )
    p.add_argument(
        "--workers",
        type=int_at_least(1, "a worker count"),
        default=None,
        metavar="N",
        help="fit a STORE on a local Dask cluster of N worker processes (default 2)",
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
    check_output_paths(args.save, inputs=[args.data])
    if args.save is not None and args.data.is_dir():  # a store: its files are inputs too
        if args.save.resolve().is_relative_to(args.data.resolve()):
            raise UsageError(f"refusing to write {args.save} into the input store {args.data}")
    model = load_model(args.model)
    experts = resolve_experts(args.experts)
    store = args.data.suffix.lower() != ".csv" and (
        args.data.is_dir() or args.data.suffix == ".zarr"
    )
    if store:
        from pyro_moe.distributed import DaskData, open_store

        for flag, given in (("--target", args.target), ("--features", args.features),
                            ("--intercept", args.intercept)):  # fmt: skip
            if given is not None:
                raise UsageError(f"{flag} applies to CSV tables; a STORE holds X and y as they are")
        opened = open_store(args.data)
        if isinstance(opened, DaskData):  # .npy files, read by the workers
            X, y, n_rows, n_cols = opened, None, opened.N, opened.n
        else:  # zarr: Dask arrays
            (X, y), n_rows, n_cols = opened, int(opened[0].shape[0]), int(opened[0].shape[1])
        names = [f"x{j}" for j in range(n_cols)]
        target = "y"
        # neither: the active client, else a local cluster of 2 workers
        distributed = {"scheduler": args.scheduler, "workers": args.workers}
    else:
        if args.scheduler is not None or args.workers is not None:
            raise UsageError(
                "--scheduler and --workers fit a STORE (a directory of X.npy and y.npy)"
            )
        if args.target is None:
            raise UsageError("--target COL is required for a CSV table")
        X, y, names = read_xy(args.data, args.target, args.features)
        if args.intercept is None or args.intercept:
            X = np.column_stack([X, np.ones(len(y))])
            names = [*names, INTERCEPT]
        import pandas as pd

        X = pd.DataFrame(X, columns=names)  # the header's names: the result carries them
        n_rows, target, distributed = len(y), args.target, {}
    result = pyro_moe.fit(
        model, X, y, experts=experts, noise_expert=args.noise_expert, **fit_options(args),
        **distributed,
    )  # fmt: skip
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
            {"target": target, "features": names, "experts": items, **summary_json(result)},
            ctx.out,
        )
        return EXIT_OK
    print(
        f"{args.data}: {n_rows} rows, target {target!r}, {len(names)} features, "
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
