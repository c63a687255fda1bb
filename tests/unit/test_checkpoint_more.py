"""A crafted config.json nesting more bonds than MAX_DEPTH is refused as such, before anything
is built."""
import json
from pathlib import Path

import pytest

from spacebind.checkpoint import MAX_DEPTH, load
from spacebind.errors import CheckpointError


def test_bonds_nested_deeper_than_max_depth_are_refused(tmp_path: Path) -> None:
    expert = {"type": "expert", "name": "E", "source": "world_image_text", "dim": 4, "modalities": ["text"],
              "kwargs": {}}
    node = expert
    for i in range(MAX_DEPTH + 5):
        node = {"type": "bond", "name": f"b{i}", "bond": "combination", "index": i, "dim": 4, "modalities": ["text"],
                "heads": {}, "lambdas": {}, "experts": [], "base": node}
    (tmp_path / "config.json").write_text(json.dumps({"format": 1, "space": node}))
    with pytest.raises(CheckpointError, match=f"at most {MAX_DEPTH} nested bonds"):
        load(tmp_path)
