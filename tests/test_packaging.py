"""setup.py's extras: each feature's extra brings every package its modules import, and constraints.txt
pins every package setup.py names (the set-up installs through it)."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions

import pytest

from setup_py import REPO, setup_arguments

ARGUMENTS = setup_arguments()
# extra -> the code it must be enough for (with install_requires); "all" covers tests and benchmarks.
EXTRA_PACKAGES = {"fairseq": ["node_seq/fairseq", "node_seq/text", "user_dir"], "hf": ["node_seq/hf"],
                  "vision": ["vision", "node_seq/plotting.py"], "docs": ["docs"]}
FEATURES = {
    None: sorted(str(path.relative_to(REPO)) for path in (REPO / "node_seq").iterdir()  # the core: all the rest
                 if path.name != "__pycache__" and (path.suffix == ".py" or path.is_dir())
                 and str(path.relative_to(REPO)) not in sum(EXTRA_PACKAGES.values(), [])),
    **EXTRA_PACKAGES,
    "all": ["tests", "benchmarks"],
}
OWN = {"node_seq", "vision", "benchmarks"} | {path.stem for path in (REPO / "tests").rglob("*.py")}
# Import names that are not their distribution's name, for environments without every extra installed.
DISTRIBUTIONS = {"fairseq": ["fairseq-fixed"], "fairseq_cli": ["fairseq-fixed"], "sklearn": ["scikit-learn"],
                 "yaml": ["PyYAML"]}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return normalized(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement).group(0))


def third_party_imports(paths: list[str]) -> dict[str, str]:
    """Top-level name -> the first file importing it, over every ``import`` (module level or not)."""
    found: dict[str, str] = {}
    for base in map(REPO.joinpath, paths):
        for path in [base] if base.is_file() else sorted(base.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    names = [node.module]
                else:
                    continue
                for top in (name.split(".")[0] for name in names):
                    if top not in sys.stdlib_module_names and top not in OWN:
                        found.setdefault(top, str(path.relative_to(REPO)))
    return found


@pytest.mark.parametrize("extra", list(FEATURES), ids=lambda extra: extra or "install_requires")
def test_each_extra_brings_what_its_modules_import(extra):
    declared = {requirement_name(r) for r in ARGUMENTS["install_requires"] + ARGUMENTS["extras_require"].get(extra, [])}
    distributions = {**DISTRIBUTIONS, **packages_distributions()}
    imports = third_party_imports(FEATURES[extra])
    assert imports, FEATURES[extra]
    undeclared = {name: where for name, where in imports.items()
                  if not declared & {normalized(d) for d in distributions.get(name, [name])}}
    assert undeclared == {}


def test_constraints_pin_every_package_setup_names():
    pinned = {normalized(line.split("==")[0]) for line in (REPO / "constraints.txt").read_text().splitlines()
              if "==" in line and not line.startswith("#")}
    named = {requirement_name(r) for r in ARGUMENTS["install_requires"]}
    named |= {requirement_name(r) for extra in ARGUMENTS["extras_require"].values() for r in extra}
    assert named - pinned == set()
    assert {"tokenizers", "sacrebleu"} <= named


def test_all_is_every_extra():
    extras = ARGUMENTS["extras_require"]
    assert set(extras["all"]) == {r for name, extra in extras.items() if name != "all" for r in extra}


def test_changelog_has_a_section_for_the_version():
    """A version bump (node_seq.__version__, the one place; setup.py reads it) comes with its changelog entry."""
    import node_seq

    assert ARGUMENTS["version"] == node_seq.__version__
    headings = re.findall(r"^## (\S+)", (REPO / "CHANGELOG.md").read_text(encoding="utf-8"), re.MULTILINE)
    assert headings[0] == "Unreleased" and node_seq.__version__ in headings
