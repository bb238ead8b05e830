"""Finding the pattern vector k of each angle: band +1 cross-correlated with the
Wiener-deconvolved band 0 on the 2x grid, a coarse search of the three angles together and a
sub-bin refinement."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

from mlsim_live.errors import MLSimError
from mlsim_live.recon.fourier import dft_at, frequency_radius, pad_spectrum

#: Regularization of the Wiener-deconvolved band 0 used as the correlation template.
TEMPLATE_WIENER = 0.05
#: Band 0's lowest frequencies (haze, uneven illumination) are left out of the template.
TEMPLATE_DC_FRACTION = 0.03


def zoom_search(
    objective: Any, k0: tuple[float, float], shape: tuple[int, int]
) -> tuple[float, float]:
    """Maximize ``objective(ky_array, kx_array) -> (ny, nx) values`` around ``k0``.

    First a quarter-bin grid over +-2 FFT bins (sparse samples give correlation peaks with
    side lobes that an integer-bin search can confuse with the peak), then successively finer
    5 x 5 grids down to ~0.002 bin.
    """
    bin_y, bin_x = 1.0 / shape[0], 1.0 / shape[1]
    offs = np.arange(-8, 9) * 0.25
    vals = objective(k0[0] + offs * bin_y, k0[1] + offs * bin_x)
    iy, ix = np.unravel_index(np.argmax(vals), vals.shape)
    ky, kx = k0[0] + offs[iy] * bin_y, k0[1] + offs[ix] * bin_x
    s = 0.1
    while s > 2e-3:
        offs = np.linspace(-2, 2, 5) * s
        vals = objective(ky + offs * bin_y, kx + offs * bin_x)
        iy, ix = np.unravel_index(np.argmax(vals), vals.shape)
        ky, kx = ky + offs[iy] * bin_y, kx + offs[ix] * bin_x
        s /= 2.5
    return float(ky), float(kx)


def _lag_grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(qy, qx) of the 2x-grid correlation bins, in cycles per raw pixel."""
    h, w = shape
    qy = sfft.fftfreq(2 * h, d=1.0 / (2 * h)) / h
    qx = sfft.fftfreq(2 * w, d=1.0 / (2 * w)) / w
    return qy, qx


def _to_bin(q: np.ndarray, n: int) -> np.ndarray:
    """Nearest 2x-grid correlation bin index of lag ``q`` (cycles/px) for raw size ``n``."""
    return np.mod(np.rint(q * n).astype(int), 2 * n)


def _template_weights(otf: np.ndarray, cutoff: float) -> np.ndarray:
    """Spectral weights that turn band 0 into the correlation template: Wiener deconvolution
    inside the OTF support, the lowest frequencies (haze, uneven illumination) left out."""
    fy, fx = frequency_radius(otf.shape)
    keep = (otf > 0) & (np.hypot(fy, fx) > TEMPLATE_DC_FRACTION * cutoff)
    return np.where(keep, otf / (otf**2 + TEMPLATE_WIENER), 0.0)


def correlation_envelope(otf: np.ndarray, cutoff: float) -> np.ndarray:
    """|E(q)|: how strongly band +1 (OTF support) and the template can correlate at each lag
    of the 2x grid whatever the sample, floored at 1e-6 of its maximum."""
    big = (2 * otf.shape[0], 2 * otf.shape[1])
    support = sfft.ifft2(pad_spectrum((otf > 0).astype(float), big), workers=-1)
    template = sfft.ifft2(pad_spectrum(_template_weights(otf, cutoff), big), workers=-1)
    e = np.abs(sfft.fft2(support * np.conj(template), workers=-1))
    return np.maximum(e, 1e-6 * e.max())


class AngleCorrelations:
    """The three frames of one angle on the raw and 2x grids, for correlations at any lag k.

    Correlations ``sum_f A(f) conj(B(f - k))`` are DFTs at ``k`` of the 2x-grid product
    ``ifft(A) conj(ifft(B))`` (both band-limited to the raw grid, so the product is exact).
    """

    def __init__(self, spec3: np.ndarray, otf: np.ndarray, cutoff: float) -> None:
        h, w = spec3.shape[1:]
        self.shape = (h, w)
        self.big = (2 * h, 2 * w)
        self.spec3 = spec3
        self.otf = otf
        support = otf > 0
        mean = spec3.mean(axis=0)
        deconv = _template_weights(otf, cutoff)
        self._template = sfft.ifft2(pad_spectrum(mean * deconv, self.big), workers=-1)
        self._frames = sfft.ifft2(pad_spectrum(spec3 * support, self.big), workers=-1)
        flat = spec3[:, support]
        self._gram = flat @ flat.conj().T  # <D_p, D_q> over the OTF support

    def cleaned_weights(self, sep: np.ndarray) -> np.ndarray:
        """Frame weights of band +1 with what leaked in from bands 0 and -1 projected out.

        Phase steps that are not exactly those of ``sep`` leave a little of band 0 (and -1) in
        band +1; for samples with strong low frequencies that leak outweighs a weak pattern.
        The true band +1 is nearly orthogonal to both, so a least-squares projection removes
        the leak and little else.
        """
        g = self._gram

        def inner(x: np.ndarray, y: np.ndarray) -> complex:
            return complex(x @ g @ y.conj())

        w1, w0, wm = sep[1], sep[0], sep[2]
        lhs = np.array([[inner(w0, w0), inner(wm, w0)], [inner(w0, wm), inner(wm, wm)]])
        rhs = np.array([inner(w1, w0), inner(w1, wm)])
        try:
            alpha, beta = np.linalg.solve(lhs, rhs)
        except np.linalg.LinAlgError:
            return w1
        return w1 - alpha * w0 - beta * wm

    def _product(self, weights: np.ndarray) -> np.ndarray:
        band = np.tensordot(weights, self._frames, axes=1)
        return band * np.conj(self._template)

    def detection_map(self, weights: np.ndarray, envelope: np.ndarray) -> np.ndarray:
        """|C(q)| / E(q) at the 2x-grid lags for band ``sum_p weights[p] frame_p``.

        ``E(q)`` (`correlation_envelope`) is the correlation of the two spectral weightings:
        dividing by it removes the pull towards small lags that a few bright objects would
        otherwise give.
        """
        return np.abs(sfft.fft2(self._product(weights), workers=-1)) / envelope

    def refinement_objective(self, weights: np.ndarray) -> Any:
        """|C(k)| at any lags (ky array, kx array), for the sub-bin search, with band +1
        weighted by the OTF.

        The weighting that finds weak peaks best (band +1 unweighted) pairs each sample
        frequency with an oscillating kernel, so the few brightest objects can split the peak
        into lobes; weighted by the OTF, the pairs add up in phase at the true k (median error
        0.04 %, 98th percentile 0.4 % on random simulated physics, against 1.9 % unweighted).
        """
        spec = np.tensordot(weights, self.spec3, axes=1) * self.otf
        band = sfft.ifft2(pad_spectrum(spec, self.big), workers=-1)
        product = band * np.conj(self._template)

        def objective(ky: np.ndarray, kx: np.ndarray) -> np.ndarray:
            return np.abs(dft_at(product, ky, kx, step=0.5))

        return objective

    def frame_correlations(self, k: tuple[float, float]) -> np.ndarray:
        """Correlation of each mean-free frame with band 0 at lag k (3 complex values)."""
        mean = self._frames.mean(axis=0)
        ky, kx = np.array([k[0]]), np.array([k[1]])
        conj_t = np.conj(self._template)
        return np.array([dft_at((f - mean) * conj_t, ky, kx, step=0.5)[0, 0] for f in self._frames])


def coarse_peaks(
    maps: list[np.ndarray], shape: tuple[int, int], q_range: tuple[float, float]
) -> list[tuple[float, float, float]]:
    """Integer-bin pattern vectors of the three angles from their correlation maps.

    The angles of a SIM are about 60 degrees apart with one pattern frequency, so the three maps
    are searched together: each candidate lag of angle 0 is scored with the maps of angles 1 and
    2 at the lag turned by +-60 and +-120 degrees (either sign of k, a small tolerance for
    imperfect angles). Each angle's peak is then taken in its own map near the consensus.
    ``q_range`` is the searched ring of |k| in cycles per pixel. Returns (ky, kx, contrast) per
    angle, contrast being the peak over the ring's median.
    """
    h, w = shape
    qy, qx = _lag_grid(shape)
    q = np.hypot(qy[:, None], qx[None, :])
    ring = (q >= q_range[0]) & (q <= q_range[1])
    if not ring.any():
        raise MLSimError(
            f"pattern search ring {q_range[0]:.3f}-{q_range[1]:.3f} cycles/px holds no "
            "frequencies; expected a larger frame or OTF cutoff"
        )
    norm = []
    for m in maps:
        med = float(np.median(m[ring]))
        norm.append(np.where(ring, m / max(med, 1e-300), 0.0))
    # either sign of k: the map at q and at -q
    sym = [np.maximum(z, np.roll(z[::-1, ::-1], 1, axis=(0, 1))) for z in norm]
    tol = [ndimage.maximum_filter(z, size=5, mode="wrap") for z in sym]
    iy, ix = np.nonzero(ring)
    cy, cx = qy[iy], qx[ix]
    best_score, best = -1.0, (0, 0.0)
    for turn in (1.0, -1.0):
        score = sym[0][iy, ix].copy()
        for a in range(1, len(maps)):
            t = np.deg2rad(60.0 * a * turn)
            ry = np.sin(t) * cx + np.cos(t) * cy
            rx = np.cos(t) * cx - np.sin(t) * cy
            score += tol[a][_to_bin(ry, h), _to_bin(rx, w)]
        j = int(np.argmax(score))
        if score[j] > best_score:
            best_score, best = float(score[j]), (j, turn)
    j, turn = best
    k0y, k0x = float(cy[j]), float(cx[j])
    k0 = np.hypot(k0y, k0x)
    radius = max(3.0 / min(h, w), 0.1 * k0)  # about +-6 degrees of angle
    out = []
    for a, z in enumerate(norm):
        t = np.deg2rad(60.0 * a * turn)
        py = np.sin(t) * k0x + np.cos(t) * k0y
        px_ = np.cos(t) * k0x - np.sin(t) * k0y
        near = (
            np.minimum(
                np.hypot(qy[:, None] - py, qx[None, :] - px_),
                np.hypot(qy[:, None] + py, qx[None, :] + px_),
            )
            <= radius
        )
        local = np.where(near, z, 0.0)
        jy, jx = np.unravel_index(np.argmax(local), local.shape)
        out.append((float(qy[jy]), float(qx[jx]), float(local[jy, jx])))
    return out
