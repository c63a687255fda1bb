"""Export of a fused space's trained part with `torch.export`: one program per modality that maps
the leaf experts' embeddings to the fused embedding (`combine` with the heads and λ baked in, any
batch size), for serving stacks that run the experts themselves. (TorchScript tracing is
deprecated in current torch; `torch.export` programs also feed `torch.onnx.export(dynamo=True)`.)

    OUT/<modality>.pt2  torch.export.save'd program: (*leaf_embeddings [N, d_k]) -> [N, dim], unit-norm;
                        load with `torch.export.load(path).module()`
    OUT/export.json     per modality: the input experts in argument order with their dims, and dim;
                        `dtype`, the one the heads run in (the programs take float32 leaf embeddings,
                        as experts return them, and cast them)
"""
from __future__ import annotations

import io
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from spacebind.bonds.node import BondNode
from spacebind.errors import InputError
from spacebind.io.files import atomic_path, check_output, write_json
from spacebind.space import Space


class CombineModule(nn.Module):
    """`space.combine(modality, …)` as a module whose arguments are the leaf embeddings, in
    `space.leaves_for(modality)` order, each L2-normalised first (as `encode` does; raw expert
    outputs such as ImageBind's scaled text are fine); the heads are registered so `.to(device)`
    moves them."""

    def __init__(self, space: Space, modality: str) -> None:
        super().__init__()
        self.space, self.modality = space, modality
        self.inputs = [leaf.name for leaf in space.leaves_for(modality)]
        heads = [h for node in space.bonds() for h in node.heads.values()] if isinstance(space, BondNode) else []
        self.heads = nn.ModuleList(heads)

    def forward(self, *leaf_embeddings: torch.Tensor) -> torch.Tensor:
        dtype = self.space.dtype  # leaf outputs come in their experts' precision; the heads run in the space's
        fused = self.space.combine(self.modality, {name: F.normalize(x.to(dtype), dim=-1)
                                                   for name, x in zip(self.inputs, leaf_embeddings)})
        return fused.detach()  # a served embedding carries no autograd graph


def export_programs(space: Space, out: str | Path) -> Path:
    """Write one exported program per modality of `space` and `export.json` into `out`."""
    if not isinstance(space, BondNode):
        raise InputError(f"space {space.name!r} has no trained part to export: it is an expert")
    out = check_output(out, directory=True)
    out.mkdir(parents=True, exist_ok=True)
    dims = {leaf.name: leaf.dim for leaf in space.leaves()}
    described = {}
    generator = torch.Generator().manual_seed(0)
    for m in space.modalities:
        module = CombineModule(space, m).eval()
        example = tuple(F.normalize(torch.randn(3, dims[name], generator=generator), dim=-1).to(space.device)
                        for name in module.inputs)
        batch = torch.export.Dim("batch", min=1)
        with torch.no_grad():  # `combine` runs without grad: export it so, not as a grad-mode switch
            program = torch.export.export(module, example, dynamic_shapes=(tuple({0: batch} for _ in example),))
        buffer = io.BytesIO()
        torch.export.save(program, buffer)
        with atomic_path(out / f"{m}.pt2") as tmp:
            tmp.write_bytes(buffer.getvalue())
        described[m] = {"file": f"{m}.pt2", "inputs": [{"expert": n, "dim": dims[n]} for n in module.inputs], "dim": space.dim}
    write_json(out / "export.json", {"format": "torch.export", "space": space.name, "formula": space.formula(),
                                     "dtype": str(space.dtype).removeprefix("torch."),
                                     "modalities": described})
    return out
