"""The ODE Transformer's blocks: rk4_classic, and the learned blocks rk2_gated and pc.

Each step against a hand computation, the learned coefficients' gradients against float64 finite
differences in every gradient mode the blocks allow, the per-stage cache of the decoder, the NFE,
the parameters a layer adds, and the refusals (named as each front end spells the option).
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from node_seq.nn import LayerSpec, NodeDecoderLayer, NodeEncoderLayer
from node_seq.nn.coefficients import EMACoefficients, StageGate, learned_coefficients
from node_seq.nn.options import FAIRSEQ, HF, VISION, NodeOptions
from node_seq.ode import OptionError, SolverConfig, current_stage, solve

from layer_inputs import assert_incremental_equals_full, padded_batch
from ode_fields import Decay

LEARNED = ("rk2_gated", "pc")
SPEC = LayerSpec(embed_dim=8, num_heads=2, ffn_dim=16, dropout=0.0)
float64 = torch.float64


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny layers only lose from more threads on shared cores (gradcheck runs them hundreds of times)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TanhField(nn.Module):
    """``f(t, y) = tanh(W y) + t v``: nonlinear, time-dependent, with parameters."""

    def __init__(self, width: int = 4):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(width, width, dtype=float64) / math.sqrt(width))
        self.time = nn.Parameter(torch.randn(width, dtype=float64))

    def forward(self, t, y):
        return torch.tanh(y @ self.weight.T) + t * self.time


def coefficients(method: str, width: int = 4) -> nn.Module:
    """The layer's coefficients for ``method``, nudged off their init so every weight matters."""
    module = learned_coefficients(SolverConfig(method=method), width).double()
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return module


def at(t: float) -> torch.Tensor:
    return torch.tensor(t, dtype=float64)


# ---------------------------------------------------------------------------------------------
# rk4_classic


def classic_rk4_step(f, t: float, y, h: float):
    k1 = f(at(t), y)
    k2 = f(at(t + h / 2), y + h / 2 * k1)
    k3 = f(at(t + h / 2), y + h / 2 * k2)
    k4 = f(at(t + h), y + h * k3)
    return y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


def test_rk4_classic_takes_the_classic_step_not_kuttas_three_eighths():
    field = Decay(k=1.3).requires_grad_(False)
    y0 = torch.tensor([0.7, -0.2], dtype=float64)
    got, stats = solve(field, y0, method="rk4_classic", steps=2, t1=1.0)
    expected = classic_rk4_step(field, 0.5, classic_rk4_step(field, 0.0, y0, 0.5), 0.5)
    torch.testing.assert_close(got, expected, rtol=1e-14, atol=1e-14)
    assert stats.nfe_forward == 8 and stats.num_steps == 2
    kutta, _ = solve(field, y0, method="rk4", steps=2, t1=1.0)  # same order, other coefficients
    assert (kutta - got).abs().max() > 1e-6


def test_rk4_classic_evaluates_at_the_classic_stage_times():
    times = []

    def field(t, y):
        times.append(float(t))
        return -y

    solve(field, torch.ones(2, dtype=float64), method="rk4_classic", steps=2, t1=1.0)
    assert times == [0.0, 0.25, 0.25, 0.5, 0.5, 0.75, 0.75, 1.0]


def test_rk4_classic_converges_with_order_four():
    field = Decay(k=1.0).requires_grad_(False)
    y0, t1 = 0.7, 2.0
    errors = []
    for steps in (8, 16, 32):
        y1, _ = solve(field, torch.tensor(y0, dtype=float64), method="rk4_classic", steps=steps, t1=t1)
        errors.append(abs(float(y1) - Decay.exact(y0, t1)))
    orders = [math.log2(coarse / fine) for coarse, fine in zip(errors, errors[1:])]
    assert all(3.7 < order < 4.3 for order in orders), orders


@pytest.mark.parametrize("gradient,snapshots", [("checkpoint", None), ("checkpoint", 1)])
def test_rk4_classic_checkpointed_gradients_equal_backprop(gradient, snapshots):
    grads = []
    for mode, kept in (("backprop", None), (gradient, snapshots)):
        torch.manual_seed(3)
        field = TanhField()
        y0 = torch.randn(3, 4, dtype=float64, requires_grad=True)
        y1, _ = solve(field, y0, method="rk4_classic", steps=5, gradient=mode, checkpoint_snapshots=kept)
        y1.square().sum().backward()
        grads.append([y0.grad, *(p.grad for p in field.parameters())])
    for got, want in zip(grads[1], grads[0]):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# the learned steps by hand


def test_rk2_gated_mixes_heuns_stages_with_the_gate():
    field, gate = TanhField(), coefficients("rk2_gated")
    y = y0 = torch.randn(3, 4, dtype=float64)
    got, _ = solve(field, y0, method="rk2_gated", steps=2, t1=1.0, coefficients=gate)
    h = 0.5
    with torch.no_grad():
        for i in range(2):
            k1 = field(at(i * h), y)
            k2 = field(at(i * h + h), y + h * k1)
            g = torch.sigmoid(torch.cat([k1, k2], -1) @ gate.gate_linear.weight.T + gate.gate_linear.bias)
            assert g.shape == (3, 1)  # one weight per token
            y = y + h * (g * k1 + (1 - g) * k2)
    torch.testing.assert_close(got, y, rtol=1e-13, atol=1e-13)


def test_rk2_gated_with_a_gate_of_one_half_is_heun():
    field, gate = TanhField(), StageGate(4).double()
    with torch.no_grad():
        gate.gate_linear.weight.zero_()  # g = sigmoid(0) = 1/2
    y0 = torch.randn(3, 4, dtype=float64)
    gated, _ = solve(field, y0, method="rk2_gated", steps=3, coefficients=gate)
    heun, _ = solve(field, y0, method="heun", steps=3)
    torch.testing.assert_close(gated, heun, rtol=1e-14, atol=1e-14)


def test_pc_predicts_with_ema_coefficients_and_corrects_with_a_learned_trapezoid():
    field, learned = TanhField(), coefficients("pc")
    y = y0 = torch.randn(3, 4, dtype=float64)
    got, _ = solve(field, y0, method="pc", steps=2, t1=1.0, coefficients=learned)
    norms = learned.stage_norms
    a, b = learned.alpha, learned.beta
    h = 0.5
    with torch.no_grad():
        for i in range(2):
            norm = [lambda k, n=n: F.layer_norm(k, (4,), n.weight, n.bias) for n in norms]
            k1 = field(at(i * h), y)
            k2 = field(at(i * h + h), y + h * k1)  # stage inputs use the raw stages
            predicted = y + h * (a * (1 - a) * norm[0](k1) + a * norm[1](k2))
            k3 = field(at(i * h + h), predicted)
            y = y + h * ((1 - b) * norm[0](k1) + b * norm[2](k3))
    torch.testing.assert_close(got, y, rtol=1e-13, atol=1e-13)


def test_the_coefficients_start_as_the_papers_do():
    pc = EMACoefficients(4)
    assert pc.alpha.item() == 0.5 and pc.beta.item() == 0.5
    assert all(torch.equal(n.weight, torch.ones(4)) and torch.equal(n.bias, torch.zeros(4)) for n in pc.stage_norms)
    gate = StageGate(4)
    assert torch.equal(gate.gate_linear.bias, torch.zeros(1)) and gate.gate_linear.weight.abs().sum() > 0


@pytest.mark.parametrize("method,stage_offsets", [("rk2_gated", (0.0, 1.0)), ("pc", (0.0, 1.0, 1.0))])
def test_each_evaluation_has_its_own_stage_index_and_time(method, stage_offsets):
    seen = []

    def field(t, y):
        stage = current_stage()
        seen.append((stage.index, float(stage.t)))
        return -y

    _, stats = solve(field, torch.ones(2, 4, dtype=float64), method=method, steps=2, t1=1.0,
                     coefficients=coefficients(method))
    per_step = len(stage_offsets)
    assert [index for index, _ in seen] == list(range(2 * per_step))
    assert [t for _, t in seen] == [(i + c) / 2 for i in range(2) for c in stage_offsets]
    assert (stats.nfe_forward, stats.num_steps) == (2 * per_step, 2)


@pytest.mark.parametrize("method", LEARNED)
def test_checkpoint_recomputes_each_step_once(method):
    field = TanhField()
    y0 = torch.randn(3, 4, dtype=float64, requires_grad=True)
    y1, stats = solve(field, y0, method=method, steps=3, gradient="checkpoint", coefficients=coefficients(method))
    y1.sum().backward()
    assert stats.nfe_forward == stats.nfe_backward == 3 * (2 if method == "rk2_gated" else 3)


# ---------------------------------------------------------------------------------------------
# gradients


@pytest.mark.parametrize("gradient", ["backprop", "checkpoint"])
@pytest.mark.parametrize("method", LEARNED)
def test_layer_gradients_match_finite_differences(method, gradient):
    """The state's, the field's and the coefficients' gradients, against float64 finite differences."""
    layer = NodeEncoderLayer(LayerSpec(embed_dim=4, num_heads=2, ffn_dim=8, dropout=0.0),
                             SolverConfig(method=method, steps=2, gradient=gradient)).double()
    with torch.no_grad():
        for parameter in layer.coefficients.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    x = torch.randn(1, 3, 4, dtype=float64, requires_grad=True)
    parameters = tuple(layer.parameters())
    assert any(p is q for p in parameters for q in layer.coefficients.parameters())
    assert torch.autograd.gradcheck(lambda x, *_: layer(x), (x, *parameters))


def _layer_grads(method, gradient, snapshots=None):
    torch.manual_seed(0)
    layer = NodeEncoderLayer(SPEC, SolverConfig(method=method, steps=3, gradient=gradient,
                                                checkpoint_snapshots=snapshots)).double()
    x = torch.randn(2, 5, 8, dtype=float64, requires_grad=True)
    padding = torch.zeros(2, 5, dtype=torch.bool)
    padding[1, 3:] = True
    (layer(x, padding) * torch.linspace(-1, 1, 8, dtype=float64)).sum().backward()
    return {"x": x.grad, **{name: p.grad for name, p in layer.named_parameters()}}


@pytest.mark.parametrize("gradient,snapshots", [("checkpoint", None), ("checkpoint", 1), ("checkpoint", 0)])
@pytest.mark.parametrize("method", LEARNED)
def test_checkpointed_gradients_equal_backprop(method, gradient, snapshots):
    want = _layer_grads(method, "backprop")
    got = _layer_grads(method, gradient, snapshots)
    assert set(got) == set(want) and any(name.startswith("coefficients.") for name in got)
    for name, grad in got.items():
        assert grad is not None and grad.abs().sum() > 0, name  # every weight, the coefficients' included
        torch.testing.assert_close(grad, want[name], rtol=1e-10, atol=1e-12, msg=lambda m: f"{name}: {m}")


# ---------------------------------------------------------------------------------------------
# layers: decoding cache, parameters


DECODERS = {
    "rk2_gated": dict(solver=SolverConfig(method="rk2_gated", steps=2)),
    "pc": dict(solver=SolverConfig(method="pc", steps=2)),
    "rk4_classic": dict(solver=SolverConfig(method="rk4_classic", steps=2)),
    "pc-separated-augmented": dict(solver=SolverConfig(method="pc", steps=1), separated=True, augment_dims=2,
                                   time_dependent=True),
}


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_incremental_decoding_equals_full_decoding(name):
    options = dict(DECODERS[name])
    layer = NodeDecoderLayer(SPEC, options.pop("solver"), **options).eval()
    if layer.coefficients is not None:
        with torch.no_grad():
            for parameter in layer.coefficients.parameters():
                parameter.add_(0.3 * torch.randn_like(parameter))
    cache = assert_incremental_equals_full(layer, *padded_batch(width=SPEC.embed_dim))
    evaluations = layer.solver.grid_steps * {"rk2_gated": 2, "pc": 3, "rk4_classic": 4}[layer.solver.method]
    assert layer.last_stats.nfe_forward == evaluations  # a new token: one solve of one position
    if not layer.separated:  # one cache per evaluation, the corrector's included
        assert sorted(cache["stages"]) == list(range(evaluations))


@pytest.mark.parametrize("method,extra", [("rk2_gated", lambda d: 2 * d + 1), ("pc", lambda d: 6 * d + 2),
                                          ("rk4_classic", lambda d: 0)])
def test_a_learned_block_adds_only_its_coefficients(method, extra):
    def count(layer):
        return sum(p.numel() for p in layer.parameters())

    for augment in (0, 2):
        width = SPEC.embed_dim + augment
        plain_encoder = NodeEncoderLayer(SPEC, SolverConfig(method="heun"), augment_dims=augment)
        plain_decoder = NodeDecoderLayer(SPEC, SolverConfig(method="heun"), augment_dims=augment)
        encoder = NodeEncoderLayer(SPEC, SolverConfig(method=method), augment_dims=augment)
        decoder = NodeDecoderLayer(SPEC, SolverConfig(method=method), augment_dims=augment)
        assert count(encoder) == count(plain_encoder) + extra(width)
        assert count(decoder) == count(plain_decoder) + extra(width)
    assert NodeEncoderLayer(SPEC, None).coefficients is None  # a plain layer learns no block


# ---------------------------------------------------------------------------------------------
# refusals


@pytest.mark.parametrize("gradient", ["adjoint", "reversible"])
@pytest.mark.parametrize("method", LEARNED)
def test_adjoint_and_reversible_are_refused_for_learned_blocks(method, gradient):
    message = (f"'{gradient}' cannot differentiate the learned block '{method}'.*use 'backprop' or 'checkpoint'")
    with pytest.raises(OptionError, match=r"^gradient: " + message):
        SolverConfig(method=method, gradient=gradient).validate()
    with pytest.raises(OptionError, match=r"^--node-gradient: " + message):
        NodeOptions(method=method, gradient=gradient).check(FAIRSEQ)
    with pytest.raises(OptionError, match=r"^node_gradient: " + message):
        NodeOptions(method=method, gradient=gradient).check(HF)


def test_the_adjoint_refuses_rk4_classic_and_says_what_to_use():
    message = r"gradient 'adjoint' integrates with torchdiffeq, which has no classic RK4 .* use method 'rk4'"
    with pytest.raises(OptionError, match=r"^--node-method: " + message):
        NodeOptions(method="rk4_classic", gradient="adjoint").check(FAIRSEQ)
    with pytest.raises(OptionError, match=r"^node_method: " + message):
        NodeOptions(method="rk4_classic", gradient="adjoint").check(HF)
    with pytest.raises(OptionError, match=r"^--node-method: gradient 'reversible' runs only euler, heun"):
        NodeOptions(method="rk4_classic", gradient="reversible").check(FAIRSEQ)


@pytest.mark.parametrize("argv,message", [
    (["--node-method", "rk2_gated", "--node-gradient", "adjoint"],
     "--node-gradient: 'adjoint' cannot differentiate the learned block 'rk2_gated'"),
    (["--node-method", "pc", "--node-gradient", "reversible"],
     "--node-gradient: 'reversible' cannot differentiate the learned block 'pc'"),
    (["--node-method", "rk4_classic", "--node-gradient", "adjoint"],
     "--node-method: gradient 'adjoint' integrates with torchdiffeq, which has no classic RK4"),
])
def test_fairseq_refuses_them_while_parsing(argv, message, capsys):
    pytest.importorskip("fairseq")
    from fairseq import options

    import node_seq.fairseq  # noqa: F401  (registers the model)

    with pytest.raises(SystemExit) as info:
        options.parse_args_and_arch(options.get_training_parser(), ["data", "--arch", "node_transformer_tiny", *argv])
    assert message in str(info.value.code) + capsys.readouterr().err


def test_learned_blocks_are_refused_where_no_layer_owns_coefficients():
    with pytest.raises(OptionError, match=r"^--method: 'pc' is a learned block of the sequence models' layers"):
        NodeOptions(method="pc").check(VISION)
    with pytest.raises(OptionError, match=r"^--node-kinetic-weight: the regularisers are integrals"):
        NodeOptions(method="rk2_gated", kinetic_weight=0.1).check(FAIRSEQ)
    with pytest.raises(OptionError, match=r"^node_jacobian_weight: the regularisers are integrals"):
        NodeOptions(method="pc", jacobian_weight=0.1).check(HF)
    NodeOptions(method="rk4_classic").check(VISION)  # fixed coefficients: anywhere


def test_vision_offers_no_learned_block(tmp_path):
    from vision.config import TrainConfig

    with pytest.raises(OptionError, match=r"^--method: 'rk2_gated' is a learned block"):
        TrainConfig.from_dict({"method": "rk2_gated", "output_dir": str(tmp_path)}).validate()
    with pytest.raises(OptionError, match=r"^--test-solver-list: .*'pc'"):
        TrainConfig.from_dict({"test_solver_list": ["rk4_classic", "pc"], "output_dir": str(tmp_path)}).validate()
    TrainConfig.from_dict({"method": "rk4_classic", "steps": 2, "test_solver_list": ["rk4_classic"],
                           "output_dir": str(tmp_path)}).validate()


def test_solve_asks_for_the_coefficients_of_a_learned_block_only():
    y0 = torch.ones(2, 4, dtype=float64)
    with pytest.raises(TypeError, match="'rk2_gated' is a learned block: pass its learned coefficients"):
        solve(TanhField(), y0, method="rk2_gated")
    with pytest.raises(TypeError, match="coefficients= apply to the learned blocks only, not to method 'rk4'"):
        solve(TanhField(), y0, method="rk4", coefficients=coefficients("pc"))
