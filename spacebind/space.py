"""Spaces: anything that maps inputs of its modalities to unit vectors of one dimension.

A space is a tree whose leaves are experts (frozen encoders) and whose inner nodes are bonds.
`encode` loads the inputs once, runs each leaf expert that covers the modality once, and lets
the tree `combine` the leaf embeddings. Training and evaluation call `combine` on cached leaf
embeddings, so no expert ever re-encodes a dataset.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from spacebind.errors import ExpertError, InputError
from spacebind.modalities import MODALITIES, check_modality

Encoder = Callable[[list[Any]], torch.Tensor]
"""Per-modality encoder: a list of loaded inputs (see `spacebind.io.inputs`) → Tensor[N, dim]."""


class Space:
    """Base of experts and bound spaces. Subclasses set `name`, `modalities`, `dim` and
    implement `leaves` and `combine`."""

    name: str
    modalities: tuple[str, ...]
    dim: int
    device: torch.device = torch.device("cpu")
    """Where `encode` returns embeddings and the heads run (set by `to`)."""
    dtype: torch.dtype = torch.float32
    """The floating type of the heads and of what `encode` returns (set by `to`)."""

    def leaves(self) -> list["Expert"]:
        """The distinct experts this space reads, in a stable order."""
        raise NotImplementedError

    def combine(self, modality: str, leaf_embeddings: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """This space's embedding of `modality` from its leaves' embeddings (keyed by leaf name)."""
        raise NotImplementedError

    def formula(self) -> str:
        """The space in FreeBind notation; an expert is its name."""
        return self.name

    @property
    def blocks(self) -> tuple[int, ...]:
        """Widths of the consecutive parts of every embedding whose norms the space fixes (one part,
        the whole vector, unless a bond appends a channel); class centres keep them."""
        return (self.dim,)

    def leaves_for(self, modality: str) -> list["Expert"]:
        """The leaves that cover `modality`."""
        return [leaf for leaf in self.leaves() if modality in leaf.modalities]

    @torch.no_grad()
    def support(self, modality: str) -> torch.Tensor:
        """bool [dim]: the dimensions `modality`'s embeddings can be nonzero on. A bond's channel
        embeds a modality it does not carry as `[e, 0]`; those zeros are structural, so `combine`
        applied to random leaf embeddings shows them exactly."""
        check_modality(modality, self.modalities, owner=f"space {self.name!r}")
        generator = torch.Generator().manual_seed(0)
        leaves = {leaf.name: torch.nn.functional.normalize(torch.randn(2, leaf.dim, generator=generator), dim=-1)
                  .to(self.device, self.dtype) for leaf in self.leaves_for(modality)}
        return (self.combine(modality, leaves) != 0).any(dim=0).cpu()

    @torch.no_grad()
    def encode(self, modality: str, inputs: Any, batch_size: int | None = None) -> torch.Tensor:
        """Encode raw inputs (paths, arrays, strings) of `modality` → Tensor[N, dim], unit-norm,
        on `self.device` in `self.dtype`."""
        leaves = self.leaf_embeddings(modality, inputs, batch_size)
        return self.combine(modality, {k: v.to(self.device, self.dtype) for k, v in leaves.items()})

    def to(self, device: str | torch.device | torch.dtype | None = None, dtype: torch.dtype | None = None) -> "Space":
        """Move the space in place and return it, like `nn.Module.to`: `to("cuda")`, `to(torch.float64)`,
        `to("cuda", torch.float16)`. The device applies to the heads and the experts (see
        `Expert.move`); the dtype (floating only) to the heads and to what `encode` returns. Experts
        keep their own precision (their `dtype=` argument); their outputs are cast."""
        if isinstance(device, torch.dtype):
            device, dtype = None, device
        if dtype is not None and not dtype.is_floating_point:
            raise InputError(f"Space.to: dtype must be a floating type, got {dtype}")
        place = torch.device(device) if device is not None else None
        for leaf in self.leaves():
            if place is not None:
                leaf.move(place)
        for node in [*getattr(self, "bonds", lambda: [])(), self]:
            for head in getattr(node, "heads", {}).values():
                head.to(place, dtype)
            node.device = place or node.device
            node.dtype = dtype or node.dtype
        return self

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        """Save this space and upload the export to hub repo `repo_id` (`org/name[@revision]`);
        returns the commit URL (see `spacebind.interop.hub.push_space` for the keyword arguments)."""
        from spacebind.interop.hub import push_space

        return push_space(self, repo_id, **kwargs)

    @torch.no_grad()
    def leaf_embeddings(self, modality: str, inputs: Any, batch_size: int | None = None) -> dict[str, torch.Tensor]:
        """Load raw inputs of `modality` once and embed them with every leaf covering it, by leaf name."""
        from spacebind.io.inputs import load_inputs

        check_modality(modality, self.modalities, owner=f"space {self.name!r}")
        loaded = load_inputs(modality, inputs)
        return {e.name: e.embed_loaded(modality, loaded, batch_size) for e in self.leaves_for(modality)}

    def bind(self, expert: "Space", bond: str = "combination", **kwargs: Any) -> "Space":
        """Bind `expert` to this space with a bond (`combination` or `displacement`); trains
        what the bond needs from `data=` (a dataset path or `Dataset`) and returns the bound space."""
        from spacebind.bonds.bind import bind

        return bind(self, expert, bond=bond, **kwargs)

    def save(self, directory: str | Path, **kwargs: Any) -> Path:
        """Write a fused checkpoint directory (see `spacebind.checkpoint.save_space`)."""
        from spacebind.checkpoint import save_space

        return save_space(self, directory, **kwargs)

    @staticmethod
    def from_encoders(name: str, encoders: Mapping[str, Encoder], dim: int, **kwargs: Any) -> "Expert":
        """Wrap user callables or `nn.Module`s, one per modality, into a space usable everywhere
        a registered expert is. Each encoder gets a list of loaded inputs and returns Tensor[N, dim]."""
        return Expert(name=name, dim=dim, encoders=dict(encoders), **kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, modalities={list(self.modalities)}, dim={self.dim})"


@dataclass(frozen=True)
class ExpertSpec:
    """How to rebuild an expert: a registry name or a `module:attribute` import path, its
    keyword arguments, and the checkpoint it read (with sha256) if any."""

    source: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "kwargs": self.kwargs, "checkpoint": self.checkpoint, "sha256": self.sha256}


class Expert(Space):
    """A frozen leaf space: one encoder per modality, outputs L2-normalised."""

    def __init__(
        self,
        name: str,
        dim: int,
        encoders: Mapping[str, Encoder],
        *,
        spec: ExpertSpec | None = None,
        batch_size: int = 64,
    ) -> None:
        for m in encoders:
            check_modality(m, owner=f"expert {name!r}")
        if not encoders:
            raise InputError(f"expert {name!r} needs at least one modality encoder")
        self.name = name
        self.dim = int(dim)
        self.encoders = dict(encoders)
        self.modalities = tuple(m for m in MODALITIES if m in self.encoders)
        self.spec = spec or ExpertSpec(source=f"<in-memory:{name}>")
        self.batch_size = batch_size

    def leaves(self) -> list["Expert"]:
        return [self]

    def combine(self, modality: str, leaf_embeddings: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return leaf_embeddings[self.name]

    def move(self, device: torch.device) -> None:
        """Run this expert on `device`, in place. A registry expert whose factory takes `device=`
        is rebuilt there from its spec (weights read again, the spec kept device-free so exports
        stay portable); otherwise encoders that are `nn.Module`s are moved, and plain callables
        keep running where they were built. Embeddings leave `embed_loaded` on the CPU either way."""
        if device == self.device:
            return
        import inspect

        from spacebind.experts.registry import EXPERTS

        source = self.spec.source
        if source in EXPERTS and "device" in inspect.signature(EXPERTS.entry(source).factory).parameters:
            rebuilt = EXPERTS.create(source, **{**self.spec.kwargs, "device": str(device)})
            self.encoders = rebuilt.encoders
        else:
            for encoder in self.encoders.values():
                if isinstance(encoder, torch.nn.Module):
                    encoder.to(device)
        self.device = device

    def renamed(self, name: str) -> "Expert":
        """The same expert under another name (recipes give experts local names)."""
        return Expert(name, self.dim, self.encoders, spec=self.spec, batch_size=self.batch_size)

    @torch.no_grad()
    def embed_loaded(self, modality: str, loaded: Sequence[Any], batch_size: int | None = None) -> torch.Tensor:
        """Run the encoder of `modality` over already-loaded inputs in batches → unit-norm float32."""
        check_modality(modality, self.modalities, owner=f"expert {self.name!r}")
        encoder = self.encoders[modality]
        if isinstance(encoder, torch.nn.Module):
            encoder.eval()
        size = batch_size or self.batch_size
        outs = []
        for start in range(0, len(loaded), size):
            chunk = list(loaded[start:start + size])
            out = torch.as_tensor(encoder(chunk)).detach().cpu().double()
            if out.shape != (len(chunk), self.dim):
                raise ExpertError(
                    f"expert {self.name!r} {modality} encoder returned shape {tuple(out.shape)}, "
                    f"expected ({len(chunk)}, {self.dim})"
                )
            if not torch.isfinite(out).all():
                bad = (~torch.isfinite(out)).any(dim=1).nonzero().flatten().tolist()
                raise InputError(
                    f"expert {self.name!r} produced NaN/inf embeddings for {modality} inputs "
                    f"at positions {[start + i for i in bad]}"
                )
            # scaled by each row's largest value first: huge or tiny finite rows normalise too
            scale = out.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
            outs.append(F.normalize(out / scale, dim=-1).float())
        if not outs:
            return torch.empty(0, self.dim)
        return torch.cat(outs)
