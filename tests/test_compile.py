"""``torch.compile`` of the fixed-grid path: one graph (``fullgraph=True``), eager's numbers.

The backend is ``aot_eager``: dynamo's graph and AOT autograd's forward/backward split, which is
what inductor receives, without its code generation (minutes on these CPUs). Timings are not
asserted; ``benchmarks/compile.py`` measures them.
"""

import pytest
import torch
from layer_inputs import SPEC, padded_batch

from node_seq.nn.layers import NodeDecoderLayer, NodeEncoderLayer, check_finite
from node_seq.ode import NonFiniteState, SolverConfig, compile_settings

pytestmark = pytest.mark.slow  # torch.compile: each test traces and compiles


def compiled(module):
    return torch.compile(module, fullgraph=True, backend="aot_eager")


@pytest.mark.parametrize("gradient", ["backprop", "checkpoint"])
def test_a_compiled_decoder_layer_matches_eager_outputs_gradients_and_nfe(gradient):
    layer = NodeDecoderLayer(SPEC, SolverConfig(method="midpoint", steps=2, gradient=gradient))
    x, padding = padded_batch()
    memory = torch.randn(3, 5, 16, requires_grad=True)
    causal = torch.triu(torch.ones(7, 7, dtype=torch.bool), 1)

    def step(call):
        layer.zero_grad()
        memory.grad = None
        out = call(x, memory, None, self_attn_mask=causal, self_attn_padding_mask=padding)
        out.pow(2).sum().backward()
        return out.detach(), [p.grad for p in layer.parameters()] + [memory.grad], layer.last_stats

    eager_out, eager_grads, eager_stats = step(layer)
    with compile_settings():
        out, grads, stats = step(compiled(layer))
    torch.testing.assert_close(out, eager_out, rtol=1e-5, atol=1e-6)
    for grad, eager_grad in zip(grads, eager_grads):
        torch.testing.assert_close(grad, eager_grad, rtol=1e-4, atol=1e-6)
    assert (stats.nfe_forward, stats.nfe_backward) == (eager_stats.nfe_forward, eager_stats.nfe_backward)
    assert stats.nfe_backward == (4 if gradient == "checkpoint" else 0)  # checkpoint recomputes 2 steps x 2 stages
    assert eager_stats.finite is None and bool(stats.finite)  # the compiled solve's check, left for later


def test_a_compiled_solve_leaves_its_finiteness_check_to_check_finite():
    layer = NodeEncoderLayer(SPEC, SolverConfig(method="euler", steps=2))
    layer.layer_name = "encoder.layers.0"
    x, padding = padded_batch()
    with torch.no_grad():
        layer.field.ffn.fc2.bias.fill_(float("inf"))
    message = r"^encoder\.layers\.0: the ODE state became non-finite \(inf or nan\) \(method=euler\)"
    with pytest.raises(NonFiniteState, match=message):
        layer(x, padding)  # eager: the solve itself raises
    call = compiled(layer)
    call(x, padding)  # compiled: no host synchronisation inside the graph, so nothing raised here
    with pytest.raises(NonFiniteState, match=message):
        check_finite(layer)
    with torch.no_grad():
        layer.field.ffn.fc2.bias.zero_()
    call(x, padding)
    check_finite(layer)  # finite again: nothing to report
