"""What a bond chooses on its own: the target modalities a projector learns from, the mixture
members applied to each modality, and λ chosen on val (never worse than the parts, ties kept)."""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from memory_cache import MemoryCache

from spacebind import Dataset, Space
from spacebind.bonds.bind import BoundSpace, train_bond
from spacebind.bonds.lambdas import bootstrap_share, choose_lambdas
from spacebind.bonds.linear import LinearMap, fit_least_squares, fit_procrustes
from spacebind.bonds.mixture import ProjectorMixture
from spacebind.bonds.projector import MLPProjector
from spacebind.bonds.targets import choose_targets
from spacebind.cache import CacheSet
from spacebind.errors import InputError
from spacebind.evaluation.sweep import sweep
from spacebind.io.datasets import ClassInfo, Item
from spacebind.training.trainer import TrainConfig

CLASSES = [f"c{k}" for k in range(6)]


def unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1)


def identity_head(dim: int) -> LinearMap:
    head = LinearMap(dim, dim)
    with torch.no_grad():
        head.weight.copy_(torch.eye(dim))
    return head.eval()


def world(noisy_target_audio: bool = True, same_spaces: bool = False, unpaired_val: bool = False,
          image: bool = False):
    """Items of 6 classes with text and audio. The target T embeds text by class (reliable) and
    audio as noise (unreliable); the expert E embeds both by class and item. Each item has its own
    direction too, so retrieval is instance-level. `unpaired_val`: each val item is split into a
    text-only and an audio-only item (labelled pools, as with pseudo datasets). `image`: items have
    an image too, which only T embeds (as its text: a pair of T's own that E cannot carry)."""
    g = torch.Generator().manual_seed(0)
    dim = 16
    t_class, e_class = unit(torch.randn(6, dim, generator=g)), unit(torch.randn(6, dim, generator=g))
    items, t_table, e_table = [], {"text": {}, "audio": {}}, {"text": {}, "audio": {}}
    for split, n in (("train", 240), ("val", 120)):
        for i in range(n):
            k, item = i % 6, f"{split}{i}"
            own = torch.randn(dim, generator=g)
            text_id, audio_id = (f"{item}t", f"{item}a") if unpaired_val and split == "val" else (item, item)
            if text_id == audio_id:
                fields = {"text": f"caption {item}", "audio": f"{item}.wav", **({"image": f"{item}.png"} if image else {})}
                items.append(Item(item, split, CLASSES[k], fields, {}))
            else:
                items += [Item(text_id, split, CLASSES[k], {"text": f"caption {item}"}, {}),
                          Item(audio_id, split, CLASSES[k], {"audio": f"{item}.wav"}, {})]
            e_table["text"][text_id] = unit(e_class[k] + 0.3 * own)
            e_table["audio"][audio_id] = unit(e_class[k] + 0.3 * own + 0.1 * torch.randn(dim, generator=g))
            t_table["text"][text_id] = unit(t_class[k] + 0.3 * own)
            if image:
                t_table.setdefault("image", {})[item] = unit(t_class[k] + 0.3 * own + 0.1 * torch.randn(dim, generator=g))
            t_table["audio"][audio_id] = (unit(torch.randn(dim, generator=g)) if noisy_target_audio
                                          else t_table["text"][text_id])
    if same_spaces:
        t_table, t_class = e_table, e_class
    prompts = {c: t_class[k] for k, c in enumerate(CLASSES)}
    e_prompts = {c: e_class[k] for k, c in enumerate(CLASSES)}
    t = Space.from_encoders("T", {"text": lambda xs: torch.stack([prompts[x] for x in xs]),
                                  "audio": lambda xs: torch.zeros(len(xs), dim),
                                  **({"image": lambda xs: torch.zeros(len(xs), dim)} if image else {})}, dim=dim)
    e = Space.from_encoders("E", {"text": lambda xs: torch.stack([e_prompts[x] for x in xs]),
                                  "audio": lambda xs: torch.zeros(len(xs), dim)}, dim=dim)
    dataset = Dataset.of_items(Path("."), items, [ClassInfo(c) for c in CLASSES])
    return t, e, CacheSet({"T": MemoryCache(t_table), "E": MemoryCache(e_table)}), dataset


def test_auto_targets_drop_the_modality_the_target_embeds_poorly() -> None:
    t, _, caches, dataset = world()
    auto = choose_targets("auto", t, caches, dataset)
    assert auto.kept == ["text"] and auto.measure == "zero-shot acc1"
    assert auto.reliability["text"] > 0.9 and auto.reliability["audio"] < 0.4
    assert auto.admits("audio", "text") and not auto.admits("audio", "audio")
    same, cross, every = (choose_targets(p, t, caches, dataset) for p in ("same", "cross", "all"))
    assert [same.admits("audio", "audio"), same.admits("audio", "text")] == [True, False]
    assert [cross.admits("audio", "audio"), cross.admits("audio", "text")] == [False, True]
    assert every.admits("audio", "audio") and every.admits("text", "audio")
    t_good, _, caches_good, _ = world(noisy_target_audio=False)
    assert choose_targets("auto", t_good, caches_good, dataset).kept == ["text", "audio"]


def test_mixture_members_are_applied_only_to_the_modalities_they_trained_on() -> None:
    torch.manual_seed(0)
    members = [MLPProjector(4, 3, hidden=8).eval() for _ in range(3)]
    mix = ProjectorMixture(members, sources=[["text"], ["text", "audio"], ["audio"]])
    assert mix.members_for("audio") == [members[1], members[2]] and mix.members_for("text") == members[:2]
    assert mix.members_for("image") == members  # no member saw it: all of them, as an unrecorded mixture
    u = Space.from_encoders("U", {"text": lambda xs: unit(torch.ones(len(xs), 3)),
                                  "audio": lambda xs: unit(torch.ones(len(xs), 3))}, dim=3)
    e = Space.from_encoders("E", {"text": lambda xs: torch.randn(len(xs), 4), "audio": lambda xs: torch.randn(len(xs), 4)}, dim=4)
    space = BoundSpace(u, [e], "combination", {"E": mix}, lambdas={"audio": 0.7})
    x, u_a = torch.randn(5, 4), unit(torch.ones(5, 3))
    want = unit(0.3 * u_a + 0.7 * unit(torch.stack([members[1](x), members[2](x)]).mean(dim=0)))  # FreeBind's n(P̄)
    torch.testing.assert_close(space.combine("audio", {"U": u_a, "E": x}), want)
    assert ProjectorMixture.from_config(mix.config).sources == mix.sources


def test_lambda_choice_is_never_worse_than_the_parts_on_val() -> None:
    t, e, caches, dataset = world()
    x = caches.embeddings(e, "text", [it.id for it in dataset.select("train")])
    y = caches.embeddings(t, "text", [it.id for it in dataset.select("train")])
    head = fit_least_squares(torch.cat([x, caches.embeddings(e, "audio", [it.id for it in dataset.select("train")])]),
                             torch.cat([y, y]))
    space = BoundSpace(t, [e], "combination", {"E": head}, lambdas={"text": 0.5, "audio": 0.5})
    choice = choose_lambdas(space, [t, e], caches, dataset)
    assert choice is not None and choice.coarse == {"text": 0.5, "audio": 0.5}
    assert choice.lambdas["audio"] >= 0.8  # the target's own audio is noise
    assert not choice.kept_coarse and choice.confidence >= 0.9
    assert choice.objective >= choice.coarse_objective and min(choice.margins.values()) == choice.objective
    assert set(choice.margins) >= {"text→audio R@1", "audio→text R@1", "audio zero-shot acc1"}


def test_lambda_choice_keeps_the_coarse_lambda_on_a_tie() -> None:
    t, e, caches, dataset = world(same_spaces=True)  # both sides embed alike: every λ gives the same space
    space = BoundSpace(t, [e], "combination", {"E": identity_head(16)}, lambdas={"text": 0.3, "audio": 0.6})
    choice = choose_lambdas(space, [t, e], caches, dataset)
    # any other λ can only win by float rounding: the guard keeps the coarse one
    assert choice.lambdas == {"text": 0.3, "audio": 0.6} and choice.confidence < 0.9
    assert abs(choice.objective - choice.coarse_objective) < 0.02


def test_procrustes_at_lambda_one_ranks_the_experts_own_pairs_exactly_as_the_expert() -> None:
    g = torch.Generator().manual_seed(1)
    x_audio, x_text = unit(torch.randn(40, 8, generator=g)), unit(torch.randn(40, 8, generator=g))
    head = fit_procrustes(torch.cat([x_audio, x_text]), unit(torch.randn(80, 12, generator=g)))  # 8 → 12: an isometry
    u = Space.from_encoders("U", {"text": lambda xs: torch.zeros(len(xs), 12), "audio": lambda xs: torch.zeros(len(xs), 12),
                                  "image": lambda xs: torch.zeros(len(xs), 12)}, dim=12)
    e = Space.from_encoders("E", {"text": lambda xs: torch.zeros(len(xs), 8), "audio": lambda xs: torch.zeros(len(xs), 8)}, dim=8)
    space = BoundSpace(u, [e], "combination", {"E": head}, lambdas={"audio": 1.0, "text": 1.0})
    leaves = lambda x: {"U": unit(torch.randn(40, 12, generator=g)), "E": x}  # noqa: E731
    fused = space.combine("audio", leaves(x_audio)) @ space.combine("text", leaves(x_text)).T
    torch.testing.assert_close(fused, x_audio @ x_text.T)


def test_lambda_choice_takes_an_alternative_head_only_when_it_is_better() -> None:
    t, e, caches, dataset = world()
    train = [it.id for it in dataset.select("train")]
    x = torch.cat([caches.embeddings(e, m, train) for m in ("text", "audio")])
    y = caches.embeddings(t, "text", train).repeat(2, 1)
    good = fit_least_squares(x, y)
    constant = LinearMap(16, 16)  # maps everything to one point: the expert's structure is lost
    with torch.no_grad():
        constant.bias.copy_(torch.randn(16, generator=torch.Generator().manual_seed(3)))
    lambdas = {"text": 0.5, "audio": 0.5}
    poor, fit = (BoundSpace(t, [e], "combination", {"E": h}, lambdas=lambdas) for h in (constant.eval(), good))
    choice = choose_lambdas(poor, [t, e], caches, dataset, alternatives={"linear": fit})
    assert choice.projector == "linear" and choice.candidates["linear"] > choice.candidates[""]
    assert choice.confidence >= 0.9
    kept = choose_lambdas(fit, [t, e], caches, dataset, alternatives={"constant": poor})
    assert kept.projector == "" and kept.candidates[""] > kept.candidates["constant"]


def test_projector_auto_records_both_candidates_and_keeps_the_better_one() -> None:
    t, e, caches, dataset = world()
    space = train_bond(t, [e], "combination", caches, dataset, lambdas={"text": 0.5, "audio": 0.5},
                       train=TrainConfig(epochs=2, hidden=16, batch_size=64), progress=False)
    record = space.choices["projector"]
    assert set(record["candidates"]) == {"procrustes", "mlp"}
    chosen = record["chosen"]
    # the first candidate (FreeBind's MLP) is kept unless Procrustes is better beyond the noise
    assert chosen == "mlp" or record["candidates"]["procrustes"] > record["candidates"]["mlp"]
    assert type(space.heads["E"]).__name__ == ("LinearMap" if chosen == "procrustes" else "ProjectorMixture")
    fixed = train_bond(t, [e], "combination", caches, dataset, projector="procrustes", tune=False, progress=False)
    assert "projector" not in fixed.choices and type(fixed.heads["E"]).__name__ == "LinearMap"


def test_sweep_keeps_the_current_lambda_unless_beaten() -> None:
    t, e, caches, dataset = world(same_spaces=True)
    space = BoundSpace(t, [e], "combination", {"E": identity_head(16)}, lambdas={"text": 0.3, "audio": 0.6})
    result = sweep(space, caches, dataset, split="val", grid=[0.0, 0.5, 1.0], progress=False)
    for task, best in result.best.items():
        beaten = max(result.scores[task]) > result.baseline[task]
        assert beaten or best == {"text": 0.3, "audio": 0.6}, task


def test_sweep_moves_a_task_only_on_a_win_beyond_the_noise() -> None:
    """A grid point that beats the current λ by one query of 120 is a tie (its bootstrap share is
    below 0.9): the task keeps the current λ; a win in every resample moves it there."""
    t, e, caches, dataset = world()
    current = {"text": 0.6, "audio": 0.9}
    space = BoundSpace(t, [e], "combination", {"E": identity_head(16)}, lambdas=current)
    result = sweep(space, caches, dataset, split="val", grid=[0.6, 0.7, 0.8, 0.9, 1.0], progress=False)
    task = "text→audio R@1"
    assert max(result.scores[task]) - result.baseline[task] == pytest.approx(1 / 120, abs=1e-6)
    assert result.confidence[task] < 0.9 and result.best[task] == current
    task = "audio zero-shot acc1"
    assert max(result.scores[task]) - result.baseline[task] > 0.1 and result.confidence[task] >= 0.9
    assert result.scores[task][result.points.index(result.best[task])] == max(result.scores[task])
    assert result.to_json()["confidence"] == result.confidence


def test_sweep_over_the_channels_kappa_keeps_the_current_unless_beaten_and_saves_it_as_presets() -> None:
    from spacebind.evaluation.sweep import with_best_presets

    t, e, caches, dataset = world()
    space = BoundSpace(t, [e], "combination", {"E": identity_head(16)}, lambdas={"text": 0.3, "audio": 0.6},
                       channels={"text": 0.999, "audio": 0.999})
    params = ["channel:text", "channel:audio"]
    result = sweep(space, caches, dataset, split="val", grid=[0.0, 0.5, 1.0], modalities=params, progress=False)
    assert result.current == {"channel:text": 0.999, "channel:audio": 0.999}
    assert result.grid == [0.0, 0.5, 0.999] and len(result.points) == 9  # κ stops at the prior, not 1
    for task, best in result.best.items():
        beaten = max(result.scores[task]) > result.baseline[task]
        assert beaten or best == result.current, task
        if beaten:
            assert result.scores[task][result.points.index(best)] == max(result.scores[task])
    # a κ of 0.0 on both sides turns the expert's part off: audio↔text is the bond's alone, which differs
    at_zero = result.points.index({"channel:text": 0.0, "channel:audio": 0.0})
    assert result.scores["text→audio R@1"][at_zero] != result.baseline["text→audio R@1"]
    saved = with_best_presets(space, result)
    task = "audio→text R@1"
    kappas = {p.removeprefix("channel:"): v for p, v in result.best[task].items()}
    assert saved.with_lambdas("best:audio-text").channels == kappas and saved.channels == space.channels
    with pytest.raises(InputError, match="cannot sweep"):
        sweep(BoundSpace(t, [e], "combination", {"E": identity_head(16)}), caches, dataset, modalities=params,
              progress=False)
    with pytest.raises(InputError, match="not both at once"):
        sweep(space, caches, dataset, modalities=["text", "channel:audio"], progress=False)


@pytest.mark.parametrize("pairing", ["nope"])
def test_unknown_pairing_is_named(pairing: str) -> None:
    t, _, caches, dataset = world()
    with pytest.raises(ValueError, match="unknown pairing 'nope'"):
        choose_targets(pairing, t, caches, dataset)


def test_sweep_figure_shares_one_scale_and_marks_current_and_best(tmp_path: Path) -> None:
    from spacebind.evaluation.sweep import SweepResult, plot_sweep, sweep_figure

    grid = [0.2, 0.4, 0.6]
    points = [{"text": a, "audio": b} for a in grid for b in grid]
    scores = {"text→audio R@1": [0.1 * i for i in range(9)], "image zero-shot acc1": [0.5] * 9}
    result = SweepResult(["text", "audio"], grid, points, scores, baseline={"text→audio R@1": 0.4, "image zero-shot acc1": 0.5},
                         best={"text→audio R@1": points[8], "image zero-shot acc1": {"text": 0.4, "audio": 0.2}},
                         split="val", current={"text": 0.4, "audio": 0.2})
    fig = sweep_figure(result)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == list(scores)
    limits = {tuple(ax.images[0].get_clim()) for ax in panels}
    assert limits == {(-40.0, 40.0)}  # one colour scale for all panels: the largest change is 0.8 − 0.4
    assert [t.get_text() for t in panels[0].get_xticklabels()] == ["0.2", "0.4", "0.6"]  # the grid's own values
    assert len(panels[0].texts) == 9 and panels[1].texts[0].get_text() == "+0.0"
    assert sum(len(ax.lines) for ax in panels) == 4  # current (□) and best (★) on each panel
    assert "val split" in fig._suptitle.get_text()
    assert plot_sweep(result, tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_sweep_title_names_split_and_item_count() -> None:
    from spacebind.evaluation.sweep import SweepResult, sweep_figure

    points = [{"text": 0.0}, {"text": 1.0}]
    result = SweepResult(["text"], [0.0, 1.0], points, {"text→image R@1": [0.1, 0.2]}, {"text→image R@1": 0.1},
                         {"text→image R@1": {"text": 1.0}}, split="val", current={"text": 0.0}, n_items=300)
    assert "val split, n = 300 items" in sweep_figure(result)._suptitle.get_text()
    assert result.to_json()["n_items"] == 300


def test_a_combination_channel_keeps_the_experts_pairs_unless_val_shows_better() -> None:
    t, e, caches, dataset = world()
    space = train_bond(t, [e], "combination", caches, dataset, projector="procrustes", progress=False)
    choice = space.choices["lambdas"]
    if space.channels is not None:
        assert space.dim == 32 and space.blocks == (16, 16)
        kept = all(v == 0.999 for v in space.channels.values())
        assert kept or choice["channel_confidence"] >= 0.9
        if kept:  # the expert ranks its own pairs: never below it on val
            assert min(choice["margins"][k] for k in ("text→audio R@1", "audio→text R@1")) >= 0
    plain = train_bond(t, [e], "combination", caches, dataset, projector="procrustes", channel=False, progress=False)
    assert plain.channels is None and plain.dim == 16 and plain.choices["lambdas"]["channels"] is None


def test_class_level_evidence_alone_leaves_the_channel_at_its_prior(tmp_path: Path) -> None:
    """Val holds unpaired pools: class-level tasks only, which cannot see the instance-level ranking
    the channel keeps, so κ is not searched. With paired val items it is searched (same bond)."""
    t, e, caches, dataset = world(unpaired_val=True)
    space = train_bond(t, [e], "combination", caches, dataset, projector="procrustes", progress=False)
    choice = space.choices["lambdas"]
    assert choice["channels"] == {"text": 0.999, "audio": 0.999} and choice["channel_confidence"] is None
    assert choice["channel_unmoved"] == "the split has no paired items of the modalities the channel carries"
    assert {"text→audio class P@1", "audio zero-shot acc1"} <= set(choice["margins"])  # there was class-level evidence
    card = (space.save(tmp_path / "ckpt") / "README.md").read_text()
    assert "kept at the prior: the split has no paired items" in card
    t, e, caches, dataset = world()
    paired = train_bond(t, [e], "combination", caches, dataset, projector="procrustes", progress=False)
    assert paired.choices["lambdas"]["channel_unmoved"] == "" and paired.choices["lambdas"]["channel_confidence"] is not None


def test_a_lambda_chosen_on_pairs_the_channel_then_keeps_is_chosen_again_on_the_other_tasks(tmp_path: Path) -> None:
    """Stage 1 moves λ on text↔audio at κ = 0; κ stays at the prior, so the expert ranks those pairs
    and that λ changes nothing the split can see: it returns to the coarse λ, and the card says so.
    With images (pairs only the base has, which λ text and λ audio still change) λ is chosen again on
    those tasks alone: stage 1's text λ, chosen with text↔audio in the objective, gives way."""
    t, e, caches, dataset = world(unpaired_val=True)
    head = fit_procrustes(*(torch.cat([caches.embeddings(s, m, [it.id for it in dataset.select("train")])
                                       for m in ("text", "audio")]) for s in (e, t)))
    unweighed = BoundSpace(t, [e], "combination", {"E": head}, channels={})
    assert {m: unweighed.lambda_for(m) for m in ("text", "audio")} == {"text": 0.1, "audio": 0.5}  # versatile
    stage1 = choose_lambdas(BoundSpace(t, [e], "combination", {"E": head}), [t, e], caches, dataset)
    assert stage1.channels is None and stage1.lambdas["audio"] >= 0.8  # no channel: the λ move stands
    choice = choose_lambdas(unweighed, [t, e], caches, dataset)
    assert choice.channels == {"text": 0.999, "audio": 0.999} and not choice.kept_coarse
    assert choice.lambdas == choice.coarse == {"text": 0.1, "audio": 0.5}
    assert choice.undone["audio"] >= 0.8  # what stage 1 chose, on pairs the channel then kept
    kept = BoundSpace(t, [e], "combination", {"E": head}, lambdas=choice.lambdas, channels=choice.channels,
                      choices={"lambdas": choice.to_json()})
    card = (kept.save(tmp_path / "ckpt") / "README.md").read_text()
    assert f"chose text {choice.undone.get('text', 0.1):g}, audio {choice.undone['audio']:g} (coarse" in card
    assert "after κ: " in card and "λ audio to 0.5" in card and "the channel keeps" in card and choice.after_channel is None
    t, e, caches, dataset = world(image=True)
    with_image = choose_lambdas(BoundSpace(t, [e], "combination", {"E": head}, channels={}), [t, e], caches, dataset)
    assert "image→text R@1" in with_image.margins
    # the five tasks with images: text↔image, audio↔image, image zero-shot
    assert with_image.after_channel["tasks"] == 5 and not with_image.after_channel["kept_coarse"]
    assert set(with_image.undone) == {"text"} and with_image.lambdas["text"] < with_image.undone["text"]
    assert with_image.lambdas != with_image.coarse
    assert min(with_image.margins[t] for t in ("image→text R@1", "text→image R@1", "image zero-shot acc1")) >= 0
    card = (BoundSpace(t, [e], "combination", {"E": head}, lambdas=with_image.lambdas, channels=with_image.channels,
                       choices={"lambdas": with_image.to_json()}).save(tmp_path / "img") / "README.md").read_text()
    assert f"after κ: λ text to {with_image.lambdas['text']:g} (chosen again on the 5 val tasks" in card


def test_the_guard_resamples_whole_groups_so_one_speakers_gain_is_not_ten_pieces_of_evidence() -> None:
    """Ten groups (speakers) of ten queries; the challenger is right where the incumbent is wrong on
    the ten queries of one speaker only. Resampling items, nearly every resample holds some of them;
    resampling speakers, a resample misses that speaker with probability 0.9^10 = 0.35."""
    challenger = {"audio→text R@1": torch.tensor([True] * 10 + [False] * 90)}
    incumbent = {"audio→text R@1": torch.zeros(100, dtype=torch.bool)}
    best_part = {"audio→text R@1": torch.zeros(100, dtype=torch.bool)}
    by_item = {"audio→text R@1": torch.arange(100)}
    by_speaker = {"audio→text R@1": torch.arange(100) // 10}
    assert bootstrap_share(challenger, incumbent, best_part, by_item, 400, seed=0) > 0.99
    share = bootstrap_share(challenger, incumbent, best_part, by_speaker, 400, seed=0)
    assert 0.55 < share < 0.75  # 1 − 0.9^10 = 0.65: below the 0.9 the guard needs
    # one draw for every task: a challenger that gains on one task exactly where it loses on another
    # (the same speaker's queries) never wins; drawn per task, it would whenever the draws differ
    gain, none = challenger["audio→text R@1"], incumbent["audio→text R@1"]
    two = {"audio→text R@1": gain, "audio zero-shot acc1": none}
    base = {"audio→text R@1": none, "audio zero-shot acc1": gain}
    groups = {t: by_speaker["audio→text R@1"] for t in two}
    assert bootstrap_share(two, base, base, groups, 200, seed=0) == 0.0


def test_groups_name_an_item_attribute_and_items_without_it_stand_alone(tmp_path: Path) -> None:
    t, e, caches, dataset = world()
    items = [Item(it.id, it.split, it.label, it.fields, {"speaker": f"s{int(it.id[3:]) % 12}"} if it.split == "val" else {})
             for it in dataset.iter_items()]
    spoken = Dataset.of_items(dataset.root, items, [ClassInfo(c) for c in CLASSES])
    head = identity_head(16)
    space = BoundSpace(t, [e], "combination", {"E": head}, lambdas={"text": 0.5, "audio": 0.5})
    by_speaker = choose_lambdas(space, [t, e], caches, spoken, groups="speaker")
    by_item = choose_lambdas(space, [t, e], caches, spoken)
    assert by_speaker.groups == "speaker" and by_item.groups is None
    assert by_speaker.lambdas == by_item.lambdas  # the search is the same; only the guard's evidence differs
    with pytest.raises(InputError, match="groups: 'no_such_attribute' is not an attribute of any val item"):
        choose_lambdas(space, [t, e], caches, spoken, groups="no_such_attribute")  # not silently the item bootstrap
    train_only = Dataset.of_items(dataset.root, [Item(it.id, it.split, it.label, it.fields, {"speaker": "s"} if it.split == "train" else {})
                                                 for it in dataset.iter_items()], [ClassInfo(c) for c in CLASSES])
    with pytest.raises(InputError, match="their attributes: none"):
        choose_lambdas(space, [t, e], caches, train_only, groups="speaker")
    spoken_space = BoundSpace(t, [e], "combination", {"E": head}, lambdas=by_speaker.lambdas,
                              choices={"lambdas": by_speaker.to_json()})
    card = (spoken_space.save(tmp_path / "ckpt") / "README.md").read_text()
    assert "bootstrap resamples (whole speaker groups)" in card


def test_out_of_fold_hits_score_every_train_item_once_with_a_bond_that_never_saw_it(monkeypatch) -> None:
    """`benchmarks/kappa_crossfit.py`: each fold is scored by a bond trained without it."""
    from benchmarks.kappa_crossfit import CARRIED, KAPPAS, fold_hits

    bind = importlib.import_module("spacebind.bonds.bind")  # the module (the package exports a function `bind`)

    t, e, caches, dataset = world(noisy_target_audio=False)
    config = TrainConfig(epochs=2, batch_size=64, hidden=16, seed=0)
    heads = train_bond(t, [e], "combination", caches, dataset, projector="mlp", tune=False, train=config,
                       progress=False).heads
    space = BoundSpace(t, [e], "combination", heads, channels={"text": 0.999, "audio": 0.999})
    learned: list[set[str]] = []  # the train items each fold's bond learns from
    original = bind.train_heads

    def spy(src, tgt, caches, split, **kwargs):
        learned.append({it.id for it in split.select("train")})
        return original(src, tgt, caches, split, **kwargs)

    monkeypatch.setattr(bind, "train_heads", spy)
    fused, expert, reference, expert_paired = fold_hits(space, caches, dataset, 3, config, seed=0)
    train_ids = {it.id for it in dataset.select("train")}
    held_out = [train_ids - ids for ids in learned]
    assert len(learned) == 3 and all(len(ids) == 160 for ids in learned)
    assert set.union(*held_out) == train_ids and sum(map(len, held_out)) == len(train_ids)  # each once
    for k in KAPPAS:
        assert {t: len(h) for t, h in fused[k].items()} == {t: len(train_ids) for t in CARRIED}
    assert {t: len(h) for t, h in reference.items()} == {t: len(train_ids) for t in CARRIED[:2]}
    # near κ = 1 the channel ranks as the expert: its out-of-fold hits are the expert's
    for task in CARRIED[:2]:
        assert abs(fused[0.999][task].float().mean() - expert[task].float().mean()) <= 2 / len(train_ids)
        torch.testing.assert_close(expert[task].float().mean(), expert_paired[task].float().mean())
