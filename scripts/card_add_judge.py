"""Record the real-data judge's figures in a model card.

Usage::

    python scripts/card_add_judge.py models/wiener_rcan_default.json \
        docs/evaluation/real/real_fidelity.json \
        --command "mlsim-live evaluate --real ../shared/data/real --out docs/evaluation/real ..."

Writes the card's ``real_data_judge`` entry (per stack and method: FRC resolution, ladder PSNR,
whether each rung correlates less with the reference than widefield, bead figures) atomically.
The card's other entries and the model file are untouched (the card's sha256 is the model's).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mlsim_live.io.atomic import write_json_atomic


def judge_entry(judge: dict[str, Any], command: str) -> dict[str, Any]:
    """The card's summary of a ``real_fidelity.json``."""
    stacks: dict[str, Any] = {}
    doses: list[float] = []
    for name, stack in judge["stacks"].items():
        per_method: dict[str, Any] = {}
        for method, result in stack["methods"].items():
            ladder = result.get("ladder", [])
            doses = [float(r["dose_fraction"]) for r in ladder] or doses
            entry: dict[str, Any] = {
                "frc_resolution_nm": result.get("frc_resolution_nm"),
                "ladder_psnr_db": [
                    None if r.get("psnr_db") is None else round(float(r["psnr_db"]), 2)
                    for r in ladder
                ],
                "below_widefield": [bool(r.get("below_widefield")) for r in ladder],
            }
            if result.get("fallback"):
                entry["fallback"] = result["fallback"]
            beads = result.get("beads")
            if beads:
                entry["beads"] = {
                    k: beads[k]
                    for k in ("n_beads", "n_fitted", "fwhm_median_px", "fwhm_median_nm")
                    if k in beads
                }
            per_method[method] = entry
        stacks[name] = per_method
    return {"command": command, "seed": judge.get("seed"), "ladder_doses": doses, "stacks": stacks}


def main() -> None:
    """Command line entry."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("card", type=Path)
    parser.add_argument("judge_json", type=Path)
    parser.add_argument("--command", required=True, help="the evaluate command that made it")
    args = parser.parse_args()
    card = json.loads(args.card.read_text())
    judge = json.loads(args.judge_json.read_text())
    previous = card.get("real_data_judge", {})
    entry = judge_entry(judge, args.command)
    if "inference" in previous:
        entry["inference"] = previous["inference"]
    card["real_data_judge"] = entry
    write_json_atomic(args.card, card, overwrite=True, indent=2)


if __name__ == "__main__":
    main()
