"""Fused encode vs the sum of the experts' forwards, on the same decoded inputs.

The demo recipe's space, `(world_unified + d(world_image_text)) + c(world_audio_text)` with
untrained heads of the recipe's shape (MLP hidden `--hidden`, a 3-member mixture on the
combination; speed does not depend on the weights), on `--items` items of a small generated
world. Inputs are decoded once beforehand and given to both sides, so file decoding is not
counted. `Space.encode` (input checks, every leaf's forward, the heads and the bond formulas)
is timed against the sum of `Expert.embed_loaded` of the leaves covering each modality; the
heads' share (`Space.combine` on precomputed leaf embeddings) is reported apart.
Needs the world experts under $SPACEBIND_HOME (trained on first use).
Run: python -m benchmarks.speed_encode [--items 1000]"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmarks.speed_report import best_seconds_interleaved, print_report, target, write_json
from spacebind import create_expert
from spacebind.bonds.bind import BoundSpace
from spacebind.bonds.mixture import ProjectorMixture
from spacebind.bonds.projector import MLPProjector
from spacebind.io.datasets import Dataset
from spacebind.io.inputs import load_inputs
from spacebind.space import Space
from spacebind.world.generate import generate_world


def demo_space(hidden: int, mixture: int = 3) -> BoundSpace:
    """The demo recipe's bond structure with seeded, untrained heads."""
    torch.manual_seed(0)
    unified, image_text, audio_text = (create_expert(n, progress=False)
                                       for n in ("world_unified", "world_image_text", "world_audio_text"))
    inner = BoundSpace(unified, [image_text], "displacement",
                       {image_text.name: MLPProjector(unified.dim, image_text.dim, hidden)},
                       lambdas={"image": 0.2, "text": 0.2})
    members = [MLPProjector(audio_text.dim, inner.dim, hidden) for _ in range(mixture)]
    return BoundSpace(inner, [audio_text], "combination", {audio_text.name: ProjectorMixture(members)},
                      lambdas={"audio": 0.5, "text": 0.1})


def _experts_forward(space: Space, modality: str, loaded: list[Any]) -> dict[str, torch.Tensor]:
    return {e.name: e.embed_loaded(modality, loaded) for e in space.leaves_for(modality)}


def measure(items: int, hidden: int, seed: int, repeats: int) -> dict[str, Any]:
    """Per modality: fused encode, the experts' forwards and the heads, in seconds; the target."""
    space = demo_space(hidden)
    with tempfile.TemporaryDirectory() as tmp:
        generate_world(Path(tmp) / "world", seed=seed, sizes={"train": items, "val": 0, "test": 0}, progress=False)
        dataset = Dataset.load(Path(tmp) / "world")
        modalities = [m for m in space.modalities if m in dataset.modalities()]
        loaded = {m: load_inputs(m, [it.fields[m] for it in dataset.select(None, m)]) for m in modalities}
    rows = []
    for m in modalities:
        leaves = _experts_forward(space, m, loaded[m])
        fused, experts, heads = best_seconds_interleaved(
            [lambda m=m: space.encode(m, loaded[m]), lambda m=m: _experts_forward(space, m, loaded[m]),
             lambda m=m, x=leaves: space.combine(m, x)], repeats)
        rows.append({"modality": m, "leaves": len(leaves), "fused encode s": fused, "experts' forwards s": experts,
                     "heads + formulas s": heads})
    for row in rows:
        row["ratio"] = row["fused encode s"] / row["experts' forwards s"]
    fused = sum(r["fused encode s"] for r in rows)
    experts = sum(r["experts' forwards s"] for r in rows)
    heads = sum(r["heads + formulas s"] for r in rows)
    rows.append({"modality": "all", "fused encode s": fused, "experts' forwards s": experts,
                 "heads + formulas s": heads, "ratio": fused / experts})
    return {"benchmark": "speed_encode", "params": {"items": items, "hidden": hidden, "seed": seed,
            "repeats": repeats, "space": space.formula()}, "rows": rows,
            "targets": [target("fused encode vs experts' forwards", fused / experts, 1.05, False),
                        target("same, heads' time excluded", (fused - heads) / experts, 1.05, False)]}


def report(result: dict[str, Any]) -> None:
    p = result["params"]
    print_report(f"fused encode, {p['items']:,} world items, {p['space']} (hidden {p['hidden']})", result["rows"],
                 ["modality", "leaves", "fused encode s", "experts' forwards s", "heads + formulas s", "ratio"],
                 result["targets"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()
    result = measure(args.items, args.hidden, args.seed, args.repeats)
    report(result)
    write_json(args.json, result)


if __name__ == "__main__":
    main()
