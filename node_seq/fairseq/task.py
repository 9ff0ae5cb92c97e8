"""``--task node_translation``: fairseq's translation task, plus what only a task can do for NODE models.

* NFE goes into the logging outputs, which fairseq sums over micro-batches *and workers* before
  ``reduce_metrics``: ``nfe_f``/``nfe_b`` are means per forward pass over every worker, not the
  master's own count (the model alone can only log its own worker's).
* Under per-sentence step control, ``nfe_row_mean``/``_sd``/``_min``/``_max``: the spread of the forward
  NFE across each batch's sentences, means over the batches of every worker.
* ``--node-failure-policy skip``: a batch whose forward solve fails is skipped and counted as
  ``node_skipped``, as fairseq skips a batch that runs out of memory. The batch is re-run on the
  fallback grid with its loss multiplied by zero, the way fairseq runs dummy batches, so that every
  worker takes part in the same gradient all-reduce: it adds nothing to the gradient, and its loss
  on the fallback grid is what the log shows for it. An update whose every batch was skipped takes
  no optimizer step. A validation batch cannot be left out without biasing the validation loss:
  it is evaluated on the fallback grid and counted in ``node_fallbacks``. A failure in the
  backward pass (an adjoint solve) cannot be skipped, since part of the gradient is already
  accumulated: it is raised.
* ``--node-kinetic-weight``/``--node-jacobian-weight W``: ``W x`` the kinetic energy / Jacobian
  norm of the ODE blocks is added to the loss that is differentiated (logged apart as
  ``node_kinetic``/``node_jacobian``, so ``loss`` stays comparable).

* fairseq-generate: one ``N-<id>\t<nfe>`` line per sentence, its NFE (encoder plus every decoding step it
  took part in, mean over its beams), beside fairseq's ``H-``/``D-`` lines; only a task sees sample ids.

Everything else, data included, is ``--task translation``'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys

import torch
from fairseq.logging import metrics
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask

from ..nn.layers import ROW_NFE_KEYS, collect_stats, node_layers, row_nfe_spread, total_regularizer
from ..ode import ODESolveError
from ..text.generate_log import sentence_nfe_line

logger = logging.getLogger(__name__)

#: Logging-output keys this task adds; all are sums, so fairseq may add them up across workers.
NODE_KEYS = ("node_batches", "nfe_f", "nfe_b", "node_fallbacks", "node_skipped", "node_kinetic", "node_jacobian",
             "node_row_batches", *ROW_NFE_KEYS)


class NodeTaskMixin:
    """What a NODE task adds to a fairseq task (see module docstring); mixed in before the task class
    (translation here, language modelling in :mod:`.lm_task`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._batches_in_update = 0
        self._skipped_in_update = 0

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        model.nfe_logged_by_task = True  # the model would otherwise log its own worker's counts
        return model

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        fallbacks_before = _fallbacks(model)
        self._batches_in_update += 1
        forward = _ForwardDone(_WithPenalties(criterion, _regularizer_weights(model)))
        try:
            loss, sample_size, logging_output = super().train_step(
                sample, model, forward, optimizer, update_num, ignore_grad)
        except ODESolveError as error:
            if _policy(model) != "skip":
                raise
            if forward.done:  # an adjoint solve failed: part of the gradient is already accumulated
                raise RuntimeError(
                    f"--node-failure-policy skip: the solve failed in the backward pass, which cannot be "
                    f"skipped (gradients are partly accumulated); {error}") from error
            return self._skip(error, sample, model, criterion, optimizer, update_num)
        logging_output.update(_counts(model, fallbacks_before))
        return loss, sample_size, logging_output

    def _skip(self, error, sample, model, criterion, optimizer, update_num):
        logger.warning("skipping a batch (--node-failure-policy skip): %s", error)
        self._skipped_in_update += 1
        fallbacks_before = _fallbacks(model)
        with fallback_solvers(model):
            loss, _, logging_output = super().train_step(sample, model, _ZeroGradient(criterion), optimizer,
                                                         update_num)
        logging_output.update(_counts(model, fallbacks_before), node_skipped=1)
        return loss, 0, logging_output  # a sample size of 0: nothing to average into the gradient

    def valid_step(self, sample, model, criterion):
        fallbacks_before = _fallbacks(model)
        try:
            loss, sample_size, logging_output = super().valid_step(sample, model, criterion)
        except ODESolveError as error:
            if _policy(model) != "skip":
                raise
            # Leaving a batch out would bias the validation loss: evaluate it on the fallback grid.
            logger.warning("validating a batch on the fallback grid (--node-failure-policy skip): %s", error)
            with fallback_solvers(model):
                loss, sample_size, logging_output = super().valid_step(sample, model, criterion)
            fallbacks_before -= 1  # this batch's evaluation on the fallback grid counts as one
        logging_output.update(_counts(model, fallbacks_before, backward=False))
        return loss, sample_size, logging_output

    def inference_step(self, generator, models, sample, prefix_tokens=None, constraints=None):
        """fairseq-generate's (and fairseq-interactive's) decoding of one batch, then one ``N-<id>`` line
        per sentence with its NFE, where fairseq-generate writes its ``H-`` lines (even under ``--quiet``)."""
        hypotheses = super().inference_step(generator, models, sample, prefix_tokens=prefix_tokens,
                                            constraints=constraints)
        counters = [counter for counter in map(_generation_nfe, models) if counter is not None]
        batches = [batch for batch in (counter.end_batch() for counter in counters) if batch is not None]
        if batches and "id" in sample:
            stream = generate_output_stream()
            for sample_id, nfe in zip(sample["id"].tolist(), sum(batches[1:], batches[0]).tolist()):
                print(sentence_nfe_line(sample_id, nfe), file=stream)
        return hypotheses

    def optimizer_step(self, optimizer, model, update_num):
        all_skipped = self._batches_in_update > 0 and self._skipped_in_update == self._batches_in_update
        self._batches_in_update = self._skipped_in_update = 0
        # Gradients are all-reduced by now: they are all zero only if every worker skipped every
        # batch, so every worker reaches the same decision.
        if all_skipped and not any(p.grad is not None and p.grad.any() for p in model.parameters()):
            logger.warning("no optimizer step at update %d: every batch of the update was skipped", update_num)
            return
        super().optimizer_step(optimizer, model, update_num)

    def reduce_metrics(self, logging_outputs, criterion):
        super().reduce_metrics(logging_outputs, criterion)
        total = {key: sum(float(log.get(key, 0)) for log in logging_outputs) for key in NODE_KEYS}
        if total["node_batches"]:
            metrics.log_scalar("nfe_f", total["nfe_f"] / total["node_batches"], total["node_batches"],
                               priority=700, round=1)
            if any("nfe_b" in log for log in logging_outputs):
                metrics.log_scalar("nfe_b", total["nfe_b"] / total["node_batches"], total["node_batches"],
                                   priority=701, round=1)
            for priority, key in enumerate(("node_kinetic", "node_jacobian"), start=703):
                if total[key]:
                    metrics.log_scalar(key, total[key] / total["node_batches"], total["node_batches"],
                                       priority=priority, round=3)
        for key in ("node_fallbacks", "node_skipped"):
            if total[key]:
                metrics.log_scalar_sum(key, total[key], priority=702)
        if total["node_row_batches"]:  # batches whose solves were controlled per sentence
            for priority, key in enumerate(ROW_NFE_KEYS, start=705):
                metrics.log_scalar(key, total[key] / total["node_row_batches"], total["node_row_batches"],
                                   priority=priority, round=1)


@register_task("node_translation", dataclass=TranslationConfig)
class NodeTranslationTask(NodeTaskMixin, TranslationTask):
    """Translation whose NFE and solver failures are counted across workers (see module docstring)."""


def _counts(model, fallbacks_before: int, *, backward: bool = True) -> dict:
    stats = collect_stats(model)
    counts = {"node_batches": 1, "nfe_f": stats.nfe_forward, "node_fallbacks": _fallbacks(model) - fallbacks_before}
    spread = row_nfe_spread(model)
    if spread:
        counts.update(spread, node_row_batches=1)
    if backward:
        counts["nfe_b"] = stats.nfe_backward
    return counts


def _generation_nfe(model):
    """The model's per-sentence counter, if it counts (a NODE model prepared for inference)."""
    return getattr(getattr(model, "decoder", None), "generation_nfe", None)


def generate_output_stream():
    """Where fairseq-generate prints its hypotheses: the ``output_file`` of ``fairseq_cli.generate``'s
    ``_main`` (stdout, or the file under ``--results-path``), which calls ``inference_step`` and
    hands that stream to nothing a plugin can reach (its ``logging.basicConfig(stream=output_file)``
    does nothing once fairseq's speech tasks have configured logging on import, as they do). Outside
    fairseq-generate (fairseq-interactive prints to stdout): stdout, looked up now, as ``print`` does."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_globals.get("__name__") == "fairseq_cli.generate" and "output_file" in frame.f_locals:
            return frame.f_locals["output_file"]
        frame = frame.f_back
    return sys.stdout


def _fallbacks(model) -> int:
    return sum(layer.fallbacks for layer in node_layers(model))


def _policy(model) -> str:
    layers = node_layers(model)
    return layers[0].failure.policy if layers else "raise"


class _WithPenalties:
    """The criterion plus ``weight x integral x sample size`` for each regulariser (the criterion's
    loss is a sum over tokens, the integrals means per token); the logged loss stays the criterion's."""

    def __init__(self, criterion, weights: dict[str, float]):
        self.criterion, self.weights = criterion, weights

    def __call__(self, model, sample):
        loss, sample_size, logging_output = self.criterion(model, sample)
        for name, weight in self.weights.items():
            value = total_regularizer(model, name)
            if value is not None:
                loss = loss + weight * sample_size * value
                logging_output[f"node_{name}"] = value.detach()
        return loss, sample_size, logging_output


def _regularizer_weights(model) -> dict[str, float]:
    while not hasattr(model, "regularizer_weights") and isinstance(getattr(model, "module", None), torch.nn.Module):
        model = model.module  # fairseq's distributed wrappers
    return getattr(model, "regularizer_weights", {})


class _ZeroGradient:
    """The criterion with its loss multiplied by zero for the backward pass, not for the log.

    (fairseq's ``ignore_grad`` zeroes the loss in place, which also zeroes the logged value.)
    """

    def __init__(self, criterion):
        self.criterion = criterion

    def __call__(self, model, sample):
        loss, sample_size, logging_output = self.criterion(model, sample)
        return loss * 0, sample_size, logging_output


class _ForwardDone:
    """The criterion, noting when the forward pass is over (a later failure is the backward's)."""

    def __init__(self, criterion):
        self.criterion, self.done = criterion, False

    def __call__(self, model, sample):
        result = self.criterion(model, sample)
        self.done = True
        return result


@contextlib.contextmanager
def fallback_solvers(model):
    """Every ODE layer of ``model`` solves on its failure policy's fixed grid for the duration."""
    layers = node_layers(model)
    saved = [layer.solver for layer in layers]
    try:
        for layer in layers:
            gradient = "backprop" if layer.solver.gradient == "backprop" else "checkpoint"
            layer.solver = dataclasses.replace(layer.failure.fallback, t0=layer.solver.t0, t1=layer.solver.t1,
                                               gradient=gradient)
        yield
    finally:
        for layer, solver in zip(layers, saved):
            layer.solver = solver
