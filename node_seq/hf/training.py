"""Training a NODE-Transformer the HF way: ``datasets``, ``Seq2SeqTrainer``/``Trainer``, sacrebleu or
perplexity, NFE in the logs.

``node_seq.hf.cli.train`` (translation) and ``node_seq.hf.cli.train_lm`` (language model) are the
command lines; the pieces live here so tests can call them. Language models: :func:`load_text`,
:func:`tokenize_lm`, :func:`lm_collator`, :class:`NodeTrainer`, :func:`perplexities`.

* :func:`load_parallel_text`: ``{split}.{src}``/``{split}.{tgt}`` files -> a ``DatasetDict`` with a
  column per language (the ``text`` loader of ``datasets``, local files only);
* :func:`tokenize`: ``Dataset.map`` with the project's tokenizer (``</s>`` appended, like fairseq);
* :class:`NodeSeq2SeqTrainer`: logs ``nfe_f``/``nfe_b`` (per training step, averaged between log
  lines; under per-sequence control their spread across rows, ``nfe_row_*``) next to the loss, and
  ``eval_nfe`` (per sentence, encoder plus every decoding step);
* :func:`bleu_metrics`: sacrebleu BLEU and exact match of generated translations.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerBase, Seq2SeqTrainer, Trainer

from ..nn.layers import ROW_NFE_KEYS, check_finite, collect_stats, row_nfe_spread
from ..ode import compile_settings


def load_parallel_text(data_dir: str | Path, src: str, tgt: str, *, splits=("train", "valid", "test"),
                       cache_dir: str | Path | None = None):
    """A ``DatasetDict`` of the splits present in ``data_dir`` (``train`` is required)."""
    from datasets import DatasetDict, concatenate_datasets, load_dataset

    data_dir, out = Path(data_dir), {}
    for split in splits:
        files = {lang: data_dir / f"{split}.{lang}" for lang in (src, tgt)}
        if not all(f.exists() for f in files.values()):
            if split == "train":
                raise FileNotFoundError(f"missing {files[src]} or {files[tgt]}")
            continue
        sides = [load_dataset("text", data_files=str(files[lang]), split="train",
                              cache_dir=None if cache_dir is None else str(cache_dir)).rename_column("text", lang)
                 for lang in (src, tgt)]
        if len(sides[0]) != len(sides[1]):
            raise ValueError(f"{split}: {len(sides[0])} {src} lines but {len(sides[1])} {tgt} lines")
        out[split] = concatenate_datasets(sides, axis=1)
    return DatasetDict(out)


def tokenize(datasets, tokenizer, src: str, tgt: str, *, max_length: int = 256):
    """``input_ids``/``attention_mask`` from the source, ``labels`` from the target (both end in ``</s>``)."""

    def encode(batch):
        encoded = tokenizer(batch[src], truncation=True, max_length=max_length)
        encoded["labels"] = tokenizer(batch[tgt], truncation=True, max_length=max_length)["input_ids"]
        return encoded

    return datasets.map(encode, batched=True, remove_columns=[src, tgt])


def bleu_metrics(tokenizer):
    """``compute_metrics`` for ``predict_with_generate``: sacrebleu BLEU (0-100) and exact match."""
    import sacrebleu

    def compute(eval_prediction):
        predictions, labels = eval_prediction.predictions, eval_prediction.label_ids
        predictions = np.where(predictions < 0, tokenizer.pad_token_id, predictions)
        labels = np.where(labels < 0, tokenizer.pad_token_id, labels)
        hypotheses = [text.strip() for text in tokenizer.batch_decode(predictions, skip_special_tokens=True)]
        references = [text.strip() for text in tokenizer.batch_decode(labels, skip_special_tokens=True)]
        return {
            "bleu": sacrebleu.corpus_bleu(hypotheses, [references]).score,
            "exact_match": float(np.mean([h == r for h, r in zip(hypotheses, references)])),
        }

    return compute


class NodeNFELogging:
    """Mixed into a ``Trainer``: reports the ODE blocks' work.

    ``nfe_f``/``nfe_b``: function evaluations of one training step's forward and backward pass
    (all ODE layers), averaged over the steps since the last log line. Under per-sequence step
    control also ``nfe_row_mean``/``_sd``/``_min``/``_max``: how the forward NFE spread across the
    batch's rows (each row's own steps; ``nfe_f`` is the loop's, which evaluates every row until the
    hardest is done), averaged the same way. ``eval_nfe``: NFE per
    sentence of evaluation (with ``predict_with_generate``: the encoder plus every decoding step).
    Under torchrun both are averaged over every process's solves, not rank 0's alone.

    With ``torch_compile`` the model's solves do not stop the graph to check for inf/nan; each
    step checks them all at once afterwards (:func:`~node_seq.nn.layers.check_finite`).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._train_nfe = [0, 0, 0]  # forward, backward, steps
        self._row_nfe = [0.0] * len(ROW_NFE_KEYS) + [0]  # per-row spread summed over steps, steps with one
        self._eval_nfe = [0, 0]  # NFE x sentences, sentences
        self._eval_prefix = "eval"

    def _node_model(self, model):
        return self.accelerator.unwrap_model(model) if hasattr(self, "accelerator") else model

    def training_step(self, model, inputs, *args, **kwargs):
        with compile_settings():  # read only when ``torch_compile`` traces the model
            loss = super().training_step(model, inputs, *args, **kwargs)
        check_finite(self._node_model(model))  # a compiled model's solves left their check for now
        stats = collect_stats(self._node_model(model))  # backward NFE is complete once backward returned
        self._train_nfe[0] += stats.nfe_forward
        self._train_nfe[1] += stats.nfe_backward
        self._train_nfe[2] += 1
        spread = row_nfe_spread(self._node_model(model))
        if spread:
            for index, key in enumerate(ROW_NFE_KEYS):
                self._row_nfe[index] += spread[key]
            self._row_nfe[-1] += 1
        return loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **kwargs):
        with compile_settings():
            result = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys, **kwargs)
        node_model = self._node_model(model)
        check_finite(node_model)
        generated = getattr(self.args, "predict_with_generate", False) and not prediction_loss_only
        nfe = node_model.generation_nfe if generated else node_model.last_nfe
        sentences = inputs["input_ids"].shape[0]
        self._eval_nfe[0] += nfe.nfe_forward * sentences
        self._eval_nfe[1] += sentences
        return result

    def _over_processes(self, counts: list[int]) -> list[float]:
        """``counts`` summed over the processes of a distributed run (every process logs the same lines)."""
        if self.args.world_size < 2:
            return counts
        import torch

        return self.accelerator.reduce(torch.tensor(counts, dtype=torch.float64, device=self.args.device),
                                       reduction="sum").tolist()

    def log(self, logs: dict, *args, **kwargs) -> None:
        # Each process solves its own part of the batch (an adaptive solver takes its own steps):
        # the logged NFE are over all processes' solves.
        if "loss" in logs:
            forward, backward, steps, *spread, row_steps = self._over_processes(self._train_nfe + self._row_nfe)
            if steps:
                logs["nfe_f"] = round(forward / steps, 1)
                logs["nfe_b"] = round(backward / steps, 1)
            if row_steps:
                logs.update({key: round(value / row_steps, 1) for key, value in zip(ROW_NFE_KEYS, spread)})
            self._train_nfe, self._row_nfe = [0, 0, 0], [0.0] * len(ROW_NFE_KEYS) + [0]
        if f"{self._eval_prefix}_runtime" in logs:
            nfe, sentences = self._over_processes(self._eval_nfe)
            if sentences:
                logs[f"{self._eval_prefix}_nfe"] = round(nfe / sentences, 1)
            self._eval_nfe = [0, 0]
        super().log(logs, *args, **kwargs)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval", **kwargs):
        self._eval_nfe, self._eval_prefix = [0, 0], metric_key_prefix
        return super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix, **kwargs)


class NodeSeq2SeqTrainer(NodeNFELogging, Seq2SeqTrainer):
    """``Seq2SeqTrainer`` that reports the ODE blocks' work (:class:`NodeNFELogging`)."""


class NodeTrainer(NodeNFELogging, Trainer):
    """``Trainer`` (the language model's) that reports the ODE blocks' work (:class:`NodeNFELogging`)."""


# ----------------------------------------------------------------------------------------------
# language modelling


def load_text(data_dir: str | Path, lang: str, *, splits=("train", "valid", "test"),
              cache_dir: str | Path | None = None):
    """A ``DatasetDict`` with a ``text`` column of the splits present as ``data_dir/{split}.{lang}``
    (``train`` is required)."""
    from datasets import DatasetDict, load_dataset

    data_dir, out = Path(data_dir), {}
    for split in splits:
        path = data_dir / f"{split}.{lang}"
        if not path.exists():
            if split == "train":
                raise FileNotFoundError(f"missing {path}")
            continue
        out[split] = load_dataset("text", data_files=str(path), split="train",
                                  cache_dir=None if cache_dir is None else str(cache_dir))
    return DatasetDict(out)


def tokenize_lm(datasets, tokenizer, *, max_length: int = 256):
    """``input_ids`` per sentence as fairseq's LM reads it (``--sample-break-mode eos``): ``</s>``, the
    pieces, ``</s>`` (the tokenizer puts the first, the last is appended here); at most ``max_length``."""
    eos = tokenizer.eos_token_id

    def encode(batch):
        ids = tokenizer(batch["text"], truncation=True, max_length=max_length - 1)["input_ids"]
        return {"input_ids": [sentence + [eos] for sentence in ids]}

    return datasets.map(encode, batched=True, remove_columns=["text"])


def lm_collator(tokenizer: PreTrainedTokenizerBase) -> DataCollatorForLanguageModeling:
    """``DataCollatorForLanguageModeling`` that pads on the right, so every sentence starts at position 0.

    A sentence's first token (``</s>``) is context for its first piece, as in fairseq, and never a
    target: at position 0 nothing predicts it. The tokenizer pads on the left (prompts for
    ``generate``); there the ``</s>`` of every sentence but the batch's longest follows padding.
    The model scores nothing from padding, but the ``Trainer`` counts the update's targets from the
    labels alone (``num_items_in_batch``: ``labels[..., 1:]``), which would count those ``</s>``
    too, a number that depends on how the sentences are split into batches.
    """
    import copy

    right = copy.deepcopy(tokenizer)
    right.padding_side = "right"
    return DataCollatorForLanguageModeling(right, mlm=False)


def perplexities(results: dict) -> dict:
    """``{split}_perplexity`` (e to the mean token loss) for every ``{split}_loss`` of an evaluation."""
    return {key[: -len("loss")] + "perplexity": float(np.exp(value)) for key, value in results.items()
            if key.endswith("_loss")}


def train_and_report(trainer, encoded, out: Path, *, derived=None) -> dict:
    """Train, evaluate on ``valid`` and ``test`` where ``encoded`` has them, save ``out/final`` (the
    model and the trainer's tokenizer) and the log history (one process writes, under torchrun), and
    print the results as one JSON line.

    ``derived(results)`` adds figures computed from the evaluation's (perplexities from losses).
    """
    trainer.train()
    results = {}
    for split in ("valid", "test"):
        if split in encoded:
            results.update(trainer.evaluate(encoded[split], metric_key_prefix=split))
    if derived is not None:
        results.update(derived(results))
    trainer.save_model(out / "final")  # every process: a sharded model's full weights are gathered first
    if trainer.is_world_process_zero():
        (out / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1))
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in results.items()}), flush=True)
    return results


__all__ = ["NodeNFELogging", "NodeSeq2SeqTrainer", "NodeTrainer", "bleu_metrics", "lm_collator", "load_parallel_text",
           "load_text", "perplexities", "tokenize", "tokenize_lm", "train_and_report"]

