"""LAION-CLAP and WavCaps experts: tiny architectures with seeded weights, saved in the official
file formats (DDP `module.` prefixes, wrapping dicts with numpy scalars in the optimiser state),
loaded through the registered experts from disk; full-size key lists against the official
definitions; the official preprocessing constants on real WAV files."""
from __future__ import annotations

import argparse
import gzip
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from spacebind.errors import CheckpointError
from spacebind.experts import wavcaps as wavcaps_module
from spacebind.experts._clap_model import (
    CLAP,
    HTSAT_TINY,
    HTSATConfig,
    LogMel,
    PowerSpectrogram,
)
from spacebind.experts.clap import (
    VARIANTS,
    checked_tokenizer,
    clip_waveform,
    fusion_input,
    htk_log_mel,
    quantize_int16,
    repeat_pad,
)
from spacebind.experts.registry import EXPERTS, list_experts
from spacebind.experts.wavcaps import (
    WAVCAPS_HTSAT,
    WavCaps,
    text_preprocess,
    zero_padded_clip,
)
from spacebind.io.inputs import Audio, load_input, resample

DATA = Path(__file__).parent / "data"
TINY_AUDIO = HTSATConfig(embed_dim=8, depths=(2, 2), num_heads=(1, 2), window_size=4, spec_size=64, num_classes=5,
                         sample_rate=8000, n_fft=256, hop_length=80, mel_bins=16, fmin=50.0, fmax=3800.0,
                         clip_samples=16000)
# The official front end (48 kHz, 10 s, 64 mels) on the tiny trunk: for the official loading paths.
TINY_48K = replace(TINY_AUDIO, sample_rate=48000, n_fft=1024, hop_length=480, mel_bins=64, fmax=14000.0,
                   clip_samples=480000, spec_size=256)
TINY_ROBERTA = dict(vocab_size=261, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                    max_position_embeddings=80, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1,
                    bos_token_id=0, eos_token_id=2, initializer_range=0.5)
BERT_WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz",
              *("##" + c for c in "abcdefghijklmnopqrstuvwxyz"), "dog", "cat", "the", "rain"]
TINY_BERT = dict(vocab_size=len(BERT_WORDS), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                 intermediate_size=32, max_position_embeddings=40, initializer_range=0.5)
TEXTS = ["a dog barks", "rain on a tin roof", "the cat"]


# ---- tiny official-format files ----

def _byte_chars() -> list[str]:
    """GPT-2's byte → printable-character table (the base alphabet of byte-level BPE)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    rest = [b for b in range(256) if b not in printable]
    table = dict(zip(printable, printable)) | {b: 256 + i for i, b in enumerate(rest)}
    return [chr(table[b]) for b in range(256)]


def roberta_tokenizer_dir(root: Path) -> Path:
    """vocab.json + merges.txt of a byte-level BPE with no merges: 261 tokens, as TINY_ROBERTA."""
    root.mkdir(parents=True, exist_ok=True)
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, **{c: 4 + i for i, c in enumerate(_byte_chars())}}
    vocab["<mask>"] = len(vocab)
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "merges.txt").write_text("#version: 0.2\n")
    return root


def bert_tokenizer_dir(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "vocab.txt").write_text("\n".join(BERT_WORDS) + "\n")
    return root


def _randomise_norm_stats(model: torch.nn.Module) -> None:
    """Seeded BatchNorm statistics, so bn0 and the fusion branch are not identities."""
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0.0, 0.5)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 2.0)


def write_clap_checkpoint(path: Path, model: CLAP, position_ids: bool = True,
                          state: dict[str, torch.Tensor] | None = None) -> Path:
    """The official layout: {'epoch', 'name', 'state_dict' (DDP `module.` keys), 'optimizer'};
    `state` replaces the model's weights (to write broken files)."""
    state = {f"module.{k}": v for k, v in (model.state_dict() if state is None else state).items()}
    if position_ids:  # written by transformers < 4.31, as the published files
        n = model.text_branch.config.max_position_embeddings
        state["module.text_branch.embeddings.position_ids"] = torch.arange(n)[None]
    torch.save({"epoch": 45, "name": "tiny", "state_dict": state,
                "optimizer": {"state": {}, "param_groups": [{"lr": np.float64(1e-4), "betas": (0.9, 0.99)}]}}, path)
    return path


def tiny_clap(fusion: bool) -> CLAP:
    from transformers import RobertaConfig

    torch.manual_seed(0)
    model = CLAP(replace(TINY_AUDIO, fusion=fusion), RobertaConfig(**TINY_ROBERTA)).eval()
    _randomise_norm_stats(model)
    return model


def tiny_wavcaps() -> WavCaps:
    torch.manual_seed(0)
    model = WavCaps(TINY_AUDIO, TINY_BERT).eval()
    _randomise_norm_stats(model)
    return model


def use_tiny_variant(name: str, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Make the registered CLAP variant `name` tiny (keeping fusion or not); returns its fusion flag."""
    audio, _, file = VARIANTS[name]
    monkeypatch.setitem(VARIANTS, name, (replace(TINY_AUDIO, fusion=audio.fusion), TINY_ROBERTA, file))
    return audio.fusion


def clap_builder(name: str) -> Callable[[Path, pytest.MonkeyPatch], dict[str, Any]]:
    """A tiny_checkpoints.BUILDERS entry: `(root, monkeypatch) → EXPERTS.create kwargs` for a CLAP variant."""

    def build(root: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
        path = write_clap_checkpoint(root / "clap.pt", tiny_clap(use_tiny_variant(name, monkeypatch)))
        return {"checkpoint": str(path), "tokenizer": str(roberta_tokenizer_dir(root / "roberta"))}

    return build


def write_wavcaps_checkpoint(path: Path, state: dict[str, torch.Tensor], position_ids: bool = True) -> Path:
    """The official layout: {'model', 'optimizer', 'config', 'epoch'}, no `module.` prefixes."""
    state = dict(state)
    if position_ids:  # written by transformers < 4.31, as the published files
        state["text_encoder.text_encoder.embeddings.position_ids"] = torch.arange(TINY_BERT["max_position_embeddings"])[None]
    torch.save({"model": state, "optimizer": {"param_groups": [{"lr": np.float64(5e-5)}]},
                "config": {"embed_size": 1024, "audio_args": {"sr": 8000}}, "epoch": 7}, path)
    return path


def wavcaps_builder(root: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The tiny_checkpoints.BUILDERS entry for `wavcaps`."""
    monkeypatch.setattr(wavcaps_module, "WAVCAPS_HTSAT", TINY_AUDIO)
    monkeypatch.setattr(wavcaps_module, "BERT_BASE_UNCASED", TINY_BERT)
    path = write_wavcaps_checkpoint(root / "HTSAT-BERT-PT.pt", tiny_wavcaps().state_dict())
    return {"checkpoint": str(path), "tokenizer": str(bert_tokenizer_dir(root / "bert"))}


def _wavs(root: Path, rate: int, seconds: tuple[float, ...]) -> list[Path]:
    paths = []
    for i, s in enumerate(seconds):
        t = np.arange(int(rate * s)) / rate
        wave = 0.4 * np.sin(2 * np.pi * (300 + 150 * i) * t) + 0.05 * np.random.default_rng(i).normal(size=t.size)
        sf.write(root / f"clip{i}.wav", wave.astype(np.float32), rate, subtype="FLOAT")
        paths.append(root / f"clip{i}.wav")
    return paths


# ---- full-size architectures and registration ----

@pytest.mark.parametrize("fixture, build", [
    ("clap_general_nofusion", lambda: CLAP(VARIANTS["clap_general.nofusion"][0])),
    ("clap_general_fusion", lambda: CLAP(VARIANTS["clap_general.fusion"][0])),
    ("clap_music", lambda: CLAP(VARIANTS["clap_music"][0])),
    ("wavcaps_htsat_bert", lambda: WavCaps()),
])
def test_full_size_keys_equal_the_official_definitions(fixture: str, build: Callable[[], torch.nn.Module]) -> None:
    # Fixtures: the official LAION-CLAP `CLAP` (laion_clap 1.1.7, HTSAT-tiny / -base, roberta, aff_2d) and
    # WavCaps `ASE` (retrieval/settings/inference.yaml) built in a scratch dir, state_dict names and shapes
    # dumped under transformers 5 (so without the position_ids buffer older files also hold).
    with torch.device("meta"):
        model = build()
    want = json.loads(gzip.decompress((DATA / f"{fixture}_keys.json.gz").read_bytes()))
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == want


def test_registered_variants_and_official_constants(tmp_path: Path) -> None:
    assert list_experts("clap*") == ["clap_general.fusion", "clap_general.nofusion", "clap_music"]
    assert all(EXPERTS.entry(n).dim == 512 for n in list_experts("clap*")) and EXPERTS.entry("wavcaps").dim == 1024
    for name, (audio, text, _) in VARIANTS.items():
        assert (audio.sample_rate, audio.n_fft, audio.hop_length, audio.mel_bins, audio.fmin, audio.fmax,
                audio.clip_samples) == (48000, 1024, 480, 64, 50, 14000, 480000), name
        assert text["vocab_size"] == 50265 and text["max_position_embeddings"] == 514
    assert VARIANTS["clap_general.fusion"][0].fusion and not VARIANTS["clap_general.nofusion"][0].fusion
    assert (VARIANTS["clap_music"][0].embed_dim, VARIANTS["clap_music"][0].depths) == (128, (2, 2, 12, 2))
    assert (WAVCAPS_HTSAT.sample_rate, WAVCAPS_HTSAT.hop_length, WAVCAPS_HTSAT.clip_samples, WAVCAPS_HTSAT.fmax) \
        == (32000, 320, 320000, 14000)
    with pytest.raises(CheckpointError, match="no checkpoint file at .*music_audioset_epoch_15_esc_90.14.pt"):
        EXPERTS.create("clap_music", checkpoint=str(tmp_path / "music_audioset_epoch_15_esc_90.14.pt"))
    torch.save({"state_dict": {}}, tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="tokenizer=None: pass a local directory holding roberta-base"):
        EXPERTS.create("clap_general.fusion", checkpoint=str(tmp_path / "empty.pt"))


# ---- preprocessing with the official constants ----

def test_clap_waveform_repeat_pads_and_keeps_the_start(tmp_path: Path) -> None:
    cfg = HTSAT_TINY
    (tmp_path / "cd").mkdir()
    short, long_, other_rate = _wavs(tmp_path, 48000, (1.5, 12.0)) + _wavs(tmp_path / "cd", 44100, (0.5,))
    raw = load_input("audio", short).samples
    wave = clip_waveform(load_input("audio", short), cfg)
    assert wave.shape == (480000,) and raw.shape == (72000,)
    quantised = np.trunc(np.clip(raw, -1, 1) * 32767) / 32767  # the official int16 round trip
    np.testing.assert_allclose(wave[:432000], np.tile(quantised, 6), atol=1e-7)  # 6 whole repeats ...
    assert not wave[432000:].any()  # ... then zeros
    long_wave = clip_waveform(load_input("audio", long_), cfg)
    np.testing.assert_allclose(long_wave, np.trunc(load_input("audio", long_).samples[:480000] * 32767) / 32767, atol=1e-7)
    assert clip_waveform(load_input("audio", other_rate), cfg).shape == (480000,)  # 44.1 kHz resampled to 48 kHz

    spec = PowerSpectrogram(cfg.n_fft, cfg.hop_length)(torch.from_numpy(wave)[None])
    mel = LogMel(cfg.sample_rate, cfg.n_fft, cfg.mel_bins, cfg.fmin, cfg.fmax)(spec)
    assert spec.shape == (1, 1, 1001, 513) and mel.shape == (1, 1, 1001, 64)
    # the conv-DFT front end (torchlibrosa's, in the checkpoints) equals torch.stft with a periodic Hann window
    ref = torch.stft(torch.from_numpy(wave), 1024, 480, window=torch.hann_window(1024), return_complex=True).abs() ** 2
    torch.testing.assert_close(spec[0, 0], ref.T, rtol=1e-3, atol=1e-2)


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


def test_44k1_clips_are_loaded_as_the_official_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    librosa = pytest.importorskip("librosa")
    official = pytest.importorskip("laion_clap.training.data")  # LAION-CLAP's own preprocessing
    from transformers import RobertaConfig

    t = np.arange(5 * 44100) / 44100  # 5.000 s at 44.1 kHz, 16-bit PCM: as every ESC-50 clip
    wave = 0.3 * np.sin(2 * np.pi * 440 * t) * np.sin(2 * np.pi * 0.7 * t) + 0.05 * np.random.default_rng(0).normal(size=t.size)
    sf.write(tmp_path / "esc.wav", wave, 44100, subtype="PCM_16")
    # CLAP_Module.get_audio_embedding_from_filelist, step by step
    y, _ = librosa.load(tmp_path / "esc.wav", sr=48000)
    sample = official.get_audio_features({}, torch.from_numpy(official.int16_to_float32(official.float32_to_int16(y))),
                                         480000, data_truncating="rand_trunc", data_filling="repeatpad", audio_cfg={})
    want_wave = sample["waveform"]
    assert y.shape == (240001,) and not want_wave[240001:].any()  # one repeat, then silence
    ours = clip_waveform(load_input("audio", tmp_path / "esc.wav"), TINY_48K)
    np.testing.assert_allclose(ours, want_wave.numpy(), atol=1e-6, rtol=0)

    torch.manual_seed(0)
    model = CLAP(TINY_48K, RobertaConfig(**TINY_ROBERTA)).eval()
    _randomise_norm_stats(model)
    monkeypatch.setitem(VARIANTS, "clap_general.nofusion", (TINY_48K, TINY_ROBERTA, "630k-audioset-best.pt"))
    expert = EXPERTS.create("clap_general.nofusion", checkpoint=str(write_clap_checkpoint(tmp_path / "c.pt", model)),
                            tokenizer=str(roberta_tokenizer_dir(tmp_path / "tok")))
    got = expert.encode("audio", [tmp_path / "esc.wav"])
    with torch.no_grad():
        want = model.encode_audio(model.audio_branch.log_mel(want_wave[None]))
        # exactly 240,000 samples (polyphase), so two repeats: what the official path does not compute
        exact = repeat_pad(quantize_int16(resample(load_input("audio", tmp_path / "esc.wav"), 48000).samples), 480000)
        other = model.encode_audio(model.audio_branch.log_mel(torch.from_numpy(exact)[None]))
    assert _cos(got, want) >= 0.9999 and _cos(other, want) < 0.9999


def test_fusion_input_global_view_and_three_chunks(tmp_path: Path) -> None:
    cfg = VARIANTS["clap_general.fusion"][0]
    short, long_ = (load_input("audio", p) for p in _wavs(tmp_path, 48000, (4.0, 12.0)))
    mel, longer = fusion_input(short.samples, cfg)
    assert mel.shape == (4, 1001, 64) and not longer and bool((mel == mel[0]).all())
    repeated = np.concatenate([short.samples, short.samples, np.zeros(96000, np.float32)])  # repeatpad
    torch.testing.assert_close(mel[0], htk_log_mel(repeated, cfg))
    mel, longer = fusion_input(long_.samples, cfg)
    full = htk_log_mel(long_.samples, cfg)
    assert longer and mel.shape == (4, 1001, 64) and full.shape == (1201, 64)
    starts = [33, 100, 167]  # middles of the thirds (0–66, 67–133, 134–200) of the possible start frames
    for chunk, start in zip(mel[1:], starts):
        torch.testing.assert_close(chunk, full[start:start + 1001])
    assert torch.equal(fusion_input(long_.samples, cfg)[0], mel)  # deterministic


def test_fusion_global_view_is_resized_without_antialiasing(tmp_path: Path) -> None:
    transforms = pytest.importorskip("torchvision.transforms")
    cfg = VARIANTS["clap_general.fusion"][0]
    (clip,) = (load_input("audio", p) for p in _wavs(tmp_path, 48000, (30.0,)))
    mel, longer = fusion_input(clip.samples, cfg)
    full = htk_log_mel(clip.samples, cfg)
    assert longer and full.shape == (3001, 64)
    # The official get_audio_features squeezes with torchvision.transforms.Resize([1001, 64])(mel[None]); the
    # pinned torchvision 0.13.1 does not antialias tensors, torchvision >= 0.17 does by default.
    torch.testing.assert_close(mel[0], transforms.Resize([1001, 64], antialias=False)(full[None])[0])
    antialiased = transforms.Resize([1001, 64], antialias=True)(full[None])[0]
    assert (mel[0] - antialiased).abs().max() > 1.0  # dB: the two defaults differ on this clip


# ---- tiny LAION-CLAP through the registry, from disk ----

@pytest.fixture(scope="module")
def clap_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("clap")
    model = tiny_clap(fusion=False)
    return {"model": model, "tokenizer": roberta_tokenizer_dir(root / "roberta"),
            "checkpoint": write_clap_checkpoint(root / "630k-audioset-best.pt", model)}


def _create(name: str, monkeypatch: pytest.MonkeyPatch, checkpoint: Path, tokenizer: Path) -> Any:
    use_tiny_variant(name, monkeypatch)
    return EXPERTS.create(name, checkpoint=str(checkpoint), tokenizer=str(tokenizer))


def test_clap_from_disk_matches_the_model(clap_files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expert = _create("clap_general.nofusion", monkeypatch, clap_files["checkpoint"], clap_files["tokenizer"])
    assert expert.dim == 512 and expert.modalities == ("text", "audio") and len(expert.spec.sha256) == 64
    wavs = _wavs(tmp_path, 8000, (0.7, 2.0, 3.1))
    audio, text = expert.encode("audio", wavs), expert.encode("text", TEXTS)
    model = clap_files["model"]
    with torch.no_grad():
        waves = torch.from_numpy(np.stack([clip_waveform(load_input("audio", p), TINY_AUDIO) for p in wavs]))
        want = model.encode_audio(model.audio_branch.log_mel(waves))
    torch.testing.assert_close(audio, want, atol=1e-6, rtol=0)
    assert audio.shape == (3, 512) and text.shape == (3, 512)
    torch.testing.assert_close(torch.cat([audio, text]).norm(dim=-1), torch.ones(6), atol=1e-5, rtol=0)
    assert (text @ text.T).fill_diagonal_(0).max() < 0.9999  # distinct texts, distinct embeddings
    again = _create("clap_general.nofusion", monkeypatch, clap_files["checkpoint"], clap_files["tokenizer"])
    assert torch.equal(again.encode("audio", wavs), audio) and torch.equal(again.encode("text", TEXTS), text)
    # Golden values: this seeded tiny model, computed once after the full-size architecture was checked
    # against the official laion_clap modules (same weights: max |Δ| < 1e-7 for audio, fusion and text).
    torch.testing.assert_close(audio[:, :3], torch.tensor(GOLDEN_CLAP_AUDIO), atol=1e-4, rtol=0)
    torch.testing.assert_close(text[:, :3], torch.tensor(GOLDEN_CLAP_TEXT), atol=1e-4, rtol=0)


@pytest.mark.parametrize("position_ids", [True, False])
def test_checkpoints_with_or_without_position_ids_load(clap_files, position_ids: bool,
                                                       monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write_clap_checkpoint(tmp_path / "c.pt", clap_files["model"], position_ids=position_ids)
    expert = _create("clap_general.nofusion", monkeypatch, path, clap_files["tokenizer"])
    assert expert.encode("text", TEXTS[:1]).shape == (1, 512)


def test_strict_loading_names_missing_and_unexpected_keys(clap_files, monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    state = dict(clap_files["model"].state_dict())
    del state["audio_projection.2.bias"]
    state["audio_branch.extra.weight"] = torch.zeros(1)
    write_clap_checkpoint(tmp_path / "bad.pt", clap_files["model"], state=state)
    with pytest.raises(CheckpointError, match=r"missing keys: audio_projection.2.bias; "
                                              r"unexpected keys: audio_branch.extra.weight"):
        _create("clap_general.nofusion", monkeypatch, tmp_path / "bad.pt", clap_files["tokenizer"])
    with pytest.raises(CheckpointError, match="patch_embed.fusion_model.global_att.1.bias"):  # a non-fusion file, fusion model
        _create("clap_general.fusion", monkeypatch, clap_files["checkpoint"], clap_files["tokenizer"])
    torch.save({"model": {}}, tmp_path / "wrapped.pt")
    with pytest.raises(CheckpointError, match="weights under 'state_dict'; found \\['model'\\]"):
        _create("clap_general.nofusion", monkeypatch, tmp_path / "wrapped.pt", clap_files["tokenizer"])
    torch.save({"state_dict": {}, "args": argparse.Namespace(lr=1e-4)}, tmp_path / "pickled.pt")
    with pytest.raises(CheckpointError, match="weights-only loading does not allow"):  # never unpickled
        _create("clap_general.nofusion", monkeypatch, tmp_path / "pickled.pt", clap_files["tokenizer"])


def test_broken_or_foreign_tokenizers_are_refused(clap_files, monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    from transformers import RobertaTokenizer

    # What an offline RobertaTokenizer.from_pretrained finds without files: 5 special tokens, every text the same ids.
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="tokenizer loaded broken .*vocabulary 5, config says 261.*same"):
        _create("clap_general.nofusion", monkeypatch, clap_files["checkpoint"], tmp_path / "empty")
    with pytest.raises(CheckpointError, match="vocabulary 5, config says 50265"):
        checked_tokenizer(RobertaTokenizer, tmp_path / "empty", 50265, "vocab.json")
    with pytest.raises(CheckpointError, match="has 261 tokens but the text model embeds only 200"):
        checked_tokenizer(RobertaTokenizer, clap_files["tokenizer"], 200, "vocab.json")


def test_fusion_expert_mixes_long_and_short_clips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_clap(fusion=True)
    path = write_clap_checkpoint(tmp_path / "630k-audioset-fusion-best.pt", model)
    expert = _create("clap_general.fusion", monkeypatch, path, roberta_tokenizer_dir(tmp_path / "tok"))
    clips = [load_input("audio", p) for p in _wavs(tmp_path, 8000, (5.0, 1.0, 2.0))]  # longer, shorter, exact
    batch = expert.encode("audio", clips)
    torch.testing.assert_close(batch, torch.cat([expert.encode("audio", [c]) for c in clips]), atol=1e-5, rtol=0)
    mel, longer = fusion_input(clips[0].samples.copy(), replace(TINY_AUDIO, fusion=True))
    with torch.no_grad():  # the local chunks change the long clip's embedding
        assert longer and not torch.allclose(model.encode_audio(mel[None], torch.tensor([True])),
                                             model.encode_audio(mel[None], torch.tensor([False])))
    torch.testing.assert_close(batch[:, :3], torch.tensor(GOLDEN_CLAP_FUSION), atol=1e-4, rtol=0)


# ---- tiny WavCaps ----

def test_wavcaps_from_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expert = EXPERTS.create("wavcaps", **wavcaps_builder(tmp_path, monkeypatch))
    assert expert.dim == 1024 and expert.modalities == ("text", "audio")
    wavs = _wavs(tmp_path, 8000, (0.7, 2.0, 3.1))
    audio, text = expert.encode("audio", wavs), expert.encode("text", TEXTS)
    model = tiny_wavcaps()
    with torch.no_grad():
        waves = torch.from_numpy(np.stack([zero_padded_clip(load_input("audio", p), TINY_AUDIO) for p in wavs]))
        torch.testing.assert_close(audio, model.encode_audio(waves), atol=1e-6, rtol=0)
    clip = zero_padded_clip(Audio(np.ones(4000, np.float32), 8000), TINY_AUDIO)
    assert clip.shape == (16000,) and clip[:4000].all() and not clip[4000:].any()  # zeros, not repeats
    # another rate is resampled as the official scripts' librosa.load(path, sr=...)
    import librosa

    (tmp_path / "other").mkdir()
    (other,) = _wavs(tmp_path / "other", 11025, (1.3,))
    want = librosa.load(other, sr=TINY_AUDIO.sample_rate)[0]
    got = zero_padded_clip(load_input("audio", other), TINY_AUDIO)
    np.testing.assert_allclose(got[:len(want)], want, rtol=0, atol=1e-6)
    assert len(want) < len(got) and not got[len(want):].any()
    torch.testing.assert_close(torch.cat([audio, text]).norm(dim=-1), torch.ones(6), atol=1e-5, rtol=0)
    assert text_preprocess('Rain: heavy , then (a "cat")!') == "rain heavy then a cat  "  # as the official
    torch.testing.assert_close(torch.cat([expert.encode("text", [t]) for t in TEXTS]), text, atol=1e-5, rtol=0)
    torch.testing.assert_close(audio[:, :3], torch.tensor(GOLDEN_WAVCAPS_AUDIO), atol=1e-4, rtol=0)
    torch.testing.assert_close(text[:, :3], torch.tensor(GOLDEN_WAVCAPS_TEXT), atol=1e-4, rtol=0)


def test_wavcaps_text_as_given_by_default_captions_normalised_on_request(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import BertTokenizer

    kwargs = wavcaps_builder(tmp_path, monkeypatch)
    names = ["dog, barking!", "rain (heavy)"]  # punctuation: the two behaviours tokenise differently
    model = tiny_wavcaps()
    tokenizer = BertTokenizer.from_pretrained(kwargs["tokenizer"], local_files_only=True)

    def official(texts: list[str]) -> torch.Tensor:  # ASE.encode_text: the tokenizer on the texts as given
        batch = tokenizer(texts, padding="longest", truncation=True, max_length=30, return_tensors="pt")
        with torch.no_grad():
            return model.encode_text(batch["input_ids"], batch["attention_mask"])

    default = EXPERTS.create("wavcaps", **kwargs)
    captions = EXPERTS.create("wavcaps", **kwargs, preprocess_text=True)
    torch.testing.assert_close(default.encode("text", names), official(names), atol=1e-6, rtol=0)
    torch.testing.assert_close(captions.encode("text", names), official([text_preprocess(n) for n in names]),
                               atol=1e-6, rtol=0)
    assert (default.encode("text", names) * captions.encode("text", names)).sum(-1).max() < 0.9999
    assert captions.spec.kwargs["preprocess_text"] is True and "preprocess_text" not in default.spec.kwargs


def test_wavcaps_strict_keys_and_tokenizer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kwargs = wavcaps_builder(tmp_path, monkeypatch)
    state = dict(tiny_wavcaps().state_dict())
    write_wavcaps_checkpoint(tmp_path / "new.pt", state, position_ids=False)  # as transformers >= 4.31 writes
    assert EXPERTS.create("wavcaps", **{**kwargs, "checkpoint": str(tmp_path / "new.pt")}).dim == 1024
    del state["temp"]
    write_wavcaps_checkpoint(tmp_path / "bad.pt", state)
    with pytest.raises(CheckpointError, match=r"missing keys: temp"):
        EXPERTS.create("wavcaps", **{**kwargs, "checkpoint": str(tmp_path / "bad.pt")})
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="tokenizer loaded broken"):
        EXPERTS.create("wavcaps", **{**kwargs, "tokenizer": str(tmp_path / "empty")})


GOLDEN_CLAP_AUDIO = [
    [-0.014050, -0.052147, 0.020771],
    [-0.009405, -0.036862, 0.068267],
    [-0.014789, -0.065060, 0.026185],
]
GOLDEN_CLAP_TEXT = [
    [0.059987, -0.004289, -0.044635],
    [0.072592, -0.019331, -0.064202],
    [0.055878, -0.003268, -0.044789],
]
GOLDEN_CLAP_FUSION = [
    [0.043421, 0.061932, 0.006786],
    [0.077926, 0.054724, 0.053063],
    [0.052049, 0.033445, 0.076274],
]
GOLDEN_WAVCAPS_AUDIO = [
    [0.012779, 0.000520, 0.004201],
    [0.027858, 0.002947, -0.009258],
    [0.018307, 0.013883, 0.007605],
]
GOLDEN_WAVCAPS_TEXT = [
    [-0.028932, 0.018657, -0.037426],
    [-0.027108, -0.005494, -0.043761],
    [-0.033996, 0.017419, -0.039413],
]


def test_official_files_written_by_numpy_1_load_under_any_numpy() -> None:
    """Official CLAP files pickle a numpy-1 scalar (`numpy.core.multiarray.scalar`) beside the
    weights; numpy 2 renamed the module to `numpy._core`, and weights-only loading must allow both
    spellings of that one global (the fixture was written with numpy 1.26)."""
    from spacebind.experts._checkpoint_io import read_checkpoint
    from spacebind.experts.clap import _SAFE_GLOBALS

    fixture = Path(__file__).parent / "data" / "numpy1_scalar_checkpoint.pt"
    state = read_checkpoint(fixture, "state_dict", "a CLAP checkpoint", _SAFE_GLOBALS)
    torch.testing.assert_close(state["w"], torch.arange(3.0))
