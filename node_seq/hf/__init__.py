"""HuggingFace Transformers front end of node-seq: config, models, cache, conversion from fairseq.

Importing this package registers the ``node_transformer`` type with ``AutoConfig``, ``AutoModel``,
``AutoModelForSeq2SeqLM`` and ``AutoTokenizer``, and the ``node_transformer_lm`` type with ``AutoConfig``,
``AutoModel``, ``AutoModelForCausalLM`` and ``AutoTokenizer`` (:func:`register`). ``import node_seq`` alone does
not import it, but arranges for it to be imported along with transformers.
"""

from .configuration_node_transformer import NodeTransformerConfig as NodeTransformerConfig
from .modeling_node_transformer import (
    LORA_TARGET_MODULES as LORA_TARGET_MODULES,
    NodeCache as NodeCache,
    NodeNFE as NodeNFE,
    NodeTransformerForConditionalGeneration as NodeTransformerForConditionalGeneration,
    NodeTransformerModel as NodeTransformerModel,
)
from .configuration_node_transformer_lm import NodeTransformerLMConfig as NodeTransformerLMConfig
from .modeling_node_transformer_lm import (
    NodeTransformerForCausalLM as NodeTransformerForCausalLM,
    NodeTransformerLMModel as NodeTransformerLMModel,
)
from .tokenization_node_transformer import NodeTransformerTokenizerFast as NodeTransformerTokenizerFast


def register() -> None:
    """Make the Auto classes resolve ``model_type: node_transformer`` and ``node_transformer_lm`` (idempotent)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    AutoConfig.register(NodeTransformerConfig.model_type, NodeTransformerConfig, exist_ok=True)
    AutoModel.register(NodeTransformerConfig, NodeTransformerModel, exist_ok=True)
    AutoModelForSeq2SeqLM.register(NodeTransformerConfig, NodeTransformerForConditionalGeneration, exist_ok=True)
    AutoTokenizer.register(NodeTransformerConfig, tokenizer_class=NodeTransformerTokenizerFast, exist_ok=True)
    AutoConfig.register(NodeTransformerLMConfig.model_type, NodeTransformerLMConfig, exist_ok=True)
    AutoModel.register(NodeTransformerLMConfig, NodeTransformerLMModel, exist_ok=True)
    AutoModelForCausalLM.register(NodeTransformerLMConfig, NodeTransformerForCausalLM, exist_ok=True)
    AutoTokenizer.register(NodeTransformerLMConfig, tokenizer_class=NodeTransformerTokenizerFast, exist_ok=True)


register()
