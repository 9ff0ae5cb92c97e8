"""fairseq ``node_transformer`` checkpoint -> HF model folder (config, safetensors, fast tokenizer).

The layers' parameters keep their names; only the embeddings, final norms and output projection
are renamed. The tokenizer is the experiment's ``tokenizer.json`` with its ids remapped to the
fairseq dictionary's, so ``AutoTokenizer`` gives exactly the ids ``fairseq-preprocess`` wrote:
dictionary order, ``</s>`` appended to every sentence, and ``<unk>`` for any piece the dictionary
lacks (a piece the BPE knows but that never ended a word in the training data).

    python scripts/convert_fairseq_to_hf.py --checkpoint CK/checkpoint_best.pt --data-bin DATA/bin --out HF_DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .configuration_node_transformer import NodeTransformerConfig
from .tokenization_node_transformer import build_tokenizer, read_fairseq_dictionary

#: fairseq options whose non-default values the HF model does not implement.
_UNSUPPORTED = {
    "encoder_learned_pos": False, "decoder_learned_pos": False, "layernorm_embedding": False,
    "no_token_positional_embeddings": False, "adaptive_input": False, "no_decoder_final_norm": False,
    "cross_self_attention": False, "no_cross_attention": False, "tie_adaptive_weights": False,
    "adaptive_softmax_cutoff": None,
}


class ConversionError(ValueError):
    """The checkpoint or data folder cannot become an equivalent HF model; the message says why."""


# ----------------------------------------------------------------------------------------------
# checkpoint


def load_fairseq_checkpoint(path: str | Path) -> tuple[argparse.Namespace, dict[str, torch.Tensor]]:
    """The model options and weights of a fairseq checkpoint, read with ``weights_only=True``."""
    import node_seq.fairseq  # noqa: F401  (allow-lists argparse.Namespace, the one extra class stored)

    state = torch.load(path, map_location="cpu", weights_only=True)
    args = (state.get("cfg") or {}).get("model") if isinstance(state.get("cfg"), dict) else None
    args = args if isinstance(args, argparse.Namespace) else state.get("args")
    if not isinstance(args, argparse.Namespace) or getattr(args, "arch", "").split("_")[:2] != ["node", "transformer"]:
        raise ConversionError(f"{path}: not a fairseq node_transformer checkpoint (arch "
                              f"{getattr(args, 'arch', None)!r})")
    return args, state["model"]


def config_from_fairseq(args: argparse.Namespace, vocab_size: int) -> NodeTransformerConfig:
    """The HF config of a fairseq model, with its solver resolved exactly as fairseq resolves it."""
    from node_seq.fairseq import options

    options.fill_defaults(args)
    for name, supported in _UNSUPPORTED.items():
        if getattr(args, name, supported) not in (supported, None, False, ""):
            raise ConversionError(f"--{name.replace('_', '-')} is not supported by the HF model")
    for side in ("decoder_input_dim", "decoder_output_dim"):
        if getattr(args, side, args.decoder_embed_dim) != args.decoder_embed_dim:
            raise ConversionError(f"--{side.replace('_', '-')} must equal --decoder-embed-dim")
    solver = options.solver_config(args)  # step sizes become whole steps here, as in fairseq
    return NodeTransformerConfig(
        vocab_size=vocab_size,
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
        node_encoder=bool(args.node_encoder), node_decoder=bool(args.node_decoder), node_method=solver.method,
        node_steps=solver.steps, node_rtol=solver.rtol, node_atol=solver.atol, node_ts=[solver.t0, solver.t1],
        node_gradient=solver.gradient, node_adjoint_rtol=solver.adjoint_rtol, node_adjoint_atol=solver.adjoint_atol,
        node_seminorm=solver.seminorm, node_checkpoint_snapshots=solver.checkpoint_snapshots,
        node_max_num_steps=solver.max_num_steps,
        node_augment_dims=args.node_augment_dims, node_time_dependent=bool(args.node_time_dependent),
        node_separated_decoder=bool(args.node_separated_decoder),
        node_kinetic_weight=float(getattr(args, "node_kinetic_weight", 0.0)),
        node_jacobian_weight=float(getattr(args, "node_jacobian_weight", 0.0)),
        use_cache=bool(args.node_incremental_cache) and (not args.node_decoder or solver.is_fixed_grid),
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
# everything


def _dictionary(data_bin: Path) -> Path:
    dicts = sorted(data_bin.glob("dict.*.txt"))
    if not dicts:
        raise ConversionError(f"{data_bin}: no fairseq dictionary (dict.*.txt)")
    texts = {d.read_text(encoding="utf-8") for d in dicts}
    if len(texts) > 1:
        raise ConversionError(f"{data_bin}: source and target dictionaries differ; the HF model needs one joined "
                              "dictionary (fairseq-preprocess --joined-dictionary)")
    return dicts[0]


def convert(checkpoint: str | Path, data_bin: str | Path, out: str | Path, *, tokenizer_json: str | Path | None = None):
    """Write ``out/`` (config.json, model.safetensors, generation_config.json, tokenizer files).

    Returns the converted model and tokenizer.
    """
    from .modeling_node_transformer import NodeTransformerForConditionalGeneration

    data_bin, out = Path(data_bin), Path(out)
    tokenizer_json = Path(tokenizer_json) if tokenizer_json else data_bin / "tokenizer.json"
    if not tokenizer_json.exists():
        raise ConversionError(f"{tokenizer_json}: missing (node_seq.prepare copies tokenizer.json into the bin folder)")
    dictionary = _dictionary(data_bin)
    args, state_dict = load_fairseq_checkpoint(checkpoint)
    vocab_size, symbols = state_dict["encoder.embed_tokens.weight"].shape[0], read_fairseq_dictionary(dictionary)
    if vocab_size != len(symbols):
        raise ConversionError(f"{checkpoint} has {vocab_size} embeddings but {dictionary} has {len(symbols)} "
                              "symbols: not the model's data")
    config = config_from_fairseq(args, vocab_size)
    model = NodeTransformerForConditionalGeneration(config)
    result = model.load_state_dict(convert_state_dict(state_dict), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ConversionError(f"weights do not fit: missing {result.missing_keys}, unexpected {result.unexpected_keys}")
    model.eval()
    try:
        tokenizer = build_tokenizer(tokenizer_json, dictionary=symbols, model_max_length=args.max_source_positions)
    except ValueError as error:
        raise ConversionError(str(error)) from None
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return model, tokenizer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Convert a fairseq node_transformer checkpoint to an HF model folder.")
    parser.add_argument("--checkpoint", required=True, help="fairseq checkpoint (e.g. CK/checkpoint_best.pt)")
    parser.add_argument("--data-bin", required=True, help="the fairseq data folder (dict.*.txt, tokenizer.json)")
    parser.add_argument("--out", required=True, help="output folder for from_pretrained")
    parser.add_argument("--tokenizer", default=None, help="tokenizer.json (default: DATA_BIN/tokenizer.json)")
    args = parser.parse_args(argv)
    for name in ("checkpoint", "data_bin"):
        if not Path(getattr(args, name)).exists():
            parser.error(f"--{name.replace('_', '-')}: not found: {getattr(args, name)}")
    try:
        convert(args.checkpoint, args.data_bin, args.out, tokenizer_json=args.tokenizer)
    except ConversionError as error:
        parser.error(str(error))
    print(f"wrote {args.out}")
