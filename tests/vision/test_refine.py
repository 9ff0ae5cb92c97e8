"""Refinement (1-1-1 -> 2-2-2) and untying keep the function and the optimizer usable."""

import pytest
import torch

from node_seq.ode import SolverConfig
from vision.models import create_model, transfer_optimizer_state


def continuousnet(pieces=(1, 1, 1), norm="bn-ln"):
    return create_model("continuousnet", num_classes=3, input_shape=(1, 8, 8), width=4, pieces=list(pieces),
                        norm=norm)


@pytest.mark.parametrize("method", ["euler", "rk4"])
@pytest.mark.parametrize("norm", ["bn-ln", "bn-bn+wn"])
def test_split_keeps_the_function(method, norm):
    model = continuousnet(norm=norm)
    model.set_solver(SolverConfig(method=method, steps=4))
    x = torch.randn(5, 1, 8, 8)
    before = model(x)
    model.refine(2)
    assert model.pieces == [2, 2, 2]
    assert model.spec["kwargs"]["pieces"] == [2, 2, 2]
    after = model(x)
    assert torch.equal(before, after)
    # the pieces are now separate parameters: changing one piece changes the function
    with torch.no_grad():
        model.ode_blocks()[0].func.pieces[1].conv1.weight.add_(0.5) if norm == "bn-ln" else \
            model.ode_blocks()[0].func.pieces[1].conv1.parametrizations.weight.original1.add_(0.5)
    assert not torch.allclose(model(x), before)


def test_refined_euler_with_doubled_steps_is_the_finer_discretization():
    model = continuousnet()
    model.set_solver(SolverConfig(method="euler", steps=1))
    x = torch.randn(3, 1, 8, 8)
    coarse_in_fine = model(x)
    model.set_solver(SolverConfig(method="euler", steps=2))
    fine = model(x)
    model.refine(2)  # refine_steps: one step per piece, as ContinuousNet does
    assert torch.equal(model(x), fine)
    assert not torch.equal(fine, coarse_in_fine)


@pytest.mark.parametrize("opt_cls", [torch.optim.SGD, torch.optim.Adam])
def test_optimizer_state_follows_the_split(opt_cls):
    model = continuousnet()
    model.set_solver(SolverConfig(method="euler", steps=2))
    kwargs = {"lr": 0.01, "momentum": 0.9} if opt_cls is torch.optim.SGD else {"lr": 0.01}
    optimizer = opt_cls(model.parameters(), **kwargs)
    x, y = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    old_piece = model.ode_blocks()[1].func.pieces[0].conv2.weight
    old_state = {k: v.clone() for k, v in optimizer.state[old_piece].items()}
    mapping = model.refine(2)
    transfer_optimizer_state(optimizer, model, mapping)
    params = list(model.parameters())
    assert optimizer.param_groups[0]["params"] == params  # model order: a checkpoint reloads into a rebuilt model
    assert all(p in optimizer.state for p in params)
    assert not any(p in optimizer.state for p in mapping)
    for copy in mapping[old_piece]:
        for key, value in old_state.items():
            assert torch.equal(optimizer.state[copy][key], value)
        assert optimizer.state[copy][next(iter(old_state))] is not old_state[next(iter(old_state))]
    # a further step moves the new parameters, and a rebuilt model + optimizer loads the state
    snapshot = [p.detach().clone() for p in params]
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    assert all(not torch.equal(s, p) for s, p in zip(snapshot, params) if p.grad is not None and p.grad.abs().sum() > 0)
    rebuilt = create_model("continuousnet", **model.spec["kwargs"])
    rebuilt.load_state_dict(model.state_dict())
    opt2 = opt_cls(rebuilt.parameters(), **kwargs)
    opt2.load_state_dict(optimizer.state_dict())
    for p, q in zip(params, rebuilt.parameters()):
        for key, value in optimizer.state[p].items():
            assert torch.equal(opt2.state[q][key], value)


def test_untie_a_tied_model():
    tied = continuousnet(pieces=(1, 1, 1))
    tied.set_solver(SolverConfig(method="euler", steps=4))
    x = torch.randn(2, 1, 8, 8)
    reference = tied(x)
    tied.untie(4)
    assert tied.pieces == [4, 4, 4]
    assert torch.equal(tied(x), reference)
    with pytest.raises(ValueError, match="tied model"):
        tied.untie(2)
