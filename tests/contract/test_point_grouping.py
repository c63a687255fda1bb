"""Point preprocessing and grouping of the point experts against brute-force references and the
official constants (Uni3D / ULIP-2: 10,000 points, unit-ball xyz, rgb or 0.4)."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import torch

from spacebind.experts._point_grouping import (
    NO_COLOUR,
    NUM_POINTS,
    farthest_point_sample,
    group_points,
    knn,
    normalize_xyz,
    prepare_cloud,
    resample,
)
from spacebind.io.inputs import load_inputs


def _fps_reference(xyz: np.ndarray, count: int) -> list[int]:
    """pointnet2_ops `furthest_point_sampling_kernel`, one point at a time: start at 0, skip points
    with |p|² <= 1e-3, distance to the chosen set = min of squared distances (initially 1e10),
    strict '>' so ties keep the lowest index."""
    temp = [1e10] * len(xyz)
    chosen = [0]
    for _ in range(1, count):
        x1 = xyz[chosen[-1]]
        best, besti = -1.0, 0
        for k, p in enumerate(xyz):
            if float(p @ p) <= 1e-3:
                continue
            temp[k] = min(float(((p - x1) ** 2).sum()), temp[k])
            if temp[k] > best:
                best, besti = temp[k], k
        chosen.append(besti)
    return chosen


def _clouds(batch: int, n: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(batch, n, 3)).astype(np.float32))


def test_fps_matches_the_kernel_rules_brute_force() -> None:
    xyz = _clouds(3, 300)
    xyz[1, 5] = 0.0  # within the kernel's 1e-3 exclusion ball: never a centre
    xyz[1, 0] = 0.0  # … except as the fixed start
    got = farthest_point_sample(xyz, 40)
    for b in range(3):
        assert got[b].tolist() == _fps_reference(xyz[b].double().numpy(), 40)
    assert got[:, 0].tolist() == [0, 0, 0] and 5 not in got[1].tolist()


def test_fps_centres_are_far_apart() -> None:
    xyz = _clouds(2, 2000, seed=1)
    xyz = xyz / xyz.norm(dim=-1, keepdim=True).clamp(min=0.2)  # no point in the exclusion ball
    idx = farthest_point_sample(xyz, 64)
    for b in range(2):
        centres = xyz[b, idx[b]]
        assert len(set(idx[b].tolist())) == 64
        pairwise = torch.cdist(centres, centres) + torch.eye(64) * 1e9
        covering = torch.cdist(xyz[b], centres).min(dim=1).values.max()
        # FPS invariant: every point lies within the smallest gap between chosen centres
        assert pairwise.min() >= covering - 1e-6
        random = xyz[b, torch.randperm(2000, generator=torch.Generator().manual_seed(0))[:64]]
        assert pairwise.min() > (torch.cdist(random, random) + torch.eye(64) * 1e9).min()


def test_knn_matches_brute_force_and_groups_are_centred() -> None:
    xyz = _clouds(2, 500, seed=2)
    centres = xyz[:, :7] + 0.01
    idx = knn(xyz, centres, 16)
    for b in range(2):
        for g in range(7):
            want = np.argsort(((xyz[b].double() - centres[b, g].double()) ** 2).sum(-1).numpy())[:16]
            assert set(idx[b, g].tolist()) == set(want.tolist())
    rgb = torch.rand(2, 500, 3, generator=torch.Generator().manual_seed(0))
    patches, centres = group_points(torch.cat([xyz, rgb], -1), num_group=8, group_size=16)
    assert patches.shape == (2, 8, 16, 6) and centres.shape == (2, 8, 3)
    assert torch.equal(centres, xyz[torch.arange(2)[:, None], farthest_point_sample(xyz, 8)])
    nearest = knn(xyz, centres, 16)
    absolute = xyz[torch.arange(2)[:, None, None], nearest]
    torch.testing.assert_close(patches[..., :3], absolute - centres[:, :, None], rtol=0, atol=0)
    torch.testing.assert_close(patches[..., 3:], rgb[torch.arange(2)[:, None, None], nearest], rtol=0, atol=0)


def test_normalisation_constants() -> None:
    xyz = np.random.default_rng(3).normal(size=(1000, 3)).astype(np.float32) * 7 + 40
    out = normalize_xyz(xyz)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-6)
    assert abs(np.linalg.norm(out, axis=1).max() - 1.0) < 1e-6
    centred = xyz.astype(np.float64) - xyz.astype(np.float64).mean(0)
    np.testing.assert_allclose(out, centred / np.linalg.norm(centred, axis=1).max(), atol=1e-6)
    assert not normalize_xyz(np.ones((5, 3), np.float32)).any()


def test_fixed_size_sampling_is_deterministic() -> None:
    big = np.arange(25_000 * 3, dtype=np.float32).reshape(-1, 3)
    sub = resample(big, NUM_POINTS)
    assert sub.shape == (NUM_POINTS, 3) and np.array_equal(sub, resample(big, NUM_POINTS))
    rows = sub[:, 0] // 3
    assert np.all(np.diff(rows) > 0)  # a subset without repeats, in file order
    small = big[:3000]
    tiled = resample(small, NUM_POINTS)
    counts = np.bincount((tiled[:, 0] // 3).astype(int))
    assert set(counts.tolist()) == {3, 4} and counts.sum() == NUM_POINTS


def test_colour_fill_and_rgb_passthrough() -> None:
    rng = np.random.default_rng(4)
    xyz = rng.normal(size=(12_000, 3)).astype(np.float32)
    plain = prepare_cloud(xyz)
    assert plain.shape == (NUM_POINTS, 6) and plain.dtype == np.float32
    assert np.all(plain[:, 3:] == np.float32(NO_COLOUR)) and NO_COLOUR == 0.4
    rgb = rng.uniform(size=(12_000, 3)).astype(np.float32)
    coloured = prepare_cloud(np.concatenate([xyz, rgb], 1))
    np.testing.assert_array_equal(coloured[:, :3], plain[:, :3])
    np.testing.assert_array_equal(coloured[:, 3:], resample(rgb, NUM_POINTS))


def _write_ply(path: Path, xyz: np.ndarray, rgb: np.ndarray) -> None:
    header = (f"ply\nformat binary_little_endian 1.0\nelement vertex {len(xyz)}\nproperty float x\n"
              "property float y\nproperty float z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\n"
              "end_header\n").encode()
    body = b"".join(struct.pack("<fffBBB", *map(float, p), *map(int, c)) for p, c in zip(xyz, rgb))
    path.write_bytes(header + body)


def test_real_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    xyz = (rng.normal(size=(4000, 3)) * [2.0, 1.0, 0.5] + [10.0, -3.0, 1.0]).astype(np.float32)
    rgb = rng.integers(0, 256, size=(4000, 3), dtype=np.uint8)
    _write_ply(tmp_path / "cloud.ply", xyz, rgb)
    np.save(tmp_path / "cloud.npy", xyz)
    from_ply, from_npy = (prepare_cloud(c) for c in load_inputs("point", [tmp_path / "cloud.ply", tmp_path / "cloud.npy"]))
    tiled = np.arange(NUM_POINTS) % 4000
    centred = xyz.astype(np.float64) - xyz.astype(np.float64).mean(0)
    want_xyz = centred / np.linalg.norm(centred, axis=1).max()
    np.testing.assert_allclose(from_ply[:, :3], want_xyz[tiled], atol=1e-5)
    np.testing.assert_allclose(from_ply[:, 3:], rgb[tiled] / 255.0, atol=1e-6)
    np.testing.assert_array_equal(from_npy[:, :3], from_ply[:, :3])
    assert np.all(from_npy[:, 3:] == np.float32(0.4))
