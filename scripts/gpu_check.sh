#!/usr/bin/env bash
# GPU check for mlsim-live: install onnxruntime-gpu (from local wheels when given), run the
# parity check (ONNX Runtime CUDA vs PyTorch CUDA vs ONNX Runtime CPU, same weights) and the
# bench, and write JSON. Finishes in under 5 minutes on one GPU; degrades to what is there.
#
# Usage: scripts/gpu_check.sh [--wheels DIR|FILE.whl] [--out DIR] [--size N] [--repeats N]
#                             [--python PY] [--budget-s S] [--cpu]
#   --wheels   onnxruntime-gpu wheel (and optionally its CUDA library wheels) to install offline
#   --out      where the JSON goes (default: $OUT, else ./gpu_check_out)
#   --size     frame size for the bench and the parity check (default 512)
#   --python   interpreter that has torch (default: python3)
#   --budget-s wall-clock limit of the bench step (default 210)
#   --cpu      dry run without a GPU: small size, tiny models, no installs
#   --precisions  CPU precisions of the bench (default fp32,bf16,int8)
#
# Writes: OUT/bench_gpu.json (the bench with its "parity" section), OUT/gpu_check.json (what
# was installed, what ran, and why anything was skipped), OUT/engine_tests.xml (the engine tests,
# whose CUDA cases run only where CUDA works) and OUT/gpu_check.log.
set -u -o pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHEELS=""
OUT_DIR="${OUT:-$PWD/gpu_check_out}"
SIZE=512
REPEATS=20
PY="python3"
BUDGET_S=210
CPU_ONLY=0
# default = the default learned method's model (wiener-rcan, Wiener prior included in its rows);
# the end-to-end shipped model and the paper architecture (random weights) beside it
MODELS="default,$REPO/models/rcan_default.onnx,paper"
# CPU rows in every precision: int8 (NAME.int8.onnx, else quantized by the bench), bf16 (skipped
# with the reason where ONNX Runtime cannot run it); the GPU rows are fp32/fp16 by backend
PRECISIONS="fp32,bf16,int8"

while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) WHEELS="$2"; shift 2 ;;
    --out) OUT_DIR="$2"; shift 2 ;;
    --size) SIZE="$2"; shift 2 ;;
    --repeats) REPEATS="$2"; shift 2 ;;
    --python) PY="$2"; shift 2 ;;
    --budget-s) BUDGET_S="$2"; shift 2 ;;
    --cpu) CPU_ONLY=1; shift ;;
    --precisions) PRECISIONS="$2"; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [ "$CPU_ONLY" = 1 ]; then
  SIZE=64; REPEATS=2; MODELS="default,tiny"; BUDGET_S=120
fi

mkdir -p "$OUT_DIR"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/mlsim-gpu-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
LOG="$OUT_DIR/gpu_check.log"
: > "$LOG"
log() { echo "[gpu_check] $*" | tee -a "$LOG" >&2; }

if ! command -v "$PY" >/dev/null 2>&1; then
  echo "gpu_check.sh: python '$PY' not found; expected --python PATH" >&2
  exit 2
fi

# The package is pure Python: run it from the checkout, no build needed. Packages installed
# here go to a private folder that comes first on the path (a venv made from a venv would lose
# the parent's torch). Two ONNX Runtime builds in *different* folders are fine: the first on
# sys.path wins, and mlsim-live only refuses two builds in the same folder.
SITE="$WORK/site"
mkdir -p "$SITE"
export PYTHONPATH="$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

ORT_GPU_STATUS="not attempted"
if [ "$CPU_ONLY" = 0 ]; then
  if [ -n "$WHEELS" ]; then
    if [ -d "$WHEELS" ]; then
      set -- "$WHEELS"/*.whl
    else
      set -- "$WHEELS"
    fi
    log "installing from wheels: $*"
    if "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$@" >>"$LOG" 2>&1; then
      ORT_GPU_STATUS="installed from $WHEELS"
    else
      ORT_GPU_STATUS="wheel install failed (see gpu_check.log)"
    fi
  elif "$PY" -c "import importlib.metadata as m; m.version('onnxruntime-gpu')" >/dev/null 2>&1; then
    ORT_GPU_STATUS="already installed"
  else
    log "no --wheels: trying pip install onnxruntime-gpu (needs network)"
    if timeout 120 "$PY" -m pip install -q --no-compile --retries 0 --timeout 10 --target "$SITE" \
        "onnxruntime-gpu[cuda,cudnn]" >>"$LOG" 2>&1; then
      ORT_GPU_STATUS="installed from the package index"
    else
      ORT_GPU_STATUS="not installable here (offline?); GPU timed with PyTorch only"
    fi
  fi
  log "onnxruntime-gpu: $ORT_GPU_STATUS"
fi

TESTS_RC="skipped (no pytest)"
if "$PY" -c "import pytest" >/dev/null 2>&1; then
  log "engine tests (CUDA vs CPU parity on a small model included when CUDA works)"
  if (cd "$REPO" && timeout 120 "$PY" -m pytest -q -p no:cacheprovider \
      tests/test_engine_rcan.py tests/test_engine_providers.py tests/test_precision.py -m "not slow" \
      --junitxml "$OUT_DIR/engine_tests.xml" >>"$LOG" 2>&1); then
    TESTS_RC=0
  else
    TESTS_RC=$?
  fi
  log "engine tests exit code: $TESTS_RC"
fi

BENCH_JSON="$OUT_DIR/bench_gpu.json"
rm -f "$BENCH_JSON"
log "bench: size $SIZE, models $MODELS, repeats $REPEATS, budget ${BUDGET_S}s"
BENCH_RC=0
timeout "$BUDGET_S" "$PY" -c 'import sys; from mlsim_live.cli import main; sys.exit(main())' \
  bench --size "$SIZE" --repeats "$REPEATS" --max-time-s 15 --models "$MODELS" --parity \
  --precisions "$PRECISIONS" \
  --json "$BENCH_JSON" 2>&1 | tee -a "$LOG" || BENCH_RC=$?
log "bench exit code: $BENCH_RC"

"$PY" - "$OUT_DIR/gpu_check.json" "$BENCH_JSON" "$ORT_GPU_STATUS" "$BENCH_RC" "$CPU_ONLY" \
  "$TESTS_RC" <<'PYEOF'
"""Summarize the environment and the bench into gpu_check.json."""
import datetime
import json
import os
import sys

out, bench_json, ort_status, bench_rc, cpu_only, tests_rc = sys.argv[1:7]
info = {
    "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    "mode": "cpu dry run" if cpu_only == "1" else "gpu",
    "onnxruntime_gpu": ort_status,
    "bench_exit_code": int(bench_rc),
    "engine_tests_exit_code": tests_rc,
    "bench_json": bench_json if os.path.exists(bench_json) else None,
    "notes": [],
}
try:
    import torch

    info["torch"] = torch.__version__
    info["torch_cuda"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
except ImportError:
    info["torch"] = None
    info["notes"].append("torch is not installed: no PyTorch rows, no paper model")
try:
    from mlsim_live.engine.providers import available_providers, installed_ort_distributions

    info["onnxruntime_providers"] = available_providers()
    info["onnxruntime_distributions"] = [
        {"name": n, "version": v, "site": str(s)} for n, v, s in installed_ort_distributions()
    ]
    import onnxruntime

    info["onnxruntime_imported_from"] = os.path.dirname(onnxruntime.__file__)
    if "CUDAExecutionProvider" not in info["onnxruntime_providers"] and cpu_only != "1":
        info["notes"].append("ONNX Runtime has no CUDA provider here: GPU timed with PyTorch only")
except Exception as exc:  # report, never fail the summary
    info["onnxruntime_error"] = f"{type(exc).__name__}: {exc}"
if info["bench_json"]:
    with open(bench_json, encoding="utf-8") as f:
        bench = json.load(f)
    info["results"] = [
        {k: r.get(k) for k in ("model", "backend", "provider", "precision", "groups_per_s",
                               "ratio_vs_torch_eager", "achieved_gflops", "peak_gflops",
                               "fraction_of_peak")} | {"p50_ms": r["latency_ms"]["p50"]}
        for r in bench["results"]
    ]
    info["parity"] = bench.get("parity", [])
    info["skipped"] = bench.get("skipped", [])
    info["peak_gflops"] = bench.get("peak_gflops", {})
    info["instruction_sets"] = bench.get("machine", {}).get("instruction_sets")
elif int(bench_rc) == 124:
    info["notes"].append("the bench ran out of its time budget")
tmp = out + ".tmp"
with open(tmp, "w", encoding="utf-8") as f:
    json.dump(info, f, indent=2)
os.replace(tmp, out)
print(json.dumps({k: info[k] for k in ("mode", "onnxruntime_gpu", "bench_exit_code")}))
PYEOF
exit "$BENCH_RC"
