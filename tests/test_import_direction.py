"""Imports point down only: ``ode`` <- ``nn`` <- ``fairseq`` | ``hf``; ``vision`` beside the front ends.

Two checks. A static one reads every import statement of a layer's files (function bodies
included, relative imports resolved), so a lazy import pointing up fails too. A dynamic one imports
every module of the lower layers in a fresh interpreter and looks at ``sys.modules``, so what a
third-party package drags in (transformers, fairseq) is caught too.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

FRONT_ENDS = ("node_seq.hf", "node_seq.fairseq", "vision", "benchmarks", "transformers", "fairseq")

#: layer -> what it must not import (a name covers its submodules)
FORBIDDEN = {
    "node_seq.ode": ("node_seq.nn", "torch.nn.attention", *FRONT_ENDS),  # the core knows no attention
    "node_seq.memory": ("node_seq.nn", *FRONT_ENDS),
    "node_seq.elastic": ("node_seq.nn", *FRONT_ENDS),  # the sweep sets layers' solvers, whatever the layers
    "node_seq.significance": ("node_seq.nn", *FRONT_ENDS),
    "node_seq.nn": FRONT_ENDS,
    # the text pipeline serves both front ends (it runs fairseq's preprocessing, never a front end)
    "node_seq.text": ("node_seq.hf", "node_seq.fairseq", "vision", "benchmarks", "transformers"),
    "node_seq.hf": ("node_seq.fairseq", "fairseq", "vision", "benchmarks"),
    "node_seq.fairseq": ("node_seq.hf", "transformers", "vision", "benchmarks"),
    "vision": ("node_seq.hf", "node_seq.fairseq", "transformers", "fairseq", "benchmarks"),
    "benchmarks": ("vision",),
}


def imports_of(source: str, package: str) -> set[str]:
    """Every module an import statement in ``source`` may load; ``package`` resolves relative ones."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) if node.level \
                else node.module
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names}  # a name may be a submodule
    return found


def files_of(layer: str) -> dict[Path, str]:
    """The layer's source files, each with the package its relative imports start from."""
    path = REPO.joinpath(*layer.split("."))
    if path.with_suffix(".py").is_file():
        return {path.with_suffix(".py"): layer.rpartition(".")[0]}
    return {file: ".".join(file.relative_to(REPO).parent.parts) for file in sorted(path.rglob("*.py"))}


def violations(names: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(name for name in names if any(name == f or name.startswith(f + ".") for f in forbidden))


def test_the_scan_resolves_relative_imports_and_sees_lazy_ones():
    source = "from ..nn.layers import X\nfrom .. import hf\ndef f():\n    import transformers.models\n"
    names = imports_of(source, "node_seq.ode")
    assert {"node_seq.nn.layers", "node_seq.hf", "transformers.models"} <= names
    assert violations(names, FORBIDDEN["node_seq.ode"]) == ["node_seq.hf", "node_seq.nn.layers",
                                                            "node_seq.nn.layers.X", "transformers.models"]


@pytest.mark.parametrize("layer", FORBIDDEN)
def test_no_import_statement_points_up(layer):
    files = files_of(layer)
    assert files, f"{layer}: no source files found"
    found = {str(file.relative_to(REPO)): violations(imports_of(file.read_text(encoding="utf-8"), package),
                                                     FORBIDDEN[layer])
             for file, package in files.items()}
    assert not {file: names for file, names in found.items() if names}


# Lower layers first: each may import the ones before it, which were checked against stricter lists.
IMPORTED_IN_ORDER = ("node_seq.ode", "node_seq.memory", "node_seq.nn", "vision")

IMPORT_EVERY_MODULE = """
import importlib, json, pkgutil, sys
for layer, forbidden in json.loads(sys.argv[1]):
    module = importlib.import_module(layer)
    for info in pkgutil.walk_packages(getattr(module, "__path__", []), layer + "."):
        importlib.import_module(info.name)
    found = sorted(name for name in sys.modules if any(name == f or name.startswith(f + ".") for f in forbidden))
    assert not found, f"importing {layer} loads {found}"
print("ok")
"""


@pytest.mark.slow
def test_importing_the_lower_layers_loads_no_front_end():
    import json

    # torch may load its own attention package for itself one day: that rule is the static check's only
    layers = json.dumps([(layer, [f for f in FORBIDDEN[layer] if not f.startswith("torch.")])
                         for layer in IMPORTED_IN_ORDER])
    result = subprocess.run([sys.executable, "-c", IMPORT_EVERY_MODULE, layers], cwd=REPO, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "ok"
