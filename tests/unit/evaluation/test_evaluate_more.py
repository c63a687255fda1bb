"""evaluate(): records computed by hand on tiny, deliberately asymmetric data.

- retrieval names: `{b}_retrieval_recall@k` is a-queries retrieving b-entries (text → image is
  `image_retrieval_recall`), checked where the two directions differ;
- `n` counts the pair's items, also when a media file is shared on the query side;
- zero-shot runs only when text is among the evaluated modalities;
- class prompts are grouped class-major (every template of class 0, then class 1, …);
- items whose label is not a class are not classified;
- a space's `blocks` reach the class centres (evaluate_space → evaluate → class_centres).
"""
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from spacebind.evaluation.evaluate import evaluate, evaluate_space, labelled_items
from spacebind.io.datasets import ClassInfo, Dataset, Item


def test_retrieval_metric_names_follow_the_query_direction() -> None:
    items = [Item(f"i{k}", "test", None, {"image": f"img{k}", "text": f"t{k}"}) for k in range(3)]
    data = Dataset.of_items(Path("tiny"), items, [])
    image = torch.eye(3)
    text = torch.tensor([[1.0, 0, 0], [0.9, 0.1, 0], [0, 0, 1.0]])
    embed = lambda m, ids: (image if m == "image" else text)[[int(i[1]) for i in ids]]  # noqa: E731
    (rec,) = evaluate(model="toy", role="fused", dataset=data, split="test", modalities=["image", "text"],
                      embed_items=embed, ks=(1,))
    # text queries → images: t1 finds image 0 first (miss) → 2/3; image queries → texts: all hit → 1
    assert rec["metrics"]["image_retrieval_recall@1"] == pytest.approx(2 / 3)
    assert rec["metrics"]["text_retrieval_recall@1"] == 1.0


def test_n_counts_items_when_the_query_side_shares_a_media_file() -> None:
    # image (before audio in MODALITIES) is the query side; items 0 and 1 share an image file
    items = [Item("i0", "test", None, {"image": "img0", "audio": "a0"}),
             Item("i1", "test", None, {"image": "img0", "audio": "a1"}),
             Item("i2", "test", None, {"image": "img2", "audio": "a2"})]
    data = Dataset.of_items(Path("tiny"), items, [])
    vec = {"i0": [1.0, 0], "i1": [1.0, 0], "i2": [0, 1.0]}
    embed = lambda m, ids: torch.tensor([vec[i] for i in ids])  # noqa: E731
    (rec,) = evaluate(model="toy", role="fused", dataset=data, split="test", modalities=["image", "audio"],
                      embed_items=embed, ks=(1,))
    assert rec["modalities"] == ["image", "audio"] and rec["metrics"]["n"] == 3


def _labelled(templates=("{}",)) -> Dataset:
    items = [Item("i0", "test", "c0", {"image": "img0", "text": "x"}),
             Item("i1", "test", "c1", {"image": "img1", "text": "y"})]
    return Dataset.of_items(Path("tiny"), items, [ClassInfo("c0"), ClassInfo("c1")], templates)


def test_no_zero_shot_without_text_among_the_modalities() -> None:
    embed = lambda m, ids: torch.eye(2)[[int(i[1]) for i in ids]]  # noqa: E731
    records = evaluate(model="toy", role="fused", dataset=_labelled(), split="test", modalities=["image"],
                       embed_items=embed, encode_text=lambda prompts: torch.eye(2), ks=(1,))
    assert records == []


def test_class_prompts_are_grouped_class_major() -> None:
    # prompts "a c0", "the c0", "a c1", "the c1": c0's templates both embed as e0, c1's as e1 and e2.
    # Class-major, the centres are e0 and (e1 + e2)/√2, and images e0 (c0), e1 (c1) are both right;
    # grouped template-major they would be (e0 + e1)/√2 and (e0 + e2)/√2, and e1 would go to c0.
    table = {"a c0": [1.0, 0, 0], "the c0": [1.0, 0, 0], "a c1": [0, 1.0, 0], "the c1": [0, 0, 1.0]}
    encode_text = lambda prompts: torch.tensor([table[p] for p in prompts])  # noqa: E731
    embed = lambda m, ids: torch.eye(3)[[int(i[1]) for i in ids]]  # noqa: E731
    records = evaluate(model="toy", role="fused", dataset=_labelled(("a {}", "the {}")), split="test",
                       modalities=["image", "text"], embed_items=embed, encode_text=encode_text, ks=(1,))
    zeroshot = [r for r in records if r["task"] == "zeroshot_classification"][0]
    assert zeroshot["metrics"]["acc1"] == 1.0 and zeroshot["metrics"]["n"] == 2


def test_items_without_a_class_label_are_not_classified() -> None:
    items = [Item("i0", "test", "c0", {"image": "img0"}), Item("i1", "test", None, {"image": "img1"}),
             Item("i2", "test", "c1", {"image": "img2"})]
    data = Dataset.of_items(Path("tiny"), items, [ClassInfo("c0"), ClassInfo("c1")])
    ids, labels = labelled_items(data, "test", "image")
    assert ids == ["i0", "i2"] and labels.tolist() == [0, 1]


def test_evaluate_space_averages_class_prompts_part_by_part() -> None:
    """A space with blocks (2, 2) and images living in the first part only ([e, 0], as a channel
    makes them). Class c0's templates agree in part 1 and disagree in part 2, c1's the reverse.
    Part by part (every part keeps its norm 1/√2) the image [0.8, 0.6] is nearer c1 (0.70 vs 0.57);
    a whole-vector mean would reweigh the parts and pick c0 (0.65 vs 0.57)."""
    s = 2 ** -0.5
    table = {"a c0": [s, 0, s, 0], "b c0": [s, 0, 0, s], "a c1": [s, 0, s, 0], "b c1": [0, s, s, 0]}
    images = {"i0": [1.0, 0, 0, 0], "i1": [0.8, 0.6, 0, 0]}
    texts = {"i0": [s, 0, s, 0], "i1": [0, s, 0, s]}
    space = SimpleNamespace(name="toy", modalities=("text", "image"), blocks=(2, 2),
                            encode=lambda m, prompts: torch.tensor([table[p] for p in prompts]))
    caches = SimpleNamespace(
        embeddings=lambda sp, m, ids: torch.tensor([(images if m == "image" else texts)[i] for i in ids]),
        usable_ids=lambda sp, m, ids: list(ids))
    records = evaluate_space(space, "fused", caches, _labelled(("a {}", "b {}")), "test", [1])
    zeroshot = [r for r in records if r["task"] == "zeroshot_classification"][0]
    assert zeroshot["metrics"]["acc1"] == 1.0
