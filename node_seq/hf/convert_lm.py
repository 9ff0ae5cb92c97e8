"""fairseq ``node_transformer_lm`` checkpoint -> HF model folder (``NodeTransformerForCausalLM``, tokenizer).

The LM counterpart of :mod:`.convert`, with its machinery: the checkpoint is read with
``weights_only=True`` without importing fairseq, the keys are renamed the same way
(``decoder.*`` -> ``model.decoder.*``, the output projection -> ``lm_head``), and the tokenizer
comes from the same routes (``tokenizer.json`` in the data folder or ``--tokenizer``,
``--spm-model``, ``--bpe-codes``, else the dictionary's words), over the LM's one ``dict.txt``, with
``</s>`` put first as fairseq's LM reads it. A ``node_transformer`` (encoder-decoder) checkpoint is
refused, naming the converter it needs, and so is a fairseq option the HF model does not implement.

    python -m node_seq.hf.cli.convert_lm --checkpoint CK/checkpoint_best.pt --data-bin DATA/bin --out HF_DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..nn.options import FAIRSEQ_LM, HF_LM
from .configuration_node_transformer_lm import NodeTransformerLMConfig
from .convert import (
    _UNSUPPORTED, ConversionError, build_converted_tokenizer, check_inputs_exist, check_tokenizer_options,
    converter_parser, load_fairseq_checkpoint, node_options_of, save_converted,
)
from .tokenization_node_transformer import LANGUAGE_MODEL, read_fairseq_dictionary

#: fairseq LM options whose non-default values the HF model does not implement (beyond the seq2seq ones).
_UNSUPPORTED_LM = {**_UNSUPPORTED, "character_embeddings": False, "add_bos_token": False,
                   "decoder_layers_to_keep": None}


def config_from_fairseq_lm(args: argparse.Namespace, vocab_size: int) -> NodeTransformerLMConfig:
    """The HF config of a fairseq LM, with its solver resolved exactly as fairseq resolves it."""
    options, solver = node_options_of(args, FAIRSEQ_LM, _UNSUPPORTED_LM)
    return NodeTransformerLMConfig(
        vocab_size=vocab_size, decoder_embed_dim=args.decoder_embed_dim, decoder_ffn_dim=args.decoder_ffn_embed_dim,
        decoder_layers=args.decoder_layers, decoder_attention_heads=args.decoder_attention_heads,
        dropout=args.dropout, attention_dropout=args.attention_dropout,
        activation_dropout=getattr(args, "activation_dropout", 0.0) or getattr(args, "relu_dropout", 0.0) or 0.0,
        activation_function=getattr(args, "activation_fn", "relu"), max_position_embeddings=args.max_target_positions,
        scale_embedding=not args.no_scale_embedding, tie_word_embeddings=bool(args.share_decoder_input_output_embed),
        **options.to_front_end(HF_LM),
        use_cache=options.incremental_cache and (not options.decoder or solver.is_fixed_grid),
    )


def convert_lm(checkpoint: str | Path, data_bin: str | Path, out: str | Path, *,
               tokenizer_json: str | Path | None = None, spm_model: str | Path | None = None,
               bpe_codes: str | Path | None = None, remote_code: bool = False):
    """Write ``out/`` (config.json, model.safetensors, generation_config.json, tokenizer files, and with
    ``remote_code`` the code bundle of :mod:`.remote_code`); everything is checked before anything is
    written. Returns the converted model and tokenizer."""
    from .modeling_node_transformer_lm import NodeTransformerForCausalLM

    data_bin, out = Path(data_bin), Path(out)
    check_tokenizer_options(spm_model=spm_model, bpe_codes=bpe_codes, tokenizer_json=tokenizer_json)
    args, state_dict = load_fairseq_checkpoint(checkpoint, language_model=True)
    path = data_bin / "dict.txt"
    if not path.exists():
        raise ConversionError(f"--data-bin: {path} is missing (fairseq-preprocess --only-source writes dict.txt)")
    try:
        words = read_fairseq_dictionary(path)
    except ValueError as error:
        raise ConversionError(f"--data-bin: {error}") from None
    rows = state_dict["decoder.embed_tokens.weight"].shape[0]
    if rows != len(words):
        raise ConversionError(f"--data-bin: {path} has {len(words)} words but the checkpoint has {rows} embeddings: "
                              "not the dictionary this model was trained with")
    tokenizer = build_converted_tokenizer((path, words), (path, words), data_bin, spm_model=spm_model,
                                          bpe_codes=bpe_codes, tokenizer_json=tokenizer_json,
                                          model_max_length=args.max_target_positions, kind=LANGUAGE_MODEL)
    model = NodeTransformerForCausalLM(config_from_fairseq_lm(args, len(words)))
    return save_converted(model, state_dict, tokenizer, out, auto_class="AutoModelForCausalLM" if remote_code else None)


def main(argv: list[str] | None = None) -> None:
    parser = converter_parser(
        "Convert a fairseq node_transformer_lm checkpoint to an HF folder.", "the fairseq LM data folder (dict.txt)",
        "tokenizer (at most one; default: DATA_BIN/tokenizer.json, else the dictionary's words)",
        "node_seq.text.prepare_lm")
    args = parser.parse_args(argv)
    check_inputs_exist(parser, args)
    try:
        convert_lm(args.checkpoint, args.data_bin, args.out, tokenizer_json=args.tokenizer, spm_model=args.spm_model,
                   bpe_codes=args.bpe_codes, remote_code=args.remote_code)
    except ConversionError as error:
        parser.error(str(error))
    print(f"wrote {args.out}")
