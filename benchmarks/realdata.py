"""Real-data benchmark of a combination bond `U + c(AT)` (FreeBind), on one CPU thread.

Data (`benchmarks.realdata_world`): spoken digits synthesised with espeak-ng by many speakers
(accent × voice variant × pitch × speed; test speakers use voice variants never heard in training),
scikit-learn's bundled 8×8 handwritten digits, and captions from templates embedded by the real
all-MiniLM-L6-v2. Captions of clips name the digit and the voice (gender, pitch, speed), so
audio↔text R@1 on test pairs is instance-level. Experts (`benchmarks.realdata_experts`), trained in
plain PyTorch outside spacebind: U (toy ImageBind: image, text, a weak audio tower) and AT (toy CLAP:
audio, text). The bond's data has no audio-text pairs: train and val hold unpaired clips and captions.

Rows: U; AT; spacebind default, `U.bind(AT, bond="combination", data=..., pseudo=[audio→text,
text→audio])` with nothing else set but the training seed (pairing "auto", λ tuned on val); spacebind
at fixed λ audio .8 / text .5 (`tune=False`); and the plain-PyTorch reference bond of
`benchmarks.reference_bond` (one MLP on all pseudo pairs pooled, λ .8/.5). Columns per seed: zero-shot
audio accuracy (class centres of the prompts "the digit {}", "the number {}"), audio→text and
text→audio R@1 on the test pairs (the one caption of the clip), zero-shot image accuracy (a bond
changes it through the text prompts). Below the table: the targets and λ spacebind chose
(`space.choices`) and per seed whether the default row is ≥ AT on the audio-text columns, ≥ U − 1
point on image zero-shot, and ≥ the reference, with margins in points.

`--diagnose` adds spacebind with `pairing="all"`, tuning off (λ .5/.5, the same heads), the reference
at spacebind's chosen λ and on the TRUE audio-caption pairs, and a second table: class-level R@1 and
whether the top-1 caption names the right gender / pitch / speed.

Everything is deterministic for a seed; wavs, MiniLM embeddings and experts' weights are cached
under --work (default $SPACEBIND_HOME/realdata), spacebind's embedding caches under --work/caches.
Run: python -m benchmarks.realdata [--seeds 0,1] [--json out.json] [--work DIR] [--diagnose]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse
import json
import platform
import random
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from benchmarks import realdata_world as world
from benchmarks.paired import compare
from benchmarks.realdata_experts import MiniLM, make_spaces, train_experts
from benchmarks.realdata_world import TestSet
from benchmarks.reference_bond import DEFAULT_PAIRS, combine, pseudo_pairs, reference_bond
from spacebind.evaluation.metrics import class_embeddings

THREADS = 1
torch.set_num_threads(THREADS)
LAMBDAS_EXPERTISE = {"audio": 0.8, "text": 0.5}
DEFAULT, FIXED, REFERENCE = "spacebind default", "spacebind λ .8/.5 fixed", "reference bond λ .8/.5"
MLP = "spacebind projector mlp"
METRICS = ("audio_zs", "a2t", "t2a", "image_zs")
AUDIO_TEXT = ("audio_zs", "a2t", "t2a")
DIAGNOSIS = ("a2t_class", "t2a_class", "a2t_gender", "a2t_pitch", "a2t_speed")
Hits = dict[str, Tensor]  # per metric, each test query's hit (1/0)
HEADERS = {
    "audio_zs": "zs-audio",
    "a2t": "a→t R@1",
    "t2a": "t→a R@1",
    "image_zs": "zs-image",
    "a2t_class": "a→t cls",
    "t2a_class": "t→a cls",
    "a2t_gender": "a→t gend",
    "a2t_pitch": "a→t pitch",
    "a2t_speed": "a→t speed",
}


# ---------------------------------------------------------------- evaluation


def class_centres(prompt_emb: Tensor, per_class: int, blocks: Sequence[int] | None = None) -> Tensor:
    return class_embeddings(prompt_emb, len(prompt_emb) // per_class, blocks)


def hits(
    a: Tensor, t: Tensor, prompts: Tensor, test: TestSet, img: Tensor | None, img_prompts: Tensor | None,
    blocks: Sequence[int] | None = None,
) -> Hits:
    """Per-query hits (1/0) of zero-shot classification and instance-level R@1 (plus class-level
    a→t for diagnosis); no "image_zs" without images. `blocks`: the space's, for its class centres."""
    centres = class_centres(prompts, len(test.templates), blocks)
    sim = a @ t.T
    truth = torch.arange(len(a))
    out = {
        "audio_zs": (a @ centres.T).argmax(1) == test.audio_labels,
        "a2t": sim.argmax(1) == truth,
        "t2a": sim.argmax(0) == truth,
        "a2t_class": test.audio_labels[sim.argmax(1)] == test.audio_labels,
        "t2a_class": test.audio_labels[sim.argmax(0)] == test.audio_labels,
    }
    top = sim.argmax(1).tolist()
    for attr, values in test.attributes.items():  # does the top-1 caption describe the right voice?
        out[f"a2t_{attr}"] = torch.tensor([values[j] == values[i] for i, j in enumerate(top)])
    if img is not None:
        out["image_zs"] = (img @ class_centres(img_prompts, len(test.templates), blocks).T).argmax(1) == test.image_labels
    return out


def means(row: Hits) -> dict[str, float]:
    """A row's scores: the mean of each metric's hits (NaN for image zero-shot without images)."""
    return {"image_zs": float("nan"), **{k: v.float().mean().item() for k, v in row.items()}}


def score_space(space: Any, test: TestSet) -> Hits:
    """Hits of a spacebind space (encodes the test files through spacebind's loaders)."""
    enc = lambda m, xs: space.encode(m, xs)
    prompts = enc("text", test.prompts)
    img = enc("image", test.images) if "image" in space.modalities else None
    return hits(
        enc("audio", test.audio), enc("text", test.text), prompts, test, img, prompts if img is not None else None,
        space.blocks,
    )


class Leaves:
    """U's and AT's embeddings of the test set and the train/val pools, computed once per seed."""

    def __init__(self, u: Any, at: Any, data: Path, test: TestSet) -> None:
        items = world.read_manifest(data)
        pool = {m: [it for it in items if it["split"] == "train" and m in it] for m in ("audio", "text")}
        inputs = {
            "audio": [str((data / it["audio"]).resolve()) for it in pool["audio"]],
            "text": [it["text"] for it in pool["text"]],
        }
        self.pool = {
            name: {m: sp.encode(m, inputs[m]) for m in ("audio", "text")} for name, sp in (("U", u), ("AT", at))
        }
        self.pool_items = pool
        self.spaces = {"U": u, "AT": at}
        self.test = {
            name: {
                "audio": sp.encode("audio", test.audio),
                "text": sp.encode("text", test.text),
                "prompts": sp.encode("text", test.prompts),
            }
            for name, sp in (("U", u), ("AT", at))
        }
        self.image = u.encode("image", test.images)


def score_projector(
    leaves: Leaves, test: TestSet, proj: Callable[[Tensor], Tensor], lambdas: dict[str, float] = LAMBDAS_EXPERTISE
) -> Hits:
    """Hits of the combination n((1 − λ)·u + λ·proj(x^AT)) on the test set (images: U's, unchanged;
    their zero-shot prompts are the combined text, as in a bound space)."""
    u, e = leaves.test["U"], leaves.test["AT"]
    with torch.no_grad():
        side = {
            k: combine(u[k], proj(e[k]), lambdas["audio" if k == "audio" else "text"])
            for k in ("audio", "text", "prompts")
        }
    return hits(side["audio"], side["text"], side["prompts"], test, leaves.image, side["prompts"])


def score_reference(
    leaves: Leaves,
    test: TestSet,
    seed: int,
    *,
    pairs: Sequence[tuple[str, str]] = DEFAULT_PAIRS,
    lambdas: dict[str, float] = LAMBDAS_EXPERTISE,
    **kwargs: Any,
) -> Hits:
    x, y = pseudo_pairs(leaves.pool["AT"], leaves.pool["U"], pairs)
    return score_projector(leaves, test, reference_bond(x, y, seed=seed, **kwargs), lambdas)


# ---------------------------------------------------------------- spacebind bonds


def spacebind_bond(u: Any, at: Any, data: Path, work: Path, seed: int, **kwargs: Any) -> Any:
    """`U.bind(AT, bond="combination")` on the two pseudo datasets; kwargs (lambdas, tune, pairing, …)
    go to `bind`, everything else is spacebind's default (the training seed aside)."""
    from spacebind.retrieval.pseudo import PseudoDataset
    from spacebind.training.trainer import TrainConfig

    return u.bind(
        at,
        bond="combination",
        data=data,
        pseudo=[PseudoDataset(seed="audio", partners=["text"]), PseudoDataset(seed="text", partners=["audio"])],
        train=TrainConfig(seed=seed),
        cache_dir=work / "caches" / data.name,
        progress=False,
        **kwargs,
    )


def chosen_lambdas(space: Any) -> dict[str, float]:
    return {m: space.lambda_for(m) for m in ("audio", "text")}


def choices_of(space: Any) -> dict[str, Any]:
    """`space.choices` (targets kept per projector, the λ choice when tuned) and the λ in force."""
    return {**space.choices, "lambdas_in_force": chosen_lambdas(space)}


def describe_choices(choices: dict[str, Any]) -> str:
    """One line: the target modalities each projector kept (with the reliabilities) and the λ."""
    parts = []
    for t in choices.get("targets", {}).values():
        rel = ", ".join(f"{m} {v:.3f}" for m, v in t.get("reliability", {}).items())
        parts.append(f"targets {t['kept']} (pairing {t['pairing']}; {t.get('measure') or '-'}: {rel or '-'})")
    projector = choices.get("projector")
    if projector:
        scores = ", ".join(f"{k} {100 * v:+.1f}" for k, v in projector["candidates"].items())
        parts.append(f"projector {projector['chosen']} (val worst margins: {scores})")
    lam = choices.get("lambdas")
    if lam and lam.get("channels"):
        parts.append("channel κ " + ", ".join(f"{m} {v:g}" for m, v in lam["channels"].items()))
    if lam:
        margins = ", ".join(f"{k} {100 * v:+.1f}" for k, v in lam["margins"].items())
        undone = f"; changed after κ: {', '.join(lam['undone'])}" if lam.get("undone") else ""
        parts.append(
            f"λ {lam['lambdas']} from coarse {lam['coarse']} (stage 1 {'kept coarse' if lam['kept_coarse'] else 'moved'}, "
            f"bootstrap {lam['confidence']:.2f}{undone}; {lam['split']} margins vs best part, points: {margins})"
        )
    else:
        parts.append(f"λ {choices['lambdas_in_force']} (not tuned)")
    return "; ".join(parts)


def score_reference_oracle(leaves: Leaves, test: TestSet, seed: int) -> Hits:
    """Upper bound of mining: the reference bond on the TRUE captions of the training clips (AT audio →
    U text of its caption, AT caption → U caption). If this stays below AT, U's space is the bottleneck."""
    rng = random.Random(3000 + seed)
    caps = [
        world.audio_captions(world.DIGITS.index(it["label"]), it["attributes"], rng, 1)[0]
        for it in leaves.pool_items["audio"]
    ]
    u_cap, at_cap = leaves.spaces["U"].encode("text", caps), leaves.spaces["AT"].encode("text", caps)
    x = torch.cat([leaves.pool["AT"]["audio"], at_cap])
    y = torch.cat([u_cap, u_cap])
    return score_projector(leaves, test, reference_bond(x, y, seed=seed))


def diagnostics(
    u: Any, at: Any, data: Path, work: Path, seed: int, bound: Any, leaves: Leaves, test: TestSet, log: Callable
) -> tuple[dict[str, Hits], dict[str, dict]]:
    """Variants that locate where the default bond loses: target pairing, λ tuning, the projector."""
    rows: dict[str, Hits] = {}
    choices: dict[str, dict] = {}

    def row(name: str, fn: Callable[[], Hits]) -> None:
        t = time.time()
        try:
            rows[name] = fn()
        except Exception as exc:  # noqa: BLE001 - a failing variant is reported, the others still run
            log(f"  {name}: failed: {type(exc).__name__}: {exc}")
            return
        log(f"  {name}: " + "  ".join(f"{k} {means(rows[name])[k]:.3f}" for k in METRICS) + f"  ({time.time() - t:.0f}s)")

    def pairing_all() -> Hits:
        space = spacebind_bond(u, at, data, work, seed, pairing="all")
        choices["spacebind pairing all"] = choices_of(space)
        return score_space(space, test)

    lam = chosen_lambdas(bound)
    row("spacebind pairing all", pairing_all)
    row("spacebind tune off (λ .5/.5)", lambda: score_space(bound.with_lambdas({"audio": 0.5, "text": 0.5}), test))
    row("reference at spacebind default's λ", lambda: score_reference(leaves, test, seed, lambdas=lam))
    row("reference on true audio-caption pairs", lambda: score_reference_oracle(leaves, test, seed))
    return rows, choices


# ---------------------------------------------------------------- driver


def run_seed(seed: int, work: Path, only: str, diagnose: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """Hits of every row for one seed ({"hits": {row: {metric: per-query hits}}, "choices": {row: choices}})."""
    t0 = time.time()
    data = world.build(seed, work)
    log(f"seed {seed}: data {data} ({time.time() - t0:.0f}s)")
    text = MiniLM(work / "minilm.npz")
    ex = train_experts(seed, data, text, work, log)
    text.save()
    u, at = make_spaces(ex, text, seed)
    test = TestSet(data)
    rows: dict[str, Hits] = {}
    choices: dict[str, dict] = {}
    t = time.time()
    rows["U"] = score_space(u, test)
    rows["AT"] = score_space(at, test)
    leaves = Leaves(u, at, data, test)
    text.save()
    log(f"  experts scored ({time.time() - t:.0f}s)")
    bound = None
    if only == "all":
        variants = ((DEFAULT, {}), (FIXED, {"lambdas": LAMBDAS_EXPERTISE, "tune": False}), (MLP, {"projector": "mlp"}))
        for name, kwargs in variants:
            t = time.time()
            space = spacebind_bond(u, at, data, work, seed, **kwargs)
            rows[name], choices[name] = score_space(space, test), choices_of(space)
            bound = bound or space
            log(f"  {name} ({time.time() - t:.0f}s): {describe_choices(choices[name])}")
    t = time.time()
    rows[REFERENCE] = score_reference(leaves, test, seed)
    log(f"  reference bond ({time.time() - t:.0f}s)")
    if diagnose and bound is not None:
        extra_rows, extra_choices = diagnostics(u, at, data, work, seed, bound, leaves, test, log)
        rows.update(extra_rows)
        choices.update(extra_choices)
    text.save()
    log(f"seed {seed} done in {time.time() - t0:.0f}s")
    return {"hits": rows, "choices": choices}


def format_table(results: dict[Any, dict[str, dict[str, float]]], title: str, metrics: Sequence[str] = METRICS) -> str:
    seeds = list(results)
    names = list(dict.fromkeys(n for r in results.values() for n in r))
    width = max(len(n) for n in names) + 2
    groups = [(f"seed {s}", [results[s].get(n) for n in names]) for s in seeds]
    if len(seeds) > 1:
        groups.append(("mean", [mean_row(results, n, metrics) for n in names]))
    cell = 9
    head1 = " " * width + " | ".join(g.center(cell * len(metrics) + len(metrics) - 1) for g, _ in groups)
    head2 = " " * width + " | ".join(" ".join(HEADERS[k].rjust(cell) for k in metrics) for _ in groups)
    lines = [title, head1, head2, "-" * len(head2)]
    for i, n in enumerate(names):
        cells = []
        for _, col in groups:
            r = col[i]
            cells.append(" ".join(("—" if r is None or np.isnan(r[k]) else f"{r[k]:.3f}").rjust(cell) for k in metrics))
        lines.append(n.ljust(width) + " | ".join(cells))
    return "\n".join(lines)


def mean_row(results: dict[Any, dict[str, dict[str, float]]], name: str, metrics: Sequence[str]) -> dict | None:
    present = [r[name] for r in results.values() if name in r]
    if len(present) < len(results):
        return None
    return {k: float(np.mean([p[k] for p in present])) for k in metrics}


def verdict(seeds: Sequence[dict[str, Hits]]) -> str:
    """Is the default row ≥ AT on audio-text, ≥ U − 1 point on image zero-shot, ≥ the reference? Margins
    in points with 95 % paired bootstrap intervals over the test queries (each seed of `seeds` a
    stratum); "tie" where the default falls short but the interval reaches the bar."""

    def margins(other: str, metrics: Sequence[str], tolerance: float = 0.0) -> str:
        return compare(seeds, DEFAULT, other, metrics, tolerance, HEADERS)

    return (
        f"≥ AT on audio-text: {margins('AT', AUDIO_TEXT)} | ≥ U − 1 on image: {margins('U', ('image_zs',), 1.0)} | "
        f"≥ reference: {margins(REFERENCE, METRICS)}"
    )


def environment() -> dict[str, str]:
    """What the data and experts depend on beyond the code: versions of Python, torch, numpy, espeak-ng."""
    speech = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.strip()
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "espeak-ng": speech.split("  Data at")[0]}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds (data sampling and expert init)")
    parser.add_argument("--json", type=Path, default=None, help="write all scores here")
    parser.add_argument("--work", type=Path, default=None, help="cache directory (default $SPACEBIND_HOME/realdata)")
    parser.add_argument(
        "--only", choices=("all", "reference"), default="all", help="reference: U, AT and the reference bond"
    )
    parser.add_argument("--diagnose", action="store_true", help="add bond variants that locate losses")
    args = parser.parse_args(argv)
    torch.set_num_threads(THREADS)
    work = args.work or Path(os.environ.get("SPACEBIND_HOME", Path.home() / ".cache" / "spacebind")) / "realdata"
    work.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    t = time.time()
    runs = {s: run_seed(s, work, args.only, args.diagnose, log) for s in seeds}
    elapsed = time.time() - t
    results = {s: {name: means(h) for name, h in r["hits"].items()} for s, r in runs.items()}
    verdicts = {}
    pairs = len(TestSet(world.build(seeds[0], work)).audio)
    title = (
        f"real data (espeak-ng spoken digits, sklearn digits, MiniLM); {pairs} test audio-caption pairs of unseen "
        f"speakers (chance R@1 {1 / pairs:.3f}); torch threads {torch.get_num_threads()}; {elapsed:.0f}s"
    )
    print(format_table(results, title))
    if args.only == "all":
        print()
        for s, r in runs.items():
            for name, choice in r["choices"].items():
                print(f"seed {s} {name}: {describe_choices(choice)}")
        verdicts = {str(s): verdict([runs[s]["hits"]]) for s in seeds}
        if len(seeds) > 1:
            verdicts["mean"] = verdict([runs[s]["hits"] for s in seeds])
        for s, line in verdicts.items():
            print(f"{'seed ' + s if s != 'mean' else 'mean  '} spacebind default: {line}")
    if args.diagnose:
        print()
        title = "diagnosis: class-level R@1 and voice attributes of the top-1 caption (a→t)"
        print(format_table(results, title, DIAGNOSIS))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        out = {
            "threads": torch.get_num_threads(),
            "seconds": elapsed,
            "environment": environment(),
            "results": {str(s): {"rows": results[s], "choices": runs[s]["choices"]} for s in seeds},
            "verdicts": verdicts,
        }
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
