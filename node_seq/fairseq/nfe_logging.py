"""NFE in fairseq's own logs, through its metrics API (no forked trainer).

* ``nfe_f``: function evaluations of every ODE block in one forward pass, logged by the model's
  ``forward``; it lands in whichever aggregator is active, so training (``train_inner``/``train``)
  and validation (``valid``) report their own.
* ``nfe_b``: evaluations made by the backward pass (checkpoint recomputation, reversible
  reconstruction, adjoint solves). It is only known once autograd has gone through every ODE
  block, so each block's input carries a gradient hook and the last one to fire logs the total.
* ``fairseq-generate``: the average NFE per sentence (encoder plus every decoding step) is
  printed with fairseq's own "Translated N sentences" summary. Counting is switched on explicitly:
  fairseq-generate (like fairseq-interactive and the hub interface) calls the model's
  ``prepare_for_inference_`` before it decodes, and only a model prepared that way counts.
"""

from __future__ import annotations

import logging

import torch
from fairseq.logging import metrics
from torch import nn

from ..nn.layers import collect_stats
from ..text.generate_log import nfe_line


def log_forward_nfe(model: nn.Module) -> None:
    stats = collect_stats(model)
    if stats.nfe_forward:
        metrics.log_scalar("nfe_f", stats.nfe_forward, priority=700, round=1)


class BackwardNFELogger:
    """Logs ``nfe_b`` once the backward pass has finished every ODE block of one forward pass."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.pending = 0

    def watch(self, layer_inputs: list[torch.Tensor]) -> None:
        hooked = [x for x in layer_inputs if x.requires_grad]
        self.pending = len(hooked)
        for x in hooked:
            x.register_hook(self._one_done)

    def _one_done(self, grad: torch.Tensor) -> None:
        self.pending -= 1
        if self.pending == 0:
            metrics.log_scalar("nfe_b", collect_stats(self.model).nfe_backward, priority=701, round=1)


class GenerationNFE:
    """Counts evaluations per sentence while fairseq-generate decodes (fed by the encoder, once per
    batch, and the decoder, once per incremental step)."""

    def __init__(self):
        self.sentences = 0
        self.weighted_nfe = 0.0  # sum over solves of NFE x sentences taking part

    def reset(self) -> None:
        self.sentences, self.weighted_nfe = 0, 0.0

    def add(self, nfe: int, sentences: float) -> None:
        self.weighted_nfe += nfe * sentences

    @property
    def per_sentence(self) -> float:
        return self.weighted_nfe / max(self.sentences, 1)


GENERATION = GenerationNFE()


class _AfterTranslatedLine(logging.Filter):
    """The NODE NFE line next to fairseq-generate's summary, which ends a run: the count is reported once
    and starts again from zero, so a later run in the same process reports its own count or none."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("Translated") and GENERATION.sentences:
            logging.getLogger(record.name).handle(logging.LogRecord(
                record.name, logging.INFO, record.pathname, record.lineno, nfe_line(GENERATION.per_sentence), (),
                None))
            GENERATION.reset()
        return True


def count_generation_nfe() -> GenerationNFE:
    """Count from zero, and report the count after fairseq-generate's summary line.

    Called by a model's ``prepare_for_inference_``, so once per fairseq-generate run; the encoder
    and decoder of that model feed the counter returned.
    """
    GENERATION.reset()
    logger = logging.getLogger("fairseq_cli.generate")
    if not any(isinstance(f, _AfterTranslatedLine) for f in logger.filters):
        logger.addFilter(_AfterTranslatedLine())
    return GENERATION

