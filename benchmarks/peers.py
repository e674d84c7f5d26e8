"""The peers pyro_moe's curve finding is measured against, in one home for every benchmark.

* :func:`edcircles` -- OpenCV's EdgeDrawing / EDCircles (``cv2.ximgproc``, from the optional
  ``bench`` dependency ``opencv-contrib-python-headless``): parameter-free, no K; edge
  segments -> arcs -> circles and ellipses. Each detection of ``detectEllipses()`` is a row
  ``(x, y, r, a, b, angle_deg)``: a circle has ``r > 0`` (and a = b = 0), an ellipse
  ``r = 0`` with semi-axes a, b and the rotation in degrees.
* :func:`ransac_circles` -- sequential RANSAC with scikit-image's ``CircleModel``: fit,
  remove the inliers, repeat K times.
* :func:`hough` -- scikit-image's ``hough_circle`` + ``hough_circle_peaks`` over the radii
  around the truth's (it is given the radius range, which the others are not).

Each returns ``(found, how)``: the found circles ``(x, y, r)`` (``edcircles`` also its
ellipses) in pixel coordinates (x = column, y = row) and a line saying how it was run.
"""

from __future__ import annotations

import numpy as np


def edcircles(img: np.ndarray) -> tuple[dict[str, list[tuple[float, ...]]], str]:
    """OpenCV's EDCircles on a binary or grey image (uint8 made from it; a binary image's
    set pixels are its edges). Returns ``({"circles": [(x, y, r)], "ellipses": [(x, y, a, b,
    angle_deg)]}, how)``; raises ImportError without ``opencv-contrib-python-headless``."""
    import cv2

    a = np.asarray(img)
    if a.dtype == bool or a.max() <= 1:
        grey = (a > 0).astype(np.uint8) * 255
    else:
        grey = np.clip(a, 0, 255).astype(np.uint8)
    ed = cv2.ximgproc.createEdgeDrawing()
    ed.setParams(cv2.ximgproc.EdgeDrawing.Params())
    ed.detectEdges(grey)
    rows = ed.detectEllipses()
    rows = np.zeros((0, 6)) if rows is None else np.asarray(rows, float).reshape(-1, 6)
    circles = [(float(x), float(y), float(r)) for x, y, r, *_ in rows if r > 0]
    ellipses = [
        (float(x), float(y), float(a_), float(b), float(t)) for x, y, r, a_, b, t in rows if r <= 0
    ]
    return {"circles": circles, "ellipses": ellipses}, "cv2.ximgproc EdgeDrawing, default params"


def hough(img, K: int, truth):
    from skimage.transform import hough_circle, hough_circle_peaks

    rs = [c.r for c in truth]
    step = 1 if img.shape[0] <= 256 else 2
    radii = np.arange(int(0.8 * min(rs)), int(1.2 * max(rs)) + 1, step)
    cands = []
    for i in range(0, len(radii), 16):  # radii in batches: the accumulator is (R, H, W)
        batch = radii[i : i + 16]
        hs = hough_circle(img, batch)
        acc, cx, cy, rr = hough_circle_peaks(
            hs, batch, min_xdistance=1, min_ydistance=1, total_num_peaks=K
        )
        cands += list(zip(acc, cx, cy, rr, strict=True))
    cands.sort(key=lambda c: -c[0])
    out = []
    for _a, cx, cy, rr in cands:  # the batches' peaks merged, one per circle
        if all(abs(cx - o[0]) > 2 or abs(cy - o[1]) > 2 or abs(rr - o[2]) > 3 for o in out):
            out.append((float(cx), float(cy), float(rr)))
        if len(out) == K:
            break
    return out, f"radii {radii[0]}..{radii[-1]} step {step}, min_x/ydistance=1, K peaks"


def ransac_circles(img, K: int, threshold: float = 1.5, trials: int = 2000):
    from skimage.measure import CircleModel, ransac

    rc = np.argwhere(img)
    pts = rc[:, ::-1].astype(float)  # (x = column, y = row)
    out = []
    rng = np.random.default_rng(0)
    for _ in range(K):  # sequential RANSAC: fit, remove inliers, repeat
        if len(pts) < 3:
            break
        model, inl = ransac(
            pts,
            CircleModel,
            min_samples=3,
            residual_threshold=threshold,
            max_trials=trials,
            rng=rng,
        )
        if model is None or inl is None:
            break
        if hasattr(model, "center"):
            (xc, yc), r = model.center, model.radius
        else:
            xc, yc, r = model.params
        out.append((float(xc), float(yc), float(r)))
        pts = pts[~inl]
    return out, (
        f"sequential: min_samples=3, residual_threshold={threshold} px, max_trials={trials}"
    )
