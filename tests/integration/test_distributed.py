"""torchrun with 2 CPU processes (gloo): embedding and projector training give what one process
gives, the gathered-negatives InfoNCE has the single-process gradient, and a rank killed
mid-embed loses only its unfinished shard."""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tiny_datasets import tiny_dataset
from toy_experts import logged_expert

from spacebind.bonds.projector import MLPProjector
from spacebind.cache.store import EmbeddingCache, embed_dataset
from spacebind.training.losses import info_nce
from spacebind.training.threads import cpu_threads
from spacebind.training.trainer import TrainConfig, train_projector

TESTS = Path(__file__).resolve().parent
HELPERS = TESTS.parent / "helpers"


def torchrun(args: list[str], env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """`torchrun --nproc-per-node 2 ARGS` on a free port, with tests/ importable."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    full_env = {**os.environ, "PYTHONPATH": f"{HELPERS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                "OMP_NUM_THREADS": "1", "SPACEBIND_PROGRESS": "0", "PYTHONFAULTHANDLER": "1", **(env or {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(port), *args]
    done = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=120)
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def embed_cmd(data: Path, out: Path) -> list[str]:
    return ["-m", "spacebind", "embed", "toy_experts:logged_expert", str(data), "--out", str(out),
            "--shard-size", "4", "--batch-size", "8", "--workers", "1"]


def logged(log_dir: Path) -> dict[str, int]:
    """Items each rank encoded, from the toy expert's log."""
    return {p.stem: sum(int(x) for x in p.read_text().split()) for p in log_dir.glob("rank*.log")}


def test_embed_under_two_ranks_matches_one_process_and_resumes_after_a_killed_rank(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "data", n=23, corrupt=5)
    single = embed_dataset(logged_expert(), data, tmp_path / "single", shard_size=4, progress=False)
    logs = tmp_path / "logs"
    logs.mkdir()
    # rank 1 owns text shards 1, 3, 5 and image shards 1, 3, 5: it finishes text shard 1, then dies
    died = torchrun(embed_cmd(data.root, tmp_path / "two"), {"TOY_LOG_DIR": str(logs), "TOY_DIE_RANK": "1",
                                                             "TOY_DIE_AFTER": "1"}, check=False)
    assert died.returncode != 0
    shards = tmp_path / "two" / "text"
    assert (shards / "shard-00001.safetensors").is_file() and not (shards / "shard-00003.safetensors").exists()
    assert logged(logs)["rank1"] == 4
    finished = {p.name: p.stat().st_mtime_ns for p in shards.glob("shard-*.safetensors")}
    for p in logs.iterdir():
        p.unlink()
    torchrun(embed_cmd(data.root, tmp_path / "two"), {"TOY_LOG_DIR": str(logs)})
    # 23 text items in 6 shards (4 × 5 + 3) and 22 loadable images: nothing finished is encoded again
    assert sum(logged(logs).values()) == 23 + 22 - 4 * len(finished)
    assert {p.name: p.stat().st_mtime_ns for p in shards.glob("shard-*.safetensors") if p.name in finished} == finished
    two = EmbeddingCache.open(tmp_path / "two")
    assert two.modalities == single.modalities
    for m in single.modalities:
        assert two.ids(m) == single.ids(m) and two.bad(m) == single.bad(m)
        assert torch.equal(two.embeddings(m), single.embeddings(m))


def _pairs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    src = torch.randn(n, 12, generator=g)
    tgt = torch.nn.functional.normalize(src[:, :10] + 0.5 * torch.randn(n, 10, generator=g), dim=-1)
    return src, tgt


def test_gathered_info_nce_has_the_single_process_gradient(tmp_path: Path) -> None:
    src, tgt = _pairs(16, 1)
    a = torch.nn.functional.normalize(torch.randn(16, 10, generator=torch.Generator().manual_seed(2)), dim=-1)
    torch.manual_seed(3)
    head = MLPProjector(12, 10, 16)
    save_file({"src": src, "tgt": tgt, "a": a, **{f"head.{k}": v for k, v in head.state_dict().items()}},
              str(tmp_path / "pairs.safetensors"))
    torchrun([str(TESTS / "distributed_jobs.py"), "grad", str(tmp_path), str(tmp_path)])
    ranks = [load_file(str(tmp_path / f"grad-rank{r}.safetensors")) for r in range(2)]

    a_full = a.clone().requires_grad_(True)
    log_scale = torch.tensor(math.log(20.0), requires_grad=True)
    loss = info_nce(a_full, tgt, log_scale.exp())
    loss.backward()
    # each rank's loss is the mean over its rows: their mean is the global loss
    torch.testing.assert_close((ranks[0]["loss"] + ranks[1]["loss"]) / 2, loss.detach().view(1))
    # the collective backward sums over ranks; with DDP's average over 2 ranks that is ∂L/∂a
    torch.testing.assert_close(torch.cat([r["a"] for r in ranks]) / 2, a_full.grad)
    for r in ranks:
        torch.testing.assert_close(r["log_scale"], log_scale.grad.view(1))
    head.train()
    head_loss = info_nce(head(src), tgt, 20.0)
    head_loss.backward()
    torch.testing.assert_close((ranks[0]["head_loss"] + ranks[1]["head_loss"]) / 2, head_loss.detach().view(1))
    for name, p in head.named_parameters():  # BatchNorm statistics of the global batch: exact gradients
        if not p.requires_grad:  # the biases before a BatchNorm are frozen (`init_linear_layers`)
            continue
        for r in ranks:
            torch.testing.assert_close(r[f"head.{name}"], p.grad, atol=1e-6, rtol=1e-5)
    for name, v in head.state_dict().items():
        if "running" in name:
            torch.testing.assert_close(ranks[1][f"running.{name}"], v)


def test_projector_training_under_two_ranks_matches_one_process(tmp_path: Path) -> None:
    src, tgt = _pairs(320, 4)
    val_src, val_tgt = _pairs(64, 5)
    config = {"epochs": 4, "batch_size": 32, "hidden": 16, "seed": 3, "patience": 10, "warmup": 0.1}
    save_file({"src": src, "tgt": tgt, "val_src": val_src, "val_tgt": val_tgt}, str(tmp_path / "pairs.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(config))
    torchrun([str(TESTS / "distributed_jobs.py"), "train", str(tmp_path), str(tmp_path)])
    with cpu_threads(1):  # as the ranks run
        single = train_projector(src, tgt, val_src=val_src, val_tgt=val_tgt, config=TrainConfig(**config), progress=False)
    two = load_file(str(tmp_path / "head.safetensors"))
    # The Linear biases just before a BatchNorm (net.0, net.3) have a zero gradient in exact
    # arithmetic; while AdamW trained them, it turned their rounding noise into lr-sized steps, so
    # they (and the running means after them) differed by 0.035 / 0.029 between the two summation
    # orders and the eval-mode functions disagreed. They are frozen at zero now: every tensor, and
    # the function in both modes, agrees.
    for name, v in single.head.state_dict().items():
        torch.testing.assert_close(two[name], v, atol=1e-5, rtol=1e-5, msg=name)
    other = MLPProjector(12, 10, 16)
    other.load_state_dict(two)
    with torch.no_grad():
        torch.testing.assert_close(other.train()(val_src), single.head.train()(val_src), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(other.eval()(val_src), single.head.eval()(val_src), atol=1e-5, rtol=1e-5)
    history = json.loads((tmp_path / "history.json").read_text())["history"]
    assert [h["val_recall@1"] for h in history] == [h["val_recall@1"] for h in single.history]
    for h2, h1 in zip(history, single.history):
        assert math.isclose(h2["loss"], h1["loss"], rel_tol=1e-5) and math.isclose(h2["temperature"], h1["temperature"], rel_tol=1e-5)
    assert (tmp_path / "ckpt" / "train_state.pt").is_file()


def test_batch_size_halves_on_out_of_memory_and_bad_settings_are_refused(tmp_path: Path) -> None:
    import pytest
    from toy_experts import multi_expert

    from spacebind.cache._embed_loop import AdaptiveBatch, autocast
    from spacebind.errors import InputError
    from spacebind.space import Expert

    data = tiny_dataset(tmp_path / "data", corrupt=None)
    fn = multi_expert("toy", 8, ("text",), 0).encoders["text"]
    sizes: list[int] = []

    def tight(xs):  # a GPU that holds at most 2 items
        sizes.append(len(xs))
        if len(xs) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return fn(xs)

    cache = embed_dataset(Expert("toy", 8, {"text": tight}), data, tmp_path / "cache", shard_size=5, batch_size=8,
                          workers=1, progress=False)
    assert sizes[:5] == [5, 4, 2, 2, 1] and max(sizes[5:]) == 2  # 8 → 4 → 2 on the first shard, then kept
    torch.testing.assert_close(cache.embeddings("text"), Expert("toy", 8, {"text": fn}).encode("text", [it.fields["text"] for it in list(data.iter_items())]),
                               atol=2e-3, rtol=0)
    batch = AdaptiveBatch(1)
    with pytest.raises(torch.OutOfMemoryError):
        batch.run(lambda size: tight(["a", "b", "c"]))
    with pytest.raises(InputError, match="precision 'fp8'"):
        autocast("fp8")
    with pytest.raises(InputError, match="workers"):
        embed_dataset(Expert("toy", 8, {"text": fn}), data, tmp_path / "other", workers=-1, progress=False)
