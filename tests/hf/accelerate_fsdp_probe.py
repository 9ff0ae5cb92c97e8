"""Run under torchrun by ``test_fsdp.py``: what ``TrainingArguments(fsdp=True)`` does on CPU processes.

Writes ``OUT/probe.json`` (rank 0): for FSDP2 whether the ``Trainer`` sharded the model or wrapped it
in DDP after one step; for FSDP1 the error that building its plugin raises.
"""

import json
import sys
from pathlib import Path

from hf_helpers import tiny_model
from transformers import Trainer, TrainingArguments

out = Path(sys.argv[1])


def trainer(version: int) -> Trainer:
    args = TrainingArguments(output_dir=str(out / f"fsdp{version}"), use_cpu=True, report_to=[], max_steps=1,
                             per_device_train_batch_size=2, save_strategy="no", disable_tqdm=True,
                             fsdp=True, fsdp_config={"version": version})
    data = [{"input_ids": [5, 6, 7, 2], "labels": [8, 9, 2]} for _ in range(4)]
    return Trainer(model=tiny_model().train(), args=args, train_dataset=data)


fsdp2 = trainer(2)
fsdp2.train()
found = {"fsdp2": {"is_fsdp_enabled": fsdp2.is_fsdp_enabled, "distributed_type": fsdp2.accelerator.distributed_type.value,
                   "wrapped": type(fsdp2.model_wrapped).__name__}}
try:
    trainer(1)
    found["fsdp1"] = "built"
except RuntimeError as error:
    found["fsdp1"] = f"RuntimeError: {error}"
if fsdp2.is_world_process_zero():
    (out / "probe.json").write_text(json.dumps(found))
