"""Imports inside ``src/mimic`` run one way: from a layer to its own or a lower one, the library under the pipeline.

Each top-level module or package of ``mimic`` belongs to one layer below; a new one must be placed
(the test names it). The imports that still run upward are listed in ``KNOWN_UPWARD``: the list may only
shrink (a fixed one must be removed from it, a new one fails).
"""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mimic"

LAYERS = [  # bottom first
    ("foundation", {"errors", "io"}),
    ("models", {"models"}),
    ("shift", {"shift"}),
    ("data", {"data", "metrics"}),
    ("methods", {"methods"}),
    ("training", {"training", "evaluation"}),
    ("tiny", {"tiny"}),
    ("pipeline", {"pipeline", "report"}),
    ("entry", {"commands", "cli"}),
]
# Training still reads pipeline objects (the teacher cache's paths and settings, the default train settings).
KNOWN_UPWARD = {("training", "pipeline")}


def unit(module: str) -> str:
    """The top-level module or package of a dotted ``mimic.`` name."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "mimic"


def imports() -> dict[tuple[str, str], str]:
    """``{(importing unit, imported unit): a file where it happens}`` over every module of the package."""
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        here = unit(".".join(path.relative_to(SRC.parent).with_suffix("").parts))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mimic":
                targets = [node.module] if node.module != "mimic" else [f"mimic.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.split(".")[0] == "mimic"]
            else:
                continue
            for target in targets:
                if unit(target) not in (here, "mimic") and here != "mimic":
                    found.setdefault((here, unit(target)), str(path.relative_to(SRC.parent)))
    return found


def rank() -> dict[str, int]:
    return {name: i for i, (_, names) in enumerate(LAYERS) for name in names}


def test_every_module_and_package_is_in_a_layer():
    units = {p.stem for p in SRC.glob("*.py") if p.stem != "__init__"}
    units |= {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    declared = set(rank())
    assert units - declared == set(), "place these in a layer of tests/test_import_layers.py"
    assert declared - units == set(), "these layer entries no longer exist"


def test_imports_run_to_the_same_or_a_lower_layer():
    order = rank()
    upward = {(a, b): where for (a, b), where in imports().items() if order[b] > order[a]}
    new = {pair: where for pair, where in upward.items() if pair not in KNOWN_UPWARD}
    assert not new, f"imports that run up a layer: {new}"
    assert set(upward) == KNOWN_UPWARD, f"fixed, remove from KNOWN_UPWARD: {KNOWN_UPWARD - set(upward)}"


def test_the_layers_see_real_imports():
    """Not vacuous: the walk finds the imports every layer is built on."""
    found = imports()
    assert ("methods", "shift") in found and ("shift", "models") in found and ("commands", "training") in found
    assert ("shift", "methods") not in found
