"""UniBind and unimodal → multimodal binding on the procedural world, on held-out instance seeds:

1. the world image tower (`world_image`) bound to the real MiniLM by each projector (MLP, least
   squares, Procrustes, relative representations), against the world's image-text expert:
   mean image↔text R@1, and zero-shot acc1 with class names and with held-out synonyms;
2. UniBind on every world expert: plain prompts, training-free centres, centres with voting,
   centres with aligned projectors, and (a control) projectors aligned to the plain prompts;
3. space similarity: candidate (image, text) encoder pairs ranked by mutual k-NN and linear CKA.

Values are means over seeds. Run: python -m benchmarks.unibind [--seeds 11 12]"""
from __future__ import annotations

import argparse
import tempfile
from collections import defaultdict
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from spacebind.bonds.bind import train_bond
from spacebind.cache import ensure_caches
from spacebind.evaluation.evaluate import evaluate_space
from spacebind.evaluation.metrics import zeroshot_classification
from spacebind.evaluation.report import task_scores
from spacebind.evaluation.similarity import parse_encoders, rank_pairs
from spacebind.evaluation.zeroshot import heldout_names, prompt_classes, split_features, zeroshot_with
from spacebind.experts.registry import EXPERTS
from spacebind.io.datasets import Dataset
from spacebind.training.trainer import TrainConfig
from spacebind.unibind.centres import align_to_centres
from spacebind.unibind.knowledge import world_knowledge
from spacebind.unibind.model import UniBind, fit_unibind
from spacebind.world.generate import generate_world

TEMPLATES = ["a photo of a {}", "a {}"]
TRAIN = TrainConfig(epochs=30, batch_size=256, hidden=512)
WORLD_EXPERTS = {"world_unified": ("image", "audio", "point"), "world_image_text": ("image",),
                 "world_audio_text": ("audio",), "world_point_text": ("point",)}
SIMILARITY = ["world_image_text:image", "world_image_text:text", "world_unified:text", "world_audio_text:text",
              "world_point_text:text", "minilm:text"]

Rows = dict[tuple[str, str, str], float]


def _mean_r1(scores: dict[str, float]) -> float:
    return (scores["text→image R@1"] + scores["image→text R@1"]) / 2


def unimodal_rows(dataset: Dataset, cache: Path) -> Rows:
    """Section 1: projector kinds binding world_image to MiniLM, and the image-text expert."""
    text, image = EXPERTS.create("minilm"), EXPERTS.create("world_image", progress=False)
    image_text = EXPERTS.create("world_image_text", progress=False)
    caches = ensure_caches([text, image, image_text], dataset, cache, progress=False)
    held, names = heldout_names(dataset), dataset.class_names
    spaces = {"world_image_text (expert)": image_text}
    for kind in ("mlp", "relative", "linear", "procrustes"):
        spaces[f"MiniLM + c(world_image), {kind}"] = train_bond(text, [image], "combination", caches, dataset,
                                                                 projector=kind, pairing="all", train=TRAIN, progress=False)
    rows: Rows = {}
    for label, space in spaces.items():
        rows["unimodal", label, "image↔text R@1"] = _mean_r1(task_scores(evaluate_space(space, "fused", caches, dataset, "test", [1])))
        for word, classes in (("class names", names), ("held-out synonyms", held)):
            prompts = prompt_classes(space, classes, TEMPLATES)
            rows["unimodal", label, f"zero-shot acc1, {word}"] = zeroshot_with(space, caches, dataset, "test", "image", prompts)["acc1"]
    return rows


def _acc(model: UniBind, feats: torch.Tensor, labels: torch.Tensor, m: str, vote: float = 0.0) -> float:
    return float((model.scores(m, feats, vote).argmax(1) == labels).float().mean())


def unibind_rows(dataset: Dataset, cache: Path) -> Rows:
    """Section 2: zero-shot acc1 with prompts, centres, voting, aligned projectors, per expert and modality."""
    kb = world_knowledge()
    rows: Rows = {}
    for name, modalities in WORLD_EXPERTS.items():
        space = EXPERTS.create(name, progress=False)
        caches = ensure_caches([space], dataset, cache, progress=False)
        prompts = prompt_classes(space, dataset.class_names, dataset.templates)
        free = fit_unibind(space, caches, dataset, kb, align=False)
        aligned = fit_unibind(space, caches, dataset, kb)
        for m in modalities:
            feats, labels = split_features(space, caches, dataset, "test", m)
            train_feats, train_labels = split_features(space, caches, dataset, "train", m)
            control = align_to_centres(train_feats, train_labels, prompts)
            with torch.no_grad():
                control_acc = zeroshot_classification(control(feats), labels, prompts)["acc1"]
            label = f"{name} {m}"
            rows["unibind", label, "plain prompts"] = zeroshot_classification(feats, labels, prompts)["acc1"]
            rows["unibind", label, "centres"] = _acc(free, feats, labels, m)
            rows["unibind", label, "centres + voting 0.5"] = _acc(free, feats, labels, m, 0.5)
            rows["unibind", label, "aligned to centres"] = _acc(aligned, feats, labels, m)
            rows["unibind", label, "aligned to prompts (control)"] = control_acc
    return rows


def _build(name: str):  # noqa: ANN202 - an Expert
    return EXPERTS.create(name, progress=False) if name.startswith("world") else EXPERTS.create(name)


def similarity_rows(dataset: Dataset, cache: Path) -> Rows:
    """Section 3: mutual 10-NN and linear CKA of each (image, text) candidate pair, and its rank."""
    encoders = parse_encoders(SIMILARITY, _build)
    ranked = rank_pairs(encoders, dataset, "test", cache, progress=False)
    rows: Rows = {}
    for rank, r in enumerate(ranked, 1):
        label = f"{r['a']} ~ {r['b']}"
        rows["similarity", label, "mutual 10-NN"] = float(r["mutual_knn"])
        rows["similarity", label, "linear CKA"] = float(r["cka"])
        rows["similarity", label, "rank"] = float(rank)
    return rows


def run_seed(seed: int, root: Path) -> Rows:
    data = root / f"world-{seed}"
    generate_world(data, seed=seed, sizes={"train": 2000, "val": 300, "test": 500}, progress=False)
    dataset, cache = Dataset.load(data), root / f"cache-{seed}"
    return {**unimodal_rows(dataset, cache), **unibind_rows(dataset, cache), **similarity_rows(dataset, cache)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 12])
    args = parser.parse_args()
    torch.set_num_threads(2)
    sums: Rows = defaultdict(float)
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for key, value in run_seed(seed, Path(tmp)).items():
                sums[key] += value / len(args.seeds)
    table = Table("section", "model", "metric", "value (%; rank as is)",
                  title=f"UniBind and unimodal binding on the procedural world, test split, mean over seeds {args.seeds}")
    for (section, model, metric), value in sums.items():
        table.add_row(section, model, metric, f"{value:.1f}" if metric == "rank" else f"{value * 100:.1f}")
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
