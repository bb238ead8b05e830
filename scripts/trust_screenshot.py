"""Screenshot of the live viewer with the trust overlay on, for the README.

    QT_QPA_PLATFORM=offscreen python scripts/trust_screenshot.py --out docs/images/viewer_trust.png

A simulated group (mixture, 2000 photons, 256 x 256, the demo's optics) is reconstructed by the
end-to-end model and shown as the viewer shows a live group; its trust map is computed by the
viewer's own trust sink (the overlay switched on with the key T), as in a live run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mlsim_live.live.results import GroupResult
from mlsim_live.recon import make_reconstructor
from mlsim_live.sim import simulate_group
from mlsim_live.sim.simulate import Signal, SIMParams
from mlsim_live.trust.sink import TrustSink
from mlsim_live.viewer import SIMViewer, ViewerSink
from mlsim_live.viewer.app import ensure_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--method", default="rcan")
    args = parser.parse_args()
    params = SIMParams(signal=Signal(peak_photons=2000.0))
    group = simulate_group(params, "mixture", 256, seed=11)
    rec = make_reconstructor(args.method, optics=params.optics)
    start = time.perf_counter()
    sr = rec.reconstruct(group.raw)
    result = GroupResult(
        index=0,
        key={"time": 0},
        raw=group.raw,
        widefield=group.raw.mean(axis=0, dtype="float32"),
        sr=sr,
        latency_ms=(time.perf_counter() - start) * 1e3,
        reconstruct_ms=(time.perf_counter() - start) * 1e3,
        completed_at=time.time(),
        reconstructor=rec.name,
        provider=rec.provider,
        pixel_size_um=params.optics.pixel_size_um,
        simulated=True,
    )
    app = ensure_app()
    window = SIMViewer(ViewerSink(), status_interval_ms=100, simulated=True)
    window.resize(1280, 640)
    window.show()
    trust = TrustSink(params.optics, every=False)
    window.attach_trust(trust)
    window.set_trust_overlay(True)
    window.show_result(result)
    trust.on_result(result)
    deadline = time.monotonic() + 120
    while window.displayed_trust() is None and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.05)
    window.update_status()
    app.processEvents()
    window.save_snapshot(args.out, overwrite=True)
    trust.close()
    print(f"wrote {args.out}: {window.status_text()}")


if __name__ == "__main__":
    main()
