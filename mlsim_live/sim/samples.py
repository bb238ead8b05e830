"""Fluorescent sample generators on the 2x (fine) grid, in physical units.

Every generator returns a non-negative float64 density with its brightest structures near 1.
Sizes are given in nanometres and converted with the fine grid's pixel size, so a bead or a
filament has the same physical size whatever the camera.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
from scipy import ndimage

from mlsim_live.errors import MLSimError

SAMPLE_KINDS = ("filaments", "beads", "vesicles", "natural", "mixture")


def _splat(shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Accumulate point weights with bilinear interpolation onto a grid."""
    out = np.zeros(shape, dtype=np.float64)
    y0 = np.floor(ys).astype(int)
    x0 = np.floor(xs).astype(int)
    fy = ys - y0
    fx = xs - x0
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            yy, xx = y0 + dy, x0 + dx
            ok = (yy >= 0) & (yy < shape[0]) & (xx >= 0) & (xx < shape[1])
            np.add.at(out, (yy[ok], xx[ok]), (w * wy * wx)[ok])
    return out


def _blur_nm(img: np.ndarray, fwhm_nm: float, pixel_size_um: float) -> np.ndarray:
    sigma_px = fwhm_nm / 2.355 / (pixel_size_um * 1e3)
    return ndimage.gaussian_filter(img, sigma_px, mode="constant") if sigma_px > 0.05 else img


def _peak_normalize(img: np.ndarray) -> np.ndarray:
    high = np.percentile(img, 99.95) if img.any() else 0.0
    return img / high if high > 0 else img


def filaments(shape: tuple[int, int], pixel_size_um: float, rng: np.random.Generator) -> np.ndarray:
    """Cytoskeleton-like filaments: persistent random walks, 20-50 nm wide, varied brightness."""
    ny, nx = shape
    area_um2 = ny * nx * pixel_size_um**2
    n = max(1, int(rng.poisson(rng.uniform(0.3, 2.5) * area_um2 / 4)))
    step_um = 0.25 * pixel_size_um
    ys_all, xs_all, w_all = [], [], []
    for _ in range(n):
        length_um = rng.uniform(1.0, 3.0) * max(ny, nx) * pixel_size_um
        steps = int(length_um / step_um)
        persistence_um = rng.uniform(2.0, 15.0)
        turn = rng.standard_normal(steps) * np.sqrt(step_um / persistence_um)
        theta = rng.uniform(0, 2 * np.pi) + np.cumsum(turn)
        y = rng.uniform(-0.2, 1.2) * ny + np.cumsum(np.sin(theta)) * step_um / pixel_size_um
        x = rng.uniform(-0.2, 1.2) * nx + np.cumsum(np.cos(theta)) * step_um / pixel_size_um
        ys_all.append(y)
        xs_all.append(x)
        w_all.append(np.full(steps, rng.uniform(0.3, 1.0) * step_um / pixel_size_um))
    img = _splat(shape, np.concatenate(ys_all), np.concatenate(xs_all), np.concatenate(w_all))
    return _peak_normalize(_blur_nm(img, rng.uniform(20, 50), pixel_size_um))


def beads(shape: tuple[int, int], pixel_size_um: float, rng: np.random.Generator) -> np.ndarray:
    """Sub-resolution beads (40-200 nm) at random positions, a few clusters, varied brightness."""
    ny, nx = shape
    area_um2 = ny * nx * pixel_size_um**2
    n = max(1, int(rng.poisson(rng.uniform(0.2, 4.0) * area_um2)))
    ys = rng.uniform(0, ny, n)
    xs = rng.uniform(0, nx, n)
    img = _splat(shape, ys, xs, rng.uniform(0.4, 1.0, n))
    return _peak_normalize(_blur_nm(img, rng.uniform(40, 200), pixel_size_um))


def vesicles(shape: tuple[int, int], pixel_size_um: float, rng: np.random.Generator) -> np.ndarray:
    """Rings of radius 60-400 nm (vesicles, pits), membrane 20-60 nm thick."""
    ny, nx = shape
    area_um2 = ny * nx * pixel_size_um**2
    n = max(1, int(rng.poisson(rng.uniform(0.1, 1.5) * area_um2)))
    ys_all, xs_all, w_all = [], [], []
    for _ in range(n):
        r_px = rng.uniform(60, 400) * 1e-3 / pixel_size_um
        m = max(8, int(2 * np.pi * r_px * 3))
        t = np.linspace(0, 2 * np.pi, m, endpoint=False)
        cy, cx = rng.uniform(0, ny), rng.uniform(0, nx)
        ys_all.append(cy + r_px * np.sin(t))
        xs_all.append(cx + r_px * np.cos(t))
        w_all.append(np.full(m, rng.uniform(0.3, 1.0) / 3))
    img = _splat(shape, np.concatenate(ys_all), np.concatenate(xs_all), np.concatenate(w_all))
    return _peak_normalize(_blur_nm(img, rng.uniform(20, 60), pixel_size_um))


@lru_cache(maxsize=1)
def _natural_images() -> tuple[np.ndarray, ...]:
    """Grey-scale images bundled with scikit-image (no download)."""
    try:
        from skimage import color, data
    except ImportError as exc:  # pragma: no cover - scikit-image is a declared dependency
        raise MLSimError(
            "natural-image samples need scikit-image; pip install scikit-image"
        ) from exc
    names = (
        "camera",
        "astronaut",
        "coins",
        "moon",
        "page",
        "text",
        "brick",
        "grass",
        "gravel",
        "rocket",
        "coffee",
        "chelsea",
        "hubble_deep_field",
        "immunohistochemistry",
    )
    images = []
    for name in names:
        loader: Callable[[], np.ndarray] | None = getattr(data, name, None)
        if loader is None:
            continue
        try:
            img = np.asarray(loader())
        except Exception:
            continue
        if img.ndim == 3:
            img = color.rgb2gray(img[..., :3])
        img = img.astype(np.float64)
        img -= img.min()
        if img.max() > 0:
            images.append(img / img.max())
    if not images:  # pragma: no cover
        raise MLSimError("no bundled scikit-image sample images were found")
    return tuple(images)


def natural(shape: tuple[int, int], pixel_size_um: float, rng: np.random.Generator) -> np.ndarray:
    """A random crop of a natural image, rescaled, flipped and rotated, as dense texture."""
    images = _natural_images()
    img = images[rng.integers(len(images))]
    # zoom > 1 magnifies; never crop more than the image holds
    zoom = max(rng.uniform(0.5, 2.0), shape[0] / img.shape[0], shape[1] / img.shape[1])
    need = (
        min(img.shape[0], int(np.ceil(shape[0] / zoom)) + 2),
        min(img.shape[1], int(np.ceil(shape[1] / zoom)) + 2),
    )
    y0 = rng.integers(0, img.shape[0] - need[0] + 1)
    x0 = rng.integers(0, img.shape[1] - need[1] + 1)
    crop = ndimage.zoom(img[y0 : y0 + need[0], x0 : x0 + need[1]], zoom, order=1)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    crop = np.rot90(crop, int(rng.integers(4)))[: shape[0], : shape[1]]
    if crop.shape != shape:
        crop = np.pad(crop, [(0, shape[0] - crop.shape[0]), (0, shape[1] - crop.shape[1])])
    gamma = rng.uniform(1.0, 3.0)  # sparser, more fluorescence-like contrast
    return _peak_normalize(np.clip(crop, 0, None) ** gamma)


def mixture(shape: tuple[int, int], pixel_size_um: float, rng: np.random.Generator) -> np.ndarray:
    """A weighted sum of two or three of the other kinds."""
    kinds = rng.choice(
        ["filaments", "beads", "vesicles", "natural"], size=rng.integers(2, 4), replace=False
    )
    img = sum(rng.uniform(0.3, 1.0) * GENERATORS[k](shape, pixel_size_um, rng) for k in kinds)
    return _peak_normalize(np.asarray(img))


GENERATORS: dict[str, Callable[[tuple[int, int], float, np.random.Generator], np.ndarray]] = {
    "filaments": filaments,
    "beads": beads,
    "vesicles": vesicles,
    "natural": natural,
    "mixture": mixture,
}


def make_sample(
    kind: str, shape: tuple[int, int], pixel_size_um: float, rng: np.random.Generator
) -> np.ndarray:
    """Generate a sample of ``kind`` (one of SAMPLE_KINDS) on a grid of ``pixel_size_um``."""
    try:
        generator = GENERATORS[kind]
    except KeyError:
        raise MLSimError(
            f"sample kind {kind!r} is unknown; expected one of {', '.join(SAMPLE_KINDS)}"
        ) from None
    return generator((int(shape[0]), int(shape[1])), pixel_size_um, rng)
