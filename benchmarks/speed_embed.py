"""Embedding overhead: `spacebind.cache.store.embed_dataset` vs the bare work on the same items.

A small procedural world (seed `--seed`, files on disk) embedded by a world expert
(`world_image_text` by default, every modality it covers). The fair reference is what embedding
cannot avoid: decoding the files (`spacebind.io.inputs.load_inputs`) plus the expert's forward
(`Expert.embed_loaded`) on the decoded inputs. embed_dataset adds sharding, the lenient loading,
float16 shard files and the manifest. Decoding is counted on both sides; the decode share of the
reference is reported. Each side is timed best of `--repeats` (embed_dataset into a fresh
directory every time). Needs the expert trained under $SPACEBIND_HOME (trained on first use).
Run: python -m benchmarks.speed_embed [--items 2000]"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.speed_report import best_seconds_interleaved, print_report, target, write_json
from spacebind import create_expert
from spacebind.cache.store import embed_dataset
from spacebind.io.datasets import Dataset
from spacebind.io.inputs import load_inputs
from spacebind.world.generate import generate_world


def measure(items: int, expert_name: str, seed: int, repeats: int, shard_size: int) -> dict[str, Any]:
    """Seconds of embed_dataset, of decoding and of the forward; the overhead ratio and target."""
    expert = create_expert(expert_name, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_world(root / "world", seed=seed, sizes={"train": items, "val": 0, "test": 0}, progress=False)
        dataset = Dataset.load(root / "world")
        modalities = [m for m in expert.modalities if m in dataset.modalities()]
        fields = {m: [it.fields[m] for it in dataset.select(None, m)] for m in modalities}
        loaded = {m: load_inputs(m, fields[m]) for m in modalities}
        runs = iter(range(repeats))

        def embed() -> None:
            embed_dataset(expert, dataset, root / f"cache-{next(runs)}", shard_size=shard_size, progress=False)

        decode, forward, whole = best_seconds_interleaved(
            [lambda: [load_inputs(m, fields[m]) for m in modalities],
             lambda: [expert.embed_loaded(m, loaded[m]) for m in modalities], embed], repeats)
    reference = decode + forward
    rows = [{"step": "decode files (load_inputs)", "seconds": decode, "items/s": items / decode},
            {"step": "expert forward (embed_loaded)", "seconds": forward, "items/s": items / forward},
            {"step": "reference: decode + forward", "seconds": reference, "items/s": items / reference},
            {"step": "spacebind embed_dataset", "seconds": whole, "items/s": items / whole}]
    return {"benchmark": "speed_embed",
            "params": {"items": items, "expert": expert_name, "modalities": modalities, "seed": seed,
                       "shard_size": shard_size, "repeats": repeats},
            "decode_share": decode / reference, "vs_forward_only": whole / forward, "rows": rows,
            "targets": [target("embed_dataset vs decode + forward", whole / reference, 1.10, False)]}


def report(result: dict[str, Any]) -> None:
    p = result["params"]
    print_report(f"embedding overhead, {p['items']:,} world items × {', '.join(p['modalities'])}, {p['expert']} "
                 f"(decode share of the reference {100 * result['decode_share']:.0f} %; "
                 f"embed_dataset is {result['vs_forward_only']:.2f}× the forward alone)",
                 result["rows"], ["step", "seconds", "items/s"], result["targets"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--expert", default="world_image_text")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--shard-size", type=int, default=1024)
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()
    result = measure(args.items, args.expert, args.seed, args.repeats, args.shard_size)
    report(result)
    write_json(args.json, result)


if __name__ == "__main__":
    main()
