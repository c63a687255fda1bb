"""The published OmniBind expert sets validate now and, without their checkpoints, fail before any
work with one error listing every missing file."""
from __future__ import annotations

from pathlib import Path

import pytest

from spacebind.errors import CheckpointError
from spacebind.fuse import fuse
from spacebind.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[2]
SIZES = {"omnibind_7b": 6, "omnibind_13b": 13, "omnibind_30b": 14}


@pytest.mark.parametrize("name", list(SIZES))
def test_published_omnibind_recipes_validate_and_name_missing_checkpoints(name: str, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    recipe, _ = load_recipe(ROOT / "recipes" / f"{name}.yaml")
    assert len(recipe.experts) == SIZES[name] and recipe.routed is not None
    assert "imagebind" in recipe.routed.experts and recipe.routed.scales == {"text": 10}
    sources = {cfg.source for cfg in recipe.experts.values()}
    assert {"wavcaps", "uni3d_giant", "imagebind_huge", "eva02_clip_bige14_plus"} <= sources
    if name != "omnibind_7b":
        assert {"clap_general.fusion", "clap_music", "dfn5b_clip_vit_h14", "siglip_so400m_384"} <= sources
    assert len(recipe.bonds[0].pseudo) == 7  # the anchor: n(0.9·target + 0.1·mean_7(P_IB))
    assert not recipe.bonds[0].tune  # the anchor's λ 0.1 as published
    if name != "omnibind_7b":  # OmniBind large / full: the router inputs REFERENCE names
        assert recipe.routed.inputs == {"text": ["wavcaps_pt", "siglip_so400m", "eva"], "audio": ["wavcaps_pt"],
                                        "image": ["siglip_so400m"], "point": ["uni3d_lvis"]}
        assert recipe.experts["clap_general"].kwargs["checkpoint"] == "checkpoints/630k-fusion-best.pt"
        assert recipe.experts["clap_music"].kwargs["checkpoint"].endswith("music_speech_audioset_epoch_15_esc_89.98.pt")
        uni3d = ["uni3d_lvis", "uni3d_mnet40", "uni3d_scanobjnn"]  # OmniBind's UNI3D_L, _M, _S
    else:  # OmniBind base (omni_utils.get_config): A_pred 0, V_pred 0, P_pred 0, T_pred [0, 3, 4]
        assert recipe.routed.inputs == {"text": ["wavcaps_pt", "eva", "uni3d_lvis"], "audio": ["wavcaps_pt"],
                                        "image": ["eva"], "point": ["uni3d_lvis"]}
        uni3d = ["uni3d_lvis"]
    assert [e for e in recipe.routed.experts if e.startswith("uni3d")] == uni3d
    assert recipe.experts["uni3d_lvis"].kwargs["checkpoint"] == "checkpoints/uni3d-g/lvis/model.pt"
    if name == "omnibind_30b":  # the target is the registered EVA-CLIP-18B expert, its remote code allowed
        assert recipe.base == "eva18b" and recipe.experts["eva18b"].source == "eva_clip_18b"
        assert recipe.experts["eva18b"].kwargs == {"checkpoint": "checkpoints/EVA-CLIP-18B", "trust_remote_code": True,
                                                   "max_length": 42}  # OmniBind's experts.py cuts texts at 42
    monkeypatch.chdir(tmp_path)  # no checkpoints here
    with pytest.raises(CheckpointError) as info:
        fuse(recipe, work=tmp_path / "work", progress=False)
    message = str(info.value)
    assert not (tmp_path / "work" / "data").exists()  # refused before any work
    files = {v for cfg in recipe.experts.values() for k, v in cfg.kwargs.items() if k in ("checkpoint", "clip_checkpoint", "tokenizer")}
    assert all(f"'{f}'" in message for f in files)
    assert "experts.wavcaps_clotho.kwargs.checkpoint: no file or directory 'checkpoints/HTSAT-BERT-FT-Clotho.pt'" in message
    if name == "omnibind_30b":
        assert "experts.eva18b.kwargs.checkpoint: no file or directory 'checkpoints/EVA-CLIP-18B'" in message
        assert "eva_clip_18b expects EVA-CLIP-18B snapshot dir" in message
