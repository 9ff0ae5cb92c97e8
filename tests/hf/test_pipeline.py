"""``pipeline("text-generation")`` on a saved LM folder continues a prompt as the model's own ``generate`` does;
the seq2seq pipelines are gone from transformers 5, which docs/hf/switches.md says (checked here)."""

import json

import pytest
import torch
from transformers import pipeline

from node_seq.hf import (
    NodeTransformerConfig, NodeTransformerForCausalLM, NodeTransformerForConditionalGeneration, NodeTransformerLMConfig,
)
from node_seq.hf.tokenization_node_transformer import LANGUAGE_MODEL, SEQ2SEQ, build_tokenizer
from node_seq.text.tokenizer import train_tokenizer

SENTENCES = ["the cat sat on the mat", "a dog ran in the park", "one two three four five"] * 10


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory) -> dict:
    text = tmp_path_factory.mktemp("text") / "train.txt"
    text.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    return json.loads(train_tokenizer([text], vocab_size=60).to_str())


@pytest.fixture(scope="module")
def lm_folder(tmp_path_factory, tokenizer_json):
    """A tiny LM with its tokenizer, weights nudged so greedy decoding does not repeat one token at once."""
    tokenizer = build_tokenizer(tokenizer_json, kind=LANGUAGE_MODEL)
    torch.manual_seed(0)
    model = NodeTransformerForCausalLM(NodeTransformerLMConfig(
        vocab_size=len(tokenizer), decoder_embed_dim=16, decoder_ffn_dim=32, decoder_attention_heads=2,
        node_method="rk4", dropout=0.0))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    folder = tmp_path_factory.mktemp("lm")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, model.eval(), tokenizer


@pytest.mark.parametrize("prompt", ["the cat", "one two"])
def test_text_generation_pipeline_continues_a_prompt_as_generate_does(lm_folder, prompt):
    folder, model, tokenizer = lm_folder
    generator = pipeline("text-generation", model=str(folder))
    assert isinstance(generator.model, NodeTransformerForCausalLM)
    inputs = tokenizer(prompt, return_tensors="pt")  # </s> first, as fairseq's LM reads a sentence
    expected = model.generate(**inputs, max_new_tokens=6, do_sample=False)[0]
    ids = generator(prompt, max_new_tokens=6, do_sample=False, return_tensors=True)[0]["generated_token_ids"]
    assert list(ids) == expected.tolist() and len(ids) > inputs["input_ids"].shape[1]
    text = generator(prompt, max_new_tokens=6, do_sample=False)[0]["generated_text"]
    # The pipeline decodes the new tokens on their own and appends them to the prompt.
    new = tokenizer.decode(expected[inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert text == prompt + new


@pytest.mark.parametrize("task", ["translation", "text2text-generation", "summarization"])
def test_the_seq2seq_pipelines_no_longer_exist_in_transformers_5(lm_folder, task):
    with pytest.raises(KeyError, match=f"The task {task} has been removed from transformers"):
        pipeline(task, model=str(lm_folder[0]))


def test_text_generation_refuses_the_encoder_decoder(tmp_path, tokenizer_json):
    model = NodeTransformerForConditionalGeneration(NodeTransformerConfig(
        vocab_size=60, encoder_embed_dim=16, decoder_embed_dim=16, encoder_ffn_dim=32, decoder_ffn_dim=32,
        encoder_attention_heads=2, decoder_attention_heads=2))
    model.save_pretrained(tmp_path)
    build_tokenizer(tokenizer_json, kind=SEQ2SEQ).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"(?s)Unrecognized configuration class <class '\S+\.NodeTransformerConfig'> for this "
                                         r"kind of AutoModel: AutoModelForCausalLM"):
        pipeline("text-generation", model=str(tmp_path))
