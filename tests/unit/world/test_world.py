"""The procedural world: deterministic, real files, size visible everywhere, held-out words unused."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from spacebind.io.datasets import Dataset
from spacebind.world.concepts import INTENSITY_WORDS, SIZE_WORDS, Instance, make_concepts, sample_instances
from spacebind.world.generate import generate_world
from spacebind.world.render import SAMPLE_RATE, render_audio, render_caption, render_image, render_points

SIZES = {"train": 12, "val": 4, "test": 8}


def test_generation_is_deterministic_and_files_are_real(tmp_path: Path) -> None:
    a = generate_world(tmp_path / "a", seed=3, sizes=SIZES, progress=False)
    b = generate_world(tmp_path / "b", seed=3, sizes=SIZES, progress=False)
    c = generate_world(tmp_path / "c", seed=4, sizes=SIZES, progress=False)
    assert (a / "manifest.jsonl").read_text() == (b / "manifest.jsonl").read_text()
    for rel in ["image/train-000003.png", "audio/test-000001.wav", "point/val-000002.npy"]:
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    assert (a / "image/train-000003.png").read_bytes() != (c / "image/train-000003.png").read_bytes()
    classes = lambda root: json.loads((root / "classes.json").read_text())["classes"]  # noqa: E731
    assert classes(a) == classes(c)  # the concept set does not depend on the instance seed
    data = Dataset.load(a)
    assert [len(data.select(s)) for s in ("train", "val", "test")] == [12, 4, 8]
    item = data.select("test")[0]
    assert set(item.fields) == {"image", "audio", "point", "text"} and item.label in data.class_names
    image = np.asarray(Image.open(item.fields["image"]))
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    wave, rate = sf.read(item.fields["audio"])
    assert rate == SAMPLE_RATE and wave.shape == (8000,)
    assert np.load(item.fields["point"]).shape == (384, 3)
    assert item.attributes["size_word"] in item.fields["text"]


def test_manifest_lines_describe_their_instances(tmp_path: Path) -> None:
    root = generate_world(tmp_path / "w", seed=5, sizes=SIZES, progress=False)
    lines = [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]
    names = {c.name: c for c in make_concepts(0, 24)}
    assert len({line["id"] for line in lines}) == len(lines) == sum(SIZES.values())
    for line in lines:
        assert set(line) == {"id", "split", "label", "image", "audio", "point", "text", "attributes"}
        assert all((root / line[m]).is_file() for m in ("image", "audio", "point"))
        attrs, words = line["attributes"], set(line["text"].replace(",", " ").split())
        assert attrs["size_word"] == SIZE_WORDS[min(int(attrs["size"] * 4), 3)] and attrs["size_word"] in words
        assert not words & (set(INTENSITY_WORDS) - {attrs["intensity_word"]})  # some templates omit it
        assert words & set(names[line["label"]].caption_names)  # the label's name or a training synonym


def test_concepts_share_attributes_but_signatures_are_unique() -> None:
    concepts = make_concepts(0, 24)
    assert len({c.name for c in concepts}) == 24
    assert len({(c.shape, c.colour) for c in concepts}) == 24  # each image signature is unique
    assert len({c.shape for c in concepts}) < 24 and len({c.colour for c in concepts}) < 24  # shared parts
    assert len({(c.pitch, c.timbre, c.rhythm) for c in concepts}) == 24
    assert make_concepts(0, 24) == concepts and make_concepts(1, 24) != concepts


def _object_pixels(image: np.ndarray, colour: np.ndarray) -> int:
    return int((np.abs(image.astype(float) / 255 - colour).sum(axis=-1) < 0.25).sum())


def test_size_shows_in_every_modality() -> None:
    concepts = make_concepts(0, 24)
    small_area, big_area, small_pitch, big_pitch, small_extent, big_extent = [], [], [], [], [], []
    for concept in concepts:
        for seed in range(3):
            small, big = Instance(concept, 0.05, 1.0, seed), Instance(concept, 0.95, 1.0, seed)
            colour = np.array(render_image(replace(big, size=0.95))[16, 16], float) / 255
            small_area.append(_object_pixels(render_image(small), colour))
            big_area.append(_object_pixels(render_image(big), colour))
            for inst, out in [(small, small_pitch), (big, big_pitch)]:
                spectrum = np.abs(np.fft.rfft(render_audio(inst)))
                freqs = np.fft.rfftfreq(8000, 1 / SAMPLE_RATE)
                out.append((spectrum * freqs).sum() / spectrum.sum())  # spectral centroid
            small_extent.append(np.abs(render_points(small)).max())
            big_extent.append(np.abs(render_points(big)).max())
    assert np.mean(big_area) > 3 * np.mean(small_area)
    assert np.mean(np.array(big_pitch) < np.array(small_pitch)) > 0.9  # bigger sounds lower
    assert np.all(np.array(big_extent) > np.array(small_extent))
    words = {render_caption(i).split()[1] for i in sample_instances(concepts, 200, 0) if render_caption(i).startswith("a ")}
    assert words & set(SIZE_WORDS)


def test_heldout_synonyms_never_appear_in_captions(tmp_path: Path) -> None:
    concepts = make_concepts(0, 24)
    heldout = {w for c in concepts for w in c.heldout_synonyms}
    captions = [render_caption(i) for i in sample_instances(concepts, 3000, 11)]
    assert not heldout & {w for cap in captions for w in cap.replace(",", " ").split()}
    root = generate_world(tmp_path / "w", seed=0, sizes={"test": 4}, progress=False)
    listed = json.loads((root / "classes.json").read_text())["classes"]
    assert all(set(c["heldout_synonyms"]) <= set(c["synonyms"]) for c in listed)


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_an_interrupted_generate_leaves_the_old_world_whole(tmp_path: Path, monkeypatch) -> None:
    from spacebind.world import generate

    world = generate_world(tmp_path / "w", seed=1, sizes={"train": 6, "test": 4}, progress=False)
    before = tree(world)
    real, calls = generate.render_caption, []

    def killed_midway(inst):
        calls.append(inst)
        if len(calls) == 5:
            raise KeyboardInterrupt("killed")
        return real(inst)

    monkeypatch.setattr(generate, "render_caption", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        generate_world(tmp_path / "w", seed=2, sizes={"train": 6, "test": 4}, progress=False)
    monkeypatch.undo()
    assert tree(world) == before and sorted(p.name for p in tmp_path.iterdir()) == ["w"]
    generate_world(tmp_path / "w", seed=2, sizes={"train": 6, "test": 4}, progress=False)
    fresh = generate_world(tmp_path / "fresh", seed=2, sizes={"train": 6, "test": 4}, progress=False)
    assert tree(world) == tree(fresh)  # replaced whole: no file of the old world is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh", "w"]


def test_generating_into_a_directory_that_is_not_a_world_is_refused(tmp_path: Path) -> None:
    from spacebind.errors import InputError

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="mine is not empty and not a generated world"):
        generate_world(tmp_path / "mine", seed=0, sizes={"test": 2}, progress=False)
    assert tree(tmp_path / "mine") == {"notes.txt": b"keep me"}


def test_a_full_disk_is_one_line_naming_the_file(tmp_path: Path, monkeypatch) -> None:
    import errno

    from typer.testing import CliRunner

    from spacebind.cli import app

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    result = CliRunner().invoke(app, ["world", "generate", str(tmp_path / "w"), "--train", "2", "--val", "0", "--test", "0"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "train-000000.wav: cannot write: No space left on device (errno 28)" in " ".join(result.output.split())
    assert not (tmp_path / "w").exists() and not [p for p in tmp_path.iterdir() if p.name != "w"]


def test_unpaired_world_has_unimodal_train_pools_and_paired_evaluation(tmp_path: Path) -> None:
    root = generate_world(tmp_path / "pools", seed=3, sizes=SIZES, progress=False, unpaired=True)
    dataset = Dataset.load(root)
    modalities = ("image", "audio", "point", "text")
    train = dataset.select("train")
    assert all(sum(m in it.fields for m in modalities) == 1 for it in train)
    assert {m: sum(m in it.fields for it in train) for m in modalities} == {m: 3 for m in modalities}
    assert all(all(m in it.fields for m in modalities) for it in dataset.select("test"))
    paired = Dataset.load(generate_world(tmp_path / "paired", seed=3, sizes=SIZES, progress=False))
    assert [it.fields["text"] for it in paired.select("test")] == [it.fields["text"] for it in dataset.select("test")]


def test_domain_specialists_learn_only_their_half_of_the_concepts() -> None:
    """A world expert's `domain` (k, n) keeps the concepts whose index is k modulo n; without one the
    pretraining stream is every concept, as it always was (cached experts stay valid)."""
    from spacebind.world.experts import CONFIGS
    from spacebind.world.training import pretraining_instances

    everything = pretraining_instances(0, 24, 240)
    assert [i.seed for i in everything] == [i.seed for i in sample_instances(make_concepts(0, 24), 240, seed=1_000_003)]
    assert {i.concept.index for i in everything} == set(range(24))
    halves = [CONFIGS[f"world_audio_text_{h}"].domain for h in ("even", "odd")]
    seen = [{i.concept.index for i in pretraining_instances(0, 24, 240, d)} for d in halves]
    assert seen[0] == set(range(0, 24, 2)) and seen[1] == set(range(1, 24, 2))
    assert CONFIGS["world_audio_text"].domain is None


def test_text_towers_keep_every_word_the_world_writes_distinct() -> None:
    """No two words of the world's captions, class prompts, knowledge descriptions or held-out
    synonyms share all their buckets (one crc32 into 4096 buckets made "automobile" and "bell",
    "and" and "toad" the same word to every world text expert)."""
    import itertools
    import re

    from spacebind.unibind.knowledge import world_knowledge
    from spacebind.world.concepts import WORDS
    from spacebind.world.generate import CLASS_TEMPLATES
    from spacebind.world.render import TEMPLATES
    from spacebind.world.towers import TextTower, word_buckets

    text = " ".join([*TEMPLATES, *CLASS_TEMPLATES, *itertools.chain(*WORDS), *SIZE_WORDS, *INTENSITY_WORDS,
                     *itertools.chain(*world_knowledge(0, len(WORDS)).values())])
    words = sorted(set(re.findall(r"[a-z0-9]+", text.lower())))
    assert {"automobile", "bell", "and", "toad", "sedan", "hz"} <= set(words) and len(words) > 150
    buckets = TextTower(dim=4).buckets
    keys = {w: frozenset(word_buckets(w, buckets)) for w in words}
    assert len(set(keys.values())) == len(words)
    assert all(len(k) == 2 for k in keys.values())  # two different buckets per word
    ids, offsets = TextTower(dim=4).preprocess(["A car, and bell"])
    assert ids.tolist() == [b for w in ("a", "car", "and", "bell") for b in word_buckets(w, buckets)] and offsets.tolist() == [0]
