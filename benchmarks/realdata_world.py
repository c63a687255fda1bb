"""Real data for `benchmarks.realdata`: spoken digits synthesised with espeak-ng, scikit-learn's
bundled 8×8 handwritten digits, and captions from templates.

Speakers are espeak-ng (accent, voice variant, pitch, speed) combinations; the voice variants of
the test and validation speakers are never used in training, so test speakers are unseen. Every
speaker has a gender (from the variant), a pitch (low / medium / high) and a speed (slow /
normal / fast) that show in the audio and in captions, so audio↔text retrieval is instance-level
(digit + voice), not only class matching. Caption templates of the test pairs are held out.

Everything is deterministic from a seed; wav files are cached by content key under `work/audio`
and shared by all seeds. Needs the `espeak-ng` binary (Debian: `apt-get install espeak-ng`).
`build` writes a seed's dataset (spacebind manifest); `TestSet` reads its test split back.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from spacebind.extras import require

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ACCENTS = ("en", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
# espeak-ng voice variants by the gender their files declare (robot / whisper / creature variants left out)
FEMALE = (
    "Alicia",
    "Andrea",
    "Annie",
    "anika",
    "aunty",
    "belinda",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "grandma",
    "linda",
    "steph",
    "steph2",
    "steph3",
)
MALE = (
    "Andy",
    "AnxiousAndy",
    "Denis",
    "Diogo",
    "Henrique",
    "Hugo",
    "Lee",
    "Marco",
    "antonio",
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "m8",
    "michel",
    "miguel",
    "sandro",
    "travis",
    "victor",
)
PITCH = {"low": 20, "medium": 50, "high": 80}
SPEED = {"slow": 115, "normal": 165, "fast": 220}
PITCH_WORDS = {"low": "low", "medium": "medium", "high": "high"}
SPEED_WORDS = {"slow": "slowly", "normal": "at a normal pace", "fast": "quickly"}
SPOKEN_FORMS = ("{}", "number {}", "it is {}", "{} please", "I said {}")

# Captions of audio clips. {p}: "a man" / "a woman", {w}: the digit word (or numeral), {pitch}, {speed}.
TRAIN_TEMPLATES = (
    "{p} says {w}",
    "{p} with a {pitch} voice says {w}",
    "{p} {speed} says the word {w}",
    "a recording of {p} saying {w} {speed}",
    "the spoken number {w}, said {speed} by {p} with a {pitch} voice",
    "{p} speaking in a {pitch} voice: {w}",
    "a voice saying {w}",
    "someone says {w} {speed}",
)
TEST_TEMPLATES = (
    "{w} spoken {speed} by {p} with a {pitch} voice",
    "audio of {p} with a {pitch}-pitched voice pronouncing {w} {speed}",
)
IMAGE_TEMPLATES = (
    "a handwritten {w}",
    "an image of the digit {w}",
    "a picture of the number {w}",
    "a scanned digit {w}",
    "the number {w} written by hand",
    "a small grayscale image of a {w}",
)
CLASS_TEMPLATES = ("the digit {}", "the number {}")
SPLIT_VARIANTS = {"test": (5, 5), "val": (2, 3)}  # (female, male) variants held out per split
SPEAKERS = {"train": 48, "val": 10, "test": 18}
TEXT_POOL = {"train": 1500, "val": 300}
TEST_IMAGES = 400
FORMAT = 4  # bump when the layout or sampling changes (part of the dataset directory name)


@dataclass(frozen=True)
class Speaker:
    accent: str
    variant: str
    gender: str  # "man" / "woman"
    pitch: str
    speed: str

    @property
    def id(self) -> str:
        return f"{self.accent}+{self.variant}-{self.pitch}-{self.speed}"


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def synthesise(speaker: Speaker, text: str, audio_dir: Path) -> Path:
    """The wav of `speaker` saying `text` (cached by content key)."""
    key = hashlib.sha1(
        f"{speaker.accent}|{speaker.variant}|{PITCH[speaker.pitch]}|{SPEED[speaker.speed]}|{text}".encode()
    ).hexdigest()[:16]
    path = audio_dir / f"{key}.wav"
    if not path.is_file():
        if not espeak_available():
            raise RuntimeError("espeak-ng not found: install it (Debian: apt-get install espeak-ng)")
        audio_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.wav")
        subprocess.run(
            [
                "espeak-ng",
                "-v",
                f"{speaker.accent}+{speaker.variant}",
                "-p",
                str(PITCH[speaker.pitch]),
                "-s",
                str(SPEED[speaker.speed]),
                "-w",
                str(tmp),
                text,
            ],
            check=True,
            capture_output=True,
        )
        os.replace(tmp, path)
    return path


def speakers(seed: int) -> dict[str, list[Speaker]]:
    """Disjoint speaker sets per split: test/val speakers use voice variants unseen in training."""
    rng = random.Random(seed)
    fem, mal = list(FEMALE), list(MALE)
    rng.shuffle(fem)
    rng.shuffle(mal)
    variants: dict[str, list[tuple[str, str]]] = {}
    for split, (nf, nm) in SPLIT_VARIANTS.items():
        variants[split] = _interleave([(v, "woman") for v in fem[:nf]], [(v, "man") for v in mal[:nm]])
        fem, mal = fem[nf:], mal[nm:]
    variants["train"] = _interleave([(v, "woman") for v in fem], [(v, "man") for v in mal])
    combos = [(p, s) for p in PITCH for s in SPEED]
    out: dict[str, list[Speaker]] = {}
    for split, n in SPEAKERS.items():
        # per gender, (pitch, speed) combinations are dealt from a shuffled cycle: balanced attributes,
        # and the test speakers of one gender all differ in voice attributes (instance-level retrieval)
        deck: dict[str, list[tuple[str, str]]] = {"man": [], "woman": []}
        pool = variants[split]
        chosen = []
        for i in range(n):
            v, g = pool[i % len(pool)]  # every variant of the split appears
            if not deck[g]:
                deck[g] = rng.sample(combos, len(combos))
            pitch, speed = deck[g].pop()
            chosen.append(Speaker(rng.choice(ACCENTS), v, g, pitch, speed))
        out[split] = chosen
    return out


def _interleave(a: list, b: list) -> list:
    """a0 b0 a1 b1 … then the longer list's rest (genders alternate when speakers cycle variants)."""
    out = [x for pair in zip(a, b) for x in pair]
    return out + a[len(b) :] + b[len(a) :]


def caption(template: str, digit: int, sp: dict[str, str], rng: random.Random, numeral_p: float = 0.25) -> str:
    w = str(digit) if rng.random() < numeral_p else DIGITS[digit]
    return template.format(p=f"a {sp['gender']}", w=w, pitch=PITCH_WORDS[sp["pitch"]], speed=SPEED_WORDS[sp["speed"]])


def random_attrs(rng: random.Random) -> dict[str, str]:
    return {"gender": rng.choice(["man", "woman"]), "pitch": rng.choice(list(PITCH)), "speed": rng.choice(list(SPEED))}


def audio_captions(digit: int, attrs: dict[str, str], rng: random.Random, k: int) -> list[str]:
    """k training captions (train templates) of a clip."""
    return [caption(rng.choice(TRAIN_TEMPLATES), digit, attrs, rng) for _ in range(k)]


def image_captions(digit: int, rng: random.Random, k: int) -> list[str]:
    return [t.format(w=str(digit) if rng.random() < 0.3 else DIGITS[digit]) for t in rng.sample(IMAGE_TEMPLATES, k)]


def _allow_shared_audio(out: Path) -> None:
    """Mark a dataset's manifest paths into the shared `work/audio` as allowed (classes.json)."""
    classes = json.loads((out / "classes.json").read_text())
    if not classes.get("allow_outside_root"):
        (out / "classes.json").write_text(json.dumps({**classes, "allow_outside_root": True}, indent=2))


def build(seed: int, work: Path) -> Path:
    """Write (or reuse) the dataset of `seed` under `work/data-v{FORMAT}-s{seed}`; returns its directory.

    Manifest items (spacebind format, see `spacebind.io.datasets`):
      train: audio-only clips of the training speakers, text-only audio captions (train templates)
      val:   audio-only clips of validation speakers, text-only captions (labelled)
      test:  audio+text pairs (unseen speakers, held-out templates), image-only digits (labelled)
    `extra.json` beside it holds what the experts train on outside spacebind: the training clips
    with their speaker attributes, the train image indices, the U audio-tower clips."""
    from PIL import Image
    load_digits = require("sklearn.datasets", "benchmarks", "the real-data benchmark's digit images").load_digits

    out = work / f"data-v{FORMAT}-s{seed}"
    if (out / "manifest.jsonl").is_file():
        _allow_shared_audio(out)  # datasets built before paths were confined to the dataset root
        return out
    rng = random.Random(1000 + seed)
    audio_dir = work / "audio"
    spk = speakers(seed)
    lines: list[dict] = []
    clips: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for split, group in spk.items():
        for si, s in enumerate(group):
            attrs = {"speaker": f"{split}{si:02d}:{s.id}", "gender": s.gender, "pitch": s.pitch, "speed": s.speed}
            for d in range(10):
                forms = ["{}", rng.choice(SPOKEN_FORMS[1:])] if split == "train" else [rng.choice(SPOKEN_FORMS)]
                for j, form in enumerate(forms):
                    path = synthesise(s, form.format(DIGITS[d]), audio_dir)
                    clips[split].append(
                        {
                            "id": f"a-{split}-{si:02d}-{d}-{j}",
                            "audio": os.path.relpath(path, out),
                            "label": DIGITS[d],
                            "attributes": {**attrs, "spoken": form.format(DIGITS[d])},
                        }
                    )
    for c in clips["train"] + clips["val"]:
        lines.append(
            {
                "id": c["id"],
                "split": c["id"].split("-")[1],
                "label": c["label"],
                "audio": c["audio"],
                "attributes": c["attributes"],
            }
        )
    for split, n in TEXT_POOL.items():
        for i in range(n):
            d, a = rng.randrange(10), random_attrs(rng)
            lines.append(
                {
                    "id": f"t-{split}-{i:05d}",
                    "split": split,
                    "label": DIGITS[d],
                    "text": caption(rng.choice(TRAIN_TEMPLATES), d, a, rng),
                    "attributes": a,
                }
            )
    for c in clips["test"]:
        a = c["attributes"]
        d = DIGITS.index(c["label"])
        lines.append(
            {
                "id": c["id"],
                "split": "test",
                "label": c["label"],
                "audio": c["audio"],
                "text": caption(rng.choice(TEST_TEMPLATES), d, a, rng, numeral_p=0.0),
                "attributes": a,
            }
        )
    digits = load_digits()
    order = list(range(len(digits.target)))
    rng.shuffle(order)
    test_idx, train_idx = sorted(order[:TEST_IMAGES]), sorted(order[TEST_IMAGES:])
    (out / "image").mkdir(parents=True, exist_ok=True)
    for i in test_idx:
        Image.fromarray(digit_image(digits.images[i])).save(out / "image" / f"{i:04d}.png")
        lines.append(
            {
                "id": f"i-test-{i:04d}",
                "split": "test",
                "label": DIGITS[int(digits.target[i])],
                "image": f"image/{i:04d}.png",
            }
        )
    extra = {
        "seed": seed,
        "speakers": {k: [asdict(s) for s in v] for k, v in spk.items()},
        "train_clips": clips["train"],
        "val_clips": clips["val"],
        "train_images": train_idx,
        "test_images": test_idx,
    }
    (out / "extra.json").write_text(json.dumps(extra, indent=1))
    (out / "classes.json").write_text(
        json.dumps(
            {
                "templates": list(CLASS_TEMPLATES),
                "classes": [{"name": w, "synonyms": [str(i)]} for i, w in enumerate(DIGITS)],
                "allow_outside_root": True,  # the clips live in work/audio, shared by every seed
            },
            indent=2,
        )
    )
    tmp = out / "manifest.jsonl.tmp"
    tmp.write_text("".join(json.dumps(line) + "\n" for line in lines))
    os.replace(tmp, out / "manifest.jsonl")  # written last: its presence means done
    return out


def digit_image(img8: np.ndarray) -> np.ndarray:
    """An 8×8 sklearn digit (0..16) as a 32×32 RGB uint8 image (nearest upscaling)."""
    g = np.clip(np.asarray(img8, dtype=np.float32) / 16.0 * 255.0, 0, 255).astype(np.uint8)
    g = np.kron(g, np.ones((4, 4), dtype=np.uint8))
    return np.repeat(g[..., None], 3, axis=-1)


def read_manifest(data: Path) -> list[dict]:
    return [json.loads(line) for line in (data / "manifest.jsonl").read_text().splitlines() if line.strip()]


class TestSet:
    """The test split: audio-caption pairs (labels, voice attributes), images, class prompts."""

    def __init__(self, data: Path) -> None:
        items = read_manifest(data)
        pairs = [it for it in items if it["split"] == "test" and "audio" in it and "text" in it]
        images = [it for it in items if it["split"] == "test" and "image" in it]
        self.audio = [str((data / it["audio"]).resolve()) for it in pairs]
        self.text = [it["text"] for it in pairs]
        self.audio_labels = torch.tensor([DIGITS.index(it["label"]) for it in pairs])
        self.attributes = {a: [it["attributes"][a] for it in pairs] for a in ("gender", "pitch", "speed")}
        self.images = [str((data / it["image"]).resolve()) for it in images]
        self.image_labels = torch.tensor([DIGITS.index(it["label"]) for it in images])
        classes = json.loads((data / "classes.json").read_text())
        self.templates = classes["templates"]
        self.prompts = [t.format(c["name"]) for c in classes["classes"] for t in self.templates]


if __name__ == "__main__":
    import sys
    import time

    t = time.time()
    d = build(int(sys.argv[1]) if len(sys.argv) > 1 else 0, Path(sys.argv[2] if len(sys.argv) > 2 else "/tmp/realdata"))
    print(d, f"{time.time() - t:.1f}s")
