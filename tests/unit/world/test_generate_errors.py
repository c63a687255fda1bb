"""`world generate` refuses seeds, split sizes and concept counts outside the recipe's
`data.world` ranges with one line naming the option, before writing anything."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from spacebind.cli import app
from spacebind.errors import InputError
from spacebind.io.datasets import Dataset
from spacebind.training.trainer import MAX_SEED
from spacebind.world.concepts import WORDS
from spacebind.world.generate import generate_world

SMALL = ["--train", "2", "--val", "2", "--test", "2"]


@pytest.mark.parametrize("args, message", [
    (["--num-concepts", "1"], f"--num-concepts / num_concepts: 1 is out of range; expected 2 to {len(WORDS)}"),
    (["--num-concepts", str(len(WORDS) + 1)],
     f"--num-concepts / num_concepts: {len(WORDS) + 1} is out of range; expected 2 to {len(WORDS)}"),
    (["--seed", "-1"], f"--seed / seed: -1 is out of range; expected 0 to {MAX_SEED - 1}"),
    (["--concepts-seed", "-1"], f"--concepts-seed / concepts_seed: -1 is out of range; expected 0 to {MAX_SEED - 1}"),
    (["--train", "-3"], "--train / sizes['train']: -3 items; expected 0 (leave the split out) or more"),
    (["--train", "0", "--val", "0", "--test", "0"], "--train / --val / --test: every split has 0 items"),
])
def test_options_out_of_range_are_one_line_naming_the_option(tmp_path: Path, args: list[str], message: str) -> None:
    ran = CliRunner().invoke(app, ["world", "generate", str(tmp_path / "w"), *SMALL, *args, "-q"])
    assert ran.exit_code == 2 and f"error: {message}" in ran.output, ran.output
    assert "Traceback" not in ran.output and "wrote" not in ran.output
    assert list(tmp_path.iterdir()) == []


def test_the_bounds_themselves_are_allowed(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=f"--seed / seed: {MAX_SEED} is out of range"):
        generate_world(tmp_path / "w", seed=MAX_SEED, sizes={"test": 1}, progress=False)
    root = generate_world(tmp_path / "w", seed=MAX_SEED - 1, sizes={"train": 0, "test": 2}, concepts_seed=MAX_SEED - 1,
                          num_concepts=2, progress=False)
    data = Dataset.load(root)
    assert [len(data.select(s)) for s in ("train", "test")] == [0, 2] and len(data.class_names) == 2
