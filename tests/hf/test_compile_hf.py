"""The HF model under ``torch.compile`` (one graph, eager's numbers) and ``torch.export``.

``aot_eager`` is dynamo plus AOT autograd, what inductor receives, without its slow code generation.
"""

import pytest
import torch
from torch.export import Dim

from node_seq.hf import NodeTransformerConfig, NodeTransformerForConditionalGeneration
from node_seq.nn.layers import check_finite
from node_seq.ode import compile_settings

pytestmark = pytest.mark.slow  # torch.compile and torch.export: each test traces and compiles

TINY = dict(vocab_size=40, encoder_embed_dim=16, decoder_embed_dim=16, encoder_ffn_dim=32, decoder_ffn_dim=32,
            encoder_layers=1, decoder_layers=1, encoder_attention_heads=4, decoder_attention_heads=4, dropout=0.0,
            node_method="midpoint", node_steps=1, max_position_embeddings=64)


def tiny_model(**fields):
    torch.manual_seed(0)
    return NodeTransformerForConditionalGeneration(NodeTransformerConfig(**{**TINY, **fields}))


def source(batch=3, width=7):
    ids = torch.randint(4, 40, (batch, width))
    ids[1:, width - 2:] = 1  # padding, as a batch of different lengths has
    return ids, ids.ne(1).long()


@pytest.mark.parametrize("gradient", ["backprop", "checkpoint"])
def test_a_compiled_training_step_is_one_graph_with_eager_loss_gradients_and_nfe(gradient):
    model = tiny_model(node_gradient=gradient).train()
    ids, mask = source()
    labels = torch.randint(4, 40, (3, 6))

    def step(call):
        model.zero_grad()
        loss = call(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()], model.last_nfe, model.nfe_backward

    eager = step(model)
    with compile_settings():
        compiled = step(torch.compile(model, fullgraph=True, backend="aot_eager"))
    torch.testing.assert_close(compiled[0], eager[0])
    for grad, eager_grad in zip(compiled[1], eager[1]):
        torch.testing.assert_close(grad, eager_grad, rtol=1e-4, atol=1e-6)
    assert compiled[2].nfe_forward == eager[2].nfe_forward == 4  # midpoint, one step, one layer per side
    assert compiled[3] == eager[3] == (4 if gradient == "checkpoint" else 0)
    check_finite(model)  # every compiled solve left a flag; all finite


def test_generate_with_a_compiled_forward_gives_eager_tokens_and_nfe():
    """Cached decoding steps compile whole (the per-stage cache included); a handful of graphs, not one per step."""
    model = tiny_model().eval()
    ids, mask = source()
    generate = dict(attention_mask=mask, num_beams=2, max_new_tokens=8, min_new_tokens=8)
    eager = model.generate(ids, **generate)
    eager_nfe = model.generation_nfe
    torch._dynamo.reset()
    model.forward = torch.compile(model.forward, fullgraph=True, backend="aot_eager")
    assert model.generate(ids, **generate).tolist() == eager.tolist()
    assert model.generation_nfe == eager_nfe
    check_finite(model)


def test_encoder_and_decoder_export_with_dynamic_batch_and_length():
    model = tiny_model().eval()
    encoder, decoder = model.get_encoder(), model.get_decoder()
    batch, src, tgt = Dim("batch", min=1, max=32), Dim("source", min=2, max=48), Dim("target", min=2, max=48)
    ids, mask = source()
    exported_encoder = torch.export.export(
        encoder, (), {"input_ids": ids, "attention_mask": mask},
        dynamic_shapes={"input_ids": {0: batch, 1: src}, "attention_mask": {0: batch, 1: src}}).module()
    hidden = encoder(ids, mask).last_hidden_state
    targets = torch.randint(4, 40, (3, 5))
    exported_decoder = torch.export.export(
        decoder, (targets, hidden, mask == 0),
        dynamic_shapes=({0: batch, 1: tgt}, {0: batch, 1: src}, {0: batch, 1: src})).module()
    ids, mask = source(batch=5, width=11)  # other sizes than those exported with
    targets = torch.randint(4, 40, (5, 9))
    with torch.no_grad():
        hidden = encoder(ids, mask).last_hidden_state
        torch.testing.assert_close(exported_encoder(input_ids=ids, attention_mask=mask).last_hidden_state, hidden)
        torch.testing.assert_close(exported_decoder(targets, hidden, mask == 0)[0], decoder(targets, hidden, mask == 0)[0])
