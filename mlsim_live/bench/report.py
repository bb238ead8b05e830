"""The benchmark report as an aligned text table."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


# -- report ----------------------------------------------------------------------------------


def format_table(report: dict[str, Any]) -> str:
    """Plain aligned text: one line per result, then what was skipped and the machine."""
    header = (
        "model",
        "backend",
        "provider",
        "prec",
        "p50 ms",
        "p95 ms",
        "groups/s",
        "peak MB",
        "x eager",
        "GFLOP/s",
        "peak",
        "% peak",
        "n",
    )
    lines = []
    for r in report["results"]:
        lat = r["latency_ms"]
        ratio = r["ratio_vs_torch_eager"]
        mem = r["peak_mem_mb"]
        lines.append(
            (
                r["model"],
                r["backend"],
                r["provider"].replace("ExecutionProvider", ""),
                r["precision"],
                f"{lat['p50']:.1f}",
                f"{lat['p95']:.1f}",
                f"{r['groups_per_s']:.2f}",
                "-" if mem is None else f"{mem:.0f}",
                "-" if ratio is None else f"{ratio:.2f}",
                _num(r.get("achieved_gflops"), "{:.0f}"),
                _num(r.get("peak_gflops"), "{:.0f}"),
                _num(r.get("fraction_of_peak"), "{:.0%}"),
                str(r["n"]),
            )
        )
    widths = [
        max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
        for i, h in enumerate(header)
    ]
    numeric = set(range(4, len(header)))

    def fmt(cells: tuple[str, ...]) -> str:
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    m = report["machine"]
    cfg = report["config"]
    out = [
        f"mlsim-live bench: {cfg['size']}x{cfg['size']} group (9 frames), "
        f"{report['date']}, {m['cpu_model']}, {m['physical_cores']} physical cores, "
        f"{cfg['threads']} threads, load {m['load_avg_1_5_15']}"
        + (f", GPU {m['gpu']}" if m.get("gpu") else ""),
        "instructions: "
        + "; ".join(
            f"{kind} {' '.join(names) or '-'}"
            for kind, names in (m.get("instruction_sets") or {}).items()
        ),
        fmt(header),
        fmt(tuple("-" * w for w in widths)),
        *(fmt(line) for line in lines),
    ]
    for s in report["skipped"]:
        out.append(f"skipped {s['model']} / {s['backend']}: {s['reason']}")
    for p in report.get("parity", []):
        parts = ", ".join(
            f"{k} {v['max_abs']:.2e} ({v['max_abs_rel']:.1e} rel)" for k, v in p["diffs"].items()
        )
        out.append(f"parity {p['model']} vs {p['reference']}: {parts}")
    return "\n".join(out)


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)
