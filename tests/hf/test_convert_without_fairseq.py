"""Converting a fairseq checkpoint needs fairseq's files, not fairseq: no import, no global side effect.

The checkpoint loads under a local ``torch.serialization.safe_globals``, so torch's process-wide
allow-list is the same afterwards; NODE options an older checkpoint lacks take fairseq's defaults
without reading them from ``node_seq.fairseq``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hf_helpers import REPO

pytestmark = pytest.mark.slow  # every test converts variant_run (fairseq-train, tests/hf/conftest.py)

CONVERT = """
import argparse, sys, torch
from node_seq.hf.convert import convert
before = set(torch.serialization.get_safe_globals())  # after the imports (torch's own modules add to it)
convert(sys.argv[1], sys.argv[2], sys.argv[3])
assert argparse.Namespace not in torch.serialization.get_safe_globals()
imported = sorted(name for name in sys.modules if name.split(".")[0] == "fairseq" or name.startswith("node_seq.fairseq"))
assert not imported, imported
assert set(torch.serialization.get_safe_globals()) == before, torch.serialization.get_safe_globals()
print("ok")
"""


def test_converting_imports_no_fairseq_and_leaves_torchs_allow_list_alone(variant_run, tmp_path):
    out = tmp_path / "hf"
    result = subprocess.run([sys.executable, "-c", CONVERT, str(variant_run.checkpoint), str(variant_run.bin), str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "ok"
    # the same folder as converting in a process that has fairseq (the parity tests' conversion)
    assert json.loads((out / "config.json").read_text()) == json.loads((variant_run.hf / "config.json").read_text())


def test_converting_keeps_namespace_allowed_where_node_seq_fairseq_allowed_it(variant_run):
    # torch's own safe_globals context would remove it on exit, breaking fairseq's loads afterwards
    import argparse

    import torch

    import node_seq.fairseq  # noqa: F401  (allows argparse.Namespace for the whole process)
    from node_seq.hf.convert import load_fairseq_checkpoint

    before = set(torch.serialization.get_safe_globals())
    assert argparse.Namespace in before
    load_fairseq_checkpoint(variant_run.checkpoint)
    assert set(torch.serialization.get_safe_globals()) == before


def test_node_options_an_older_checkpoint_lacks_take_fairseqs_defaults(variant_run):
    from node_seq.fairseq import options
    from node_seq.hf.convert import config_from_fairseq, load_fairseq_checkpoint
    from node_seq.nn.options import NodeOptions

    args, _ = load_fairseq_checkpoint(variant_run.checkpoint)
    for name in [name for name in vars(args) if name.startswith("node_")]:
        delattr(args, name)
    config = config_from_fairseq(args, 40)
    options.fill_defaults(args)  # what fairseq does with such a checkpoint
    assert options.validate(args) == NodeOptions()
    assert config.solver_config() == NodeOptions().solver()
    assert config.node_options() == NodeOptions()
    assert config.use_cache is (NodeOptions().incremental_cache and NodeOptions().solver().is_fixed_grid)
