"""Screenshot of napari with the mlsim-live plugin, for the README.

    xvfb-run -a -s "-screen 0 1600x900x24" python scripts/napari_screenshot.py \\
        --out docs/images/napari_widefield_sr.png

napari draws with OpenGL, so it runs on a virtual X server (Xvfb, Qt's xcb platform): with
``QT_QPA_PLATFORM=offscreen`` the window renders, but napari's canvas grabs black there.

Two simulated groups (mixture sample, 256 x 256, 1000 photons, the simulator's default optics)
are written as an ImageJ TIFF with their pixel size, opened with the plugin's reader, and
reconstructed by the plugin's dock widget (opened from its npe2 manifest) with the trust map on;
the window is saved with the widget docked, widefield and SR side by side.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--method", default=None, help="default: the widget's default method")
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()

    import napari
    from napari.settings import get_settings

    get_settings().application.gui_notification_level = "error"  # no toast over the picture
    from mlsim_live.io import write_tiff_atomic
    from mlsim_live.sim import simulate_group
    from mlsim_live.sim.simulate import Signal, SIMParams

    params = SIMParams(signal=Signal(peak_photons=1000.0))
    groups = [simulate_group(params, "mixture", args.size, seed=s).raw for s in (11, 12)]
    folder = Path(tempfile.mkdtemp(prefix="mlsim_napari_"))
    raw_path = write_tiff_atomic(
        folder / "cells.tif", np.concatenate(groups), pixel_size_um=params.optics.pixel_size_um
    )

    viewer = napari.Viewer(show=True, title="mlsim-live in napari")
    viewer.window.resize(1500, 760)
    viewer.open(str(raw_path), plugin="mlsim-live")
    _, widget = viewer.window.add_plugin_dock_widget("mlsim-live", "SIM reconstruction")
    widget.select_layer("cells raw")
    if args.method:
        widget.method_box.setCurrentText(args.method)
    widget.trust_box.setChecked(True)
    started = time.perf_counter()
    widget.run()
    app = napari.qt.get_qapp()
    while widget.worker is not None and time.perf_counter() - started < 600:
        app.processEvents()
        time.sleep(0.05)
    print(f"{widget.status.text()} ({time.perf_counter() - started:.1f} s)")
    viewer.scale_bar.visible = True
    viewer.scale_bar.unit = "um"
    viewer.dims.set_point(0, 4)  # group 0, angle 1, phase 1
    viewer.layers.selection.active = viewer.layers[f"cells SR {widget.method_box.currentText()}"]
    viewer.reset_view()
    app.processEvents()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(args.out), canvas_only=False, flash=False)
    print(f"wrote {args.out}: layers {[layer.name for layer in viewer.layers]}")
    viewer.close()


if __name__ == "__main__":
    main()
