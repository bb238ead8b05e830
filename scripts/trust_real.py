"""Trust maps of every method on the public real stacks, for the README (figures and picture).

    python scripts/trust_real.py --real ../shared/data/real --out docs/images/trust_microtubules.png

For each stack with a JSON sidecar (optics), reconstructs it with widefield, Wiener and the
learned methods that are installed, maps each reconstruction's trust and prints per method: the
flagged fraction, the residual scale and the median chi. Draws the picture from the microtubule
stack (MIT licensed; the bead stack is GPL and is not drawn): the end-to-end model's and Wiener's
reconstructions with their flagged pixels in colour, and Wiener's with a filament added where the
sample has none.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import tifffile

from mlsim_live.recon import make_reconstructor
from mlsim_live.sim.optics import Optics
from mlsim_live.trust import TrustStream
from mlsim_live.trust.output import overlay

METHODS = ("widefield", "wiener", "rcan", "wiener-rcan")
PICTURE_STACK = "microtubules_rdlsim_9x256x256"


def _optics(meta: dict) -> Optics:
    na = meta.get("na_detection", meta.get("na"))
    return Optics(na=na, wavelength_nm=meta["emission_nm"], pixel_size_um=meta["pixel_size_um"])


def _fake_filament(shape: tuple[int, int]) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    d = np.abs(yy - 0.6 * xx - 0.15 * shape[0]) / np.hypot(1.0, 0.6)
    return np.exp(-(d**2) / 2.0)


def _label(img: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    pic = Image.fromarray(img, "RGB")
    draw = ImageDraw.Draw(pic)
    draw.rectangle((0, 0, 8 + 6 * len(text), 16), fill=(0, 0, 0))
    draw.text((4, 3), text, fill=(255, 255, 255))
    return np.asarray(pic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, default=Path("../shared/data/real"))
    parser.add_argument("--out", type=Path, help="PNG to draw (the microtubule stack)")
    args = parser.parse_args()
    for sidecar in sorted(args.real.glob("*.json")):
        stack = sidecar.with_suffix(".tif")
        if not stack.is_file():
            continue
        optics = _optics(json.loads(sidecar.read_text()))
        raw = tifffile.imread(stack)[:9]
        images = {}
        for method in METHODS:
            try:
                rec = make_reconstructor(method, optics=optics)
            except Exception as exc:  # a learned method without its runtime or model
                print(f"{stack.stem} {method}: skipped ({exc})")
                continue
            sr = rec.reconstruct(raw)
            res = TrustStream(optics).compute(raw, sr)
            f = res.figures
            images[method] = (sr, res.trust)
            print(
                f"{stack.stem} {method}: flagged {f.flagged_fraction:.3f}, residual scale "
                f"{f.residual_scale:.2f}, median chi {f.chi_median:.2f}"
            )
        if stack.stem == PICTURE_STACK and args.out is not None:
            sr, _ = images["wiener"]
            fake = sr + np.percentile(sr, 99.5) * _fake_filament(sr.shape)
            fake_trust = TrustStream(optics).compute(raw, fake).trust
            panels = [
                _label(overlay(*images["rcan"]), "rcan"),
                _label(overlay(*images["wiener"]), "wiener"),
                _label(overlay(fake, fake_trust), "wiener + a filament the sample lacks"),
            ]
            gap = np.full((panels[0].shape[0], 6, 3), 255, np.uint8)
            row = np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)
            from PIL import Image

            Image.fromarray(row, "RGB").save(args.out)
            print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
