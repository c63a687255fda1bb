"""LAION-CLAP against its own code: the official `laion_clap.clap_module` model (HTSAT-tiny, its
torchlibrosa front end, a RoBERTa text branch) with random weights, saved in the official checkpoint
layout, loaded through our registered expert; both must embed audio and text alike.

`laion_clap` is a reference, not a dependency: its metadata pins numpy<2, so CI installs it with
`--no-deps` (docs/decisions.md). Its package `__init__` loads three tokenizers from the hub at
import, so only `laion_clap.clap_module` is imported, under an empty parent package."""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from test_clap import roberta_tokenizer_dir, write_clap_checkpoint
from transformers import RobertaTokenizer

from spacebind.experts.clap import VARIANTS
from spacebind.experts.registry import EXPERTS
from spacebind.io.inputs import Audio

# RoBERTa small enough to build fast, but 768 wide: the official text projection is Linear(768, 512).
ROBERTA_768 = {"vocab_size": 261, "hidden_size": 768, "num_hidden_layers": 1, "num_attention_heads": 2,
               "intermediate_size": 64, "max_position_embeddings": 80, "type_vocab_size": 1, "layer_norm_eps": 1e-5,
               "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}
TEXTS = ["a dog barks", "rain on a tin roof", "the cat"]
RATE = 48000


def clap_module() -> types.ModuleType:
    """`laion_clap.clap_module`, without running `laion_clap/__init__.py` (it reaches the hub).
    Skips where laion_clap is not installed; fails where it is installed but does not import."""
    if "laion_clap" not in sys.modules:
        spec = importlib.util.find_spec("laion_clap")
        if spec is None or spec.submodule_search_locations is None:
            pytest.skip("laion_clap is not installed (the README set-up installs it)")
        parent = types.ModuleType("laion_clap")
        parent.__path__ = list(spec.submodule_search_locations)
        sys.modules["laion_clap"] = parent
    return importlib.import_module("laion_clap.clap_module")


def official_clap(laion: types.ModuleType, monkeypatch: pytest.MonkeyPatch) -> torch.nn.Module:
    """`create_model('HTSAT-tiny', 'roberta')` with seeded random weights; the RoBERTa it would
    download is built from ROBERTA_768 instead."""
    from transformers import RobertaConfig, RobertaModel

    monkeypatch.setattr(laion.model.RobertaModel, "from_pretrained",
                        lambda *_, **__: RobertaModel(RobertaConfig(**ROBERTA_768)))
    torch.manual_seed(0)
    model, _ = laion.create_model("HTSAT-tiny", "roberta", enable_fusion=False, device=torch.device("cpu"))
    model.eval()
    with torch.no_grad():  # seeded BatchNorm statistics, so bn0 is not an identity
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0.0, 0.5)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 2.0)
    return model


def official_waveform(x: np.ndarray) -> torch.Tensor:
    """The official non-fusion input: int16 round trip, then `repeatpad` to 10 s."""
    x = (np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16).astype(np.float32) / 32767.0
    wave = torch.from_numpy(x)
    wave = wave.repeat(480000 // len(wave))
    return torch.nn.functional.pad(wave, (0, 480000 - len(wave)))


def synthetic_clips() -> list[np.ndarray]:
    """Chirps plus noise, 2.5 s and 4 s at 48 kHz."""
    clips = []
    for i, seconds in enumerate((2.5, 4.0)):
        t = np.arange(int(RATE * seconds)) / RATE
        tone = 0.4 * np.sin(2 * np.pi * (200 + 400 * i) * t * (1 + t))
        clips.append((tone + 0.05 * np.random.default_rng(i).normal(size=t.size)).astype(np.float32))
    return clips


def cosines(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1).tolist()


def test_official_model_and_file_agree_with_our_expert(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    laion = clap_module()
    model = official_clap(laion, monkeypatch)
    path = write_clap_checkpoint(tmp_path / "630k-audioset-best.pt", model)  # type: ignore[arg-type]
    # The file is what the official loader reads: `load_state_dict` (strips `module.`, drops position_ids).
    model.load_state_dict(laion.factory.load_state_dict(str(path), skip_params=True))

    audio_cfg, _, file = VARIANTS["clap_general.nofusion"]
    monkeypatch.setitem(VARIANTS, "clap_general.nofusion", (audio_cfg, ROBERTA_768, file))
    tokenizer_dir = roberta_tokenizer_dir(tmp_path / "roberta")
    expert = EXPERTS.create("clap_general.nofusion", checkpoint=str(path), tokenizer=str(tokenizer_dir))

    clips = synthetic_clips()
    tokens = RobertaTokenizer.from_pretrained(str(tokenizer_dir))(TEXTS, padding="max_length", truncation=True,
                                                                 max_length=77, return_tensors="pt")
    with torch.no_grad():
        want_audio = model.get_audio_embedding([{"waveform": official_waveform(c)} for c in clips])
        want_text = model.get_text_embedding({"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]})
    audio_cos = cosines(expert.encode("audio", [Audio(c, RATE) for c in clips]), want_audio)
    text_cos = cosines(expert.encode("text", TEXTS), want_text)
    assert min(audio_cos) >= 0.99999 and min(text_cos) >= 0.99999, (audio_cos, text_cos)
