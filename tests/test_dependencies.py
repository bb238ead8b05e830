"""Dependencies point one way: the live path never needs the benchmark or the batch runner, and a
command never borrows from a sibling command.

Two kinds of checks: the source is read (function-level imports included), and the modules run
in a fresh interpreter in which the forbidden modules cannot be imported at all.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mlsim_live"
COMMANDS = sorted(p.stem for p in (PACKAGE / "cli").glob("*.py") if not p.stem.startswith("_"))

# module (file under mlsim_live/, or a folder) -> modules it must never import, even lazily
FORBIDDEN = {
    "live": ("mlsim_live.bench", "mlsim_live.batch", "mlsim_live.cli", "mlsim_live.viewer"),
    "replay": ("mlsim_live.bench", "mlsim_live.batch", "mlsim_live.cli", "mlsim_live.viewer"),
    "recon": ("mlsim_live.bench", "mlsim_live.batch", "mlsim_live.live", "mlsim_live.cli"),
    "engine": ("mlsim_live.bench", "mlsim_live.batch", "mlsim_live.live", "mlsim_live.cli"),
    "io": ("mlsim_live.batch", "mlsim_live.live", "mlsim_live.replay", "mlsim_live.cli"),
    "sim": ("mlsim_live.live", "mlsim_live.batch", "mlsim_live.cli"),
    "batch": ("mlsim_live.live", "mlsim_live.replay", "mlsim_live.cli", "mlsim_live.viewer"),
    "latency.py": ("mlsim_live",),
    # the viewer's models (napari-style): what is shown, the trust overlay, snapshots; no Qt
    **{
        f"viewer/{name}.py": ("PyQt5", "PyQt6", "PySide2", "PySide6", "pyqtgraph", "qtpy")
        for name in ("content", "trust_overlay", "snapshot", "imaging", "status", "display")
    },
    "constants.py": ("mlsim_live",),
}


def imported_modules(path: Path) -> set[str]:
    """Every module an import statement in ``path`` names, at any depth."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def python_files(where: str) -> list[Path]:
    target = PACKAGE / where
    assert target.exists(), f"{where} is not in the package; update FORBIDDEN"
    return [target] if target.is_file() else sorted(target.rglob("*.py"))


@pytest.mark.parametrize("where", sorted(FORBIDDEN))
def test_modules_import_nothing_upstream(where: str) -> None:
    broken = []
    for path in python_files(where):
        for name in imported_modules(path):
            for forbidden in FORBIDDEN[where]:
                if name == forbidden or name.startswith(forbidden + "."):
                    broken.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("command", COMMANDS)
def test_commands_borrow_nothing_from_sibling_commands(command: str) -> None:
    siblings = {f"mlsim_live.cli.{c}" for c in COMMANDS if c != command}
    names = imported_modules(PACKAGE / "cli" / f"{command}.py")
    borrowed = sorted(n for n in names if any(n == s or n.startswith(s + ".") for s in siblings))
    assert not borrowed, f"cli/{command}.py takes {borrowed} from a sibling command"


BLOCKER = """
import importlib.abc, sys
BLOCKED = {blocked!r}
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError(f"{{name}} is blocked in this test")
        return None
sys.meta_path.insert(0, Blocker())
"""


def run_blocked(blocked: tuple[str, ...], code: str, tmp_path: Path) -> None:
    script = BLOCKER.format(blocked=blocked) + textwrap.dedent(code)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "OK" in done.stdout


def test_live_pipeline_runs_without_bench_batch_cli_or_qt(tmp_path: Path) -> None:
    """The worker, the processor and the SR writer run with those modules unimportable."""
    code = """
    import numpy as np
    from mlsim_live.live.processor import SIMProcessor
    from mlsim_live.recon.widefield import WidefieldReconstructor

    proc = SIMProcessor(reconstructor=WidefieldReconstructor(), policy="all", out="out", name="b")
    rng = np.random.default_rng(0)
    for t in range(2):
        for a in range(3):
            for p in range(3):
                frame = rng.integers(100, 200, (16, 16)).astype(np.uint16)
                proc(frame, {"Axes": {"time": t, "angle": a, "phase": p}})
    summary = proc.close(timeout=60)
    assert summary["groups_reconstructed"] == 2, summary
    print("OK")
    """
    blocked = ("mlsim_live.bench", "mlsim_live.batch", "mlsim_live.cli", "PyQt5", "pyqtgraph")
    run_blocked(blocked, code, tmp_path)


def test_replay_source_opens_without_the_batch_runner(tmp_path: Path) -> None:
    code = """
    import numpy as np, tifffile
    from mlsim_live.replay.sources import open_source

    tifffile.imwrite("raw.tif", np.full((9, 8, 8), 100, np.uint16))
    with open_source("raw.tif") as source:
        assert source.name == "raw" and len(list(source)) == 9
    print("OK")
    """
    run_blocked(("mlsim_live.batch", "mlsim_live.bench", "mlsim_live.cli"), code, tmp_path)


def test_headless_reconstruction_needs_no_viewer_micro_manager_or_training_extra(
    tmp_path: Path,
) -> None:
    """What a Dask worker runs works with the `viewer`, `mm` and `train` extras missing."""
    code = """
    import numpy as np, tifffile
    from mlsim_live.cli import main

    rng = np.random.default_rng(0)
    tifffile.imwrite("raw.tif", rng.integers(100, 200, (9, 16, 16)).astype(np.uint16))
    assert main(["reconstruct", "raw.tif", "--out", "out", "--method", "wiener"]) == 0
    assert main(["replay", "raw.tif", "--out", "r", "--method", "widefield", "--headless"]) == 0
    print("OK")
    """
    blocked = ("PyQt5", "pyqtgraph", "pycromanager", "pymmcore", "skimage", "torch")
    run_blocked(blocked, code, tmp_path)
