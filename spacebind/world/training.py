"""Training and caching of the procedural-world experts (on first use, deterministic)."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

from spacebind.errors import CheckpointError
from spacebind.io.files import home_dir, save_tensors
from spacebind.io.inputs import Audio
from spacebind.io.progress import track
from spacebind.training.losses import info_nce
from spacebind.training.threads import cpu_threads
from spacebind.world.concepts import Instance, make_concepts, sample_instances
from spacebind.world.render import SAMPLE_RATE, render_audio, render_caption, render_image, render_points
from spacebind.world.sensors import render_events, render_thermal, render_video
from spacebind.world.towers import TOWERS, take

VERSION = 2  # 2: text towers hash each word twice (one crc32 made distinct caption words one)
# Float sums, and so the trained weights, depend on the intra-op thread count; pinning it keeps a
# world expert the same whatever thread setting its first user runs under.
TRAIN_THREADS = 2
_RENDER = {
    "image": render_image,
    "audio": lambda inst: Audio(render_audio(inst), SAMPLE_RATE),
    "point": render_points,
    "text": render_caption,
    "video": render_video,
    "thermal": render_thermal,
    "event": render_events,
}


@dataclass(frozen=True)
class WorldExpertConfig:
    """What a world expert is: its towers (modality → width), the pairs it learns from, its data."""

    name: str
    dim: int
    widths: dict[str, int]
    pairs: tuple[tuple[str, str], ...]
    items: int = 8000
    steps: int = 400
    batch: int = 128
    lr: float = 5e-3
    pair_items: dict[str, int] = field(default_factory=dict)  # "a-b" → use only the first N items
    seed: int = 0
    # (k, n): learn only the concepts whose index is k modulo n, a domain specialist (like a
    # music-only CLAP beside a general one); None: every concept
    domain: tuple[int, int] | None = None


def build_towers(config: WorldExpertConfig) -> nn.ModuleDict:
    return nn.ModuleDict({m: TOWERS[m](config.dim, width=w) for m, w in config.widths.items()})


def train_towers(config: WorldExpertConfig, concepts_seed: int, num_concepts: int, progress: bool = True) -> nn.ModuleDict:
    """Contrastive training on in-memory renders of instances from a stream no dataset uses."""
    with cpu_threads(TRAIN_THREADS):
        return _train_towers(config, concepts_seed, num_concepts, progress)


def _train_towers(config: WorldExpertConfig, concepts_seed: int, num_concepts: int, progress: bool) -> nn.ModuleDict:
    torch.manual_seed(config.seed)
    towers = build_towers(config)
    data = {m: towers[m].preprocess(_renders(m, concepts_seed, num_concepts, config.items, config.domain))
            for m in config.widths}
    log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    optimizer = torch.optim.AdamW([*towers.parameters(), log_scale], lr=config.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=config.steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(config.seed)
    towers.train()
    for _ in track(range(config.steps), f"training world expert {config.name}", show=progress, unit="steps"):
        idx = torch.randperm(config.items, generator=generator)[:config.batch]
        cache: dict[tuple[str, bytes], torch.Tensor] = {}
        loss = torch.zeros(())
        for a, b in config.pairs:
            limit = config.pair_items.get(f"{a}-{b}", config.items)
            sub = idx[idx < limit]
            if len(sub) < 2:
                continue
            za, zb = (_embed(towers, data, m, sub, cache) for m in (a, b))
            loss = loss + info_nce(za, zb, log_scale.clamp(max=math.log(100)).exp())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return towers.eval()


@lru_cache(maxsize=8)
def _renders(modality: str, concepts_seed: int, num_concepts: int, items: int,
             domain: tuple[int, int] | None = None) -> list:
    """The experts' shared pretraining corpus (an instance stream no dataset seed reaches), of the
    concepts of `domain` only when one is given."""
    return [_RENDER[modality](inst) for inst in pretraining_instances(concepts_seed, num_concepts, items, domain)]


def pretraining_instances(concepts_seed: int, num_concepts: int, items: int,
                          domain: tuple[int, int] | None = None) -> list[Instance]:
    """The instances world experts learn from: `items` of every concept, or of `domain`'s (k, n)."""
    concepts = make_concepts(concepts_seed, num_concepts)
    if domain is not None:
        concepts = [c for c in concepts if c.index % domain[1] == domain[0]]
    return sample_instances(concepts, items, seed=1_000_003)


def _embed(towers: nn.ModuleDict, data: dict, m: str, idx: torch.Tensor, cache: dict) -> torch.Tensor:
    key = (m, idx.numpy().tobytes())
    if key not in cache:
        cache[key] = F.normalize(towers[m](take(data[m], idx)), dim=-1)
    return cache[key]


def checkpoint_path(config: WorldExpertConfig, concepts_seed: int, num_concepts: int) -> Path:
    return home_dir() / "experts" / f"{config.name}-c{concepts_seed}-n{num_concepts}-v{VERSION}.safetensors"


def save_towers(path: Path, towers: nn.ModuleDict, config: WorldExpertConfig) -> None:
    meta = {"config": json.dumps(asdict(config)), "version": str(VERSION)}
    save_tensors(path, {k: v.detach().clone() for k, v in towers.state_dict().items()}, metadata=meta)


def load_towers(path: Path, config: WorldExpertConfig) -> nn.ModuleDict:
    """Strictly load towers from a safetensors checkpoint."""
    towers = build_towers(config)
    try:
        with safe_open(str(path), framework="pt") as fh:
            state = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({exc})") from None
    expected = set(towers.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise CheckpointError(f"{path}: checkpoint does not match expert {config.name!r}: "
                              f"missing keys {missing}, unexpected keys {unexpected}")
    try:
        towers.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    return towers.eval()


def trained_towers(config: WorldExpertConfig, concepts_seed: int, num_concepts: int,
                   checkpoint: str | Path | None = None, progress: bool = True) -> tuple[nn.ModuleDict, Path]:
    """Towers from `checkpoint`, or from the cache (training and caching them on first use)."""
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise CheckpointError(f"world expert {config.name!r}: no checkpoint at {path}")
        return load_towers(path, config), path
    path = checkpoint_path(config, concepts_seed, num_concepts)
    if not path.is_file():
        save_towers(path, train_towers(config, concepts_seed, num_concepts, progress), config)
    return load_towers(path, config), path
