"""Live SIM with hardware sequencing: a Pycro-Manager script to adapt.

The pattern device (SLM, DMD or galvo/phase-stepper controller) holds the 9 patterns of a SIM
group (angle-major: a0p0 a0p1 a0p2 a1p0 ... a2p2) and steps to the next one on each camera
trigger (the camera's exposure-out TTL), in a loop. Micro-Manager then only runs the camera:
the events carry just the axes, all with the same exposure and no hardware changes, so the
acquisition engine merges them into one fast camera sequence. Start every time point at pattern
a0p0: reset the device's sequence before the acquisition (and use a whole number of groups).

The SIMProcessor groups the frames by their angle/phase axes, exactly as with config groups.

Run against a running Micro-Manager (Tools > Options > Run Pycro-Manager server)::

    python sim_hardware_sequencing.py --out D:/data --time-points 100

or try it on the simulated demo hardware (DemoCamera, no pattern device: the frames are not SIM)::

    python sim_hardware_sequencing.py --demo --out /tmp/sim --time-points 3 --method wiener
"""

from __future__ import annotations

import argparse
import logging

from pycromanager import Acquisition, Core

from mlsim_live import SIMProcessor
from mlsim_live.constants import METHODS
from mlsim_live.live.acquire import next_dataset_name, sim_group_events


def sim_events(time_points: int) -> list[dict]:
    """9 axes-only events per time point, angle-major, in the order the device steps."""
    return [event for t in range(time_points) for event in sim_group_events(t)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for raw data and reconstructions")
    parser.add_argument("--name", default="sim", help="dataset name")
    parser.add_argument("--time-points", type=int, default=100)
    parser.add_argument("--exposure-ms", type=float, default=10.0)
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

        start_demo_core()
    core = Core()
    core.set_exposure(args.exposure_ms)
    # Here: arm the pattern device (load its 9-pattern sequence, reset to a0p0, external trigger).

    # Pycro-Manager saves the raw dataset as <out>/<name>_N; name the SR outputs alike
    sr_name = next_dataset_name(args.out, args.name)
    proc = SIMProcessor(model=args.model, method=args.method, out=args.out, name=sr_name)
    with Acquisition(directory=args.out, name=args.name, image_process_fn=proc) as acq:
        acq.acquire(sim_events(args.time_points))
    summary = proc.close()
    print(
        f"{summary['groups_reconstructed']} of {summary['groups_acquired']} groups reconstructed, "
        f"{summary['groups_dropped']} dropped, latency p50 {summary['latency_ms']['p50']} ms"
    )


if __name__ == "__main__":
    main()
