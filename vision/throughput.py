"""Training throughput of a registered ODENet on CIFAR-sized random batches, fp32 and bf16 autocast.

What AMP buys a vision ODE model: images/s of SGD training steps (forward, backward, update), the
median over ``--repeats`` timed steps after one warm-up step, once in fp32 and once under
``torch.autocast(dtype=torch.bfloat16)``::

    python -m vision.throughput --model odenet4 --device cuda --out vision/results/throughput
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from node_seq.ode import SolverConfig

from .models import create_model


def images_per_second(model: torch.nn.Module, *, batch_size: int, device: str, amp: bool, repeats: int) -> float:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.randn(batch_size, 3, 32, 32, device=device)
    labels = torch.randint(0, 10, (batch_size,), device=device)
    cuda = torch.device(device).type == "cuda"

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=amp):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize()

    step()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        samples.append(time.perf_counter() - start)
    return batch_size / statistics.median(samples)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name}", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="odenet4")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default=None, help="path prefix for <out>.json")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = create_model(args.model).to(args.device)
    model.set_solver(SolverConfig(method="euler", steps=1))  # one step per block: the cost of the layers, not the solver
    rows = [{"model": args.model, "precision": name, "batch": args.batch_size,
             "images_per_s": images_per_second(model, batch_size=args.batch_size, device=args.device, amp=amp,
                                               repeats=args.repeats)}
            for name, amp in (("fp32", False), ("bf16 autocast", True))]
    for row in rows:
        print(f"{row['model']} {row['precision']}, batch {row['batch']}: {row['images_per_s']:.1f} images/s")
    if args.out:
        meta = {"device": args.device, "torch": torch.__version__, "repeats": args.repeats,
                **({"gpu": torch.cuda.get_device_name()} if torch.cuda.is_available() else {})}
        with open(args.out + ".json", "w", encoding="utf-8") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
