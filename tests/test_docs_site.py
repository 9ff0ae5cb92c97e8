"""The documentation site: ``mkdocs build --strict`` passes (no broken link, no page missing from the nav),
and its generated references say what the code says: every option, every registered method (one
registered for the test included), every command. README.md is the landing page: small, its links
valid on GitHub too.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import pytest

from node_seq.nn.options import OPTIONS, VISION
from node_seq.ode import MethodSpec, registered
from node_seq.ode.methods import HEUN, LEARNED
from node_seq.ode.schemes import GatedRK2
from setup_py import REPO, setup_arguments

pytest.importorskip("mkdocs")


def _load_hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", REPO / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hooks = _load_hooks()
# A learned block of the test's own: the sequence models take it, the vision config does not.
TOY_BLOCK = MethodSpec("toy_gated_euler", LEARNED, None, 2, ("backprop",), "a toy gated block",
                       scheme=GatedRK2(HEUN))


@pytest.mark.slow
def test_site_builds_strictly(tmp_path):
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                           cwd=REPO, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert built.returncode == 0, built.stderr[-3000:]
    assert "WARNING" not in built.stderr
    for page in ("index", "reference/options/index", "reference/methods/index", "reference/commands/index",
                 "reference/api/ode/index", "changelog/index", "results/index", "tutorials/index"):
        assert (tmp_path / "site" / f"{page}.html").is_file(), page
    api = (tmp_path / "site" / "reference" / "api" / "ode" / "index.html").read_text(encoding="utf-8")
    assert 'id="node_seq.ode.solve.solve"' in api and 'id="node_seq.ode.SolverConfig"' in api


def test_option_page_has_every_option_as_each_front_end_spells_it():
    page = hooks.option_page()
    for option in OPTIONS.values():
        assert f"\n## {option.name}\n\n{option.help}." in page
        assert all(f"`{option.spelled(front_end)}`" in page for front_end in option.front_ends)
    assert "| [`steps`](#steps) | `--node-steps` | `node_steps` | `--node-steps` | `steps`, `--steps` |" in page
    assert "| [`compile`](#compile) | `--node-compile` | - | - | - | - | `bool` | `False` |" in page


def test_method_page_shows_a_method_registered_later():
    with registered(TOY_BLOCK):
        page = hooks.method_page()
        assert "| `toy_gated_euler` | learned | - | 2 | `backprop` | - | fairseq, hf, train_hf, fairseq_lm, hf_lm, " \
               "train_hf_lm | a toy gated block |" in page
        assert VISION not in hooks.accepting_front_ends("toy_gated_euler")
    assert "toy_gated_euler" not in hooks.method_page()
    assert "| `rk4` | fixed | 4 | 4 | `backprop`, `checkpoint`, `adjoint` | yes | all |" in page


def test_command_page_has_every_console_script_with_its_help():
    page = hooks.command_page()
    names = [entry.split("=")[0].strip() for entry in setup_arguments()["entry_points"]["console_scripts"]]
    assert re.findall(r"^## (\S+)$", page, re.MULTILINE) == names
    assert page.count("```text\nusage: ") == len(names)
    assert "usage: node-seq-numbers [-h]" in page  # named as the user types it, not as __main__.py
    assert "`python -m vision.train` from a checkout." in page


def test_readme_is_a_landing_page_whose_links_work_on_github():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.encode()) <= 8 * 1024
    assert "bash scripts/demo.sh" in readme and "bash scripts/test.sh" in readme
    targets = [target for target in re.findall(r"\]\(([^)\s]+)\)", readme) if not target.startswith("http")]
    assert any(target.endswith(".png") for target in targets) and any(t.startswith("docs/") for t in targets)
    assert [target for target in targets if not (REPO / target.split("#")[0]).exists()] == []


def test_landing_page_links_the_sites_pages():
    page = hooks.landing_page()
    assert "](guides/ode-core.md)" in page and "](changelog.md)" in page and "](/BENCHMARKS.md)" in page
    assert "docs/" not in re.sub(r"`[^`]*`", "", "".join(re.findall(r"\]\([^)]*\)", page)))
