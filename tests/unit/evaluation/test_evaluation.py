"""Metrics against hand-computed values; evaluation records; tables and plots."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from spacebind.evaluation.evaluate import evaluate, labelled_items, read_records, write_records
from spacebind.evaluation.metrics import (
    NO_HIT,
    class_embeddings,
    first_hit_ranks,
    retrieval_recall,
    zeroshot_classification,
)
from spacebind.evaluation.report import plot_recall_curves, records_markdown, records_table
from spacebind.io.datasets import ClassInfo, Dataset, Item
from spacebind.retrieval.topk import topk_indices


def test_topk_chunked_equals_full_matmul_and_breaks_ties_low() -> None:
    g = torch.Generator().manual_seed(0)
    q, gal = torch.randn(37, 8, generator=g), torch.randn(53, 8, generator=g)
    full = torch.topk(q @ gal.T, 7, dim=1).indices
    for chunk in (1, 5, 64):
        torch.testing.assert_close(topk_indices(q, gal, 7, chunk_size=chunk), full)
    tie = topk_indices(torch.ones(1, 2), torch.ones(4, 2), 3)
    assert tie.tolist() == [[0, 1, 2]]
    assert topk_indices(q, gal[:3], 10).shape == (37, 3)  # k larger than the gallery


def test_topk_with_many_ties_equals_a_stable_full_sort() -> None:
    # small integer vectors: most scores tie, inside the top k and across its boundary
    g = torch.Generator().manual_seed(1)
    q, gal = torch.randint(0, 3, (50, 4), generator=g).float(), torch.randint(0, 3, (80, 4), generator=g).float()
    stable = torch.sort(q @ gal.T, dim=1, descending=True, stable=True).indices[:, :7]
    assert torch.equal(topk_indices(q, gal, 7, chunk_size=13), stable)
    assert topk_indices(q, gal, 0).shape == (50, 0)


def test_retrieval_recall_by_hand() -> None:
    gallery = torch.eye(4)
    queries = torch.tensor([[1.0, 0, 0, 0], [0.9, 0.5, 0, 0], [0, 0, 0.2, 1.0], [0, 0, 0, 1.0]])
    # ranks of the correct item (diagonal): q0 → 0, q1 → 1, q2 → 1, q3 → 0
    r = retrieval_recall(queries, gallery, [0, 1, 2, 3], ks=(1, 2))
    assert r == {1: 0.5, 2: 1.0}
    multi = retrieval_recall(queries, gallery, [0, [0, 1], 2, [3]], ks=(1,))
    assert multi == {1: 0.75}  # q1 also accepts item 0
    assert first_hit_ranks(queries, gallery, range(4), depth=2).tolist() == [0, 1, 1, 0]
    assert first_hit_ranks(queries, gallery, range(4)).tolist() == [0, NO_HIT, NO_HIT, 0]  # beyond depth


def test_a_query_with_no_correct_item_is_never_a_hit_whatever_k() -> None:
    """The second query's correct item is outside a gallery of 2: a miss at k = 1 … 10, not a hit once
    k passed the gallery's size + 1."""
    r = retrieval_recall(torch.eye(2), torch.eye(2), [0, []], ks=(1, 2, 3, 4, 10))
    assert r == {1: 0.5, 2: 0.5, 3: 0.5, 4: 0.5, 10: 0.5}


def test_zeroshot_metrics_by_hand() -> None:
    classes = torch.eye(3)
    feats = torch.tensor([[1.0, 0, 0], [0.8, 0.6, 0], [0, 1.0, 0], [0, 0.1, 1.0]])
    labels = torch.tensor([0, 1, 1, 2])
    m = zeroshot_classification(feats, labels, classes)
    assert m["acc1"] == 0.75 and math.isnan(m["acc5"])  # 3 classes: top-5 holds them all (CLIP_benchmark: NaN)
    assert m["mean_per_class_recall"] == pytest.approx((1 + 0.5 + 1) / 3)
    # 6 classes, the first item's label ranked 6th: a miss at top-5, the others hits
    six = torch.eye(6)
    feats6 = torch.tensor([[0.0, 0.5, 0.4, 0.3, 0.2, 0.1], [0.1, 0.3, 1.0, 0, 0, 0], [0.5, 0.6, 0, 0, 0, 0]])
    m6 = zeroshot_classification(feats6, torch.tensor([0, 3, 0]), six)
    assert m6["acc1"] == 0.0 and m6["acc5"] == pytest.approx(2 / 3)
    empty = zeroshot_classification(torch.empty(0, 6), torch.empty(0, dtype=torch.long), six)
    assert all(math.isnan(v) for v in empty.values())
    prompts = F.normalize(torch.tensor([[1.0, 0], [1.0, 1.0], [0, 1.0], [0, 2.0]]), dim=-1)
    centres = class_embeddings(prompts, 2)
    torch.testing.assert_close(centres[1], torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(centres[0], F.normalize(prompts[0] + prompts[1], dim=-1))


def tiny_dataset() -> Dataset:
    items = [Item(f"i{k}", "test", f"c{k % 2}", {"image": f"img{k}", "text": f"t{k}"}) for k in range(4)]
    return Dataset.of_items(Path("tiny"), items, [ClassInfo("c0"), ClassInfo("c1")], ["a {}"])


def test_evaluate_names_directions_like_clip_benchmark() -> None:
    # images are perfect one-hots; texts 2 and 3 are swapped, so text→image misses them
    image = torch.eye(4)
    text = torch.eye(4)[[0, 1, 3, 2]] * 0.6 + torch.eye(4) * 0.5
    embed = lambda m, ids: (image if m == "image" else text)[[int(i[1]) for i in ids]]  # noqa: E731
    encode_text = lambda prompts: torch.tensor([[1.0, 0, 1, 0], [0, 1.0, 0, 1]])  # noqa: E731
    records = evaluate(model="toy", role="fused", dataset=tiny_dataset(), split="test", modalities=["image", "text"],
                       embed_items=embed, encode_text=encode_text, ks=(1,))
    retrieval, zeroshot = records
    assert retrieval["modalities"] == ["text", "image"] and retrieval["dataset"] == "tiny-test"
    assert retrieval["metrics"]["image_retrieval_recall@1"] == 0.5  # text queries → images
    assert retrieval["metrics"]["text_retrieval_recall@1"] == 0.5
    assert zeroshot["task"] == "zeroshot_classification" and zeroshot["modalities"] == ["image", "text"]
    assert zeroshot["metrics"]["acc1"] == 1.0 and zeroshot["metrics"]["n"] == 4
    with pytest.raises(ValueError, match="role"):
        evaluate(model="x", role="other", dataset=tiny_dataset(), split="test", modalities=[], embed_items=embed)


def test_captions_of_one_media_file_score_as_clip_benchmark_does() -> None:
    """Three clips with two captions each (six items, three files) in a perfect space: every
    caption finds its clip, and each clip finds one of its captions; item by item, the copies of a
    clip would count as misses (R@1 0.5)."""
    items = [Item(f"i{k}", "test", None, {"audio": f"clip{k // 2}.wav", "text": f"caption {k}"}) for k in range(6)]
    dataset = Dataset.of_items(Path("tiny"), items, [])
    clips = torch.eye(3)
    embed = lambda m, ids: clips[[int(i[1:]) // 2 for i in ids]]  # noqa: E731 (a caption embeds like its clip)
    (record,) = evaluate(model="toy", role="fused", dataset=dataset, split="test", modalities=["audio", "text"],
                         embed_items=embed, ks=(1,))
    assert record["metrics"] == {"audio_retrieval_recall@1": 1.0, "text_retrieval_recall@1": 1.0, "n": 6}


def test_zero_shot_classifies_each_media_file_once_whatever_its_captions() -> None:
    """Clip 0 (five captions) is classified right, clips 1 and 2 (one caption each) wrong: 1/3 of the
    clips, not 5/7 of the items; a file stored once per label (multi-label data) counts per label."""
    items = [Item(f"a{k}", "test", "c0", {"audio": "clip0.wav", "text": f"caption {k}"}) for k in range(5)]
    items += [Item(f"b{k}", "test", "c0", {"audio": f"clip{k}.wav", "text": f"other {k}"}) for k in (1, 2)]
    dataset = Dataset.of_items(Path("tiny"), items, [ClassInfo("c0"), ClassInfo("c1")], ["a {}"])
    embed = lambda m, ids: torch.tensor([[1.0, 0] if i.startswith("a") else [0, 1.0] for i in ids])  # noqa: E731
    encode_text = lambda prompts: torch.eye(2)  # noqa: E731
    _, zeroshot = evaluate(model="toy", role="fused", dataset=dataset, split="test", modalities=["audio", "text"],
                           embed_items=embed, encode_text=encode_text, ks=(1,))
    assert zeroshot["metrics"]["n"] == 3 and zeroshot["metrics"]["acc1"] == pytest.approx(1 / 3)
    assert labelled_items(dataset, "test", "text")[0] == [it.id for it in items]  # texts: one per item
    both = Dataset.of_items(Path("tiny"), [*items, Item("z", "test", "c1", {"audio": "clip0.wav", "text": "x"})],
                            [ClassInfo("c0"), ClassInfo("c1")], ["a {}"])
    ids, labels = labelled_items(both, "test", "audio")
    assert ids == ["a0", "b1", "b2", "z"] and labels.tolist() == [0, 0, 0, 1]


def test_items_a_cache_could_not_embed_drop_out_of_every_task() -> None:
    bad = {"i3"}
    image, text = torch.eye(4), torch.eye(4)

    def embed(m: str, ids: list[str]) -> torch.Tensor:
        assert not bad & set(ids) or m == "text", f"asked for the bad item's {m} embedding"
        return (image if m == "image" else text)[[int(i[1]) for i in ids]]

    usable = lambda m, ids: [i for i in ids if m != "image" or i not in bad]  # noqa: E731
    encode_text = lambda prompts: torch.tensor([[1.0, 0, 1, 0], [0, 1.0, 0, 1]])  # noqa: E731
    retrieval, zeroshot = evaluate(model="toy", role="fused", dataset=tiny_dataset(), split="test",
                                   modalities=["image", "text"], embed_items=embed, encode_text=encode_text, ks=(1,),
                                   usable=usable)
    assert retrieval["metrics"]["n"] == 3 and retrieval["metrics"]["image_retrieval_recall@1"] == 1.0
    assert zeroshot["metrics"]["n"] == 3 and zeroshot["metrics"]["acc1"] == 1.0


def test_records_round_trip_tables_and_plot(tmp_path: Path) -> None:
    records = [
        {"model": "base", "role": "base", "dataset": "w-test", "task": "retrieval", "modalities": ["text", "audio"],
         "metrics": {"audio_retrieval_recall@1": 0.05, "audio_retrieval_recall@5": 0.2, "text_retrieval_recall@1": 0.04,
                     "text_retrieval_recall@5": 0.18, "n": 10}},
        {"model": "fused", "role": "fused", "dataset": "w-test", "task": "retrieval", "modalities": ["text", "audio"],
         "metrics": {"audio_retrieval_recall@1": 0.3, "audio_retrieval_recall@5": 0.6, "text_retrieval_recall@1": 0.25,
                     "text_retrieval_recall@5": 0.55, "n": 10}},
    ]
    write_records(tmp_path / "m.json", records)
    assert read_records(tmp_path / "m.json") == records
    md = records_markdown(records)
    assert "| metric | base (base) | fused (fused) |" in md
    assert "| text→audio R@1 | 5.0 | 30.0 |" in md and "| audio→text R@1 | 4.0 | 25.0 |" in md
    assert records_table(records).row_count == 2
    png = plot_recall_curves(records, tmp_path / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_similarity_probes_one_item_per_media_file() -> None:
    """40 clips with 5 captions each: one probe per clip. Kept whole, a clip's 4 copies fill 4 of its
    10 nearest neighbours in any media space, and two unrelated random spaces reach mutual 10-NN
    ≈ 0.4 instead of chance (≈ 10/39)."""
    from spacebind.evaluation.similarity import mutual_knn, probe_ids

    items = [Item(f"c{c}-{j}", "val", None, {"audio": f"clip{c}.wav", "image": f"img{c}.png", "text": f"t{c} {j}"})
             for c in range(40) for j in range(5)]
    dataset = Dataset.of_items(Path("tiny"), items, [])
    assert probe_ids(dataset, "val", "audio", "image") == [f"c{c}-0" for c in range(40)]
    assert probe_ids(dataset, "val", "audio", "text") == [f"c{c}-0" for c in range(40)]
    assert len(probe_ids(dataset, "val", "text", "text")) == 200
    g = torch.Generator().manual_seed(0)
    audio, image = torch.randn(40, 16, generator=g), torch.randn(40, 16, generator=g)
    assert mutual_knn(audio, image, k=10) < 0.35 < mutual_knn(audio.repeat_interleave(5, 0), image.repeat_interleave(5, 0), k=10)
