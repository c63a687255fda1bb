"""Uni3D and ULIP-2: tiny architectures with seeded random weights, saved in the official file
formats (Uni3D: DeepSpeed `{'module': …}`; ULIP-2: training checkpoint with an argparse
Namespace), loaded through the registered experts from disk; full-size keys against the official
model definitions (fixtures built from baaivision/Uni3D and salesforce/ULIP on the meta device)."""
from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tiny_checkpoints import (
    OPEN_CLIP_TINY_NAME,
    ULIP2_TINY,
    UNI3D_TINY,
    open_clip_checkpoint,
    ulip2_checkpoint,
    uni3d_checkpoint,
)

from spacebind.errors import CheckpointError
from spacebind.experts._point_grouping import batch_clouds
from spacebind.experts._pointbert import PointBertConfig
from spacebind.experts._uni3d_model import SIZES, Uni3D, Uni3DConfig
from spacebind.experts.registry import EXPERTS
from spacebind.experts.ulip2 import Ulip2

DATA = Path(__file__).parent / "data"
CLIP = OPEN_CLIP_TINY_NAME


def _clouds() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    coloured = np.concatenate([rng.normal(size=(300, 3)), rng.uniform(size=(300, 3))], 1).astype(np.float32)
    return [coloured, rng.normal(size=(200, 3)).astype(np.float32) * 3 + 1, rng.uniform(size=(500, 3)).astype(np.float32)]


@pytest.fixture(scope="module")
def clip_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return open_clip_checkpoint(tmp_path_factory.mktemp("points_clip"))[0]


@pytest.fixture(scope="module")
def uni3d_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    return uni3d_checkpoint(tmp_path_factory.mktemp("uni3d"))


@pytest.fixture(scope="module")
def ulip2_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    return ulip2_checkpoint(tmp_path_factory.mktemp("ulip2"))


def _uni3d(path: Path, clip: Path, **kwargs: Any):
    return EXPERTS.create("uni3d_tiny", checkpoint=str(path), clip_checkpoint=str(clip), clip_model=CLIP,
                          config=UNI3D_TINY, **kwargs)


def _ulip2(path: Path, clip: Path, **kwargs: Any):
    return EXPERTS.create("ulip2_pointbert", checkpoint=str(path), clip_checkpoint=str(clip), clip_model=CLIP,
                          config=ULIP2_TINY, **kwargs)


# First three numbers of the first cloud's unit embedding, printed once from these tiny seeded
# models after the official model code (Uni3D `create_uni3d` / `PointcloudEncoder`, ULIP
# `ULIP2_WITH_OPENCLIP` + `PointTransformer_Colored`, run in a scratch dir with the same weights
# and configs, FPS swapped for ours) gave the same embeddings (max abs diff 0.0 and 7.6e-8).
GOLDEN = {"uni3d": [-0.203946, 0.001498, 0.003670], "ulip2": [0.174534, 0.031831, 0.111144]}


@pytest.mark.parametrize("family", ["uni3d", "ulip2"])
def test_loads_from_disk_and_encodes(family: str, uni3d_file, ulip2_file, clip_checkpoint: Path) -> None:
    path, model = uni3d_file if family == "uni3d" else ulip2_file
    build = _uni3d if family == "uni3d" else _ulip2
    expert = build(path, clip_checkpoint)
    assert expert.modalities == ("text", "image", "point") and expert.dim == 16 and len(expert.spec.sha256) == 64
    assert expert.spec.kwargs["clip_checkpoint"] == str(clip_checkpoint)
    clouds = _clouds()
    got = expert.encode("point", clouds)
    assert got.shape == (3, 16)
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(3))
    with torch.no_grad():
        want = torch.nn.functional.normalize(model(batch_clouds(clouds, 256)), dim=-1)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    torch.testing.assert_close(build(path, clip_checkpoint).encode("point", clouds), got, rtol=0, atol=0)
    torch.testing.assert_close(expert.encode("point", clouds[1:2]), got[1:2], rtol=0, atol=1e-6)
    torch.testing.assert_close(got[0, :3], torch.tensor(GOLDEN[family]), rtol=0, atol=1e-4)
    assert expert.encode("text", ["a chair"]).shape == (1, 16)
    assert expert.encode("image", [np.zeros((40, 40, 3), np.uint8)]).shape == (1, 16)


@pytest.mark.parametrize("family", ["uni3d", "ulip2"])
def test_strict_keys_with_names(family: str, uni3d_file, ulip2_file, clip_checkpoint: Path, tmp_path: Path) -> None:
    path, _ = uni3d_file if family == "uni3d" else ulip2_file
    build, key = (_uni3d, "module") if family == "uni3d" else (_ulip2, "state_dict")
    with torch.serialization.safe_globals([argparse.Namespace]):
        saved = torch.load(path, weights_only=True)
    victim = "module.point_encoder.cls_pos"
    broken = {**saved, key: {k: v for k, v in saved[key].items() if k != victim}}
    torch.save(broken, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"missing keys: point_encoder\.cls_pos"):
        build(tmp_path / "missing.pt", clip_checkpoint)
    torch.save({**saved, key: {**saved[key], "module.point_encoder.extra": torch.ones(1)}}, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match=r"unexpected keys: point_encoder\.extra"):
        build(tmp_path / "extra.pt", clip_checkpoint)
    torch.save({**saved, key: {**saved[key], victim: torch.ones(1, 1, 5)}}, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match=r"misshaped keys: point_encoder\.cls_pos \(1, 1, 5\)"):
        build(tmp_path / "shape.pt", clip_checkpoint)
    with pytest.raises(CheckpointError, match="no checkpoint file at"):
        build(tmp_path / "absent.pt", clip_checkpoint)


class _Payload:
    """Not on the weights-only allow-list."""


def test_checkpoints_load_weights_only(ulip2_file, uni3d_file, clip_checkpoint: Path, tmp_path: Path) -> None:
    path, _ = ulip2_file
    with torch.serialization.safe_globals([argparse.Namespace]):
        saved = torch.load(path, weights_only=True)
    assert isinstance(saved["args"], argparse.Namespace)
    torch.save({**saved, "args": _Payload()}, tmp_path / "payload.pt")
    with pytest.raises(CheckpointError, match="_Payload"):
        _ulip2(tmp_path / "payload.pt", clip_checkpoint)
    uni3d_path, _ = uni3d_file
    unprefixed = torch.load(uni3d_path, weights_only=True)
    unprefixed["module"] = {k.removeprefix("module."): v for k, v in unprefixed["module"].items()}
    torch.save(unprefixed, tmp_path / "plain.pt")
    torch.testing.assert_close(_uni3d(tmp_path / "plain.pt", clip_checkpoint).encode("point", _clouds()),
                               _uni3d(uni3d_path, clip_checkpoint).encode("point", _clouds()), rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="under 'module'"):
        _uni3d(path, clip_checkpoint)


def _fixture(name: str) -> dict[str, list[int]]:
    with gzip.open(DATA / f"{name}_keys.json.gz", "rt") as fh:
        return json.load(fh)["keys"]


@pytest.mark.parametrize("size", list(SIZES))
def test_uni3d_full_size_keys_match_official(size: str) -> None:
    with torch.device("meta"):
        model = Uni3D(Uni3DConfig(trunk=SIZES[size][0]))
    assert model.point_encoder.visual.embed_dim == SIZES[size][1]
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == _fixture(f"uni3d_{size}")


def test_ulip2_full_size_keys_match_official() -> None:
    with torch.device("meta"):
        model = Ulip2(PointBertConfig(), 1280)
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == _fixture("ulip2_pointbert")


def test_registered_variants() -> None:
    from typer.testing import CliRunner

    from spacebind.cli import app

    names = [f"uni3d_{s}" for s in ("base", "giant", "large", "small", "tiny")]
    assert EXPERTS.list("uni3d*") == names and EXPERTS.list("ulip2*") == ["ulip2_pointbert"]
    assert all(EXPERTS.entry(n).dim == 1024 and EXPERTS.entry(n).modalities == ("text", "image", "point") for n in names)
    assert EXPERTS.entry("ulip2_pointbert").dim == 1280
    listing = CliRunner().invoke(app, ["experts", "uni3d*"], terminal_width=200).output
    assert all(n in listing for n in names)
    assert PointBertConfig() == PointBertConfig(width=384, depth=18, heads=6, num_group=512, group_size=32,
                                                encoder_dim=256, npoints=10_000)
    assert Uni3DConfig(trunk="t") == Uni3DConfig(trunk="t", embed_dim=1024, encoder_dim=512, num_group=512,
                                                 group_size=64, npoints=10_000)  # scripts/inference.sh


LONG_TEXT = " ".join(["a wooden chair with four legs and a red cushion"] * 10)  # 100 BPE tokens


@pytest.mark.parametrize("family", ["uni3d", "ulip2"])
def test_long_texts_keep_end_of_text_when_cut(family: str, uni3d_file, ulip2_file, clip_checkpoint: Path) -> None:
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer

    path, _ = uni3d_file if family == "uni3d" else ulip2_file
    expert = (_uni3d if family == "uni3d" else _ulip2)(path, clip_checkpoint)
    assert "truncation" not in expert.spec.kwargs
    net = open_clip.create_model(CLIP, pretrained=str(clip_checkpoint)).eval()
    bpe = SimpleTokenizer()
    ids = [bpe.sot_token_id, *bpe.encode(LONG_TEXT), bpe.eot_token_id]
    assert len(ids) > 77
    forced = torch.tensor([ids[:76] + [bpe.eot_token_id]])  # open_clip's tokenize (and EVA-CLIP's, as OmniBind uses)
    cut = torch.tensor([ids[:77]])  # Uni3D / ULIP utils/tokenizer.py: cut, no end-of-text
    got = expert.encode("text", [LONG_TEXT])
    with torch.no_grad():
        want, official = (torch.nn.functional.normalize(net.encode_text(t), dim=-1) for t in (forced, cut))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert float((got * official).sum()) < 0.9999  # the argmax pooling reads another token without end-of-text


@pytest.mark.parametrize("family", ["uni3d", "ulip2"])
def test_official_truncation_cuts_without_end_of_text(family: str, uni3d_file, ulip2_file, clip_checkpoint: Path,
                                                      tmp_path: Path) -> None:
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer

    from spacebind.errors import InputError
    from spacebind.experts.open_clip_family import _tokenizer

    path, _ = uni3d_file if family == "uni3d" else ulip2_file
    build = _uni3d if family == "uni3d" else _ulip2
    expert = build(path, clip_checkpoint, truncation="official")
    assert expert.spec.kwargs["truncation"] == "official"
    bpe = SimpleTokenizer()
    ids = [bpe.sot_token_id, *bpe.encode(LONG_TEXT), bpe.eot_token_id]
    assert len(ids) == 102
    official_ids = _tokenizer(CLIP, None, "official")([LONG_TEXT])
    assert official_ids.tolist() == [ids[:77]] and bpe.eot_token_id not in official_ids.tolist()[0]
    net = open_clip.create_model(CLIP, pretrained=str(clip_checkpoint)).eval()
    got = expert.encode("text", [LONG_TEXT])
    with torch.no_grad():
        want = torch.nn.functional.normalize(net.encode_text(official_ids), dim=-1)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    default = build(path, clip_checkpoint)
    assert float((got * default.encode("text", [LONG_TEXT])).sum()) < 0.9999
    rebuilt = EXPERTS.create(expert.spec.source, **expert.spec.kwargs)  # what an export reproduces
    torch.testing.assert_close(rebuilt.encode("text", [LONG_TEXT]), got, rtol=0, atol=0)

    short = ["a point cloud model of a chair.", "an airplane"]
    assert _tokenizer(CLIP, None, "official")(short).tolist() == _tokenizer(CLIP, None, "eot")(short).tolist()
    torch.testing.assert_close(expert.encode("text", short), default.encode("text", short), rtol=0, atol=0)
    with pytest.raises(InputError, match=r"truncation='cut' \(expected Literal\['eot', 'official'\]: input should be 'eot' or 'official'\)"):
        build(tmp_path / "absent.pt", clip_checkpoint, truncation="cut")  # refused before any file is read
    with pytest.raises(InputError, match="needs the CLIP BPE tokenizer"):
        _tokenizer("ViT-SO400M-14-SigLIP-384", None, "official")
