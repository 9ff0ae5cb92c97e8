"""Every command is a console script of setup.py that resolves to a command line; every command the
documents and shell recipes run is a module that exists, and every test they cite is there.

The shared venv is not reinstalled by the tests, so the console scripts are checked through their
targets: the module imports, the function is there, and it answers ``--help`` as a command line.
"""

from __future__ import annotations

import importlib
import importlib.util
import re

import pytest

from setup_py import REPO, setup_arguments

# Modules run with ``python -m`` that are not console scripts, and why.
NOT_CONSOLE_SCRIPTS = {
    "node_seq.fairseq.options": "lists fairseq-train's --node-* options (fairseq-train --help cannot); no function",
    "vision.throughput": "a benchmark that benchmarks.gpu_suite runs as a command (benchmarks may not import vision)",
}


def console_scripts() -> dict[str, tuple[str, str]]:
    """``name -> (module, function)`` from setup.py's ``entry_points``, the module named as this checkout
    imports it (setup.py's ``package_dir`` installs the folder ``vision`` as ``node_seq_vision``)."""
    arguments = setup_arguments()
    scripts = {}
    for entry in arguments["entry_points"]["console_scripts"]:
        name, target = (part.strip() for part in entry.split("="))
        module, function = target.split(":")
        package, _, rest = module.partition(".")
        scripts[name] = (".".join([arguments["package_dir"].get(package, package), rest]), function)
    return scripts


SCRIPTS = console_scripts()
#: The documents people read: the guides moved from README.md into the site's pages under docs/.
DOCUMENTS = [REPO / name for name in ("README.md", "BENCHMARKS.md", "RELIABILITY.md", "vision/README.md")] \
    + sorted((REPO / "docs").rglob("*.md"))


def test_console_scripts_are_named_after_the_project():
    assert len(SCRIPTS) == 13 and all(name.startswith("node-seq-") for name in SCRIPTS)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_console_script_is_a_command_line(name, capsys):
    module, function = SCRIPTS[name]
    command = getattr(importlib.import_module(module), function)
    assert callable(command)
    with pytest.raises(SystemExit) as info:
        command(["--help"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("usage: ")


def _main_modules() -> set[str]:
    """Modules of the installed packages that run as ``python -m``."""
    found = set()
    for package in ("node_seq", "vision"):
        for path in (REPO / package).rglob("*.py"):
            if 'if __name__ == "__main__":' in path.read_text(encoding="utf-8"):
                found.add(".".join(path.relative_to(REPO).with_suffix("").parts))
    return found


def test_every_command_module_has_a_console_script():
    targets = {module for module, _ in SCRIPTS.values()}
    assert _main_modules() - set(NOT_CONSOLE_SCRIPTS) == targets


def _documented_commands() -> dict[str, str]:
    """``module -> file`` for every ``python -m MODULE`` in the documents and shell recipes."""
    files = DOCUMENTS + sorted((REPO / "scripts").glob("*.sh")) + sorted((REPO / "benchmarks").glob("*.sh"))
    commands = {}
    for path in files:
        for module in re.findall(r"python -m ([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)", path.read_text(encoding="utf-8")):
            if module.split(".")[0] in ("node_seq", "vision", "benchmarks"):
                commands[module] = str(path.relative_to(REPO))
    return commands


def test_documented_commands_exist():
    commands = _documented_commands()
    assert {"node_seq.text.numbers", "node_seq.text.prepare", "node_seq.text.score",
            "node_seq.hf.cli.train"} <= set(commands)
    missing = {module: where for module, where in commands.items() if not _importable(module)}
    assert missing == {}


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def test_scripts_holds_shell_recipes_only():
    assert [path.name for path in (REPO / "scripts").iterdir() if path.suffix != ".sh"] == []


def test_documented_tests_exist():
    """``test_x.py::test_name`` in the documents names a test function of that file."""
    cited = set()
    for path in DOCUMENTS:
        cited |= set(re.findall(r"(test_\w+\.py)::(test_\w+)", path.read_text(encoding="utf-8")))
    assert len(cited) > 20
    defined = {(path.name, test) for path in (REPO / "tests").rglob("test_*.py")
               for test in re.findall(r"^def (test_\w+)", path.read_text(encoding="utf-8"), re.MULTILINE)}
    assert cited - defined == set()
