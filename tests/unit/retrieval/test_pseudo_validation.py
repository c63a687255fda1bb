"""A pseudo dataset's seed and partners are checked as modalities when the recipe is validated
(field path and the nearest modality), a partner may be listed only once, and the seed modality is
no partner."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from spacebind.cli import app
from spacebind.errors import RecipeError
from spacebind.recipe import validate_recipe
from spacebind.retrieval.pseudo import PseudoDataset


def _recipe(*pseudo: dict[str, Any]) -> dict[str, Any]:
    return {"name": "t", "data": {"path": "data"}, "experts": {"u": "world_unified", "a": "world_audio_text"},
            "base": "u", "bonds": [{"type": "combination", "expert": "a", "pseudo": list(pseudo)}]}


def test_unknown_seed_and_partner_modalities_are_reported_with_their_path() -> None:
    with pytest.raises(RecipeError) as caught:
        validate_recipe(_recipe({"seed": "text", "partners": ["audio"]},
                                {"seed": "txt", "partners": ["image", "adio"]}))
    message = str(caught.value)
    assert "2 error(s)" in message
    assert "bonds.0.pseudo.1.seed: unknown modality 'txt'" in message and "Did you mean 'text'?" in message
    assert "bonds.0.pseudo.1.partners.1: unknown modality 'adio'" in message and "Did you mean 'audio'?" in message


def test_validate_fails_on_them(tmp_path: Path) -> None:
    recipe = tmp_path / "pseudo.yaml"
    recipe.write_text(yaml.safe_dump(_recipe({"seed": "text", "partners": ["pont"]})), encoding="utf-8")
    ran = CliRunner().invoke(app, ["validate", str(recipe)])
    assert ran.exit_code == 2 and "bonds.0.pseudo.0.partners.0: unknown modality 'pont'" in ran.output
    assert "Did you mean 'point'?" in ran.output and "Traceback" not in ran.output


def test_a_partner_listed_twice_is_refused() -> None:
    listed_twice = r"bonds\.0\.pseudo\.0\.partners: partner\(s\) \['audio'\] listed more than once"
    with pytest.raises(RecipeError, match=listed_twice):
        validate_recipe(_recipe({"seed": "text", "partners": ["audio", "image", "audio"]}))


def test_the_model_checks_modalities_in_python_too() -> None:
    with pytest.raises(ValidationError, match="unknown modality 'imag'.*Did you mean 'image'"):
        PseudoDataset(seed="imag")
    assert PseudoDataset(seed="text", partners=["image", "audio"]).label == "text-image-audio"


def test_the_seed_modality_is_no_partner() -> None:
    # mined from the seed's own pool, each seed retrieves itself (weight ≈ 1): its own pair three times
    with pytest.raises(RecipeError, match=r"bonds\.0\.pseudo\.0\.partners: partner 'text' is the seed modality"):
        validate_recipe(_recipe({"seed": "text", "partners": ["text", "audio"]}))
