"""The NODE option schema: every front end exposes every option it should, with the schema's default,
passes a value through unchanged, and names the option its own way when the value is bad."""

import dataclasses
from pathlib import Path

import pytest

from node_seq.nn.options import (
    FAIRSEQ, FAIRSEQ_LM, FRONT_ENDS, HF, HF_LM, OPTIONS, TRAIN_HF, TRAIN_HF_LM, VISION, NodeOptions,
    format_time_points, options_of,
)
from node_seq.ode import OptionError

REPO = Path(__file__).resolve().parents[1]
fairseq = pytest.importorskip("fairseq")


def _train_hf():
    from node_seq.hf.cli import train

    return train


def _train_hf_lm(tmp_path, argv):
    from node_seq.hf.cli import train_lm

    (tmp_path / "train.txt").write_text("a sentence\n")
    return train_lm.parse_args(["--data", str(tmp_path), "--out", str(tmp_path / "out"), *argv])


def _fairseq_namespace(argv, front_end=FAIRSEQ):
    from fairseq import options

    from node_seq.fairseq import options as node_options  # noqa: F401  (registers the model)

    parser = options.get_training_parser()
    model = (["--task", "node_translation", "--arch", "node_transformer_tiny"] if front_end == FAIRSEQ else
             ["--task", "node_language_modeling", "--arch", "node_transformer_lm_tiny"])
    return options.parse_args_and_arch(parser, [str(REPO), *model, *argv])


def _flags(front_end, values):
    argv = []
    for name, value in values.items():
        option = OPTIONS[name]
        flag = option.spelled(front_end)
        if option.base_type is bool:
            argv.append(flag if value else "--no-" + flag[2:])
        elif option.base_type is tuple:
            argv += [flag, format_time_points(value)]
        else:
            argv += [flag, str(value)]
    return argv


def read_back(front_end, values, tmp_path):
    """Give ``values`` (schema names) to a front end the way its user would; read its options back."""
    if front_end in (FAIRSEQ, FAIRSEQ_LM):
        return NodeOptions.from_front_end(_fairseq_namespace(_flags(front_end, values), front_end), front_end)
    if front_end in (HF, HF_LM):
        from node_seq.hf import NodeTransformerConfig, NodeTransformerLMConfig

        fields = {OPTIONS[name].spelled(front_end): value for name, value in values.items()}
        return (NodeTransformerConfig if front_end == HF else NodeTransformerLMConfig)(**fields).node_options()
    if front_end == TRAIN_HF_LM:
        return _train_hf_lm(tmp_path, _flags(TRAIN_HF_LM, values)).node_options
    if front_end == TRAIN_HF:
        args = _train_hf().parse_args(["--data", str(tmp_path), "--out", str(tmp_path / "out"),
                                       *_flags(TRAIN_HF, values)])
        return args.node_options
    from vision.config import TrainConfig

    config = TrainConfig.from_dict({OPTIONS[name].spelled(VISION, attribute=True): value
                                    for name, value in values.items()})
    return NodeOptions.from_front_end(config, VISION)


def exposed_names(front_end, tmp_path):
    """The NODE options a front end actually has, in schema names."""
    if front_end in (FAIRSEQ, TRAIN_HF, FAIRSEQ_LM, TRAIN_HF_LM):
        if front_end in (FAIRSEQ, FAIRSEQ_LM):
            args = _fairseq_namespace([], front_end)
        elif front_end == TRAIN_HF:
            args = _train_hf().parse_args(["--data", str(tmp_path), "--out", str(tmp_path / "out")])
        else:
            args = _train_hf_lm(tmp_path, [])
        return {key[len("node_"):] for key in vars(args) if key.startswith("node_") and key != "node_options"}
    if front_end in (HF, HF_LM):
        from node_seq.hf import NodeTransformerConfig, NodeTransformerLMConfig

        config = NodeTransformerConfig if front_end == HF else NodeTransformerLMConfig
        return {f.name[len("node_"):] for f in dataclasses.fields(config) if f.name.startswith("node_")}
    from vision.config import TrainConfig

    return {f.name for f in dataclasses.fields(TrainConfig)} & set(OPTIONS)


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_every_front_end_exposes_exactly_its_options_with_the_schema_defaults(front_end, tmp_path):
    assert exposed_names(front_end, tmp_path) == {option.name for option in options_of(front_end)}
    assert read_back(front_end, {}, tmp_path) == NodeOptions()


def _other_value(option):
    """A valid value that is not the default, and the companions it needs to be valid."""
    if option.choices is not None:
        value = next(c for c in option.choices if c != option.default)
        companions = {"gradient": {"method": "rk4"}, "plain_norm": {"decoder": False}}.get(option.name, {})
        return ("fallback" if option.name == "failure_policy" else value), companions
    special = {
        "steps": (3, {"method": "rk4"}), "step_size": (0.25, {"method": "rk4"}), "ts": ((0.0, 2.0), {}),
        "checkpoint_snapshots": (1, {"method": "rk4", "gradient": "checkpoint"}),
        "adjoint_rtol": (1e-5, {}), "adjoint_atol": (1e-6, {}), "augment_dims": (4, {}),
        "separated_decoder": (True, {}), "decoder": (False, {}),
    }
    if option.name in special:
        return special[option.name]
    if option.base_type is bool:
        return not option.default, {}
    return option.default * 3 if option.default else 0.5, {}


CASES = [(front_end, option.name) for front_end in FRONT_ENDS for option in options_of(front_end)]


@pytest.mark.parametrize("front_end, name", CASES, ids=[f"{f}-{n}" for f, n in CASES])
def test_a_value_given_to_a_front_end_arrives_unchanged(front_end, name, tmp_path):
    value, companions = _other_value(OPTIONS[name])
    got = read_back(front_end, {name: value, **companions}, tmp_path)
    assert getattr(got, name) == value
    assert got == dataclasses.replace(NodeOptions(), **{name: value, **companions})


@pytest.mark.parametrize("front_end, spelled", [
    (FAIRSEQ, "--node-steps"), (HF, "node_steps"), (TRAIN_HF, "--node-steps"), (VISION, "--steps"),
    (FAIRSEQ_LM, "--node-steps"), (HF_LM, "node_steps"), (TRAIN_HF_LM, "--node-steps")])
def test_a_bad_value_is_refused_naming_the_option_as_the_front_end_spells_it(front_end, spelled, tmp_path, capsys):
    with pytest.raises((OptionError, SystemExit)) as info:
        read_back(front_end, {"method": "rk4", "steps": 0}, tmp_path)
    message = str(info.value) + capsys.readouterr().err
    assert f"{spelled}: must be an integer >= 1, got 0" in message


def test_the_checks_that_combine_options_live_in_the_schema():
    with pytest.raises(OptionError, match=r"^node_separated_decoder: needs node_decoder"):
        NodeOptions(decoder=False, separated_decoder=True).check(HF)
    with pytest.raises(OptionError, match=r"^--node-plain-norm: 'post' applies to plain layers, but both sides are ODE"):
        NodeOptions(plain_norm="post").check(FAIRSEQ)
    with pytest.raises(OptionError, match=r"^--node-fallback-method: unknown value 'dopri5'; choose one of euler"):
        NodeOptions(fallback_method="dopri5").check(FAIRSEQ)
    with pytest.raises(OptionError, match=r"^--augment-dims|^node_augment_dims: encoder width 6 \+ 1"):
        NodeOptions(augment_dims=1).check_width("encoder", 6, 2, "heads", HF)
    NodeOptions(augment_dims=1, encoder=False).check_width("encoder", 6, 2, "heads", HF)  # plain side: unused


def test_the_language_models_have_every_option_but_the_encoders():
    for lm, seq2seq in ((FAIRSEQ_LM, FAIRSEQ), (HF_LM, HF), (TRAIN_HF_LM, TRAIN_HF)):
        # no encoder; plain post-norm layers and fairseq's --node-compile are the translation model's so far
        seq2seq_only = {"encoder", "plain_norm"} | ({"compile"} if seq2seq == FAIRSEQ else set())
        assert {o.name for o in options_of(seq2seq)} - {o.name for o in options_of(lm)} == seq2seq_only
        assert all(o.spelled(lm) == o.spelled(seq2seq) for o in options_of(lm))


def test_fixed_grids_get_whole_steps_and_adaptive_methods_no_grid():
    assert NodeOptions(method="rk4", step_size=0.3).solver().steps == 4
    assert NodeOptions(method="rk4").solver().steps == 1
    assert NodeOptions(method="dopri5", steps=3).solver().steps is None


def test_adaptive_methods_start_with_the_whole_interval_unless_told_to_estimate():
    """``initial_step`` is the solver's ``first_step``: the interval's length, or None (Hairer's estimate);
    fixed grids have none."""
    assert NodeOptions().solver().first_step == 1.0
    assert NodeOptions(method="bosh3", ts=(0.0, 2.5)).solver(FAIRSEQ).first_step == 2.5
    assert NodeOptions(initial_step="estimate").solver().first_step is None
    assert NodeOptions(method="rk4").solver().first_step is None
    with pytest.raises(OptionError, match=r"^--node-initial-step: unknown value 'tiny'"):
        NodeOptions(initial_step="tiny").check(FAIRSEQ)
