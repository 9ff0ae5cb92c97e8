"""The release as a user gets it: ``python -m build`` makes an sdist and, from that sdist, a wheel; the
wheel installed with ``[hf]`` into a fresh venv imports ``node_seq.hf`` and runs its commands.

What this proves: the sdist holds all the wheel is built from; the wheel holds every file of
``node_seq/`` and every module of ``vision/`` (as ``node_seq_vision``) and no top-level ``vision``;
every console script of setup.py is installed and its target loads; the wheel's requirements with
``[hf]`` are met by the tested versions (constraints.txt, this environment's); node_seq there comes
from the wheel alone (the checkout's editable install is hidden, and the test checks it is).
What it does not: the venv borrows this environment's third-party packages (torch, transformers, ...)
through a ``.pth`` file and pip runs with ``--no-index``, so nothing is downloaded, which also means
it does not show that pip would fetch or build them; the other extras' packages are visible too; and
the build uses this environment's setuptools (``--no-isolation``), not a fresh one as a plain
``python -m build`` does.
"""

from __future__ import annotations

import configparser
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from node_seq import __version__
from node_seq.text.numbers import SPLITS, write_task
from setup_py import REPO, setup_arguments

pytestmark = pytest.mark.slow

WHEEL, SDIST, DIST_INFO = (f"node_seq-{__version__}-py3-none-any.whl", f"node_seq-{__version__}.tar.gz",
                           f"node_seq-{__version__}.dist-info")

ARGUMENTS = setup_arguments()
VISION_PACKAGE = next(package for package, folder in ARGUMENTS["package_dir"].items() if folder == "vision")
# This environment's site-packages entries the fresh venv must not see: node-seq itself (an editable
# install of the checkout).
HIDDEN = {"node_seq", "vision", VISION_PACKAGE}
# Run inside the venv: where node-seq comes from, and every console script's target loaded.
PROBE = """
import importlib.metadata, importlib.util, json
import node_seq, node_seq.hf
copies = [d for d in importlib.metadata.distributions() if d.metadata["Name"] == "node-seq"]
scripts = {ep.name: ep.value for ep in copies[0].entry_points if ep.group == "console_scripts"}
for ep in copies[0].entry_points:
    ep.load()
print(json.dumps({"node_seq": node_seq.__file__, "hf": node_seq.hf.__file__, "copies": len(copies),
                  "version": copies[0].version, "__version__": node_seq.__version__, "scripts": scripts,
                  "vision": importlib.util.find_spec("vision") is not None}))
"""


def run(command: list, **kwargs) -> str:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def source_files() -> list[str]:
    """The files a commit would hold: tracked and untracked, less what .gitignore leaves out."""
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO).split("\0")
    return [name for name in listed if name and (REPO / name).is_file() and not (REPO / name).is_symlink()]


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """``python -m build`` of a copy of the checkout (the build writes egg-info beside setup.py)."""
    if importlib.util.find_spec("build") is None:
        pytest.fail("python -m build needs the package build, in the dev extra: pip install -c constraints.txt build")
    root = tmp_path_factory.mktemp("release")
    for name in source_files():
        (root / "source" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, root / "source" / name)
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", root / "dist", root / "source"])
    return root / "dist"


def test_build_makes_an_sdist_and_a_wheel_with_every_module_and_command(dist):
    assert sorted(path.name for path in dist.iterdir()) == [WHEEL, SDIST]
    wheel = zipfile.ZipFile(dist / WHEEL)
    names = set(wheel.namelist())
    # Every file of node_seq/ (a data file left out of the wheel fails here); vision/'s README and
    # results/ are documentation, which no module reads.
    wanted = {name for name in source_files() if name.startswith("node_seq/")}
    wanted |= {f"{VISION_PACKAGE}/{name.removeprefix('vision/')}" for name in source_files()
               if name.startswith("vision/") and name.endswith(".py")}
    assert wanted - names == set()
    assert {name.split("/")[0] for name in names} == {"node_seq", VISION_PACKAGE, DIST_INFO}
    entry_points = configparser.ConfigParser(delimiters=("=",))
    entry_points.optionxform = str
    entry_points.read_string(wheel.read(f"{DIST_INFO}/entry_points.txt").decode())
    declared = dict(entry.split(" = ") for entry in ARGUMENTS["entry_points"]["console_scripts"])
    assert dict(entry_points["console_scripts"]) == declared


def test_the_wheel_with_hf_installs_into_a_fresh_venv_and_runs_its_commands(dist, tmp_path):
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv])  # this pip installs into it (pip --python)
    python, bin_dir = venv / "bin" / "python", venv / "bin"
    environment = {name: value for name, value in os.environ.items()
                   if name not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")}
    environment["PATH"] = f"{bin_dir}{os.pathsep}{environment.get('PATH', '')}"
    # This environment's third-party packages, less node-seq and the installer, seen through one .pth file.
    borrowed = tmp_path / "borrowed"
    borrowed.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not (entry.name.startswith("__") or entry.suffix == ".pth"
                or re.split(r"[-.]", entry.name)[0].lower() in HIDDEN):
            (borrowed / entry.name).symlink_to(entry)
    purelib = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], env=environment)
    Path(purelib.strip(), "borrowed_for_the_test.pth").write_text(f"{borrowed}\n")

    run([sys.executable, "-m", "pip", "--python", python, "install", "--no-index", f"{dist / WHEEL}[hf]"],
        cwd=tmp_path, env=environment)

    found = json.loads(run([python, "-c", PROBE], cwd=tmp_path, env=environment))
    assert Path(found["node_seq"]).is_relative_to(purelib.strip()) and found["copies"] == 1
    assert Path(found["hf"]).is_relative_to(purelib.strip())
    assert found["version"] == found["__version__"] == __version__
    assert found["scripts"] == dict(entry.split(" = ") for entry in ARGUMENTS["entry_points"]["console_scripts"])
    assert not found["vision"]
    assert all((bin_dir / name).is_file() for name in found["scripts"])

    # The installed commands run: the numbers task as the checkout writes it, and two command lines.
    run([bin_dir / "node-seq-numbers", tmp_path / "installed", "--train-size", "100"], cwd=tmp_path, env=environment)
    write_task(tmp_path / "checkout", seed=1, sizes={**SPLITS, "train": 100})
    for name in sorted(path.name for path in (tmp_path / "checkout").iterdir()):
        assert (tmp_path / "installed" / name).read_text() == (tmp_path / "checkout" / name).read_text()
    assert run([bin_dir / "node-seq-train-hf", "--help"], cwd=tmp_path, env=environment) \
        .startswith("usage: node-seq-train-hf")
    assert run([bin_dir / "node-seq-vision-train", "--help"], cwd=tmp_path, env=environment) \
        .startswith(f"usage: python -m {VISION_PACKAGE}.train")
