"""Synthetic circle scenes of the kinds users bring, and three methods on each.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scenes.py [--seeds 3] [--quick]
        [--methods pyro_moe,auto,ransac,hough]

Scenes: :func:`pyro_moe.shapes.synthetic.circle_scene`, every kind of
:data:`~pyro_moe.shapes.synthetic.SCENE_KINDS` (concentric 2-4 rings, apart small and
large, overlapping, small r 8-15, cut by the border, 5 apart, two concentric pairs, 5 and
30 % stray pixels, 3 apart + 15 % stray, jitter 0.7 px, 2-px-thick rings, 1024^2) drawn
with seeds 0 .. --seeds - 1 (new centres and radii per seed; the 1024^2 kind with seed 0
only). A scene is *solved* when every true circle is matched (Hungarian on (x0, y0, r)) by
a found circle within 2 px in each of x0, y0 and r.

* ``pyro_moe``: the command line in batch mode, K given: the scenes are written as PNG
  files, one folder per K, and ``pyro-moe circles FOLDER --experts K --json`` fits each
  folder in one process (the noise expert on, the default restarts and search). Time per
  image: its line's ``input_seconds`` (reading, every restart, the search, the report);
  the whole process (Python's start and torch's import too) divided by the images is in
  the summary.
* ``auto``: ``pyro-moe circles FOLDERS... --experts auto --json`` (K = 1..5, the default
  --max-experts) on every scene in one process; *right K* when the chosen K is the true
  one (the 5-apart scenes, K = 5, are at the top of the range).
* ``ransac``: sequential ``skimage.measure.ransac`` + ``CircleModel`` (threshold 1.5 px);
* ``hough``: ``skimage.transform.hough_circle`` + ``hough_circle_peaks`` with minimum
  distances 1 (so concentric circles survive) and the true radius range +-20 %.

Writes benchmarks/results/scenes.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from pyro_moe.shapes import Circle, match_circles  # noqa: E402
from pyro_moe.shapes.synthetic import SCENE_KINDS, circle_scene  # noqa: E402

TOL_PX = 2.0
BIG = "1024^2, 3 concentric"


def scenes(seeds: int, quick: bool = False):
    """(kind, seed, image, true circles) for every kind and seed."""
    for kind in SCENE_KINDS:
        if kind == BIG and quick:
            continue
        for seed in range(1 if kind == BIG else seeds):
            img, truth = circle_scene(kind, seed)
            yield kind, seed, img, truth


def solved(truth, found) -> tuple[bool, int, float]:
    """(every circle within TOL_PX in x0, y0 and r; how many; worst error)."""
    pred = [c if isinstance(c, Circle) else Circle(*c, True) for c in found]
    pairs = match_circles(truth, pred)
    errs = [max(abs(truth[i].x0 - pred[j].x0), abs(truth[i].y0 - pred[j].y0),
                abs(truth[i].r - pred[j].r)) for i, j in pairs]  # fmt: skip
    good = sum(e <= TOL_PX for e in errs)
    worst = max(errs) if len(errs) == len(truth) else math.inf
    return good == len(truth), good, worst


def batch(folders: list[Path], experts: str) -> tuple[dict[str, dict], float]:
    """Run ``pyro-moe circles FOLDERS --experts K --json`` in one process: its JSON lines
    by input path, and the process's wall time."""
    cmd = [sys.executable, "-m", "pyro_moe", "circles", *map(str, folders),
           "--experts", experts, "--json"]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    wall = time.perf_counter() - t0
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    if not lines:
        raise RuntimeError(f"batch run printed nothing: {proc.stderr[-2000:]}")
    return {line["input"]: line for line in lines}, wall


def circles_of(line: dict) -> list[Circle]:
    return [Circle(c["x0"], c["y0"], c["r"], True) for c in line.get("circles", [])
            if c["r"] is not None]  # fmt: skip


def main() -> None:
    import run  # the RANSAC and Hough baselines of benchmarks/run.py

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="no 1024^2 scene")
    ap.add_argument("--methods", default="pyro_moe,auto,ransac,hough")
    ap.add_argument("--name", default="scenes", help="results/NAME.{json,md}")
    args = ap.parse_args()
    methods = args.methods.split(",")
    from PIL import Image

    tmp = Path(tempfile.mkdtemp(prefix="pyro_moe_scenes_"))
    rows, by_k = [], defaultdict(list)
    for kind, seed, img, truth in scenes(args.seeds, args.quick):
        K = len(truth)
        folder = tmp / f"K{K}"
        folder.mkdir(exist_ok=True)
        path = folder / f"{SCENE_KINDS.index(kind):02d}_seed{seed}.png"
        Image.fromarray(img.astype(np.uint8) * 255).save(path)
        by_k[K].append(path)
        rows.append({"scene": kind, "seed": seed, "K": K, "size": list(img.shape),
                     "points": int(img.sum()), "path": str(path), "img": img,
                     "truth": truth})  # fmt: skip
    summary: dict[str, dict] = {}
    if "pyro_moe" in methods:
        lines, wall, n = {}, 0.0, 0
        for K, paths in sorted(by_k.items()):
            got, w = batch([tmp / f"K{K}"], str(K))
            lines.update(got)
            wall, n = wall + w, n + len(paths)
        for row in rows:
            line = lines[row["path"]]
            ok, good, worst = solved(row["truth"], circles_of(line)) if line["ok"] else (
                False, 0, math.inf)  # fmt: skip
            row["pyro_moe"] = {
                "solved": ok,
                "found": good,
                "worst_px": worst,
                "seconds": line["input_seconds"],
                "invalid": sum(not c["valid"] for c in line.get("circles", [])),
            }
        summary["pyro_moe"] = {"process_seconds_per_image": wall / n, "images": n}
    if "auto" in methods:
        lines, wall = batch(sorted({tmp / f"K{K}" for K in by_k}), "auto")
        for row in rows:
            line = lines[row["path"]]
            chosen = line["selection"]["experts"] if line["ok"] else None
            ok, good, worst = solved(row["truth"], circles_of(line)) if line["ok"] else (
                False, 0, math.inf)  # fmt: skip
            row["auto"] = {
                "chosen": chosen,
                "right_k": chosen == row["K"],
                "solved": ok,
                "worst_px": worst,
                "seconds": line["input_seconds"],
            }
        summary["auto"] = {"process_seconds_per_image": wall / len(rows), "images": len(rows)}
    for m in ("ransac", "hough"):
        if m not in methods:
            continue
        for row in rows:
            t0 = time.perf_counter()
            if m == "ransac":
                found = run.ransac_circles(row["img"], row["K"])[0]
            else:
                found = run.hough(row["img"], row["K"], row["truth"])[0]
            dt = time.perf_counter() - t0
            ok, good, worst = solved(row["truth"], found)
            row[m] = {"solved": ok, "found": good, "worst_px": worst, "seconds": dt}
    for row in rows:
        del row["img"], row["truth"], row["path"]
        print(row["scene"], row["seed"], {m: row[m] for m in methods if m in row}, flush=True)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"{args.name}.json").write_text(
        json.dumps({"rows": rows, "summary": summary}, indent=1, default=float) + "\n"
    )
    given = [m for m in methods if m != "auto"]
    head = "| scene | seed | K | " + " | ".join(f"{m} (K given)" for m in given)
    head += " | auto: K chosen |" if "auto" in methods else " |"
    lines = [head, "|---|---|---|" + "---|" * (len(given) + ("auto" in methods))]
    for row in rows:
        cells = [f"{'yes' if row[m]['solved'] else 'no'} ({row[m]['worst_px']:.2g} px, "
                 f"{row[m]['seconds']:.2g} s)" for m in given]  # fmt: skip
        if "auto" in methods:
            a = row["auto"]
            cells.append(f"{a['chosen']} {'(right)' if a['right_k'] else '(wrong)'}")
        lines.append(f"| {row['scene']} | {row['seed']} | {row['K']} | " + " | ".join(cells) + " |")
    total = {m: sum(r[m]["solved"] for r in rows) for m in given}
    cells = [f"**{total[m]}/{len(rows)}**" for m in given]
    if "auto" in methods:
        cells.append(f"**right K {sum(r['auto']['right_k'] for r in rows)}/{len(rows)}**")
    lines.append("| **solved** | | | " + " | ".join(cells) + " |")
    times = [f"{np.mean([r[m]['seconds'] for r in rows]):.2g} s" for m in given]
    if "auto" in methods:
        times.append(f"{np.mean([r['auto']['seconds'] for r in rows]):.2g} s")
    lines.append("| **mean time per image** | | | " + " | ".join(times) + " |")
    med = [f"{np.median([r[m]['seconds'] for r in rows]):.2g} s" for m in given]
    if "auto" in methods:
        med.append(f"{np.median([r['auto']['seconds'] for r in rows]):.2g} s")
    lines.append("| **median time per image** | | | " + " | ".join(med) + " |")
    lines.append("")
    if "pyro_moe" in methods:
        bad = sum(r["pyro_moe"]["invalid"] for r in rows)
        lines.append(f"- pyro_moe, K given: {bad} of {sum(r['K'] for r in rows)} circles "
                     "marked not valid (`valid: false`)")  # fmt: skip
    for m, s in summary.items():
        lines.append(f"- {m}: the batch process took {s['process_seconds_per_image']:.2g} s per "
                     f"image over {s['images']} images (Python start, torch's import and "
                     "reading included)")  # fmt: skip
    (out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
