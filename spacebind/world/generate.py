"""Write a procedural-world dataset to disk: PNG, WAV and NPY files, manifest.jsonl, classes.json.

A world is generated in a hidden sibling directory (`.<name>.new-*`, one job at a time) and
renamed into place whole, replacing a world that was there: the target is always absent, the
previous world or the complete new one, never a manifest over a mix of old and new files. A
target that holds anything but a world is refused.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from spacebind.errors import InputError
from spacebind.io.events import Events
from spacebind.io.files import atomic_path, write_json, write_text
from spacebind.io.locks import replacing_dir
from spacebind.io.progress import track
from spacebind.io.video import Video
from spacebind.training.trainer import MAX_SEED
from spacebind.world.concepts import WORDS, Concept, Instance, make_concepts, sample_instances
from spacebind.world.render import SAMPLE_RATE, render_audio, render_caption, render_image, render_points
from spacebind.world.sensors import render_events, render_thermal, render_video

DEFAULT_SIZES = {"train": 2000, "val": 300, "test": 500}
CLASS_TEMPLATES = ("a {}", "a photo of a {}", "the sound of a {}", "a 3d model of a {}")
_SPLIT_OFFSET = {"train": 0, "val": 1, "test": 2}
SENSORS = ("video", "thermal", "event")  # optional modalities, off by default


def split_instances(concepts: list[Concept], sizes: dict[str, int], seed: int) -> dict[str, list[Instance]]:
    """Instances per split, each split from its own stream of `seed`."""
    return {s: sample_instances(concepts, n, seed * 10 + _SPLIT_OFFSET[s]) for s, n in sizes.items() if n > 0}


def _write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def _write_wav(path: Path, wave: np.ndarray) -> None:
    import soundfile as sf

    buf = io.BytesIO()  # soundfile reports a failed file write as its own error; a plain write raises OSError
    sf.write(buf, wave, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def _write_npy(path: Path, points: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, points)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def _write_apng(path: Path, video: Video) -> None:
    from PIL import Image

    first, *rest = (Image.fromarray(f) for f in video.frames)
    with atomic_path(path) as tmp:
        first.save(tmp, format="PNG", save_all=True, append_images=rest, duration=1000 / video.fps, loop=0)


def _write_thermal(path: Path, thermal: np.ndarray) -> None:
    _write_png(path, np.rint(thermal * 65535).astype(np.uint16))  # 16-bit grayscale


def _write_events(path: Path, events: Events) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, x=events.x.astype(np.int16), y=events.y.astype(np.int16), t=events.t,
                 p=events.p.astype(np.int8), height=events.height, width=events.width)


def _write_sensors(out: Path, stem: str, inst: Instance, sensors: tuple[str, ...]) -> dict[str, str]:
    """Write the requested sensor files of one instance; returns their manifest fields."""
    fields = {}
    if "video" in sensors:
        _write_apng(out / "video" / f"{stem}.png", render_video(inst))
        fields["video"] = f"video/{stem}.png"
    if "thermal" in sensors:
        _write_thermal(out / "thermal" / f"{stem}.png", render_thermal(inst))
        fields["thermal"] = f"thermal/{stem}.png"
    if "event" in sensors:
        _write_events(out / "event" / f"{stem}.npz", render_events(inst))
        fields["event"] = f"event/{stem}.npz"
    return fields


POOL_MODALITIES = ("image", "audio", "point", "text")


def _one_modality(row: dict, keep: str) -> dict:
    """A manifest row reduced to one modality's field (a unimodal pool item); files stay on disk."""
    return {k: v for k, v in row.items() if k == keep or k not in (*POOL_MODALITIES, *SENSORS)}


def generate_world(
    out: str | Path,
    seed: int = 0,
    sizes: dict[str, int] | None = None,
    concepts_seed: int = 0,
    num_concepts: int = 24,
    progress: bool = True,
    sensors: tuple[str, ...] | list[str] = (),
    unpaired: bool = False,
) -> Path:
    """Generate a dataset of real files at `out`, replacing a world there as a unit (module docstring).

    `sensors` adds any of the optional modalities video (animated PNG), thermal (16-bit PNG) and
    event (.npz of x, y, t, p); the other modalities' files are the same with or without them.
    `unpaired` lists each train item with one modality only (image, audio, point, text in turn).

    Raises:
        InputError: a seed, split size or `num_concepts` out of range (the recipe's `data.world`
            bounds; a split of 0 items is left out), unknown splits or sensors, or `out` holds
            files that are not a world.
        LockError: another job is generating this world.
    """
    root = Path(out).resolve()
    sizes = dict(DEFAULT_SIZES if sizes is None else sizes)
    unknown = set(sizes) - set(_SPLIT_OFFSET)
    if unknown:
        raise InputError(f"unknown split(s) {sorted(unknown)}; expected train, val, test")
    _check_ranges(seed, sizes, concepts_seed, num_concepts)
    bad = sorted(set(sensors) - set(SENSORS))
    if bad:
        raise InputError(f"--sensors / sensors: unknown sensor modality(ies) {bad}; expected any of {', '.join(SENSORS)}")
    sensors = tuple(m for m in SENSORS if m in sensors)
    with replacing_dir(root, "world being generated") as partial:
        if root.is_dir() and any(root.iterdir()) and not (root / "classes.json").is_file():
            raise InputError(f"{root} is not empty and not a generated world; generate into a new or empty directory")
        _generate(partial, seed, sizes, concepts_seed, num_concepts, progress, sensors, unpaired)
    return Path(out)


def _check_ranges(seed: int, sizes: dict[str, int], concepts_seed: int, num_concepts: int) -> None:
    """Raise an InputError naming the first option outside the range the recipe's `data.world` allows;
    a split size may also be 0 here (the split is left out), as long as some split has items."""
    for option, value in (("seed", seed), ("concepts_seed", concepts_seed)):
        if not 0 <= value < MAX_SEED:
            raise InputError(f"--{option.replace('_', '-')} / {option}: {value} is out of range; "
                             f"expected 0 to {MAX_SEED - 1}")
    if not 2 <= num_concepts <= len(WORDS):
        raise InputError(f"--num-concepts / num_concepts: {num_concepts} is out of range; expected 2 to {len(WORDS)}")
    for split, n in sizes.items():
        if n < 0:
            raise InputError(f"--{split} / sizes[{split!r}]: {n} items; expected 0 (leave the split out) or more")
    if not any(sizes.values()):
        raise InputError("--train / --val / --test: every split has 0 items; give at least one split 1 or more")


def _generate(out: Path, seed: int, sizes: dict[str, int], concepts_seed: int, num_concepts: int, progress: bool,
              sensors: tuple[str, ...], unpaired: bool) -> None:
    """Write the world's files into `out`."""
    concepts = make_concepts(concepts_seed, num_concepts)
    lines = []
    rows = [(split, i, inst) for split, insts in split_instances(concepts, sizes, seed).items() for i, inst in enumerate(insts)]
    for split, i, inst in track(rows, f"generating world (seed {seed})", show=progress):
        stem = f"{split}-{i:06d}"
        _write_png(out / "image" / f"{stem}.png", render_image(inst))
        _write_wav(out / "audio" / f"{stem}.wav", render_audio(inst))
        _write_npy(out / "point" / f"{stem}.npy", render_points(inst))
        row = {
            "id": f"s{seed}-{stem}", "split": split, "label": inst.concept.name,
            "image": f"image/{stem}.png", "audio": f"audio/{stem}.wav", "point": f"point/{stem}.npy",
            **_write_sensors(out, stem, inst, sensors),
            "text": render_caption(inst),
            "attributes": {"size": round(inst.size, 4), "size_word": inst.size_word,
                           "intensity": round(inst.intensity, 4), "intensity_word": inst.intensity_word},
        }
        if unpaired and split == "train":
            row = _one_modality(row, POOL_MODALITIES[i % len(POOL_MODALITIES)])
        lines.append(json.dumps(row))
    write_json(out / "classes.json", {
        "templates": list(CLASS_TEMPLATES),
        "classes": [{"name": c.name, "synonyms": [*c.synonyms, *c.heldout_synonyms],
                     "heldout_synonyms": list(c.heldout_synonyms)} for c in concepts],
        "world": {"concepts_seed": concepts_seed, "num_concepts": num_concepts, "seed": seed,
                  **({"sensors": list(sensors)} if sensors else {}), **({"unpaired": True} if unpaired else {})},
    })
    write_text(out / "manifest.jsonl", "\n".join(lines) + "\n")
