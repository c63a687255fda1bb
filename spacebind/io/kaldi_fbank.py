"""Kaldi log-mel filterbank features in pure torch, computed as `torchaudio.compliance.kaldi.fbank`
does (torchaudio is not a dependency) for the options audio experts use: no dither, per-frame DC
offset removal, pre-emphasis, a symmetric Hann window (`window_type="hanning"`), zero-padding to
a power of two, power spectrum, Kaldi's triangular mel banks (20 Hz to Nyquist by default), log
with a float-epsilon floor, `snip_edges` framing and no energy column (`use_energy=False`, so
`htk_compat` changes nothing).
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

EPSILON = torch.finfo(torch.float32).eps


def frame_sizes(sample_rate: float, frame_length_ms: float, frame_shift_ms: float) -> tuple[int, int, int]:
    """(window size, window shift, FFT size) in samples, truncated to integers as Kaldi does."""
    size = int(sample_rate * frame_length_ms * 0.001)
    shift = int(sample_rate * frame_shift_ms * 0.001)
    return size, shift, 2 ** (size - 1).bit_length()


def num_frames(num_samples: int, sample_rate: float = 16000.0, frame_length_ms: float = 25.0,
               frame_shift_ms: float = 10.0) -> int:
    """Frames of a signal with `snip_edges`: 1 + (n − size) // shift, 0 if shorter than a window."""
    size, shift, _ = frame_sizes(sample_rate, frame_length_ms, frame_shift_ms)
    return 0 if num_samples < size else 1 + (num_samples - size) // shift


def mel(freq: torch.Tensor | float) -> torch.Tensor | float:
    """Kaldi's mel scale: 1127 ln(1 + f / 700)."""
    if isinstance(freq, torch.Tensor):
        return 1127.0 * (1.0 + freq / 700.0).log()
    return 1127.0 * math.log(1.0 + freq / 700.0)


@lru_cache(maxsize=8)
def mel_banks(num_bins: int, fft_size: int, sample_rate: float, low_freq: float = 20.0,
              high_freq: float = 0.0) -> torch.Tensor:
    """Triangular filters [num_bins, fft_size // 2 + 1], equally spaced on the mel scale between
    `low_freq` and `high_freq` (≤ 0 means an offset from Nyquist); the Nyquist column is zero."""
    nyquist = 0.5 * sample_rate
    high = high_freq + nyquist if high_freq <= 0.0 else high_freq
    if not (0.0 <= low_freq < nyquist and 0.0 < high <= nyquist and low_freq < high):
        raise ValueError(f"bad mel range: low {low_freq} Hz, high {high} Hz, Nyquist {nyquist} Hz")
    mel_low, mel_high = mel(low_freq), mel(high)
    delta = (mel_high - mel_low) / (num_bins + 1)
    edge = torch.arange(num_bins).unsqueeze(1)
    left, centre, right = (mel_low + (edge + k) * delta for k in (0.0, 1.0, 2.0))
    bins_mel = mel(sample_rate / fft_size * torch.arange(fft_size // 2, dtype=torch.float32)).unsqueeze(0)
    up = (bins_mel - left) / (centre - left)
    down = (right - bins_mel) / (right - centre)
    return F.pad(torch.clamp(torch.minimum(up, down), min=0.0), (0, 1))


def fbank(
    waveform: torch.Tensor,
    sample_rate: float = 16000.0,
    num_mel_bins: int = 128,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    preemphasis: float = 0.97,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
) -> torch.Tensor:
    """Log-mel filterbank of a mono waveform [T] → [frames, num_mel_bins] (float32).

    Raises:
        ValueError: the waveform is not 1-D or is shorter than one window.
    """
    size, shift, fft_size = frame_sizes(sample_rate, frame_length_ms, frame_shift_ms)
    if waveform.ndim != 1 or waveform.numel() < size:
        raise ValueError(f"fbank needs a 1-D waveform of at least {size} samples, got shape {tuple(waveform.shape)}")
    frames = waveform.float().unfold(0, size, shift)
    frames = frames - frames.mean(dim=1, keepdim=True)
    if preemphasis:
        previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)  # the first sample is its own predecessor
        frames = frames - preemphasis * previous
    window = torch.hann_window(size, periodic=False)  # Kaldi's "hanning": symmetric
    frames = F.pad(frames * window, (0, fft_size - size))
    power = torch.fft.rfft(frames).abs().pow(2.0)
    energies = power @ mel_banks(num_mel_bins, fft_size, float(sample_rate), low_freq, high_freq).T
    return torch.clamp(energies, min=EPSILON).log()
