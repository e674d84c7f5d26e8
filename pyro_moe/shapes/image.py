"""From an image file (or array) to foreground points in pixel coordinates.

Pixel convention: x = column, y = row, origin at the top-left pixel (scikit-image, OpenCV).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy import ndimage

from pyro_moe.errors import ImageError, InputError
from pyro_moe.shapes.edges import canny_edges, check_edge_sigma, is_binary
from pyro_moe.shapes.points import PointSet, Standardization

__all__ = [
    "edge_mask",
    "foreground_mask",
    "image_to_points",
    "otsu_threshold",
    "read_image",
    "to_gray",
]

#: The largest image :func:`read_image` opens by default, in pixels (100 megapixels: about
#: 800 MB as float64 gray levels). Pass ``max_pixels=None`` (CLI: ``--max-pixels 0``) to
#: open larger images; Pillow's own decompression-bomb limit is lifted for them then.
MAX_PIXELS = 100_000_000


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """$Y = 0.2125 R + 0.7154 G + 0.0721 B$ (ITU-R BT.709, :func:`skimage.color.rgb2gray`)."""
    from skimage.color import rgb2gray

    return rgb2gray(rgb[..., :3])


def _unit_range(arr: np.ndarray) -> np.ndarray:
    """Integers → [0, 1] by the maximum of their type's bit depth (uint8 / 255,
    uint16 / 65535, other integers / 65535 when they fit in 16 bits, else / max);
    booleans → 0/1; floats kept when already in [0, 1], else divided by their maximum
    (negative values clipped to 0)."""
    if arr.dtype == np.bool_:
        return arr.astype(np.float64)
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float64) / 65535.0
    if np.issubdtype(arr.dtype, np.integer):
        out = np.clip(arr.astype(np.float64), 0.0, None)
        top = out.max() if out.size else 0.0
        if top <= 255:
            return out / 255.0
        return out / (65535.0 if top <= 65535 else top)
    if np.issubdtype(arr.dtype, np.floating):
        out = arr.astype(np.float64)
        if not np.isfinite(out).all():
            raise ImageError("image contains NaN or infinite pixel values")
        if out.size and (out.min() < 0.0 or out.max() > 1.0):
            out = np.clip(out, 0.0, None)
            top = out.max()
            out = out / top if top > 0 else out
        return out
    raise ImageError(f"unsupported pixel type {arr.dtype}")


def to_gray(image: object) -> np.ndarray:
    """Convert an image array to (H, W) float64 gray levels in [0, 1].

    (H, W) arrays are scaled by :func:`_unit_range`; (H, W, 3) RGB → luminance
    $0.2125R + 0.7154G + 0.0721B$ (:func:`skimage.color.rgb2gray`); (H, W, 4) RGBA → luminance of RGB when alpha is
    fully opaque everywhere, otherwise luminance × alpha (composited on black);
    (H, W, 2) gray+alpha the same way; (H, W, 1) squeezed. An image whose composite is
    one flat value while its alpha varies (black shapes on a transparent background) is an
    ImageError that says so (its shapes are only in the alpha channel).
    """
    try:
        arr = np.asarray(image)
    except (TypeError, ValueError) as exc:
        raise ImageError(f"image must be an array of pixels: {exc}") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ImageError(f"image must hold numeric pixels, got dtype {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        gray = _unit_range(arr)
    elif arr.ndim == 3 and arr.shape[2] in (2, 3, 4):
        chans = _unit_range(arr)
        has_alpha = arr.shape[2] in (2, 4)
        base = chans[..., 0] if arr.shape[2] == 2 else _luminance(chans)
        if has_alpha:
            alpha = chans[..., -1]
            gray = base if np.all(alpha >= 1.0) else base * alpha
            if gray.size and gray.max() == gray.min() and alpha.max() > alpha.min():
                raise ImageError(
                    "image has no foreground: composited on black (transparent = "
                    "background) every pixel has the same value, yet its alpha channel "
                    "varies: the shapes are drawn in one colour (black?) on a transparent "
                    "background; pass the alpha channel as the image (e.g. "
                    "np.asarray(PIL.Image.open(path))[..., -1]) or flatten it onto white"
                )
        else:
            gray = base
    else:
        raise ImageError(f"image must be (H, W) gray or (H, W, 3|4) colour, got shape {arr.shape}")
    if gray.size == 0:
        raise ImageError(f"image is empty (shape {arr.shape})")
    return np.clip(gray, 0.0, 1.0)


def read_image(path: str | os.PathLike[str], *, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Read PNG / JPEG / TIFF (anything Pillow opens) as (H, W) float64 gray in [0, 1].

    Gray images are kept as they are; 8-bit values are divided by 255 and 16-bit ones by
    65535; colour → luminance $Y = 0.2125R + 0.7154G + 0.0721B$
    (:func:`skimage.color.rgb2gray`). Images with an alpha
    channel: if alpha is fully opaque, the luminance of the colour channels; otherwise
    luminance × alpha, i.e. composited on black (transparent = background). Palette
    images are expanded first; multi-frame files give their first frame.

    Raises ImageError: "no such image file" for a missing path, "not a readable image"
    for a directory, an empty, corrupt or non-image file, and "too large" for an image of
    more than ``max_pixels`` pixels (None: no limit), read from its header before decoding.
    """
    from PIL import Image, UnidentifiedImageError

    from pyro_moe.files import check_source

    p = Path(path)
    if not p.exists() and not p.is_symlink():
        raise ImageError(f"no such image file: {p}")
    try:
        check_source(p, "image file")
    except InputError as e:
        raise ImageError(f"not a readable image: {e}") from None
    limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None  # ours is checked below, with a message that says how
        with Image.open(p) as im:
            w, h = im.size
            if max_pixels is not None and w * h > max_pixels:
                raise ImageError(
                    f"image {p} is too large: {w} x {h} = {w * h:,} pixels, more than the "
                    f"limit of {max_pixels:,}; pass max_pixels=None (command "
                    "line: --max-pixels 0) to read it anyway, or downscale it"
                )
            im.load()
            mode = im.mode
            if mode == "P" or mode == "PA":
                im = im.convert("RGBA" if ("transparency" in im.info or mode == "PA") else "RGB")
            elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGB")
            elif mode == "1":
                im = im.convert("L")
            elif mode == "La":
                im = im.convert("LA")
            elif mode == "RGBa":
                im = im.convert("RGBA")
            arr = np.array(im)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"not a readable image: {p} (unknown or unsupported format)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageError(f"not a readable image: {p} ({exc})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    if arr.size == 0:
        raise ImageError(f"not a readable image: {p} has no pixels")
    return to_gray(arr)


def otsu_threshold(gray: object) -> float:
    """Otsu's threshold, :func:`skimage.filters.threshold_otsu` (256 bins): the level $t$
    that maximizes the between-class variance
    $\\sigma_B^2(t) = \\omega_0(t)\\,\\omega_1(t)\\,(\\mu_0(t) - \\mu_1(t))^2$ of the
    classes ``gray <= t`` and ``gray > t``.

    Raises ImageError for an empty image, NaN or infinite values, or when all pixels have
    the same value (no foreground).
    """
    from skimage.filters import threshold_otsu

    g = np.asarray(gray, dtype=np.float64)
    if g.size == 0:
        raise ImageError("image is empty")
    if not np.isfinite(g).all():
        raise ImageError("image contains NaN or infinite pixel values")
    if not float(g.max()) > float(g.min()):
        raise ImageError("image has no foreground: all pixels have the same value")
    return float(threshold_otsu(g))


def foreground_mask(
    gray: object,
    threshold: float | str | None = "otsu",
    invert: bool | None = None,
) -> np.ndarray:
    """Boolean foreground mask of a gray image.

    ``threshold``: a number, or ``"otsu"`` / None for :func:`otsu_threshold`. Foreground is
    ``gray > threshold`` (bright on dark). ``invert=True`` takes the dark side instead,
    ``gray <= threshold``; ``invert=None`` (auto) inverts when the bright side would cover
    more than half of the image (dark strokes on white paper).
    """
    g = to_gray(gray) if not isinstance(gray, np.ndarray) or gray.dtype != np.float64 else gray
    if g.ndim != 2:
        raise ImageError(f"gray image must be 2-D, got shape {g.shape}")
    if threshold is None or (isinstance(threshold, str) and threshold.lower() == "otsu"):
        t = otsu_threshold(g)
    elif isinstance(threshold, str):
        raise InputError(f"threshold must be a number or 'otsu', got {threshold!r}")
    else:
        try:
            t = float(threshold)
        except (TypeError, ValueError):
            raise InputError(f"threshold must be a number or 'otsu', got {threshold!r}") from None
        if not np.isfinite(t):
            raise InputError(f"threshold must be finite, got {threshold!r}")
    bright = g > t
    if invert is None:
        invert = bool(bright.mean() > 0.5)
    return ~bright if invert else bright


def edge_mask(mask: object) -> np.ndarray:
    """Boundary pixels of filled shapes: foreground pixels with at least one background
    4-neighbour, $E = M \\wedge \\lnot\\,\\mathrm{erode}_4(M)$; outside the image
    counts as background."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ImageError(f"mask must be 2-D, got shape {m.shape}")
    eroded = ndimage.binary_erosion(
        m, structure=ndimage.generate_binary_structure(2, 1), border_value=0
    )
    return m & ~eroded


def image_to_points(
    source: str | os.PathLike[str] | np.ndarray,
    *,
    threshold: float | str | None = "otsu",
    invert: bool | None = None,
    edges: bool = False,
    edge_sigma: float | None = None,
    max_points: int | None = None,
    seed: int = 0,
    max_pixels: int | None = MAX_PIXELS,
) -> PointSet:
    """Foreground pixels of an image as a :class:`PointSet` (x = column, y = row).

    ``source`` is a path (read with :func:`read_image`) or an array. A *boolean* array is
    taken as the foreground mask itself (``threshold`` ignored; ``invert=True`` flips it);
    other arrays go through :func:`to_gray` and :func:`foreground_mask`. ``edges=True``
    keeps edge points: the boundary of a binary mask (a boolean array, or a gray image
    that :func:`pyro_moe.shapes.edges.is_binary` calls one; :func:`edge_mask` of the
    thresholded image, as without edges), or Canny's edges of a gray or colour photograph
    (:func:`pyro_moe.shapes.edges.canny_edges` at ``edge_sigma`` pixels; None: chosen by
    :func:`pyro_moe.shapes.edges.auto_edge_sigma`; ``threshold`` and ``invert`` are not
    used then). ``max_points`` subsamples without
    replacement with ``np.random.default_rng(seed)`` (kept in raster order). The
    standardization is :meth:`Standardization.fit` on the returned points.

    ``max_pixels``: the size limit of an image file (:func:`read_image`).

    Raises ImageError when there is no foreground or fewer than 3 foreground points.
    """
    sigma = check_edge_sigma(edge_sigma)
    gray = None
    if isinstance(source, (str, os.PathLike)):
        gray = read_image(source, max_pixels=max_pixels)
    else:
        arr = np.asarray(source)
        if arr.dtype == np.bool_ and arr.ndim == 2:
            mask = ~arr if invert else arr.copy()
        else:
            gray = to_gray(arr)
    if edges and gray is not None and not is_binary(gray):
        mask = canny_edges(gray, sigma)
    else:
        if gray is not None:
            mask = foreground_mask(gray, threshold, invert)
        if edges:
            mask = edge_mask(mask)
    # raster order, as np.nonzero (which is several times slower on a 2-D mask)
    rows, cols = np.divmod(np.flatnonzero(mask), mask.shape[1])
    n = rows.size
    if n == 0:
        raise ImageError(
            f"image has no foreground pixels (threshold {threshold!r}, invert={invert!r}); "
            "try --threshold or --invert"
        )
    if n < 3:
        raise ImageError(
            f"image has only {n} foreground pixel(s); need at least 3 points to fit a circle "
            "(3 unknowns); try --threshold or --invert"
        )
    xy = np.column_stack([cols, rows]).astype(np.float64)
    if max_points is not None:
        if int(max_points) != max_points or max_points < 3:
            raise InputError(f"max_points must be an integer >= 3, got {max_points!r}")
        if n > max_points:
            rng = np.random.default_rng(seed)
            keep = np.sort(rng.choice(n, size=int(max_points), replace=False))
            xy = xy[keep]
    return PointSet(
        xy=xy,
        standardization=Standardization.fit(xy),
        image_shape=(int(mask.shape[0]), int(mask.shape[1])),
    )
