"""InfoNCE training of projectors on cached embeddings: AdamW, warmup + cosine schedule,
learnable or fixed temperature, early stopping on validation recall@1, resumable by epoch."""
from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from spacebind.bonds.mixture import ProjectorMixture
from spacebind.bonds.projector import MLPProjector
from spacebind.fileio import save_torch
from spacebind.losses import info_nce
from spacebind.progress import track


class TrainConfig(BaseModel):
    """Projector training settings (the recipe's `train:` section)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(30, ge=1)
    batch_size: int = Field(256, ge=2)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup: float = Field(0.05, ge=0, lt=1, description="fraction of steps with linear warmup")
    temperature: float = Field(0.05, gt=0, description="initial softmax temperature")
    learnable_temperature: bool = True
    patience: int = Field(5, ge=1, description="epochs without val recall@1 gain before stopping")
    seed: int = 0
    hidden: int = Field(2048, ge=1, description="projector hidden width")


@dataclass
class TrainResult:
    head: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_val_recall: float = float("nan")


@torch.no_grad()
def recall_at_1(head: nn.Module, src: torch.Tensor, tgt: torch.Tensor, chunk: int = 4096) -> float:
    """Fraction of rows whose projected src is closest to its own tgt among all tgts."""
    head.eval()
    hits = 0
    for start in range(0, len(src), chunk):
        sims = head(src[start:start + chunk]) @ tgt.T
        hits += (sims.argmax(dim=1) == torch.arange(start, start + len(sims))).sum().item()
    return hits / max(len(src), 1)


def _fingerprint(config: TrainConfig, *tensors: torch.Tensor | None) -> str:
    h = hashlib.sha256(json.dumps(config.model_dump(), sort_keys=True).encode())
    for t in tensors:
        if t is not None:
            h.update(str(tuple(t.shape)).encode())
            h.update(t.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()


def _schedule(optimizer: torch.optim.Optimizer, total: int, warmup: float) -> torch.optim.lr_scheduler.LambdaLR:
    warm = max(1, int(total * warmup)) if warmup > 0 else 0

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, total - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_projector(
    src: torch.Tensor,
    tgt: torch.Tensor,
    *,
    config: TrainConfig,
    val_src: torch.Tensor | None = None,
    val_tgt: torch.Tensor | None = None,
    checkpoint_dir: Path | None = None,
    head: nn.Module | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train `head` (default: an MLPProjector) so head(src[i]) retrieves tgt[i] (InfoNCE).

    With `checkpoint_dir`, state is saved after every epoch and a rerun resumes; a rerun of a
    finished run returns the stored result. A checkpoint made with another config or other data
    is set aside with a warning and training starts over."""
    src, tgt = src.float().contiguous(), tgt.float().contiguous()
    has_val = val_src is not None and val_tgt is not None and len(val_src) > 0
    torch.manual_seed(config.seed)
    head = head or MLPProjector(src.shape[1], tgt.shape[1], config.hidden)
    log_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.temperature)), requires_grad=config.learnable_temperature)
    params = [p for p in head.parameters() if p.requires_grad] + ([log_scale] if config.learnable_temperature else [])
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, len(src) // config.batch_size)
    scheduler = _schedule(optimizer, steps_per_epoch * config.epochs, config.warmup)
    state: dict[str, Any] = {"epoch": 0, "history": [], "best_val": -1.0, "best_epoch": -1, "best_state": None, "done": False}
    fingerprint = _fingerprint(config, src, tgt, val_src, val_tgt)
    ckpt = checkpoint_dir / "train_state.pt" if checkpoint_dir is not None else None
    if ckpt is not None and ckpt.is_file():
        saved = torch.load(ckpt, weights_only=True)
        if saved.get("fingerprint") == fingerprint:
            head.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            log_scale.data.copy_(saved["log_scale"])
            state = saved["state"]
        else:
            warnings.warn(f"{ckpt} was made with another config or other data; training starts over", stacklevel=2)

    epochs = range(state["epoch"], config.epochs)
    for epoch in track(epochs, "training projector", total=len(epochs), show=progress and not state["done"]):
        if state["done"]:
            break
        head.train()
        order = torch.randperm(len(src), generator=torch.Generator().manual_seed(config.seed * 100003 + epoch))
        total_loss = 0.0
        for step in range(steps_per_epoch):
            idx = order[step * config.batch_size:(step + 1) * config.batch_size]
            loss = info_nce(head(src[idx]), tgt[idx], log_scale.clamp(max=math.log(100.0)).exp())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.item()
        val = recall_at_1(head, val_src, val_tgt) if has_val else float("nan")
        state["history"].append({"epoch": epoch, "loss": total_loss / steps_per_epoch, "val_recall@1": val,
                                 "lr": scheduler.get_last_lr()[0], "temperature": float(1.0 / log_scale.detach().exp())})
        improved = not has_val or val > state["best_val"]
        if improved:
            state.update(best_val=val if has_val else float("nan"), best_epoch=epoch,
                         best_state={k: v.detach().clone() for k, v in head.state_dict().items()})
        state["epoch"] = epoch + 1
        state["done"] = state["epoch"] >= config.epochs or (has_val and epoch - state["best_epoch"] >= config.patience)
        if ckpt is not None:
            save_torch(ckpt, {"fingerprint": fingerprint, "model": head.state_dict(), "optimizer": optimizer.state_dict(),
                              "scheduler": scheduler.state_dict(), "log_scale": log_scale.detach(), "state": state})
    if state["best_state"] is not None:
        head.load_state_dict(state["best_state"])
    return TrainResult(head.eval(), state["history"], state["best_epoch"], state["best_val"])


def train_mixture(
    src: torch.Tensor,
    tgt: torch.Tensor,
    *,
    n: int,
    config: TrainConfig,
    val_src: torch.Tensor | None = None,
    val_tgt: torch.Tensor | None = None,
    checkpoint_dir: Path | None = None,
    subsets: list[torch.Tensor] | None = None,
    progress: bool = True,
) -> ProjectorMixture:
    """Train `n` MLP projectors and average them. Member i uses seed `config.seed + i` and, if
    `subsets` is given, only the rows `subsets[i]` (e.g. one pseudo dataset each); otherwise the
    full data, so members differ by initialisation and batch order."""
    if subsets is not None and len(subsets) != n:
        raise ValueError(f"got {len(subsets)} subsets for {n} mixture members")
    members = []
    for i in range(n):
        rows = subsets[i] if subsets is not None else slice(None)
        member_dir = checkpoint_dir / f"member{i}" if checkpoint_dir is not None else None
        result = train_projector(
            src[rows], tgt[rows], config=config.model_copy(update={"seed": config.seed + i}),
            val_src=val_src, val_tgt=val_tgt, checkpoint_dir=member_dir, progress=progress,
        )
        members.append(result.head)
    return ProjectorMixture(members).eval()
