"""ImageBind (`imagebind_huge`): text, image, video, audio, depth, thermal and IMU in one 1024-d space.

Weights: the official plain state dict `imagebind_huge.pth`, loaded with
`torch.load(weights_only=True)` into our own architecture (`imagebind_model`) with strict key and
shape checks. Outputs are L2-normalised (the official postprocessors multiply text, audio, depth,
thermal and IMU by logit scales).

Preprocessing, as the official `imagebind/data.py` does:
- image: resize the short side to 224 (PIL bicubic), centre crop 224, CLIP mean/std; the vision
  trunk repeats the image into a 2-frame video.
- video (the vision tower): 5 clips of 2 s spread over the video, 2 frames each, short side 224
  (bilinear), CLIP mean/std, 3 spatial crops: 15 clips whose embeddings are averaged (see
  `video_clips`). The official code decodes with decord; ours takes decoded frames and fps.
- text: CLIP BPE, 77 tokens, end-of-text kept at the end when truncating (open_clip's
  `SimpleTokenizer` ships the same vocabulary file and gives identical ids).
- audio: at 16 kHz; three 2 s clips starting at 0, m/2 and m with m = max(duration − 2 s, 0)
  (pytorchvideo's ConstantClipsPerVideoSampler at the commit ImageBind pins; older releases
  divided by 3, not 2); each clip minus its mean over all channels (in place, so overlapping clips
  cascade), Kaldi fbank of channel 0 only (`torchaudio.load` keeps a file's channels and the fbank
  reads the first; mono sources are their own channel 0) (128 bins,
  25 ms / 10 ms, hanning, no dither), zero-padded or cut to 204 frames, (x + 4.268) / 9.138; the
  embedding is the mean of the clips' embeddings. One difference: resampling to 16 kHz uses
  spacebind's polyphase filter, not torchaudio's windowed-sinc one.

The official repo ships no depth, thermal or IMU loaders, so these are our documented choices:
- depth: the map is taken as a disparity map, the form ImageBind was trained on (Omnivore's
  disparity = baseline · focal / depth in metres, see ImageBind issues #69 and #134): convert
  metric depth before encoding. Short side resized to 224 (PIL bicubic on the float map), centre
  crop 224, one channel, no further normalisation.
- thermal: values in [0, 1] (a grayscale image / 255, as `ToTensor` gives), resized and cropped
  like depth, one channel.
- imu: [T, 6] (accelerometer xyz, gyroscope xyz) → channels-first [6, 2000] (10 s at Ego4D's
  200 Hz): the first 2000 steps, zero-padded at the end when shorter.
"""
from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from spacebind.errors import InputError
from spacebind.experts._checkpoint_io import load_strict, read_checkpoint
from spacebind.experts._imagebind_model import AUDIO_SHAPE, IMAGE_SIZE, IMU_SHAPE, ImageBindConfig, ImageBindModel
from spacebind.experts.registry import EXPERTS
from spacebind.io.files import sha256_file
from spacebind.io.inputs import Audio, resample
from spacebind.io.kaldi_fbank import fbank, frame_sizes
from spacebind.io.video import Video, uniform_frames
from spacebind.space import Expert, ExpertSpec

NAME = "imagebind_huge"
URL = "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SAMPLE_RATE, CLIP_SECONDS, CLIPS = 16000, 2, 3
VIDEO_CLIPS, VIDEO_CLIP_SECONDS, VIDEO_FRAMES = 5, 2, 2  # official: 5 clips of 2 s, 2 frames each
FBANK_MEAN, FBANK_STD = -4.268, 9.138
# Our modality names → the official model's.
TOWERS = {"text": "text", "image": "vision", "audio": "audio", "video": "vision", "depth": "depth",
          "thermal": "thermal", "imu": "imu"}


def clip_times(duration: float, seconds: int, clips: int) -> list[tuple[Fraction, Fraction]]:
    """Start and end times of `clips` clips of `seconds` spread evenly over `duration` (exact
    rational arithmetic, as pytorchvideo's ConstantClipsPerVideoSampler)."""
    step = Fraction(max(duration - seconds, 0)) / max(clips - 1, 1)
    return [(step * i, step * i + seconds) for i in range(clips)]


def clip_bounds(num_samples: int, rate: int = SAMPLE_RATE) -> list[tuple[int, int]]:
    """Sample ranges of the official audio clips."""
    return [(int(start * rate), int(end * rate)) for start, end in clip_times(num_samples / rate, CLIP_SECONDS, CLIPS)]


def audio_clips(audio: Audio) -> torch.Tensor:
    """A waveform → normalised fbank clips [3, 1, 128, 204] (of channel 0 for multichannel sources)."""
    mix = torch.tensor(resample(audio, SAMPLE_RATE).samples, dtype=torch.float32)
    wave = mix if audio.channels is None else \
        torch.tensor(resample(Audio(audio.channels[0], audio.sample_rate), SAMPLE_RATE).samples, dtype=torch.float32)
    window = frame_sizes(SAMPLE_RATE, 25.0, 10.0)[0]
    if wave.numel() < window:
        raise InputError(f"audio of {wave.numel()} samples at {SAMPLE_RATE} Hz is shorter than one 25 ms fbank "
                         f"window ({window} samples)")
    bins, frames = AUDIO_SHAPE
    clips = []
    for start, end in clip_bounds(wave.numel()):
        clip = wave[start:end]
        # In place on views, as the official code does: a later overlapping clip starts from
        # samples an earlier clip already centred. The mean is over all channels (that of the mix).
        centre = mix[start:end].mean()
        clip -= centre
        if audio.channels is not None:
            mix[start:end] -= centre
        feats = fbank(clip, SAMPLE_RATE, num_mel_bins=bins).T
        clips.append(F.pad(feats, (0, max(0, frames - feats.shape[1])))[:, :frames])
    return ((torch.stack(clips) - FBANK_MEAN) / FBANK_STD).unsqueeze(1)


def _short_side_scale(clip: torch.Tensor, size: int) -> torch.Tensor:
    """pytorchvideo's `short_side_scale`: [C, T, H, W], bilinear, the short side to `size`."""
    h, w = clip.shape[-2:]
    new = (int(math.floor(h / w * size)), size) if w < h else (size, int(math.floor(w / h * size)))
    return F.interpolate(clip, size=new, mode="bilinear", align_corners=False)


def _uniform_crop(clip: torch.Tensor, size: int, index: int) -> torch.Tensor:
    """The official `uniform_crop` of [C, T, H, W]: index 0, 1, 2 = left/top, centre, right/bottom."""
    h, w = clip.shape[-2:]
    y, x = int(math.ceil((h - size) / 2)), int(math.ceil((w - size) / 2))
    if h > w:
        y = {0: 0, 1: y, 2: h - size}[index]
    else:
        x = {0: 0, 1: x, 2: w - size}[index]
    return clip[..., y:y + size, x:x + size]


def video_clips(video: Video) -> torch.Tensor:
    """A video → [15, 3, 2, 224, 224]: 5 clips of 2 s × 3 spatial crops, 2 frames each, CLIP-normalised.

    As the official `load_and_transform_video_data`: clip times from the constant-clips sampler over
    the video's duration (frames / fps), a clip's frames are indices ceil(fps·start) to
    ceil(fps·end) − 1 (decord's `get_clip`), 2 evenly spaced of them kept, /255, short side
    scaled to 224 (bilinear), normalised, then left/centre/right (or top/centre/bottom) 224 crops."""
    mean, std = (torch.tensor(v).view(3, 1, 1, 1) for v in (CLIP_MEAN, CLIP_STD))
    crops = []
    for start, end in clip_times(video.duration, VIDEO_CLIP_SECONDS, VIDEO_CLIPS):
        first = math.ceil(video.fps * start)
        frames = video.frames[first:min(math.ceil(video.fps * end), len(video.frames))]
        if len(frames) == 0:
            raise InputError(f"video of {len(video.frames)} frames at {video.fps} fps has no frame in {float(start)}–{float(end)} s")
        picked = torch.from_numpy(uniform_frames(Video(frames, video.fps), VIDEO_FRAMES).copy())
        clip = _short_side_scale(picked.permute(3, 0, 1, 2).float() / 255.0, IMAGE_SIZE)
        clip = (clip - mean) / std
        crops += [_uniform_crop(clip, IMAGE_SIZE, i) for i in range(3)]
    return torch.stack(crops)


def _resize_crop(image: Any) -> Any:
    from torchvision import transforms

    resize = transforms.Resize(IMAGE_SIZE, interpolation=transforms.InterpolationMode.BICUBIC)
    return transforms.CenterCrop(IMAGE_SIZE)(resize(image))


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] → [3, 224, 224], CLIP-normalised."""
    from PIL import Image
    from torchvision.transforms import functional as TF

    return TF.normalize(TF.to_tensor(_resize_crop(Image.fromarray(image))), CLIP_MEAN, CLIP_STD)


def map_tensor(values: np.ndarray) -> torch.Tensor:
    """A float map [H, W] (disparity, or thermal in [0, 1]) → [1, 224, 224], values kept."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(values, dtype=np.float32))  # PIL mode "F"
    return torch.from_numpy(np.array(_resize_crop(image), dtype=np.float32)).unsqueeze(0)


def imu_tensor(values: np.ndarray) -> torch.Tensor:
    """[T, 6] → [6, 2000]: the first 2000 steps, zero-padded at the end."""
    channels, steps = IMU_SHAPE
    x = torch.as_tensor(np.asarray(values, dtype=np.float32)[:steps]).T
    if x.shape[0] != channels:
        raise InputError(f"imu input of shape {tuple(values.shape)}; expected [T, {channels}]")
    return F.pad(x, (0, steps - x.shape[1]))


def load_model(checkpoint: str | Path, config: ImageBindConfig | None = None) -> ImageBindModel:
    """Build the architecture and load a plain state dict strictly (names and shapes)."""
    path = Path(checkpoint)
    state = read_checkpoint(path, None, f"imagebind_huge.pth ({URL})")
    with torch.device("meta"):
        model = ImageBindModel(config)
    load_strict(model, state, path, assign=True)
    return model.float().eval()


def imagebind_expert(checkpoint: str | Path, *, config: ImageBindConfig | dict | None = None, name: str = NAME,
                     device: str = "cpu", batch_size: int = 16) -> Expert:
    """An expert over all ImageBind modalities (video through the vision tower) from a local state-dict file."""
    from open_clip.tokenizer import SimpleTokenizer

    if isinstance(config, dict):
        config = ImageBindConfig.from_json(config)
    model = load_model(checkpoint, config).to(device)
    tokenizer = SimpleTokenizer(context_length=77)
    prepare: dict[str, Callable[[list[Any]], torch.Tensor]] = {
        "text": tokenizer,
        "image": lambda items: torch.stack([image_tensor(a) for a in items]),
        "audio": lambda items: torch.stack([audio_clips(a) for a in items]),
        "video": lambda items: torch.stack([video_clips(v) for v in items]),
        "depth": lambda items: torch.stack([map_tensor(a) for a in items]),
        "thermal": lambda items: torch.stack([map_tensor(a) for a in items]),
        "imu": lambda items: torch.stack([imu_tensor(a) for a in items]),
    }

    def encoder(modality: str) -> Callable[[list[Any]], torch.Tensor]:
        @torch.no_grad()
        def encode(items: list[Any]) -> torch.Tensor:
            return F.normalize(model(TOWERS[modality], prepare[modality](items).to(device)).float(), dim=-1)

        return encode

    kwargs: dict[str, Any] = {"checkpoint": str(checkpoint)}
    if config is not None and config != ImageBindConfig():
        kwargs["config"] = config.to_json()
    spec = ExpertSpec(source=NAME, kwargs=kwargs, checkpoint=str(checkpoint), sha256=sha256_file(checkpoint))
    return Expert(name, model.config.out_dim, {m: encoder(m) for m in TOWERS}, spec=spec, batch_size=batch_size)


@EXPERTS.register(NAME, modalities=tuple(TOWERS), dim=1024, checkpoint=f"imagebind_huge.pth ({URL})", licence="cc-by-nc-sa-4.0",
                  description="ImageBind huge: text, image, video, audio, depth (disparity), thermal, IMU in one 1024-d space")
def imagebind_huge(checkpoint: str, config: dict | None = None, device: str = "cpu", batch_size: int = 16) -> Expert:
    """`create_expert("imagebind_huge", checkpoint=".../imagebind_huge.pth")`; `config` (tower sizes,
    see `ImageBindConfig`) is for scaled-down test models."""
    return imagebind_expert(checkpoint, config=config, device=device, batch_size=batch_size)
