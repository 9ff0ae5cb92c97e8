"""Registration with the HF Auto classes, and what ``import node_seq`` costs.

``import node_seq`` loads neither transformers nor fairseq; importing ``node_seq.hf`` registers
``node_transformer``, and importing transformers (before or after ``import node_seq``) imports
``node_seq.hf``. Each case runs in a fresh interpreter, since this one has imported everything.
"""

import subprocess
import sys

import pytest
from transformers import AutoConfig

from hf_helpers import REPO, tiny_model

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

NODE_SEQ_FIRST = """
import importlib.util, sys
import node_seq, node_seq.ode
assert not {"transformers", "fairseq", "node_seq.hf"} & set(sys.modules), sorted(sys.modules)
assert importlib.util.find_spec("transformers") is not None  # an availability check imports nothing
assert "transformers" not in sys.modules
"""

TRANSFORMERS_FIRST = """
import sys
import transformers
import node_seq
"""

USE_AUTO_CLASSES = """
from transformers import AutoConfig, AutoModelForSeq2SeqLM
config = AutoConfig.for_model("node_transformer")
model = AutoModelForSeq2SeqLM.from_pretrained(sys.argv[1])
assert type(config) is node_seq.hf.NodeTransformerConfig
assert type(model) is node_seq.hf.NodeTransformerForConditionalGeneration
print("ok")
"""


def run(code: str, *args: str) -> str:
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.slow
def test_import_node_seq_works_without_transformers_and_fairseq():
    assert run(WITHOUT) == "ok"


@pytest.mark.slow
@pytest.mark.parametrize("first", [NODE_SEQ_FIRST, TRANSFORMERS_FIRST], ids=["node_seq_first", "transformers_first"])
def test_after_import_node_seq_the_auto_classes_know_node_transformer(first, tmp_path):
    tiny_model().save_pretrained(tmp_path)  # config.json says model_type node_transformer
    assert run(first + USE_AUTO_CLASSES, str(tmp_path)) == "ok"


def test_importing_node_seq_hf_registers_config_model_and_tokenizer():
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING
    from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING

    from node_seq.hf import NodeTransformerConfig, NodeTransformerForConditionalGeneration, NodeTransformerTokenizerFast

    assert type(AutoConfig.for_model("node_transformer")) is NodeTransformerConfig
    assert MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING[NodeTransformerConfig] is NodeTransformerForConditionalGeneration
    assert TOKENIZER_MAPPING[NodeTransformerConfig] is NodeTransformerTokenizerFast
