"""The core package never imports napari: only the plugin package `mlsim_live.napari` does, and
nothing outside it imports the plugin (runs without the ``napari`` extra)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mlsim_live"
PLUGIN = PACKAGE / "napari"


def imported(path: Path) -> set[str]:
    """Every module an import statement in ``path`` names, at any depth (lazy ones too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_nothing_outside_the_plugin_imports_napari_or_the_plugin():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if PLUGIN in path.parents:
            continue
        for name in imported(path):
            top = name.split(".")[0]
            if top in ("napari", "npe2", "magicgui") or name.startswith("mlsim_live.napari"):
                offenders.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_the_plugins_model_modules_import_no_qt_and_no_napari():
    """What the layers hold is decided without a viewer (the view is `reader`, `widget`, `live`)."""
    for module in ("layers.py", "reconstruct.py", "reader.py"):
        names = imported(PLUGIN / module)
        qt_or_napari = sorted(
            n for n in names if n.split(".")[0] in ("napari", "qtpy", "PyQt5", "superqt")
        )
        assert not qt_or_napari, f"mlsim_live/napari/{module} imports {qt_or_napari}"
