"""The procedural world: deterministic, real files, size visible everywhere, held-out words unused."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
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
