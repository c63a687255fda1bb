"""Jobs run under torchrun by tests/test_distributed.py: `python distributed_jobs.py JOB IN OUT`.

`train`: train_projector on the pairs in IN/pairs.safetensors with the config in IN/config.json;
rank 0 writes OUT/head.safetensors and OUT/history.json.
`grad`: one step's gradients on the batch in IN/pairs.safetensors — of the gathered InfoNCE with
respect to this rank's rows and the temperature, and of an MLP projector's parameters through
`distributed_head` — written by each rank to OUT/grad-rank<R>.safetensors.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from spacebind.bonds.projector import MLPProjector
from spacebind.training import distributed
from spacebind.training.ddp import average_gradients, distributed_head
from spacebind.training.losses import info_nce
from spacebind.training.trainer import TrainConfig, train_projector


def train(inp: Path, out: Path) -> None:
    t = load_file(str(inp / "pairs.safetensors"))
    config = TrainConfig(**json.loads((inp / "config.json").read_text()))
    result = train_projector(t["src"], t["tgt"], val_src=t["val_src"], val_tgt=t["val_tgt"], config=config,
                             checkpoint_dir=out / "ckpt", progress=False)
    if distributed.is_main():
        save_file({k: v.contiguous() for k, v in result.head.state_dict().items()}, str(out / "head.safetensors"))
        (out / "history.json").write_text(json.dumps({"history": result.history, "best_epoch": result.best_epoch}))


def grad(inp: Path, out: Path) -> None:
    t = load_file(str(inp / "pairs.safetensors"))
    world, rank = distributed.world_size(), distributed.rank()
    rows = slice(rank * len(t["src"]) // world, (rank + 1) * len(t["src"]) // world)
    a = t["a"][rows].clone().requires_grad_(True)
    log_scale = torch.tensor(math.log(20.0), requires_grad=True)
    loss = info_nce(a, t["tgt"][rows], log_scale.exp(), gather=True)
    loss.backward()
    average_gradients([log_scale])
    head = MLPProjector(t["src"].shape[1], t["tgt"].shape[1], 16)
    head.load_state_dict({k[5:]: v for k, v in t.items() if k.startswith("head.")})
    with distributed_head(head) as model:
        head_loss = info_nce(model(t["src"][rows]), t["tgt"][rows], 20.0, gather=True)
        head_loss.backward()
    grads = {f"head.{k}": p.grad for k, p in head.named_parameters() if p.requires_grad}
    save_file({"a": a.grad, "log_scale": log_scale.grad.view(1), "loss": loss.detach().view(1),
               "head_loss": head_loss.detach().view(1), **grads,
               **{f"running.{k}": v for k, v in head.state_dict().items() if "running" in k}},
              str(out / f"grad-rank{rank}.safetensors"))


if __name__ == "__main__":
    torch.set_num_threads(1)  # each rank: one core of a shared machine
    job, inp, outp = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    {"train": train, "grad": grad}[job](inp, outp)
