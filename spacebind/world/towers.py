"""Small encoders ("towers") of the procedural-world experts, with their preprocessing.

Each tower has `preprocess(list of loaded inputs) -> Tensor` and `forward(Tensor) -> [N, dim]`."""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spacebind.io.events import Events, event_histograms
from spacebind.io.inputs import Audio, resample
from spacebind.io.video import Video, uniform_frames
from spacebind.world.render import AUDIO_SECONDS, IMAGE_SIZE, SAMPLE_RATE

TOWER_POINTS = 128  # the world renders 384 points; the towers read an evenly spaced subset


class ImageTower(nn.Module):
    """A small CNN on 32×32 RGB (or `channels` other 32×32 planes)."""

    def __init__(self, dim: int, width: int = 32, channels: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * width, 4 * width), nn.ReLU(), nn.Linear(4 * width, dim))

    @staticmethod
    def preprocess(images: list[np.ndarray]) -> torch.Tensor:
        from PIL import Image

        arrs = [a if a.shape[:2] == (IMAGE_SIZE, IMAGE_SIZE)
                else np.asarray(Image.fromarray(a).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)) for a in images]
        x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).float() / 255.0
        return (x - 0.5) / 0.25

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _planes(maps: list[np.ndarray]) -> torch.Tensor:
    """Float maps [C, H, W] → [N, C, 32, 32] (area-resized when of another size)."""
    planes = [torch.from_numpy(np.asarray(m, dtype=np.float32))[None] for m in maps]
    return torch.cat([p if p.shape[-2:] == (IMAGE_SIZE, IMAGE_SIZE)
                      else F.interpolate(p, size=(IMAGE_SIZE, IMAGE_SIZE), mode="area") for p in planes])


class ThermalTower(ImageTower):
    """The image CNN on one thermal channel."""

    def __init__(self, dim: int, width: int = 32) -> None:
        super().__init__(dim, width, channels=1)

    @staticmethod
    def preprocess(maps: list[np.ndarray]) -> torch.Tensor:
        return (_planes([m[None] for m in maps]) - 0.3) / 0.15


VIDEO_FRAMES = 4  # frames the video tower reads, evenly spaced from first to last


class VideoTower(ImageTower):
    """The image CNN on 4 evenly spaced frames stacked as 12 channels (sees motion)."""

    def __init__(self, dim: int, width: int = 32) -> None:
        super().__init__(dim, width, channels=3 * VIDEO_FRAMES)

    @staticmethod
    def preprocess(videos: list[Video]) -> torch.Tensor:
        frames = [uniform_frames(v, VIDEO_FRAMES).transpose(0, 3, 1, 2).reshape(-1, *v.frames.shape[1:3]) / 255.0
                  for v in videos]
        return (_planes(frames) - 0.5) / 0.25


EVENT_WINDOWS = 4  # time windows of the event histograms


class EventTower(ImageTower):
    """The image CNN on per-polarity event histograms in 4 time windows (8 channels)."""

    def __init__(self, dim: int, width: int = 32) -> None:
        super().__init__(dim, width, channels=2 * EVENT_WINDOWS)

    @staticmethod
    def preprocess(streams: list[Events]) -> torch.Tensor:
        hists = [event_histograms(e, EVENT_WINDOWS).reshape(-1, e.height, e.width) for e in streams]
        return _planes(hists) * 4.0


N_SAMPLES = int(SAMPLE_RATE * AUDIO_SECONDS)
N_FFT, HOP, BANDS = 512, 128, 48


def _band_matrix() -> torch.Tensor:
    """Averages STFT bins into log-spaced bands (a mel-like filterbank without a dependency)."""
    edges = np.geomspace(60, SAMPLE_RATE / 2, BANDS + 1)
    freqs = np.fft.rfftfreq(N_FFT, 1 / SAMPLE_RATE)
    m = np.stack([(freqs >= lo) & (freqs < max(hi, lo + SAMPLE_RATE / N_FFT)) for lo, hi in zip(edges[:-1], edges[1:])])
    m = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    return torch.from_numpy(m).float()


_BANDS = _band_matrix()


class AudioTower(nn.Module):
    """Log band energies over time (computed in preprocessing) → temporal convolutions →
    pooled → MLP."""

    def __init__(self, dim: int, width: int = 64) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv1d(BANDS, width, 5, padding=2), nn.ReLU(), nn.Conv1d(width, width, 5, padding=2), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(2 * width + BANDS, 2 * width), nn.ReLU(), nn.Linear(2 * width, dim))

    @staticmethod
    def preprocess(clips: list[Audio]) -> torch.Tensor:
        waves = []
        for clip in clips:
            w = resample(clip, SAMPLE_RATE).samples[:N_SAMPLES]
            waves.append(np.pad(w, (0, N_SAMPLES - len(w))))
        wave = torch.from_numpy(np.stack(waves)).float()
        spec = torch.stft(wave, N_FFT, HOP, window=torch.hann_window(N_FFT), return_complex=True).abs() ** 2
        return torch.log(torch.einsum("bf,nft->nbt", _BANDS, spec) + 1e-4)

    def forward(self, logbands: torch.Tensor) -> torch.Tensor:
        h = self.conv(logbands)
        pooled = torch.cat([h.amax(dim=2), h.mean(dim=2), logbands.mean(dim=2)], dim=1)
        return self.head(pooled)


class PointTower(nn.Module):
    """PointNet: a shared MLP on xyz, max- and mean-pooled, then an MLP."""

    def __init__(self, dim: int, width: int = 64) -> None:
        super().__init__()
        self.point_mlp = nn.Sequential(nn.Linear(3, width), nn.ReLU(), nn.Linear(width, 2 * width), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(4 * width, 2 * width), nn.ReLU(), nn.Linear(2 * width, dim))

    @staticmethod
    def preprocess(clouds: list[np.ndarray]) -> torch.Tensor:
        """xyz only, resampled to a fixed count by evenly spaced indices (deterministic)."""
        fixed = [c[np.linspace(0, len(c) - 1, TOWER_POINTS).round().astype(int), :3] for c in clouds]
        return torch.from_numpy(np.stack(fixed)).float()

    def forward(self, pts: torch.Tensor) -> torch.Tensor:
        h = self.point_mlp(pts)
        return self.head(torch.cat([h.amax(dim=1), h.mean(dim=1)], dim=1))


def word_buckets(word: str, buckets: int, hashes: int = 2) -> list[int]:
    """The buckets of a word: `hashes` independent hashes (slices of its blake2b digest) modulo
    `buckets`. Two words share an embedding only if every hash collides, as in hash/Bloom
    embeddings (spaCy's MultiHashEmbed); one hash into 4096 buckets made, e.g., "automobile" and
    "bell" the same word."""
    digest = hashlib.blake2b(word.encode(), digest_size=4 * hashes).digest()
    return [int.from_bytes(digest[4 * i:4 * i + 4], "little") % buckets for i in range(hashes)]


class TextTower(nn.Module):
    """Bag of hashed words (each word into two buckets, `word_buckets`): unseen words land in
    untrained buckets."""

    def __init__(self, dim: int, width: int = 64, buckets: int = 4096) -> None:
        super().__init__()
        self.buckets = buckets
        self.embed = nn.EmbeddingBag(buckets, width, mode="mean")
        self.head = nn.Sequential(nn.Linear(width, 2 * width), nn.ReLU(), nn.Linear(2 * width, dim))

    def preprocess(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, offsets = [], []
        for text in texts:
            offsets.append(len(ids))
            words = "".join(ch if ch.isalnum() else " " for ch in text.lower()).split() or [""]
            ids += [b for w in words for b in word_buckets(w, self.buckets)]
        return torch.tensor(ids), torch.tensor(offsets)

    def forward(self, tokens: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return self.head(self.embed(*tokens))


TOWERS: dict[str, type[nn.Module]] = {
    "image": ImageTower, "audio": AudioTower, "point": PointTower, "text": TextTower,
    "video": VideoTower, "thermal": ThermalTower, "event": EventTower,
}


def encode_with(tower: nn.Module, loaded: list[Any]) -> torch.Tensor:
    """Preprocess and run a tower without gradients, on the device its weights are on."""
    device = next(tower.parameters()).device
    batch = tower.preprocess(loaded)
    batch = tuple(t.to(device) for t in batch) if isinstance(batch, tuple) else batch.to(device)
    with torch.no_grad():
        return tower(batch)


def take(batch: Any, idx: torch.Tensor) -> Any:
    """Index preprocessed inputs (a tensor, or text's (ids, offsets)) by item."""
    if isinstance(batch, tuple):
        ids, offsets = batch
        ends = torch.cat([offsets[1:], torch.tensor([len(ids)])])
        parts = [ids[offsets[i]:ends[i]] for i in idx.tolist()]
        lengths = torch.tensor([len(p) for p in parts])
        return torch.cat(parts), torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)[:-1]])
    return batch[idx]
