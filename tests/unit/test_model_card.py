"""The model card: YAML front matter the Hub reads, model-index from metrics.json, no machine paths."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from toy_experts import multi_expert

from spacebind.bonds.bind import BoundSpace
from spacebind.bonds.projector import MLPProjector
from spacebind.space import Expert, ExpertSpec

CHECKPOINT = "/home/someone/private/checkpoints/minilm/model.safetensors"
RECORDS = [
    {"model": "fused", "role": "fused", "dataset": "world-test", "task": "retrieval", "modalities": ["image", "text"],
     "metrics": {"image_retrieval_recall@1": 0.5, "text_retrieval_recall@1": 0.25, "n": 40}},
    {"model": "fused", "role": "fused", "dataset": "world-test", "task": "zeroshot_classification",
     "modalities": ["image", "text"], "metrics": {"acc1": 0.625, "acc5": 0.875}},
    {"model": "U", "role": "base", "dataset": "world-test", "task": "retrieval", "modalities": ["image", "text"],
     "metrics": {"image_retrieval_recall@1": 0.125, "text_retrieval_recall@1": 0.125}},
]


def card_space() -> BoundSpace:
    u = multi_expert("U", 8, ("text", "image"), 0)
    toy = multi_expert("E", 6, ("text",), 1)
    e = Expert("E", 6, {"text": lambda xs: toy.encode("text", xs)},
               spec=ExpertSpec(source="minilm", kwargs={"path": str(Path(CHECKPOINT).parent)},
                               checkpoint=CHECKPOINT, sha256="ab" * 32))
    torch.manual_seed(0)
    return BoundSpace(u, [e], "combination", {"E": MLPProjector(6, 8, hidden=16).eval()}, lambdas={"text": 0.3}, name="fused")


def test_card_front_matter_is_read_by_huggingface_hub(tmp_path: Path) -> None:
    out = card_space().save(tmp_path / "ckpt", metrics=RECORDS)
    card = ModelCard.load(out / "README.md")
    data = card.data.to_dict()
    assert card.data.library_name == "spacebind"
    assert data["license"] == "other"
    assert {"spacebind", "multimodal", "embeddings", "combination", "text", "image"} <= set(data["tags"])
    assert data["base_model"] == ["sentence-transformers/all-MiniLM-L6-v2"]
    assert data["datasets"] == ["world-test"]
    # model-index: one result per fused record, values exactly those of metrics.json
    metrics = json.loads((out / "metrics.json").read_text())
    fused = [r for r in metrics if r["role"] == "fused"]
    (index,) = data["model-index"]
    assert index["name"] == "fused"
    assert len(index["results"]) == len(fused) == 2
    for result, record in zip(index["results"], fused):
        assert result["dataset"]["name"] == record["dataset"]
        want = {k: v for k, v in record["metrics"].items() if k != "n"}  # the item count is no metric
        assert {m["type"]: m["value"] for m in result["metrics"]} == want
    assert [r["task"]["type"] for r in index["results"]] == ["zero-shot-retrieval", "zero-shot-classification"]
    # huggingface_hub's own parse of the model-index agrees
    parsed = {(e.task_type, e.metric_type): e.metric_value for e in card.data.eval_results}
    assert parsed[("zero-shot-retrieval", "image_retrieval_recall@1")] == 0.5
    assert parsed[("zero-shot-classification", "acc1")] == 0.625
    assert 0.125 not in parsed.values()  # the base model's record is not the fused model's result
    # the rest of the card is still there
    assert "# fused" in card.text and "## Experts" in card.text and "## Metrics" in card.text and "## Use" in card.text


def test_unibind_centre_results_are_told_apart_from_the_prompts(tmp_path: Path) -> None:
    from spacebind.model_card import model_index

    centres = {**RECORDS[1], "model": "fused (centres)", "metrics": {"acc1": 0.875, "acc5": 1.0}}
    (index,) = model_index("fused", [*RECORDS, centres])
    names = [r["task"]["name"] for r in index["results"]]
    assert names == ["retrieval (image, text)", "zeroshot_classification (image, text)",
                     "zeroshot_classification (image, text) — fused (centres)"]


def test_card_has_no_machine_paths(tmp_path: Path) -> None:
    out = card_space().save(tmp_path / "ckpt", metrics=RECORDS)
    text = (out / "README.md").read_text()
    assert "model.safetensors" in text
    assert "/home/someone" not in text and "private" not in text and str(tmp_path) not in text


def test_card_without_metrics_or_known_experts_omits_optional_fields(tmp_path: Path) -> None:
    u = multi_expert("U", 8, ("text", "image"), 0)
    e = multi_expert("E", 6, ("text",), 1)
    space = BoundSpace(u, [e], "combination", {"E": MLPProjector(6, 8, hidden=16).eval()}, lambdas={"text": 0.3})
    data = ModelCard.load(space.save(tmp_path / "ckpt") / "README.md").data.to_dict()
    assert data["library_name"] == "spacebind"
    assert "base_model" not in data and "datasets" not in data and "model-index" not in data


def test_card_states_the_lambda_a_bond_applies_and_what_was_set_after_fitting(tmp_path: Path) -> None:
    """A combination that sets no λ applies the versatile preset's text 0.1; a space whose λ was set
    after fitting (a preset, `with_lambdas`) says so beside the record of the choice."""
    u, e = multi_expert("U", 8, ("text", "image"), 0), multi_expert("E", 6, ("text", "audio"), 1)
    torch.manual_seed(0)
    heads = {"E": MLPProjector(6, 8, hidden=16).eval()}
    card = (BoundSpace(u, [e], "combination", heads).save(tmp_path / "default") / "README.md").read_text()
    assert "| text 0.1 (default) |" in card  # text is the one modality both sides cover
    choice = {"lambdas": {"text": 0.3}, "coarse": {"text": 0.1}, "confidence": 0.95, "split": "val", "objective": -0.02,
              "undone": {"text": 0.4}, "margins": {"text→image R@1": -0.003, "image zero-shot acc1": 0.01}}
    fitted = BoundSpace(u, [e], "combination", heads, lambdas={"text": 0.3}, choices={"lambdas": choice})
    card = (fitted.save(tmp_path / "fitted") / "README.md").read_text()
    assert "| text 0.3 |" in card and "set after fitting" not in card
    # each worst margin beside the setting it was measured at: stage 1's λ, then the λ and κ in force
    assert "chose text 0.4 (coarse text 0.1; better than the coarse λ in 95 % of bootstrap resamples); worst margin " \
           "over its parts there: -2.0 points" in card
    assert "after κ: λ text to 0.3" in card
    assert "as fitted (the λ and κ above): worst margin over its parts on the val split: text→image R@1 -0.3 points" in card
    card = (fitted.with_lambdas({"text": 0.5}).save(tmp_path / "set") / "README.md").read_text()
    assert "| text 0.5 |" in card
    assert "set after fitting (a preset or `with_lambdas`), so the choices above no longer hold for them: " \
           "λ text 0.5 (chosen 0.3)" in card


def test_card_says_when_a_mixture_bond_mixes_the_plain_mean(tmp_path: Path) -> None:
    from spacebind.bonds.mixture import ProjectorMixture

    u, e = multi_expert("U", 8, ("text", "image"), 0), multi_expert("E", 6, ("text", "audio"), 1)
    torch.manual_seed(0)
    mixture = {"E": ProjectorMixture([MLPProjector(6, 8, hidden=16).eval() for _ in range(2)])}
    plain = (BoundSpace(u, [e], "combination", mixture, pbar="plain").save(tmp_path / "plain") / "README.md").read_text()
    unit = (BoundSpace(u, [e], "combination", mixture).save(tmp_path / "unit") / "README.md").read_text()
    assert "| text 0.1 (default); P̄ plain mean (OmniBind) |" in plain and "P̄ plain" not in unit


def test_card_usage_snippet_runs_as_pasted_and_metrics_say_how_they_were_computed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The card's Python block runs unchanged from the export's directory and gives what it says;
    the metrics note names the caches' precision and the zero-shot protocol with the space's blocks."""
    import re

    u, e = multi_expert("U", 8, ("text", "image"), 0), multi_expert("E", 6, ("text", "audio"), 1)
    torch.manual_seed(0)
    space = BoundSpace(u, [e], "combination", {"E": MLPProjector(6, 8, hidden=16).eval()},
                       channels={"text": 0.5, "audio": 0.9}, presets={"p": {"text": 0.5}})
    out = space.save(tmp_path / "ckpt", metrics=RECORDS)
    card = (out / "README.md").read_text()
    (snippet,) = re.findall(r"```python\n(.*?)```", card, flags=re.S)
    import functools

    import spacebind

    monkeypatch.chdir(out)
    # the toy experts live in memory only: the card's own call, handed them
    monkeypatch.setattr(spacebind, "load", functools.partial(spacebind.load, experts={"U": u, "E": e}))
    scope: dict = {}
    exec(snippet, scope)
    assert scope["emb"].shape == (1, space.dim) and torch.allclose(scope["emb"].norm(dim=-1), torch.ones(1))
    assert f"Tensor[1, {space.dim}], unit-norm" in snippet and len(space.blocks) == 2
    assert f"blocks (widths {space.blocks[0]}, {space.blocks[1]}, each part renormalised)" in card
    assert "from the experts' float16 embedding caches" in card
    assert "`spacebind.evaluation.zeroshot.prompt_classes(space, names, templates)`" in card
    # a λ preset under a channel: the card says which pairs it barely moves
    assert "- `p`: text 0.5" in card and "Between modalities the channel carries (text κ 0.5, audio κ 0.9) a " \
           "similarity weighs the bond's part by 1 − κ" in " ".join(card.split())


def test_card_lists_each_experts_licence_and_the_front_matter_a_shared_one(tmp_path: Path) -> None:
    """The registry's licence of each expert's weights is in the card; one licence for every expert
    becomes the card's `license`; mixed or unstated ones give `other` with a link to the list."""
    from spacebind.registry import EXPERTS

    def named(name: str, source: str, kwargs: dict | None = None) -> Expert:
        toy = multi_expert(name, 6, ("text",), 1)
        return Expert(name, 6, {"text": lambda xs: toy.encode("text", xs)},
                      spec=ExpertSpec(source=source, kwargs=kwargs or {}, checkpoint=CHECKPOINT, sha256="ab" * 32))

    torch.manual_seed(0)
    head = {"B": MLPProjector(6, 6, hidden=8).eval()}
    both = BoundSpace(named("A", "minilm"), [named("B", "minilm")], "combination", head, lambdas={"text": 0.3})
    card = ModelCard.load(both.save(tmp_path / "same") / "README.md")
    assert EXPERTS.entry("minilm").licence == "apache-2.0"
    assert card.data.license == "apache-2.0" and "license_name" not in card.data.to_dict()
    assert "| 6 | text | model.safetensors | abababababababab | apache-2.0 |" in card.text
    adapted = named("B", "adapted", {"expert": "imagebind_huge"})  # a wrapper: its inner expert's licence
    mixed = BoundSpace(named("A", "minilm"), [adapted], "combination", head, lambdas={"text": 0.3})
    card = ModelCard.load(mixed.save(tmp_path / "mixed") / "README.md")
    data = card.data.to_dict()
    assert (data["license"], data["license_name"], data["license_link"]) == ("other", "expert-licences", "README.md")
    assert "| cc-by-nc-sa-4.0 |" in card.text and "| apache-2.0 |" in card.text
    unknown = BoundSpace(named("A", "minilm"), [named("B", "mypkg.encoders:Mine")], "combination", head,
                         lambdas={"text": 0.3})
    assert "| not stated |" in (unknown.save(tmp_path / "unknown") / "README.md").read_text()
