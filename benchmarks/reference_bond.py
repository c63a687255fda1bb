"""A deliberately minimal plain-PyTorch combination bond `U + c(E)`, the simplest thing that could
work, for other benchmarks to measure spacebind's bonds against.

- pseudo pairs: every E seed item retrieves its top-k neighbours of the partner modality inside E;
  its target is U's embedding of those neighbours, softmax-weighted (τ) and L2-normalised; a seed
  that U also embeds is paired with U's embedding of itself too (`mine`, `pseudo_pairs`);
- one MLP projector E→U (Linear → BatchNorm → ReLU → Linear → BatchNorm → n()) trained with
  symmetric InfoNCE (AdamW, fixed temperature) on all pseudo pairs pooled (`reference_bond`);
- the combination formula e_m = n((1 − λ_m)·u_m + λ_m·P(x^E_m)) (`combine`).

No mixture, no early stopping, no validation, no caches. Run on the real-data benchmark
(espeak-ng spoken digits, sklearn digits, MiniLM): `python -m benchmarks.reference_bond [--seeds 0,1]`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Projector(nn.Module):
    def __init__(self, d_in: int, d_out: int, hidden: int = 512) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, d_out), nn.BatchNorm1d(d_out)
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.net(x), dim=-1)


def reference_bond(
    src_train: Tensor,
    tgt_train: Tensor,
    *,
    hidden: int = 512,
    epochs: int = 30,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    temperature: float = 0.05,
    seed: int = 0,
) -> nn.Module:
    """Train one MLP projector src→tgt on paired rows with symmetric InfoNCE; returns it in eval mode."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    proj = Projector(src_train.shape[1], tgt_train.shape[1], hidden)
    opt = torch.optim.AdamW(proj.parameters(), lr=lr, weight_decay=weight_decay)
    tgt_train = F.normalize(tgt_train, dim=-1)
    for _ in range(epochs):
        perm = torch.randperm(len(src_train), generator=gen)
        for start in range(0, len(perm), batch_size):
            idx = perm[start : start + batch_size]
            if len(idx) < 2:  # BatchNorm needs two rows
                continue
            logits = proj(src_train[idx]) @ tgt_train[idx].T / temperature
            labels = torch.arange(len(idx))
            loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
            opt.zero_grad()
            loss.backward()
            opt.step()
    return proj.eval()


def mine(seed_e: Tensor, pool_e: Tensor, pool_u: Tensor, k: int = 5, temperature: float = 0.05) -> Tensor:
    """U-side pseudo partner of each seed: softmax-weighted mean of U's embeddings of the seed's
    top-k pool neighbours in E (all inputs unit-norm), L2-normalised."""
    sims, idx = (seed_e @ pool_e.T).topk(min(k, len(pool_e)), dim=1)
    weights = torch.softmax(sims / temperature, dim=1)
    return F.normalize((weights.unsqueeze(-1) * pool_u[idx]).sum(dim=1), dim=-1)


def pseudo_pairs(
    e: dict[str, Tensor],
    u: dict[str, Tensor],
    pairs: Sequence[tuple[str, str]],
    *,
    k: int = 5,
    temperature: float = 0.05,
) -> tuple[Tensor, Tensor]:
    """Pooled (E-side, U-side) training pairs. `e[m]`, `u[m]`: E's and U's embeddings of the
    unpaired pool of modality m (same rows). `pairs`: (seed, partner) modalities; seed == partner
    pairs each item with U's embedding of itself."""
    xs, ys = [], []
    for seed, partner in pairs:
        xs.append(e[seed])
        ys.append(u[seed] if seed == partner else mine(e[seed], e[partner], u[partner], k, temperature))
    return torch.cat(xs), torch.cat(ys)


DEFAULT_PAIRS = (("audio", "text"), ("audio", "audio"), ("text", "text"), ("text", "audio"))


@torch.no_grad()
def combine(u: Tensor, projected: Tensor, lam: float) -> Tensor:
    """The combination bond's formula n((1 − λ)·u + λ·P(x))."""
    return F.normalize((1.0 - lam) * u + lam * projected, dim=-1)


def main(argv: Sequence[str] | None = None) -> None:
    """The real-data benchmark restricted to U, AT and this reference bond."""
    from benchmarks import realdata

    realdata.main([*(argv if argv is not None else __import__("sys").argv[1:]), "--only", "reference"])


if __name__ == "__main__":
    main()
