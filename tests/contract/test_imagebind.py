"""ImageBind: a tiny architecture with seeded weights saved as a plain state dict (the format of
`imagebind_huge.pth`), loaded through the registered expert from disk; the full-size key list
against the official definition; the official preprocessing; the Kaldi fbank against NumPy."""
from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_checkpoints import IMAGEBIND_TINY as TINY
from tiny_checkpoints import imagebind_checkpoint

from spacebind.errors import CheckpointError, InputError
from spacebind.experts._imagebind_model import ImageBindModel
from spacebind.experts.imagebind import (
    CLIP_MEAN,
    CLIP_STD,
    FBANK_MEAN,
    FBANK_STD,
    audio_clips,
    clip_bounds,
    image_tensor,
    imu_tensor,
    map_tensor,
)
from spacebind.experts.registry import EXPERTS
from spacebind.io.inputs import Audio
from spacebind.io.kaldi_fbank import fbank, num_frames

DATA = Path(__file__).parent / "data"
@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, ImageBindModel]:
    return imagebind_checkpoint(tmp_path_factory.mktemp("imagebind"))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, list]:
    """Real files for image and audio; arrays for the map and IMU modalities."""
    import soundfile as sf
    from PIL import Image

    root = tmp_path_factory.mktemp("imagebind_inputs")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (180, 240, 3), dtype=np.uint8)).save(root / "a.png")
    t = np.arange(int(22050 * 2.5)) / 22050
    sf.write(root / "a.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 22050)
    return {
        "image": [str(root / "a.png"), rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)],
        "text": ["a dog barking", "a photo of a bird"],
        "audio": [str(root / "a.wav"), (rng.standard_normal(16000 * 3).astype(np.float32) * 0.1, 16000)],
        "depth": [rng.random((96, 128)).astype(np.float32) * 20, rng.random((50, 50)).astype(np.float32)],
        "thermal": [rng.random((120, 160)).astype(np.float32), rng.random((40, 30)).astype(np.float32)],
        "imu": [rng.standard_normal((2400, 6)).astype(np.float32), rng.standard_normal((300, 6)).astype(np.float32)],
    }


# Golden values: the first 4 numbers of each modality's embedding of `inputs[m][0]` by the seeded
# tiny model. Computed once with this implementation after checking it bit for bit against the
# official `ImageBindModel` (same tiny sizes, same weights, all six modalities) in a scratch dir.
GOLDEN = {
    "image": [-0.54287, 0.66844, -0.0629, -0.36215],
    "text": [0.18454, -0.61507, 0.12023, -0.0949],
    "audio": [-0.41923, 0.06096, -0.021, 0.62091],
    "depth": [-0.20464, 0.02162, 0.26852, 0.03981],
    "thermal": [0.57218, 0.53414, 0.14637, 0.37196],
    "imu": [-0.26704, -0.19357, -0.26427, 0.45658],
}


def test_full_size_keys_and_shapes_match_the_official_model() -> None:
    # Fixture: the official imagebind_huge() built on the meta device, state_dict names → shapes.
    with gzip.open(DATA / "imagebind_huge_keys.json.gz", "rt") as f:
        official = json.load(f)
    with torch.device("meta"):
        model = ImageBindModel()
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == official
    assert len(official) == 1311 and official["modality_preprocessors.vision.rgbt_stem.proj.1.weight"] == [1280, 3, 2, 14, 14]
    assert EXPERTS.entry("imagebind_huge").dim == 1024


def test_encodes_every_modality_from_disk(tiny, inputs) -> None:
    path, _ = tiny
    expert = EXPERTS.create("imagebind_huge", checkpoint=str(path), config=TINY.to_json())
    assert expert.modalities == ("text", "image", "audio", "video", "depth", "thermal", "imu") and expert.dim == 8
    assert len(expert.spec.sha256) == 64 and expert.spec.kwargs["config"] == TINY.to_json()
    again = EXPERTS.create("imagebind_huge", checkpoint=str(path), config=TINY.to_json())
    for modality, items in inputs.items():
        out = expert.encode(modality, items)
        assert out.shape == (2, 8), modality
        torch.testing.assert_close(out.norm(dim=-1), torch.ones(2), msg=modality)
        torch.testing.assert_close(again.encode(modality, items), out, rtol=0, atol=0, msg=modality)
        torch.testing.assert_close(expert.encode(modality, items[1:]), out[1:], rtol=0, atol=1e-6, msg=modality)
        torch.testing.assert_close(out[0, :4], torch.tensor(GOLDEN[modality]), rtol=0, atol=1e-4, msg=modality)


def test_audio_embedding_is_the_mean_over_clips(tiny) -> None:
    _, model = tiny
    clips = audio_clips(Audio(np.random.default_rng(1).standard_normal(16000 * 4).astype(np.float32), 16000))
    with torch.no_grad():
        per_clip = model("audio", clips)  # [3, 8]: three single-clip embeddings
        pooled = model("audio", clips.unsqueeze(0))  # [1, 3, 1, 128, 204]: the official clip batch
    torch.testing.assert_close(pooled[0], per_clip.mean(dim=0))


def test_strict_loading_names_bad_keys(tiny, tmp_path: Path) -> None:
    _, model = tiny
    state = model.state_dict()
    create = lambda p: EXPERTS.create("imagebind_huge", checkpoint=str(p), config=TINY.to_json())  # noqa: E731
    missing = {k: v for k, v in state.items() if k != "modality_heads.imu.3.weight"}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"missing keys: modality_heads.imu.3.weight$"):
        create(tmp_path / "missing.pth")
    torch.save({**state, "modality_heads.imu.2.weight": torch.zeros(8, 16)}, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"unexpected keys: modality_heads.imu.2.weight$"):
        create(tmp_path / "extra.pth")
    torch.save({**state, "modality_preprocessors.text.pos_embed": torch.zeros(1, 76, 16)}, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match=r"misshaped keys: modality_preprocessors.text.pos_embed \(1, 76, 16\) \(expected \(1, 77, 16\)\)"):
        create(tmp_path / "shape.pth")
    torch.save({"model": state}, tmp_path / "wrapped.pth")
    with pytest.raises(CheckpointError, match="plain state dict"):
        create(tmp_path / "wrapped.pth")
    with pytest.raises(CheckpointError, match="no checkpoint file at .*imagebind_huge.pth"):
        EXPERTS.create("imagebind_huge", checkpoint=str(tmp_path / "absent" / "imagebind_huge.pth"))


def test_image_preprocessing_uses_clip_constants(tmp_path: Path) -> None:
    colour = np.array([200, 100, 50], dtype=np.uint8)
    x = image_tensor(np.broadcast_to(colour, (300, 500, 3)).copy())
    assert x.shape == (3, 224, 224)
    want = (torch.tensor(colour / 255.0) - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    torch.testing.assert_close(x.mean(dim=(1, 2)), want.float(), atol=1e-5, rtol=0)
    # Short side to 224, then the centre: the middle column of a 448-wide image survives.
    wide = np.zeros((224, 448, 3), dtype=np.uint8)
    wide[:, 220:228] = 255
    assert image_tensor(wide)[0, :, 108:116].min() > 1.5 and image_tensor(wide)[0, :, :100].max() < -1.5


def test_audio_clips_follow_the_official_sampler_and_normalisation(tmp_path: Path) -> None:
    import soundfile as sf

    from spacebind.io.inputs import load_inputs

    # 3 clips of 2 s starting at k · max(duration − 2 s, 0) / 2, k = 0, 1, 2 (pytorchvideo's
    # ConstantClipsPerVideoSampler at ImageBind's pinned commit); 3.3 s checks the float → Fraction
    # truncation (3.3 − 2 is 1.2999999999999998 in floating point).
    assert clip_bounds(16000 * 5) == [(0, 32000), (24000, 56000), (48000, 80000)]
    assert clip_bounds(52800) == [(0, 32000), (10399, 42399), (20799, 52799)]
    assert clip_bounds(8000) == [(0, 32000)] * 3
    sf.write(tmp_path / "a.wav", np.random.default_rng(0).uniform(-0.5, 0.5, 48000 * 3).astype(np.float32), 48000)
    audio = load_inputs("audio", [str(tmp_path / "a.wav")])[0]
    clips = audio_clips(audio)
    assert clips.shape == (3, 1, 128, 204)
    # 2 s at 16 kHz give 198 fbank frames; the last 6 are zero padding before normalisation.
    assert num_frames(32000) == 198
    torch.testing.assert_close(clips[:, :, :, 198:], torch.full((3, 1, 128, 6), -FBANK_MEAN / FBANK_STD))
    wave = torch.tensor(np.random.default_rng(2).standard_normal(16000).astype(np.float32)) + 0.5
    one = audio_clips(Audio(wave.numpy(), 16000))
    want = (fbank(wave - wave.mean(), 16000, num_mel_bins=128).T - FBANK_MEAN) / FBANK_STD
    torch.testing.assert_close(one[0, 0, :, :98], want, atol=1e-5, rtol=0)
    with pytest.raises(InputError, match="shorter than one 25 ms fbank window"):
        audio_clips(Audio(np.zeros(399, dtype=np.float32), 16000))


def test_stereo_files_use_channel_0_centred_by_the_mean_of_all_channels(tmp_path: Path) -> None:
    import soundfile as sf

    from spacebind.io.inputs import load_input

    rng = np.random.default_rng(3)
    t = np.arange(16000 * 3) / 16000  # 3 s: the three clips overlap
    left = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)
    right = 0.2 * rng.standard_normal(t.size) + 0.3  # other content and a DC offset
    sf.write(tmp_path / "stereo.wav", np.stack([left, right], axis=1).astype(np.float32), 16000, subtype="FLOAT")
    audio = load_input("audio", tmp_path / "stereo.wav")
    assert audio.channels is not None and audio.channels.shape == (2, 48000)
    # The official load_and_transform_audio_data: torchaudio.load → [2, T]; per clip, `waveform -= waveform.mean()`
    # in place on the [2, n] view, then kaldi fbank with its default channel=-1, i.e. channel 0.
    waveform = torch.tensor(np.stack([left, right]), dtype=torch.float32)
    want = []
    for start, end in clip_bounds(waveform.shape[1]):
        clip = waveform[:, start:end]
        clip -= clip.mean()
        feats = fbank(clip[0], 16000, num_mel_bins=128).T
        want.append((torch.nn.functional.pad(feats, (0, 204 - feats.shape[1])) - FBANK_MEAN) / FBANK_STD)
    got = audio_clips(audio)
    torch.testing.assert_close(got, torch.stack(want).unsqueeze(1), atol=1e-4, rtol=0)
    mixed = audio_clips(Audio(audio.samples, 16000))  # the channel average: not what the official code encodes
    assert (got - mixed).abs().max() > 0.1


def test_text_tokens_are_clip_bpe() -> None:
    from open_clip.tokenizer import SimpleTokenizer

    ids = SimpleTokenizer(context_length=77)(["A dog.", "word " * 120])
    # Ids checked against the official ImageBind SimpleTokenizer (same BPE file, EOT kept last).
    assert ids[0, :6].tolist() == [49406, 320, 1929, 269, 49407, 0]
    assert ids.shape == (2, 77) and ids[1, -1] == 49407 and ids[1].argmax() == 76


def test_map_and_imu_preprocessing() -> None:
    flat = map_tensor(np.full((100, 300), 7.5, dtype=np.float32))
    assert flat.shape == (1, 224, 224)
    torch.testing.assert_close(flat, torch.full((1, 224, 224), 7.5))
    ramp = map_tensor(np.tile(np.linspace(0, 1, 448, dtype=np.float32), (448, 1)))
    assert ramp.shape == (1, 224, 224) and ramp[0, 0, 0] < 0.01 and ramp[0, 0, -1] > 0.99
    series = np.arange(2500 * 6, dtype=np.float32).reshape(2500, 6)
    torch.testing.assert_close(imu_tensor(series), torch.from_numpy(series[:2000].T.copy()))
    short = imu_tensor(series[:10])
    assert short.shape == (6, 2000) and short[:, 10:].abs().max() == 0 and short[1, 9] == series[9, 1]
    with pytest.raises(InputError, match=r"expected \[T, 6\]"):
        imu_tensor(np.zeros((10, 3), dtype=np.float32))


# --- Kaldi fbank -----------------------------------------------------------------------------


def _reference_fbank(wave: np.ndarray, rate: int = 16000, bins: int = 128) -> np.ndarray:
    """Kaldi fbank frame by frame in float64, from the formulas of Kaldi's feature-window.cc and
    mel-computations.cc (snip edges, DC removal, pre-emphasis 0.97, symmetric Hann, 512-point
    power spectrum, triangular mel filters from 20 Hz to Nyquist, log floored at float eps)."""
    size, shift, nfft = 400, 160, 512
    mel = lambda f: 1127.0 * np.log(1.0 + f / 700.0)  # noqa: E731
    lo, hi = mel(20.0), mel(rate / 2)
    delta = (hi - lo) / (bins + 1)
    banks = np.zeros((bins, nfft // 2 + 1))
    for b in range(bins):
        left, centre, right = lo + b * delta, lo + (b + 1) * delta, lo + (b + 2) * delta
        for k in range(nfft // 2):
            m = mel(k * rate / nfft)
            if left < m <= centre:
                banks[b, k] = (m - left) / (centre - left)
            elif centre < m < right:
                banks[b, k] = (right - m) / (right - centre)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(size) / (size - 1))
    out = []
    for i in range(1 + (len(wave) - size) // shift):
        x = wave[i * shift:i * shift + size].astype(np.float64)
        x = x - x.mean()
        x = x - 0.97 * np.concatenate([x[:1], x[:-1]])
        spectrum = np.abs(np.fft.rfft(np.pad(x * hann, (0, nfft - size)))) ** 2
        out.append(np.log(np.maximum(banks @ spectrum, np.finfo(np.float32).eps)))
    return np.array(out)


def test_fbank_matches_a_numpy_reference() -> None:
    wave = np.random.default_rng(3).standard_normal(16000).astype(np.float32) * 0.2
    got = fbank(torch.from_numpy(wave)).numpy()
    want = _reference_fbank(wave)
    assert got.shape == want.shape == (98, 128)
    np.testing.assert_allclose(got, want, atol=2e-4, rtol=0)


@pytest.mark.parametrize("freq", [440.0, 1000.0, 3000.0])
def test_fbank_peaks_at_a_pure_tone(freq: float) -> None:
    t = np.arange(16000) / 16000
    feats = fbank(torch.from_numpy(np.sin(2 * np.pi * freq * t).astype(np.float32)))
    mel = lambda f: 1127.0 * math.log(1.0 + f / 700.0)  # noqa: E731
    delta = (mel(8000.0) - mel(20.0)) / 129
    centres = [700.0 * (math.exp((mel(20.0) + (b + 1) * delta) / 1127.0) - 1.0) for b in range(128)]
    nearest = int(np.argmin([abs(c - freq) for c in centres]))
    assert int(feats.mean(dim=0).argmax()) == nearest


def test_fbank_frame_count() -> None:
    for n in (400, 401, 559, 560, 16000, 32000, 16000 * 5 + 123):
        assert fbank(torch.zeros(n)).shape == (1 + (n - 400) // 160, 128) and num_frames(n) == 1 + (n - 400) // 160
    assert num_frames(399) == 0
    with pytest.raises(ValueError, match="at least 400 samples"):
        fbank(torch.zeros(399))
    assert fbank(torch.zeros(400)).min() == pytest.approx(math.log(torch.finfo(torch.float32).eps))
