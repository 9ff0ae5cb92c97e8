"""fairseq ``node_transformer`` checkpoint -> HF model folder (config, safetensors, fast tokenizer).

The layers' parameters keep their names; only the embeddings, final norms and output projection
are renamed. The tokenizer gives exactly the ids ``fairseq-preprocess`` wrote (dictionary order,
``</s>`` appended, ``<unk>`` for a word the dictionary lacks) from the text the data was made of,
and decodes outputs as ``fairseq-generate --post-process`` prints them. It is built from

* ``--spm-model M.model``: the sentencepiece model the text was encoded with (``spm_encode``);
* ``--bpe-codes CODES``: the subword-nmt codes it was split with (``apply_bpe.py``, ``@@ `` marks);
* ``--tokenizer``, or ``tokenizer.json`` in the data folder: node-seq's own BPE (``node_seq.text.prepare``),
  renumbered to the dictionary (this route needs one joined dictionary);
* else the dictionaries alone: the text is taken as fairseq-preprocess read it (pre-tokenised
  words, or pieces already split), and outputs are words joined by spaces.

Source and target dictionaries (``dict.SRC.txt``, ``dict.TGT.txt``, languages from the checkpoint)
may differ: the config then has a ``decoder_vocab_size`` of its own and the tokenizer a target
side. The routes that cannot be reproduced exactly are refused before anything is written
(:mod:`.fairseq_vocabulary` lists them).

    python -m node_seq.hf.cli.convert --checkpoint CK/checkpoint_best.pt --data-bin DATA/bin --out HF_DIR \\
        [--spm-model SPM.model | --bpe-codes CODES | --tokenizer tokenizer.json] [--remote-code]

``--remote-code`` adds the model's code for loading without node-seq (docs/hf/sharing.md).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
from pathlib import Path

import torch

from ..nn.options import FAIRSEQ, HF, NodeOptions, fill_missing
from . import fairseq_vocabulary
from .configuration_node_transformer import NodeTransformerConfig
from .remote_code import registered_for_auto_classes
from .sentencepiece_model import read_sentencepiece_model
from .tokenization_node_transformer import SEQ2SEQ, build_fairseq_tokenizer, build_tokenizer, read_fairseq_dictionary

#: fairseq options whose non-default values the HF model does not implement.
_UNSUPPORTED = {
    "encoder_learned_pos": False, "decoder_learned_pos": False, "layernorm_embedding": False,
    "no_token_positional_embeddings": False, "adaptive_input": False, "no_decoder_final_norm": False,
    "cross_self_attention": False, "no_cross_attention": False, "tie_adaptive_weights": False,
    "adaptive_softmax_cutoff": None,
}

#: What fairseq's checkpoints of this model store beyond torch's default allow-list: the list
#: ``node_seq.fairseq.checkpoints`` allows for the whole process, allowed here for one load only.
_CHECKPOINT_GLOBALS = [argparse.Namespace]


class ConversionError(ValueError):
    """The checkpoint or data folder cannot become an equivalent HF model; the message says why."""


# ----------------------------------------------------------------------------------------------
# checkpoint


@contextlib.contextmanager
def _allowed_while_loading(extra: list):
    """``extra`` allowed for ``weights_only`` loads inside, torch's allow-list as it was after.

    ``torch.serialization.safe_globals`` removes its globals on exit even if they were allowed
    before (``import node_seq.fairseq`` allows ``argparse.Namespace`` for the process): only what
    is not allowed yet is handed to it.
    """
    allowed = torch.serialization.get_safe_globals()
    with torch.serialization.safe_globals([g for g in extra if g not in allowed]):
        yield


#: The fairseq architectures of the language model (``--arch node_transformer_lm*``), converted by
#: :mod:`.convert_lm`; every other ``node_transformer*`` architecture is the encoder-decoder's.
LM_ARCH_PREFIX = "node_transformer_lm"


def load_fairseq_checkpoint(path: str | Path, *, language_model: bool = False
                            ) -> tuple[argparse.Namespace, dict[str, torch.Tensor]]:
    """The model options and weights of a fairseq checkpoint, read with ``weights_only=True``.

    ``language_model``: the checkpoint must be a ``node_transformer_lm``'s (else a
    ``node_transformer``'s); the other kind is refused, naming the converter it needs. Neither
    fairseq nor ``node_seq.fairseq`` is imported: converting needs none of their import side effects
    (registries, torch's process-wide allow-list).
    """
    with _allowed_while_loading(_CHECKPOINT_GLOBALS):
        state = torch.load(path, map_location="cpu", weights_only=True)
    cfg = state.get("cfg") if isinstance(state.get("cfg"), dict) else {}
    args = cfg.get("model")
    args = args if isinstance(args, argparse.Namespace) else state.get("args")
    if not isinstance(args, argparse.Namespace) or getattr(args, "arch", "").split("_")[:2] != ["node", "transformer"]:
        raise ConversionError(f"{path}: not a fairseq node_transformer checkpoint (arch "
                              f"{getattr(args, 'arch', None)!r})")
    is_lm = args.arch.startswith(LM_ARCH_PREFIX) or not any(key.startswith("encoder.") for key in state["model"])
    if is_lm != language_model:
        kind, command = (("a language model (node_transformer_lm)", "node_seq.hf.cli.convert_lm") if is_lm else
                         ("an encoder-decoder (node_transformer)", "node_seq.hf.cli.convert"))
        raise ConversionError(f"{path}: arch {args.arch!r} is {kind} checkpoint; convert it with "
                              f"python -m {command}")
    task = cfg.get("task") if isinstance(cfg.get("task"), dict) else {}
    for side in ("source_lang", "target_lang"):  # the task resolves languages left out of the command line
        if getattr(args, side, None) is None:
            setattr(args, side, task.get(side))
    return args, state["model"]


def node_options_of(args: argparse.Namespace, front_end: str, unsupported: dict):
    """The NODE options and solver of a fairseq model's ``args`` (defaults filled in for ``front_end``),
    refusing the ``unsupported`` options that have other values than the HF model implements; step sizes
    become whole steps, as fairseq resolves them."""
    fill_missing(args, front_end, lambda name, value: setattr(args, name, value))
    for name, supported in unsupported.items():
        if getattr(args, name, supported) not in (supported, None, False, ""):
            raise ConversionError(f"--{name.replace('_', '-')} is not supported by the HF model")
    for side in ("decoder_input_dim", "decoder_output_dim"):
        if getattr(args, side, args.decoder_embed_dim) != args.decoder_embed_dim:
            raise ConversionError(f"--{side.replace('_', '-')} must equal --decoder-embed-dim")
    options = NodeOptions.from_front_end(args, front_end)
    solver = options.solver()
    return dataclasses.replace(options, steps=solver.steps, step_size=None), solver


def config_from_fairseq(args: argparse.Namespace, vocab_size: int,
                        decoder_vocab_size: int | None = None) -> NodeTransformerConfig:
    """The HF config of a fairseq model, with its solver resolved exactly as fairseq resolves it."""
    options, solver = node_options_of(args, FAIRSEQ, _UNSUPPORTED)
    return NodeTransformerConfig(
        vocab_size=vocab_size, decoder_vocab_size=decoder_vocab_size,
        encoder_embed_dim=args.encoder_embed_dim, encoder_ffn_dim=args.encoder_ffn_embed_dim,
        encoder_layers=args.encoder_layers, encoder_attention_heads=args.encoder_attention_heads,
        decoder_embed_dim=args.decoder_embed_dim, decoder_ffn_dim=args.decoder_ffn_embed_dim,
        decoder_layers=args.decoder_layers, decoder_attention_heads=args.decoder_attention_heads,
        dropout=args.dropout, attention_dropout=args.attention_dropout,
        activation_dropout=getattr(args, "activation_dropout", 0.0) or getattr(args, "relu_dropout", 0.0) or 0.0,
        activation_function=getattr(args, "activation_fn", "relu"),
        max_position_embeddings=args.max_target_positions,
        scale_embedding=not args.no_scale_embedding, share_all_embeddings=bool(args.share_all_embeddings),
        tie_word_embeddings=bool(args.share_all_embeddings or args.share_decoder_input_output_embed),
        **options.to_front_end(HF),
        use_cache=options.incremental_cache and (not options.decoder or solver.is_fixed_grid),
    )


def convert_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename fairseq's keys for :class:`NodeTransformerForConditionalGeneration`."""
    out = {}
    for key, value in state_dict.items():
        if key.endswith(".version") or key.endswith("embed_positions._float_tensor"):
            continue  # fairseq bookkeeping, no weights
        if key == "decoder.output_projection.weight":
            out["lm_head.weight"] = value
        elif key.startswith(("encoder.", "decoder.")):
            out["model." + key] = value
        else:
            raise ConversionError(f"unexpected fairseq parameter {key!r}")
    return out


# ----------------------------------------------------------------------------------------------
# dictionaries and tokenizer


def language_pair(args: argparse.Namespace, data_bin: Path) -> tuple[str, str]:
    """The checkpoint's languages, else the one pair the data folder's file names show (as fairseq infers it)."""
    if args.source_lang and args.target_lang:
        return args.source_lang, args.target_lang
    pairs = {tuple(name.split(".")[1].split("-")) for name in (p.name for p in data_bin.glob("*.*-*.*.idx"))}
    if len(pairs) != 1:
        raise ConversionError(f"--data-bin: cannot tell the source and target languages of {data_bin} (the "
                              f"checkpoint names none, the data files show {sorted(pairs)}); give --source-lang "
                              "and --target-lang")
    return next(iter(pairs))


def read_dictionaries(languages: tuple[str, str], data_bin: Path) -> tuple[Path, list[str], Path, list[str]]:
    """``(source path, source words, target path, target words)`` of the data folder."""
    found = []
    for lang in languages:
        path = data_bin / f"dict.{lang}.txt"
        if not path.exists():
            raise ConversionError(f"--data-bin: {path} is missing (fairseq-preprocess writes dict.{lang}.txt)")
        try:
            found += [path, read_fairseq_dictionary(path)]
        except ValueError as error:
            raise ConversionError(f"--data-bin: {error}") from None
    return tuple(found)


def _check_sizes(state_dict: dict[str, torch.Tensor], source: tuple[Path, list[str]],
                 target: tuple[Path, list[str]]) -> None:
    for side, key, (path, words) in (("encoder", "encoder.embed_tokens.weight", source),
                                     ("decoder", "decoder.embed_tokens.weight", target)):
        rows = state_dict[key].shape[0]
        if rows != len(words):
            raise ConversionError(f"--data-bin: {path} has {len(words)} words but the checkpoint's {side} has {rows} "
                                  "embeddings: not the dictionary this model was trained with")


def check_tokenizer_options(*, spm_model=None, bpe_codes=None, tokenizer_json=None) -> None:
    """Refuse conflicting or missing tokenizer files (the message names the option)."""
    given = [f"--{name}" for name, value in (("spm-model", spm_model), ("bpe-codes", bpe_codes),
                                             ("tokenizer", tokenizer_json)) if value]
    if len(given) > 1:
        raise ConversionError(f"{' and '.join(given)}: give at most one of --spm-model, --bpe-codes, --tokenizer")
    for name, value in (("spm-model", spm_model), ("bpe-codes", bpe_codes), ("tokenizer", tokenizer_json)):
        if value and not Path(value).is_file():
            raise ConversionError(f"--{name}: not found: {value}")


def build_converted_tokenizer(source: tuple[Path, list[str]], target: tuple[Path, list[str]], data_bin: Path, *,
                              spm_model=None, bpe_codes=None, tokenizer_json=None, model_max_length: int = 1024,
                              kind: tuple = SEQ2SEQ):
    """The tokenizer of the first route that applies (see the module docstring); ``kind``: ``SEQ2SEQ``
    or ``LANGUAGE_MODEL`` (see :func:`~.tokenization_node_transformer.build_tokenizer`)."""
    check_tokenizer_options(spm_model=spm_model, bpe_codes=bpe_codes, tokenizer_json=tokenizer_json)
    (source_path, source_words), (target_path, target_words) = source, target
    own = Path(tokenizer_json) if tokenizer_json else data_bin / "tokenizer.json"
    use_own = not (spm_model or bpe_codes) and own.is_file()
    if use_own and source_words != target_words:
        option, fix = ("--tokenizer", "leave --tokenizer out") if tokenizer_json else ("--data-bin", f"move {own} away")
        raise ConversionError(f"{option}: {own} needs one joined dictionary, but {source_path} and {target_path} "
                              f"differ; {fix} to convert from the dictionaries, or give --spm-model or --bpe-codes")
    try:
        if use_own:
            return build_tokenizer(own, dictionary=source_words, model_max_length=model_max_length, kind=kind)
        if spm_model:
            build = functools.partial(fairseq_vocabulary.sentencepiece, read_sentencepiece_model(spm_model))
            where = f"--spm-model {spm_model} with {{}}"
        elif bpe_codes:
            build = functools.partial(fairseq_vocabulary.subword_nmt, fairseq_vocabulary.read_bpe_codes(bpe_codes))
            where = f"--bpe-codes {bpe_codes} with {{}}"
        else:
            build, where = fairseq_vocabulary.word_level, "--data-bin {}"
        source_side = build(source_words, where.format(source_path))
        target_side = None if target_words == source_words else build(target_words, where.format(target_path))
        return build_fairseq_tokenizer(source_side, target_side, model_max_length=model_max_length, kind=kind)
    except ValueError as error:  # VocabularyError, or a file that is no sentencepiece model or BPE codes
        raise ConversionError(str(error)) from None


# ----------------------------------------------------------------------------------------------
# everything


def convert(checkpoint: str | Path, data_bin: str | Path, out: str | Path, *, tokenizer_json: str | Path | None = None,
            spm_model: str | Path | None = None, bpe_codes: str | Path | None = None,
            languages: tuple[str, str] | None = None, remote_code: bool = False):
    """Write ``out/`` (config.json, model.safetensors, generation_config.json, tokenizer files, and with
    ``remote_code`` the code bundle of :mod:`.remote_code`).

    ``languages`` (source, target) name the dictionaries when the checkpoint does not (fairseq-train
    without ``-s``/``-t`` infers them from the data files, and so does this). Everything is checked
    before anything is written. Returns the converted model and tokenizer.
    """
    from .modeling_node_transformer import NodeTransformerForConditionalGeneration

    data_bin, out = Path(data_bin), Path(out)
    check_tokenizer_options(spm_model=spm_model, bpe_codes=bpe_codes, tokenizer_json=tokenizer_json)
    args, state_dict = load_fairseq_checkpoint(checkpoint)
    source_path, source_words, target_path, target_words = read_dictionaries(
        languages or language_pair(args, data_bin), data_bin)
    _check_sizes(state_dict, (source_path, source_words), (target_path, target_words))
    tokenizer = build_converted_tokenizer((source_path, source_words), (target_path, target_words), data_bin,
                                          spm_model=spm_model, bpe_codes=bpe_codes, tokenizer_json=tokenizer_json,
                                          model_max_length=args.max_source_positions)
    model = NodeTransformerForConditionalGeneration(config_from_fairseq(args, len(source_words), len(target_words)))
    return save_converted(model, state_dict, tokenizer, out, auto_class="AutoModelForSeq2SeqLM" if remote_code else None)


def save_converted(model, state_dict: dict, tokenizer, out: Path, *, auto_class: str | None = None):
    """Load a fairseq state dict into ``model`` (every key must fit), then write it and ``tokenizer`` to ``out``;
    with an ``auto_class`` for the model, as custom code (:func:`.remote_code.registered_for_auto_classes`)."""
    result = model.load_state_dict(convert_state_dict(state_dict), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ConversionError(f"weights do not fit: missing {result.missing_keys}, unexpected {result.unexpected_keys}")
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    with registered_for_auto_classes(model, auto_class, tokenizer) if auto_class else contextlib.nullcontext():
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    return model, tokenizer


def converter_parser(description: str, data_bin_help: str, tokenizers_title: str,
                     prepare_module: str) -> argparse.ArgumentParser:
    """The options every converter takes: the checkpoint, its data folder, the output and the tokenizer routes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--checkpoint", required=True, help="fairseq checkpoint (e.g. CK/checkpoint_best.pt)")
    parser.add_argument("--data-bin", required=True, help=data_bin_help)
    parser.add_argument("--out", required=True, help="output folder for from_pretrained")
    tokenizers = parser.add_argument_group(tokenizers_title)
    tokenizers.add_argument("--spm-model", default=None, help="the sentencepiece model the data was encoded with")
    tokenizers.add_argument("--bpe-codes", default=None, help="the subword-nmt codes the data was split with")
    tokenizers.add_argument("--tokenizer", default=None, help=f"node-seq's tokenizer.json ({prepare_module})")
    parser.add_argument("--remote-code", action="store_true",
                        help="also write the model's code, for AutoModel*.from_pretrained(OUT, trust_remote_code=True) "
                             "without node-seq (docs/hf/sharing.md)")
    return parser


def check_inputs_exist(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in ("checkpoint", "data_bin"):
        if not Path(getattr(args, name)).exists():
            parser.error(f"--{name.replace('_', '-')}: not found: {getattr(args, name)}")


def main(argv: list[str] | None = None) -> None:
    parser = converter_parser(
        "Convert a fairseq node_transformer checkpoint to an HF model folder.",
        "the fairseq data folder (dict.SRC.txt, dict.TGT.txt)",
        "tokenizer (at most one; default: DATA_BIN/tokenizer.json if there, else the dictionaries alone, for "
        "pre-tokenised text)", "node_seq.text.prepare")
    parser.add_argument("--source-lang", default=None, help="source language (default: the checkpoint's, else the "
                        "data files')")
    parser.add_argument("--target-lang", default=None, help="target language (as --source-lang)")
    args = parser.parse_args(argv)
    if (args.source_lang is None) != (args.target_lang is None):
        parser.error("--source-lang and --target-lang: give both or neither")
    check_inputs_exist(parser, args)
    try:
        convert(args.checkpoint, args.data_bin, args.out, tokenizer_json=args.tokenizer, spm_model=args.spm_model,
                bpe_codes=args.bpe_codes, languages=(args.source_lang, args.target_lang) if args.source_lang else None,
                remote_code=args.remote_code)
    except ConversionError as error:
        parser.error(str(error))
    print(f"wrote {args.out}")
