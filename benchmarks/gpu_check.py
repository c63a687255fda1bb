"""GPU check: the CUDA paths of spacebind, each timed and isolated, in one short run (< 5 min on one H200).

Checks (each in its own try/except; a failure records its error text and the run goes on):
  embed_bf16   `embed_dataset` of a tiny on-disk dataset (images + captions) with a small random
               CUDA model under bf16 autocast, against the same model in fp32 (cosine agreement)
  train        `train_projector` with the pairs on CUDA (1024 → 1536, hidden 2048), samples/s and
               a recall@1 sanity check on structured pairs
  topk         `spacebind.retrieval.topk.topk_indices` on CUDA against one `torch.topk` of the
               full similarity matrix (indices and scores)
  faiss_gpu    FAISS flat search on the GPU against FAISS on the CPU if this faiss build has GPU
               support; otherwise the check is recorded as skipped with the reason
  ddp          `torchrun --nproc-per-node <gpus>` with NCCL: an all_reduce and a short distributed
               `train_projector` (DDP, gathered InfoNCE), rank 0 reports

Everything is synthetic or random (no network, no downloads, no world-expert training).
Writes a JSON of timings, results and failures to `--out` (default benchmarks/results/gpu_check.json).
Exit codes: 0 when every check ran (passed or skipped), 1 when a check failed, 2 without CUDA
(a message on stderr, nothing written).
Run: HF_HUB_OFFLINE=1 python -m benchmarks.gpu_check [--out PATH] [--gpus N] [--only embed_bf16,topk]"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

NO_CUDA_EXIT = 2
NO_CUDA_MESSAGE = ("gpu_check: no CUDA device is visible (torch.cuda.is_available() is False); "
                   "this check needs a CUDA machine. Nothing was measured and nothing was written.")
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "gpu_check.json"
CHECKS = ("embed_bf16", "train", "topk", "faiss_gpu", "ddp")
DEVICE = "cuda"  # `--dry-run-cpu` (development only) runs every check on the CPU at small sizes
SMALL = False


def _size(full: int, small: int) -> int:
    return small if SMALL else full


def _sync() -> None:
    import torch

    if DEVICE == "cuda":
        torch.cuda.synchronize()


def check_embed_bf16(work: Path) -> dict[str, Any]:
    """embed_dataset with a random CUDA model under bf16 autocast vs fp32 (same model)."""
    import numpy as np
    import torch
    from PIL import Image
    from torch import nn

    from spacebind.cache.store import embed_dataset
    from spacebind.io.datasets import Dataset
    from spacebind.space import Space

    n, dim = _size(512, 64), 256
    root = work / "data"
    (root / "image").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "image" / f"{i}.png")
        lines.append(json.dumps({"id": f"item{i}", "split": "train", "label": f"c{i % 8}", "image": f"image/{i}.png",
                                 "text": f"caption {i} of class {i % 8}"}))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    data = Dataset.load(root)
    torch.manual_seed(0)
    image_net = nn.Sequential(nn.Flatten(), nn.Linear(32 * 32 * 3, 1024), nn.GELU(), nn.Linear(1024, dim)).to(DEVICE).eval()
    text_net = nn.EmbeddingBag(4096, dim).to(DEVICE).eval()

    @torch.no_grad()
    def image(xs: list[Any]) -> torch.Tensor:
        arr = np.stack([np.asarray(x, dtype=np.float32)[:32, :32, :3] / 255.0 for x in xs])
        return image_net(torch.from_numpy(arr).to(DEVICE))

    @torch.no_grad()
    def text(xs: list[str]) -> torch.Tensor:
        ids = [torch.tensor([hash(w) % 4096 for w in x.split()]) for x in xs]
        offsets = torch.tensor([0] + [len(t) for t in ids[:-1]]).cumsum(0)
        return text_net(torch.cat(ids).to(DEVICE), offsets.to(DEVICE))

    expert = Space.from_encoders("gpu_check_random", {"image": image, "text": text}, dim=dim)
    out: dict[str, Any] = {"items": n, "dim": dim}
    caches = {}
    for precision in ("fp32", "bf16"):
        _sync()
        start = time.perf_counter()
        caches[precision] = embed_dataset(expert, data, work / f"cache-{precision}", precision=precision,
                                          batch_size=128, progress=False)
        _sync()
        out[f"{precision}_seconds"] = time.perf_counter() - start
    for m in ("image", "text"):
        ids = caches["fp32"].ids(m)
        a, b = caches["fp32"].embeddings(m, ids).float(), caches["bf16"].embeddings(m, ids).float()
        cos = torch.nn.functional.cosine_similarity(a, b, dim=1)
        out[f"{m}_min_cosine_bf16_vs_fp32"] = float(cos.min())
        if float(cos.min()) < 0.98:
            raise AssertionError(f"{m}: bf16 embeddings disagree with fp32 (min cosine {float(cos.min()):.4f})")
    return out


def _structured_pairs(n: int, d_in: int, d_out: int, seed: int, device: str) -> tuple[Any, Any]:
    """Unit pairs that share a 64-d latent through two random linear maps, plus noise."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 64, generator=g)
    a = z @ torch.randn(64, d_in, generator=g) + 0.1 * torch.randn(n, d_in, generator=g)
    b = z @ torch.randn(64, d_out, generator=g) + 0.1 * torch.randn(n, d_out, generator=g)
    return F.normalize(a, dim=1).to(device), F.normalize(b, dim=1).to(device)


def check_train(work: Path) -> dict[str, Any]:
    """train_projector on CUDA: samples/s and validation recall@1."""
    from spacebind.training.trainer import TrainConfig, train_projector

    n, d_in, d_out = _size(65_536, 4096), 1024, 1536
    src, tgt = _structured_pairs(n + 2048, d_in, d_out, 0, DEVICE)
    config = TrainConfig(epochs=3, batch_size=_size(1024, 256), hidden=2048, patience=10)
    _sync()
    start = time.perf_counter()
    result = train_projector(src[:n], tgt[:n], val_src=src[n:], val_tgt=tgt[n:], config=config, progress=False)
    _sync()
    seconds = time.perf_counter() - start
    device = str(next(result.head.parameters()).device)
    if not device.startswith(DEVICE):
        raise AssertionError(f"the head trained on {device}, not on CUDA")
    recall = result.best_val_recall
    if not recall > 0.5:
        raise AssertionError(f"val recall@1 {recall:.3f} after {config.epochs} epochs (expected > 0.5 on structured pairs)")
    return {"pairs": n, "dims": f"{d_in}->{d_out}", "epochs": config.epochs, "seconds": seconds,
            "samples_per_s": n * config.epochs / seconds, "val_recall@1": recall, "device": device}


def check_topk(work: Path) -> dict[str, Any]:
    """Exact chunked top-k on CUDA vs torch.topk of the full similarity matrix."""
    import torch
    import torch.nn.functional as F

    from spacebind.retrieval.topk import topk_indices

    g = torch.Generator(device=DEVICE).manual_seed(0)
    q = F.normalize(torch.randn(_size(8192, 512), 512, device=DEVICE, generator=g), dim=1)
    gal = F.normalize(torch.randn(_size(200_000, 20_000), 512, device=DEVICE, generator=g), dim=1)
    k = 10
    topk_indices(q[:64], gal, k)  # warm-up (kernels, cuBLAS handles)
    _sync()
    start = time.perf_counter()
    ours = topk_indices(q, gal, k, chunk_size=2048)
    _sync()
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    ref_scores, ref = torch.topk(q @ gal.T, k, dim=1)
    _sync()
    ref_s = time.perf_counter() - start
    if ours.device.type != DEVICE:
        raise AssertionError(f"topk_indices returned a tensor on {ours.device}")
    our_scores = (q.unsqueeze(1) * gal[ours]).sum(-1)
    same = float((ours == ref).float().mean())
    score_err = float((our_scores - ref_scores).abs().max())
    if score_err > 1e-4:
        raise AssertionError(f"top-k scores differ from torch.topk by up to {score_err:.2e}")
    return {"queries": len(q), "gallery": len(gal), "dim": 512, "k": k, "seconds": ours_s, "torch_topk_seconds": ref_s,
            "index_agreement": same, "max_score_diff": score_err}


def check_faiss_gpu(work: Path) -> dict[str, Any]:
    """FAISS flat inner-product search on the GPU vs the CPU, when faiss has GPU support."""
    import faiss
    import numpy as np

    ngpu = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if not hasattr(faiss, "StandardGpuResources") or ngpu == 0:
        return {"skipped": f"faiss {faiss.__version__} has no GPU support (a faiss-cpu build; get_num_gpus={ngpu}); "
                           "install faiss-gpu to search on the GPU"}
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200_000, 256), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[:2000] + 0.05 * rng.standard_normal((2000, 256), dtype=np.float32)
    cpu = faiss.IndexFlatIP(256)
    cpu.add(x)
    start = time.perf_counter()
    _, cpu_i = cpu.search(q, 10)
    cpu_s = time.perf_counter() - start
    res = faiss.StandardGpuResources()
    gpu = faiss.index_cpu_to_gpu(res, 0, cpu)
    gpu.search(q[:10], 10)
    start = time.perf_counter()
    _, gpu_i = gpu.search(q, 10)
    gpu_s = time.perf_counter() - start
    top1 = float((cpu_i[:, 0] == gpu_i[:, 0]).mean())
    if top1 < 0.99:
        raise AssertionError(f"GPU and CPU FAISS top-1 agree on only {top1:.3f} of queries")
    return {"vectors": len(x), "queries": len(q), "gpu_seconds": gpu_s, "cpu_seconds": cpu_s, "top1_agreement": top1}


def check_ddp(work: Path, gpus: int) -> dict[str, Any]:
    """torchrun with NCCL on `gpus` processes: all_reduce and a short distributed training."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SPACEBIND_PROGRESS": "0", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": f"{Path(__file__).resolve().parents[1]}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(gpus), "--master-addr", "127.0.0.1",
           "--master-port", str(port), str(Path(__file__).resolve()), "--ddp-worker", str(work),
           *(["--dry-run-cpu"] if SMALL else [])]
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    seconds = time.perf_counter() - start
    report = work / "ddp.json"
    if done.returncode != 0 or not report.is_file():
        raise RuntimeError(f"torchrun exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return {**json.loads(report.read_text()), "torchrun_seconds": seconds}


def ddp_worker(work: Path) -> None:
    """One torchrun rank: an NCCL all_reduce, then train_projector under DDP; rank 0 writes ddp.json."""
    import torch
    import torch.distributed as dist

    from spacebind.training import distributed
    from spacebind.training.trainer import TrainConfig, train_projector

    if DEVICE == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if int(os.environ.get("WORLD_SIZE", "1")) == 1 and DEVICE == "cuda":
        dist.init_process_group("nccl")  # one GPU: a world of 1 still runs the NCCL all_reduce
    elif not distributed.is_distributed():
        raise RuntimeError("torchrun did not form a process group")
    world, rank = dist.get_world_size(), dist.get_rank()
    backend = dist.get_backend()
    dev = torch.device("cuda", torch.cuda.current_device()) if DEVICE == "cuda" else torch.device("cpu")
    x = torch.full((1024,), float(rank + 1), device=dev)
    start = time.perf_counter()
    dist.all_reduce(x)
    _sync()
    reduce_s = time.perf_counter() - start
    expected = world * (world + 1) / 2
    if not torch.allclose(x, torch.full_like(x, expected)):
        raise AssertionError(f"all_reduce gave {float(x[0])}, expected {expected}")
    n = _size(16_384, 2048)
    src, tgt = _structured_pairs(n + 1024, 512, 768, 1, str(dev))
    config = TrainConfig(epochs=2, batch_size=256 * world, hidden=1024, patience=10)
    _sync()
    start = time.perf_counter()
    result = train_projector(src[:n], tgt[:n], val_src=src[n:], val_tgt=tgt[n:], config=config, progress=False)
    _sync()
    train_s = time.perf_counter() - start
    if distributed.is_main():
        (work / "ddp.json").write_text(json.dumps({
            "world_size": world, "backend": backend, "all_reduce_ok": True, "all_reduce_seconds": reduce_s,
            "train_pairs": n, "train_seconds": train_s, "val_recall@1": result.best_val_recall,
            "head_device": str(next(result.head.parameters()).device),
            "note": "one process: NCCL all_reduce in a world of 1, training single-process" if world == 1 else ""}))
    if world == 1 and dist.is_initialized():
        dist.destroy_process_group()


def run_check(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One check, timed; an exception becomes `status: failed` with its text and traceback tail."""
    start = time.perf_counter()
    try:
        result = fn()
        status = "skipped" if "skipped" in result else "ok"
        entry = {"status": status, **result}
    except Exception as exc:  # noqa: BLE001 - every failure is recorded, the other checks still run
        entry = {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
    entry["wall_seconds"] = time.perf_counter() - start
    print(f"{name:12s} {entry['status']:8s} {entry['wall_seconds']:7.1f} s"
          + (f"  {entry.get('error') or entry.get('skipped')}" if entry["status"] != "ok" else ""), flush=True)
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results (default %(default)s)")
    parser.add_argument("--gpus", type=int, default=None, help="torchrun processes for the ddp check (default: all GPUs)")
    parser.add_argument("--only", default=",".join(CHECKS), help="comma-separated checks to run (default: all)")
    parser.add_argument("--ddp-worker", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--dry-run-cpu", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    global DEVICE, SMALL
    if args.dry_run_cpu:  # development: the same code paths on the CPU, small sizes, fp32 (autocast is a no-op)
        DEVICE, SMALL = "cpu", True

    if args.ddp_worker is not None:
        ddp_worker(args.ddp_worker)
        return 0
    if not torch.cuda.is_available() and not args.dry_run_cpu:
        print(NO_CUDA_MESSAGE, file=sys.stderr)
        return NO_CUDA_EXIT
    wanted = [c for c in args.only.split(",") if c]
    unknown = sorted(set(wanted) - set(CHECKS))
    if unknown:
        parser.error(f"--only: unknown check(s) {unknown}; expected any of {', '.join(CHECKS)}")
    gpus = args.gpus or max(1, torch.cuda.device_count()) if not SMALL else args.gpus or 2
    os.environ.setdefault("SPACEBIND_PROGRESS", "0")
    started = time.perf_counter()
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "torch": torch.__version__, "cuda": torch.version.cuda,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "bf16_supported": torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        "dry_run_cpu": SMALL, "checks": {}}
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        funcs: dict[str, Callable[[Path], dict[str, Any]]] = {
            "embed_bf16": check_embed_bf16, "train": check_train, "topk": check_topk, "faiss_gpu": check_faiss_gpu,
            "ddp": lambda w: check_ddp(w, gpus)}
        for name in wanted:
            work = Path(tmp) / name
            work.mkdir()
            results["checks"][name] = run_check(name, lambda f=funcs[name], w=work: f(w))
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    results["total_seconds"] = time.perf_counter() - started
    failed = [n for n, r in results["checks"].items() if r["status"] == "failed"]
    results["failed"] = failed
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out} ({len(wanted) - len(failed)}/{len(wanted)} checks ok or skipped, "
          f"{results['total_seconds']:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
