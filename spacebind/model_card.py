"""The model card (README.md) written into every fused checkpoint."""
from __future__ import annotations

import math
from pathlib import PurePath, PurePosixPath, PureWindowsPath
from typing import Any, Sequence

import yaml

from spacebind.bonds import BONDS
from spacebind.bonds.heads import head_summary
from spacebind.evaluation.report import records_markdown
from spacebind.space import Space


def _expert_rows(node: dict[str, Any], rows: dict[str, dict[str, Any]]) -> None:
    if node["type"] == "expert":
        rows.setdefault(node["name"], node)
        return
    _expert_rows(node["base"], rows)
    for child in node["experts"]:
        _expert_rows(child, rows)


# Hugging Face Hub ids of experts, by registry name (the expert's `source`), only where the
# weights are certainly that repository. World experts and experts read from local copies of
# unknown origin have none.
HUB_IDS: dict[str, str] = {
    "minilm": "sentence-transformers/all-MiniLM-L6-v2",
}

# spacebind's task names → the task types the Hub's model-index uses.
TASK_TYPES: dict[str, str] = {
    "retrieval": "zero-shot-retrieval",
    "zeroshot_classification": "zero-shot-classification",
}


def expert_licence(expert: dict[str, Any]) -> str:
    """The Hub licence id the registry gives an expert's weights (a wrapper like `adapted`: its
    inner expert's); "" where none is known (import paths, weights of the user's choice)."""
    from spacebind.registry import EXPERTS

    source = str(expert.get("source") or "")
    licence = EXPERTS.entry(source).licence if source in EXPERTS else ""
    inner = (expert.get("kwargs") or {}).get("expert")
    if not licence and isinstance(inner, str) and inner in EXPERTS:
        licence = EXPERTS.entry(inner).licence
    return licence


def _file_name(path: str) -> str:
    """Only the file name of a checkpoint path (POSIX or Windows), never the machine's directories."""
    return PureWindowsPath(path).name if "\\" in path else PurePosixPath(path).name


def _dataset_name(name: str) -> str:
    """A dataset as the card names it: a local path is cut to its last component."""
    is_path = PurePath(name).is_absolute() or name.startswith(("~", ".", "\\")) or "\\" in name or name.count("/") > 1
    return _file_name(name.rstrip("/\\")) if is_path else name


def _bond_kinds(node: dict[str, Any], out: list[str]) -> None:
    if node["type"] != "bond":
        return
    _bond_kinds(node["base"], out)
    for child in node["experts"]:
        _bond_kinds(child, out)
    if node["bond"] not in out:
        out.append(node["bond"])


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def model_index(name: str, metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Hub's `model-index` from CLIP_benchmark-shaped records: one result per record of the fused model."""
    results = []
    fused = [r for r in metrics if r.get("role") == "fused"]
    main = fused[0].get("model") if fused else None
    for r in fused:
        values = [{"type": k, "value": v} for k, v in r["metrics"].items() if _number(v) and k != "n"]  # n: item count
        if not values:
            continue
        task, mods = r["task"], list(r.get("modalities") or [])
        dataset = _dataset_name(str(r.get("dataset") or "unknown"))
        label = f"{task} ({', '.join(mods)})" if mods else task
        if r.get("model") != main:  # e.g. `<space> (centres)`: UniBind's zero-shot beside the prompts'
            label += f" — {r.get('model')}"
        results.append({
            "task": {"type": TASK_TYPES.get(task, task.replace("_", "-")), "name": label},
            "dataset": {"type": dataset, "name": dataset},
            "metrics": values,
        })
    return [{"name": name, "results": results}] if results else []


def front_matter(space: Space, config: dict[str, Any], metrics: list[dict[str, Any]]) -> str:
    """The card's YAML metadata block (between `---` lines), as `huggingface_hub.ModelCard` reads it."""
    experts: dict[str, dict[str, Any]] = {}
    _expert_rows(config["space"], experts)
    kinds: list[str] = []
    _bond_kinds(config["space"], kinds)
    tags = ["spacebind", "multimodal", "embeddings"]
    tags += [t for t in [*kinds, *space.modalities] if t not in tags]
    base = []
    for e in experts.values():
        hub = HUB_IDS.get(str(e.get("source") or ""))
        if hub and hub not in base:
            base.append(hub)
    datasets = []
    for r in metrics:
        d = r.get("dataset")
        if d and _dataset_name(str(d)) not in datasets:
            datasets.append(_dataset_name(str(d)))
    licences = {expert_licence(e) for e in experts.values()}
    shared = next(iter(licences)) if len(licences) == 1 else ""
    # one licence for every expert: the export's; otherwise each expert's, listed in the card
    meta: dict[str, Any] = {"library_name": "spacebind", "license": shared or "other", "tags": tags}
    if not shared:
        meta |= {"license_name": "expert-licences", "license_link": "README.md"}
    if base:
        meta["base_model"] = base
    if datasets:
        meta["datasets"] = datasets
    index = model_index(space.name, metrics)
    if index:
        meta["model-index"] = index
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---"


def _bond_rows(node: dict[str, Any], out: list[str], fitted: list[str], outermost: bool = True) -> None:
    if node["type"] != "bond":
        return
    _bond_rows(node["base"], out, fitted, outermost=False)
    for child in node["experts"]:
        _bond_rows(child, out, fitted, outermost=False)
    fitted += _fitted_lines(node, outermost)
    lambdas = BONDS.entry(node["bond"]).factory.card_weights(node)
    heads = "; ".join(f"{k}: {head_summary(h)}" for k, h in node["heads"].items())
    out.append(f"| {node['index']} | {node['bond']} | {node['name']} | {node['dim']} | {lambdas} | {heads} |")


def _fitted_lines(node: dict[str, Any], outermost: bool) -> list[str]:
    """What training chose for a bond, and why: target modalities per member, λ on val (and, for
    the outermost bond, which `spacebind sweep` tunes, how to score other κ)."""
    choices = node.get("choices") or {}
    lines = []
    for member, t in (choices.get("targets") or {}).items():
        why = f" ({t['measure']} of the target's modalities: " + ", ".join(
            f"{m} {100 * v:.1f}" for m, v in t["reliability"].items()) + ")" if t.get("reliability") else ""
        lines.append(f"- bond {node['index']}, {member}: pairing `{t['pairing']}`, targets {', '.join(t['kept'])}{why}")
    lam = choices.get("lambdas")
    if lam:
        undone = lam.get("undone") or {}
        first = {**lam["lambdas"], **{m: v for m, v in undone.items() if m != "projector"}}  # stage 1's λ
        chosen = ", ".join(f"{m} {v:g}" for m, v in first.items())
        coarse = ", ".join(f"{m} {v:g}" for m, v in lam["coarse"].items())
        verdict = "kept the coarse λ" if first == lam["coarse"] else "chose"
        resampled = f" (whole {lam['groups']} groups)" if lam.get("groups") else ""
        lines.append(f"- bond {node['index']}, λ on the {lam['split']} split: {verdict} {chosen} (coarse {coarse}; "
                     f"better than the coarse λ in {100 * lam['confidence']:.0f} % of bootstrap resamples{resampled})"
                     + (f"; worst margin over its parts there: {100 * lam['objective']:+.1f} points"
                        if "objective" in lam else ""))
    if lam and lam.get("undone"):
        heads = lambda name: name or "the bond's own"  # noqa: E731
        moved = [f"λ {m} to {lam['lambdas'][m]:g}" for m in lam["undone"] if m != "projector"]
        moved += [f"the heads from {heads(lam['undone']['projector'])} to {heads(lam.get('projector', ''))}"
                  ] if "projector" in lam["undone"] else []
        after = lam.get("after_channel")
        why = (f"chosen again on the {after['tasks']} {lam['split']} tasks the channel leaves to them, better than "
               f"the coarse λ in {100 * after['confidence']:.0f} % of bootstrap resamples" if after else
               f"every {lam['split']} task they change is between modalities whose experts' pairs the channel keeps")
        lines.append(f"- bond {node['index']}, after κ: {', '.join(moved)} ({why})")
    if lam and lam.get("channels"):
        kappas = ", ".join(f"{m} {v:g}" for m, v in lam["channels"].items())
        unused = " (no channel)" if not any(lam["channels"].values()) else ""
        why = (f"kept at the prior: {lam['channel_unmoved']}" if lam.get("channel_unmoved") else
               f"the best κ beat the prior in {100 * (lam.get('channel_confidence') or 0):.0f} % of bootstrap resamples")
        lines.append(f"- bond {node['index']}, channel of the projected side's own embeddings on the {lam['split']} "
                     f"split: κ {kappas}{unused}; {why}"
                     + ("; other κ per task: `spacebind sweep FUSED DATA --channel` (saved as presets)"
                        if outermost and not unused else ""))
    router = choices.get("router")
    if router and router.get("history"):
        score = router["best"]
        kept = f"{100 * score:.1f} %" if isinstance(score, (int, float)) and math.isfinite(score) else "no pair to score"
        lines.append(f"- bond {node['index']}, routers ({', '.join(router['modalities'])}): trained "
                     f"{len(router['history'])} epoch(s), kept epoch {router['best_epoch'] + 1} (mean pair R@1 on the "
                     f"{router['split']} split: {kept}); per epoch in history.json (`routed/router`)")
    routed = choices.get("channels")
    if routed:
        for label, entry in routed["specialists"].items():
            kappas = ", ".join(f"{n} {v:g}" for n, v in entry["kappa"].items())
            moved = any(v != routed["prior"] for v in entry["kappa"].values())
            why = (f"kept at the prior: {entry['unmoved']}" if entry.get("unmoved") else
                   f"{'moved from' if moved else 'kept'} the prior {routed['prior']:g}: the best κ's mean score over "
                   f"the pair's tasks beat the prior's in {100 * entry['confidence']:.0f} % of bootstrap resamples")
            lines.append(f"- bond {node['index']}, channel of {label} ({', '.join(entry['modalities'])}) on the "
                         f"{routed['split']} split: κ {kappas}; {why}")
        if outermost and node.get("channels"):
            lines.append("- other κ per task: `spacebind sweep FUSED DATA --channel` (saved as presets)")
    if lam and lam.get("margins"):
        task, margin = min(lam["margins"].items(), key=lambda kv: kv[1])
        lines.append(f"- bond {node['index']}, as fitted (the λ and κ above): worst margin over its parts on the "
                     f"{lam['split']} split: {task} {100 * margin:+.1f} points")
    projector = choices.get("projector")
    if projector:
        scores = ", ".join(f"{k} {100 * v:+.1f}" for k, v in projector["candidates"].items())
        lines.append(f"- bond {node['index']}, projector `auto`: kept {projector['chosen']} (worst margin over its "
                     f"parts at each candidate's best λ, points: {scores})")
    changed = _set_after_fitting(node, choices)
    if changed:
        lines.append(f"- bond {node['index']}: set after fitting (a preset or `with_lambdas`), so the choices above no "
                     f"longer hold for them: {', '.join(changed)}")
    return lines


def _set_after_fitting(node: dict[str, Any], choices: dict[str, Any]) -> list[str]:
    """The λ and κ of `node` that differ from what fitting chose (recorded in `choices`)."""
    lam = choices.get("lambdas") or {}
    chosen = {f"λ {m}": v for m, v in (lam.get("lambdas") or {}).items()}
    chosen.update({f"κ {m}": v for m, v in (lam.get("channels") or {}).items()})
    for entry in ((choices.get("channels") or {}).get("specialists") or {}).values():
        chosen.update({f"κ {n}": v for n, v in entry["kappa"].items()})
    current = {**{f"λ {m}": v for m, v in node["lambdas"].items()},
               **{f"κ {m}": v for m, v in (node.get("channels") or {}).items()}}
    return [f"{key} {current.get(key, 0.0):g} (chosen {value:g})" for key, value in chosen.items()
            if current.get(key, 0.0) != value]


def _metrics_note(space: Space) -> str:
    """How the metrics were computed, so that a reader can reproduce them."""
    parts = (f"averaged part by part over the space's blocks (widths {', '.join(map(str, space.blocks))}, each part "
             "renormalised)" if len(space.blocks) > 1 else "averaged and renormalised")
    return ("Computed by `spacebind eval` from the experts' float16 embedding caches (a live `encode` runs in the "
            "space's dtype, so a near tie can fall the other way). Zero-shot: each class is its name in every "
            f"template of the dataset's classes.json, encoded as text and {parts}, as "
            "`spacebind.evaluation.zeroshot.prompt_classes(space, names, templates)` computes it; each item goes to "
            "its most similar class.")


def model_card(space: Space, config: dict[str, Any], metrics: list[dict[str, Any]],
               history: dict[str, list[dict[str, Any]]] | None = None, unibind: dict[str, Any] | None = None,
               swept: Sequence[str] = ()) -> str:
    """Markdown describing the fused space, its experts, bonds, metrics, training history (linked
    history.json / history.png, when given), UniBind's stage (its `unibind.json`, when the export
    has one), the files of a `spacebind sweep` on it (`swept`) and how to load it."""
    experts: dict[str, dict[str, Any]] = {}
    _expert_rows(config["space"], experts)
    bonds: list[str] = []
    fitted: list[str] = []
    _bond_rows(config["space"], bonds, fitted)
    lines = [
        front_matter(space, config, metrics), "",
        f"# {space.name}", "",
        f"A fused embedding space made with spacebind {config['spacebind_version']}: "
        f"`{space.formula()}`, {space.dim}-d, modalities {', '.join(space.modalities)}.", "",
        "## Experts (frozen; referenced, not copied)", "",
        "The export holds trained heads only; using it runs these experts' own weights, whose licences "
        "(as their publishers give them) bind its use.", "",
        "| name | source | dim | modalities | checkpoint | sha256 | licence |", "|---|---|---|---|---|---|---|",
    ]
    for e in experts.values():
        sha = (e.get("sha256") or "")[:16]
        lines.append(f"| {e['name']} | {e['source']} | {e['dim']} | {', '.join(e['modalities'])} | "
                     f"{_file_name(e['checkpoint']) if e.get('checkpoint') else '–'} | {sha} | "
                     f"{expert_licence(e) or 'not stated'} |")
    if bonds:
        lines += ["", "## Bonds (applied in this order)", "",
                  "| # | bond | space | dim | λ (weight of the projected side) | projectors |",
                  "|---|---|---|---|---|---|", *bonds]
    if fitted:
        lines += ["", "## How the bonds were fitted", "", *fitted]
    lines += ["", "## Metrics", "", records_markdown(metrics) if metrics else "No evaluation was run.", ""]
    if metrics:
        lines += [_metrics_note(space), ""]
    if history:
        lines += ["## Training history", "",
                  f"{len(history)} trained projector(s); per epoch in [history.json](history.json).", "",
                  "![training loss and validation recall@1 per epoch](history.png)", ""]
    if swept:
        lines += ["## Sweep", "", "`spacebind sweep` scored other settings of the last bond on a split: "
                  "[sweep.json](sweep.json) (every setting's scores, the best per task, held-out scores when asked)"
                  + ("; the change per task:" if "sweep.png" in swept else "."), ""]
        lines += ["![sweep: change of each task's score over the grid](sweep.png)", ""] if "sweep.png" in swept else []
    if unibind:
        heads = ", ".join(f"{m} ({h.get('type', 'head')})" for m, h in unibind["heads"].items()) or "none"
        lines += ["## UniBind class centres", "",
                  f"{len(unibind['names'])} classes, centres for {', '.join(unibind['modalities'])} "
                  f"([unibind.json](unibind.json), unibind.safetensors); trained heads aligning embeddings to them: "
                  f"{heads}; scoring `{unibind.get('scoring', 'centres')}` (centres: one centre per class; "
                  "descriptions: a class scores its best description, as the official code); "
                  f"knowledge vote weight {unibind['vote_weight']:g} (k {unibind['k']}). "
                  "Load with `spacebind.unibind.UniBind.load(path)`; `spacebind eval` reports zero-shot with the "
                  "centres beside the prompts.", ""]
    example = ('"text", ["a photo of a dog"]' if "text" in space.modalities
               else f'"{space.modalities[0]}", ["path/to/a/file"]')
    lines += [
        "## Use", "", "```python", "import spacebind", "",
        'space = spacebind.load(".")  # run from this directory, or give its path',
        f"emb = space.encode({example})  # Tensor[1, {space.dim}], unit-norm", "```", "",
    ]
    presets = config["space"].get("presets") or {}
    if presets:
        kappa = ("κ of each specialist of its channel as `channel:<expert>`" if config["space"].get("bond") == "routed"
                 else "λ by modality; κ of its channel as `channel:<modality>`")
        lines += [f"Named inference settings of the last bond ({kappa}), loaded with "
                  "`spacebind.load(path, preset=name)`:", "",
                  *(f"- `{name}`: " + ", ".join(f"{k} {v:g}" for k, v in values.items()) for name, values in presets.items()),
                  ""]
        carried = {m: k for m, k in (config["space"].get("channels") or {}).items() if k > 0}
        if len(carried) > 1 and config["space"].get("bond") != "routed":
            lines += [f"Between modalities the channel carries ({', '.join(f'{m} κ {k:g}' for m, k in carried.items())}) "
                      "a similarity weighs the bond's part by 1 − κ, so a preset's λ barely moves those pairs "
                      "unless it sets their κ too (`channel:<modality>`).", ""]
    return "\n".join(lines)
