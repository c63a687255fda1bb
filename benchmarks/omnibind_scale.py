"""OmniBind-sized projector training: 14 synthetic spaces with OmniBind's dimensions, 7 projectors
from each of the 13 source spaces into the 1536-d target (EVA-CLIP-18B's space) by the project's
trainer (`bonds.mixture.train_mixture`, i.e. 7 × `train_projector`), 91 projectors in all.

Data: a shared latent z [N, 128]; space k embeds item i as n(z_i A_k + 0.3·ε), A_k a fixed random
[128, d_k] map (a random rotation and scaling of the shared latent) — a known alignment, so a
trained projector should retrieve its pair (recall@1 on `--val` held-out pairs is the sanity
check). Each source space's rows are generated when its projectors train (memory: z, the target
and one source space).

Reports per source dimension and in total: seconds per epoch, samples/s (projector-samples:
91 × N per epoch), the matmul roofline for the same step shapes (`benchmarks.speed_train`: torch.mm
FLOP/s measured in this run), peak memory, and the extrapolation to the paper's setting with the
arithmetic. Torch on `--threads` threads (default 1).
Run: python -m benchmarks.omnibind_scale [--pairs 2048 --epochs 1 --threads 1 --json out.json]"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.mining import peak_kb
from benchmarks.speed_report import print_report, write_json
from benchmarks.speed_train import roofline_step_seconds, step_flops

# OmniBind full (docs: /work/shared/REFERENCE.md, OmniBind sizes): 13 source spaces and the target
SPACES: dict[str, int] = {
    "wavcaps_pt": 1024, "wavcaps_ft_audiocaps": 1024, "wavcaps_ft_clotho": 1024, "eva02_clip_bige14plus": 1024,
    "uni3d_g_lvis": 1024, "imagebind_huge": 1024, "clap_general": 512, "clap_music": 512, "dfn5b_clip_h14": 1024,
    "siglip_large_384": 1024, "siglip_so400m_384": 1152, "uni3d_g_mnet40": 1024, "uni3d_g_scanobjnn": 1024,
}
TARGET, TARGET_DIM = "eva_clip_18b", 1536
MEMBERS = 7
LATENT = 128
# the paper's setting: 2.33M texts + 1.3M images + 2M audio; ~3 days on one node of 8 RTX 4090
PAPER_ITEMS = 2_330_000 + 1_300_000 + 2_000_000
PAPER_GPUS, PAPER_DAYS = 8, 3.0
RTX4090_TFLOPS = 82.6  # dense FP32 / TF32-tensor peak per card (NVIDIA spec sheet); bf16 tensor: 165


def space_rows(z: torch.Tensor, dim: int, seed: int) -> torch.Tensor:
    """n(z A + 0.3 ε) for a fixed random A [LATENT, dim] of `seed` (in 64k-row blocks)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(LATENT, dim, generator=g) / LATENT ** 0.5
    out = torch.empty(len(z), dim)
    for i in range(0, len(z), 65_536):
        part = z[i:i + 65_536]
        out[i:i + len(part)] = F.normalize(part @ a + 0.3 * torch.randn(len(part), dim, generator=g), dim=1)
    return out


@torch.no_grad()
def mixture_recall(mixture: torch.nn.Module, src: torch.Tensor, tgt: torch.Tensor) -> float:
    """recall@1 of the averaged projectors on held-out pairs."""
    return float(((mixture(src) @ tgt.T).argmax(1) == torch.arange(len(src))).float().mean())


def measure(pairs: int, val: int, epochs: int, batch: int, hidden: int, threads: int, spaces: int,
            one_per_dim: bool = False) -> dict[str, Any]:
    """Train the mixtures of the first `spaces` source spaces (with `one_per_dim`: of one space per
    distinct dimension, its time counted once for every space of that dimension)."""
    from bonds.mixture import train_mixture
    from spacebind.training.trainer import TrainConfig

    torch.set_num_threads(threads)
    z = torch.randn(pairs + val, LATENT, generator=torch.Generator().manual_seed(0))
    tgt = space_rows(z, TARGET_DIM, 1000)
    config = TrainConfig(epochs=epochs, batch_size=batch, hidden=hidden, patience=epochs + 1)
    warm = space_rows(z[:512], 64, 99)  # untimed warm-up (allocator, kernels)
    train_mixture(warm, tgt[:512], n=1, config=config.model_copy(update={"batch_size": 256}), progress=False)
    rows: dict[int, dict[str, Any]] = {}
    recalls = []
    chosen = list(SPACES.items())[:spaces]
    trained = chosen if not one_per_dim else list({d: (n, d) for n, d in reversed(chosen)}.values())[::-1]
    for name, dim in trained:
        src = space_rows(z, dim, list(SPACES).index(name))
        start = time.perf_counter()
        mixture = train_mixture(src[:pairs], tgt[:pairs], n=MEMBERS, config=config, progress=False)
        seconds = time.perf_counter() - start
        recalls.append(mixture_recall(mixture, src[pairs:], tgt[pairs:]))
        count = sum(d == dim for _, d in chosen) if one_per_dim else 1
        r = rows.setdefault(dim, {"source dim": dim, "spaces": 0, "projectors": 0, "seconds": 0.0})
        r["spaces"] += count
        r["projectors"] += MEMBERS * count
        r["seconds"] += seconds * count
        print(f"{name:24s} d={dim:5d}  {seconds:6.1f} s  val R@1 {recalls[-1]:.3f}", flush=True)
        del src, mixture
    steps = max(1, pairs // batch) * epochs
    total_s = sum(r["seconds"] for r in rows.values())
    total_flops = 0.0
    roof_s = 0.0
    for dim, r in rows.items():
        flops = step_flops(batch, dim, hidden, TARGET_DIM)
        step_s = roofline_step_seconds(batch, dim, hidden, TARGET_DIM)
        r["samples/s"] = r["projectors"] * steps * batch / r["seconds"]
        r["roofline samples/s"] = batch / step_s
        r["of roofline"] = r["samples/s"] / r["roofline samples/s"]
        r["mm GFLOP/s"] = flops / step_s / 1e9
        r["s/epoch"] = r["seconds"] / epochs
        total_flops += flops * steps * r["projectors"]
        roof_s += step_s * steps * r["projectors"]
    n_proj = MEMBERS * len(chosen)
    samples = n_proj * steps * batch
    total = {"source dim": "all", "spaces": len(chosen), "projectors": n_proj, "seconds": total_s,
             "s/epoch": total_s / epochs, "samples/s": samples / total_s, "roofline samples/s": samples / roof_s,
             "of roofline": roof_s / total_s, "mm GFLOP/s": total_flops / roof_s / 1e9}
    achieved = total_flops / total_s
    flops_per_sample = total_flops / samples
    # paper: every projector sees every item once an epoch (an upper bound), epochs as TrainConfig's default
    paper_epochs = TrainConfig().epochs
    paper_flops = flops_per_sample * PAPER_ITEMS * MEMBERS * len(SPACES) * paper_epochs
    here_days = paper_flops / achieved / 86400
    gpu_days = paper_flops / (PAPER_GPUS * RTX4090_TFLOPS * 1e12 * total["of roofline"]) / 86400
    arithmetic = [
        f"FLOPs per projector-sample (matrix products, batch {batch}, hidden {hidden}): {flops_per_sample / 1e6:.1f} MFLOP",
        f"paper: {PAPER_ITEMS:,} items × {MEMBERS * len(SPACES)} projectors × {paper_epochs} epochs (assumed: every projector "
        f"sees every item each epoch) × {flops_per_sample / 1e6:.1f} MFLOP = {paper_flops / 1e15:,.1f} PFLOP",
        f"here: {paper_flops / 1e15:,.1f} PFLOP / {achieved / 1e9:.1f} GFLOP/s achieved ({threads} thread(s)) = "
        f"{here_days:,.0f} days",
        f"8 × RTX 4090 at {RTX4090_TFLOPS} TFLOP/s × the {100 * total['of roofline']:.0f} % of roofline reached here: "
        f"{paper_flops / 1e15:,.1f} PFLOP / ({PAPER_GPUS} × {RTX4090_TFLOPS} TFLOP/s × {total['of roofline']:.2f}) = "
        f"{gpu_days * 24:,.1f} h ({gpu_days:.2f} days) of projector training, vs the paper's ~{PAPER_DAYS:.0f} days in all "
        f"(which also embeds 5.63M items with 14 experts, mines pseudo tuples and trains routers)",
    ]
    return {"benchmark": "omnibind_scale", "params": {"pairs": pairs, "val": val, "epochs": epochs, "batch": batch,
            "hidden": hidden, "threads": threads, "spaces": len(chosen) + 1, "members": MEMBERS,
            "trained": [n for n, _ in trained], "one_per_dim": one_per_dim},
            "rows": [*rows.values(), total], "val recall@1 mean": sum(recalls) / len(recalls),
            "val recall@1 min": min(recalls), "peak MB": peak_kb() / 1024, "extrapolation": arithmetic, "targets": []}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=2048, help="training pairs per space (up to 1M+ with the memory)")
    parser.add_argument("--val", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--spaces", type=int, default=len(SPACES), help="source spaces to train (default all 13)")
    parser.add_argument("--one-per-dim", action="store_true",
                        help="train one space per distinct dimension (1024, 512, 1152) and count it for all of that dimension")
    parser.add_argument("--json", type=Path, default=None)
    a = parser.parse_args()
    start = time.perf_counter()
    result = measure(a.pairs, a.val, a.epochs, a.batch, a.hidden, a.threads, a.spaces, a.one_per_dim)
    result["seconds"] = time.perf_counter() - start
    p = result["params"]
    print_report(f"OmniBind-sized training: {p['spaces']} spaces, {p['members']} projectors per source → {TARGET_DIM}-d, "
                 f"{p['pairs']:,} pairs, {p['epochs']} epoch(s), {p['threads']} thread(s)", result["rows"],
                 ["source dim", "spaces", "projectors", "s/epoch", "samples/s", "roofline samples/s", "of roofline",
                  "mm GFLOP/s"], [])
    print(f"val recall@1 of the mixtures: mean {result['val recall@1 mean']:.3f}, min {result['val recall@1 min']:.3f}; "
          f"peak memory {result['peak MB']:,.0f} MB")
    print("\n".join(result["extrapolation"]))
    write_json(a.json, result)


if __name__ == "__main__":
    main()
