"""Projector training throughput: spacebind's trainer vs a plain PyTorch loop vs the matmul roofline.

All three in one run on the same in-memory pairs (random unit vectors standing in for cached
embeddings) and the same MLP projector (TrainConfig's default hidden width), batch `--batch`:

- spacebind: `spacebind.training.trainer.train_projector` (no validation split), wall time of the call;
- plain loop: the obvious PyTorch loop: DataLoader(TensorDataset, shuffle=True), the same MLP,
  symmetric InfoNCE with a learnable temperature, AdamW, `loss.item()` logged every step;
- roofline: the time torch.mm alone takes for the matrix products of one training step at the
  same shapes (forward, backward of both layers, the InfoNCE logits and their gradient), i.e.
  FLOPs/sample = 4·in·hidden + 6·hidden·out + 4·batch·out, at the mm FLOP/s measured here.

Run: python -m benchmarks.speed_train [--pairs 25000 --repeats 2]"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.speed_report import best_seconds, best_seconds_interleaved, print_report, target, write_json
from spacebind.bonds.projector import MLPProjector
from spacebind.training.trainer import TrainConfig, train_projector


def _pairs(n: int, d_in: int, d_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return F.normalize(torch.randn(n, d_in, generator=g), dim=-1), F.normalize(torch.randn(n, d_out, generator=g), dim=-1)


def plain_loop(src: torch.Tensor, tgt: torch.Tensor, config: TrainConfig) -> list[float]:
    """The reference: a training loop written the obvious way; returns the logged losses."""
    model = MLPProjector(src.shape[1], tgt.shape[1], config.hidden)
    log_scale = torch.nn.Parameter(torch.tensor(math.log(1 / config.temperature)))
    optimizer = torch.optim.AdamW([*model.parameters(), log_scale], lr=config.lr, weight_decay=config.weight_decay)
    loader = DataLoader(TensorDataset(src, tgt), batch_size=config.batch_size, shuffle=True, drop_last=True)
    losses = []
    for _ in range(config.epochs):
        for x, y in loader:
            logits = log_scale.exp() * model(x) @ y.T
            labels = torch.arange(len(x))
            loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return losses


def step_flops(batch: int, d_in: int, hidden: int, d_out: int) -> int:
    """Matrix-product FLOPs of one training step (the input needs no gradient, the target is frozen)."""
    return batch * (4 * d_in * hidden + 6 * hidden * d_out + 4 * batch * d_out)


def roofline_step_seconds(batch: int, d_in: int, hidden: int, d_out: int) -> float:
    """torch.mm time of one step's matrix products at their real shapes (best of a few)."""
    g = torch.Generator().manual_seed(1)
    shapes = [(batch, d_in, hidden), (batch, hidden, d_out), (batch, d_out, batch),  # forward
              (batch, batch, d_out), (d_out, batch, hidden), (batch, d_out, hidden), (hidden, batch, d_in)]  # backward
    mats = [(torch.randn(m, k, generator=g), torch.randn(k, n, generator=g)) for m, k, n in shapes]

    def step() -> None:
        for a, b in mats:
            torch.mm(a, b)

    step()
    return best_seconds(step, repeats=5)


def measure(pairs: int, d_in: int, d_out: int, batch: int, epochs: int, repeats: int = 2) -> dict[str, Any]:
    """Samples/s of the three (trainer and plain loop timed in turns, best of `repeats`), their
    ratios and the targets."""
    src, tgt = _pairs(pairs, d_in, d_out)
    config = TrainConfig(epochs=epochs, batch_size=batch)
    samples = (pairs // batch) * batch * epochs  # both drop the last partial batch
    ours_s, plain_s = best_seconds_interleaved([lambda: train_projector(src, tgt, config=config, progress=False),
                                                lambda: plain_loop(src, tgt, config)], repeats)
    ours, plain = samples / ours_s, samples / plain_s
    step = roofline_step_seconds(batch, d_in, config.hidden, d_out)
    roof = batch / step
    flops = step_flops(batch, d_in, config.hidden, d_out)
    rows = [{"method": "spacebind train_projector", "samples/s": ours, "GFLOP/s": ours * flops / batch / 1e9},
            {"method": "plain PyTorch loop", "samples/s": plain, "GFLOP/s": plain * flops / batch / 1e9},
            {"method": "torch.mm roofline", "samples/s": roof, "GFLOP/s": flops / step / 1e9}]
    targets = [target("training vs plain loop", ours / plain, 3.0, True),
               target("training vs matmul roofline", ours / roof, 0.60, True, unit="%")]
    return {"benchmark": "speed_train", "params": {"pairs": pairs, "d_in": d_in, "d_out": d_out, "batch": batch,
            "epochs": epochs, "repeats": repeats, "hidden": config.hidden, "threads": torch.get_num_threads()},
            "rows": rows, "targets": targets}


def report(result: dict[str, Any]) -> None:
    p = result["params"]
    print_report(f"projector training, {p['pairs']:,} pairs {p['d_in']}→{p['hidden']}→{p['d_out']}, batch {p['batch']}",
                 result["rows"], ["method", "samples/s", "GFLOP/s"], result["targets"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=25_000)
    parser.add_argument("--d-in", type=int, default=512)
    parser.add_argument("--d-out", type=int, default=768)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()
    result = measure(args.pairs, args.d_in, args.d_out, args.batch, args.epochs, args.repeats)
    report(result)
    write_json(args.json, result)


if __name__ == "__main__":
    main()
