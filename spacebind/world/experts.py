"""The procedural world's experts, mirroring the real ones (see DESIGN.md).

- world_unified: toy ImageBind; every modality aligned to images only, so audio-text,
  point-text and audio-point alignment are emergent; a narrow audio tower seeing few clips.
- world_image_text, world_audio_text, world_point_text: specialists trained on their pair.
- world_audio_text_even, world_audio_text_odd: audio-text experts of one half of the concepts
  each (even or odd concept index), domain specialists for routing (OmniBind's premise).
- world_sensor: video, thermal and event towers aligned to its own image tower only (the
  world's optional sensor modalities, see `spacebind.world.sensors`); no text tower.
Configs are fixed by design (capacity and data), not tuned to any downstream claim.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

from spacebind.io.files import sha256_file
from spacebind.registry import EXPERTS
from spacebind.space import Expert, ExpertSpec
from spacebind.world.towers import encode_with
from spacebind.world.training import WorldExpertConfig, trained_towers

CONFIGS = {
    c.name: c for c in (
        WorldExpertConfig(
            "world_unified", 64, {"image": 24, "text": 48, "audio": 24, "point": 32},
            (("image", "text"), ("image", "audio"), ("image", "point")),
            pair_items={"image-audio": 800}, seed=1,
        ),
        WorldExpertConfig("world_image_text", 48, {"image": 40, "text": 64}, (("image", "text"),), seed=2),
        WorldExpertConfig("world_audio_text", 40, {"audio": 64, "text": 64}, (("audio", "text"),), seed=3),
        WorldExpertConfig("world_point_text", 32, {"point": 32, "text": 64}, (("point", "text"),), seed=4),
        # domain specialists: each has seen half of the concepts (OmniBind's general and music CLAPs)
        WorldExpertConfig("world_audio_text_even", 40, {"audio": 64, "text": 64}, (("audio", "text"),), seed=6,
                          domain=(0, 2)),
        WorldExpertConfig("world_audio_text_odd", 40, {"audio": 64, "text": 64}, (("audio", "text"),), seed=7,
                          domain=(1, 2)),
        WorldExpertConfig(
            "world_sensor", 64, {"image": 24, "video": 24, "thermal": 24, "event": 24},
            (("image", "video"), ("image", "thermal"), ("image", "event")), items=4000, seed=5,
        ),
    )
}


def make_world_expert(name: str, concepts_seed: int = 0, num_concepts: int = 24,
                      checkpoint: str | Path | None = None, device: str = "cpu", progress: bool = True) -> Expert:
    """Build a world expert, training it on first use (cached under $SPACEBIND_HOME/experts).

    Training always runs on the CPU (deterministic); `device` is where the loaded towers encode."""
    config = CONFIGS[name]
    towers, path = trained_towers(config, concepts_seed, num_concepts, checkpoint, progress)
    towers.to(device)
    kwargs = {"concepts_seed": concepts_seed, "num_concepts": num_concepts}
    if checkpoint is not None:
        kwargs["checkpoint"] = str(checkpoint)
    spec = ExpertSpec(source=name, kwargs=kwargs, checkpoint=str(path), sha256=sha256_file(path))
    encoders = {m: partial(encode_with, towers[m]) for m in config.widths}
    return Expert(name, config.dim, encoders, spec=spec)


_DESCRIPTIONS = {
    "world_unified": "procedural world: toy ImageBind, every modality aligned to images only",
    "world_image_text": "procedural world: image-text expert (like InternVL-C / EVA-CLIP)",
    "world_audio_text": "procedural world: audio-text expert (like CLAP)",
    "world_point_text": "procedural world: 3D-text expert (like Uni3D)",
    "world_audio_text_even": "procedural world: audio-text expert of the even-indexed concepts only",
    "world_audio_text_odd": "procedural world: audio-text expert of the odd-indexed concepts only",
    "world_sensor": "procedural world: video, thermal and event towers aligned to images (like ImageBind's)",
}
for _name, _config in CONFIGS.items():
    EXPERTS.register(_name, modalities=tuple(_config.widths), dim=_config.dim, description=_DESCRIPTIONS[_name],
                     licence="apache-2.0")(
        partial(make_world_expert, _name)
    )
