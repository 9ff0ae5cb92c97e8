"""Loading fairseq checkpoints safely under torch >= 2.6.

torch now unpickles checkpoints with ``weights_only=True`` by default, which refuses any class not
allow-listed. A checkpoint of a fairseq model registered with ``add_args`` (ours included) stores
its hyper-parameters as an ``argparse.Namespace`` and nothing else beyond plain containers and
tensors, so that single class is what we allow; every other pickled object is still refused.
"""

from __future__ import annotations

import argparse

import torch

#: Exactly what fairseq's checkpoints of this model need beyond torch's default allow-list.
FAIRSEQ_CHECKPOINT_GLOBALS = (argparse.Namespace,)


def allow_fairseq_checkpoints() -> None:
    torch.serialization.add_safe_globals(list(FAIRSEQ_CHECKPOINT_GLOBALS))
