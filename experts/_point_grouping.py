"""Point-cloud preprocessing and patch grouping shared by the point experts (Uni3D, ULIP-2).

Both official pipelines feed the encoder 10,000 points with xyz centred on their centroid and
divided by the largest distance from it, and rgb in [0, 1] (0.4 everywhere when a cloud has no
colour). The encoder then picks patch centres by farthest-point sampling (the `pointnet2_ops` CUDA
kernel) and groups each centre's nearest points (`knn_point`: squared distances + `topk`), with
xyz made relative to the centre. Everything here is pure torch / numpy and deterministic.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

from spacebind.training.threads import cpu_threads

NUM_POINTS = 10_000
NO_COLOUR = 0.4
_FPS_MIN_SQUARED_NORM = 1e-3  # pointnet2_ops never picks a point with |p|² <= 1e-3 (after the first)
_FPS_START = 0  # pointnet2_ops starts every cloud at index 0
_FPS_FAR = 1e10  # pointnet2_ops' initial "distance to the chosen set"
_SUBSAMPLE_SEED = 0


def normalize_xyz(xyz: np.ndarray) -> np.ndarray:
    """Centroid subtraction and division by the largest distance from the centroid (unit ball);
    a cloud of one repeated point becomes all zeros, as OpenShape's `normalize_pc` does."""
    centred = xyz.astype(np.float64) - xyz.astype(np.float64).mean(axis=0)
    radius = np.sqrt((centred ** 2).sum(axis=1)).max()
    if radius < 1e-6:
        return np.zeros_like(xyz, dtype=np.float32)
    return (centred / radius).astype(np.float32)


def resample(points: np.ndarray, count: int = NUM_POINTS) -> np.ndarray:
    """Exactly `count` points, deterministically.

    The official evaluation sets are stored at 10,000 points already; their training loaders
    subsample at random and upsample by drawing indices with replacement. Here a larger cloud keeps
    a fixed-seed random subset (seed 0, file order preserved), which like the official random
    sampling is spatially unbiased and cheap (farthest-point sampling 10,000 of a million points
    would not be); a smaller cloud is tiled cyclically (point i repeated ⌈count/N⌉ or ⌊count/N⌋
    times), so every point is equally represented; duplicates do not change a patch's max-pooled
    feature."""
    total = len(points)
    if total > count:
        keep = np.sort(np.random.default_rng(_SUBSAMPLE_SEED).choice(total, count, replace=False))
        return points[keep]
    return points[np.arange(count) % total]


def prepare_cloud(points: np.ndarray, count: int = NUM_POINTS) -> np.ndarray:
    """A loaded cloud ([N, 3] xyz or [N, 6] xyz + rgb in [0, 1]) → float32 [count, 6] model input.
    xyz is normalised over the whole cloud before resampling, so the centroid and radius do not
    depend on which points are kept or repeated."""
    points = np.asarray(points, dtype=np.float32)
    xyz = normalize_xyz(points[:, :3])
    rgb = points[:, 3:6] if points.shape[1] >= 6 else np.full_like(xyz, NO_COLOUR)
    return resample(np.concatenate([xyz, rgb.astype(np.float32)], axis=1), count)


def batch_clouds(clouds: list[np.ndarray], count: int = NUM_POINTS) -> torch.Tensor:
    """Loaded clouds → Tensor[B, count, 6]."""
    return torch.from_numpy(np.stack([prepare_cloud(c, count) for c in clouds]))


@contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """FPS is hundreds of tiny sequential steps: on CPU, intra-op threads only add sync cost
    (measured 0.3 ms → 9 ms per argmax with 2 threads on a busy machine)."""
    if device.type != "cpu":
        yield
        return
    with cpu_threads(1):
        yield


def farthest_point_sample(xyz: torch.Tensor, count: int) -> torch.Tensor:
    """Indices [B, count] of farthest-point sampling over xyz [B, N, 3], following the
    `pointnet2_ops` kernel: start at index 0; a point's distance to the chosen set is the minimum
    of squared distances, starting at 1e10; points within √1e-3 of the origin are never chosen
    (after the first); ties go to the lowest index."""
    batch = xyz.shape[0]
    x, y, z = (xyz[..., i].contiguous() for i in range(3))  # planar, summed in the kernel's order
    eligible = x * x + y * y + z * z > _FPS_MIN_SQUARED_NORM
    # ineligible points sit at -1 for good: min(-1, distance) stays -1 and never wins the argmax
    nearest = torch.where(eligible, _FPS_FAR, -1.0).to(xyz.dtype)
    rows = torch.arange(batch, device=xyz.device)
    chosen = torch.full((batch, count), _FPS_START, dtype=torch.long, device=xyz.device)
    last = chosen[:, 0]
    with _one_cpu_thread(xyz.device):
        for j in range(1, count):
            dx, dy, dz = x - x[rows, last, None], y - y[rows, last, None], z - z[rows, last, None]
            torch.minimum(nearest, dx * dx + dy * dy + dz * dz, out=nearest)
            last = nearest.argmax(dim=1)
            chosen[:, j] = last
    return chosen


def knn(xyz: torch.Tensor, centres: torch.Tensor, k: int) -> torch.Tensor:
    """Indices [B, G, k] of the k points of xyz [B, N, 3] nearest each centre [B, G, 3]."""
    dist = torch.cdist(centres, xyz, compute_mode="donot_use_mm_for_euclid_dist")
    return dist.topk(k, dim=-1, largest=False).indices


def _gather(points: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    rows = torch.arange(points.shape[0], device=points.device).view(-1, *([1] * (idx.dim() - 1)))
    return points[rows, idx]


def group_points(points: torch.Tensor, num_group: int, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points [B, N, C] (xyz first) → patches [B, G, K, C] with xyz relative to their centre, and
    the centres [B, G, 3]."""
    xyz = points[..., :3].contiguous()
    centres = _gather(xyz, farthest_point_sample(xyz, num_group))
    patches = _gather(points, knn(xyz, centres, group_size))
    return torch.cat([patches[..., :3] - centres[:, :, None], patches[..., 3:]], dim=-1), centres


def cloud_encoder(model: torch.nn.Module, npoints: int, device: str = "cpu") -> Callable[[list[np.ndarray]], torch.Tensor]:
    """An expert's point encoder: loaded clouds → unit-norm embeddings from `model` ([B, N, 6] → [B, d])."""

    @torch.no_grad()
    def encode(clouds: list[np.ndarray]) -> torch.Tensor:
        return F.normalize(model(batch_clouds(clouds, npoints).to(device)).float(), dim=-1)

    return encode
