"""HuggingFace Transformers front end of node-seq: config, models, cache, conversion from fairseq.

``import node_seq`` calls :func:`register` when transformers is installed, after which
``AutoConfig``, ``AutoModel``, ``AutoModelForSeq2SeqLM`` and ``AutoTokenizer`` know the
``node_transformer`` type.
"""

from .configuration_node_transformer import NodeTransformerConfig as NodeTransformerConfig
from .modeling_node_transformer import (
    NodeCache as NodeCache,
    NodeNFE as NodeNFE,
    NodeTransformerForConditionalGeneration as NodeTransformerForConditionalGeneration,
    NodeTransformerModel as NodeTransformerModel,
)
from .tokenization_node_transformer import NodeTransformerTokenizerFast as NodeTransformerTokenizerFast


def register() -> None:
    """Make the Auto classes resolve ``model_type: node_transformer`` (idempotent)."""
    from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM, AutoTokenizer

    AutoConfig.register(NodeTransformerConfig.model_type, NodeTransformerConfig, exist_ok=True)
    AutoModel.register(NodeTransformerConfig, NodeTransformerModel, exist_ok=True)
    AutoModelForSeq2SeqLM.register(NodeTransformerConfig, NodeTransformerForConditionalGeneration, exist_ok=True)
    AutoTokenizer.register(NodeTransformerConfig, tokenizer_class=NodeTransformerTokenizerFast, exist_ok=True)
