"""Helpers of the HF tests: tiny models, in-process fairseq preprocessing and training."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import torch

import node_seq  # noqa: F401  (registers the Auto classes)
from node_seq.hf import (
    NodeTransformerConfig, NodeTransformerForCausalLM, NodeTransformerForConditionalGeneration, NodeTransformerLMConfig,
)

REPO = Path(__file__).resolve().parents[2]
TINY = dict(vocab_size=40, encoder_embed_dim=16, decoder_embed_dim=16, encoder_ffn_dim=32, decoder_ffn_dim=32,
            encoder_layers=2, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2, dropout=0.0)


def tiny_model(**overrides) -> NodeTransformerForConditionalGeneration:
    """A tiny model whose weights are nudged off their init, so outputs depend on every layer."""
    torch.manual_seed(0)
    model = NodeTransformerForConditionalGeneration(NodeTransformerConfig(**{**TINY, **overrides})).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model


TINY_LM = dict(vocab_size=40, decoder_embed_dim=16, decoder_ffn_dim=32, decoder_layers=2, decoder_attention_heads=2,
               dropout=0.0)


def tiny_lm(**overrides) -> NodeTransformerForCausalLM:
    """A tiny LM whose weights are nudged off their init, so outputs depend on every layer."""
    torch.manual_seed(0)
    model = NodeTransformerForCausalLM(NodeTransformerLMConfig(**{**TINY_LM, **overrides})).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model


# Two prompts, the second left-padded (<pad>=1), both starting with </s>=2 as fairseq's LM reads them.
PROMPTS = torch.tensor([[2, 5, 6, 7, 8], [1, 1, 2, 9, 10]])
PROMPT_MASK = PROMPTS.ne(1).long()

def load_with_report(auto_class, path, **kwargs) -> tuple:
    """``auto_class.from_pretrained(path, **kwargs)`` and the loading report transformers logged
    meanwhile (its warning naming missing, unused and mis-shaped weights; empty when all fit)."""
    from transformers.testing_utils import CaptureLogger
    from transformers.utils import logging

    with CaptureLogger(logging.get_logger("transformers.modeling_utils")) as captured:
        model = auto_class.from_pretrained(path, **kwargs)
    return model, captured.out


# A batch of three sources (right-padded, </s>=2 at the end, <pad>=1).
SOURCE = torch.tensor([[5, 6, 7, 8, 9, 2], [10, 11, 12, 2, 1, 1], [13, 14, 2, 1, 1, 1]])


@dataclasses.dataclass
class FairseqRun:
    raw: Path
    bin: Path
    checkpoint: Path
    hf: Path
    preprocess: Callable[[str], str] = str  # the user's raw line -> the line fairseq-preprocess read
    post_process: str | None = "sentencepiece"  # fairseq-generate --post-process


def fairseq_preprocess(prefix: Path, dest: Path, *, joined: bool) -> Path:
    """fairseq-preprocess ``prefix/{train,valid,test}.{src,tgt}`` into ``dest`` (in this process)."""
    from node_seq.fairseq import inprocess

    argv = ["--source-lang", "src", "--target-lang", "tgt", "--destdir", str(dest), "--workers", "1",
            *(f"--{split}pref={prefix / split}" for split in ("train", "valid", "test"))]
    inprocess.preprocess(argv + (["--joined-dictionary"] if joined else []))
    return dest


def fairseq_side(run: FairseqRun):
    """fairseq's model of ``run`` and its translation task, with the test split loaded."""
    from fairseq import checkpoint_utils

    models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(run.checkpoint)],
                                                                      arg_overrides={"data": str(run.bin)})
    task.load_dataset("test")
    return models[0].eval(), task


def both_outputs(fairseq_model, model, task, sentences: int):
    """The first ``sentences`` test pairs through both models, teacher-forced: fairseq's encoder
    states and logits, and the HF model's output (batch-first, as HF has them)."""
    dataset = task.dataset("test")
    sample = dataset.collater([dataset[i] for i in range(sentences)])  # left-padded sources, right-padded targets
    net = sample["net_input"]
    with torch.no_grad():
        encoder = fairseq_model.encoder(net["src_tokens"], net["src_lengths"])["encoder_out"][0].transpose(0, 1)
        expected, _ = fairseq_model(net["src_tokens"], net["src_lengths"], net["prev_output_tokens"])
        out = model(input_ids=net["src_tokens"], attention_mask=net["src_tokens"].ne(1),
                    decoder_input_ids=net["prev_output_tokens"])
    return encoder, expected, out, sample


def fairseq_train(bin_dir: Path, save_dir: Path, extra: list[str]) -> Path:
    """Train with fairseq-train in this process; the checkpoint it saved last."""
    from node_seq.fairseq import inprocess

    argv = [str(bin_dir), "--arch", "node_transformer_tiny",
            "--encoder-embed-dim", "16", "--decoder-embed-dim", "16", "--encoder-ffn-embed-dim", "32",
            "--decoder-ffn-embed-dim", "32", "--optimizer", "adam", "--lr", "1e-2", "--lr-scheduler", "inverse_sqrt",
            "--warmup-updates", "20", "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
            "--max-tokens", "1024", "--save-dir", str(save_dir), "--no-epoch-checkpoints", "--num-workers", "0",
            "--dropout", "0.0", "--seed", "1", "--disable-validation", "--log-format", "none", "--cpu",
            "--no-save-optimizer-state", *extra]
    inprocess.train(argv)
    return save_dir / "checkpoint_last.pt"
