"""HuggingFace Transformers front end of node-seq: config, models, cache, conversion from fairseq.

Importing this package registers the ``node_transformer`` type with ``AutoConfig``, ``AutoModel``,
``AutoModelForSeq2SeqLM`` and ``AutoTokenizer`` (:func:`register`). ``import node_seq`` alone does
not import it, but arranges for it to be imported along with transformers.
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


register()
