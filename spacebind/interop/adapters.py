"""A fused space where other libraries expect a model: `nn.Module` wrappers with the interfaces
of open_clip (`encode_image`, `encode_text`, a tokenizer and a preprocess transform), of
sentence-transformers (`encode(sentences, …)`) and CLIP_benchmark's model loader.

A space's text experts tokenize internally (each its own way), so here "tokens" are the texts
themselves: `tokenizer(texts)` returns a `TextTokens` (a list of the strings, with a no-op
`.to(device)` so code written for token tensors runs), and `encode_text` accepts it or any list of
strings. `preprocess` turns a PIL image into a uint8 tensor [H, W, 3] (resized to a square of
`image_size` so a DataLoader can stack a batch); each image expert then applies its own transform."""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from spacebind.evaluation.metrics import on_support
from spacebind.space import Space


class TextTokens(list):
    """Texts standing in for token ids: `.to(...)` returns them unchanged."""

    def to(self, *args: Any, **kwargs: Any) -> "TextTokens":
        return self


class SpaceModule(nn.Module):
    """A space as an `nn.Module`: its heads are submodules (`parameters()`, `state_dict()`), `.to`
    moves the whole space (`Space.to`), and it stays in eval mode (inference only)."""

    def __init__(self, space: Space) -> None:
        super().__init__()
        self.space = space
        self.heads = nn.ModuleList(h for node in getattr(space, "bonds", lambda: [])() for h in node.heads.values())
        self.eval()

    def to(self, *args: Any, **kwargs: Any) -> "SpaceModule":
        """`to(device)`, `to(dtype)`, `to(device, dtype)` as on the space (no `non_blocking` or memory format)."""
        self.space.to(*args, **kwargs)
        return self

    def half(self) -> "SpaceModule":
        return self.to(torch.float16)

    def bfloat16(self) -> "SpaceModule":
        return self.to(torch.bfloat16)

    def float(self) -> "SpaceModule":
        return self.to(torch.float32)

    def double(self) -> "SpaceModule":
        return self.to(torch.float64)

    def train(self, mode: bool = True) -> "SpaceModule":
        """Heads stay in eval mode: a fused space is used for inference here."""
        return super().train(False)


class OpenCLIPModel(SpaceModule):
    """open_clip's model interface over a space: `encode_image` encodes `modality` (images by
    default; any non-text modality of the space) and `encode_text` encodes texts."""

    def __init__(self, space: Space, modality: str = "image", image_size: int | None = 224) -> None:
        super().__init__(space)
        self.modality = modality
        self.image_size = image_size

    def tokenizer(self, texts: str | Sequence[str], context_length: int | None = None) -> TextTokens:
        """open_clip's `tokenizer(texts)`: the texts themselves (the space's experts tokenize)."""
        return TextTokens([texts] if isinstance(texts, str) else list(texts))

    def preprocess(self, image: Any) -> torch.Tensor:
        """A PIL image (or array) → uint8 tensor [H, W, 3]; with `image_size`, its shorter side
        resized to it and the centre cropped square (CLIP's own first steps, so a CLIP-style
        expert sees what `space.encode` gives it; squashing would distort non-square images), so
        that a DataLoader can stack a batch."""
        from PIL import Image

        img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
        img = img.convert("RGB")
        if self.image_size:
            size = self.image_size
            scale = size / min(img.size)
            width, height = max(size, round(img.width * scale)), max(size, round(img.height * scale))
            img = img.resize((width, height), Image.Resampling.BICUBIC)
            left, top = (width - size) // 2, (height - size) // 2
            img = img.crop((left, top, left + size, top + size))
        return torch.from_numpy(np.array(img, dtype=np.uint8))

    def encode_image(self, images: torch.Tensor | Iterable[Any], normalize: bool = False) -> torch.Tensor:
        """A batch of `preprocess` outputs (Tensor[B, H, W, 3]) or a list of inputs → Tensor[B, dim]
        on the space's device. Outputs are unit-norm whatever `normalize` says."""
        items = [x.cpu().numpy() if isinstance(x, torch.Tensor) else x for x in images]
        return self.space.encode(self.modality, items)

    def encode_text(self, tokens: Sequence[str], normalize: bool = False) -> torch.Tensor:
        """Texts (a `TextTokens` or list of strings) → Tensor[B, dim], unit-norm, on the dimensions
        `modality` uses (renormalised there): a fused space with a channel embeds images as `[e, 0]`,
        and CLIP_benchmark averages a class's templates over the whole vector, which would weigh each
        class's image-side part by how much its templates agree in the channel."""
        return on_support(self.space.encode("text", list(tokens)), self.space.support(self.modality))

    def forward(self, image: Any, text: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """`(encode_image(image), encode_text(text))`."""
        return self.encode_image(image), self.encode_text(text)


class SentenceEncoder(SpaceModule):
    """sentence-transformers' `encode` over one modality of a space (text by default)."""

    def __init__(self, space: Space, modality: str = "text") -> None:
        super().__init__(space)
        self.modality = modality

    def get_sentence_embedding_dimension(self) -> int:
        return self.space.dim

    def encode(self, sentences: Any, batch_size: int = 32, show_progress_bar: bool = False,
               convert_to_numpy: bool = True, convert_to_tensor: bool = False,
               normalize_embeddings: bool = True) -> np.ndarray | torch.Tensor:
        """Embeddings of `sentences` (one string → one vector, a list → [N, dim]); numpy unless
        `convert_to_tensor` (which wins, as in sentence-transformers) or `convert_to_numpy=False`
        (then a tensor too). Space embeddings are unit-norm, so `normalize_embeddings` changes nothing."""
        single = isinstance(sentences, str)
        items = [sentences] if single else list(sentences)
        starts = range(0, len(items), batch_size)
        if show_progress_bar:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="batches")
        parts = [self.space.encode(self.modality, items[i:i + batch_size], batch_size) for i in starts]
        out = torch.cat(parts) if parts else torch.empty(0, self.space.dim, dtype=self.space.dtype)
        out = out[0] if single else out
        return out.float().cpu().numpy() if convert_to_numpy and not convert_to_tensor else out  # numpy has no bf16


def load_clip_benchmark(model_name: str = "", pretrained: str = "", cache_dir: str | None = None,
                        device: str | torch.device = "cpu", **load_kwargs: Any) -> tuple[OpenCLIPModel, Any, Any]:
    """CLIP_benchmark's model loader contract, `(model, transform, tokenizer)`: `pretrained` is a
    fused checkpoint directory or hub id (`spacebind.load`), `model_name` the modality that
    `encode_image` encodes (empty: image), `cache_dir` the Hugging Face cache for hub ids.
    Register it with `clip_benchmark.models.TYPE2FUNC["spacebind"] = load_clip_benchmark`."""
    from spacebind.checkpoint import load
    from spacebind.interop.hub import checkpoint_directory

    space = load(checkpoint_directory(pretrained, cache_dir=cache_dir), **load_kwargs)
    model = OpenCLIPModel(space, modality=model_name or "image").to(device)
    return model, model.preprocess, model.tokenizer
