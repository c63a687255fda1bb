"""WavCaps audio-text experts (HTSAT-BERT, 1024-d) from the official checkpoint files, offline.

Architecture as the official `retrieval/models/ase_model.py` (XinhaoMei/WavCaps): HTS-AT tiny at
32 kHz (hop 320, 64 mels, 50–14,000 Hz) → Linear-ReLU-Linear to 1024; BERT-base-uncased without
pooler, [CLS] token → Linear-ReLU-Linear to 1024. Checkpoints are `torch.load(f)['model']`.

Audio as the official zero-shot scripts (and OmniBind): mono, resampled to 32 kHz as
`librosa.load(path, sr=32000)` does (soxr HQ, like the CLAP experts), the first 10 s
kept, shorter clips zero-padded to 10 s. Text as the official zero-shot classification script
encodes class names and prompts: as given, BERT-tokenised (longest padding, at most 30 tokens);
`preprocess_text=True` first applies the retrieval training data's caption normalisation
(`text_preprocess`: lower case, punctuation → spaces).
"""
from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spacebind.experts._checkpoint_io import load_strict
from spacebind.experts._clap_model import HTSAT, HTSAT_TINY, HTSATConfig, LogMel, PowerSpectrogram, projection
from spacebind.experts.clap import checked_tokenizer, librosa_resample, load_official_state
from spacebind.experts.registry import EXPERTS
from spacebind.io.files import sha256_file
from spacebind.io.inputs import Audio
from spacebind.space import Expert, ExpertSpec

WAVCAPS_HTSAT = replace(HTSAT_TINY, sample_rate=32000, hop_length=320, clip_samples=320000)
BERT_BASE_UNCASED: dict[str, Any] = {}  # transformers' BertConfig defaults are bert-base-uncased's
MAX_TOKENS = 30
EMBED_DIM = 1024


class WavCapsAudio(HTSAT):
    """`audio_encoder.audio_enc`: HTS-AT whose mel front end sits in `audio_feats_extractor`."""

    def __init__(self, cfg: HTSATConfig) -> None:
        super().__init__(cfg)
        self.audio_feats_extractor = nn.Sequential(OrderedDict(
            mel_trans=PowerSpectrogram(cfg.n_fft, cfg.hop_length),
            log_trans=LogMel(cfg.sample_rate, cfg.n_fft, cfg.mel_bins, cfg.fmin, cfg.fmax)))


class _AudioEncoder(nn.Module):
    def __init__(self, cfg: HTSATConfig) -> None:
        super().__init__()
        self.audio_enc = WavCapsAudio(cfg)


class _TextEncoder(nn.Module):
    def __init__(self, config: Any) -> None:
        super().__init__()
        from transformers import BertModel

        self.text_encoder = BertModel(config, add_pooling_layer=False)


class WavCaps(nn.Module):
    """The official ASE model's parameters: audio/text encoders, projections and temperature."""

    def __init__(self, audio: HTSATConfig = WAVCAPS_HTSAT, text: dict[str, Any] | None = None,
                 dim: int = EMBED_DIM) -> None:
        super().__init__()
        from transformers import BertConfig

        text_cfg = BertConfig(**(BERT_BASE_UNCASED if text is None else text))
        self.audio_encoder = _AudioEncoder(audio)
        self.text_encoder = _TextEncoder(text_cfg)
        self.audio_proj = projection(audio.num_features, dim)
        self.text_proj = projection(text_cfg.hidden_size, dim)
        self.temp = nn.Parameter(torch.tensor(0.07))

    def encode_audio(self, waveform: torch.Tensor) -> torch.Tensor:
        """32 kHz waveforms [B, samples] → unit [B, dim]."""
        enc = self.audio_encoder.audio_enc
        return F.normalize(self.audio_proj(enc(enc.audio_feats_extractor(waveform))), dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """BERT token ids and mask → unit [B, dim] ([CLS] state, projected)."""
        hidden = self.text_encoder.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return F.normalize(self.text_proj(hidden[:, 0]), dim=-1)


def text_preprocess(sentence: str) -> str:
    """The official caption normalisation: lower case, no space before punctuation, punctuation → space."""
    sentence = re.sub(r'\s([,.!?;:"](?:\s|$))', r"\1", sentence.lower()).replace("  ", " ")
    return re.sub(r'[(,.!?;:|*")]', " ", sentence).replace("  ", " ")


def zero_padded_clip(audio: Audio, cfg: HTSATConfig) -> np.ndarray:
    """Resampled as the official scripts' `librosa.load(path, sr=32000)`, the first `clip_samples`
    kept, shorter clips zero-padded."""
    wave = librosa_resample(audio, cfg.sample_rate)[:cfg.clip_samples]
    return np.pad(wave, (0, cfg.clip_samples - len(wave))).astype(np.float32)


def wavcaps_expert(checkpoint: str | Path, tokenizer: str | Path | None, *, audio: HTSATConfig = WAVCAPS_HTSAT,
                   text: dict[str, Any] | None = None, name: str = "wavcaps", preprocess_text: bool = False,
                   device: str = "cpu", batch_size: int = 16) -> Expert:
    """A WavCaps HTSAT-BERT expert from an official `.pt` file and a local bert-base-uncased
    tokenizer directory (vocab.txt); `preprocess_text` normalises texts as training captions."""
    from transformers import BertConfig, BertTokenizer

    path = Path(checkpoint)
    vocab_size = BertConfig(**(BERT_BASE_UNCASED if text is None else text)).vocab_size
    # Files written under transformers < 4.31 hold the BERT position_ids buffer; newer ones do not.
    state = load_official_state(path, "model", "HTSAT-BERT-PT.pt (WavCaps)",
                                drop=("text_encoder.text_encoder.embeddings.position_ids",))
    tokenize = checked_tokenizer(BertTokenizer, tokenizer, vocab_size, "bert-base-uncased's vocab.txt")
    model = WavCaps(audio, text)
    load_strict(model, state, path)
    model = model.to(device).eval()

    @torch.no_grad()
    def encode_audio(clips: list[Audio]) -> torch.Tensor:
        waves = torch.from_numpy(np.stack([zero_padded_clip(a, audio) for a in clips])).to(device)
        return model.encode_audio(waves)

    @torch.no_grad()
    def encode_text(texts: list[str]) -> torch.Tensor:
        texts = [text_preprocess(t) for t in texts] if preprocess_text else list(texts)
        batch = tokenize(texts, padding="longest", truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        return model.encode_text(batch["input_ids"].to(device), batch["attention_mask"].to(device))

    kwargs: dict[str, Any] = {"checkpoint": str(path), "tokenizer": str(tokenizer)}
    if preprocess_text:
        kwargs["preprocess_text"] = True
    spec = ExpertSpec(source=name, kwargs=kwargs, checkpoint=str(path), sha256=sha256_file(path))
    return Expert(name, model.audio_proj[-1].out_features, {"audio": encode_audio, "text": encode_text},
                  spec=spec, batch_size=batch_size)


@EXPERTS.register("wavcaps", modalities=("audio", "text"), dim=EMBED_DIM,
                  checkpoint="HTSAT-BERT-PT.pt (or HTSAT-BERT-FT-AudioCaps.pt / HTSAT-BERT-FT-Clotho.pt); "
                             "tokenizer= a directory with bert-base-uncased's vocab.txt",
                  description="WavCaps HTSAT-BERT audio-text retrieval model (32 kHz, 1024-d)")
def wavcaps(checkpoint: str, tokenizer: str | None = None, preprocess_text: bool = False, device: str = "cpu",
            batch_size: int = 16) -> Expert:
    """`spacebind.create_expert("wavcaps", checkpoint="HTSAT-BERT-PT.pt", tokenizer="bert-base-uncased/")`;
    `preprocess_text=True`: normalise texts as the retrieval training captions (the default encodes
    them as given, as the official zero-shot classification does)."""
    return wavcaps_expert(checkpoint, tokenizer, audio=WAVCAPS_HTSAT, text=BERT_BASE_UNCASED,
                          preprocess_text=preprocess_text, device=device, batch_size=batch_size)
