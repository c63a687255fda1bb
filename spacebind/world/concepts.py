"""The world's concepts: a name with synonyms and a signature in every modality.

The concept set depends only on `concepts_seed`; instance sampling (sizes, nuisances) on the
dataset seed. The last synonym of each concept is held out: no world expert and no generated
caption ever uses it, so generalisation to unseen words is measurable.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

WORDS: tuple[tuple[str, ...], ...] = (
    ("dog", "puppy", "hound", "canine"), ("cat", "kitten", "kitty", "feline"),
    ("car", "automobile", "motorcar", "sedan"), ("boat", "ship", "vessel", "sailboat"),
    ("house", "home", "dwelling", "cottage"), ("tree", "oak", "pine", "sapling"),
    ("bird", "sparrow", "songbird", "finch"), ("horse", "pony", "stallion", "mare"),
    ("cup", "mug", "teacup", "beaker"), ("chair", "seat", "stool", "armchair"),
    ("phone", "telephone", "smartphone", "cellphone"), ("clock", "timepiece", "watch", "timer"),
    ("bell", "chime", "gong", "doorbell"), ("guitar", "ukulele", "banjo", "lute"),
    ("train", "locomotive", "railcar", "tram"), ("plane", "airplane", "aircraft", "jet"),
    ("fish", "trout", "salmon", "minnow"), ("frog", "toad", "bullfrog", "amphibian"),
    ("bee", "wasp", "hornet", "bumblebee"), ("flower", "blossom", "bloom", "tulip"),
    ("book", "novel", "volume", "paperback"), ("lamp", "lantern", "torch", "nightlight"),
    ("rock", "stone", "pebble", "boulder"), ("hat", "cap", "bonnet", "beanie"),
    ("shoe", "boot", "sneaker", "sandal"), ("bag", "sack", "purse", "satchel"),
    ("knife", "blade", "dagger", "cutter"), ("river", "stream", "creek", "brook"),
    ("cow", "cattle", "bull", "calf"), ("pig", "hog", "swine", "piglet"),
    ("sheep", "lamb", "ewe", "ram"), ("duck", "mallard", "duckling", "drake"),
)
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring")
COLOURS = {
    "red": (0.86, 0.16, 0.16), "green": (0.15, 0.70, 0.25), "blue": (0.18, 0.32, 0.88),
    "yellow": (0.92, 0.84, 0.15), "purple": (0.58, 0.22, 0.75), "orange": (0.95, 0.52, 0.10),
}
PITCHES = (220.0, 277.2, 329.6, 392.0, 466.2, 554.4)  # Hz, before the size shift
TIMBRES = ("sine", "square", "saw", "bell")
RHYTHMS = ("steady", "double", "triple", "swell")
PRIMITIVES = ("sphere", "cube", "cylinder", "cone", "torus", "pyramid")
DEFORMATIONS = ("none", "stretch", "twist", "bend")
SIZE_WORDS = ("tiny", "small", "large", "huge")
INTENSITY_WORDS = ("faint", "vivid")


@dataclass(frozen=True)
class Concept:
    index: int
    name: str
    synonyms: tuple[str, ...]  # the training ones
    heldout_synonyms: tuple[str, ...]
    shape: str
    colour: str
    pitch: float
    timbre: str
    rhythm: str
    primitive: str
    deformation: str

    @property
    def caption_names(self) -> tuple[str, ...]:
        """Names a caption may use (never the held-out synonyms)."""
        return (self.name, *self.synonyms)


def make_concepts(concepts_seed: int = 0, num_concepts: int = 24) -> list[Concept]:
    """The concept set: distinct signatures per modality, assigned so that concepts share
    partial attributes (no single attribute identifies a concept)."""
    if not 2 <= num_concepts <= len(WORDS):
        raise ValueError(f"num_concepts is {num_concepts}; expected 2..{len(WORDS)}")
    rng = np.random.default_rng(concepts_seed)
    words = [WORDS[i] for i in rng.permutation(len(WORDS))[:num_concepts]]
    looks = list(itertools.product(SHAPES, COLOURS))
    sounds = list(itertools.product(range(len(PITCHES)), TIMBRES, RHYTHMS))
    solids = list(itertools.product(PRIMITIVES, DEFORMATIONS))
    pick = lambda options: [options[i] for i in rng.permutation(len(options))[:num_concepts]]  # noqa: E731
    looks, sounds = pick(looks), pick(sounds)
    solids = [solids[i % len(solids)] for i in rng.permutation(max(num_concepts, len(solids)))[:num_concepts]]
    concepts = []
    for i, (w, (shape, colour), (p, timbre, rhythm), (prim, deform)) in enumerate(zip(words, looks, sounds, solids)):
        concepts.append(Concept(i, w[0], tuple(w[1:-1]), (w[-1],), shape, colour, PITCHES[p], timbre, rhythm, prim, deform))
    return concepts


@dataclass(frozen=True)
class Instance:
    """One sampled instance: its concept and the attributes that vary."""

    concept: Concept
    size: float  # in [0, 1): shows in every modality and in the caption
    intensity: float  # in [0, 1): image brightness, audio loudness; in the caption
    seed: int  # drives the nuisances (position, rotation, noise, …)

    @property
    def size_word(self) -> str:
        return SIZE_WORDS[min(int(self.size * len(SIZE_WORDS)), len(SIZE_WORDS) - 1)]

    @property
    def intensity_word(self) -> str:
        return INTENSITY_WORDS[int(self.intensity >= 0.5)]


def sample_instances(concepts: list[Concept], n: int, seed: int) -> list[Instance]:
    """`n` instances with classes balanced round-robin in random order, deterministic from `seed`."""
    rng = np.random.default_rng(seed)
    classes = np.resize(np.arange(len(concepts)), n)
    rng.shuffle(classes)
    sizes, intensities = rng.random(n), rng.random(n)
    seeds = rng.integers(0, 2**31 - 1, n)
    return [Instance(concepts[c], float(s), float(v), int(z)) for c, s, v, z in zip(classes, sizes, intensities, seeds)]
