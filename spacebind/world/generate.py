"""Write a procedural-world dataset to disk: PNG, WAV and NPY files, manifest.jsonl, classes.json."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from spacebind.fileio import atomic_path, write_json, write_text
from spacebind.progress import track
from spacebind.world.concepts import Concept, Instance, make_concepts, sample_instances
from spacebind.world.render import SAMPLE_RATE, render_audio, render_caption, render_image, render_points

DEFAULT_SIZES = {"train": 2000, "val": 300, "test": 500}
CLASS_TEMPLATES = ("a {}", "a photo of a {}", "the sound of a {}", "a 3d model of a {}")
_SPLIT_OFFSET = {"train": 0, "val": 1, "test": 2}


def split_instances(concepts: list[Concept], sizes: dict[str, int], seed: int) -> dict[str, list[Instance]]:
    """Instances per split, each split from its own stream of `seed`."""
    return {s: sample_instances(concepts, n, seed * 10 + _SPLIT_OFFSET[s]) for s, n in sizes.items() if n > 0}


def _write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def _write_wav(path: Path, wave: np.ndarray) -> None:
    import soundfile as sf

    with atomic_path(path) as tmp:
        sf.write(str(tmp), wave, SAMPLE_RATE, subtype="PCM_16", format="WAV")


def _write_npy(path: Path, points: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, points)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def generate_world(
    out: str | Path,
    seed: int = 0,
    sizes: dict[str, int] | None = None,
    concepts_seed: int = 0,
    num_concepts: int = 24,
    progress: bool = True,
) -> Path:
    """Generate a dataset of real files; the manifest is written last, so its presence means done."""
    out = Path(out)
    sizes = dict(DEFAULT_SIZES if sizes is None else sizes)
    unknown = set(sizes) - set(_SPLIT_OFFSET)
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)}; expected train, val, test")
    concepts = make_concepts(concepts_seed, num_concepts)
    lines = []
    rows = [(split, i, inst) for split, insts in split_instances(concepts, sizes, seed).items() for i, inst in enumerate(insts)]
    for split, i, inst in track(rows, f"generating world (seed {seed})", show=progress):
        stem = f"{split}-{i:06d}"
        _write_png(out / "image" / f"{stem}.png", render_image(inst))
        _write_wav(out / "audio" / f"{stem}.wav", render_audio(inst))
        _write_npy(out / "point" / f"{stem}.npy", render_points(inst))
        lines.append(json.dumps({
            "id": f"s{seed}-{stem}", "split": split, "label": inst.concept.name,
            "image": f"image/{stem}.png", "audio": f"audio/{stem}.wav", "point": f"point/{stem}.npy",
            "text": render_caption(inst),
            "attributes": {"size": round(inst.size, 4), "size_word": inst.size_word,
                           "intensity": round(inst.intensity, 4), "intensity_word": inst.intensity_word},
        }))
    write_json(out / "classes.json", {
        "templates": list(CLASS_TEMPLATES),
        "classes": [{"name": c.name, "synonyms": [*c.synonyms, *c.heldout_synonyms],
                     "heldout_synonyms": list(c.heldout_synonyms)} for c in concepts],
        "world": {"concepts_seed": concepts_seed, "num_concepts": num_concepts, "seed": seed},
    })
    write_text(out / "manifest.jsonl", "\n".join(lines) + "\n")
    return out
