"""UniBind on a space: knowledge-base class centres per modality, optional projectors aligning
each modality to its centres, and zero-shot classification with retrieval-augmented voting.

Two scorings: `centres` (spacebind's: one centre per class, `centres_from`) and `descriptions` (the
official code's: each class's description rows kept apart, a class scored by its best row). Two
aligning heads: `mlp` (spacebind's: trained against the centres) and `linear` (the official code's:
an `nn.Linear` trained by InfoNCE of each item against its own description).

Saved as a directory: `unibind.safetensors` (centres or description rows, heads, description
embeddings) and `unibind.json` (class names, settings, scoring, head configs); the space itself is
referenced, not copied. A directory written before `scoring` was recorded loads as `centres`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Sequence

import torch
from pydantic import BaseModel, Field, StringConstraints, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from spacebind.bonds.heads import head_from_config
from spacebind.errors import CheckpointError, InputError
from spacebind.evaluation.evaluate import labelled_items
from spacebind.evaluation.metrics import on_support
from spacebind.evaluation.zeroshot import prompt_classes, split_features
from spacebind.io.files import atomic_path, write_json
from spacebind.unibind.centres import (
    align_to_centres,
    as_linear_map,
    centres_from,
    class_means,
    description_rows,
    knowledge_embeddings,
    knowledge_votes,
    own_descriptions,
    predict,
    top1_scores,
    train_linear_head,
)
from spacebind.unibind.knowledge import KnowledgeBase

if TYPE_CHECKING:
    from spacebind.cache import CacheSet
    from spacebind.io.datasets import Dataset
    from spacebind.space import Space

FORMAT = "spacebind-unibind-1"
SCORINGS = ("centres", "descriptions")
HEAD_KINDS = ("mlp", "linear")


@dataclass
class UniBind:
    """Class centres (and aligned heads) for the classes `names` of one space.

    With `scoring="centres"`, `centres[m]` holds one row per class [C, d]; with
    `scoring="descriptions"` it holds description rows [R, d], row r of class `centre_owners[m][r]`,
    and a class scores the best cosine among its rows (`top1_scores`, the official zero-shot)."""

    space: "Space"
    names: list[str]
    centres: dict[str, torch.Tensor]
    descriptions: torch.Tensor
    owners: torch.Tensor
    heads: dict[str, nn.Module] = field(default_factory=dict)
    vote_weight: float = 0.0
    k: int = 10
    scoring: str = "centres"
    centre_owners: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.scoring not in SCORINGS:
            raise InputError(f"UniBind scoring {self.scoring!r}: expected one of {', '.join(SCORINGS)}")
        if self.scoring == "descriptions" and set(self.centre_owners) != set(self.centres):
            raise InputError(f"UniBind scoring 'descriptions' needs the class of every row: owners for "
                             f"{sorted(self.centre_owners)}, rows for {sorted(self.centres)}")

    @property
    def head(self) -> str | None:
        """The kind of aligning head (`mlp` or `linear`), None without heads."""
        kinds = {h.config["type"] for h in self.heads.values()}
        return None if not kinds else kinds.pop() if len(kinds) == 1 else ",".join(sorted(kinds))

    def scores(self, modality: str, feats: torch.Tensor, vote_weight: float | None = None) -> torch.Tensor:
        """Class scores [N, C] of `modality` embeddings of the space (aligned first if a head exists)."""
        if modality not in self.centres:
            raise InputError(f"UniBind has centres for {', '.join(self.centres)}, not {modality!r}")
        weight = self.vote_weight if vote_weight is None else vote_weight
        feats = feats.float().cpu()  # centres, descriptions and heads are float32 on the CPU, whatever the space's dtype
        votes = None
        if weight:  # descriptions on the dimensions this modality uses, as its centres
            descriptions = on_support(self.descriptions, self.space.support(modality))
            votes = knowledge_votes(feats, descriptions, self.owners, len(self.names), self.k)
        with torch.no_grad():
            aligned = self.heads[modality](feats) if modality in self.heads else feats
        if self.scoring == "descriptions":
            scores = top1_scores(aligned, self.centres[modality], self.centre_owners[modality], len(self.names))
            return scores if votes is None else scores + weight * votes
        return predict(aligned, self.centres[modality], votes, weight)

    def classify(self, modality: str, inputs: Any) -> list[str]:
        """Class names of raw inputs (paths, arrays) encoded by the space."""
        return [self.names[i] for i in self.scores(modality, self.space.encode(modality, inputs)).argmax(1).tolist()]

    def save(self, directory: str | Path) -> Path:
        """Write `unibind.safetensors` and `unibind.json` into `directory`."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {"descriptions": self.descriptions, "owners": self.owners}
        tensors.update({f"centres.{m}": c for m, c in self.centres.items()})
        if self.scoring == "descriptions":
            tensors.update({f"centre_owners.{m}": o for m, o in self.centre_owners.items()})
        for m, head in self.heads.items():
            tensors.update({f"heads.{m}.{k}": v for k, v in head.state_dict().items()})
        with atomic_path(out / "unibind.safetensors") as tmp:
            save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, str(tmp))  # no shared memory
        write_json(out / "unibind.json", {
            "format": FORMAT, "space": self.space.name, "names": self.names, "modalities": list(self.centres),
            "heads": {m: h.config for m, h in self.heads.items()}, "vote_weight": self.vote_weight, "k": self.k,
            "scoring": self.scoring, "head": self.head,
        })
        return out

    @classmethod
    def load(cls, directory: str | Path, space: "Space | None" = None) -> "UniBind":
        """Read a saved UniBind for `space` (strict: every tensor used, none missing); without
        `space`, the fused checkpoint in the same directory (a fuse export holds both).

        Raises:
            CheckpointError: not a UniBind directory, another space, or missing/unexpected tensors.
        """
        root = Path(directory)
        meta_path = root / "unibind.json"
        if not meta_path.is_file():
            raise CheckpointError(f"{root} is not a UniBind directory: no unibind.json")
        if (root / "config.json").is_file():  # beside a fused export: only as a file of that export
            from spacebind.checkpoint import read_config

            recorded = read_config(root).get("files_sha256") or {}
            if not {"unibind.json", "unibind.safetensors"} <= set(recorded):
                raise CheckpointError(f"{meta_path} is not part of the export {root / 'config.json'} records "
                                      "(left from another export, or put there by hand); export the space again")
        meta = _read_meta(meta_path)
        if space is None:
            from spacebind.checkpoint import load as load_space

            space = load_space(root)
        if meta.get("format") != FORMAT or meta.get("space") != space.name:
            raise CheckpointError(f"{meta_path}: format {meta.get('format')!r} for space {meta.get('space')!r}; "
                                  f"expected {FORMAT} for {space.name!r}")
        try:
            tensors = load_file(str(root / "unibind.safetensors"))
        except (OSError, SafetensorError) as exc:
            raise CheckpointError(f"{root / 'unibind.safetensors'}: not readable ({exc})") from None
        scoring = meta["scoring"]
        used = {"descriptions", "owners", *(f"centres.{m}" for m in meta["modalities"])}
        if scoring == "descriptions":
            used.update(f"centre_owners.{m}" for m in meta["modalities"])
        heads = {}
        for m, config in meta["heads"].items():
            head = head_from_config(config)
            keys = {k: f"heads.{m}.{k}" for k in head.state_dict()}
            missing = sorted(v for v in keys.values() if v not in tensors)
            if missing:
                raise CheckpointError(f"{root / 'unibind.safetensors'} lacks {missing}")
            head.load_state_dict({k: tensors[v] for k, v in keys.items()}, strict=True)
            heads[m] = head.eval()
            used.update(keys.values())
        extra, absent = sorted(set(tensors) - used), sorted(used - set(tensors))
        if extra or absent:
            raise CheckpointError(f"{root / 'unibind.safetensors'}: unexpected {extra}, missing {absent}")
        _check_shapes(root / "unibind.safetensors", tensors, meta, space.dim)
        row_owners = {m: tensors[f"centre_owners.{m}"] for m in meta["modalities"]} if scoring == "descriptions" else {}
        model = cls(space, list(meta["names"]), {m: tensors[f"centres.{m}"] for m in meta["modalities"]},
                    tensors["descriptions"], tensors["owners"], heads, float(meta["vote_weight"]), int(meta["k"]),
                    scoring, row_owners)
        if "head" in meta["recorded"] and meta["head"] != model.head:
            raise CheckpointError(f"{meta_path}: field head: {meta['head']!r}, but the heads it lists are "
                                  f"{model.head!r}")
        return model


class _Meta(BaseModel):
    """What `unibind.json` must hold."""

    format: str
    space: str
    names: list[Annotated[str, StringConstraints(min_length=1)]] = Field(min_length=1)
    modalities: list[str]
    heads: dict[str, dict[str, Any]]
    vote_weight: float = Field(allow_inf_nan=False)
    k: int = Field(ge=1)
    scoring: Literal["centres", "descriptions"] = "centres"  # absent: written before the official mode
    head: str | None = None


def _read_meta(path: Path) -> dict[str, Any]:
    """`unibind.json` checked field by field (a CheckpointError names the file and the field)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    try:
        return {**_Meta.model_validate(raw).model_dump(), "recorded": set(raw) if isinstance(raw, dict) else set()}
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise CheckpointError(f"{path}: field {field}: {first['msg'].lower()}") from None


def _check_shapes(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any], dim: int) -> None:
    """Centres [classes, dim] per modality, descriptions [n, dim] owned by classes (`owners`, [n])."""
    classes, descriptions, owners = len(meta["names"]), tensors["descriptions"], tensors["owners"]
    for m in meta["modalities"]:
        if meta["scoring"] == "descriptions":
            rows, row_owners = tensors[f"centres.{m}"], tensors[f"centre_owners.{m}"]
            if rows.ndim != 2 or rows.shape[1] != dim or row_owners.shape != (len(rows),) or \
                    row_owners.dtype != torch.long or not bool(((row_owners >= 0) & (row_owners < classes)).all()):
                raise CheckpointError(f"{path}: {m} description rows {tuple(rows.shape)} and their classes "
                                      f"{tuple(row_owners.shape)} ({row_owners.dtype}); expected [R, {dim}] and [R] "
                                      f"int64 class indices in [0, {classes})")
            continue
        if tuple(tensors[f"centres.{m}"].shape) != (classes, dim):
            raise CheckpointError(f"{path}: {m} centres of shape {tuple(tensors[f'centres.{m}'].shape)}; expected "
                                  f"({classes}, {dim}): one per class named in unibind.json, of the space's dim")
    if descriptions.ndim != 2 or (len(descriptions) and descriptions.shape[1] != dim) or \
            owners.shape != (len(descriptions),) or owners.dtype != torch.long:
        raise CheckpointError(f"{path}: descriptions {tuple(descriptions.shape)} and owners {tuple(owners.shape)} "
                              f"({owners.dtype}); expected [n, {dim}] and [n] int64")
    if len(owners) and not bool(((owners >= 0) & (owners < classes)).all()):
        raise CheckpointError(f"{path}: owners must be class indices in [0, {classes})")


def load_export(fused: str | Path, trust_remote_code: bool = False) -> tuple["Space", UniBind | None]:
    """A fused checkpoint (a directory or hub id, see `spacebind.checkpoint.load`) and the UniBind
    its export holds beside the space, or None."""
    from spacebind.checkpoint import load
    from spacebind.interop.hub import checkpoint_directory

    root = checkpoint_directory(fused)  # a hub id's snapshot, so UniBind's files are found beside the export
    space = load(root, trust_remote_code=trust_remote_code)
    return space, UniBind.load(root, space) if (root / "unibind.json").is_file() else None


def fit_unibind(space: "Space", caches: "CacheSet", dataset: "Dataset", kb: KnowledgeBase, *,
                modalities: Sequence[str] | None = None, n: int = 8, mix: float = 0.5, align: bool = True,
                vote_weight: float = 0.0, k: int = 10, epochs: int | None = None, seed: int = 0,
                scoring: Literal["centres", "descriptions"] = "centres", head: Literal["mlp", "linear"] = "mlp",
                ) -> UniBind:
    """Centres for every labelled non-text modality of `space` from the train split (and, with
    `align`, a head per modality), the knowledge base embedded for voting.

    `scoring`: `centres` keeps one centre per class (`n` nearest descriptions averaged, mixed `mix`
    with the prompt); `descriptions` keeps each class's `n` nearest descriptions apart and scores a
    class by its best one (the official code). `head`: `mlp` is trained against the centres (`epochs`
    default 20); `linear` is the official `nn.Linear` trained by InfoNCE against each item's own
    description (`epochs` default 15, the official fine-tune)."""
    if "text" not in space.modalities:
        raise InputError(f"UniBind embeds descriptions as text; space {space.name!r} has no text")
    if scoring not in SCORINGS or head not in HEAD_KINDS:
        raise InputError(f"UniBind: scoring {scoring!r} and head {head!r}; expected scoring one of "
                         f"{', '.join(SCORINGS)} and head one of {', '.join(HEAD_KINDS)}")
    names = dataset.class_names
    prompts = prompt_classes(space, names, dataset.templates).float().cpu()
    wanted = modalities or [m for m in space.modalities if m != "text" and m in dataset.modalities()]
    descs = knowledge_embeddings(space, kb, names)  # encoded once, for every modality
    centres, row_owners, heads = {}, {}, {}
    for m in wanted:
        ids, labels = labelled_items(dataset, "train", m, lambda found: caches.usable_ids(space, m, found))
        feats = caches.embeddings(space, m, ids).float().cpu()
        means = class_means(feats, labels, len(names), names, f"among the {m} items of the train split of {dataset.root}")
        support = space.support(m)  # an aligned head learns targets where m lives
        if scoring == "centres" or (align and head == "mlp"):
            centres[m] = on_support(centres_from(prompts, descs, means, n, mix, space.blocks), support)
        if align and head == "mlp":
            heads[m] = align_to_centres(feats, labels, centres[m], epochs=20 if epochs is None else epochs, seed=seed)
        elif align:
            targets = own_descriptions(space, caches, dataset, descs, ids, feats, labels)
            linear = train_linear_head(feats, on_support(targets, support), epochs=15 if epochs is None else epochs,
                                       seed=seed)
            heads[m] = as_linear_map(linear)
        if scoring == "descriptions":
            rows, row_owners[m] = description_rows(descs, means, n)
            centres[m] = on_support(rows, support)  # an aligned head learns targets where m lives
    owners = torch.cat([torch.full((len(d),), i, dtype=torch.long) for i, d in enumerate(descs)])
    return UniBind(space, list(names), centres, torch.cat(descs), owners, heads, vote_weight, k, scoring, row_owners)


def evaluate_unibind(model: UniBind, caches: "CacheSet", dataset: "Dataset", split: str) -> list[dict[str, Any]]:
    """Zero-shot records (CLIP_benchmark shape) of the centres, one per modality, model
    `<space> (centres)`."""
    from spacebind.evaluation.metrics import zeroshot_classification

    records = []
    for m in model.centres:
        feats, labels = split_features(model.space, caches, dataset, split, m)
        if len(labels) == 0:
            continue
        labels = _centre_indices(model, [dataset.class_names[i] for i in labels.tolist()], f"{dataset.root} {split}")
        scores = model.scores(m, feats)
        # nearest-class metrics on the scores: classify rows of the score matrix against the identity
        metrics = {**zeroshot_classification(scores, labels, torch.eye(len(model.names))), "n": len(labels)}
        records.append({"model": f"{model.space.name} (centres)", "role": "fused", "dataset": f"{dataset.name}-{split}",
                        "task": "zeroshot_classification", "modalities": [m, "text"], "metrics": metrics})
    return records


def _centre_indices(model: UniBind, labels: list[str], where: str) -> torch.Tensor:
    """Each label's row among the model's centres (its own class order, which a dataset's need not share).

    Raises:
        InputError: a label without a centre, naming it and the classes the model has.
    """
    index = {name: i for i, name in enumerate(model.names)}
    missing = sorted({c for c in labels if c not in index})
    if missing:
        raise InputError(f"{where}: class(es) {missing[:5]} have no UniBind centre; its classes: "
                         f"{', '.join(model.names[:10])}{' …' if len(model.names) > 10 else ''}")
    return torch.tensor([index[c] for c in labels], dtype=torch.long)


def recipe_knowledge(knowledge: str, generator: Path | None, dataset: "Dataset", base_dir: Path) -> KnowledgeBase:
    """The knowledge base a recipe names: generated by a local model, the world's, or a file.

    Raises:
        InputError: 'world' for a dataset that is not a procedural world, or a missing file.
    """
    from spacebind.unibind.knowledge import generate_knowledge, load_knowledge, require_classes, world_knowledge

    if generator is not None:
        kb = generate_knowledge(generator if generator.is_absolute() else base_dir / generator, dataset.class_names)
    elif knowledge == "world":
        meta = json.loads((dataset.root / "classes.json").read_text(encoding="utf-8")).get("world")
        if not meta:
            raise InputError(f"unibind.knowledge: 'world' needs a procedural-world dataset; {dataset.root} is not one")
        kb = world_knowledge(meta["concepts_seed"], meta["num_concepts"])
    else:
        path = Path(knowledge)
        kb = load_knowledge(path if path.is_absolute() else base_dir / path)
    require_classes(kb, dataset.class_names, "unibind.knowledge")
    return kb
