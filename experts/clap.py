"""LAION-CLAP experts (audio, text) from the official checkpoint files, offline.

Nothing from the `laion_clap` package is imported: importing it loads tokenizers from the hub, and
its model calls `RobertaModel.from_pretrained('roberta-base')`. The architecture is our own
(`clap_model.py`, official key names); the RoBERTa tokenizer comes from a local directory and is
checked, since an offline load that finds no files silently yields a 5-token tokenizer.

Audio, as the official `CLAP_Module.get_audio_embedding_from_*` (except that nothing is random):
mono, resampled to 48 kHz as `librosa.load(path, sr=48000)` does (soxr HQ, length rounded up from a
float ratio, so a 5 s clip at 44.1 kHz becomes 240,001 samples), quantised to int16 and back, then 10 s
(480,000 samples):
- shorter clips: repeated whole, then zero-padded (`repeatpad`);
- longer clips, non-fusion models: the first 10 s are kept (the official code crops at random);
- longer clips, fusion models: a global view (the whole clip's mel squeezed to 10 s, bilinear) plus
  three 10 s mel chunks, taken from the middle of the front, middle and back thirds of the possible
  start frames (the official code draws each at random from its third).
"""
from __future__ import annotations

from dataclasses import replace
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from spacebind.errors import CheckpointError
from spacebind.experts._checkpoint_io import load_strict, read_checkpoint
from spacebind.experts._clap_model import CLAP, HTSAT_BASE, HTSAT_TINY, ROBERTA_BASE, HTSATConfig
from spacebind.experts.registry import EXPERTS
from spacebind.io.files import sha256_file
from spacebind.io.inputs import Audio
from spacebind.space import Expert, ExpertSpec

CONTEXT_LENGTH = 77
# Official training scripts set the optimiser's lr from numpy (a cosine schedule), so the files
# pickle numpy scalars next to the weights; these globals are allowed, nothing else. The files were
# written by numpy 1 (`numpy.core`), which numpy 2 calls `numpy._core`: both names are allowed.
_SCALAR = np.dtype("float64").type(0).__reduce__()[0]  # numpy's scalar reconstructor, wherever it lives
_SAFE_GLOBALS: list[Any] = [_SCALAR, (_SCALAR, "numpy.core.multiarray.scalar"), np.dtype,
                            *(type(np.dtype(t)) for t in (np.float64, np.float32, np.int64))]


# ---- checkpoints ----

def load_official_state(path: Path, wrapper: str, what: str, drop: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """`torch.load(path)[wrapper]`, weights only (numpy scalars allowed), without the `drop` keys
    (`position_ids`: written by transformers < 4.31, absent from models built by later ones)."""
    state = read_checkpoint(path, wrapper, what, safe_globals=_SAFE_GLOBALS)
    return {k: v for k, v in state.items() if k not in drop}


# ---- tokenizers ----

def checked_tokenizer(cls: Any, directory: str | Path | None, vocab_size: int, files: str) -> Any:
    """A tokenizer of class `cls` from a local directory, refused when it is absent or broken
    (vocabulary not that of the text model, or distinct texts mapped to the same ids)."""
    from spacebind.experts.hf_text import check_tokenizer

    path = Path(directory) if directory is not None else None
    if path is None or not path.is_dir():
        raise CheckpointError(f"tokenizer={directory!r}: pass a local directory holding {files}")
    tokenizer = cls.from_pretrained(str(path), local_files_only=True)
    check_tokenizer(tokenizer, vocab_size, path)
    if len(tokenizer) > vocab_size:
        raise CheckpointError(f"{path}: the tokenizer has {len(tokenizer)} tokens but the text model embeds "
                              f"only {vocab_size}; it belongs to another model")
    return tokenizer


# ---- audio preprocessing ----

def librosa_resample(audio: Audio, rate: int) -> np.ndarray:
    """The official loader's resampling (`librosa.load(path, sr=rate)`, librosa >= 0.10): soxr 'HQ',
    then the length fixed to ceil(samples × (rate / sample_rate)) with a float ratio, zero-padded."""
    if audio.sample_rate == rate:
        return audio.samples
    import librosa

    return librosa.resample(audio.samples, orig_sr=audio.sample_rate, target_sr=rate, res_type="soxr_hq")


def quantize_int16(x: np.ndarray) -> np.ndarray:
    """The official int16 round trip (clip to [-1, 1], scale by 32767, truncate)."""
    return ((np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16) / 32767.0).astype(np.float32)


def repeat_pad(x: np.ndarray, length: int) -> np.ndarray:
    """Repeat the whole clip as often as it fits in `length`, then zero-pad (official `repeatpad`)."""
    if len(x) >= length:
        return x
    tiled = np.tile(x, length // len(x))
    return np.pad(tiled, (0, length - len(tiled)))


@lru_cache(maxsize=4)
def _htk_filters(cfg: HTSATConfig) -> torch.Tensor:
    import librosa

    return torch.from_numpy(librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.mel_bins,
                                                fmin=cfg.fmin, fmax=cfg.fmax, htk=True, norm=None))


def htk_log_mel(wave: np.ndarray, cfg: HTSATConfig) -> torch.Tensor:
    """[samples] → [frames, mel_bins]: the torchaudio `MelSpectrogram` (HTK scale, no filter norm,
    power 2, centred reflect padding) + `AmplitudeToDB` features the fusion models were trained on
    (not the Slaney `melW` of the non-fusion front end)."""
    spec = torch.stft(torch.from_numpy(wave), cfg.n_fft, cfg.hop_length, window=torch.hann_window(cfg.n_fft),
                      center=True, pad_mode="reflect", return_complex=True).abs() ** 2
    return (10.0 * torch.log10(torch.clamp(_htk_filters(cfg) @ spec, min=1e-10))).T


def fusion_input(wave: np.ndarray, cfg: HTSATConfig) -> tuple[torch.Tensor, bool]:
    """The 4-channel fusion mel [4, frames, mel_bins] of a quantised clip, and whether it is longer
    than 10 s (only then are the three local chunks used)."""
    if len(wave) <= cfg.clip_samples:
        mel = htk_log_mel(repeat_pad(wave, cfg.clip_samples), cfg)
        return mel.expand(4, -1, -1), False
    mel = htk_log_mel(wave, cfg)
    chunk = cfg.clip_samples // cfg.hop_length + 1
    if mel.shape[0] == chunk:  # longer by less than a hop: the whole clip is one chunk
        return mel.expand(4, -1, -1), False
    thirds = np.array_split(np.arange(mel.shape[0] - chunk + 1), 3)
    starts = [int(t[len(t) // 2]) if len(t) else 0 for t in thirds]
    # Bilinear without antialiasing: torchvision's tensor Resize as it was when these models were trained.
    squeezed = F.interpolate(mel[None, None], size=(chunk, cfg.mel_bins), mode="bilinear", align_corners=False)[0, 0]
    return torch.stack([squeezed] + [mel[s:s + chunk] for s in starts]), True


def clip_waveform(audio: Audio, cfg: HTSATConfig) -> np.ndarray:
    """Mono, resampled, quantised, first 10 s kept, shorter clips repeat-padded."""
    wave = quantize_int16(librosa_resample(audio, cfg.sample_rate))
    return repeat_pad(wave[:cfg.clip_samples], cfg.clip_samples)


# ---- the expert ----

def clap_expert(checkpoint: str | Path, tokenizer: str | Path | None, *, audio: HTSATConfig = HTSAT_TINY,
                text: dict[str, Any] | None = None, name: str = "clap", device: str = "cpu",
                batch_size: int = 16) -> Expert:
    """A LAION-CLAP audio-text expert (512-d) from an official `.pt` file and a local RoBERTa
    tokenizer directory (vocab.json + merges.txt, or tokenizer.json)."""
    from transformers import RobertaConfig, RobertaTokenizer

    path = Path(checkpoint)
    text_cfg = RobertaConfig(**(text or ROBERTA_BASE))
    state = load_official_state(path, "state_dict", f"the {name} checkpoint (LAION-CLAP)",
                                drop=("text_branch.embeddings.position_ids",))
    tokenize = checked_tokenizer(RobertaTokenizer, tokenizer, text_cfg.vocab_size,
                                 "roberta-base's vocab.json and merges.txt (or tokenizer.json)")
    model = CLAP(audio, text_cfg)
    load_strict(model, state, path)
    model = model.to(device).eval()

    @torch.no_grad()
    def encode_audio(clips: list[Audio]) -> torch.Tensor:
        if not audio.fusion:
            waves = torch.from_numpy(np.stack([clip_waveform(a, audio) for a in clips])).to(device)
            return model.encode_audio(model.audio_branch.log_mel(waves))
        inputs = [fusion_input(quantize_int16(librosa_resample(a, audio.sample_rate)), audio) for a in clips]
        mel = torch.stack([m for m, _ in inputs]).to(device)
        return model.encode_audio(mel, torch.tensor([longer for _, longer in inputs], device=device))

    @torch.no_grad()
    def encode_text(texts: list[str]) -> torch.Tensor:
        batch = tokenize(texts, padding="max_length", truncation=True, max_length=CONTEXT_LENGTH, return_tensors="pt")
        return model.encode_text(batch["input_ids"].to(device), batch["attention_mask"].to(device))

    spec = ExpertSpec(source=name, kwargs={"checkpoint": str(path), "tokenizer": str(tokenizer)},
                      checkpoint=str(path), sha256=sha256_file(path))
    return Expert(name, model.audio_projection[-1].out_features, {"audio": encode_audio, "text": encode_text},
                  spec=spec, batch_size=batch_size)


# Registered variants: audio architecture, text config, and the files they were published as.
VARIANTS: dict[str, tuple[HTSATConfig, dict[str, Any], str]] = {
    "clap_general.fusion": (replace(HTSAT_TINY, fusion=True), ROBERTA_BASE,
                            "630k-audioset-fusion-best.pt (or 630k-fusion-best.pt)"),
    "clap_general.nofusion": (HTSAT_TINY, ROBERTA_BASE, "630k-audioset-best.pt (or 630k-best.pt)"),
    "clap_music": (HTSAT_BASE, ROBERTA_BASE,
                   "music_audioset_epoch_15_esc_90.14.pt (or music_speech_audioset_epoch_15_esc_89.98.pt)"),
}
_TOKENIZER_FILES = "tokenizer= a directory with roberta-base's vocab.json + merges.txt (or tokenizer.json)"


def _variant(registry_name: str, checkpoint: str, tokenizer: str | None = None, device: str = "cpu",
             batch_size: int = 16) -> Expert:
    audio, text, _ = VARIANTS[registry_name]
    return clap_expert(checkpoint, tokenizer, audio=audio, text=text, name=registry_name, device=device,
                       batch_size=batch_size)


for _name, (_audio, _text, _file) in VARIANTS.items():
    EXPERTS.register(_name, modalities=("audio", "text"), dim=512, checkpoint=f"{_file}; {_TOKENIZER_FILES}", licence="cc0-1.0",
                     description=f"LAION-CLAP HTSAT-{'base' if _audio.embed_dim == 128 else 'tiny'}"
                                 f"{' fusion' if _audio.fusion else ''} + RoBERTa; needs checkpoint= {_file}",
                     )(partial(_variant, _name))
