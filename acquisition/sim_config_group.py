"""Live SIM with pattern control by config group: a Pycro-Manager script to adapt.

Each of the 9 events of a SIM group sets one preset of the pattern config group (A0P0 .. A2P2,
angle-major), exactly like a channel: Micro-Manager applies the preset (SLM pattern, galvo angle,
phase stepper ...) before each exposure. mlsim-live's SIMProcessor groups the frames by their
angle/phase axes and reconstructs every group live, while Pycro-Manager saves the raw frames.

Run against a running Micro-Manager (Tools > Options > Run Pycro-Manager server)::

    python sim_config_group.py --out D:/data --time-points 10 --group SIM

or try it on the simulated demo hardware (DemoCamera, no SIM optics: the frames are not SIM)::

    python sim_config_group.py --demo --out /tmp/sim --time-points 3 --method wiener
"""

from __future__ import annotations

import argparse
import logging

from pycromanager import Acquisition

from mlsim_live import SIMProcessor
from mlsim_live.constants import METHODS
from mlsim_live.live.acquire import next_dataset_name, sim_group_events


def sim_events(time_points: int, group: str, exposure_ms: float, interval_s: float) -> list[dict]:
    """9 events per time point, angle-major, each setting its pattern preset."""
    return [
        event
        for t in range(time_points)
        for event in sim_group_events(t, exposure_ms, pattern_group=group, interval_s=interval_s)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for raw data and reconstructions")
    parser.add_argument("--name", default="sim", help="dataset name")
    parser.add_argument("--group", default="SIM", help="pattern config group (presets A0P0..A2P2)")
    parser.add_argument("--time-points", type=int, default=10)
    parser.add_argument("--exposure-ms", type=float, default=20.0)
    parser.add_argument("--interval-s", type=float, default=0.0)
    parser.add_argument(
        "--method",
        choices=METHODS,
        help="default: rcan with --model or the default model, else wiener",
    )
    parser.add_argument("--model", help="ONNX model for rcan")
    parser.add_argument("--demo", action="store_true", help="headless demo core instead of MM")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.demo:
        from mlsim_live.live.demo import start_demo_core

        start_demo_core()  # pymmcore + DemoCamera + the SIM config group of this folder

    # Pycro-Manager saves the raw dataset as <out>/<name>_N; name the SR outputs alike
    sr_name = next_dataset_name(args.out, args.name)
    proc = SIMProcessor(model=args.model, method=args.method, out=args.out, name=sr_name)
    with Acquisition(directory=args.out, name=args.name, image_process_fn=proc) as acq:
        acq.acquire(sim_events(args.time_points, args.group, args.exposure_ms, args.interval_s))
    summary = proc.close()
    print(
        f"{summary['groups_reconstructed']} of {summary['groups_acquired']} groups reconstructed, "
        f"latency p50 {summary['latency_ms']['p50']} ms -> {proc.sr_path}"
    )


if __name__ == "__main__":
    main()
