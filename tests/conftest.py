import pytest
import torch
from tiers import FastTierGuard


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(FastTierGuard(), "fast-tier-guard")


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def one_step_models(tmp_path_factory):
    """The numbers task and an ``rk2_gated`` and an ``euler`` model trained four updates, shared by the
    readings that decode one checkpoint many ways (elastic depth, gate statistics, length penalty)."""
    pytest.importorskip("fairseq")
    from fairseq_helpers import train_one_step_models

    return train_one_step_models(tmp_path_factory.mktemp("one-step-models"), ("rk2_gated", "euler"))


@pytest.fixture
def validated_options(monkeypatch):
    """Every :class:`~node_seq.nn.options.NodeOptions` validated from here on, in order (building one
    from a front end's values validates it: ``check`` runs once per object built)."""
    from node_seq.nn.options import NodeOptions

    validated, check = [], NodeOptions.check

    def counted(self, *args, **kwargs):
        validated.append(self)
        return check(self, *args, **kwargs)

    monkeypatch.setattr(NodeOptions, "check", counted)
    return validated
