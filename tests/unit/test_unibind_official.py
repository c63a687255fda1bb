"""UniBind's official mode (QC-LY/UniBind) beside spacebind's: top-1 scoring over each class's
description rows, the per-modality linear head trained by InfoNCE against each item's own
description, its save → load round trip, and the recipe fields that choose it."""
from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from memory_cache import MemoryCache
from torch import nn

from spacebind import Space
from spacebind.cache import CacheSet
from spacebind.errors import CheckpointError, InputError, RecipeError
from spacebind.io.datasets import ClassInfo, Dataset, Item
from spacebind.recipe import validate_recipe
from spacebind.unibind.centres import (
    as_linear_map,
    description_rows,
    infonce_to_own,
    own_descriptions,
    top1_scores,
    train_linear_head,
)
from spacebind.unibind.model import UniBind, fit_unibind

ROOT = Path(__file__).resolve().parents[2]
NAMES = ["ant", "bee", "cat"]


def space(dim: int = 4) -> Space:
    return Space.from_encoders("S", {"image": lambda xs: torch.zeros(len(xs), dim), "text": word_vectors}, dim=dim)


def word_vectors(texts: list[str]) -> torch.Tensor:
    """A bag of words: each class name its own axis, every other word a little of the fourth."""
    axis = {name: torch.eye(4)[k] for k, name in enumerate(NAMES)}
    return F.normalize(torch.stack([sum((axis.get(w, 0.2 * torch.eye(4)[3]) for w in t.split()), torch.zeros(4))
                                    for t in texts]), dim=-1)


def three_by_four() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """3 classes × 4 unit description rows in 5 dimensions, and 6 items."""
    gen = torch.Generator().manual_seed(0)
    rows = F.normalize(torch.randn(12, 5, generator=gen), dim=-1)
    owners = torch.arange(3).repeat_interleave(4)
    return rows, owners, torch.randn(6, 5, generator=gen)


def test_official_scoring_is_the_best_cosine_among_a_class_s_descriptions() -> None:
    rows, owners, feats = three_by_four()
    expected = torch.empty(6, 3)
    for i in range(6):
        x = feats[i] / feats[i].norm()
        for c in range(3):
            expected[i, c] = max(float(x @ rows[r]) for r in range(12) if owners[r] == c)
    torch.testing.assert_close(top1_scores(feats, rows, owners, 3), expected)
    # the class the official code predicts: the owner of the single best row among all of them
    official = owners[(F.normalize(feats, dim=-1) @ rows.T).softmax(dim=-1).argmax(dim=1)]
    assert torch.equal(top1_scores(feats, rows, owners, 3).argmax(1), official)
    # a UniBind in this scoring gives the same scores (no head) and adds votes on top
    model = UniBind(space(5), NAMES, {"image": rows}, rows, owners, scoring="descriptions",
                    centre_owners={"image": owners})
    torch.testing.assert_close(model.scores("image", feats), expected)
    assert torch.isinf(top1_scores(feats, rows[:4], owners[:4], 3)[:, 1:]).all()  # a class without rows
    with pytest.raises(InputError, match="scoring 'top1'"):
        UniBind(space(5), NAMES, {"image": rows}, rows, owners, scoring="top1")
    with pytest.raises(InputError, match="needs the class of every row"):
        UniBind(space(5), NAMES, {"image": rows}, rows, owners, scoring="descriptions")


def test_description_rows_keep_the_n_nearest_to_the_class_mean_apart() -> None:
    descs = [torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), torch.tensor([[0.0, 2.0]])]
    means = torch.tensor([[1.0, 0.1], [0.0, 1.0]])
    rows, owners = description_rows(descs, means, n=2)
    # class 0's two nearest its mean: [1, 0] and n([1, 1]), in their knowledge-base order; class 1 has one
    torch.testing.assert_close(rows, torch.tensor([[1.0, 0.0], [2 ** -0.5, 2 ** -0.5], [0.0, 1.0]]))
    assert owners.tolist() == [0, 0, 1]
    with pytest.raises(InputError, match="n is 0"):
        description_rows(descs, means, n=0)


def test_infonce_to_own_is_the_official_loss_by_hand() -> None:
    outputs = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    targets = torch.tensor([[2.0, 0.0], [0.0, 1.0], [-1.0, 1.0]])
    o, t = F.normalize(outputs, dim=-1), F.normalize(targets, dim=-1)
    for temperature in (1.0, 0.5):
        by_hand = 0.0
        for i in range(3):
            logits = [float(o[i] @ t[j]) / temperature for j in range(3)]
            by_hand -= logits[i] - torch.logsumexp(torch.tensor(logits), 0).item()
        assert infonce_to_own(outputs, targets, temperature).item() == pytest.approx(by_hand / 3, rel=1e-6)
    # τ 1, the official default, by hand: rows 0.4378, 0.9135, 1.0415 (e.g. row 0: log(e + 1 + e^−0.7071) − 1)
    assert infonce_to_own(outputs, targets).item() == pytest.approx(0.7976, abs=1e-4)


def test_the_linear_head_is_an_nn_linear_trained_by_the_official_loss_and_settings() -> None:
    defaults = {k: p.default for k, p in inspect.signature(train_linear_head).parameters.items()
                if p.default is not inspect.Parameter.empty}
    assert {k: defaults[k] for k in ("epochs", "batch_size", "lr", "weight_decay", "max_grad_norm", "temperature")} == \
        {"epochs": 15, "batch_size": 1024, "lr": 5e-4, "weight_decay": 0.01, "max_grad_norm": 1.0, "temperature": 1.0}
    gen = torch.Generator().manual_seed(1)
    targets = F.normalize(torch.randn(48, 6, generator=gen), dim=-1)
    feats = targets @ torch.randn(6, 6, generator=gen) + 0.05 * torch.randn(48, 6, generator=gen)
    history: list[float] = []
    head = train_linear_head(feats, targets, epochs=30, batch_size=16, lr=1e-2, seed=0, history=history)
    assert type(head) is nn.Linear and tuple(head.weight.shape) == (6, 6) and not head.training
    assert len(history) == 30 and history[-1] < history[0] - 0.3, history
    with torch.no_grad():
        untrained = train_linear_head(feats, targets, epochs=1, lr=0.0, seed=0)  # the seeded initial layer
        before, after = infonce_to_own(untrained(feats), targets), infonce_to_own(head(feats), targets)
    assert after < before - 0.3
    again = train_linear_head(feats, targets, epochs=30, batch_size=16, lr=1e-2, seed=0)
    assert torch.equal(again.weight, head.weight)  # seeded init and batch order
    # stored as spacebind's `linear` head type: n(x Wᵀ + b), the same function the scores see
    stored = as_linear_map(head)
    with torch.no_grad():
        torch.testing.assert_close(stored(feats), F.normalize(head(feats), dim=-1))
    with pytest.raises(InputError, match="one description per item"):
        train_linear_head(feats, targets[:3])


def official_model() -> tuple[UniBind, torch.Tensor]:
    rows, owners, feats = three_by_four()
    sp = Space.from_encoders("S", {"image": lambda xs: torch.zeros(len(xs), 5), "text": lambda xs: torch.zeros(len(xs), 5)},
                             dim=5)
    head = as_linear_map(train_linear_head(feats, rows[owners.tolist()[:6]], epochs=3, batch_size=4, seed=0))
    model = UniBind(sp, NAMES, {"image": rows}, rows, owners, {"image": head}, vote_weight=0.3, k=2,
                    scoring="descriptions", centre_owners={"image": owners})
    return model, feats


def test_official_mode_save_load_round_trip(tmp_path: Path) -> None:
    model, feats = official_model()
    loaded = UniBind.load(model.save(tmp_path / "ub"), model.space)
    meta = json.loads((tmp_path / "ub" / "unibind.json").read_text())
    assert meta["scoring"] == "descriptions" and meta["head"] == "linear"
    assert loaded.scoring == "descriptions" and loaded.head == "linear" and torch.equal(loaded.centre_owners["image"],
                                                                                         model.centre_owners["image"])
    torch.testing.assert_close(loaded.scores("image", feats), model.scores("image", feats), rtol=0, atol=0)
    # a head the file does not list is refused
    (tmp_path / "ub" / "unibind.json").write_text(json.dumps({**meta, "head": "mlp"}))
    with pytest.raises(CheckpointError, match="field head: 'mlp', but the heads it lists are 'linear'"):
        UniBind.load(tmp_path / "ub", model.space)
    (tmp_path / "ub" / "unibind.json").write_text(json.dumps({**meta, "scoring": "top1"}))
    with pytest.raises(CheckpointError, match="field scoring"):
        UniBind.load(tmp_path / "ub", model.space)


def test_a_directory_without_the_mode_loads_as_centres(tmp_path: Path) -> None:
    """Directories written before the official mode record neither `scoring` nor `head`."""
    sp = space(3)
    model = UniBind(sp, NAMES, {"image": torch.eye(3)}, torch.eye(3), torch.arange(3))
    model.save(tmp_path)
    meta = json.loads((tmp_path / "unibind.json").read_text())
    assert meta["scoring"] == "centres" and meta["head"] is None
    (tmp_path / "unibind.json").write_text(json.dumps({k: v for k, v in meta.items() if k not in ("scoring", "head")}))
    loaded = UniBind.load(tmp_path, sp)
    assert loaded.scoring == "centres" and loaded.centre_owners == {}
    torch.testing.assert_close(loaded.scores("image", torch.eye(3)), torch.eye(3))


def tiny_dataset() -> tuple[Dataset, CacheSet, dict[str, list[str]]]:
    """Three classes, 4 training items each (image embeddings near the class's axis; captions
    naming the class), one training item without a caption, and its knowledge base."""
    gen = torch.Generator().manual_seed(2)
    items, images, texts = [], {}, {}
    for k in range(12):
        name, iid = NAMES[k % 3], f"t{k}"
        fields = {"image": f"/d/{iid}.png", **({"text": f"a photo of a {name}"} if k != 11 else {})}
        items.append(Item(iid, "train", name, fields))
        images[iid] = F.normalize(torch.eye(4)[k % 3] + 0.1 * torch.randn(4, generator=gen), dim=0)
        if "text" in fields:
            texts[iid] = word_vectors([fields["text"]])[0]
    data = Dataset.of_items(Path("/d"), items, [ClassInfo(c) for c in NAMES], templates=("a {}",))
    kb = {name: [f"{name}", f"red {name}", "blue", f"small {name} here"] for name in NAMES}
    return data, CacheSet({"S": MemoryCache({"image": images, "text": texts})}), kb


def test_fit_unibind_official_mode_on_a_tiny_dataset() -> None:
    data, caches, kb = tiny_dataset()
    sp = space()
    descs = [word_vectors(kb[n]) for n in NAMES]
    ids = [it.id for it in data.select("train", "image")]
    feats = caches.embeddings(sp, "image", ids)
    labels = torch.tensor([NAMES.index(it.label) for it in data.select("train", "image")])
    targets = own_descriptions(sp, caches, data, descs, ids, feats, labels)
    assert len(feats) == len(targets) == 12
    torch.testing.assert_close(targets[0], word_vectors(["a photo of a ant"])[0])  # its own caption
    nearest = descs[2][(F.normalize(descs[2], dim=-1) @ F.normalize(feats[11], dim=0)).argmax()]
    torch.testing.assert_close(targets[11], nearest)  # no caption: its class's nearest description
    model = fit_unibind(sp, caches, data, kb, n=2, scoring="descriptions", head="linear", epochs=2)
    assert model.scoring == "descriptions" and model.head == "linear"
    assert model.centres["image"].shape == (6, 4) and model.centre_owners["image"].tolist() == [0, 0, 1, 1, 2, 2]
    assert model.heads["image"].config == {"type": "linear", "in_dim": 4, "out_dim": 4}
    free = fit_unibind(sp, caches, data, kb, n=4, scoring="descriptions", align=False)
    assert free.heads == {} and (free.scores("image", feats).argmax(1) == torch.arange(12) % 3).all()
    with pytest.raises(InputError, match="scoring 'top1'"):
        fit_unibind(sp, caches, data, kb, scoring="top1")  # type: ignore[arg-type]


def world_recipe(**unibind: object) -> dict:
    raw = yaml.safe_load((ROOT / "recipes" / "unibind_world.yaml").read_text())
    return {**raw, "unibind": {**raw["unibind"], **unibind}}


def test_unibind_recipe_chooses_the_official_mode_and_names_a_wrong_value() -> None:
    default = validate_recipe(world_recipe()).unibind
    assert default is not None and (default.scoring, default.head, default.epochs) == ("centres", "mlp", None)
    official = validate_recipe(world_recipe(scoring="descriptions", head="linear", descriptions=50)).unibind
    assert official is not None and (official.scoring, official.head, official.descriptions) == ("descriptions", "linear", 50)
    with pytest.raises(RecipeError, match=r"unibind.scoring: Input should be 'centres' or 'descriptions'"):
        validate_recipe(world_recipe(scoring="top1"))
    with pytest.raises(RecipeError, match=r"unibind.head: Input should be 'mlp' or 'linear'"):
        validate_recipe(world_recipe(head="transformer"))
    with pytest.raises(RecipeError, match=r"unibind: head: 'linear' trains a head, but align is false"):
        validate_recipe(world_recipe(head="linear", align=False))
    with pytest.raises(RecipeError, match=r"unibind.scorign: unknown field; did you mean 'scoring'\?"):
        validate_recipe(world_recipe(scorign="descriptions"))
