"""NFE in fairseq's own logs, through its metrics API (no forked trainer).

* ``nfe_f``: function evaluations of every ODE block in one forward pass, logged by the model's
  ``forward``; it lands in whichever aggregator is active, so training (``train_inner``/``train``)
  and validation (``valid``) report their own.
* ``nfe_row_mean``/``_sd``/``_min``/``_max``: under per-sentence step control, how ``nfe_f`` spread
  across the batch's sentences (each one's own steps; ``nfe_f`` is the loop's, which evaluates
  every row until the hardest is done), each a mean over the logged batches.
* ``nfe_b``: evaluations made by the backward pass (checkpoint recomputation, reversible
  reconstruction, adjoint solves). It is only known once autograd has gone through every ODE
  block, so each block's input carries a gradient hook and the last one to fire logs the total.
* ``fairseq-generate``: the NFE of each sentence (encoder plus every decoding step it took part in,
  mean over its beams) is counted; their mean and spread are printed with fairseq's own "Translated N
  sentences" summary, and ``--task node_translation`` prints each sentence's as an ``N-<id>`` line
  (:mod:`.task`). Counting is switched on explicitly:
  fairseq-generate (like fairseq-interactive and the hub interface) calls the model's
  ``prepare_for_inference_`` before it decodes, and only a model prepared that way counts.
"""

from __future__ import annotations

import logging

import torch
from fairseq.logging import metrics
from torch import nn

from ..nn.layers import collect_stats, row_nfe_spread
from ..text.generate_log import nfe_line


def log_forward_nfe(model: nn.Module) -> None:
    stats = collect_stats(model)
    if stats.nfe_forward:
        metrics.log_scalar("nfe_f", stats.nfe_forward, priority=700, round=1)
    for priority, (key, value) in enumerate(row_nfe_spread(model).items(), start=705):
        metrics.log_scalar(key, value, priority=priority, round=1)


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
    """One model's NFE per sentence while fairseq decodes.

    Its encoder opens a batch with each sentence's encoder NFE (the LM's first decoding step opens
    one with none); every decoding step adds to each sentence still decoding the mean of its beam
    rows' decoder NFE (rows per sentence: the first step's rows over the batch's sentences). fairseq
    drops finished sentences and reorders the rows between steps: the decoder keeps each row's
    sentence in its incremental state, reordered with it. Under batch-wide control every row of a
    step has that step's NFE, so a sentence's figure is the encoder's plus every step it took part in.
    """

    def __init__(self):
        self.batches: list[torch.Tensor] = []  # per-sentence NFE of each batch decoded, in order
        # the batch being decoded: each sentence's encoder NFE, and its rows' decoder NFE summed so far
        self._open: torch.Tensor | None = None
        self._decoded: torch.Tensor | None = None
        self._beams = 1  # rows per sentence

    def start_batch(self, encoder_nfe: torch.Tensor) -> None:
        """A new batch, with each sentence's encoder NFE."""
        self.end_batch()
        self._open = encoder_nfe.to(torch.float64)
        self._decoded = torch.zeros_like(self._open)

    def add_step(self, nfe_per_row: torch.Tensor, sentence_of_row: torch.Tensor | None) -> torch.Tensor:
        """One decoding step; ``sentence_of_row`` is None at a batch's first step, whose rows are each
        sentence's beams in turn (fairseq repeats the encoder output so). Returns the rows' sentences."""
        if sentence_of_row is None:
            self._beams = len(nfe_per_row) // len(self._open)  # fairseq keeps as many per sentence decoding
            sentence_of_row = torch.arange(len(nfe_per_row), device=self._open.device) // self._beams
        self._decoded.index_add_(0, sentence_of_row, nfe_per_row.to(self._decoded))
        return sentence_of_row

    def end_batch(self) -> torch.Tensor | None:
        """Close the batch being decoded (if any) and return its per-sentence NFE."""
        if self._open is None:
            return None
        batch = (self._open + self._decoded / self._beams).cpu()  # one division: whole counts stay whole
        self._open = self._decoded = None
        self.batches.append(batch)
        return batch

    @property
    def counted(self) -> bool:
        return bool(self.batches) or self._open is not None

    def per_sentence(self) -> torch.Tensor:
        """Every sentence decoded so far, in the order decoded."""
        self.end_batch()
        return torch.cat(self.batches) if self.batches else torch.zeros(0, dtype=torch.float64)


#: The counters of the models prepared for the current fairseq-generate run (an ensemble has several:
#: a sentence's NFE is the sum of its models').
_RUN: list[GenerationNFE] = []


def run_nfe_per_sentence() -> torch.Tensor:
    """The run's NFE per sentence so far, summed over its models (those that decoded)."""
    counts = [counter.per_sentence() for counter in _RUN if counter.counted]
    return sum(counts[1:], counts[0]) if counts else torch.zeros(0, dtype=torch.float64)


class _AfterTranslatedLine(logging.Filter):
    """The NODE NFE line next to fairseq-generate's summary, which ends a run: the count is reported once
    and starts again from zero, so a later run in the same process reports its own count or none."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("Translated"):
            per_sentence = run_nfe_per_sentence()
            _RUN.clear()
            if len(per_sentence):
                logging.getLogger(record.name).handle(logging.LogRecord(
                    record.name, logging.INFO, record.pathname, record.lineno, nfe_line(per_sentence.tolist()), (),
                    None))
        return True


def count_generation_nfe() -> GenerationNFE:
    """A counter for one model, reported after fairseq-generate's summary line.

    Called by a model's ``prepare_for_inference_``, so once per model of a fairseq-generate run; the
    encoder and decoder of that model feed the counter returned. A counter of an earlier run that
    counted something and never reached a summary line is left out of this run's.
    """
    _RUN[:] = [counter for counter in _RUN if not counter.counted]
    counter = GenerationNFE()
    _RUN.append(counter)
    logger = logging.getLogger("fairseq_cli.generate")
    if not any(isinstance(f, _AfterTranslatedLine) for f in logger.filters):
        logger.addFilter(_AfterTranslatedLine())
    return counter

