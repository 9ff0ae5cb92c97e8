"""``import node_seq`` registers the HF classes when transformers is there, and still works when it is not."""

import subprocess
import sys

from transformers import AutoConfig

from hf_helpers import REPO

WITHOUT = """
import importlib.abc, sys

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("transformers", "fairseq"):
            raise ModuleNotFoundError(f"No module named {name!r}")

sys.meta_path.insert(0, Absent())
import node_seq
from node_seq.ode import solve
import torch
y, stats = solve(lambda t, y: -y, torch.ones(2), method="euler", steps=2)
assert stats.nfe_forward == 2 and "transformers" not in sys.modules and "fairseq" not in sys.modules
print("ok")
"""


def test_import_node_seq_works_without_transformers_and_fairseq():
    result = subprocess.run([sys.executable, "-c", WITHOUT], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_import_node_seq_registers_config_model_and_tokenizer():
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING
    from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING

    from node_seq.hf import NodeTransformerConfig, NodeTransformerForConditionalGeneration, NodeTransformerTokenizerFast

    assert type(AutoConfig.for_model("node_transformer")) is NodeTransformerConfig
    assert MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING[NodeTransformerConfig] is NodeTransformerForConditionalGeneration
    assert TOKENIZER_MAPPING[NodeTransformerConfig] is NodeTransformerTokenizerFast
